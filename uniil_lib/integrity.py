"""Knowing that a file is the one that was recorded: sha256 digests, remembered, and checked on load.

Every dataset file and every file shipped inside uniil_lib is checked against the sha256 recorded for it
when it is loaded, so a damaged or edited file is an error that names it, not a silently different result.
Where the digests are recorded:

- ``checksums.json`` in a dataset folder, written by the ``data_scripts`` that built it:
  ``{"format_version": 1, ..., "outputs": {relative path: "sha256:<hex>"}}`` (:class:`Checksums`);
- constants in the loaders, for data that ships inside system or Python packages
  (:mod:`uniil_lib.data.offline`);
- ``uniil_lib/shipped_files.json`` for the package's own weights and pools (:mod:`uniil_lib.shipped`).

Hashing is remembered in a small index, ``<cache root>/file-digests.json``, keyed by the file's path,
size, modification time (ns) and inode, so a second load of an unchanged file costs one ``stat``. Like
git's index, an entry is only remembered for a file older than :data:`RACY_SECONDS`: a file rewritten
within its file system's timestamp granularity could keep size and time and pass for unchanged.

This module imports only :mod:`uniil_lib.paths` and :mod:`uniil_lib.fileio`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .fileio import CorruptFileError, atomic_write_text, read_json
from .paths import cache_root

DIGEST_INDEX = "file-digests.json"
CHECKSUMS_FILE = "checksums.json"
RACY_SECONDS = 2.0
_CHUNK = 1 << 20


class IntegrityError(CorruptFileError):
    """A file's sha256 differs from the one recorded for it (or none is recorded); names the file and the fix."""


def sha256_text(data: bytes) -> str:
    """``"sha256:<hex>"`` of some bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def content_digest(*arrays: np.ndarray) -> str:
    """A short sha1 (12 hex digits) of array contents: cache keys of data built in code."""
    digest = hashlib.sha1()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:12]


def short_digest(*digests: str) -> str:
    """12 hex digits naming a combination of digests (or any strings): the content part of a cache key."""
    return hashlib.sha256("\n".join(digests).encode("utf-8")).hexdigest()[:12]


def hash_file(path: Path, gunzip: bool = False) -> str:
    """``"sha256:<hex>"`` of a file, computed now (not remembered); ``gunzip``: of its decompressed content."""
    digest = hashlib.sha256()
    try:
        with (gzip.open(path, "rb") if gunzip else open(path, "rb")) as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise CorruptFileError(f"{path} is not a complete gzip file ({error}); it is damaged or truncated") from error
    return "sha256:" + digest.hexdigest()


def _index_file() -> Path:
    return cache_root() / DIGEST_INDEX


def _read_index() -> dict:
    path = _index_file()
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        return index if isinstance(index, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        warnings.warn(f"ignoring the unreadable digest index {path}; digests are computed again", stacklevel=3)
        return {}


def _remember(key: str, entry: list) -> None:
    index = _read_index()
    index[key] = entry
    try:
        atomic_write_text(_index_file(), json.dumps(index))
    except OSError:
        pass  # a cache root that cannot be written only costs hashing again next time


def file_sha256(path: str | Path, *, gunzip: bool = False) -> str:
    """``"sha256:<hex>"`` of a file (of its decompressed content with ``gunzip``), remembered across runs.

    Raises:
        FileNotFoundError: no such file.
        CorruptFileError: ``gunzip`` and the file is not a complete gzip file.
    """
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|gunzip" if gunzip else str(path)
    signature = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
    entry = _read_index().get(key)
    if isinstance(entry, list) and entry[:3] == signature:
        return entry[3]
    digest = hash_file(path, gunzip)
    if time.time() - stat.st_mtime > RACY_SECONDS:
        _remember(key, [*signature, digest])
    return digest


def verify_file(path: str | Path, expected: str | Iterable[str], *, record: str, fix: str,
                gunzip: bool = False, error: type[Exception] = IntegrityError) -> str:
    """Check a file against its recorded digest(s); return its digest.

    Args:
        path: the file.
        expected: the recorded ``"sha256:<hex>"`` (or several accepted ones).
        record: where the digest is recorded, for the message.
        fix: the command or step that rebuilds the file, for the message.
        gunzip: compare the digest of the decompressed content.
        error: the exception class to raise; a loader passes its own (e.g. ``ClipLoadError``) so that its callers
            catch one type for every way loading can fail.

    Raises:
        IntegrityError: (or ``error``) the digest differs (the message names the file, the record and ``fix``).
    """
    accepted = {expected} if isinstance(expected, str) else set(expected)
    actual = file_sha256(path, gunzip=gunzip)
    if actual not in accepted:
        shown = ", ".join(sorted(d[7:19] for d in accepted))
        raise error(f"{path}: sha256 {actual[7:19]}... differs from {shown}... recorded in {record}: "
                             f"the file was changed or damaged. {fix}")
    return actual


@dataclass(frozen=True)
class Checksums:
    """The ``checksums.json`` of a dataset folder: the recorded digest of each file in it.

    Attributes:
        folder: the dataset folder.
        outputs: relative POSIX path -> ``"sha256:<hex>"``.
        fix: the command that rebuilds the folder (ends every error message).
        digest: sha256 of ``checksums.json`` itself: names the recorded content (used in cache keys).
    """

    folder: Path
    outputs: Mapping[str, str]
    fix: str
    digest: str

    @classmethod
    def read(cls, folder: str | Path, *, fix: str) -> "Checksums | None":
        """The folder's record, or None if it has no ``checksums.json``.

        Raises:
            CorruptFileError: ``checksums.json`` is not JSON or has no ``outputs`` mapping.
        """
        folder = Path(folder)
        path = folder / CHECKSUMS_FILE
        if not path.is_file():
            return None
        record = read_json(path, fix=fix)
        outputs = record.get("outputs") if isinstance(record, dict) else None
        if not isinstance(outputs, dict):
            raise CorruptFileError(f"{path} has no 'outputs' mapping of file digests; {fix}")
        return cls(folder, dict(outputs), fix, sha256_text(path.read_bytes()))

    def relative(self, path: str | Path) -> str:
        return Path(path).relative_to(self.folder).as_posix()

    def expected(self, path: str | Path) -> str:
        """The recorded digest of ``path`` (inside :attr:`folder`).

        Raises:
            IntegrityError: ``path`` is not in the record.
        """
        name = self.relative(path)
        if name not in self.outputs:
            raise IntegrityError(f"{path} is not listed in {self.folder / CHECKSUMS_FILE}, so it cannot be "
                                 f"checked; {self.fix}")
        return self.outputs[name]

    def verify(self, path: str | Path) -> Path:
        """Check ``path`` against the record; returns it (so a read can wrap the call)."""
        verify_file(path, self.expected(path), record=str(self.folder / CHECKSUMS_FILE), fix=self.fix)
        return Path(path)


def write_checksums(folder: str | Path, names: Iterable[str], *, extra: Mapping | None = None) -> Path:
    """Record the sha256 of ``names`` (paths relative to ``folder``) in ``folder/checksums.json``.

    Args:
        folder: the dataset folder.
        names: the files to record.
        extra: further top-level fields (what was built, from which packages).
    """
    folder = Path(folder)
    outputs = {name: hash_file(folder / name, False) for name in names}
    record = {"format_version": 1, **(extra or {}), "outputs": outputs}
    return atomic_write_text(folder / CHECKSUMS_FILE, json.dumps(record, indent=1) + "\n")


def update_checksums(folder: str | Path, names: Iterable[str]) -> None:
    """Re-record ``names`` in an existing ``checksums.json`` (a writer keeps the record current); no
    record, nothing to do (a build in progress writes its record last)."""
    path = Path(folder) / CHECKSUMS_FILE
    if not path.is_file():
        return
    record = read_json(path, fix="delete it and rebuild the folder")
    record.setdefault("outputs", {}).update({name: hash_file(Path(folder) / name, False) for name in names})
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


def record_folder(folder: str | Path, *, extra: Mapping | None = None) -> Path:
    """Record every file below ``folder`` (except the record itself and hidden files) in its
    ``checksums.json``: what a fetch script does after a download."""
    folder = Path(folder)
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and p.name != CHECKSUMS_FILE and not p.name.startswith("."))
    return write_checksums(folder, names, extra=extra)
