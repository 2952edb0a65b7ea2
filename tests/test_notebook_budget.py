"""benchmarks/notebook_budget.py: what it measures of a run (time, peak memory, exit status), and that a run
which never ends is stopped, with every process it started, and reported as failed."""

from __future__ import annotations

import os
import sys
import time

import pytest
from repo_scripts import load_script


@pytest.fixture(scope="module")
def budget():
    return load_script("benchmarks/notebook_budget.py")


def test_peak_memory_and_exit_status_of_a_finished_run(budget):
    grow = "x = bytearray(200 * 2**20); x[::4096] = b'1' * len(x[::4096])"  # 200 MiB, every page touched
    report = budget.run_measured([sys.executable, "-c", grow], timeout=120)
    assert report["rc"] == 0 and report["peak_bytes"] >= 200 * 2**20
    small = budget.run_measured([sys.executable, "-c", "pass"], timeout=120)
    assert small["peak_bytes"] < report["peak_bytes"] - 150 * 2**20


def test_a_failed_run_keeps_its_error(budget):
    report = budget.run_measured([sys.executable, "-c", "raise SystemExit('the notebook broke')"], timeout=120)
    assert report["rc"] == 1 and "the notebook broke" in report["stderr"]


def test_a_hung_run_is_stopped_with_its_whole_tree(budget, tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    hang = ("import subprocess, time; p = subprocess.Popen(['sleep', '300']); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(300)")
    started = time.perf_counter()
    report = budget.run_measured([sys.executable, "-c", hang], timeout=3)
    assert time.perf_counter() - started < 60
    assert report["rc"] is None and "stopped after 3 s" in report["stderr"]
    grandchild = int(pid_file.read_text())
    for _ in range(50):  # killed, and reaped by init: gone within moments
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the hung run's grandchild {grandchild} outlived the timeout")


def test_a_stopped_notebook_is_a_failed_row(budget, monkeypatch, tmp_path):
    monkeypatch.setattr(budget, "nbconvert_command",
                        lambda path, out: [sys.executable, "-c", "import time; time.sleep(300)"])
    row = budget.run_one(tmp_path / "01_x.ipynb", timeout=2)
    assert row["passed"] is False and "stopped after 2 s" in row["error_tail"] and row["notebook"] == "01_x.ipynb"
