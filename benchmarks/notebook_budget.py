"""Measure each notebook's wall time and peak memory in the fast profile (the budget: <= 3 min, <= 2 GB).

    .venv/bin/python benchmarks/notebook_budget.py [notebooks/NN_*.ipynb ...] [--json out.json]

Each notebook runs in its own `jupyter nbconvert --execute` process; peak memory is the largest resident
set size of any process in that tree (the kernel), read from the operating system's child-process
accounting after the run. Run it on an otherwise idle machine: two torch processes on 2 cores slow
each other down many times over.

A run that takes longer than ``--timeout`` seconds (default 900) is stopped, its whole process tree (nbconvert
and the kernel) killed, and reported as failed: once, on a busy machine, nbconvert waited forever on an idle
kernel of notebook 01, and a budget run should end with a row that says so rather than hang.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_SECONDS = 180
BUDGET_BYTES = 2 * 1024**3


def nbconvert_command(path: Path, output_dir: str) -> list[str]:
    """The command that executes one notebook (run by the measuring child, so its peak is the child's tree's)."""
    return [sys.executable, "-m", "jupyter", "nbconvert", "--execute", "--to", "notebook", "--output-dir",
            output_dir, "--output", "budget-run", str(path), "--ExecutePreprocessor.timeout=900"]


def run_measured(command: list[str], *, timeout: float, env: dict[str, str] | None = None) -> dict:
    """Run ``command`` under a small measuring child in its own process group; seconds, peak RSS, rc, stderr tail.

    The child runs ``command`` and reads its tree's peak resident set size from the operating system
    (``RUSAGE_CHILDREN``). Past ``timeout`` seconds the whole group is killed and the row says it timed out.
    """
    code = ("import resource, subprocess, sys, json;"
            f"r = subprocess.run({command!r}, capture_output=True, text=True);"
            "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024;"
            "print(json.dumps({'rc': r.returncode, 'peak_bytes': peak, 'stderr': r.stderr[-2000:]}))")
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env, start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # the child, nbconvert and the kernel: one session, one group
        child.communicate()
        return {"seconds": round(time.perf_counter() - started, 1), "peak_bytes": 0, "rc": None,
                "stderr": f"stopped after {timeout:g} s without finishing (a hung kernel or nbconvert?); "
                          "run it again on an idle machine, or with a larger --timeout"}
    seconds = round(time.perf_counter() - started, 1)
    lines = stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        return {"seconds": seconds, "peak_bytes": 0, "rc": child.returncode, "stderr": stderr[-2000:]}
    return {"seconds": seconds, **json.loads(lines[-1])}


def run_one(path: Path, timeout: float = 900) -> dict:
    """Execute one notebook in a fresh process tree; return seconds, peak RSS and whether it passed."""
    with tempfile.TemporaryDirectory(prefix="notebook-budget-") as output_dir:
        report = run_measured(nbconvert_command(path, output_dir), timeout=timeout,
                              env={**os.environ, "UNIIL_PROFILE": "fast"})
    passed = report["rc"] == 0
    return {"notebook": path.name, "seconds": report["seconds"], "peak_mb": round(report["peak_bytes"] / 2**20),
            "passed": passed, "error_tail": "" if passed else report["stderr"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--timeout", type=float, default=900, help="seconds before a run is stopped (default 900)")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(Path(__file__).resolve().parents[1].joinpath("notebooks").glob("[0-9][0-9]_*.ipynb"))
    rows = []
    print(f"{'notebook':<40}{'seconds':>9}{'peak MB':>9}  ok")
    for path in paths:
        row = run_one(path, args.timeout)
        rows.append(row)
        within = row["seconds"] <= BUDGET_SECONDS and row["peak_mb"] * 2**20 <= BUDGET_BYTES and row["passed"]
        print(f"{row['notebook']:<40}{row['seconds']:>9.1f}{row['peak_mb']:>9}  {'yes' if within else 'NO'}")
        if row["error_tail"]:
            print(row["error_tail"])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
