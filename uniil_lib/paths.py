"""Where uniil_lib keeps downloaded data and computed caches.

One root for data and one for caches, each overridable by an environment variable so that a course
server, a Colab session or a CI runner can point them somewhere else without touching code:

- ``UNIIL_DATA``  : datasets (default ``~/.cache/uniil_lib/data``)
- ``UNIIL_CACHE`` : feature caches and other derived files (default ``~/.cache/uniil_lib/cache``)
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "UNIIL_DATA"
CACHE_ENV_VAR = "UNIIL_CACHE"


def _default_base() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "uniil_lib"


def data_root() -> Path:
    """Return the dataset root: ``$UNIIL_DATA`` if set, else ``~/.cache/uniil_lib/data``."""
    return Path(os.environ.get(DATA_ENV_VAR) or _default_base() / "data").expanduser()


def cache_root() -> Path:
    """Return the cache root: ``$UNIIL_CACHE`` if set, else ``~/.cache/uniil_lib/cache``."""
    return Path(os.environ.get(CACHE_ENV_VAR) or _default_base() / "cache").expanduser()
