"""Writing files safely, and errors about files that name the file and say what to do.

Two rules every writer in uniil_lib follows (so that several processes may share a cache or a checkpoint
folder, as students on one course server do):

- :func:`atomic_write`: write into a temporary file with a *unique* name in the target's own folder, then
  ``os.replace`` it onto the target. A reader sees the old file or the new one, never half of one, and two
  writers never collide on a fixed temporary name (each ``mkstemp`` name is new).
- Output paths are checked before any work (:func:`check_output_folder`, :func:`check_output_file`): a run
  that can only fail at its end must fail at its start.

This module imports nothing from uniil_lib, so any module may use it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


class CorruptFileError(ValueError):
    """A file exists but cannot be decoded or fails a check; the message names it and says how to rebuild it."""


class PathError(ValueError):
    """A path the user gave (an output, a cache or data root) that cannot be used; raised before any work."""


def atomic_write(path: str | Path, write: Callable[[Path], Any], *, mode: int = 0o644) -> Path:
    """Write ``path`` through a uniquely named temporary file in its folder, then rename it into place.

    Args:
        path: the target file; its folder is created if needed.
        write: called with the temporary path; must write the whole content there.
        mode: permission bits of the result (``mkstemp`` makes owner-only files; caches are meant to be shared).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(tmp_name))
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 text."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json(path: str | Path, *, fix: str) -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file is one error that names it.

    Args:
        path: the file.
        fix: what the user should do about a bad file (ends the message), e.g. ``"rebuild it with: ..."``.

    Raises:
        FileNotFoundError: the file does not exist (its ``filename`` is set).
        CorruptFileError: the file is not UTF-8 JSON.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptFileError(f"{path} is not valid JSON ({_short(error)}); {fix}") from error


def read_safetensors(path: str | Path, *, fix: str) -> dict:
    """Load a safetensors file; a damaged one is a :class:`CorruptFileError` that names it and ``fix``.

    Raises:
        FileNotFoundError: the file does not exist.
        CorruptFileError: its header or data cannot be read.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(2, "No such file", str(path))
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CorruptFileError(f"{path} is not a readable safetensors file ({_short(error)}); {fix}") from error


def non_finite_entries(tensors: dict) -> list[str]:
    """Names of the floating-point tensors in ``tensors`` that hold a NaN or an infinity."""
    import torch

    return [name for name, value in tensors.items()
            if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())]


def check_output_folder(path: str | Path, *, what: str) -> Path:
    """Create ``path`` if needed and make sure a file can be written in it; before any work is done.

    Args:
        path: the folder.
        what: how the user named it, for the message (e.g. ``"--plots"``).

    Raises:
        PathError: ``path`` is a file, cannot be created, or cannot be written into.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise PathError(f"{what} {path} is a file, not a folder; pass a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise PathError(f"{what} {path} cannot be written ({error.strerror or error}); choose another "
                              "folder") from error
    return path


def check_output_file(path: str | Path, *, what: str) -> Path:
    """Make sure ``path`` can be written as a file (its folder is created); before any work is done.

    Raises:
        PathError: ``path`` is a folder, or its folder cannot be created or written into.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise PathError(f"{what} {path} is a folder; pass a file name, e.g. {path / 'results.json'}")
    check_output_folder(path.parent, what=f"the folder of {what}")
    return path


def check_input_folder(path: str | Path, *, what: str) -> Path:
    """A folder that is read from: if it exists it must be a readable folder (absent is allowed).

    Raises:
        PathError: ``path`` is a file or cannot be listed.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise PathError(f"{what} {path} is a file, not a folder")
    if path.is_dir() and not os.access(path, os.R_OK | os.X_OK):
        raise PathError(f"{what} {path} cannot be read (permission denied)")
    return path


def _short(error: Exception) -> str:
    """An exception as a short one-line text."""
    return " ".join(str(error).split())[:200] or type(error).__name__
