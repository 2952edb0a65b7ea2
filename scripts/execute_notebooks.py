"""Execute the solved notebooks in place, store their outputs, and record what they ran.

    python scripts/execute_notebooks.py                    # every notebooks/NN_*.ipynb, fast profile
    python scripts/execute_notebooks.py notebooks/03_adapters.ipynb
    python scripts/execute_notebooks.py --check            # execute nothing; exit 1 if a notebook is stale

The course is read on GitHub, nbviewer and the course site without running anything, so the solved notebooks
are stored **with** their outputs from the fast profile (the student copies never are:
``scripts/make_student_copies.py`` clears them). A stored output is only worth showing if it came from the
code that is in the repository now, so each executed notebook records, in its metadata under
``uniil.executed``, the digests of what it ran:

- ``library_sha256``: every ``uniil_lib/**/*.py`` file and every file of ``uniil_lib/weights/`` (the shipped
  model and the digests of the data and attribute pool it checks on load), path and content;
- ``source_sha256``: the notebook's own code cells, in order (markdown cells, outputs and metadata are left
  out: editing prose does not make outputs stale).

``--check`` (and ``tests/test_executed_notebooks.py``) compares both with the repository: a notebook whose
library or code changed since it was executed is *stale*, one without the record *never executed*. Beside
the digests the record keeps the profile, the versions of torch and open_clip, and the seconds the run took
(for reading, not compared).

A notebook that raises is not written: its file keeps the outputs of its last good run, and the error is
printed with the cell that raised. Each notebook runs in a fresh kernel with ``UNIIL_PROFILE=fast`` and
``UNIIL_WIDGETS=0`` (the explorers draw static figures, which a page can show).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import nbformat

from uniil_lib.notebook_setup import package_version  # the versions notebooks print: one helper

ROOT = Path(__file__).resolve().parents[1]
NUMBERED = "[0-9][0-9]_*.ipynb"
RECORD_KEY = "uniil"
LIBRARY_PATTERNS = ("uniil_lib/**/*.py", "uniil_lib/weights/*")


# ----------------------------------------------------------------------------------------------------
# digests
# ----------------------------------------------------------------------------------------------------
def library_files(root: Path) -> list[Path]:
    """The files whose content decides what a notebook computes (see the module docstring), sorted."""
    found = {path for pattern in LIBRARY_PATTERNS for path in root.glob(pattern)
             if path.is_file() and "__pycache__" not in path.parts}
    return sorted(found, key=lambda path: path.relative_to(root).as_posix())


def library_digest(root: Path = ROOT) -> str:
    """sha256 over the relative path and the content of every :func:`library_files` file."""
    digest = hashlib.sha256()
    files = library_files(root)
    if not files:
        raise FileNotFoundError(f"no uniil_lib sources under {root}: pass the repository root")
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def source_digest(nb: nbformat.NotebookNode) -> str:
    """sha256 over the sources of the notebook's code cells, in order."""
    digest = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
            digest.update(source.encode() + b"\0\0")
    return digest.hexdigest()


def current_record(nb: nbformat.NotebookNode, root: Path = ROOT, *, library: str | None = None) -> dict:
    """The two digests a run of ``nb`` in ``root`` would record now."""
    return {"library_sha256": library or library_digest(root), "source_sha256": source_digest(nb)}


def staleness(nb: nbformat.NotebookNode, root: Path = ROOT, *, library: str | None = None) -> str | None:
    """Why the stored outputs of ``nb`` do not belong to the repository's code (None if they do)."""
    recorded = nb.metadata.get(RECORD_KEY, {}).get("executed")
    if not recorded:
        return "never executed (no uniil.executed record in its metadata)"
    now = current_record(nb, root, library=library)
    changed = [name for name, key in (("the library", "library_sha256"), ("its code cells", "source_sha256"))
               if recorded.get(key) != now[key]]
    if changed:
        return f"stale: {' and '.join(changed)} changed since it was executed"
    errors = [index for index, cell in enumerate(nb.cells) if cell.cell_type == "code"
              and any(output.get("output_type") == "error" for output in cell.get("outputs", []))]
    if errors:
        return f"cells {errors} hold error outputs"
    return None


# ----------------------------------------------------------------------------------------------------
# execution
# ----------------------------------------------------------------------------------------------------
def execute(path: Path, *, root: Path = ROOT, timeout: int = 900, profile: str = "fast") -> float:
    """Run ``path`` in a fresh kernel and write it back with outputs and the record; returns seconds.

    Raises:
        nbclient.exceptions.CellExecutionError: a cell raised (the file is left as it was).
    """
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    env = {**os.environ, "UNIIL_PROFILE": profile, "UNIIL_WIDGETS": "0", "PYTHONPATH": str(root)}
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False, record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    started = time.perf_counter()
    client.execute(env=env)
    seconds = time.perf_counter() - started
    nb.metadata[RECORD_KEY] = {"executed": {
        **current_record(nb, root), "profile": profile, "seconds": round(seconds, 1),
        "torch": package_version("torch"), "open_clip_torch": package_version("open_clip_torch"),
    }}
    for cell in nb.cells:  # no per-run noise in the stored file
        cell.metadata.pop("execution", None)
    text = nbformat.writes(nb).rstrip("\n") + "\n"
    path.write_text(text, encoding="utf-8")
    return seconds


def stale_notebooks(paths: list[Path], root: Path = ROOT) -> list[str]:
    """``"name: reason"`` for every notebook of ``paths`` whose stored outputs are not current."""
    library = library_digest(root)
    problems = []
    for path in paths:
        reason = staleness(nbformat.read(path, as_version=4), root, library=library)
        if reason:
            problems.append(f"{path.name}: {reason}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/NN_*.ipynb")
    parser.add_argument("--check", action="store_true", help="execute nothing; exit 1 if a notebook is stale")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (its uniil_lib is digested)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds a cell may run")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or sorted((args.root / "notebooks").glob(NUMBERED))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"error: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.check:
        problems = stale_notebooks(paths, args.root)
        for line in problems:
            print(line)
        if problems:
            print("re-execute them: python scripts/execute_notebooks.py", file=sys.stderr)
            return 1
        print(f"{len(paths)} notebooks hold the outputs of the current code")
        return 0
    from nbclient.exceptions import CellExecutionError

    failed = []
    for path in paths:
        print(f"executing {path.name} ...", flush=True)
        try:
            print(f"  {execute(path, root=args.root, timeout=args.timeout):.0f} s, written", flush=True)
        except CellExecutionError as error:
            failed.append(path.name)
            print(f"  FAILED, not written:\n{str(error)[-3000:]}", flush=True)
    if failed:
        print(f"error: {len(failed)} notebook(s) raised: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
