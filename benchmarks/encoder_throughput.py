"""How fast is the mini-CLIP image encoder on this CPU, and how close to the machine's peak does it run?

Usage::

    python benchmarks/encoder_throughput.py [--threads 2] [--batch-size 64] [--json out.json]
                                            [--weights PATH] [--matmul-size 1536]

Measures, in one process and with the same torch thread count:

1. the fp32 matrix-product peak: GFLOP/s of ``n x n @ n x n`` (``2 n^3`` FLOPs each), the best of
   several repetitions;
2. the image encoder's FLOPs per image, counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix
   products and convolutions; it misses the attention scores on nn.MultiheadAttention's path, and softmax,
   norms and GELU are not counted) and by hand (:func:`vit_flops_per_image`, which adds the attention
   scores); the achieved GFLOP/s use the count by hand;
3. the encoder's throughput (images/s) at the mini resolution, batch 64, fp32, eval mode, no autograd;

and reports the achieved GFLOP/s (FLOPs per image x images/s) against that peak. Run it on an otherwise
idle machine (check ``top``): other processes on the same cores make both numbers meaningless.
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


def encoder_flops_per_image(encoder: torch.nn.Module, image_size: int) -> int:
    """FLOPs of one forward pass of ``encoder`` on one ``(3, S, S)`` image (a multiply-add = 2 FLOPs).

    Counted in train mode: in eval mode without autograd, ``nn.MultiheadAttention`` takes a fused fast
    path (``torch._native_multi_head_attention``) that FlopCounterMode does not see, and the count would
    miss the attention projections (a third of a ViT block's work). The ViT has no dropout, so train
    mode computes the same thing.
    """
    was_training = encoder.training
    encoder.train()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        encoder(torch.randn(1, 3, image_size, image_size))
    encoder.train(was_training)
    return counter.get_total_flops()


def vit_flops_per_image(*, image_size: int, patch_size: int, width: int, layers: int, mlp_ratio: float = 4.0,
                        embed_dim: int) -> int:
    """The same count by hand, for a ViT: per token and block ``2 * (4 + 2 * mlp_ratio) * width^2`` for the
    qkv, output and MLP products, plus ``2 * 2 * tokens * width`` for the attention scores and mixing."""
    patches = (image_size // patch_size) ** 2
    tokens = patches + 1  # plus the class token
    patch_embed = 2 * patches * 3 * patch_size**2 * width
    block = 2 * tokens * (4 + 2 * mlp_ratio) * width**2 + 2 * 2 * tokens**2 * width
    return int(patch_embed + layers * block + 2 * width * embed_dim)


@torch.no_grad()
def images_per_second(encoder: torch.nn.Module, image_size: int, batch_size: int, *, seconds: float = 10.0) -> float:
    """Median-free simple measure: images encoded per second over at least ``seconds`` after two warm-ups."""
    pixels = torch.randn(batch_size, 3, image_size, image_size)
    for _ in range(2):
        encoder(pixels)
    batches, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        encoder(pixels)
        batches += 1
    return batches * batch_size / (time.perf_counter() - began)


def load_encoder(weights: str | None):
    """The mini-CLIP image tower (trained weights if they exist, else the untrained architecture: same speed)."""
    from uniil_lib.mini_clip import WEIGHTS_FILE, MiniClipConfig, build_mini_clip, load_mini_clip, read_config

    path = Path(weights) if weights else WEIGHTS_FILE
    if path.is_file():
        clip = load_mini_clip(path)
        config = read_config(path)
        return clip.model.visual.eval(), config, f"trained ({clip.identity})"
    config = MiniClipConfig()
    return build_mini_clip(config).visual.eval(), config, "untrained architecture (no weights file)"


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
    encoder, config, which = load_encoder(args.weights)
    image_size = config.image_size
    peak = matmul_peak_gflops(args.matmul_size)
    flops = encoder_flops_per_image(encoder, image_size)
    by_hand = vit_flops_per_image(image_size=image_size, patch_size=config.patch_size, width=config.vision_width,
                                  layers=config.vision_layers, embed_dim=config.embed_dim)
    rate = images_per_second(encoder, image_size, args.batch_size, seconds=args.seconds)
    achieved = by_hand * rate / 1e9
    result = {
        "encoder": which, "image_size": image_size, "batch_size": args.batch_size, "dtype": "float32",
        "torch_threads": torch.get_num_threads(), "parameters": sum(p.numel() for p in encoder.parameters()),
        "mflops_per_image": round(flops / 1e6, 1), "mflops_per_image_by_hand": round(by_hand / 1e6, 1), "images_per_second": round(rate, 1),
        "achieved_gflops": round(achieved, 1), "matmul_size": args.matmul_size,
        "matmul_peak_gflops": round(peak, 1), "fraction_of_peak": round(achieved / peak, 3),
        "torch_version": torch.__version__,
    }
    width = max(map(len, result))
    print("\n".join(f"{key:<{width}}  {value}" for key, value in result.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
