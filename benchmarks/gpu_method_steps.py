"""Training-step and evaluation speed of each method in the full (GPU) profile: the numbers behind the GPU times.

    python benchmarks/gpu_method_steps.py --json gpu_steps.json

For ViT-B/16 with random weights (the time does not depend on the weights; the OpenAI weights cannot be
downloaded on a machine without internet), the full profile's training settings (batch 64, bf16 autocast on
CUDA, AdamW) and a synthetic step of 100 classes, it times, per method, the median of ``--steps`` training
steps (loss, backward, AdamW step) after ``--warmup`` untimed ones, and the images/s of encoding test images
with frozen CLIP. A notebook's or benchmark's full-profile time is then about ``tasks x 1000 x step time``
for training plus ``test images x evaluations / encode rate`` (``docs/course.md`` does this sum per notebook).
MAGE's step is MoE-Adapters' step plus a gate input that is wider by two attribute features (not timed
separately: its attribute pool does not cover synthetic classes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.frozen_block_cache import Stepper, synchronize, synthetic_step
from uniil_lib.clip import load_clip
from uniil_lib.methods import create_method
from uniil_lib.profiles import get_profile

METHODS = ("finetune", "adapter", "moe-adapters", "lowrank-seq")


def time_method(name: str, stream, steps: int, warmup: int, batch: int) -> dict:
    profile = get_profile("full")
    clip = load_clip(profile.model, pretrained=None, seed=0, device="cuda")
    config = replace(profile.train_config(name, seed=0, progress=False), batch_size=batch)
    method = create_method(name, clip, stream, config)
    method.before_step(stream.steps[0])
    stepper = Stepper(method, stream.steps[0], batch, torch.bfloat16)
    seconds = [stepper.run() for _ in range(warmup + steps)][warmup:]
    median = statistics.median(seconds)
    return {"median_step_seconds": round(median, 4), "images_per_second": round(batch / median, 1),
            "trainable_parameters": int(sum(p.numel() for p in method.trainable_parameters()))}


@torch.no_grad()
def encode_rate(batch: int = 256, repeats: int = 10) -> float:
    """Images/s of frozen ViT-B/16 image encoding under bf16 autocast (evaluation and feature caching)."""
    clip = load_clip("ViT-B-16", pretrained=None, seed=0, device="cuda")
    pixels = torch.randn(batch, 3, 224, 224, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(3):
            clip.encode_images(pixels)
        synchronize(clip.device)
        started = time.perf_counter()
        for _ in range(repeats):
            clip.encode_images(pixels)
        synchronize(clip.device)
    return batch * repeats / (time.perf_counter() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not torch.cuda.is_available():
        raise SystemExit("this script times the full profile on CUDA; run it on a machine with an NVIDIA GPU")
    batch = get_profile("full").train.batch_size
    stream = synthetic_step(100, 2, 224)
    report = {"device": torch.cuda.get_device_name(0), "batch": batch, "classes": 100,
              "encode_images_per_second": round(encode_rate(), 1), "methods": {}}
    print("encode", report["encode_images_per_second"], flush=True)
    for name in args.methods.split(","):
        report["methods"][name] = time_method(name, stream, args.steps, args.warmup, batch)
        print(name, report["methods"][name], flush=True)
        torch.cuda.empty_cache()
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
