"""Tests of the torchvision sources on tiny fixtures in the real on-disk formats (no network needed).

Every source is loaded through ``load_dataset`` from a fixture written by :mod:`tests.fixtures_tv`, and
the same files are also read by the real torchvision class, so a fixture that drifted from the real
layout, or a loader that misreads it, fails here.
"""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uniil_lib.data import DatasetNotFoundError, ImageSet, get_source, load_dataset, source_names
from uniil_lib.data.torchvision_sources import seeded_split, torchvision_sources
from uniil_lib.integrity import record_folder, sha256_text
from repo_scripts import load_script

if __package__:  # tests/ imported as a package
    from .fixtures_tv import Fixture, Item, writers
else:  # pytest's default "rootdir/tests on sys.path" mode
    from fixtures_tv import Fixture, Item, writers

NAMES = sorted(writers())
SEEDED = ("caltech101", "eurosat", "sun397")  # no official split: the loader makes a seeded 80/20 one


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _matches(item: Item, image: Image.Image, tolerance: int) -> bool:
    pixels = _pixels(image)
    return pixels.shape == item.pixels.shape and int(np.abs(pixels - item.pixels).max()) <= tolerance


def _check_items(ds: ImageSet, expected: tuple[Item, ...], tolerance: int) -> None:
    """``ds`` holds exactly ``expected``, in order: labels, RGB images and their pixels."""
    assert ds.labels.tolist() == [item.label for item in expected]
    for i, item in enumerate(expected):
        image, label = ds[i]
        assert isinstance(image, Image.Image) and image.mode == "RGB", f"{ds.key}[{i}] is not an RGB PIL image"
        assert type(label) is int and label == item.label, f"{ds.key}[{i}]: label {label!r}, want {item.label}"
        assert _matches(item, image, tolerance), f"{ds.key}[{i}]: pixels differ from the fixture file"


def _identify(fixture: Fixture, image: Image.Image) -> int:
    """Index (in ``fixture.splits["all"]``) of the one fixture image that ``image`` shows."""
    hits = [k for k, item in enumerate(fixture.splits["all"]) if _matches(item, image, fixture.tolerance)]
    assert len(hits) == 1, f"image matches {len(hits)} fixture images, want exactly 1"
    return hits[0]


# ----------------------------------------------------------------------------------------------------
# Registry entries
# ----------------------------------------------------------------------------------------------------


def test_every_torchvision_source_is_registered_with_fetch_command_and_templates():
    specs = {spec.name: spec for spec in torchvision_sources()}
    assert sorted(specs) == NAMES
    assert set(NAMES) <= set(source_names())
    for name, spec in specs.items():
        assert get_source(name) is not None and not spec.offline
        assert spec.fetch_command == f"python data_scripts/fetch_torchvision.py --dataset {name}"
        assert 1 <= len(spec.templates) <= 4, f"{name}: {len(spec.templates)} templates"
        assert all(t.count("{}") == 1 for t in spec.templates), f"{name}: each template needs one {{}}"
        assert spec.domain and " " not in spec.domain and spec.description


def test_each_spec_names_a_real_torchvision_class():
    import torchvision.datasets

    for spec in torchvision_sources():
        assert hasattr(torchvision.datasets, spec.extra["torchvision_class"]), spec.name
    assert [s.name for s in torchvision_sources() if not s.extra["auto_download"]] == ["stanford-cars", "imagenet100"]


# ----------------------------------------------------------------------------------------------------
# Loading the fixtures
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("name", NAMES)
def test_load_returns_fixture_images_labels_and_names(tmp_path, name, split):
    fixture = writers()[name](tmp_path)
    ds = load_dataset(name, split, root=tmp_path)
    recorded = sha256_text((tmp_path / fixture.folder / "checksums.json").read_bytes())
    assert ds.key == f"{name}/{split}[{recorded[7:19]}]", "the cache key names the recorded content"
    assert get_source(name).extra["folder"] == fixture.folder
    assert len(ds.class_names) == fixture.n_classes
    assert ds.class_names[: len(fixture.class_names)] == list(fixture.class_names)
    if name not in SEEDED:
        assert len(ds) == len(fixture.splits[split])
        _check_items(ds, fixture.splits[split], fixture.tolerance)
        return
    n_classes = len(fixture.class_names)
    assert len(ds) == (2 * n_classes if split == "train" else n_classes)  # 3 images a class: 2 train, 1 test
    for i in range(len(ds)):
        image, label = ds[i]
        assert image.mode == "RGB" and type(label) is int
        assert fixture.splits["all"][_identify(fixture, image)].label == label


@pytest.mark.parametrize("name", SEEDED)
def test_seeded_split_is_a_deterministic_partition(tmp_path, name):
    fixture = writers()[name](tmp_path)
    seen = {}
    for split in ("train", "test"):
        ds = load_dataset(name, split, root=tmp_path)
        seen[split] = [_identify(fixture, ds[i][0]) for i in range(len(ds))]
        again = load_dataset(name, split, root=tmp_path)
        assert again.labels.tolist() == ds.labels.tolist()
        assert [_identify(fixture, again[i][0]) for i in range(len(again))] == seen[split]
    assert not set(seen["train"]) & set(seen["test"])
    assert sorted(seen["train"] + seen["test"]) == list(range(len(fixture.splits["all"])))


def test_seeded_split_takes_a_fifth_of_each_class_and_depends_only_on_that_class():
    labels = np.repeat([0, 1, 2], [10, 31, 2])
    test = seeded_split(labels, "test")
    train = seeded_split(labels, "train")
    assert Counter(labels[test].tolist()) == {0: 2, 1: 6, 2: 1}
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(labels)))
    # Dropping class 0 leaves the choice within class 1 unchanged (indices shift by 10).
    assert (seeded_split(labels[10:], "test")[:6] + 10).tolist() == test[2:8].tolist()


def test_folder_datasets_are_lazy_picklable_and_subsettable(tmp_path):
    writers()["dtd"](tmp_path)
    ds = load_dataset("dtd", "train", root=tmp_path)
    assert ds.labels.tolist() == [0, 1, 2, 0, 1, 2]  # known without opening an image
    restored = pickle.loads(pickle.dumps(ds))
    assert np.array_equal(_pixels(restored[4][0]), _pixels(ds[4][0]))
    small = ds.per_class_subset(1, seed=0)
    assert len(small) == 3 and sorted(small.labels.tolist()) == [0, 1, 2]
    assert small.key.startswith("dtd/train[")


# ----------------------------------------------------------------------------------------------------
# The fixtures are in the real format: torchvision's own classes read the same images and labels
# ----------------------------------------------------------------------------------------------------


def _torchvision_datasets(name: str, split: str, root: Path, monkeypatch) -> list:
    """The torchvision datasets that together hold our ``split`` (the whole set for SEEDED ones)."""
    import torchvision.datasets as tvd
    import torchvision.datasets.cifar
    import torchvision.datasets.flowers102

    for module in (torchvision.datasets.cifar, torchvision.datasets.flowers102):  # fixtures fail the md5 checks
        monkeypatch.setattr(module, "check_integrity", lambda path, md5=None: Path(path).is_file())
    r, train = str(root), split == "train"
    table = {
        "cifar10": lambda: [tvd.CIFAR10(r, train=train)],
        "cifar100": lambda: [tvd.CIFAR100(r, train=train)],
        "mnist": lambda: [tvd.MNIST(r, train=train)],
        "aircraft": lambda: [tvd.FGVCAircraft(r, split="trainval" if train else "test")],
        "dtd": lambda: [tvd.DTD(r, split=s) for s in (("train", "val") if train else ("test",))],
        "flowers102": lambda: [tvd.Flowers102(r, split=s) for s in (("train", "val") if train else ("test",))],
        "food101": lambda: [tvd.Food101(r, split=split)],
        "oxford-pets": lambda: [tvd.OxfordIIITPet(r, split="trainval" if train else "test")],
        "stanford-cars": lambda: [tvd.StanfordCars(r, split=split)],
        "caltech101": lambda: [tvd.Caltech101(r)],
        "eurosat": lambda: [tvd.EuroSAT(r)],
        "sun397": lambda: [tvd.SUN397(r)],
        "imagenet100": lambda: [tvd.ImageFolder(str(root / "imagenet100" / ("train" if train else "val")))],
    }
    return table[name]()


def _samples(datasets) -> list[tuple[int, bytes]]:
    return [(int(label), _pixels(image).tobytes()) for ds in datasets for image, label in ds]


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("name", NAMES)
def test_torchvision_reads_the_same_data(tmp_path, monkeypatch, name, split):
    writers()[name](tmp_path)
    theirs = _samples(_torchvision_datasets(name, split, tmp_path, monkeypatch))
    if name in SEEDED:  # torchvision has no split: its whole set is our train + test, in any order
        ours = _samples([load_dataset(name, s, root=tmp_path) for s in ("train", "test")])
        assert Counter(ours) == Counter(theirs)
    else:
        assert _samples([load_dataset(name, split, root=tmp_path)]) == theirs
    assert len(theirs) > 0


# ----------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_missing_dataset_names_fetch_command_and_folder(tmp_path, name):
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset(name, "test", root=tmp_path)
    message = str(caught.value)
    assert f"data_scripts/fetch_torchvision.py --dataset {name}" in message
    assert str(tmp_path / get_source(name).extra["folder"]) in message, "the message must show where it looked"


def test_partly_missing_dataset_names_the_missing_file(tmp_path):
    writers()["dtd"](tmp_path)
    (tmp_path / "dtd" / "dtd" / "labels" / "test1.txt").unlink()
    load_dataset("dtd", "train", root=tmp_path)  # the train lists are still there
    with pytest.raises(DatasetNotFoundError, match=r"labels/test1\.txt.*--dataset dtd"):
        load_dataset("dtd", "test", root=tmp_path)


def test_unknown_dataset_name_lists_valid_names(tmp_path):
    with pytest.raises(KeyError, match="valid names:.*cifar100.*sun397"):
        load_dataset("cifar-1000", "train", root=tmp_path)


# ----------------------------------------------------------------------------------------------------
# data_scripts/fetch_torchvision.py (without network: only the paths that do not download)
# ----------------------------------------------------------------------------------------------------


def _fetch_script():
    return load_script("data_scripts/fetch_torchvision.py")


def test_fetch_script_rejects_unknown_name_listing_valid_ones(capsys):
    with pytest.raises(SystemExit) as caught:
        _fetch_script().main(["--dataset", "imagenet"])
    assert caught.value.code == 2
    error = capsys.readouterr().err
    assert "unknown dataset 'imagenet'" in error and "cifar100" in error and "all" in error


def test_fetch_script_skips_a_dataset_already_on_disk(tmp_path, capsys):
    writers()["food101"](tmp_path)
    assert _fetch_script().main(["--dataset", "food101", "--root", str(tmp_path)]) == 0
    assert "already" in capsys.readouterr().out


def test_fetch_script_explains_manual_download_of_stanford_cars(tmp_path, capsys):
    assert _fetch_script().main(["--dataset", "stanford-cars", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "cannot be downloaded automatically" in out
    assert str(tmp_path / "stanford_cars" / "devkit" / "cars_meta.mat") in out


def test_fetch_script_explains_how_to_place_imagenet100(tmp_path, capsys):
    assert _fetch_script().main(["--dataset", "imagenet100", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "image-net.org" in out and str(tmp_path / "imagenet100" / "classnames.txt") in out
    writers()["imagenet100"](tmp_path)
    assert _fetch_script().main(["--dataset", "imagenet100", "--root", str(tmp_path)]) == 0


def test_imagenet100_names_a_bad_class_list_line_and_a_missing_class_folder(tmp_path):
    writers()["imagenet100"](tmp_path)
    names = tmp_path / "imagenet100" / "classnames.txt"
    names.write_text(names.read_text() + "n01491361 tiger shark\n")
    record_folder(names.parent)  # changed on purpose: recorded again, as fetch_torchvision.py --record does
    with pytest.raises(DatasetNotFoundError, match="1 of the 4 classes.*n01491361"):
        load_dataset("imagenet100", "train", root=tmp_path)
    names.write_text("tench n01440764\n")
    record_folder(names.parent)
    with pytest.raises(ValueError, match="'<wnid> <class name>'"):
        load_dataset("imagenet100", "train", root=tmp_path)


def test_fetch_script_reports_a_failed_download_and_carries_on(tmp_path, capsys, monkeypatch):
    script = _fetch_script()

    def unreachable(spec, root):
        raise OSError("network is unreachable")

    monkeypatch.setattr(script, "download", unreachable)
    writers()["mnist"](tmp_path)
    assert script.main(["--dataset", "all", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "mnist: already in" in out
    assert "dtd: download failed (OSError: network is unreachable)" in out
    assert "not ready: aircraft, caltech101, cifar10, cifar100, dtd, eurosat, flowers102, food101, " in out
