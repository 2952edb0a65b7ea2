"""Wall time of the full (GPU) profile, measured on a short run and scaled to the profile's iteration count.

    python benchmarks/gpu_profile_timing.py --iterations 20 --json gpu_timing.json

The full profile trains ViT-B/16 for 1,000 iterations per task (batch 64, bf16 autocast on CUDA), which takes
hours per benchmark; a lent GPU machine has minutes and no internet. So this script measures, per scenario and
method, one benchmark run of the full profile with two changes: random ViT-B/16 weights (``pretrained=None``:
the OpenAI weights cannot be downloaded there; the arithmetic, and so the time, is the same) and ``--iterations``
steps per task instead of 1,000. It reports the measured wall time and training time, and the projected full
time ``wall + train * (1000 / iterations - 1)``: everything except the optimiser steps (building the data,
encoding class prompts, evaluating after every task, fitting DDAS autoencoders) runs as in the real profile, and
the steps are scaled linearly. The accuracies of such a run mean nothing and are not reported.
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


def measure(scenario: str, methods: list[str], iterations: int, seed: int = 0) -> dict:
    """Time building ``scenario`` once, then one short full-profile run per method."""
    full = get_profile("full")
    profile = replace(full, pretrained=None, train=replace(full.train, iterations=iterations))
    started = time.perf_counter()
    stream = build_scenario(scenario, profile=profile, seed=seed)
    build_seconds = time.perf_counter() - started
    rows = {}
    for method in methods:
        started = time.perf_counter()
        result = run_benchmark(stream, [method], profile=profile, seed=seed, progress=False)
        wall = time.perf_counter() - started
        train = result["methods"][method]["train_seconds"]
        scale = full.train.iterations / iterations
        rows[method] = {"wall_seconds": round(wall, 1), "train_seconds": round(train, 1),
                        "projected_full_seconds": round(wall + train * (scale - 1), 1)}
        print(scenario, method, rows[method], flush=True)
    return {"tasks": len(stream.task_names), "build_seconds": round(build_seconds, 1), "methods": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20, help="optimiser steps per task in the short run")
    parser.add_argument("--scenarios", default=",".join(DEFAULT_PLAN), help="comma-separated scenario names")
    parser.add_argument("--json", help="write the results here (rewritten after every scenario)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not torch.cuda.is_available():
        raise SystemExit("the full profile trains on CUDA; run this on a machine with an NVIDIA GPU")
    report = {"device": torch.cuda.get_device_name(0), "iterations": args.iterations,
              "full_iterations": get_profile("full").train.iterations, "scenarios": {}}
    for scenario in args.scenarios.split(","):
        report["scenarios"][scenario] = measure(scenario, DEFAULT_PLAN[scenario], args.iterations)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
