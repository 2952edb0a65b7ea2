"""Import the repository's scripts (``benchmarks/``, ``scripts/``, ``data_scripts/``: files, not modules of the
package) in tests. A module of its own, not ``conftest``: ``notebooks/conftest.py`` is also imported as
``conftest`` when pytest collects both folders."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_script(path: str | Path):
    """Import a script of the repository (``"benchmarks/awpf_verdict.py"``, relative to the repository or absolute)
    as a module named after its file.

    It is registered in ``sys.modules`` while it runs, since dataclasses look their module up there.
    """
    path = REPO / path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
