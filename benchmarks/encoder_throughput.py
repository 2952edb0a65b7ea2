"""How fast is the mini-CLIP image encoder on this CPU, and how close to the machine's peak does it run?

Usage::

    python benchmarks/encoder_throughput.py [--threads 2] [--batch-size 64] [--json out.json]
                                            [--weights PATH] [--matmul-size 1536]

Measures, in one process and with the same torch thread count:

1. the fp32 matrix-product peak: GFLOP/s of ``n x n @ n x n`` (``2 n^3`` FLOPs each), the best of
   several repetitions;
2. FLOPs per image of the two parts of the image tower (version 2): the frozen EfficientNet-Lite0 stem
   (convolutions) and the trainable transformer part (token projection, blocks, head), counted by
   ``torch.utils.flop_counter.FlopCounterMode`` in train mode (so nn.MultiheadAttention's fused eval path
   does not hide its projections; the attention scores of that path are still missed, a few percent here);
3. the throughput (images/s) of each part and of the whole tower at the mini resolution, batch 64, fp32,
   eval mode, no autograd, stem cache off (the stem runs once per image in real use: the transformer part
   is what training and evaluation repeat);

and reports achieved GFLOP/s (FLOPs per image x images/s) against that peak. Depthwise convolutions
reach a far smaller share of the matrix-product peak than matrix products do; that is why the stem runs
once per image and is cached. Run it on an otherwise idle machine (check ``top``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def matmul_peak_gflops(size: int, *, repeats: int = 10) -> float:
    """Best fp32 GFLOP/s over ``repeats`` products of two ``size x size`` matrices."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up: thread pool start, caches
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - began)
    return 2 * size**3 / best / 1e9


def flops_per_image(module: torch.nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward of ``module`` on ``example`` (a batch of one; a multiply-add = 2 FLOPs)."""
    was_training = module.training
    module.train()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(example)
    module.train(was_training)
    return counter.get_total_flops()


@torch.no_grad()
def items_per_second(module: torch.nn.Module, batch: torch.Tensor, *, seconds: float = 10.0) -> float:
    """Items of ``batch`` processed per second over at least ``seconds``, after two warm-up calls."""
    for _ in range(2):
        module(batch)
    batches, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        module(batch)
        batches += 1
    return batches * len(batch) / (time.perf_counter() - began)


class TransformerPart(torch.nn.Module):
    """What runs on cached stem features: head conv, token projection, blocks, pooling, projection."""

    def __init__(self, visual):
        super().__init__()
        self.visual = visual

    def forward(self, trunk: torch.Tensor) -> torch.Tensor:
        visual = self.visual
        return visual.pool_project(visual.transformer(visual.tokens(visual.stem.head(trunk))))


def load_tower(weights: str | None):
    """The mini-CLIP image tower without its stem cache (trained weights if they exist: same speed either way)."""
    from uniil_lib.mini_clip import WEIGHTS_FILE, MiniClipConfig, build_mini_clip, load_mini_clip

    path = Path(weights) if weights else WEIGHTS_FILE
    try:
        clip = load_mini_clip(path, stem_cache=False)
        return clip.model.visual.eval(), f"trained ({clip.identity})"
    except Exception as error:  # no or other weights: the architecture runs at the same speed
        return build_mini_clip(MiniClipConfig()).visual.eval(), f"untrained architecture ({error.__class__.__name__})"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--matmul-size", type=int, default=1536)
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time of the throughput test")
    parser.add_argument("--weights", default=None, help="mini-CLIP weights file (default: the shipped one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    tower, which = load_tower(args.weights)
    size = tower.image_size
    pixels = torch.randn(args.batch_size, 3, size, size)
    trunk = tower.stem.trunk(pixels)
    part = TransformerPart(tower)
    peak = matmul_peak_gflops(args.matmul_size)
    flops = {"stem": flops_per_image(tower.stem, pixels[:1]), "transformer": flops_per_image(part, trunk[:1])}
    rates = {"stem": items_per_second(tower.stem, pixels, seconds=args.seconds),
             "transformer": items_per_second(part, trunk, seconds=args.seconds),
             "whole": items_per_second(tower, pixels, seconds=args.seconds)}
    flops["whole"] = flops["stem"] + flops["transformer"]
    result = {"encoder": which, "image_size": size, "batch_size": args.batch_size, "dtype": "float32",
              "torch_threads": torch.get_num_threads(), "matmul_size": args.matmul_size,
              "matmul_peak_gflops": round(peak, 1), "torch_version": torch.__version__}
    for name in ("stem", "transformer", "whole"):
        achieved = flops[name] * rates[name] / 1e9
        result[name] = {"mflops_per_image": round(flops[name] / 1e6, 1), "images_per_second": round(rates[name], 1),
                        "achieved_gflops": round(achieved, 1), "fraction_of_peak": round(achieved / peak, 3)}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
