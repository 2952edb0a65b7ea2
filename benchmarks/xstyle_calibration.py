"""How hard is a cross-style stream for a model? One seed of ``cil-emoji-xstyle`` (or another style assignment):
each method's Avg, Last and BWT, its Last on each test style, and what training on all classes at once reaches.

    .venv/bin/python benchmarks/xstyle_calibration.py                                  # the named assignment
    .venv/bin/python benchmarks/xstyle_calibration.py --train twitter,openmoji --test google,fluent3d
    .venv/bin/python benchmarks/xstyle_calibration.py --methods zeroshot,awpf --no-joint --out r.json

Issue 20 asks of the stream: trained methods' Last well below the ceiling (aim 50-80 %), zero-shot clearly above
chance (1 % for 100 classes), fine-tuning forgetting visibly. The *joint* rows train ``lowrank-seq`` and
``linear-probe`` on all 100 classes in one step (same epochs, the same images): what the frozen features allow
without a stream. Fusion can only matter in the gap between a continual method and the joint reference; where a
continual method already reaches it, the stream measures the style gap, not forgetting.

Runs in this process, one method after another, with the profile's model and training (``--profile``, default
fast). Set ``OMP_NUM_THREADS`` as for the CLI. ``--out`` writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from uniil_lib.clip import load_clip  # noqa: E402
from uniil_lib.emoji_scenarios import XSTYLE_TEST, XSTYLE_TRAIN, emoji_xstyle_part, style_shares  # noqa: E402
from uniil_lib.methods import create_method  # noqa: E402
from uniil_lib.metrics import all_metrics  # noqa: E402
from uniil_lib.named_scenarios import cil_emoji_xstyle  # noqa: E402
from uniil_lib.paths import data_root  # noqa: E402
from uniil_lib.profiles import get_profile  # noqa: E402
from uniil_lib.scenarios import class_incremental  # noqa: E402
from uniil_lib.train import run_continual  # noqa: E402

METHODS = ("zeroshot", "lowrank-seq", "awpf-fixed", "awpf", "finetune")
JOINT_METHODS = ("lowrank-seq", "linear-probe")


def last_per_style(method, stream, test_styles, per_class: int) -> dict[str, float]:
    """Last (after the final step, among all classes) on each test style's images."""
    shares = style_shares(per_class, len(test_styles))
    final = len(stream.steps) - 1
    hits, counts = np.zeros(len(test_styles)), np.zeros(len(test_styles))
    for step in stream.steps:
        predicted = method.predict(step.test, stream.eval_class_ids(step.index, final), None)
        bounds = np.cumsum([0] + [share * len(step.class_ids) for share in shares])
        for k in range(len(test_styles)):
            block = slice(bounds[k], bounds[k + 1])
            hits[k] += (predicted[block] == step.test.labels[block]).sum()
            counts[k] += bounds[k + 1] - bounds[k]
    return {style: round(100 * float(h / c), 2) for style, h, c in zip(test_styles, hits, counts)}


def run_one(name: str, stream, profile, seed: int, test_styles) -> dict:
    """One method on ``stream``: its metrics, Last per test style and seconds."""
    start = time.perf_counter()
    config = profile.train_config(name, seed=seed, progress=False, scenario=stream.name)
    clip = load_clip(profile.model, pretrained=profile.pretrained, seed=seed, device=config.device)
    method = create_method(name, clip, stream, config)
    run = run_continual(method, stream)
    metrics = all_metrics(run.matrix, test_sizes=run.test_sizes, zero_shot=run.initial)
    return {"model": clip.identity, "avg": round(metrics["avg_incremental"], 2), "last": round(metrics["last"], 2),
            "bwt": round(metrics["bwt"], 2), "forgetting": round(metrics["forgetting"], 2),
            "last_per_test_style": last_per_style(method, stream, test_styles, profile.emoji_test_per_class),
            "seconds": round(time.perf_counter() - start, 1), **method.run_report()}


def calibrate(args: argparse.Namespace) -> dict:
    profile = get_profile(args.profile)
    stream = cil_emoji_xstyle(profile=profile, seed=args.seed, train_styles=args.train, test_styles=args.test)
    out = {"scenario": stream.name, "profile": profile.name, "seed": args.seed, "train_styles": list(args.train),
           "test_styles": list(args.test), "methods": {}, "joint": {}}
    for name in args.methods:
        out["methods"][name] = run_one(name, stream, profile, args.seed, args.test)
        print(row(name, out["methods"][name]), flush=True)
    if args.joint:
        part = emoji_xstyle_part(profile, data_root(), train_styles=args.train, test_styles=args.test)
        joint = class_incremental(f"{stream.name}-joint", part, increment=len(stream.classes), seed=args.seed)
        for name in JOINT_METHODS:
            out["joint"][name] = run_one(name, joint, profile, args.seed, args.test)
            print(row(f"joint {name}", out["joint"][name]), flush=True)
    return out


def row(label: str, entry: dict) -> str:
    styles = ", ".join(f"{style} {value:.2f}" for style, value in entry["last_per_test_style"].items())
    return (f"| {label} | {entry['avg']:.2f} | {entry['last']:.2f} | {entry['bwt']:.2f} | {styles} | "
            f"{entry['seconds']:.0f} s |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=_styles, default=XSTYLE_TRAIN, help="training styles, e.g. twitter,google")
    parser.add_argument("--test", type=_styles, default=XSTYLE_TEST, help="test styles, e.g. openmoji,fluent3d")
    parser.add_argument("--methods", type=_styles, default=METHODS, help="comma-separated method names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default="fast", choices=["fast", "cpu", "full"])
    parser.add_argument("--no-joint", dest="joint", action="store_false", help="skip the joint-training reference")
    parser.add_argument("--out", help="write the numbers here as JSON")
    return parser.parse_args(argv)


def _styles(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"cil-emoji-xstyle calibration: train {'+'.join(args.train)}, test {'+'.join(args.test)}, seed {args.seed}, "
          f"profile {args.profile}\n| method | Avg (incremental) | Last | BWT | Last per test style | time |\n"
          "|---|---|---|---|---|---|",
          flush=True)
    out = calibrate(args)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
