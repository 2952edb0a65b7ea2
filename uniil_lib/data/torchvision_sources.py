"""Datasets that users with internet download through torchvision (``download=True``), read from disk.

``python data_scripts/fetch_torchvision.py --dataset NAME`` lets torchvision download and unpack a
dataset under the data root; the loaders here then read the files in exactly the layout torchvision
leaves behind (torchvision 0.29). The loaders parse the files themselves instead of calling the
torchvision classes, because those check md5 sums (CIFAR, Flowers102), list folders in an unspecified
order (SUN397) or keep their file lists private; reading the files directly also lets the folder-based
sets know every label without decoding an image. Layouts, relative to the data root:

- ``cifar10``: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``, Python pickles of
  ``{"data": uint8 (N, 3072) in CHW order, "labels": [...]}``; names in ``batches.meta["label_names"]``.
- ``cifar100``: ``cifar-100-python/{train, test, meta}``, the same pickles with ``"fine_labels"``;
  names in ``meta["fine_label_names"]``.
- ``mnist``: ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (IDX files; ``.gz`` also read).
- ``aircraft`` (FGVC-Aircraft, 100 variants): ``fgvc-aircraft-2013b/data/`` with ``variants.txt``,
  ``images_variant_{trainval,test}.txt`` (``<image id> <variant>`` per line) and ``images/<id>.jpg``.
  Our train split is the official ``trainval``.
- ``caltech101``: ``caltech101/101_ObjectCategories/<category>/image_0001.jpg``; ``BACKGROUND_Google``
  is dropped as torchvision does (101 classes). No official split.
- ``dtd``: ``dtd/dtd/images/<class>/<file>.jpg`` and ``dtd/dtd/labels/{train,val,test}1.txt``
  (``<class>/<file>.jpg`` per line). Train is partition 1's train + val, test is its test list.
- ``eurosat`` (RGB): ``eurosat/2750/<Class>/<Class>_<n>.jpg``, ten land-cover classes. No official split.
- ``flowers102``: ``flowers-102/jpg/image_00001.jpg``, ``imagelabels.mat`` (``labels``, 1-based) and
  ``setid.mat`` (``trnid``, ``valid``, ``tstid``, 1-based image ids). Train is trnid + valid.
- ``food101``: ``food-101/images/<class>/<id>.jpg`` and ``food-101/meta/{train,test}.json``
  (``{class: ["<class>/<id>", ...]}``).
- ``oxford-pets``: ``oxford-iiit-pet/images/<Breed>_<n>.jpg`` and
  ``oxford-iiit-pet/annotations/{trainval,test}.txt`` (``<image id> <class id> <species> <breed id>``).
- ``stanford-cars``: ``stanford_cars/devkit/{cars_meta.mat, cars_train_annos.mat}``,
  ``stanford_cars/cars_train/``, ``stanford_cars/cars_test_annos_withlabels.mat`` and
  ``stanford_cars/cars_test/``; annotations are MATLAB structs with ``fname`` and 1-based ``class``.
  torchvision cannot download it any more (the host is gone): the fetch script explains where to put it.
- ``sun397``: ``SUN397/ClassName.txt`` (``/a/abbey`` per line) and ``SUN397/a/abbey/sun_*.jpg``.
  No official split in torchvision's download (the official partitions are a separate file).
- ``imagenet100`` (ImageNet-100, a 100-class subset of ILSVRC-2012; manual, ImageNet needs an account):
  ``imagenet100/classnames.txt`` with one ``<wnid> <class name>`` line per class (the file's order is the
  label order; ``LOC_synset_mapping.txt`` lines such as ``n01440764 tench, Tinca tinca`` work too, the name
  ends at the first comma), ``imagenet100/train/<wnid>/*.JPEG`` and ``imagenet100/val/<wnid>/*.JPEG``
  (ILSVRC's val images sorted into class folders). The split is the official one: train and val.

Integrity (our addition): every dataset folder holds a ``checksums.json`` with the sha256 of each of its
files, written by the fetch script after the download (or, for files placed by hand, when it first finds
them). Loaders check the list, label and array files they read against it, and every image file when it is
read (its bytes are read anyway, so hashing them costs little); cache keys carry the record's digest. A
changed or damaged file is an :class:`~uniil_lib.integrity.IntegrityError` that names it.

Where a dataset has no official test split (``caltech101``, ``eurosat``, ``sun397``) we make one (our
choice, not the authors'): within each class, a generator seeded with ``(SPLIT_SEED, label)`` shuffles the
images (sorted by file name) and ``TEST_FRACTION`` = 20% of them become the test split. The split of a
class depends only on that class's files. 20% is also the test share used by the MTIL benchmark (ZSCL's
published test sizes: Caltech101 1,736, EuroSAT 5,400, SUN397 21,751), though not the same images.

CIFAR pickles are read with :mod:`pickle`, as torchvision does: only load files you downloaded yourself.
"""

from __future__ import annotations

import io
import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from ..fileio import CorruptFileError
from ..integrity import Checksums, IntegrityError, sha256_text
from .base import ArrayImageSet, DatasetNotFoundError, FunctionImageSet, ImageSet
from .offline import DIGIT_CLASSES, DIGIT_TEMPLATES, read_idx
from .source_spec import SPLITS, SourceSpec

FETCH_COMMAND = "python data_scripts/fetch_torchvision.py --dataset {name}"
SPLIT_SEED = 0
TEST_FRACTION = 0.2
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

CIFAR_TEMPLATES = ("a photo of a {}.", "a blurry photo of a {}.", "a low resolution photo of a {}.")
CALTECH_BACKGROUND = "BACKGROUND_Google"
# Folder names that "underscores to spaces" would not make into good prompt words (after the CLIP paper's
# class names); every other Caltech101 folder is used with underscores replaced.
CALTECH_NAMES = MappingProxyType({
    "Faces": "off-center face", "Faces_easy": "centered face", "Leopards": "leopard",
    "Motorbikes": "motorbike", "airplanes": "airplane", "car_side": "side of a car",
    "cougar_body": "body of a cougar cat", "cougar_face": "face of a cougar cat",
    "crocodile_head": "head of a crocodile", "flamingo_head": "head of a flamingo",
    "snoopy": "snoopy (cartoon beagle)", "water_lilly": "water lily", "yin_yang": "yin and yang",
})
EUROSAT_NAMES = MappingProxyType({
    "AnnualCrop": "annual crop land", "Forest": "forest", "HerbaceousVegetation": "herbaceous vegetation land",
    "Highway": "highway or road", "Industrial": "industrial buildings", "Pasture": "pasture land",
    "PermanentCrop": "permanent crop land", "Residential": "residential buildings", "River": "river",
    "SeaLake": "sea or lake",
})


# ---------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------


class ChecksumsMissingError(DatasetNotFoundError):
    """A dataset's files are there but its ``checksums.json`` is not (the fetch script records it)."""


def fetch_command(name: str) -> str:
    """The command that downloads dataset ``name``, e.g. ``fetch_command("dtd")``."""
    return FETCH_COMMAND.format(name=name)


def _recorded(name: str, base: Path) -> Checksums:
    """The ``checksums.json`` of dataset ``name``, whose folder under the data root is ``base``.

    Raises:
        ChecksumsMissingError: there is none (the message names the command that records it).
    """
    fix = (f"Fetch it again (delete {base}, then: {fetch_command(name)}), or if you changed it on purpose, "
           f"record the files as they are with: {fetch_command(name)} --record")
    record = Checksums.read(base, fix=fix)
    if record is None:
        raise ChecksumsMissingError(f"{name}: {base / 'checksums.json'} is missing (the sha256 of every file, which "
                                    f"loaders check); record it with: {fetch_command(name)}")
    return record


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"{name}: split must be one of {SPLITS}, got {split!r}")


def _require(name: str, folder: Path, *relative: str) -> None:
    """Raise :class:`DatasetNotFoundError` unless ``folder`` holds every path in ``relative``.

    Args:
        name: registry name, used for the fetch command in the message.
        folder: the dataset's folder under the data root.
        relative: files or folders that must exist inside ``folder``.
    """
    for part in ("", *relative):
        if not (folder / part).exists():
            what = f"{part!r} not found in {folder}" if part else f"no dataset folder at {folder}"
            raise DatasetNotFoundError(
                f"{name}: {what}. Fetch it with: {fetch_command(name)} "
                "(or pass root= / set UNIIL_DATA to the data root that holds it)"
            )


def read_lines(path: Path) -> list[str]:
    """The non-empty lines of a text file, stripped; ``#`` comment lines are skipped."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _label_of(index: dict[str, int], class_name: str, source: Path) -> int:
    if class_name not in index:
        raise ValueError(f"{source} names class {class_name!r}, which is not among the {len(index)} known classes")
    return index[class_name]


def _underscores_to_spaces(name: str) -> str:
    return " ".join(name.replace("_", " ").split())


@dataclass(frozen=True)
class ImageFiles:
    """A picklable ``load(i)`` for :class:`FunctionImageSet`: opens ``paths[i]`` as an RGB image on demand,
    after checking its bytes against ``digests[i]`` (when given)."""

    paths: tuple[Path, ...]
    digests: tuple[str, ...] | None = None
    fix: str = ""

    def __call__(self, index: int) -> Image.Image:
        path = self.paths[index]
        data = path.read_bytes()
        if self.digests is not None and sha256_text(data) != self.digests[index]:
            raise IntegrityError(f"{path}: sha256 differs from the one recorded in checksums.json: the image was "
                                 f"changed or damaged. {self.fix}")
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.convert("RGB")
        except (OSError, ValueError, SyntaxError) as error:  # PIL's errors for unreadable or truncated images
            raise CorruptFileError(f"{path} is not a readable image ({error}). {self.fix}") from error


def files_image_set(paths: Sequence[Path], labels: Sequence[int], class_names: Sequence[str], key: str,
                     record: Checksums) -> ImageSet:
    """A lazily loaded :class:`FunctionImageSet` over image files, with the labels checked against the names.

    Args:
        paths: one image file per item.
        labels: one label per item, in ``[0, len(class_names))``.
        class_names: human-readable class names.
        key: cache key, ``"<name>/<split>"``; the record's digest is appended.
        record: the dataset's checksums: every image is checked against it when read.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(paths) != len(labels):
        raise ValueError(f"{key}: {len(paths)} image files but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(f"{key}: labels must lie in [0, {len(class_names)}), got {labels.min()}..{labels.max()}")
    files = ImageFiles(tuple(paths), tuple(record.expected(p) for p in paths), record.fix)
    return FunctionImageSet(load=files, labels=labels, class_names=list(class_names),
                            key=f"{key}[{record.digest[7:19]}]")


def _list_images(folder: Path, pattern: str = "*") -> list[Path]:
    """Image files (by suffix) directly inside ``folder`` that match ``pattern``, sorted by name."""
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _subfolders(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir())


def _class_folders(folder: Path, class_dirs: Sequence[str], pattern: str = "*") -> tuple[list[Path], list[int]]:
    """Images of ``folder/<class_dirs[k]>/`` with label ``k``, class by class, files sorted by name."""
    paths: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        files = _list_images(folder / class_dir, pattern)
        paths.extend(files)
        labels.extend([label] * len(files))
    return paths, labels


def seeded_split(labels: Sequence[int], split: str, *, test_fraction: float = TEST_FRACTION) -> np.ndarray:
    """Sorted indices of ``split`` in our per-class seeded split (for datasets without an official one).

    Each class's members are shuffled by a generator seeded with ``(SPLIT_SEED, label)``, and the first
    ``round(test_fraction * n)`` of them (at least one when the class has two or more) form the test split.

    Args:
        labels: one label per item, items in a fixed order (sorted file names).
        split: ``"train"`` or ``"test"``.
        test_fraction: share of each class that goes to the test split.
    """
    labels = np.asarray(labels, dtype=np.int64)
    chosen: list[np.ndarray] = []
    for label in np.unique(labels):
        members = np.random.default_rng([SPLIT_SEED, int(label)]).permutation(np.flatnonzero(labels == label))
        n_test = max(1, int(np.floor(test_fraction * len(members) + 0.5))) if len(members) > 1 else 0
        chosen.append(members[:n_test] if split == "test" else members[n_test:])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def _seeded_files_image_set(
    paths: Sequence[Path], labels: Sequence[int], class_names: Sequence[str], name: str, split: str,
    record: Checksums,
) -> ImageSet:
    keep = seeded_split(labels, split)
    return files_image_set([paths[i] for i in keep], np.asarray(labels)[keep], class_names, f"{name}/{split}",
                            record)


def _loadmat(path: Path) -> dict:
    """``scipy.io.loadmat(path, squeeze_me=True)``, with a clear message if scipy is missing."""
    try:
        from scipy.io import loadmat
    except ImportError as error:
        raise ImportError(f"reading {path.name} (a MATLAB file) needs scipy: pip install scipy") from error
    return loadmat(str(path), squeeze_me=True)


# ---------------------------------------------------------------------------------------------------
# In-memory datasets: CIFAR and MNIST
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CifarLayout:
    """Where a CIFAR variant keeps its pickles and which keys hold labels and class names."""

    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    names_key: str
    labels_key: str


CIFAR10_LAYOUT = CifarLayout(
    "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
    "batches.meta", "label_names", "labels",
)
CIFAR100_LAYOUT = CifarLayout("cifar-100-python", ("train",), ("test",), "meta", "fine_label_names", "fine_labels")


def _unpickle(path: Path) -> dict:
    """Load one CIFAR pickle (written by Python 2, hence latin1); bytes keys become str."""
    try:
        with open(path, "rb") as handle:
            entry = pickle.load(handle, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise CorruptFileError(f"{path} is not a readable CIFAR pickle ({error})") from error
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in entry.items()}


def _load_cifar(name: str, layout: CifarLayout, split: str, root: Path) -> ImageSet:
    """Read a CIFAR split into an :class:`ArrayImageSet` of ``(N, 32, 32, 3)`` pixels.

    Args:
        name: registry name (``"cifar10"`` or ``"cifar100"``).
        layout: the variant's file names and keys.
        split: ``"train"`` or ``"test"``.
        root: the data root.
    """
    _check_split(name, split)
    folder = root / layout.folder
    files = layout.train_files if split == "train" else layout.test_files
    _require(name, folder, layout.meta_file, *files)
    record = _recorded(name, folder)
    batches = [_unpickle(record.verify(folder / file)) for file in files]
    # Each row is 3072 bytes: the 1024 red values, then green, then blue (CHW); we want HWC.
    data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.concatenate([np.asarray(b[layout.labels_key], dtype=np.int64) for b in batches])
    meta = _unpickle(record.verify(folder / layout.meta_file))
    names = [_underscores_to_spaces(str(n)) for n in meta[layout.names_key]]
    return ArrayImageSet(np.ascontiguousarray(images), labels, names, key=f"{name}/{split}[{record.digest[7:19]}]")


def load_cifar10(split: str, root: Path) -> ImageSet:
    """CIFAR-10 from ``root/cifar-10-batches-py`` (50k train / 10k test, 32x32 colour)."""
    return _load_cifar("cifar10", CIFAR10_LAYOUT, split, root)


def load_cifar100(split: str, root: Path) -> ImageSet:
    """CIFAR-100 (fine labels) from ``root/cifar-100-python`` (50k train / 10k test, 32x32 colour)."""
    return _load_cifar("cifar100", CIFAR100_LAYOUT, split, root)


def _idx_file(folder: Path, stem: str) -> Path:
    """``folder/stem`` (torchvision's unpacked file) or, if only that exists, ``folder/stem.gz``."""
    packed = folder / f"{stem}.gz"
    if packed.exists() and not (folder / stem).exists():
        return packed
    _require("mnist", folder, stem)
    return folder / stem


def load_mnist(split: str, root: Path) -> ImageSet:
    """MNIST from ``root/MNIST/raw`` (60k train / 10k test, 28x28 gray), the IDX files torchvision unpacks."""
    _check_split("mnist", split)
    folder = root / "MNIST" / "raw"
    prefix = "train" if split == "train" else "t10k"
    image_file = _idx_file(folder, f"{prefix}-images-idx3-ubyte")
    label_file = _idx_file(folder, f"{prefix}-labels-idx1-ubyte")
    record = _recorded("mnist", root / "MNIST")
    images, labels = read_idx(record.verify(image_file)), read_idx(record.verify(label_file))
    return ArrayImageSet(images, labels, DIGIT_CLASSES, key=f"mnist/{split}[{record.digest[7:19]}]")


# ---------------------------------------------------------------------------------------------------
# Folder datasets with official splits
# ---------------------------------------------------------------------------------------------------


def load_aircraft(split: str, root: Path) -> ImageSet:
    """FGVC-Aircraft, 100 variants; train is the official trainval (6,667), test 3,333 images."""
    _check_split("aircraft", split)
    folder = root / "fgvc-aircraft-2013b" / "data"
    list_name = f"images_variant_{'trainval' if split == 'train' else 'test'}.txt"
    _require("aircraft", folder, "variants.txt", list_name, "images")
    record = _recorded("aircraft", root / "fgvc-aircraft-2013b")
    classes = read_lines(record.verify(folder / "variants.txt"))
    index = {variant: label for label, variant in enumerate(classes)}
    paths, labels = [], []
    for line in read_lines(record.verify(folder / list_name)):
        image_id, variant = line.split(" ", 1)
        paths.append(folder / "images" / f"{image_id}.jpg")
        labels.append(_label_of(index, variant, folder / list_name))
    return files_image_set(paths, labels, classes, f"aircraft/{split}", record)


def load_dtd(split: str, root: Path) -> ImageSet:
    """DTD textures, 47 classes; partition 1: train = train1 + val1 (3,760), test = test1 (1,880)."""
    _check_split("dtd", split)
    folder = root / "dtd" / "dtd"
    lists = ("train1.txt", "val1.txt") if split == "train" else ("test1.txt",)
    _require("dtd", folder, "images", *(f"labels/{name}" for name in lists))
    record = _recorded("dtd", root / "dtd")
    classes = _subfolders(folder / "images")
    index = {name: label for label, name in enumerate(classes)}
    paths, labels = [], []
    for list_name in lists:
        for line in read_lines(record.verify(folder / "labels" / list_name)):
            paths.append(folder / "images" / line)
            labels.append(_label_of(index, line.split("/")[0], folder / "labels" / list_name))
    return files_image_set(paths, labels, [_underscores_to_spaces(c) for c in classes], f"dtd/{split}", record)


def _flowers_class_names() -> list[str]:
    # torchvision keeps the 102 names (in label order) as a class attribute; one ends in a stray "?".
    from torchvision.datasets import Flowers102

    return [name.replace("?", "").strip() for name in Flowers102.classes]


def load_flowers102(split: str, root: Path) -> ImageSet:
    """Oxford Flowers-102; train = trnid + valid (2,040), test = tstid (6,149). Needs scipy."""
    _check_split("flowers102", split)
    folder = root / "flowers-102"
    _require("flowers102", folder, "jpg", "imagelabels.mat", "setid.mat")
    record = _recorded("flowers102", folder)
    set_ids = _loadmat(record.verify(folder / "setid.mat"))
    keys = ("trnid", "valid") if split == "train" else ("tstid",)
    image_ids = np.concatenate([np.atleast_1d(set_ids[key]) for key in keys]).astype(np.int64)
    all_labels = np.atleast_1d(_loadmat(record.verify(folder / "imagelabels.mat"))["labels"]).astype(np.int64) - 1
    paths = [folder / "jpg" / f"image_{image_id:05d}.jpg" for image_id in image_ids]
    return files_image_set(paths, all_labels[image_ids - 1], _flowers_class_names(), f"flowers102/{split}", record)


def load_food101(split: str, root: Path) -> ImageSet:
    """Food-101, 101 dishes; the official 750 train / 250 test images per class."""
    _check_split("food101", split)
    folder = root / "food-101"
    _require("food101", folder, "images", f"meta/{split}.json")
    record = _recorded("food101", folder)
    metadata = json.loads(record.verify(folder / "meta" / f"{split}.json").read_text(encoding="utf-8"))
    classes = sorted(metadata)
    paths, labels = [], []
    for label, class_name in enumerate(classes):
        paths.extend(folder / "images" / f"{relative}.jpg" for relative in metadata[class_name])
        labels.extend([label] * len(metadata[class_name]))
    return files_image_set(paths, labels, [_underscores_to_spaces(c) for c in classes], f"food101/{split}", record)


def _pet_rows(path: Path) -> list[tuple[str, int]]:
    """``(image id, 0-based class)`` per line of an Oxford-IIIT Pet list (``id class species breed``)."""
    rows = []
    for line in read_lines(path):
        image_id, class_id = line.split()[:2]
        rows.append((image_id, int(class_id) - 1))
    return rows


def _pet_breeds(rows: Sequence[tuple[str, int]], source: Path) -> list[str]:
    """Breed names by class: the image id without its number, underscores replaced ("Egyptian Mau")."""
    breeds = {label: image_id.rsplit("_", 1)[0] for image_id, label in rows}
    if sorted(breeds) != list(range(len(breeds))):
        raise ValueError(f"{source.parent}: class ids are not 1..{len(breeds)}; the annotation lists are incomplete")
    return [_underscores_to_spaces(breeds[label]) for label in range(len(breeds))]


def load_oxford_pets(split: str, root: Path) -> ImageSet:
    """Oxford-IIIT Pet, 37 breeds; train = trainval (3,680), test (3,669). Cat breeds are capitalised."""
    _check_split("oxford-pets", split)
    folder = root / "oxford-iiit-pet"
    _require("oxford-pets", folder, "images", "annotations/trainval.txt", "annotations/test.txt")
    record = _recorded("oxford-pets", folder)
    rows = {name: _pet_rows(record.verify(folder / "annotations" / f"{name}.txt")) for name in ("trainval", "test")}
    class_names = _pet_breeds(rows["trainval"] + rows["test"], folder / "annotations" / "trainval.txt")
    chosen = rows["trainval" if split == "train" else "test"]
    paths = [folder / "images" / f"{image_id}.jpg" for image_id, _ in chosen]
    return files_image_set(paths, [label for _, label in chosen], class_names, f"oxford-pets/{split}", record)


def load_stanford_cars(split: str, root: Path) -> ImageSet:
    """Stanford Cars, 196 models; the official 8,144 train / 8,041 test images. Needs scipy."""
    _check_split("stanford-cars", split)
    folder = root / "stanford_cars"
    annotations = "devkit/cars_train_annos.mat" if split == "train" else "cars_test_annos_withlabels.mat"
    images = "cars_train" if split == "train" else "cars_test"
    _require("stanford-cars", folder, "devkit/cars_meta.mat", annotations, images)
    record = _recorded("stanford-cars", folder)
    records = np.atleast_1d(_loadmat(record.verify(folder / annotations))["annotations"])
    paths = [folder / images / str(record["fname"]) for record in records]
    labels = [int(record["class"]) - 1 for record in records]  # classes are 1-based in the .mat files
    raw_names = np.atleast_1d(_loadmat(record.verify(folder / "devkit" / "cars_meta.mat"))["class_names"])
    names = [" ".join(str(n).split()) for n in raw_names]
    return files_image_set(paths, labels, names, f"stanford-cars/{split}", record)


# ---------------------------------------------------------------------------------------------------
# Folder datasets without an official split (seeded 80/20 per class, our choice)
# ---------------------------------------------------------------------------------------------------


def _caltech_name(folder_name: str) -> str:
    return CALTECH_NAMES.get(folder_name, _underscores_to_spaces(folder_name).lower())


def load_caltech101(split: str, root: Path) -> ImageSet:
    """Caltech-101 without BACKGROUND_Google (8,677 images, 101 classes); our seeded 80/20 split per class."""
    _check_split("caltech101", split)
    folder = root / "caltech101" / "101_ObjectCategories"
    _require("caltech101", folder)
    record = _recorded("caltech101", root / "caltech101")
    categories = [c for c in _subfolders(folder) if c != CALTECH_BACKGROUND]
    paths, labels = _class_folders(folder, categories)
    names = [_caltech_name(c) for c in categories]
    return _seeded_files_image_set(paths, labels, names, "caltech101", split, record)


def _eurosat_name(folder_name: str) -> str:
    # Unknown folders: split CamelCase into lower-case words ("SeaLake" -> "sea lake").
    return EUROSAT_NAMES.get(folder_name, " ".join(re.findall(r"[A-Z][a-z]*|[a-z]+|\d+", folder_name)).lower())


def load_eurosat(split: str, root: Path) -> ImageSet:
    """EuroSAT RGB (27,000 64x64 satellite images, 10 classes); our seeded 80/20 split per class."""
    _check_split("eurosat", split)
    folder = root / "eurosat" / "2750"
    _require("eurosat", folder)
    record = _recorded("eurosat", root / "eurosat")
    classes = _subfolders(folder)
    paths, labels = _class_folders(folder, classes)
    return _seeded_files_image_set(paths, labels, [_eurosat_name(c) for c in classes], "eurosat", split, record)


def load_sun397(split: str, root: Path) -> ImageSet:
    """SUN397 scenes (108,754 images, 397 classes); our seeded 80/20 split per class."""
    _check_split("sun397", split)
    folder = root / "SUN397"
    _require("sun397", folder, "ClassName.txt")
    record = _recorded("sun397", folder)
    # Lines look like "/a/abbey" or "/a/apartment_building/outdoor": the class folder below SUN397/.
    class_dirs = [line.lstrip("/") for line in read_lines(record.verify(folder / "ClassName.txt"))]
    paths, labels = _class_folders(folder, class_dirs, pattern="sun_*")
    names = [_underscores_to_spaces(d.split("/", 1)[-1].replace("/", " ")) for d in class_dirs]
    return _seeded_files_image_set(paths, labels, names, "sun397", split, record)


def load_imagenet100(split: str, root: Path) -> ImageSet:
    """ImageNet-100 (100 ILSVRC-2012 classes listed in ``classnames.txt``; train / val as train / test)."""
    _check_split("imagenet100", split)
    folder = root / "imagenet100"
    split_dir = {"train": "train", "test": "val"}[split]
    _require("imagenet100", folder, "classnames.txt", split_dir)
    record = _recorded("imagenet100", folder)
    wnids, names = [], []
    for line in read_lines(record.verify(folder / "classnames.txt")):
        wnid, _, name = line.partition(" ")
        name = name.split(",")[0].strip()
        if not re.fullmatch(r"n\d{8}", wnid) or not name:
            raise ValueError(f"{folder / 'classnames.txt'}: expected '<wnid> <class name>' lines such as "
                             f"'n01440764 tench', got {line!r}")
        wnids.append(wnid)
        names.append(_underscores_to_spaces(name))
    missing = [w for w in wnids if not (folder / split_dir / w).is_dir()]
    if missing:
        raise DatasetNotFoundError(
            f"imagenet100: {len(missing)} of the {len(wnids)} classes in classnames.txt have no folder in "
            f"{folder / split_dir} (first: {missing[0]}). Put each class's images in {split_dir}/<wnid>/; "
            f"see: {fetch_command('imagenet100')}")
    paths, labels = _class_folders(folder / split_dir, wnids)
    return files_image_set(paths, labels, names, f"imagenet100/{split}", record)


# ---------------------------------------------------------------------------------------------------
# Registry entries
# ---------------------------------------------------------------------------------------------------


def _spec(
    name: str, load: Callable[[str, Path], ImageSet], *, templates: tuple[str, ...], domain: str,
    description: str, folder: str, torchvision_class: str, auto_download: bool = True,
) -> SourceSpec:
    """One torchvision source; ``extra`` tells the fetch script which torchvision class downloads it."""
    extra = {"folder": folder, "torchvision_class": torchvision_class, "auto_download": auto_download}
    return SourceSpec(
        name=name, load=load, offline=False, fetch_command=fetch_command(name), templates=templates,
        domain=domain, description=description, extra=MappingProxyType(extra),
    )


def torchvision_sources() -> list[SourceSpec]:
    """The torchvision sources, for the registry (see the module docstring for their layouts)."""
    return [
        _spec("cifar10", load_cifar10, templates=CIFAR_TEMPLATES, domain="low-res-photo",
              description="CIFAR-10, 10 classes, 50k/10k 32x32 colour", folder="cifar-10-batches-py",
              torchvision_class="CIFAR10"),
        _spec("cifar100", load_cifar100, templates=CIFAR_TEMPLATES, domain="low-res-photo",
              description="CIFAR-100, 100 classes, 50k/10k 32x32 colour", folder="cifar-100-python",
              torchvision_class="CIFAR100"),
        _spec("mnist", load_mnist, templates=DIGIT_TEMPLATES, domain="handwritten-digit",
              description="MNIST, 10 digits, 60k/10k 28x28 gray", folder="MNIST", torchvision_class="MNIST"),
        _spec("aircraft", load_aircraft,
              templates=("a photo of a {}, a type of aircraft.", "a photo of the {}, a type of aircraft."),
              domain="photo", description="FGVC-Aircraft, 100 variants, 6,667 trainval / 3,333 test",
              folder="fgvc-aircraft-2013b", torchvision_class="FGVCAircraft"),
        _spec("caltech101", load_caltech101,
              templates=("a photo of a {}.", "a painting of a {}.", "a sketch of a {}."), domain="photo",
              description="Caltech-101, 101 objects, 8,677 images, seeded 80/20 split (ours)",
              folder="caltech101", torchvision_class="Caltech101"),
        _spec("dtd", load_dtd,
              templates=("a photo of a {} texture.", "a photo of a {} pattern.", "a photo of a {} thing.",
                         "a photo of a {} object."),
              domain="texture", description="Describable Textures, 47 classes, 3,760 / 1,880 (partition 1)",
              folder="dtd", torchvision_class="DTD"),
        _spec("eurosat", load_eurosat,
              templates=("a centered satellite photo of {}.", "a centered satellite photo of a {}."),
              domain="satellite",
              description="EuroSAT RGB, 10 land-cover classes, 27,000 64x64, seeded 80/20 split (ours)",
              folder="eurosat", torchvision_class="EuroSAT"),
        _spec("flowers102", load_flowers102, templates=("a photo of a {}, a type of flower.",), domain="photo",
              description="Oxford Flowers-102, 102 species, 2,040 train+val / 6,149 test",
              folder="flowers-102", torchvision_class="Flowers102"),
        _spec("food101", load_food101, templates=("a photo of {}, a type of food.",), domain="photo",
              description="Food-101, 101 dishes, 75,750 / 25,250", folder="food-101", torchvision_class="Food101"),
        _spec("oxford-pets", load_oxford_pets, templates=("a photo of a {}, a type of pet.",), domain="photo",
              description="Oxford-IIIT Pet, 37 breeds, 3,680 trainval / 3,669 test",
              folder="oxford-iiit-pet", torchvision_class="OxfordIIITPet"),
        _spec("stanford-cars", load_stanford_cars,
              templates=("a photo of a {}.", "a photo of the {}.", "a photo of my {}.", "i love my {}!"),
              domain="photo", description="Stanford Cars, 196 models, 8,144 / 8,041 (manual download)",
              folder="stanford_cars", torchvision_class="StanfordCars", auto_download=False),
        _spec("imagenet100", load_imagenet100, templates=("a good photo of a {}.", "a photo of a {}."),
              domain="photo", description="ImageNet-100, 100 ILSVRC-2012 classes, ~1,300 / 50 per class (manual)",
              folder="imagenet100", torchvision_class="ImageNet", auto_download=False),
        _spec("sun397", load_sun397, templates=("a photo of a {}.", "a photo of the {}."), domain="photo",
              description="SUN397 scenes, 397 classes, 108,754 images, seeded 80/20 split (ours)",
              folder="SUN397", torchvision_class="SUN397"),
    ]
