"""Course assignments a teacher can grade (issue 18, item 5): nbgrader on a solved notebook.

The exercises carry nbgrader's cell metadata (``uniil_lib.exercises.nbgrader_metadata``). Here the real
``nbgrader generate_assignment`` makes the release version of notebook 00 from the solved notebook, two
students hand in that release (one solves every exercise, one gives the plausible wrong answer to exercise
0.2), and ``nbgrader autograde`` executes both submissions and scores the check cells.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from uniil_lib import exercises as ex

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "00_setup.ipynb"
ASSIGNMENT = "ps00"
# The stub nbgrader writes in place of a solution: the same words as the student copies'.
CONFIG = f"""
c = get_config()
c.CourseDirectory.root = {{root!r}}
c.CourseDirectory.course_id = "uniil"
c.ClearSolutions.code_stub = {{{{"python": '# YOUR CODE HERE\\nraise NotImplementedError("Exercise: replace this line with your code")'}}}}
c.Execute.timeout = 600
"""


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "UNIIL_PROFILE": "fast", "UNIIL_WIDGETS": "0", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT), "UNIIL_CACHE": str(course / "cache"),
           # nbgrader runs the `alembic` command of its environment for its database
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def submission(release: nbformat.NotebookNode, solved: nbformat.NotebookNode, wrong: str | None) -> nbformat.NotebookNode:
    """The release notebook with every answer filled in: the worked solution, or for exercise ``wrong`` its
    plausible wrong answer."""
    nb = nbformat.from_dict(release)
    by_id = {e.id: e for e in ex.find_exercises(solved.cells)}
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        if cell.cell_type == "code" and grade_id.endswith("-answer"):
            exercise = by_id[grade_id[3:-7].replace("-", ".")]
            body = exercise.wrong_answer if exercise.id == wrong else ex.solution_body(solved.cells[exercise.solution].source)
            cell.source = ex.fill_solution(cell.source, body)
    return nb


def test_generate_assignment_and_autograde_score_right_and_wrong_answers(tmp_path):
    course = tmp_path / "course"
    (course / "source" / ASSIGNMENT).mkdir(parents=True)
    (course / "nbgrader_config.py").write_text(CONFIG.format(root=str(course)))
    shutil.copy2(NOTEBOOK, course / "source" / ASSIGNMENT / NOTEBOOK.name)
    nbgrader(course, "generate_assignment", ASSIGNMENT, "--force")

    release = nbformat.read(course / "release" / ASSIGNMENT / NOTEBOOK.name, as_version=4)
    solved = nbformat.read(NOTEBOOK, as_version=4)
    code = "\n".join(c.source for c in release.cells if c.cell_type == "code")
    assert ex.BEGIN not in code and code.count('raise NotImplementedError("Exercise') == len(ex.find_exercises(solved.cells))
    tests = {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"]["points"]
             for c in release.cells if c.metadata.get("nbgrader", {}).get("grade")}
    assert sorted(tests) == ["ex-0-1-check", "ex-0-2-check", "ex-0-3-check"], tests
    total = sum(tests.values())

    for student, wrong in (("solves-all", None), ("wrong-0-2", "0.2")):
        folder = course / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(submission(release, solved, wrong), folder / NOTEBOOK.name)
    nbgrader(course, "autograde", ASSIGNMENT)

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        scores = {student: gradebook.find_submission(ASSIGNMENT, student).score for student in ("solves-all", "wrong-0-2")}
        wrong_cell = gradebook.find_grade("ex-0-2-check", NOTEBOOK.stem, ASSIGNMENT, "wrong-0-2")
        wrong_points = wrong_cell.score
    assert scores == {"solves-all": total, "wrong-0-2": total - tests["ex-0-2-check"]}, scores
    assert wrong_points == 0, "the failing check of exercise 0.2 scores nothing"
