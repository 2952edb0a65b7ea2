"""Exercises at the end of every notebook: answer checks, toy data for them, and how they are laid out.

A learner's answer is checked by the cell after it, with plain ``assert`` statements or the helpers here,
which say *what* is wrong (a shape, a value, the largest difference) instead of a bare ``AssertionError``.

The layout that ``scripts/make_student_copies.py`` and ``tests/test_course.py`` rely on, in every numbered
notebook (see ``docs/course.md``, "Writing exercises"):

- the last ``## N.k Exercises`` section starts with cells that prepare what the exercises need, so that the
  section runs right after the notebook's first code cell;
- each exercise is a markdown cell headed ``### Exercise N.j ...``, then a code cell whose worked solution
  sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (one block per cell), then a check cell
  whose first line is ``# Check exercise N.j`` and which fails on a wrong answer;
- the solution cell's metadata ``exercise.wrong_answer`` holds a plausible wrong answer (code that replaces
  the solution block): the tests run it and expect the check to fail;
- both cells carry nbgrader's metadata (:func:`nbgrader_metadata`): the solution cell is an answer cell
  (``ex-N-j-answer``), the check cell an autograded test worth the exercise's points (``ex-N-j-check``), so a
  teacher can run ``nbgrader generate_assignment`` and ``nbgrader autograde`` on the solved notebooks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
EXERCISE_HEADING = re.compile(r"^###\s+Exercise\s+(\d+\.\d+)", re.MULTILINE)
SECTION_HEADING = re.compile(r"^##\s+\d+\.\d+\s+Exercises\s*$", re.MULTILINE)
CHECK_PREFIX = "# Check exercise"


# ----------------------------------------------------------------------------------------------------
# checks used in check cells
# ----------------------------------------------------------------------------------------------------
def _array(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, on any device
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=float)


def check_close(name: str, answer, expected, *, atol: float = 1e-5, rtol: float = 1e-5) -> None:
    """Assert that ``answer`` (number, list, array or tensor) matches ``expected`` in shape and value.

    Raises:
        AssertionError: naming ``name``, the shapes, or the largest difference and where it is.
    """
    assert answer is not None, f"{name} is None: did the cell above return or assign a value?"
    got, want = _array(answer), _array(expected)
    assert got.shape == want.shape, f"{name}: expected shape {want.shape}, got {got.shape}"
    if not np.allclose(got, want, atol=atol, rtol=rtol, equal_nan=True):
        where = np.unravel_index(np.nanargmax(np.abs(got - want)), got.shape) if got.ndim else ()
        raise AssertionError(
            f"{name}: expected {want[where] if got.ndim else want}, got {got[where] if got.ndim else got}"
            + (f" at index {tuple(int(i) for i in where)}" if got.ndim else ""))


def check_equal(name: str, answer, expected) -> None:
    """Assert ``answer == expected`` (lists, tuples, numbers, strings), showing both on failure."""
    assert answer == expected, f"{name}: expected {expected!r}, got {answer!r}"


# ----------------------------------------------------------------------------------------------------
# toy data for exercises: cheap, deterministic, no files
# ----------------------------------------------------------------------------------------------------
def toy_part(name: str, n_classes: int, *, per_class: int = 2, domain: str | None = None, seed: int = 0):
    """A tiny :class:`~uniil_lib.scenarios.DatasetPart` of noise images, for building scenarios in a check.

    Classes are named ``"{name} 0"``, ``"{name} 1"``, ...; the images are 4x4 noise, so nothing can be
    learned from them: they only carry labels through the scenario builders.
    """
    from .data.base import ArrayImageSet
    from .scenarios import DatasetPart

    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    names = [f"{name} {k}" for k in range(n_classes)]

    def images(split: str) -> ArrayImageSet:
        pixels = rng.integers(0, 256, size=(len(labels), 4, 4, 3), dtype=np.uint8)
        return ArrayImageSet(pixels, labels, names, key=f"toy-{name}-{n_classes}-{per_class}-{seed}/{split}")

    return DatasetPart(name, images("train"), images("test"), ("a {}.",), domain or name)


# ----------------------------------------------------------------------------------------------------
# the layout of an exercise section
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Exercise:
    """Where one exercise sits in a notebook's list of cells.

    Attributes:
        id: ``"N.j"``, from the ``### Exercise N.j`` heading.
        statement: index of the markdown cell that states it.
        solution: index of the code cell with the ``BEGIN``/``END SOLUTION`` block.
        check: index of the check cell right after the solution (None if there is none).
        wrong_answer: code that replaces the solution block and must make the check fail ("" if absent).
    """

    id: str
    statement: int
    solution: int
    check: int | None
    wrong_answer: str


NBGRADER_SCHEMA = 3


def nbgrader_metadata(exercise_id: str, role: str, *, points: int = 1) -> dict:
    """nbgrader's cell metadata for exercise ``"N.j"``: ``role`` ``"answer"`` (the solution cell: cleared by
    ``generate_assignment``, graded by hand if at all) or ``"check"`` (the check cell: locked, and an
    autograded test worth ``points``)."""
    if role not in ("answer", "check"):
        raise ValueError(f"role must be 'answer' or 'check', got {role!r}")
    grade_id = f"ex-{exercise_id.replace('.', '-')}-{role}"
    if role == "answer":
        return {"grade": False, "grade_id": grade_id, "locked": False, "schema_version": NBGRADER_SCHEMA,
                "solution": True, "task": False}
    return {"grade": True, "grade_id": grade_id, "locked": True, "points": points, "schema_version": NBGRADER_SCHEMA,
            "solution": False, "task": False}


def exercise_section(cells: Sequence) -> int | None:
    """Index of the markdown cell that opens the ``## N.k Exercises`` section (None if there is none)."""
    found = [k for k, cell in enumerate(cells)
             if cell["cell_type"] == "markdown" and SECTION_HEADING.search(cell["source"])]
    return found[-1] if found else None


def find_exercises(cells: Sequence) -> list[Exercise]:
    """Every exercise of a notebook (``nb.cells``), in order; see the module docstring for the layout."""
    exercises: list[Exercise] = []
    heading: tuple[str, int] | None = None
    for index, cell in enumerate(cells):
        if cell["cell_type"] == "markdown":
            found = EXERCISE_HEADING.findall(cell["source"])
            heading = (found[-1], index) if found else heading
        elif cell["cell_type"] == "code" and BEGIN in cell["source"]:
            exercise_id, statement = heading if heading else ("?", -1)
            following = cells[index + 1] if index + 1 < len(cells) else None
            is_check = (following is not None and following["cell_type"] == "code"
                        and following["source"].lstrip().startswith(CHECK_PREFIX))
            wrong = cell.get("metadata", {}).get("exercise", {}).get("wrong_answer", "")
            exercises.append(Exercise(exercise_id, statement, index, index + 1 if is_check else None, wrong))
            heading = None
    return exercises


def fill_solution(source: str, body: str) -> str:
    """Replace the one ``BEGIN``/``END SOLUTION`` block of ``source`` (or the student copy's
    ``raise NotImplementedError("Exercise ...")`` stub) by ``body``, indented like the block."""
    lines = source.split("\n")
    stub = [k for k, line in enumerate(lines) if line.strip().startswith('raise NotImplementedError("Exercise')]
    if BEGIN in source:
        start = next(k for k, line in enumerate(lines) if line.strip() == BEGIN)
        stop = next(k for k, line in enumerate(lines) if line.strip() == END)
    elif stub:
        start = stop = stub[0]
        if start > 0 and lines[start - 1].strip() == "# YOUR CODE HERE":
            start -= 1
    else:
        raise ValueError("no solution block and no exercise stub in this cell")
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    filled = [indent + line if line.strip() else line for line in body.strip("\n").split("\n")]
    return "\n".join(lines[:start] + filled + lines[stop + 1:])


def solution_body(source: str) -> str:
    """The lines between the markers, dedented to the marker's indentation."""
    lines = source.split("\n")
    start = next(k for k, line in enumerate(lines) if line.strip() == BEGIN)
    stop = next(k for k, line in enumerate(lines) if line.strip() == END)
    indent = len(lines[start]) - len(lines[start].lstrip())
    return "\n".join(line[indent:] for line in lines[start + 1:stop])
