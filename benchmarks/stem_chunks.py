"""The mini-CLIP's frozen CNN trunk on an evaluation batch: in one piece or in chunks, side by side.

    .venv/bin/python benchmarks/stem_chunks.py [--batch 256] [--repeats 3]

:meth:`uniil_lib.imagenet_backbone.FrozenCNNStem.trunk` runs ``TRUNK_CHUNK`` images at a time. This script
measures why, in one run on one thread:

- **speed**: the trunk on ``--batch`` random 128-px images in one piece (``_trunk``) and in chunks (``trunk``),
  alternated ``--repeats`` times, best time of each, and the largest difference between the two outputs;
- **memory**: the peak resident set size of a fresh process that loads the mini-CLIP and runs the trunk once
  on the batch, in one piece and in chunks (one subprocess each, so that one peak does not hide the other).

Its last line is one JSON object: ``{"batch": ..., "chunk": ..., "images_per_s": {...}, "peak_rss_gb": {...},
"max_abs_difference": ...}``. Run it with nothing else on the cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PEAK_CODE = """
import resource, sys, torch
torch.set_num_threads(1)
from uniil_lib.clip import load_clip
stem = load_clip("mini").model.visual.stem
pixels = torch.rand(int(sys.argv[1]), 3, 128, 128)
(stem.trunk if sys.argv[2] == "chunks" else stem._trunk)(pixels)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1024**3)
"""


def peak_rss_gb(batch: int, mode: str) -> float:
    """Peak RSS (GB) of a fresh process: the mini-CLIP loaded, the trunk run once on ``batch`` images."""
    out = subprocess.run([sys.executable, "-c", PEAK_CODE, str(batch), mode], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return round(float(out.stdout.strip().splitlines()[-1]), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256, help="images (default: the evaluation batch size)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    # Peaks first, while this process is small: a child's peak RSS starts at its parent's size (the forked
    # copy's pages count until exec, and Linux keeps that high-water mark across exec).
    peaks = {name: peak_rss_gb(args.batch, mode) for name, mode in (("one piece", "whole"), ("chunks", "chunks"))}

    import torch

    from uniil_lib.imagenet_backbone import TRUNK_CHUNK, FrozenCNNStem, load_efficientnet_lite0

    torch.set_num_threads(1)
    stem = FrozenCNNStem(load_efficientnet_lite0())
    pixels = torch.rand(args.batch, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    runs = {"one piece": lambda: stem._trunk(pixels), "chunks": lambda: stem.trunk(pixels)}
    outputs = {name: run() for name, run in runs.items()}  # also the warm-up
    best = {name: float("inf") for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    result = {
        "batch": args.batch, "chunk": TRUNK_CHUNK,
        "images_per_s": {name: round(args.batch / seconds, 1) for name, seconds in best.items()},
        "peak_rss_gb": peaks,
        "max_abs_difference": float((outputs["one piece"] - outputs["chunks"]).abs().max()),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
