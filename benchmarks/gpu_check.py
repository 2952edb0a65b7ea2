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
               "iterations_per_step": ITERATIONS, "methods": methods}
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
    args = parser.parse_args(argv)
    if args.command == "prepare":
        print(prepare(args.out, args.weights, model=args.model, allow_cpu=args.allow_cpu))
    elif args.command == "methods":
        print(",".join(all_methods()))
    else:
        summary = summarise(args.out)
        for name, entry in summary["methods"].items():
            print(f"{name:<28} {entry['median_iteration_seconds']} s/iteration  {entry['precision']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
