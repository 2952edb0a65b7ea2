"""Course use (issue 7): exercises, student copies, widgets' static fallbacks, and the launch links.

Every numbered notebook is covered automatically (``notebooks/NN_*.ipynb``); see ``docs/course.md``,
"Writing exercises", for the layout these tests expect.

The tests that start a kernel run the *student copies* the way a learner would, in the fast profile:
the cells before the first exercise (from the top for notebooks that train nothing before their exercises;
for the others, the first code cell and the exercise section's own preparation, since their other cells
equal the solved notebook's, which nbval runs), then for each exercise the stub (must raise
``NotImplementedError``), a plausible wrong answer (its check must fail with an ``AssertionError``) and the
worked solution (its check must pass).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pytest

from uniil_lib import exercises as ex
from uniil_lib import metrics, widgets
from repo_scripts import load_script

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
STUDENT = NOTEBOOKS / "student"
PATHS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
SCRIPT = ROOT / "scripts" / "make_student_copies.py"
# Code that trains before the exercises: such a notebook's student copy is not run from the top here.
TRAINS = re.compile(r"\b(run_benchmark|run_continual)\(|\.learn\(")


def _load_script():
    return load_script(SCRIPT)


make = _load_script()


def read(path: Path):
    return nbformat.read(path, as_version=4)


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT)


def copy_notebooks(tmp_path: Path) -> Path:
    """The notebooks folder's .ipynb files (solved and student) in ``tmp_path``."""
    target = tmp_path / "notebooks"
    (target / "student").mkdir(parents=True)
    for path in [*NOTEBOOKS.glob("*.ipynb"), *STUDENT.glob("*.ipynb")]:
        shutil.copy2(path, target / path.relative_to(NOTEBOOKS))
    return target


# ----------------------------------------------------------------------------------------------------
# student copies: current, deterministic, free of solutions
# ----------------------------------------------------------------------------------------------------
def test_student_copies_are_current():
    done = run_script("--check")
    assert done.returncode == 0, f"{done.stdout}{done.stderr}\nrun: python scripts/make_student_copies.py"
    assert sorted(p.name for p in STUDENT.glob("*.ipynb")) == [p.name for p in PATHS]


def test_check_fails_when_a_solved_notebook_changes(tmp_path):
    notebooks = copy_notebooks(tmp_path)
    assert make.out_of_date(notebooks) == []
    solved = read(notebooks / PATHS[0].name)
    solved.cells.append(nbformat.v4.new_markdown_cell("A new remark."))
    nbformat.write(solved, notebooks / PATHS[0].name)
    (notebooks / "student" / PATHS[-1].name).unlink()
    shutil.copy2(notebooks / "student" / PATHS[0].name, notebooks / "student" / "99_extra.ipynb")
    done = run_script("--check", "--notebooks", str(notebooks))
    assert done.returncode == 1, done.stdout
    assert f"stale: {notebooks / 'student' / PATHS[0].name}" in done.stdout, done.stdout
    assert f"missing: {notebooks / 'student' / PATHS[-1].name}" in done.stdout, done.stdout
    assert f"extra: {notebooks / 'student' / '99_extra.ipynb'}" in done.stdout, done.stdout
    assert run_script("--notebooks", str(notebooks)).returncode == 0
    assert run_script("--check", "--notebooks", str(notebooks)).returncode == 0


def test_generation_is_deterministic(tmp_path):
    notebooks = copy_notebooks(tmp_path)
    shutil.rmtree(notebooks / "student")
    make.write_copies(notebooks)
    first = {p.name: p.read_bytes() for p in (notebooks / "student").glob("*.ipynb")}
    assert make.write_copies(notebooks) == [], "a second run must find nothing to change"
    assert first == {p.name: p.read_bytes() for p in STUDENT.glob("*.ipynb")}, "same input, same bytes"


def test_strip_solution_keeps_the_lines_around_the_block():
    source = ('def f(x):\n    """Twice x."""\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n'
              '\nprint(f(1))')
    assert make.strip_solution(source, "9.1").split("\n") == [
        "def f(x):", '    """Twice x."""', "    # YOUR CODE HERE",
        '    raise NotImplementedError("Exercise 9.1: replace this line with your code")', "", "print(f(1))"]
    assert ex.fill_solution(make.strip_solution(source, "9.1"), "return 2 * x") == source.replace(
        "    ### BEGIN SOLUTION\n", "").replace("    ### END SOLUTION\n", "")


@pytest.mark.parametrize("source", ["### BEGIN SOLUTION\nx = 1", "x = 1\n### END SOLUTION",
                                    "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION"])
def test_unbalanced_markers_are_an_error(source):
    with pytest.raises(make.MarkerError):
        make.strip_solution(source, "9.1")


def solution_lines(nb) -> set[str]:
    """Lines that occur only inside solution blocks of ``nb`` (so they must not appear in a student copy)."""
    inside, outside = set(), set()
    for cell in nb.cells:
        within = False
        for line in cell.source.split("\n"):
            marker = line.strip()
            if marker in (ex.BEGIN, ex.END):
                within = marker == ex.BEGIN
            elif marker:
                (inside if within and cell.cell_type == "code" else outside).add(marker)
    return inside - outside


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_student_copy_holds_no_solution(path):
    solved, student = read(path), read(STUDENT / path.name)
    text = nbformat.writes(student)
    code = "\n".join(c.source for c in student.cells if c.cell_type == "code")
    assert ex.BEGIN not in code and ex.END not in code, f"{path.name}: solution markers left in the student copy"
    leaked = [line for line in solution_lines(solved) if any(line in c.source for c in student.cells)]
    assert not leaked, f"student/{path.name} contains solution lines: {leaked}"
    assert "wrong_answer" not in text, f"student/{path.name}: drop the wrong answers"
    dirty = [k for k, c in enumerate(student.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"student/{path.name}: cells {dirty} have outputs"
    assert "uniil" not in student.metadata, f"student/{path.name}: drop the solved notebook's execution record"
    stubs = [c for c in student.cells if 'raise NotImplementedError("Exercise' in c.source]
    assert len(stubs) == len(ex.find_exercises(solved.cells)), f"student/{path.name}: one stub per exercise"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_student_copy_equals_the_solved_notebook_outside_the_exercises(path):
    solved, student = read(path), read(STUDENT / path.name)
    assert len(solved.cells) == len(student.cells)
    solutions = {e.solution for e in ex.find_exercises(solved.cells)}
    differ = [k for k, (a, b) in enumerate(zip(solved.cells, student.cells))
              if k and k not in solutions and (a.cell_type, a.source) != (b.cell_type, b.source)]
    assert not differ, f"student/{path.name}: cells {differ} differ from the solved notebook"
    first = student.cells[0].source
    assert f"notebooks/student/{path.name}" in first and f"notebooks%2Fstudent%2F{path.name}" in first, (
        f"student/{path.name}: the badges should open the student copy")


# ----------------------------------------------------------------------------------------------------
# the exercises of every numbered notebook
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_every_notebook_ends_with_2_to_4_checked_exercises(path):
    cells = read(path).cells
    number = path.name[:2].lstrip("0") or "0"
    section = ex.exercise_section(cells)
    headings = [line for c in cells if c.cell_type == "markdown" for line in c.source.split("\n")
                if line.startswith("## ")]
    assert section is not None and headings[-1].endswith("Exercises"), (
        f"{path.name}: end with a section '## {number}.k Exercises'; last heading is {headings[-1:]}")
    found = ex.find_exercises(cells)
    assert 2 <= len(found) <= 4, f"{path.name}: {len(found)} exercises, want 2 to 4"
    ids = [e.id for e in found]
    assert len(set(ids)) == len(ids) and all(i.startswith(f"{number}.") for i in ids), (
        f"{path.name}: exercises need unique '### Exercise {number}.j' headings, got {ids}")
    for e in found:
        where = f"{path.name}, exercise {e.id}"
        assert section < e.statement < e.solution, f"{where}: statement, then solution, inside the section"
        source = cells[e.solution].source
        assert source.count(ex.BEGIN) == 1 and source.count(ex.END) == 1, f"{where}: one solution block per cell"
        assert e.check is not None, f"{where}: the cell after the solution must start with '{ex.CHECK_PREFIX} {e.id}'"
        check = cells[e.check].source
        assert check.lstrip().startswith(f"{ex.CHECK_PREFIX} {e.id}"), f"{where}: check cell heading"
        assert re.search(r"\bassert\b|\bcheck_(close|equal)\(", check), f"{where}: the check needs asserts"
        assert e.wrong_answer.strip(), (
            f"{where}: give a wrong answer in the solution cell's metadata exercise.wrong_answer")
        points = cells[e.solution].metadata.get("exercise", {}).get("points", 1)
        assert cells[e.solution].metadata.get("nbgrader") == ex.nbgrader_metadata(e.id, "answer"), (
            f"{where}: the solution cell needs nbgrader's answer-cell metadata (uniil_lib.exercises.nbgrader_metadata)")
        assert cells[e.check].metadata.get("nbgrader") == ex.nbgrader_metadata(e.id, "check", points=points), (
            f"{where}: the check cell needs nbgrader's autograded-test metadata worth {points} point(s)")
    prose = [k for k, c in enumerate(cells) if c.cell_type == "markdown" and ("BEGIN SOLUTION" in c.source
                                                                               or "END SOLUTION" in c.source)]
    assert not prose, f"{path.name}: markdown cells {prose} name the solution markers, which nbgrader would cut"
    graded = [c for c in cells if "nbgrader" in c.metadata]
    assert len(graded) == 2 * len(found), f"{path.name}: nbgrader metadata only on the exercises' cells"


def student_run_cells(path: Path) -> tuple[list, list[tuple[str, str]]]:
    """The cells to execute for ``path``'s student copy, and what each must do: ``("ok"|ename, label)``."""
    solved, student = read(path).cells, read(STUDENT / path.name).cells
    found = ex.find_exercises(solved)
    before = student[: found[0].statement]
    code = [c for c in before if c.cell_type == "code"]
    if any(TRAINS.search(c.source) for c in code):  # the rest runs under nbval, in the solved notebook
        section = ex.exercise_section(solved)
        code = [code[0]] + [c for c in before[section:] if c.cell_type == "code"]
    cells = [nbformat.v4.new_code_cell(c.source) for c in code]
    expect = [("ok", f"cell {k} before the exercises") for k in range(len(cells))]
    for e in found:
        stub, check = student[e.solution].source, student[e.check].source
        plan = [(stub, "stub", f"exercise {e.id}: the stub"),
                (check, "after stub", f"exercise {e.id}: the check after the stub"),
                (ex.fill_solution(stub, e.wrong_answer), "ok", f"exercise {e.id}: the wrong answer"),
                (check, "AssertionError", f"exercise {e.id}: the check after the wrong answer"),
                (ex.fill_solution(stub, ex.solution_body(solved[e.solution].source)), "ok",
                 f"exercise {e.id}: the solution"),
                (check, "ok", f"exercise {e.id}: the check after the solution")]
        cells += [nbformat.v4.new_code_cell(source) for source, _, _ in plan]
        expect += [(outcome, label) for _, outcome, label in plan]
    return cells, expect


_RUNS: dict[str, tuple[list, list, float]] = {}


def run_student_copy(path: Path, tmp_path_factory) -> tuple[list, list, float]:
    """Execute the student copy's plan once per session; returns (cells, expectations, seconds)."""
    from nbclient import NotebookClient

    if path.name not in _RUNS:
        cells, expect = student_run_cells(path)
        nb = nbformat.v4.new_notebook(cells=cells, metadata=read(path).metadata)
        env = {**os.environ, "UNIIL_PROFILE": "fast", "UNIIL_WIDGETS": "0", "OMP_NUM_THREADS": "1",
               "UNIIL_CACHE": str(tmp_path_factory.mktemp("student-cache"))}
        client = NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                                resources={"metadata": {"path": str(STUDENT)}})
        start = time.perf_counter()
        client.execute(env=env)
        _RUNS[path.name] = (nb.cells, expect, time.perf_counter() - start)
    return _RUNS[path.name]


def outcome(cell) -> str:
    errors = [o for o in cell.outputs if o.output_type == "error"]
    return errors[0].ename if errors else "ok"


def describe(cell) -> str:
    errors = [o for o in cell.outputs if o.output_type == "error"]
    return f"{errors[0].ename}: {errors[0].evalue}" if errors else "no error"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_student_copy_runs_up_to_its_first_exercise(path, tmp_path_factory):
    cells, expect, seconds = run_student_copy(path, tmp_path_factory)
    print(f"{path.name}: student copy plan ran in {seconds:.1f} s")
    failed = [(label, describe(c)) for c, (want, label) in zip(cells, expect)
              if label.startswith("cell ") and outcome(c) != "ok"]
    assert not failed, f"student/{path.name}: {failed}"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_stubs_raise_and_checks_fail_on_wrong_answers(path, tmp_path_factory):
    cells, expect, _ = run_student_copy(path, tmp_path_factory)
    wrong = []
    for k, (cell, (want, label)) in enumerate(zip(cells, expect)):
        if want == "stub":  # the stub raises, at once or when the check calls the stubbed function
            stub, check = outcome(cell), outcome(cells[k + 1])
            if not (stub == "NotImplementedError" and check != "ok" or stub == "ok" and check == "NotImplementedError"):
                wrong.append((label, "NotImplementedError", f"stub: {describe(cell)}; check: {describe(cells[k + 1])}"))
        elif want not in ("ok", "after stub") and outcome(cell) != want:
            wrong.append((label, want, describe(cell)))
    assert not wrong, f"student/{path.name}: expected an error that did not come: {wrong}"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_checks_pass_on_the_worked_solutions(path, tmp_path_factory):
    cells, expect, _ = run_student_copy(path, tmp_path_factory)
    failed = [(label, describe(c)) for c, (want, label) in zip(cells, expect)
              if want == "ok" and not label.startswith("cell ") and outcome(c) != "ok"]
    assert not failed, f"student/{path.name}: {failed}"


# ----------------------------------------------------------------------------------------------------
# answer-checking helpers
# ----------------------------------------------------------------------------------------------------
def test_check_close_names_the_difference():
    ex.check_close("x", [1.0, 2.0], np.array([1.0, 2.0]))
    with pytest.raises(AssertionError, match=r"x: expected 3.0, got 2.0 at index \(1,\)"):
        ex.check_close("x", [1.0, 2.0], [1.0, 3.0])
    with pytest.raises(AssertionError, match=r"expected shape \(3,\)"):
        ex.check_close("x", [1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(AssertionError, match="is None"):
        ex.check_close("x", None, 1.0)
    with pytest.raises(AssertionError, match="expected 5, got 4"):
        ex.check_equal("n", 4, 5)


def test_toy_part_builds_every_kind_of_scenario():
    from uniil_lib.scenarios import class_incremental, domain_incremental

    cil = class_incremental("t", ex.toy_part("t", 23), base=5, increment=5)
    assert [len(s.class_ids) for s in cil.steps] == [5, 5, 5, 5, 3]
    dil = domain_incremental("d", [ex.toy_part("d", 3, domain="a"), ex.toy_part("d", 3, domain="b", seed=1)])
    assert [s.domain for s in dil.steps] == ["a", "b"] and dil.steps[0].test.key != dil.steps[1].test.key


# ----------------------------------------------------------------------------------------------------
# widgets: the static fallbacks (and that the live versions build and redraw)
# ----------------------------------------------------------------------------------------------------
def test_use_widgets_detection(monkeypatch):
    assert widgets.use_widgets(True) is True and widgets.use_widgets(False) is False
    monkeypatch.setenv("UNIIL_WIDGETS", "1")
    assert widgets.use_widgets() is True
    monkeypatch.setenv("UNIIL_WIDGETS", "off")
    assert widgets.use_widgets() is False
    monkeypatch.delenv("UNIIL_WIDGETS")
    assert widgets.use_widgets() is False, "under pytest (and in CI, and outside a kernel): static"
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert widgets.use_widgets() is False, "no IPython kernel here: static"


@pytest.fixture(scope="module")
def tiny_clip():
    from uniil_lib.clip import load_clip

    return load_clip("tiny", seed=0)


def bar_widths(ax) -> list[float]:
    return [patch.get_width() for patch in ax.patches]


def test_zero_shot_explorer_static_shows_the_class_probabilities(tiny_clip, squares):
    from matplotlib.figure import Figure

    images = squares(4, 2, seed=0)
    templates = ["a photo of a {}.", "a {} square."]
    fig = widgets.zero_shot_explorer(tiny_clip, images, templates=templates, index=5, interactive=False)
    assert isinstance(fig, Figure)
    expected = widgets.class_probabilities(tiny_clip, images[5][0], images.class_names, templates)
    bars = fig.axes[1]
    np.testing.assert_allclose(bar_widths(bars), expected, atol=1e-6)
    assert np.isclose(sum(bar_widths(bars)), 1.0, atol=1e-5)
    assert [t.get_text() for t in bars.get_yticklabels()] == images.class_names
    assert "true: colour 2" in fig.axes[0].get_title()
    other = widgets.zero_shot_explorer(tiny_clip, images, templates=["{}"], class_names=["cat", "dog", "car"],
                                       interactive=False)
    assert [t.get_text() for t in other.axes[1].get_yticklabels()] == ["cat", "dog", "car"]


def test_zero_shot_explorer_widget_redraws_on_edits(tiny_clip, squares):
    images = squares(4, 2, seed=0)
    box = widgets.zero_shot_explorer(tiny_clip, images, templates=["a photo of a {}."], interactive=True)
    slider, (template_box, class_box) = box.children[0], box.children[1].children
    class_box.value = "cat\ndog"
    assert [t.get_text() for t in box.figure.axes[1].get_yticklabels()] == ["cat", "dog"]
    slider.value = 7
    expected = widgets.class_probabilities(tiny_clip, images[7][0], ["cat", "dog"], ["a photo of a {}."])
    np.testing.assert_allclose(bar_widths(box.figure.axes[1]), expected, atol=1e-6)
    before = box.figure
    template_box.value = "no placeholder"  # shown as a message; the last figure stays
    assert box.figure is before


def test_expert_usage_explorer_static_shows_the_shares():
    usage = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)  # (tasks, layers, experts)
    fig = widgets.expert_usage_explorer(usage, task=1, layer=2, task_names=["a", "b"], interactive=False)
    heights = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_allclose(heights, usage[1, 2] / usage[1, 2].sum())
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(), usage[:, 2] / usage[:, 2].sum(axis=1, keepdims=True))
    raw = widgets.expert_usage_explorer(usage, normalize=False, interactive=False)
    np.testing.assert_allclose([p.get_height() for p in raw.axes[0].patches], usage[0, 0])
    with pytest.raises(ValueError, match="tasks, layers, experts"):
        widgets.expert_usage_explorer(usage[0], interactive=False)


def test_expert_usage_explorer_widget_follows_the_sliders():
    import torch

    usage = torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(0))
    box = widgets.expert_usage_explorer(usage, interactive=True)
    task, layer = box.children[:2]
    task.value, layer.value = 2, 3
    expected = (usage[2, 3] / usage[2, 3].sum()).numpy()
    np.testing.assert_allclose([p.get_height() for p in box.figure.axes[0].patches], expected, rtol=1e-6)


def toy_experiment(calls):
    def experiment(epochs):
        calls.append(epochs)
        return np.array([[60.0, 10.0], [60.0 - 5 * epochs, 70.0]])  # forgets 5 points per epoch

    return experiment


def test_hyperparameter_explorer_static_plots_forgetting_per_value():
    calls = []
    fig = widgets.hyperparameter_explorer(toy_experiment(calls), [1, 3, 9], name="epochs", interactive=False)
    assert calls == [1, 3, 9], "the static plot runs every value once"
    bars = fig.axes[1].patches
    expected = [metrics.forgetting(toy_experiment([])(v)) for v in (1, 3, 9)]
    assert [p.get_height() for p in bars] == expected == [5, 15, 45]
    heat = fig.axes[0]
    assert heat.get_title() == "epochs = 9"


def test_hyperparameter_explorer_widget_runs_each_value_once():
    calls = []
    box = widgets.hyperparameter_explorer(toy_experiment(calls), [1, 3, 9], name="epochs", value=3, interactive=True)
    assert calls == [3], "only the value shown is run"
    slider = box.children[1]
    slider.value = 9
    slider.value = 3
    assert calls == [3, 9] and sorted(box.results) == [3, 9]
    heights = [p.get_height() for p in box.figure.axes[1].patches]
    assert heights == [0.0, 15.0, 45.0], "values not run yet show an empty bar"
    with pytest.raises(ValueError, match="not one of"):
        widgets.hyperparameter_explorer(toy_experiment([]), [1, 3], name="epochs", value=2, interactive=False)


# ----------------------------------------------------------------------------------------------------
# launch: README and docs links, the Colab cell, Binder
# ----------------------------------------------------------------------------------------------------
LINK = re.compile(r"\]\(([^)\s]+)\)")


def local_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(path.read_text(encoding="utf-8"))
            if not t.startswith(("http://", "https://", "#", "mailto:"))]


def test_readme_badges_open_an_existing_notebook():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    colab = re.findall(r"https://colab\.research\.google\.com/github/uniil-lib/uniil_lib/blob/main/([^)\s]+)", text)
    binder = re.findall(r"https://mybinder\.org/v2/gh/uniil-lib/uniil_lib/main\?labpath=([^)\s]+)", text)
    assert colab and binder, "README: keep the Colab and Binder badges"
    for target in colab + [b.replace("%2F", "/") for b in binder]:
        assert (ROOT / target).is_file(), f"README badge points at {target}, which does not exist"


@pytest.mark.parametrize("doc", ["README.md", "docs/course.md"])
def test_local_links_resolve(doc):
    path = ROOT / doc
    missing = [t for t in local_links(path) if not (path.parent / t.split("#")[0]).exists()]
    assert not missing, f"{doc}: links to missing files {missing}"


@pytest.mark.parametrize("doc", ["README.md", "docs/course.md"])
def test_every_notebook_is_listed(doc):
    path = ROOT / doc
    linked = {Path(t).name for t in local_links(path)}
    unlisted = [p.name for p in PATHS if p.name not in linked]
    assert not unlisted, f"{doc}: add a row for {unlisted}"


def test_every_notebook_has_the_same_first_code_cell():
    firsts = {p.name: next(c.source for c in read(p).cells if c.cell_type == "code") for p in PATHS}
    reference = firsts[PATHS[0].name]
    differ = [name for name, source in firsts.items() if source != reference]
    assert not differ, f"{differ}: the first code cell (Colab install + PROFILE switch) must equal {PATHS[0].name}'s"
    assert 'os.environ.get("UNIIL_REPO_URL"' in reference and "REPO_URL, REPO]" in reference, (
        "the Colab install must clone $UNIIL_REPO_URL when it is set (a fork, a local clone)")


def test_binder_config_is_what_repo2docker_needs():
    binder = ROOT / "binder"
    for line in (binder / "requirements.txt").read_text().splitlines():
        if line.startswith(("-r ", "-c ")):  # pip reads these relative to the file that names them
            assert (binder / line.split(None, 1)[1]).is_file(), f"binder/requirements.txt: {line} not found"
    post_build = (binder / "postBuild").read_text()
    assert "pip install" in post_build and "-e ." in post_build, "repo2docker ignores the root: install the package"
    for script in ("postBuild", "start"):
        assert os.access(binder / script, os.X_OK), f"binder/{script} must be executable"
    assert "UNIIL_PROFILE=fast" in (binder / "start").read_text()
