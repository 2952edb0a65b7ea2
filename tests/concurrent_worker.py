"""One small continual run, for the concurrency trial of ``test_bad_inputs.py``.

    python tests/concurrent_worker.py CHECKPOINTS OUT.json BARRIER_DIR N

Runs ``linear-probe`` (its features go through the on-disk cache of ``$UNIIL_CACHE``, its steps are
checkpointed into CHECKPOINTS) on a tiny twenty-step stream with the tiny CLIP, and writes the accuracy matrix
to OUT.json. Two of these started at once share the cache and the checkpoint folder, as students on one
course server do; both must finish with the result of a run alone. So that they really write at the same
moments, each waits (after its slow imports) until N workers have announced themselves in BARRIER_DIR.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from uniil_lib.clip import TinyClipConfig, load_clip
from uniil_lib.data import ArrayImageSet
from uniil_lib.methods import TrainConfig, create_method
from uniil_lib.scenarios import DatasetPart, class_incremental
from uniil_lib.train import run_continual

SMALL = TinyClipConfig(embed_dim=32, image_size=16, patch_size=8, vision_width=32, vision_layers=1,
                       text_width=32, text_layers=1, heads=2, context_length=16)


def squares(n_classes: int, per_class: int, *, seed: int) -> ArrayImageSet:
    """Class k is a square of colour k on a noisy gray 16x16 background (as tests/conftest.py draws them)."""
    rng = np.random.default_rng(seed)
    palette = np.random.default_rng(123).integers(0, 256, size=(n_classes, 3))
    images = rng.integers(100, 156, size=(n_classes * per_class, 16, 16, 3)).astype(np.uint8)
    labels = np.repeat(np.arange(n_classes), per_class)
    for i, label in enumerate(labels):
        x, y = rng.integers(0, 5, size=2)
        images[i, y:y + 12, x:x + 12] = palette[label]
    return ArrayImageSet(images, labels, [f"colour {k}" for k in range(n_classes)],
                         key=f"worker-squares-{n_classes}-{per_class}-{seed}")


def run(checkpoints: Path | None) -> list:
    """The accuracy matrix of the run (rows after each step), as nested lists."""
    part = DatasetPart("sq", squares(40, 4, seed=0), squares(40, 2, seed=1), ("a {} square.",), "toy")
    stream = class_incremental("toy-cil", part, increment=2, seed=0)
    clip = load_clip("tiny", tiny_config=SMALL, seed=0)
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-2, seed=0, progress=False)
    method = create_method("linear-probe", clip, stream, config)
    return run_continual(method, stream, checkpoint_dir=checkpoints).matrix.tolist()


def wait_for(barrier: Path, n: int, timeout: float = 240.0) -> None:
    """Announce this worker in ``barrier`` and wait until ``n`` have."""
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + timeout
    while len(list(barrier.iterdir())) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(barrier.iterdir()))} of {n} workers started")
        time.sleep(0.01)


if __name__ == "__main__":
    wait_for(Path(sys.argv[3]), int(sys.argv[4]))
    Path(sys.argv[2]).write_text(json.dumps(run(Path(sys.argv[1]))))
