"""What training the CNN's conv head adds to one pretraining step: the two steps side by side, in alternation.

    .venv/bin/python benchmarks/stem_head_step_time.py [--scale 0.1] [--steps 10] [--repeats 3] [--threads 1]

The eighteenth tuning round (``docs/measurements/mini_clip_tuning.md``) lets the frozen CNN's 1x1 conv head train
(``Recipe.stem_head_lr_scale``). This script times ``optimisation_step`` of the shipped recipe and of the same recipe
with the head training, on the cached pretraining data (all 749 classes), from a fresh model each: one warm-up step,
then ``--steps`` timed steps; the two alternate ``--repeats`` times. Its last line is one JSON object with the median
seconds per step of each and their ratio. Run it with nothing else on the cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "data_scripts"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from pretrain_mini_clip import (  # noqa: E402
    Recipe, load_train_data, make_optimizer, optimisation_step, start_trained_parts,
)
from uniil_lib.mini_clip import MiniClipConfig, build_mini_clip  # noqa: E402


def seconds_per_step(recipe: Recipe, data, steps: int) -> float:
    """Mean seconds of ``steps`` optimisation steps of a fresh model, after one warm-up step."""
    model = build_mini_clip(MiniClipConfig(), seed=0)
    start_trained_parts(model, data.emoji_captions, recipe)
    optimizer, scheduler = make_optimizer(model, recipe)
    optimisation_step(model, data, recipe, optimizer, scheduler, 0)
    began = time.perf_counter()
    for step in range(1, steps + 1):
        optimisation_step(model, data, recipe, optimizer, scheduler, step)
    return (time.perf_counter() - began) / steps


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.1, help="the head's stem_head_lr_scale")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shipped = Recipe()
    data = load_train_data(build_mini_clip(MiniClipConfig(), seed=0), shipped, None)
    recipes = {"frozen_head": shipped, "trained_head": replace(shipped, stem_head_lr_scale=args.scale)}
    times = {name: [] for name in recipes}
    for _ in range(args.repeats):
        for name, recipe in recipes.items():
            times[name].append(seconds_per_step(recipe, data, args.steps))
            print(f"{name}: {times[name][-1]:.3f} s/step", flush=True)
    median = {name: round(statistics.median(values), 4) for name, values in times.items()}
    print(json.dumps({"threads": args.threads, "steps": args.steps, "repeats": args.repeats, "scale": args.scale,
                      "seconds_per_step": median,
                      "ratio_trained_to_frozen": round(median["trained_head"] / median["frozen_head"], 3)}))


if __name__ == "__main__":
    main()
