"""The offline sources: real files from system and Python packages, and the IDX reader on written files."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from uniil_lib.data import DatasetNotFoundError, load_dataset, source_names
from uniil_lib.data import offline
from uniil_lib.integrity import hash_file
from uniil_lib.paths import data_root


def write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_idx_files_under_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setattr(offline, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([9, 0, 3]))
    # The loader checks the files against recorded digests: record the fixture's.
    monkeypatch.setattr(offline, "FASHION_MNIST_SHA256", {p.name: hash_file(p, gunzip=True) for p in folder.iterdir()})
    data = load_dataset("fashion-mnist", "test", root=tmp_path)
    assert len(data) == 3 and data.labels.tolist() == [9, 0, 3]
    image, label = data[0]
    assert image.mode == "RGB" and image.size == (28, 28) and label == 9
    assert np.array_equal(np.asarray(image)[..., 0], images[0])
    assert data.class_names[9] == "ankle boot"


def test_missing_fashion_mnist_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setattr(offline, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="data_scripts/fetch_offline.py --dataset fashion-mnist"):
        load_dataset("fashion-mnist", "train", root=tmp_path)


def test_truncated_idx_file_is_reported(tmp_path):
    path = tmp_path / "bad-idx1-ubyte.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(struct.pack(">BBBBi", 0, 0, 8, 1, 10) + b"\x01\x02")
    with pytest.raises(ValueError, match="truncated"):
        offline.read_idx(path)


@pytest.mark.parametrize("name, n_train, n_test", [("mnist-5k", 4000, 1000), ("optdigits", 1198, 599)])
def test_package_shipped_digits(name, n_train, n_test):
    train, test = load_dataset(name, "train"), load_dataset(name, "test")
    assert (len(train), len(test)) == (n_train, n_test)
    assert sorted(set(train.labels.tolist())) == list(range(10)), "every digit appears"
    assert not set(map(bytes, train.images[:50])) & set(map(bytes, test.images)), "splits are disjoint"
    assert np.array_equal(load_dataset(name, "test").labels, test.labels), "the split is fixed"


def test_real_fashion_mnist_if_installed():
    if not (offline.FASHION_MNIST_SYSTEM_DIR.exists() or (data_root() / "fashion-mnist").exists()):
        pytest.skip("dataset-fashion-mnist is not installed (python data_scripts/fetch_offline.py)")
    test = load_dataset("fashion-mnist", "test")
    assert len(test) == 10_000 and np.bincount(test.labels).tolist() == [1000] * 10


def test_unknown_dataset_and_split():
    assert {"fashion-mnist", "mnist-5k", "optdigits"} <= set(source_names())
    with pytest.raises(KeyError, match="valid names"):
        load_dataset("imagenet-9000")
    with pytest.raises(ValueError, match="split"):
        load_dataset("optdigits", "validation")
