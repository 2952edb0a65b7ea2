"""The fast profile's speed before and after a change, side by side in one run: two checkouts, alternating.

    python benchmarks/fast_profile_speed.py --before /tmp/uniil_before [--after .] \
        --scenario mtil-offline --methods finetune --rounds 2 --json speed.json

Each round runs the benchmark once with each checkout (in that order, then the reverse order in the next round, so
that a slow moment of a shared machine falls on both), each in a fresh process with one torch thread and an empty
cache of its own. It reports every run's wall time and training time, the median ratio after / before, and whether
the two checkouts produced the same accuracy matrices (a seeded result that must not change).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN = """
import json, sys, time
from uniil_lib.benchmark import run_benchmark
started = time.perf_counter()
result = run_benchmark({scenario!r}, {methods!r}, profile="fast", seed={seed}, progress=False)
wall = time.perf_counter() - started
print(json.dumps({{"wall": wall, "methods": {{name: {{"train_seconds": entry["train_seconds"],
                                                  "matrix": entry["matrix"]}}
                                            for name, entry in result["methods"].items()}}}}))
"""


def run_once(tree: Path, scenario: str, methods: list[str], seed: int) -> dict:
    """One benchmark in a fresh process of checkout ``tree``: wall seconds, training seconds and matrices."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PYTHONPATH": str(tree), "UNIIL_CACHE": cache, "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", RUN.format(scenario=scenario, methods=methods, seed=seed)],
                              cwd=tree, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the run in {tree} failed:\n{done.stderr[-3000:]}")
        record = json.loads(done.stdout.strip().splitlines()[-1])
        record["process_seconds"] = time.perf_counter() - started
        return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the code before the change")
    parser.add_argument("--after", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--scenario", default="mtil-offline")
    parser.add_argument("--methods", default="finetune")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write every run and the summary here")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for number in range(args.rounds):
        order = ("before", "after") if number % 2 == 0 else ("after", "before")
        for label in order:
            record = run_once(getattr(args, label).resolve(), args.scenario, methods, args.seed)
            runs[label].append(record)
            print(f"round {number + 1} {label:>6}: {record['wall']:.1f} s", flush=True)
    ratios = [a["wall"] / b["wall"] for a, b in zip(runs["after"], runs["before"])]
    same = all(a["methods"][m]["matrix"] == b["methods"][m]["matrix"]
               for a in runs["after"] for b in runs["before"] for m in methods)
    summary = {"scenario": args.scenario, "methods": methods, "seed": args.seed, "threads": 1,
               "before_wall": [round(r["wall"], 2) for r in runs["before"]],
               "after_wall": [round(r["wall"], 2) for r in runs["after"]],
               "ratio_after_over_before": [round(r, 3) for r in ratios],
               "median_ratio": round(statistics.median(ratios), 3), "same_matrices": same}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "runs": runs}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
