"""The data files that ship inside uniil_lib (weights, pools) and their recorded sha256.

``uniil_lib/shipped_files.json`` records the digest of every ``.safetensors`` and ``.json`` file under
``uniil_lib/weights/`` and ``uniil_lib/pools/``; loaders check a shipped file against it
(:func:`verify_shipped`), so a damaged download or an edited file is an error, not a different model.

After replacing a shipped file on purpose (new mini-CLIP weights, a regenerated pool), record the new
digests with::

    python -m uniil_lib.shipped

A test checks that the record matches the files in the repository.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .fileio import atomic_write_text, read_json
from .integrity import IntegrityError, hash_file, verify_file

PACKAGE_DIR = Path(__file__).resolve().parent
MANIFEST = PACKAGE_DIR / "shipped_files.json"
SHIPPED_FOLDERS = ("weights", "pools")
SHIPPED_SUFFIXES = (".safetensors", ".json")
UPDATE_COMMAND = "python -m uniil_lib.shipped"


def shipped_files() -> list[str]:
    """Paths (relative to the package, POSIX) of every shipped data file, sorted."""
    return sorted(p.relative_to(PACKAGE_DIR).as_posix() for folder in SHIPPED_FOLDERS
                  for p in (PACKAGE_DIR / folder).rglob("*") if p.is_file() and p.suffix in SHIPPED_SUFFIXES)


def compute_manifest() -> dict[str, str]:
    """``{relative path: "sha256:<hex>"}`` of the shipped files as they are on disk now."""
    return {name: hash_file(PACKAGE_DIR / name, False) for name in shipped_files()}


def write_manifest() -> Path:
    """Rewrite ``shipped_files.json`` from the files on disk; returns its path."""
    record = {"note": f"sha256 of the data files shipped in uniil_lib; regenerate with: {UPDATE_COMMAND}",
              "files": compute_manifest()}
    return atomic_write_text(MANIFEST, json.dumps(record, indent=1) + "\n")


def recorded_digests() -> dict[str, str]:
    """The digests recorded in ``shipped_files.json``."""
    return dict(read_json(MANIFEST, fix=f"regenerate it with: {UPDATE_COMMAND}")["files"])


def verify_shipped(path: str | Path) -> Path:
    """Check a file against ``shipped_files.json`` if it is a shipped file; other paths pass unchecked.

    Raises:
        IntegrityError: a shipped file whose digest differs from the record (or that the record lacks).
    """
    path = Path(path).resolve()
    try:
        name = path.relative_to(PACKAGE_DIR).as_posix()
    except ValueError:
        return path  # the user's own file: nothing recorded for it
    fix = (f"Reinstall uniil_lib (or git checkout the file); if you replaced it on purpose, record the new "
           f"digests with: {UPDATE_COMMAND}")
    recorded = recorded_digests()
    if name not in recorded:
        raise IntegrityError(f"{path} is not recorded in {MANIFEST}. {fix}")
    verify_file(path, recorded[name], record=str(MANIFEST), fix=fix)
    return path


def main() -> int:
    path = write_manifest()
    print(f"recorded {len(recorded_digests())} shipped files in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
