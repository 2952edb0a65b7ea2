"""Peak host memory of the full profile's code path, on the CPU: all training images of a named offline scenario.

    python benchmarks/full_profile_memory.py --scenario uniil-offline [--methods finetune] [--iterations 2]
        [--batch-size 8] [--test-per-class 1] [--steps K] [--train-per-class N] [--weights FILE]

It runs the full profile's path (ViT-B/16, every image of every step, the full profile's data loading,
adapter placement and training loop) with these differences, all of them CPU time savers that do not change what
the data path keeps in memory: the model's weights are random and saved to a local safetensors file first, then
loaded through the real local-checkpoint path (``load_clip("ViT-B-16", pretrained="/path/file.safetensors")``);
the run is on the CPU; each step trains ``--iterations`` iterations of ``--batch-size`` images; the test sets keep
``--test-per-class`` images per class. The training sets are complete: every image of every step is in the stream
the trainer draws its batches from.

The last line printed is one JSON object: ``{"scenario", "images" (training images in the stream), "peak_rss_gb"
(the process's peak resident memory, GB = 1e9 bytes), ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from uniil_lib.benchmark import run_benchmark  # noqa: E402
from uniil_lib.clip import load_clip  # noqa: E402
from uniil_lib.named_scenarios import build_scenario, get_named_scenario  # noqa: E402
from uniil_lib.profiles import get_profile  # noqa: E402


def random_weights_file(model: str, path: Path) -> Path:
    """``model`` with random weights (seed 0), saved as safetensors at ``path`` (kept for later runs)."""
    if not path.is_file():
        clip = load_clip(model, pretrained=None, seed=0)
        state = {k: v.contiguous() for k, v in clip.model.state_dict().items()}
        save_file(state, str(path))
        del clip, state
    return path


def peak_rss_gb() -> float:
    """This process's peak resident set size so far, in GB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def memory_profile(args):
    """The full profile on the CPU, with the test sets cut and the iterations and batch of the options."""
    full = get_profile("full")
    train = replace(full.train, device="cpu", iterations=args.iterations, batch_size=args.batch_size,
                    warmup_steps=1, eval_batch_size=args.batch_size, progress=False)
    return replace(full, name="full-memory", train_per_class=args.train_per_class,
                   test_per_class=args.test_per_class, train=train, method_train={})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="uniil-offline")
    parser.add_argument("--methods", default="finetune")
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--test-per-class", type=int, default=1)
    parser.add_argument("--train-per-class", type=int, default=None, help="default: all training images")
    parser.add_argument("--steps", type=int, default=None, help="only the first STEPS steps (default: all)")
    parser.add_argument("--weights", type=Path, default=None, help="where the random weights file is kept")
    args = parser.parse_args(argv)
    if not get_named_scenario(args.scenario).offline:
        raise SystemExit(f"{args.scenario} needs downloaded data; name an offline scenario (python -m uniil_lib list)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        weights = random_weights_file(args.model, args.weights or Path(folder) / f"{args.model}-random.safetensors")
        profile = memory_profile(args)
        stream = build_scenario(args.scenario, profile=profile, seed=0)
        stream = stream.prefix(args.steps) if args.steps else stream
        result = run_benchmark(stream, [m for m in args.methods.split(",") if m], profile=profile, seed=0,
                               progress=False, model=args.model, pretrained=str(weights))
    report = {"scenario": stream.name, "images": sum(len(step.train) for step in stream.steps),
              "peak_rss_gb": round(peak_rss_gb(), 3), "test_images": sum(len(step.test) for step in stream.steps),
              "methods": list(result["methods"]), "model": result["model"], "iterations_per_step": args.iterations,
              "batch_size": args.batch_size, "threads": torch.get_num_threads(),
              "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
