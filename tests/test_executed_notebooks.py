"""The solved notebooks are stored with the outputs of the code in the repository (issue 18, item 1).

``scripts/execute_notebooks.py`` executes them and records the digests of the library and of each notebook's
code cells; here every stored notebook must carry the record of the current code, with no error output, and
the digests must move exactly when what a notebook computes can move.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from repo_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
PATHS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SCRIPT = ROOT / "scripts" / "execute_notebooks.py"
RERUN = "python scripts/execute_notebooks.py"


def _load_script():
    return load_script(SCRIPT)


run = _load_script()


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_stored_outputs_come_from_the_current_code(path):
    nb = nbformat.read(path, as_version=4)
    reason = run.staleness(nb)
    assert reason is None, f"{path.name}: {reason}; re-execute it: {RERUN} notebooks/{path.name}"
    shown = [c for c in nb.cells if c.cell_type == "code" and c.outputs]
    assert shown, f"{path.name}: executed, yet no code cell holds an output"


# ----------------------------------------------------------------------------------------------------
# the digests on a small repository of our own
# ----------------------------------------------------------------------------------------------------
def small_repository(tmp_path: Path) -> Path:
    """A root with a two-file ``uniil_lib``, a weights file and one notebook (code, markdown, figure)."""
    root = tmp_path / "repo"
    (root / "uniil_lib" / "weights").mkdir(parents=True)
    (root / "uniil_lib" / "__init__.py").write_text("ANSWER = 42\n")
    (root / "uniil_lib" / "sub").mkdir()
    (root / "uniil_lib" / "sub" / "part.py").write_text("def twice(x):\n    return 2 * x\n")
    (root / "uniil_lib" / "weights" / "model.bin").write_bytes(b"\x00\x01weights")
    (root / "notebooks").mkdir()
    cells = [nbformat.v4.new_markdown_cell("# 00 · A test"),
             nbformat.v4.new_code_cell("from uniil_lib import ANSWER\nprint('answer', ANSWER)"),
             nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()")]
    nb = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                        "language": "python"}})
    nbformat.write(nb, root / "notebooks" / "00_test.ipynb")
    return root


def test_library_digest_covers_sources_and_weights_only(tmp_path):
    root = small_repository(tmp_path)
    before = run.library_digest(root)
    assert [p.relative_to(root).as_posix() for p in run.library_files(root)] == [
        "uniil_lib/__init__.py", "uniil_lib/sub/part.py", "uniil_lib/weights/model.bin"]
    (root / "uniil_lib" / "sub" / "part.py").write_text("def twice(x):\n    return x + x\n")
    after_source = run.library_digest(root)
    (root / "uniil_lib" / "weights" / "model.bin").write_bytes(b"\x00\x02weights")
    after_weights = run.library_digest(root)
    assert len({before, after_source, after_weights}) == 3, "a source or a weights file changed: a new digest"
    (root / "uniil_lib" / "sub" / "__pycache__").mkdir()
    (root / "uniil_lib" / "sub" / "__pycache__" / "part.cpython-311.pyc").write_bytes(b"compiled")
    (root / "uniil_lib" / "notes.txt").write_text("not code")
    assert run.library_digest(root) == after_weights, "caches and other files do not count"
    shutil.move(root / "uniil_lib" / "sub" / "part.py", root / "uniil_lib" / "sub" / "moved.py")
    assert run.library_digest(root) != after_weights, "a renamed file is a different library"


def test_source_digest_follows_code_cells_only():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("text"), nbformat.v4.new_code_cell("x = 1")])
    before = run.source_digest(nb)
    nb.cells[0].source = "other text"
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    nb.cells[1].metadata["nbgrader"] = {"grade": True}
    assert run.source_digest(nb) == before, "prose, outputs and metadata do not decide the outputs"
    nb.cells[1].source = "x = 2"
    assert run.source_digest(nb) != before
    nb.cells[1].source = "x = 1"
    nb.cells.insert(1, nbformat.v4.new_code_cell(""))
    assert run.source_digest(nb) != before, "an added (even empty) code cell is another program"


def test_execute_then_check_then_stale(tmp_path):
    root = small_repository(tmp_path)
    path = root / "notebooks" / "00_test.ipynb"
    check = [sys.executable, str(SCRIPT), "--check", "--root", str(root)]
    never = subprocess.run(check, capture_output=True, text=True)
    assert never.returncode == 1 and "never executed" in never.stdout, never.stdout + never.stderr

    seconds = run.execute(path, root=root, timeout=120)
    nb = nbformat.read(path, as_version=4)
    record = nb.metadata["uniil"]["executed"]
    assert record["library_sha256"] == run.library_digest(root) and record["source_sha256"] == run.source_digest(nb)
    assert record["profile"] == "fast" and record["seconds"] == pytest.approx(seconds, abs=0.1)
    assert "answer 42" in nb.cells[1].outputs[0]["text"], "outputs are stored"
    assert any("image/png" in o.get("data", {}) for o in nb.cells[2].outputs), "figures are stored"
    assert all("execution" not in c.metadata for c in nb.cells), "no timing noise in the stored file"
    current = subprocess.run(check, capture_output=True, text=True)
    assert current.returncode == 0, current.stdout + current.stderr

    nb.cells[0].source = "# 00 · A test, reworded"
    nbformat.write(nb, path)
    assert subprocess.run(check, capture_output=True).returncode == 0, "a prose edit keeps the outputs current"
    (root / "uniil_lib" / "__init__.py").write_text("ANSWER = 43\n")
    stale = subprocess.run(check, capture_output=True, text=True)
    assert stale.returncode == 1 and "00_test.ipynb: stale: the library changed" in stale.stdout, stale.stdout


def test_a_notebook_that_raises_is_not_written(tmp_path):
    root = small_repository(tmp_path)
    path = root / "notebooks" / "00_test.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("raise ValueError('broken on purpose')"))
    nbformat.write(nb, path)
    before = path.read_bytes()
    done = subprocess.run([sys.executable, str(SCRIPT), "--root", str(root), str(path)], capture_output=True, text=True)
    assert done.returncode == 1 and "broken on purpose" in done.stdout, done.stdout + done.stderr
    assert path.read_bytes() == before, "a failed run leaves the file as it was"


def test_error_outputs_make_a_notebook_stale(tmp_path):
    root = small_repository(tmp_path)
    path = root / "notebooks" / "00_test.ipynb"
    run.execute(path, root=root, timeout=120)
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].outputs.append(nbformat.v4.new_output("error", ename="ValueError", evalue="x", traceback=[]))
    assert run.staleness(nb, root) == "cells [1] hold error outputs"
