"""Where the shipped mini-CLIP loses optdigits: zero-shot top-1 on tuning splits, framed in different ways.

Usage::

    python benchmarks/optdigits_framing.py [--threads 1] > docs/measurements/optdigits_framing.txt

A diagnostic (issue "A stronger offline CLIP", item 4; ``docs/measurements/mini_clip_tuning.md``, eleventh round):
the same images with a border added, cropped or shrunk, to see whether the model fails on a digit's size, its
resolution, or its ink touching the image's edges. Only *train* splits are read (optdigits, MNIST-5k, the 3,000
Fashion-MNIST tuning images of ``benchmarks/mini_clip_tuning.py``); no evaluation set gets preprocessing of its own,
these numbers only locate the failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "data_scripts", REPO / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from evaluate_mini_clip import zero_shot_accuracy  # noqa: E402
from mini_clip_tuning import train_split_tuning_sets  # noqa: E402

from uniil_lib.clip import load_clip  # noqa: E402
from uniil_lib.data.base import ArrayImageSet  # noqa: E402


def resized(images: np.ndarray, side: int, resample=Image.Resampling.BOX) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(im).resize((side, side), resample)) for im in images])


def variants(name: str, images: np.ndarray):
    """``(label, images)`` of every framing measured for data set ``name``."""
    yield "as it is", images
    if name == "optdigits-train":
        for p in (1, 2, 3):
            yield f"{p}-pixel black border", np.pad(images, ((0, 0), (p, p), (p, p)))
        yield "one black row above and below only", np.pad(images, ((0, 0), (1, 1), (0, 0)))
        yield "one black column left and right only", np.pad(images, ((0, 0), (0, 0), (1, 1)))
        yield "1-pixel border repeating the edge pixels", np.pad(images, ((0, 0), (1, 1), (1, 1)), mode="edge")
        yield "shrunk to 6x6 inside the 8x8 frame", np.pad(resized(images, 6, Image.Resampling.BILINEAR),
                                                           ((0, 0), (1, 1), (1, 1)))
    elif name == "mnist-5k-train":
        for side in (8, 12, 16):
            yield f"shrunk to {side}x{side}", resized(images, side)
        yield "cropped to its central 20x20 (the digit touches the edges)", images[:, 4:24, 4:24]
    else:
        for p in (2, 4, 8):
            yield f"{p}-pixel black border", np.pad(images, ((0, 0), (p, p), (p, p)))
        yield "inverted", 255 - images


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clip = load_clip("mini")
    sets = {key: (imageset, templates) for key, imageset, templates in train_split_tuning_sets(None)}
    print("| tuning split | framing | zero-shot top-1 % |\n|---|---|---|")
    for name in ("optdigits-train", "mnist-5k-train", "fashion-mnist-train"):  # the stored output's order
        imageset, templates = sets[name]
        images = np.stack([np.asarray(imageset[i][0].convert("L")) for i in range(len(imageset))])
        labels = np.asarray([imageset[i][1] for i in range(len(imageset))])
        for label, framed in variants(name, images):
            data = ArrayImageSet(framed, labels, imageset.class_names, key=f"framing/{name}/{label}")
            top1 = zero_shot_accuracy(clip, data, templates)["top1"]
            print(f"| {name} | {label} | {top1:.2f} |", flush=True)


if __name__ == "__main__":
    main()
