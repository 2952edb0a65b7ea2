"""The Python half of ``scripts/gpu_check.sh``: prepare a GPU check, and summarise what it measured.

    python benchmarks/gpu_check.py prepare --out DIR [--weights VIT_B16_FILE]   # weights file + profile file
    python benchmarks/gpu_check.py methods                                       # every method, comma-separated
    python benchmarks/gpu_check.py summarise --out DIR                           # step times from the benchmark

``prepare`` checks that CUDA is there (the check is about the GPU path), makes sure a local ViT-B/16 weights file
exists (the one given, else random weights saved to ``DIR/vit-b-16-random.safetensors``: step times do not depend on
the weights, and a machine without internet cannot fetch OpenAI's), and writes ``DIR/gpu-check-profile.json``: the
full profile (GPU, ViT-B/16 from that file, every adapter in every block, mixed precision by the hardware, loader
workers) with small data and :data:`ITERATIONS` iterations per step, so that every method and every notebook runs the
full-profile code path in minutes.

``summarise`` reads the benchmark's result (``DIR/benchmark.json``) and writes ``DIR/step_times.json``: per method,
the median over steps of the median training-iteration time measured inside ``learn()``, with the device and the
precision used.

``merge`` joins the one-method results ``DIR/methods/NAME.json`` (the shell script runs each method in its own
``benchmark`` call, so a method stopped at its time limit loses only itself) into ``DIR/benchmark.json``, and lists
the methods without a result under ``"not_finished"``. The first GPU run (one H200, 2026-12-04,
``docs/measurements/gpu_check/README.md``) ran all methods in one call and lost every unfinished one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ITERATIONS = 6  # per step: the first pays for warm-up, the median of the other five is the step time
PROFILE_FILE = "gpu-check-profile.json"
RESULT_FILE = "benchmark.json"
METHODS_FOLDER = "methods"  # one benchmark result per method: methods/NAME.json
STEP_TIMES_FILE = "step_times.json"


def check_profile(weights: Path) -> dict:
    """The GPU check's profile file contents (see the module docstring)."""
    return {"base": "full", "name": "gpu-check", "pretrained": str(weights.resolve()),
            "train_per_class": 4, "test_per_class": 2, "emoji_train_per_class": 2, "emoji_test_per_class": 1,
            "train": {"iterations": ITERATIONS, "warmup_steps": 1}}


def prepare(out: Path, weights: Path | None, *, model: str = "ViT-B-16", allow_cpu: bool = False) -> Path:
    """Check CUDA, make sure a weights file exists, write the profile file; returns the profile file.

    Raises:
        SystemExit: no CUDA device (unless ``allow_cpu``, for tests), or a weights file that does not exist.
    """
    import torch

    if not torch.cuda.is_available() and not allow_cpu:
        raise SystemExit("error: the GPU check needs an NVIDIA GPU with CUDA (torch.cuda.is_available() is False); "
                         "run it on a GPU machine")
    out.mkdir(parents=True, exist_ok=True)
    if weights is None:
        weights = out / "vit-b-16-random.safetensors"
        if not weights.is_file():
            _save_random_weights(model, weights)
    elif not weights.is_file():
        raise SystemExit(f"error: the weights file {weights} does not exist; pass an open_clip {model} checkpoint "
                         "(.safetensors or .pt), or none for random weights")
    path = out / PROFILE_FILE
    path.write_text(json.dumps(check_profile(weights), indent=1) + "\n", encoding="utf-8")
    return path


def _save_random_weights(model: str, path: Path) -> None:
    from safetensors.torch import save_file

    from uniil_lib.clip import load_clip

    clip = load_clip(model, pretrained=None, seed=0)
    save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()}, str(path))


def all_methods() -> list[str]:
    from uniil_lib.methods import method_names

    return list(method_names())


def merge(out: Path, methods: list[str]) -> dict:
    """Join ``out/methods/NAME.json`` of every method in ``methods`` into ``out/benchmark.json`` (returned); the
    methods without a result are listed under ``"not_finished"``.

    Raises:
        SystemExit: no method has a result (nothing to summarise).
    """
    merged, missing = None, []
    for name in methods:
        path = out / METHODS_FOLDER / f"{name}.json"
        if not path.is_file():
            missing.append(name)
            continue
        result = json.loads(path.read_text(encoding="utf-8"))
        if merged is None:
            merged = {**result, "methods": {}}
        merged["methods"].update(result["methods"])
    if merged is None:
        raise SystemExit(f"error: no method finished: {out / METHODS_FOLDER} holds no result; see the logs beside it")
    merged["not_finished"] = missing
    (out / RESULT_FILE).write_text(json.dumps(merged, indent=1) + "\n", encoding="utf-8")
    return merged


def summarise(out: Path) -> dict:
    """Per method: the median over steps of the median iteration time inside ``learn()`` (see the module
    docstring); written to ``DIR/step_times.json`` and returned."""
    result = json.loads((out / RESULT_FILE).read_text(encoding="utf-8"))
    methods = {}
    for name, entry in result["methods"].items():
        per_step = [v for v in entry.get("median_iteration_seconds", {}).values() if v is not None]
        methods[name] = {"median_iteration_seconds": round(statistics.median(per_step), 5) if per_step else None,
                         "steps": len(per_step), "device": entry.get("device"), "precision": entry.get("precision"),
                         "adapter_placement": entry.get("adapter_placement")}
    summary = {"scenario": result["scenario"], "profile": result["profile"], "model": result["model"],
               "iterations_per_step": ITERATIONS, "methods": methods,
               "not_finished": result.get("not_finished", [])}
    (out / STEP_TIMES_FILE).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ready = commands.add_parser("prepare")
    ready.add_argument("--out", type=Path, required=True)
    ready.add_argument("--weights", type=Path, default=None)
    ready.add_argument("--model", default="ViT-B-16")
    ready.add_argument("--allow-cpu", action="store_true", help="for tests of the script itself")
    commands.add_parser("methods")
    report = commands.add_parser("summarise")
    report.add_argument("--out", type=Path, required=True)
    join = commands.add_parser("merge")
    join.add_argument("--out", type=Path, required=True)
    join.add_argument("--methods", required=True, help="comma-separated, as `methods` prints them")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        print(prepare(args.out, args.weights, model=args.model, allow_cpu=args.allow_cpu))
    elif args.command == "methods":
        print(",".join(all_methods()))
    elif args.command == "merge":
        merged = merge(args.out, args.methods.split(","))
        print(f"{len(merged['methods'])} methods finished; not finished: {', '.join(merged['not_finished']) or 'none'}")
    else:
        summary = summarise(args.out)
        for name, entry in summary["methods"].items():
            print(f"{name:<28} {entry['median_iteration_seconds']} s/iteration  {entry['precision']}")
        for name in summary["not_finished"]:
            print(f"{name:<28} not finished (see methods/{name}.log)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
