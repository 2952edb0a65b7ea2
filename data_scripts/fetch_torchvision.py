"""Download the torchvision datasets that uniil_lib loads (needs internet).

Usage::

    python data_scripts/fetch_torchvision.py --dataset dtd            # one dataset
    python data_scripts/fetch_torchvision.py --dataset all            # all twelve
    python data_scripts/fetch_torchvision.py --dataset mnist --root /data/uniil

Each dataset is downloaded by its torchvision class with ``download=True`` into the data root
(``--root``, default ``$UNIIL_DATA`` or ``~/.cache/uniil_lib/data``), which leaves exactly the layout that
``uniil_lib.data.load_dataset(name, split)`` reads (see ``uniil_lib/data/torchvision_sources.py``).
A dataset whose files are already there is not downloaded again. Stanford Cars can no longer be
downloaded automatically (its host is gone): the script prints where to put a copy you obtain yourself.

After a download, or when it first finds files placed by hand, the script records the sha256 of every file
of the dataset in ``<folder>/checksums.json``; the loaders check each file they read against it. After
changing files on purpose, ``--record`` records them as they are now.
Some downloads are several GB (Food-101, SUN397); the archives stay next to the unpacked data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import uniil_lib  # noqa: F401  (installed, e.g. with pip install -e .)
except ImportError:  # run from a checkout: the package sits next to data_scripts/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniil_lib.data import DatasetNotFoundError, SourceSpec
from uniil_lib.data.torchvision_sources import ChecksumsMissingError, torchvision_sources
from uniil_lib.fileio import CorruptFileError
from uniil_lib.integrity import record_folder
from uniil_lib.paths import data_root

MANUAL_HELP = """\
Stanford Cars cannot be downloaded automatically: its original host (ai.stanford.edu/~jkrause/cars) is gone
and torchvision.datasets.StanfordCars(download=True) refuses. Obtain a copy of the original files (mirrors
exist, e.g. on Kaggle) and arrange them as torchvision expects:
  {base}/devkit/cars_meta.mat
  {base}/devkit/cars_train_annos.mat
  {base}/cars_train/00001.jpg ... 08144.jpg
  {base}/cars_test_annos_withlabels.mat   (the test annotations with class labels)
  {base}/cars_test/00001.jpg ... 08041.jpg
Then run this command again (with the same --root) to check: {command}"""

IMAGENET100_HELP = """\
ImageNet-100 cannot be downloaded automatically: ImageNet (ILSVRC-2012) needs an account at image-net.org.
With the ILSVRC-2012 train and val images (val sorted into <wnid> folders with the official labels), make:
  {base}/classnames.txt            one '<wnid> <class name>' line per class, in label order
                                   (e.g. 'n01440764 tench'; lines of LOC_synset_mapping.txt work as they are)
  {base}/train/<wnid>/*.JPEG       the class's training images (symbolic links are fine)
  {base}/val/<wnid>/*.JPEG         its 50 validation images
for the 100 classes of the subset you compare with (the usual one is the seed-1993 ImageNet-Subset of UCIR /
PODNet / RAPF). Then run this command again (with the same --root) to check: {command}"""


def manual_instructions(spec: SourceSpec, root: Path) -> str:
    """What to do for a dataset that torchvision cannot download (Stanford Cars and ImageNet-100).

    Args:
        spec: the source.
        root: the data root.
    """
    base = root / spec.extra["folder"]
    if spec.name == "stanford-cars":
        return MANUAL_HELP.format(base=base, command=spec.fetch_command)
    if spec.name == "imagenet100":
        return IMAGENET100_HELP.format(base=base, command=spec.fetch_command)
    return (
        f"{spec.name} cannot be downloaded automatically. Place its files in {base} in the layout described in "
        f"uniil_lib/data/torchvision_sources.py, then run '{spec.fetch_command}' again to check."
    )


def parse_args(argv: list[str] | None, valid: list[str]) -> argparse.Namespace:
    """Parse the command line; an unknown ``--dataset`` exits with the list of valid names.

    Args:
        argv: arguments without the program name (None: ``sys.argv[1:]``).
        valid: the dataset names this script can fetch.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help=f"one of: all, {', '.join(valid)}")
    parser.add_argument("--root", type=Path, default=None, help="data root (default: uniil_lib.paths.data_root())")
    parser.add_argument("--record", action="store_true",
                        help="record the sha256 of the files as they are now (after changing them on purpose)")
    args = parser.parse_args(argv)
    if args.dataset != "all" and args.dataset not in valid:
        parser.error(f"unknown dataset {args.dataset!r}; valid names: all, {', '.join(valid)}")
    return args


def is_present(spec: SourceSpec, root: Path) -> bool:
    """True if both splits of ``spec`` load from ``root``; files without a ``checksums.json`` get one first."""
    try:
        for split in ("train", "test"):
            spec.load(split, root)
    except ChecksumsMissingError:
        record(spec, root)
        return is_present(spec, root)
    except DatasetNotFoundError:
        return False
    except CorruptFileError as error:  # there, but damaged or changed: say which file and how to fix it
        print(f"{spec.name}: {error}")
        return False
    return True


def record(spec: SourceSpec, root: Path) -> None:
    """Record the sha256 of every file of ``spec``'s folder in its ``checksums.json`` (the loaders check them)."""
    folder = root / spec.extra["folder"]
    print(f"{spec.name}: recording the sha256 of the files in {folder} ...")
    record_folder(folder, extra={"dataset": spec.name})


def download(spec: SourceSpec, root: Path) -> None:
    """Let the dataset's torchvision class download and unpack it under ``root``.

    Args:
        spec: the source; ``spec.extra["torchvision_class"]`` names the torchvision dataset class.
        root: the data root.
    """
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, spec.extra["torchvision_class"])
    # The default split of every class downloads the whole archive (all splits).
    dataset_class(root=str(root), download=True)


def fetch(spec: SourceSpec, root: Path, *, rerecord: bool = False) -> bool:
    """Make dataset ``spec`` loadable from ``root``; return True on success, printing what happened.

    Args:
        spec: the source to fetch.
        root: the data root.
        rerecord: first record the checksums of the files as they are (``--record``).
    """
    if rerecord and (root / spec.extra["folder"]).is_dir():
        record(spec, root)
    if is_present(spec, root):
        print(f"{spec.name}: already in {root / spec.extra['folder']}")
        return True
    if not spec.extra["auto_download"]:
        print(manual_instructions(spec, root))
        return False
    print(f"{spec.name}: downloading with torchvision.datasets.{spec.extra['torchvision_class']} into {root} ...")
    try:
        download(spec, root)
    except Exception as error:  # network errors, moved hosts, bad checksums: report and go on with the rest
        print(
            f"{spec.name}: download failed ({type(error).__name__}: {error}). Check your connection and run "
            f"'{spec.fetch_command}' again; if the host is down, place the files by hand in the layout described "
            "in uniil_lib/data/torchvision_sources.py."
        )
        return False
    if not is_present(spec, root):
        print(f"{spec.name}: torchvision finished but the files are not where uniil_lib expects them under {root}")
        return False
    print(f"{spec.name}: ready in {root / spec.extra['folder']}")
    return True


def main(argv: list[str] | None = None) -> int:
    """Fetch the datasets named on the command line; the exit code is 0 only if all of them are ready."""
    specs = {spec.name: spec for spec in torchvision_sources()}
    args = parse_args(argv, sorted(specs))
    root = (args.root or data_root()).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    names = sorted(specs) if args.dataset == "all" else [args.dataset]
    failed = [name for name in names if not fetch(specs[name], root, rerecord=args.record)]
    if failed:
        print(f"not ready: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
