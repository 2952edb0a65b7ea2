"""Tiny fake datasets in the exact on-disk layouts that torchvision's ``download=True`` leaves behind.

Each ``write_<dataset>(root)`` puts 2-3 classes with a few images under ``root`` and returns a
:class:`Fixture` that says what ``load_dataset(name, split, root=root)`` must find. Folder datasets get
8x8 JPEGs of one solid colour each (so a decoded image identifies its file within a small tolerance);
CIFAR and MNIST get random pixels that must come back exactly. File names, list files, pickles, IDX
and MATLAB files follow the real datasets, so the real torchvision classes can read them too.
"""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from uniil_lib.integrity import record_folder

JPEG_TOLERANCE = 6  # max abs pixel error allowed after a solid-colour 8x8 JPEG round trip


@dataclass(frozen=True)
class Item:
    """One image the loader must return: its label and its RGB pixels ``(H, W, 3)``."""

    label: int
    pixels: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Fixture:
    """What a fake dataset holds.

    Attributes:
        class_names: the names the loader must report (for Flowers102, only the first few; see n_classes).
        n_classes: the number of class names the loader must report.
        splits: ``"train"`` / ``"test"`` items in loader order, or ``"all"`` for datasets that we split.
        tolerance: max abs pixel difference allowed (0 for lossless formats).
        folder: the folder under ``root`` that the dataset lives in.
    """

    class_names: tuple[str, ...]
    n_classes: int
    splits: Mapping[str, tuple[Item, ...]]
    tolerance: int
    folder: str


def _color(k: int) -> tuple[int, int, int]:
    """The k-th distinct solid colour (k < 36): channels at least 40 apart from every other colour's."""
    return 20 + 40 * (k % 6), 20 + 40 * (k // 6), 128


def _write_jpeg(path: Path, k: int) -> np.ndarray:
    """Write an 8x8 JPEG of colour ``_color(k)`` at ``path``; return its intended pixels."""
    pixels = np.zeros((8, 8, 3), dtype=np.uint8) + np.array(_color(k), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG", quality=95)
    return pixels


def _jpeg_item(path: Path, k: int, label: int) -> Item:
    return Item(label=label, pixels=_write_jpeg(path, k))


def _fixture(names: Sequence[str], splits: dict[str, list[Item]], folder: str, *,
             tolerance: int = JPEG_TOLERANCE, n_classes: int | None = None) -> Fixture:
    frozen = MappingProxyType({split: tuple(items) for split, items in splits.items()})
    return Fixture(tuple(names), n_classes or len(names), frozen, tolerance, folder)


# ----------------------------------------------------------------------------------------------------
# CIFAR (Python 2 style pickles) and MNIST (IDX)
# ----------------------------------------------------------------------------------------------------


def _cifar_batch(path: Path, rng: np.random.Generator, labels: Sequence[int], labels_key: str) -> list[Item]:
    """Write one CIFAR pickle holding ``len(labels)`` random 32x32 images; rows are CHW-flattened."""
    images = rng.integers(0, 256, size=(len(labels), 32, 32, 3), dtype=np.uint8)
    entry = {
        "batch_label": f"fixture batch {path.name}",
        labels_key: list(labels),
        "data": images.transpose(0, 3, 1, 2).reshape(len(labels), 3072),
        "filenames": [f"image_{i}.png" for i in range(len(labels))],
    }
    if labels_key == "fine_labels":
        entry["coarse_labels"] = [0] * len(labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(entry, protocol=2))
    return [Item(int(label), image) for label, image in zip(labels, images)]


def write_cifar10(root: Path) -> Fixture:
    """``cifar-10-batches-py``: five train batches of 2 images, a test batch of 3, batches.meta."""
    folder = root / "cifar-10-batches-py"
    rng = np.random.default_rng(10)
    train: list[Item] = []
    for i, labels in enumerate([(0, 1), (2, 0), (1, 2), (0, 0), (2, 1)], start=1):
        train += _cifar_batch(folder / f"data_batch_{i}", rng, labels, "labels")
    test = _cifar_batch(folder / "test_batch", rng, (2, 1, 0), "labels")
    names = ["airplane", "automobile", "bird"]
    meta = {"label_names": names, "num_cases_per_batch": 2, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return _fixture(names, {"train": train, "test": test}, folder.name, tolerance=0)


def write_cifar100(root: Path) -> Fixture:
    """``cifar-100-python``: ``train`` (5 images), ``test`` (3) and ``meta`` with fine and coarse names."""
    folder = root / "cifar-100-python"
    rng = np.random.default_rng(100)
    train = _cifar_batch(folder / "train", rng, (0, 1, 2, 1, 0), "fine_labels")
    test = _cifar_batch(folder / "test", rng, (1, 2, 0), "fine_labels")
    meta = {"fine_label_names": ["apple", "aquarium_fish", "maple_tree"], "coarse_label_names": ["fruit"]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    names = ["apple", "aquarium fish", "maple tree"]
    return _fixture(names, {"train": train, "test": test}, folder.name, tolerance=0)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write an unsigned-byte IDX file (and its .gz twin, as torchvision keeps both)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    path.with_name(path.name + ".gz").write_bytes(gzip.compress(raw))


def write_mnist(root: Path) -> Fixture:
    """``MNIST/raw``: 6 train and 4 test random 28x28 digits with labels 0..2."""
    folder = root / "MNIST" / "raw"
    rng = np.random.default_rng(28)
    splits = {}
    for split, prefix, labels in (("train", "train", [0, 1, 2, 2, 1, 0]), ("test", "t10k", [1, 0, 2, 1])):
        images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.array(labels, dtype=np.uint8))
        splits[split] = [Item(label, np.repeat(image[..., None], 3, axis=2)) for label, image in zip(labels, images)]
    return _fixture([str(d) for d in range(10)], splits, "MNIST", tolerance=0)


# ----------------------------------------------------------------------------------------------------
# Folder datasets with official split lists
# ----------------------------------------------------------------------------------------------------


def write_aircraft(root: Path) -> Fixture:
    """``fgvc-aircraft-2013b/data``: 3 variants, train+val lists (trainval = both) and a test list."""
    folder = root / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "Cessna 172", "F-16A/B"]
    lists = {
        "train": [("1000001", 0), ("1000002", 1), ("1000003", 2)],
        "val": [("1000004", 2), ("1000005", 0)],
        "test": [("1000006", 1), ("1000007", 0), ("1000008", 2)],
    }
    lists["trainval"] = lists["train"] + lists["val"]
    folder.mkdir(parents=True)
    (folder / "variants.txt").write_text("".join(f"{v}\n" for v in variants))
    items: dict[str, list[Item]] = {"train": [], "test": []}
    for list_name, rows in lists.items():
        lines = "".join(f"{image_id} {variants[label]}\n" for image_id, label in rows)
        (folder / f"images_variant_{list_name}.txt").write_text(lines)
        if list_name in ("trainval", "test"):
            split = "train" if list_name == "trainval" else "test"
            items[split] = [_jpeg_item(folder / "images" / f"{i}.jpg", int(i) % 36, label) for i, label in rows]
    return _fixture(variants, items, "fgvc-aircraft-2013b")


def write_dtd(root: Path) -> Fixture:
    """``dtd/dtd``: 3 textures x 3 images, partition 1 lists with one image per class in each."""
    folder = root / "dtd" / "dtd"
    classes = ["banded", "dotted", "zigzagged"]
    items: dict[str, list[Item]] = {"train": [], "test": []}
    lines: dict[str, list[str]] = {"train1": [], "val1": [], "test1": []}
    for label, name in enumerate(classes):
        for j, list_name in enumerate(lines):
            relative = f"{name}/{name}_{j + 1:04d}.jpg"
            lines[list_name].append(relative)
            item = _jpeg_item(folder / "images" / relative, 3 * label + j, label)
            items["test" if list_name == "test1" else "train"].append(item)
    # Loader order is train1 then val1: regroup the train items to match.
    items["train"] = items["train"][0::2] + items["train"][1::2]
    (folder / "labels").mkdir()
    for list_name, rows in lines.items():
        (folder / "labels" / f"{list_name}.txt").write_text("".join(f"{row}\n" for row in rows))
    return _fixture(classes, items, "dtd")


def _savemat(path: Path, contents: dict) -> None:
    from scipy.io import savemat

    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), contents)


def write_flowers102(root: Path) -> Fixture:
    """``flowers-102``: 9 images of classes 1-3, ``imagelabels.mat`` and ``setid.mat`` (1-based ids)."""
    folder = root / "flowers-102"
    labels = [1, 2, 3, 1, 2, 3, 3, 2, 1]  # 1-based, as in the .mat file; image k has labels[k - 1]
    items = {k: _jpeg_item(folder / "jpg" / f"image_{k:05d}.jpg", k, labels[k - 1] - 1) for k in range(1, 10)}
    set_ids = {"trnid": [1, 2, 3], "valid": [6, 5, 4], "tstid": [9, 8, 7]}
    # Integer MATLAB arrays, as in the real files (torchvision formats the ids with ":05d").
    _savemat(folder / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    _savemat(folder / "setid.mat", {key: np.array([ids], dtype=np.uint16) for key, ids in set_ids.items()})
    splits = {
        "train": [items[k] for k in set_ids["trnid"] + set_ids["valid"]],
        "test": [items[k] for k in set_ids["tstid"]],
    }
    names = ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"]
    return _fixture(names, splits, "flowers-102", n_classes=102)


def write_food101(root: Path) -> Fixture:
    """``food-101``: 3 dishes, ``meta/{train,test}.json``, ``classes.txt``, ``labels.txt``."""
    folder = root / "food-101"
    classes = ["apple_pie", "baby_back_ribs", "ramen"]
    ids = {"train": ["1005649", "1011328"], "test": ["3917"]}
    items: dict[str, list[Item]] = {"train": [], "test": []}
    (folder / "meta").mkdir(parents=True)
    k = 0
    for split, split_ids in ids.items():
        metadata = {name: [f"{name}/{i}{label}" for i in split_ids] for label, name in enumerate(classes)}
        (folder / "meta" / f"{split}.json").write_text(json.dumps(metadata))
        for label, name in enumerate(classes):
            for relative in metadata[name]:
                items[split].append(_jpeg_item(folder / "images" / f"{relative}.jpg", k, label))
                k += 1
    (folder / "meta" / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    (folder / "meta" / "labels.txt").write_text("Apple pie\nBaby back ribs\nRamen\n")
    return _fixture(["apple pie", "baby back ribs", "ramen"], items, "food-101")


def write_oxford_pets(root: Path) -> Fixture:
    """``oxford-iiit-pet``: breeds 1-3 (one cat, two dogs), ``annotations/{trainval,test,list}.txt``."""
    folder = root / "oxford-iiit-pet"
    breeds = [("Abyssinian", 1), ("american_bulldog", 2), ("american_pit_bull_terrier", 2)]  # (name, species)
    rows = {"trainval": [(0, 1), (1, 1), (2, 1), (0, 2)], "test": [(2, 3), (1, 3), (0, 3)]}  # (class, number)
    items: dict[str, list[Item]] = {"train": [], "test": []}
    listing = ["#Image CLASS-ID SPECIES BREED ID", "#CLASS-ID: 1:37 Class ids"]
    (folder / "annotations").mkdir(parents=True)
    for list_name, pairs in rows.items():
        lines = []
        for label, number in pairs:
            image_id = f"{breeds[label][0]}_{number}"
            lines.append(f"{image_id} {label + 1} {breeds[label][1]} {number}")
            split = "train" if list_name == "trainval" else "test"
            items[split].append(_jpeg_item(folder / "images" / f"{image_id}.jpg", 6 * label + number, label))
        (folder / "annotations" / f"{list_name}.txt").write_text("\n".join(lines) + "\n")
        listing += lines
    (folder / "annotations" / "list.txt").write_text("\n".join(listing) + "\n")
    names = ["Abyssinian", "american bulldog", "american pit bull terrier"]
    return _fixture(names, items, "oxford-iiit-pet")


def _cars_annotations(path: Path, rows: Sequence[tuple[str, int]]) -> None:
    """A MATLAB struct array ``annotations`` (1 x N) with bbox fields, 1-based ``class`` and ``fname``."""
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    records = np.zeros((1, len(rows)), dtype=[(f, object) for f in fields])
    for j, (fname, class_id) in enumerate(rows):
        records[0, j] = (np.uint8(0), np.uint8(0), np.uint8(7), np.uint8(7), np.uint8(class_id), fname)
    _savemat(path, {"annotations": records})


def write_stanford_cars(root: Path) -> Fixture:
    """``stanford_cars``: devkit ``cars_meta.mat`` / ``cars_train_annos.mat``, test annotations with labels."""
    folder = root / "stanford_cars"
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi TTS Coupe 2012"]
    rows = {"train": [("00001.jpg", 3), ("00002.jpg", 1), ("00003.jpg", 2), ("00004.jpg", 1)],
            "test": [("00001.jpg", 2), ("00002.jpg", 3), ("00003.jpg", 1)]}
    _savemat(folder / "devkit" / "cars_meta.mat", {"class_names": np.array([names], dtype=object)})
    _cars_annotations(folder / "devkit" / "cars_train_annos.mat", rows["train"])
    _cars_annotations(folder / "cars_test_annos_withlabels.mat", rows["test"])
    items: dict[str, list[Item]] = {"train": [], "test": []}
    for split, offset in (("train", 0), ("test", 10)):
        image_folder = folder / ("cars_train" if split == "train" else "cars_test")
        for j, (fname, class_id) in enumerate(rows[split]):
            items[split].append(_jpeg_item(image_folder / fname, offset + j, class_id - 1))
    return _fixture(names, items, "stanford_cars")


# ----------------------------------------------------------------------------------------------------
# Folder datasets without an official split: the fixture lists every image under "all"
# ----------------------------------------------------------------------------------------------------


def _class_tree(folder: Path, class_dirs: Sequence[str], file_name: Callable[[str, int], str], n: int) -> list[Item]:
    """``n`` images in each ``folder/<class_dirs[k]>`` (label k), named by ``file_name(class_dir, j)``."""
    items = []
    for label, class_dir in enumerate(class_dirs):
        for j in range(n):
            path = folder / class_dir / file_name(class_dir, j)
            items.append(_jpeg_item(path, n * label + j, label))
    return items


def write_caltech101(root: Path) -> Fixture:
    """``caltech101/101_ObjectCategories``: 3 categories x 3 images plus BACKGROUND_Google (ignored)."""
    folder = root / "caltech101" / "101_ObjectCategories"
    categories = ["Faces_easy", "Leopards", "yin_yang"]
    items = _class_tree(folder, categories, lambda _, j: f"image_{j + 1:04d}.jpg", 3)
    for j in range(2):
        _write_jpeg(folder / "BACKGROUND_Google" / f"image_{j + 1:04d}.jpg", 30 + j)
    (root / "caltech101" / "Annotations").mkdir()
    return _fixture(["centered face", "leopard", "yin and yang"], {"all": items}, "caltech101")


def write_eurosat(root: Path) -> Fixture:
    """``eurosat/2750``: 3 land-cover classes x 3 images named ``<Class>_<n>.jpg``."""
    folder = root / "eurosat" / "2750"
    classes = ["AnnualCrop", "Forest", "SeaLake"]
    items = _class_tree(folder, classes, lambda name, j: f"{name}_{j + 1}.jpg", 3)
    return _fixture(["annual crop land", "forest", "sea or lake"], {"all": items}, "eurosat")


def write_sun397(root: Path) -> Fixture:
    """``SUN397``: ``ClassName.txt`` and 3 classes x 3 ``sun_*.jpg`` (one two-level class path)."""
    folder = root / "SUN397"
    class_dirs = ["a/abbey", "a/apartment_building/outdoor", "b/bakery/shop"]
    items = _class_tree(folder, class_dirs, lambda _, j: f"sun_{'abc'[j]}fixture{j}.jpg", 3)
    (folder / "ClassName.txt").write_text("".join(f"/{d}\n" for d in class_dirs))
    (folder / "README.txt").write_text("fixture\n")
    return _fixture(["abbey", "apartment building outdoor", "bakery shop"], {"all": items}, "SUN397")


def write_imagenet100(root: Path) -> Fixture:
    """``imagenet100``: ``classnames.txt`` (``LOC_synset_mapping.txt`` style) and 3 classes x 2 train / 1 val JPEGs."""
    folder = root / "imagenet100"
    wnids = ["n01440764", "n01443537", "n01484850"]
    folder.mkdir(parents=True)
    (folder / "classnames.txt").write_text(
        "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n"
        "n01484850 great_white_shark, white shark, man-eater\n")
    items = {split: _class_tree(folder / split_dir, wnids, lambda w, j: f"{w}_{j + 1}.JPEG", n)
             for split, split_dir, n in (("train", "train", 2), ("test", "val", 1))}
    return _fixture(["tench", "goldfish", "great white shark"], items, "imagenet100")


DOMAINNET_CLASSES = ("The_Eiffel_Tower", "aircraft_carrier", "apple", "zigzag")  # folder names, label order


def write_domainnet(root: Path, domains: Sequence[str] = ("clipart", "infograph", "painting", "quickdraw", "real",
                                                          "sketch")) -> dict[str, Fixture]:
    """``domainnet``: per domain, 4 classes x (2 train + 1 test) JPEGs in ``<domain>/<class>/<domain>_<k>_<n>.jpg`` and
    the official list files ``<domain>_{train,test}.txt`` (``<domain>/<class>/<file>.jpg <label>``), checksums
    recorded. ``"apple"`` is also a CIFAR-100 fixture class (the ``uniil`` stream must leave it out)."""
    folder = root / "domainnet"
    fixtures = {}
    for d, domain in enumerate(domains):
        items: dict[str, list[Item]] = {"train": [], "test": []}
        lines: dict[str, list[str]] = {"train": [], "test": []}
        for label, class_dir in enumerate(DOMAINNET_CLASSES):
            for j, split in enumerate(("train", "train", "test")):
                relative = f"{domain}/{class_dir}/{domain}_{label:03d}_{j:06d}.jpg"
                items[split].append(_jpeg_item(folder / relative, (5 * d + 3 * label + j) % 36, label))
                lines[split].append(f"{relative} {label}")
        for split, rows in lines.items():
            (folder / f"{domain}_{split}.txt").write_text("".join(f"{row}\n" for row in rows))
        names = [name.replace("_", " ") for name in DOMAINNET_CLASSES]
        fixtures[domain] = _fixture(names, items, "domainnet")
    record_folder(folder)
    return fixtures


def recorded(write: Callable[[Path], Fixture]) -> Callable[[Path], Fixture]:
    """``write``, then record the sha256 of the dataset's files in its ``checksums.json``, as the fetch script does."""
    def write_and_record(root: Path) -> Fixture:
        fixture = write(root)
        record_folder(root / fixture.folder)
        return fixture

    return write_and_record


def writers(*, record: bool = True) -> Mapping[str, Callable[[Path], Fixture]]:
    """Registry name -> fixture writer, for every torchvision source (``record``: with its ``checksums.json``)."""
    plain = {
        "cifar10": write_cifar10, "cifar100": write_cifar100, "mnist": write_mnist,
        "aircraft": write_aircraft, "caltech101": write_caltech101, "dtd": write_dtd,
        "eurosat": write_eurosat, "flowers102": write_flowers102, "food101": write_food101,
        "oxford-pets": write_oxford_pets, "stanford-cars": write_stanford_cars, "sun397": write_sun397,
        "imagenet100": write_imagenet100,
    }
    return MappingProxyType({name: recorded(write) if record else write for name, write in plain.items()})
