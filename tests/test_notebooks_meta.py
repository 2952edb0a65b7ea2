"""The committed notebooks: outputs of one whole run or none, the right badges, the one setup cell, no checkpoints folder.

Cheap structural checks (no kernel). Running the notebooks themselves is nbval's job:
``UNIIL_PROFILE=fast pytest --nbval-lax --nbval-current-env notebooks/``.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
SWITCH = 'PROFILE = os.environ.get("UNIIL_PROFILE", "fast")'


def read(path: Path):
    return nbformat.read(path, as_version=4)


def test_there_are_notebooks():
    assert PATHS, f"no numbered notebooks found in {NOTEBOOKS}"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_outputs_are_all_or_nothing(path):
    """Solved notebooks hold the outputs of one whole run (``scripts/execute_notebooks.py``; whether that run is
    current is ``tests/test_executed_notebooks.py``'s check), never those of a few cells run by hand."""
    nb = read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    if "uniil" in nb.metadata:
        assert counts == list(range(1, len(code) + 1)), (
            f"{path.name}: the cells were not run once each, top to bottom; run: python scripts/execute_notebooks.py")
    else:
        dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not dirty, f"{path.name}: cells {dirty} have outputs of a run by hand; clear them or execute the notebook"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_header_has_title_badges_goals_and_prerequisites(path):
    first = read(path).cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), f"{path.name}: start with a # title"
    colab = f"https://colab.research.google.com/github/uniil-lib/uniil_lib/blob/main/notebooks/{path.name}"
    binder = f"https://mybinder.org/v2/gh/uniil-lib/uniil_lib/main?labpath=notebooks%2F{path.name}"
    assert colab in first.source, f"{path.name}: Colab badge must link to {colab}"
    assert binder in first.source, f"{path.name}: Binder badge must link to {binder}"
    assert "Prerequisites" in first.source, f"{path.name}: name the prerequisites in the first cell"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_first_code_cell_holds_the_switch_and_the_colab_install(path):
    nb = read(path)
    code = next(c for c in nb.cells if c.cell_type == "code").source
    assert SWITCH in code, f"{path.name}: the first code cell must hold the one switch: {SWITCH}"
    assert '"google.colab" in sys.modules' in code, f"{path.name}: install only on Colab"
    assert not re.search(r"\b(torch|numpy)==", code), f"{path.name}: never pin torch or numpy (Colab has its own)"
    assert nb.metadata["kernelspec"]["name"] == "python3", f"{path.name}: kernel must be python3"
    assert "start_notebook(PROFILE)" in code, f"{path.name}: the first cell ends with start_notebook(PROFILE)"
    assert len(code.strip().splitlines()) <= 16, f"{path.name}: keep the first cell short (the rest is start_notebook)"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_sections_are_numbered(path):
    number = path.name[:2].lstrip("0") or "0"
    headings = [line for c in read(path).cells if c.cell_type == "markdown"
                for line in c.source.splitlines() if line.startswith("## ")]
    assert headings and all(h.startswith(f"## {number}.") for h in headings), (
        f"{path.name}: section headings should read '## {number}.k ...', got {headings}")


def test_no_checkpoint_folders():
    found = list(NOTEBOOKS.rglob(".ipynb_checkpoints"))
    assert not found, f"remove {found}: .ipynb_checkpoints must not be committed"
