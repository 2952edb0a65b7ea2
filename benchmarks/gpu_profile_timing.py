"""Wall time of the full (GPU) profile, measured on a short run and scaled to the profile's iteration count.

    python benchmarks/gpu_profile_timing.py --iterations 20 --json gpu_timing.json

The full profile trains ViT-B/16 for 1,000 iterations per task (batch 64, bf16 autocast on CUDA), which takes
hours per benchmark; a lent GPU machine has minutes and no internet. So this script measures, per scenario and
method, two benchmark runs of the full profile with two changes: random ViT-B/16 weights (``pretrained=None``:
the OpenAI weights cannot be downloaded there; the arithmetic, and so the time, is the same) and ``n`` and
``2n`` optimiser steps per task (``--iterations n``) instead of 1,000. Everything else (building the data,
caching frozen blocks, encoding class prompts, evaluating after every task, fitting DDAS autoencoders) runs as
in the real profile, once per run. The two runs' training times (``train_seconds``: the training loops, which
include any per-task fixed cost such as caching frozen blocks) give the cost of ``n`` more steps per task, so
the projected full-profile time is ``wall(n) + (train(2n) - train(n)) * (1000 - n) / n``: the first run's wall
time (which also fills the on-disk feature caches, as a user's first run would) plus the remaining steps. The accuracies of such a
run mean nothing and are not reported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from uniil_lib.benchmark import run_benchmark
from uniil_lib.named_scenarios import build_scenario
from uniil_lib.profiles import get_profile

DEFAULT_PLAN = {
    "uniil-offline": ["zeroshot", "finetune", "moe-adapters-ddas", "mage-noattr", "mage"],
    "mtil-offline": ["adapter", "moe-adapters"],
    "cil-emoji": ["lowrank-seq", "awpf"],
}


def measure(scenario: str, methods: list[str], iterations: int, seed: int = 0, on_row=None) -> dict:
    """Time building ``scenario`` once, then two short full-profile runs per method (``n`` and ``2n`` steps)."""
    full = get_profile("full")
    started = time.perf_counter()
    stream = build_scenario(scenario, profile=replace(full, pretrained=None), seed=seed)
    report = {"tasks": len(stream.task_names), "build_seconds": round(time.perf_counter() - started, 1), "methods": {}}
    for method in methods:
        walls, trains = [], []
        for n in (iterations, 2 * iterations):
            profile = replace(full, pretrained=None, train=replace(full.train, iterations=n))
            started = time.perf_counter()
            result = run_benchmark(stream, [method], profile=profile, seed=seed, progress=False)
            walls.append(time.perf_counter() - started)
            trains.append(result["methods"][method]["train_seconds"])
        per_n_steps = trains[1] - trains[0]
        projected = walls[0] + per_n_steps * (full.train.iterations - iterations) / iterations
        report["methods"][method] = {"wall_seconds": [round(w, 1) for w in walls],
                                     "train_seconds": [round(t, 1) for t in trains],
                                     "seconds_per_step": round(per_n_steps / (iterations * report["tasks"]), 4),
                                     "projected_full_seconds": round(projected, 1)}
        print(scenario, method, report["methods"][method], flush=True)
        if on_row:
            on_row(report)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20, help="optimiser steps per task in the short run")
    parser.add_argument("--scenarios", default=",".join(DEFAULT_PLAN), help="comma-separated scenario names")
    parser.add_argument("--methods", help="comma-separated methods (default: the plan for each scenario)")
    parser.add_argument("--json", help="write the results here (rewritten after every scenario)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not torch.cuda.is_available():
        raise SystemExit("the full profile trains on CUDA; run this on a machine with an NVIDIA GPU")
    report = {"device": torch.cuda.get_device_name(0), "iterations": args.iterations,
              "full_iterations": get_profile("full").train.iterations, "scenarios": {}}
    def save(scenario_report, scenario):
        report["scenarios"][scenario] = scenario_report
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))

    for scenario in args.scenarios.split(","):
        methods = args.methods.split(",") if args.methods else DEFAULT_PLAN[scenario]
        save(measure(scenario, methods, args.iterations, on_row=lambda r, s=scenario: save(r, s)), scenario)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
