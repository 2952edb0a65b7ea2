"""Measure each notebook's wall time and peak memory in the fast profile (the budget: <= 3 min, <= 2 GB).

    .venv/bin/python benchmarks/notebook_budget.py [notebooks/NN_*.ipynb ...] [--json out.json]

Each notebook runs in its own `jupyter nbconvert --execute` process; peak memory is the largest resident
set size of any process in that tree (the kernel), read from the operating system's child-process
accounting after the run. Run it on an otherwise idle machine: two torch processes on 2 cores slow
each other down many times over.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_SECONDS = 180
BUDGET_BYTES = 2 * 1024**3


def run_one(path: Path) -> dict:
    """Execute one notebook in a fresh process tree; return seconds, peak RSS and whether it passed."""
    env = {**os.environ, "UNIIL_PROFILE": "fast"}
    code = (
        "import resource, subprocess, sys, json;"
        f"r = subprocess.run([sys.executable, '-m', 'jupyter', 'nbconvert', '--execute', '--to', 'notebook',"
        f" '--output-dir', {tempfile.gettempdir()!r}, '--output', 'budget-run', {str(path)!r},"
        " '--ExecutePreprocessor.timeout=900'], capture_output=True, text=True);"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024;"
        "print(json.dumps({'rc': r.returncode, 'peak_bytes': peak, 'stderr': r.stderr[-2000:]}))"
    )
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    seconds = time.perf_counter() - started
    report = json.loads(out.stdout.strip().splitlines()[-1])
    return {"notebook": path.name, "seconds": round(seconds, 1), "peak_mb": round(report["peak_bytes"] / 2**20),
            "passed": report["rc"] == 0, "error_tail": "" if report["rc"] == 0 else report["stderr"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(Path(__file__).resolve().parents[1].joinpath("notebooks").glob("[0-9][0-9]_*.ipynb"))
    rows = []
    print(f"{'notebook':<40}{'seconds':>9}{'peak MB':>9}  ok")
    for path in paths:
        row = run_one(path)
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
