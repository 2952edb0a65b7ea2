"""How much the frozen-block cache speeds up MoE-adapter training, and the GPU training throughput.

    .venv/bin/python benchmarks/frozen_block_cache.py                 # CPU: cache vs plain, side by side
    .venv/bin/python benchmarks/frozen_block_cache.py --gpu           # GPU: paper setting, images/s
    .venv/bin/python benchmarks/frozen_block_cache.py --json out.json # also write the numbers

**CPU mode** (the default). With MoE adapters only in the top ``K`` of ``L`` image blocks, the blocks below
never change, so :class:`uniil_lib.tower_split.FrozenBlockCache` runs them once per image and training
runs only the top ``K`` blocks (likewise for the fixed class prompts in the text tower). This script builds
two ``moe-adapters`` methods on the same model, the same synthetic step and the same batch, one with the
cache and one without (``block_cache=False``: the full forward of both towers), checks that their first
losses agree, and then times training steps (forward + backward + AdamW step) alternately, so both
see the same machine load. Model: open_clip's ``ViT-B-16`` architecture with random weights (12 blocks of
width 768 in the image tower, 12 of width 512 in the text tower), ``K = L / 4 = 3`` blocks adapted in each
tower, 22 experts, top-2, batch 8, 10 classes: the paper's shapes at a batch a CPU can time. Run it on an
idle machine with ``OMP_NUM_THREADS`` set to the cores you mean to use.

**GPU mode** (``--gpu``). ViT-B/16 with random weights in the paper's setting: MoE adapters (22 experts,
top-2) in all 12 blocks of both encoders, batch 64, 100 class prompts encoded every step, bf16 autocast,
AdamW. Prints training throughput in images/s, first with the experts run one after another on their samples
(``dispatch="loop"``, the CPU default) and then batched (``dispatch="batched"``, the CUDA default); then the
same with adapters in the top 3 blocks, with and without the cache. ``--smoke`` shrinks everything (tiny model, few steps) to check the script on any device.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from uniil_lib.adapters import AdapterConfig
from uniil_lib.clip import TinyClipConfig, load_clip
from uniil_lib.data import ArrayImageSet
from uniil_lib.methods import TrainConfig
from uniil_lib.methods.moe_adapters import MoEAdapters
from uniil_lib.scenarios import DatasetPart, class_incremental

SMOKE_MODEL = TinyClipConfig(embed_dim=32, image_size=32, patch_size=8, vision_width=64, vision_layers=4,
                             text_width=32, text_layers=4, heads=2, context_length=16)


@dataclass
class Setting:
    """One timed configuration: model, batch, adapters and cache."""

    label: str
    model: str
    batch: int
    classes: int
    adapters: AdapterConfig
    block_cache: bool


def synthetic_step(n_classes: int, per_class: int, image_size: int, seed: int = 0):
    """A one-step scenario of random images (the content does not matter for timing)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n_classes * per_class, image_size, image_size, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(n_classes), per_class)
    names = [f"class {k}" for k in range(n_classes)]
    data = ArrayImageSet(images, labels, names, key=f"synthetic-{n_classes}-{per_class}-{image_size}-{seed}")
    part = DatasetPart("synthetic", data, data, ("a photo of a {}.",), "synthetic")
    return class_incremental("synthetic", part, increment=n_classes)


def build(setting: Setting, stream, device: str, seed: int = 0) -> MoEAdapters:
    if setting.model == "tiny":
        clip = load_clip("tiny", tiny_config=SMOKE_MODEL, seed=seed, device=device)
    else:
        clip = load_clip(setting.model, seed=seed, device=device)
    config = TrainConfig(batch_size=setting.batch, lr=1e-3, label_smoothing=0.2, seed=seed, device=device,
                         progress=False)
    method = MoEAdapters(clip, stream, config, adapters=setting.adapters, block_cache=setting.block_cache)
    method.before_step(stream.steps[0])
    return method


class Stepper:
    """One method's training step on a fixed batch: loss, backward, AdamW step."""

    def __init__(self, method: MoEAdapters, step, batch: int, autocast: torch.dtype | None):
        self.method, self.step = method, step
        inputs, labels = method.step_inputs(step)
        self.inputs, self.labels = inputs[:batch].to(method.clip.device), labels[:batch].to(method.clip.device)
        self.optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-3)
        device_type = method.clip.device.type
        self.autocast = (torch.autocast(device_type, dtype=autocast) if autocast is not None
                         else contextlib.nullcontext())

    def loss(self) -> torch.Tensor:
        with self.autocast:
            return self.method.training_loss(self.inputs, self.labels, self.step)

    def run(self) -> float:
        """Seconds for one full training step."""
        synchronize(self.method.clip.device)
        started = time.perf_counter()
        loss = self.loss()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        synchronize(self.method.clip.device)
        return time.perf_counter() - started


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare_on_cpu(args) -> dict:
    """Cache vs plain, alternating steps on the same batch; returns medians and the speed-up."""
    model, batch = ("tiny", 4) if args.smoke else (args.model, args.batch)
    adapters = AdapterConfig(image_blocks=0.25, text_blocks=0.25, dispatch=args.dispatch)
    size = SMOKE_MODEL.image_size if args.smoke else 224
    stream = synthetic_step(args.classes, max(1, -(-batch // args.classes)), size)
    steppers = {}
    for cached in (True, False):
        setting = Setting("cached" if cached else "plain", model, batch, args.classes, adapters, cached)
        steppers[setting.label] = Stepper(build(setting, stream, "cpu"), stream.steps[0], batch, None)
    first = {}
    for label, stepper in steppers.items():
        torch.manual_seed(0)
        first[label] = stepper.loss().item()
    if not np.isclose(first["cached"], first["plain"], rtol=1e-4, atol=1e-5):
        raise AssertionError(f"cached and plain losses differ: {first}")
    times = {label: [] for label in steppers}
    for _ in range(args.warmup + args.steps):
        for label, stepper in steppers.items():
            times[label].append(stepper.run())
    medians = {label: statistics.median(t[args.warmup:]) for label, t in times.items()}
    adapted = steppers["cached"].method.adapters.blocks_of("image")
    return {"mode": "cpu", "model": model, "batch": batch, "classes": args.classes, "threads": torch.get_num_threads(),
            "dispatch": args.dispatch,
            "image_blocks_adapted": adapted,
            "first_loss": first, "median_step_seconds": medians, "speedup": medians["plain"] / medians["cached"]}


def throughput_on_gpu(args) -> dict:
    """Images/s of training steps in the paper's setting and with top-3 adapters, with and without the cache."""
    device = args.device or "cuda"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device (or pass --device cpu --smoke to check the script)")
    model, batch, classes = ("tiny", 4, 5) if args.smoke else ("ViT-B-16", 64, 100)
    autocast = torch.bfloat16 if device.startswith("cuda") else None
    settings = [
        Setting("paper: all blocks, both towers, expert loop", model, batch, classes, AdapterConfig(dispatch="loop"), False),
        Setting("paper: all blocks, both towers", model, batch, classes, AdapterConfig(dispatch="batched"), False),
        Setting("top 3 blocks, plain", model, batch, classes, AdapterConfig(image_blocks=3, text_blocks=3), False),
        Setting("top 3 blocks, cached", model, batch, classes, AdapterConfig(image_blocks=3, text_blocks=3), True),
    ]
    size = SMOKE_MODEL.image_size if args.smoke else 224
    stream = synthetic_step(classes, max(1, -(-batch // classes)), size)
    results = {}
    for setting in settings:
        stepper = Stepper(build(setting, stream, device), stream.steps[0], batch, autocast)
        seconds = [stepper.run() for _ in range(args.warmup + args.steps)][args.warmup:]
        results[setting.label] = {"images_per_second": batch / statistics.median(seconds),
                                  "median_step_seconds": statistics.median(seconds),
                                  "trainable_parameters": sum(p.numel() for p in stepper.method.trainable_parameters())}
        del stepper
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    return {"mode": "gpu", "device": name, "model": model, "batch": batch, "classes": classes,
            "autocast": str(autocast), "settings": results}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="GPU throughput in the paper's setting")
    parser.add_argument("--device", help="device for --gpu (default cuda)")
    parser.add_argument("--model", default="ViT-B-16", help="open_clip architecture for CPU mode (random weights)")
    parser.add_argument("--batch", type=int, default=8, help="CPU-mode batch size")
    parser.add_argument("--classes", type=int, default=10, help="CPU-mode classes (prompts per step)")
    parser.add_argument("--dispatch", default="auto", choices=("auto", "loop", "batched"),
                        help="CPU mode: how MoE layers run their experts (auto = the loop on a CPU)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--smoke", action="store_true", help="tiny model, to check the script quickly")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = throughput_on_gpu(args) if args.gpu else compare_on_cpu(args)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
