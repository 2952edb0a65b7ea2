"""DomainNet (Peng et al., ICCV 2019, "Moment Matching for Multi-Source Domain Adaptation"): 345 classes drawn in six
domains, the domain increments of the ``uniil`` stream.

``python data_scripts/fetch_domainnet.py`` downloads the authors' archives of the **cleaned version** (duplicates
removed from clipart and painting) and their split lists from ``http://csr.bu.edu/ftp/visda/2019/multi-source/``
and unpacks them under the data root, in the layout the archives have::

    domainnet/<domain>/<class>/<file>.jpg               e.g. domainnet/clipart/aircraft_carrier/clipart_001_000018.jpg
    domainnet/<domain>_train.txt, <domain>_test.txt     one "<domain>/<class>/<file>.jpg <label>" line per image
    domainnet/checksums.json                            the sha256 of every file (written by the fetch script)

Labels are the lists' own (0-344, the class folders in alphabetical order); class names are the folder names with
underscores as spaces (``"The_Eiffel_Tower"`` -> ``"The Eiffel Tower"``). The split is the official one. Every
domain's lists must name the same label for the same class folder, and every label from 0 to the largest; a list
that does not is an error naming its file and line. Images are read when a batch needs them and checked against
``checksums.json`` then, as for the torchvision sources (:func:`~uniil_lib.data.torchvision_sources.files_image_set`).

Registry sources: ``domainnet-<domain>`` for each domain of :data:`DOMAINS`; their prompt templates name the domain's
kind of picture (our choice: "a clipart of a {}.", "a quickdraw doodle of a {}.", ...).
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from ..integrity import Checksums
from .base import DatasetNotFoundError, ImageSet
from .source_spec import SPLITS, SourceSpec
from .torchvision_sources import files_image_set, read_lines

FOLDER = "domainnet"
DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
FETCH_COMMAND = "python data_scripts/fetch_domainnet.py"
BASE_URL = "http://csr.bu.edu/ftp/visda/2019/multi-source"
# The cleaned version: clipart and painting come from groundtruth/ (duplicates removed), the others as published.
ARCHIVES = MappingProxyType({
    "clipart": "groundtruth/clipart.zip", "infograph": "infograph.zip", "painting": "groundtruth/painting.zip",
    "quickdraw": "quickdraw.zip", "real": "real.zip", "sketch": "sketch.zip",
})
TEMPLATES = MappingProxyType({
    "clipart": ("a clipart of a {}.", "a clip art image of a {}."),
    "infograph": ("an infographic of a {}.", "an infographic showing a {}."),
    "painting": ("a painting of a {}.", "an oil painting of a {}."),
    "quickdraw": ("a quickdraw doodle of a {}.", "a quick black-and-white doodle of a {}."),
    "real": ("a photo of a {}.", "a photo of the {}."),
    "sketch": ("a sketch of a {}.", "a pencil sketch of a {}."),
})


def archive_url(domain: str, base: str = BASE_URL) -> str:
    """Where the authors publish a domain's images (the cleaned version): a zip of ``<domain>/<class>/<file>.jpg``."""
    return f"{base.rstrip('/')}/{ARCHIVES[domain]}"


def split_list_url(domain: str, split: str, base: str = BASE_URL) -> str:
    """Where the authors publish a domain's split list."""
    return f"{base.rstrip('/')}/domainnet/txt/{domain}_{split}.txt"


def list_file(root: Path, domain: str, split: str) -> Path:
    return Path(root) / FOLDER / f"{domain}_{split}.txt"


def _fetch_hint(domain: str) -> str:
    return f"Fetch it with: {FETCH_COMMAND} --domains {domain} (or set UNIIL_DATA to the data root that holds it)"


def _record(folder: Path, domain: str) -> Checksums:
    fix = f"Fetch it again ({FETCH_COMMAND} --domains {domain}), or after changing files on purpose record them: " \
          f"{FETCH_COMMAND} --record"
    record = Checksums.read(folder, fix=fix)
    if record is None:
        raise DatasetNotFoundError(f"domainnet: {folder / 'checksums.json'} is missing (the sha256 of every file, "
                                   f"which loaders check); record it with: {FETCH_COMMAND} --record")
    return record


def parse_list(path: Path, domain: str, lines: list[str]) -> list[tuple[str, str, int]]:
    """``(relative path, class folder, label)`` of every line ``"<domain>/<class>/<file> <label>"`` of a list.

    Raises:
        ValueError: a line of another shape, another domain, or a label that is not a non-negative integer
            (names the file and the line number).
    """
    rows = []
    for number, line in enumerate(lines, start=1):
        relative, _, label = line.rpartition(" ")
        parts = relative.split("/")
        if len(parts) != 3 or parts[0] != domain or not label.isdigit():
            raise ValueError(f"{path}, line {number}: expected '{domain}/<class>/<file>.jpg <label>', got {line!r}")
        rows.append((relative, parts[1], int(label)))
    return rows


def class_names(rows: list[tuple[str, str, int]], source: Path) -> list[str]:
    """Class names in label order from the ``(path, class folder, label)`` rows of a domain's lists.

    Raises:
        ValueError: two folders with one label (or one folder with two), or a label from 0 to the largest missing.
    """
    folders: dict[int, str] = {}
    for relative, folder, label in rows:
        if folders.setdefault(label, folder) != folder:
            raise ValueError(f"{source}: label {label} is given to both {folders[label]!r} and {folder!r} ({relative})")
    if len(set(folders.values())) != len(folders):
        raise ValueError(f"{source}: a class folder has more than one label")
    missing = sorted(set(range(max(folders, default=-1) + 1)) - set(folders))
    if missing:
        raise ValueError(f"{source}: labels {missing[:5]} name no image; the lists are incomplete")
    return [" ".join(folders[label].replace("_", " ").split()) for label in range(len(folders))]


def load_domainnet(domain: str, split: str, root: Path) -> ImageSet:
    """One domain's official ``split`` (``"train"`` or ``"test"``), labels 0-344 (see the module docstring)."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown DomainNet domain {domain!r}; valid: {', '.join(DOMAINS)}")
    if split not in SPLITS:
        raise ValueError(f"domainnet-{domain}: split must be one of {SPLITS}, got {split!r}")
    folder = Path(root) / FOLDER
    for needed in (folder / domain, *(list_file(root, domain, s) for s in SPLITS)):
        if not needed.exists():
            raise DatasetNotFoundError(f"domainnet-{domain}: {needed} not found. {_fetch_hint(domain)}")
    record = _record(folder, domain)
    rows = {s: parse_list(list_file(root, domain, s), domain, read_lines(record.verify(list_file(root, domain, s))))
            for s in SPLITS}
    names = class_names(rows["train"] + rows["test"], list_file(root, domain, "train").parent)
    chosen = rows[split]
    return files_image_set([folder / relative for relative, _, _ in chosen], [label for _, _, label in chosen],
                           names, f"domainnet-{domain}/{split}", record)


def _loader(domain: str):
    def load(split: str, root: Path) -> ImageSet:
        return load_domainnet(domain, split, root)

    return load


def domainnet_sources() -> list[SourceSpec]:
    """The sources ``domainnet-<domain>``, for the registry."""
    return [
        SourceSpec(name=f"domainnet-{domain}", load=_loader(domain), offline=False,
                   fetch_command=f"{FETCH_COMMAND} --domains {domain}", templates=TEMPLATES[domain],
                   domain=f"domainnet-{domain}",
                   description=f"DomainNet {domain} (cleaned), 345 classes, the official split (needs internet once)",
                   extra=MappingProxyType({"folder": FOLDER, "domain": domain}))
        for domain in DOMAINS
    ]
