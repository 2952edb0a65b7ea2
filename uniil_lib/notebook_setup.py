"""What the first code cell of every notebook does after the one switch: :func:`start_notebook`.

The first cell of a notebook keeps only what a learner should read: on Colab, getting the course (clone and
``pip install -e``, which must happen before ``uniil_lib`` can be imported), and the switch
``PROFILE = os.environ.get("UNIIL_PROFILE", "fast")``. Everything else is here:

1. the profile name is checked (an unknown one is an error that lists the profiles there are), and so is its
   device: a GPU profile on a runtime without a GPU (on Colab, a runtime whose type was never set to a GPU) stops
   here with what to change, not in the first training cell with torch's driver message;
2. on Colab only, the offline data is fetched where it is missing (``data_scripts/fetch_offline.py`` and
   ``data_scripts/fetch_emoji.py`` of the clone; both only check what is already there);
3. torch's thread count is set by the one rule of :mod:`uniil_lib.threads`;
4. the versions of torch, open_clip and uniil_lib are printed, so that a stored output can be traced to the
   code that produced it.

The notebooks' progress policy lives here too: :data:`PROGRESS` is off, because the solved notebooks are
stored with their outputs and shown on the course site, where a progress bar is noise. Training cells print
their time instead; pass ``progress=True`` to a ``train_config`` or ``run_benchmark`` call to watch one.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable

from .profiles import get_profile, profile_names
from .threads import choose_threads
from .train_config import check_device

PROGRESS = False
VERSIONS = ("torch", "open_clip_torch", "uniil_lib")
DATA_FETCHES = (("fetch_offline.py", "--dataset", "all"), ("fetch_emoji.py",))


def on_colab() -> bool:
    """Whether this kernel runs on Google Colab (its ``google.colab`` module is loaded)."""
    return "google.colab" in sys.modules


def fetch_data(run: Callable = subprocess.run) -> list[list[str]]:
    """Run the offline data fetches of this checkout (each fetches only what is missing); returns the commands."""
    scripts = Path(__file__).resolve().parents[1] / "data_scripts"
    if not scripts.is_dir():
        raise FileNotFoundError(f"no data_scripts folder next to {Path(__file__).parent}: install uniil_lib from a "
                                "clone of its repository (pip install -e .) to fetch the data")
    commands = [[sys.executable, str(scripts / name), *args] for name, *args in DATA_FETCHES]
    for command in commands:
        run(command, check=True)
    return commands


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def start_notebook(profile: str, *, run: Callable = subprocess.run) -> None:
    """Check ``profile``, fetch missing data on Colab, set torch's threads, print versions (module docstring).

    Args:
        profile: the value of the notebook's ``PROFILE`` switch.
        run: how commands are run (``subprocess.run``; the tests pass a recorder).

    Raises:
        KeyError: ``profile`` is not a profile; the message lists the profiles there are.
        RuntimeError: the profile trains on a GPU this machine lacks; the message says what to change.
    """
    device = get_profile(profile).train.device  # an unknown name is a KeyError naming the valid ones
    try:
        check_device(device)
    except ValueError as error:
        where = ("on Colab, Runtime > Change runtime type > a GPU (e.g. T4), then run this cell again"
                 if on_colab() else "run it where torch sees a GPU")
        raise RuntimeError(f"PROFILE = {profile!r} trains on {device!r}, which this machine lacks ({error}). "
                           f"Either {where}, or set PROFILE = \"fast\" (a CPU, minutes)") from None
    if on_colab():
        fetch_data(run)
    threads = choose_threads(profile)
    print(" | ".join(f"{name} {package_version(name)}" for name in VERSIONS))
    print(f"profile: {profile} (profiles: {', '.join(profile_names())}) | torch threads: {threads} | "
          f"progress bars: {'on' if PROGRESS else 'off'}")
