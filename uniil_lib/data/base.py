"""The one data type every source returns: a labelled set of images.

Every dataset in uniil_lib, offline or online, is turned into an :class:`ImageSet`: images, integer
labels in ``[0, len(class_names))``, the class names, and a ``key`` that identifies the exact data (used
by the feature cache, so it must change whenever the images do).

Two storage backends share one interface:

- :class:`ArrayImageSet` holds small datasets in memory as one ``uint8`` array (Fashion-MNIST, digits,
  emoji). Fast, picklable, and cheap to subset.
- :class:`FunctionImageSet` reads each image on demand through a function (folder-based datasets such as
  DTD or SUN397 that are too big to hold in memory).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from ..integrity import content_digest  # noqa: F401  (the one content-digest helper; imported from here too)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk; the message names the data_scripts command that fetches it."""


class ImageSet:
    """Interface: ``len(s)``, ``s[i] -> (PIL.Image in RGB, int label)``, ``labels``, ``class_names``, ``key``."""

    labels: np.ndarray
    class_names: list[str]
    key: str

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        raise NotImplementedError

    def subset(self, indices: Sequence[int], *, tag: str) -> "ImageSet":
        """Return the images at ``indices``; ``tag`` names the selection in the cache key."""
        raise NotImplementedError

    def per_class_subset(self, n_per_class: int, *, seed: int = 0) -> "ImageSet":
        """Keep at most ``n_per_class`` images of each class, chosen with a seeded generator."""
        rng = np.random.default_rng(seed)
        keep: list[int] = []
        for label in np.unique(self.labels):
            members = np.flatnonzero(self.labels == label)
            if len(members) > n_per_class:
                members = np.sort(rng.choice(members, size=n_per_class, replace=False))
            keep.extend(members.tolist())
        return self.subset(sorted(keep), tag=f"pc{n_per_class}s{seed}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key={self.key!r}, n={len(self)}, classes={len(self.class_names)})"


def _to_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


class ArrayImageSet(ImageSet):
    """Images held in memory as a ``uint8`` array of shape ``(N, H, W)`` or ``(N, H, W, C)``.

    Args:
        images: the pixels; grayscale ``(N, H, W)`` is expanded to RGB when an item is read.
        labels: ``(N,)`` integer labels indexing ``class_names``.
        class_names: human-readable class names, used to build zero-shot prompts.
        key: identifies this exact data for caches (e.g. ``"fashion-mnist/test"``).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *, key: str):
        images = np.asarray(images)
        labels = np.asarray(labels, dtype=np.int64)
        if images.dtype != np.uint8:
            raise TypeError(f"{key}: images must be uint8 pixels, got dtype {images.dtype}")
        if images.ndim not in (3, 4) or len(images) != len(labels):
            raise ValueError(
                f"{key}: expected images (N,H,W[,C]) and labels (N,), got {images.shape} and {labels.shape}"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise ValueError(f"{key}: labels must lie in [0, {len(class_names)}), got {labels.min()}..{labels.max()}")
        self.images = images
        self.labels = labels
        self.class_names = list(class_names)
        self.key = key

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        pixels = self.images[index]
        if pixels.ndim == 3 and pixels.shape[-1] == 1:
            pixels = pixels[..., 0]
        mode = "L" if pixels.ndim == 2 else ("RGBA" if pixels.shape[-1] == 4 else "RGB")
        return _to_rgb(Image.fromarray(pixels, mode=mode)), int(self.labels[index])

    def subset(self, indices: Sequence[int], *, tag: str) -> "ArrayImageSet":
        idx = np.asarray(indices, dtype=np.int64)
        return ArrayImageSet(self.images[idx], self.labels[idx], self.class_names, key=subset_key(self.key, tag, idx))


def subset_key(parent: str, tag: str, indices: Sequence[int]) -> str:
    """The cache key of a subset: the parent's key, the tag, and a digest of the exact indices kept.

    The digest matters: the same tag (e.g. a step name such as ``"emoji-twitter 0-9:test"``) selects other
    images under another seed, and those must not share cached features.
    """
    digest = hashlib.sha1(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:10]
    return f"{parent}[{tag}#{digest}]"


@dataclass
class FunctionImageSet(ImageSet):
    """Images read on demand: ``load(i)`` returns the i-th image (a PIL image).

    Args:
        load: function from an index in ``[0, len(labels))`` to a PIL image.
        labels: ``(N,)`` integer labels.
        class_names: human-readable class names.
        key: identifies this exact data for caches.
    """

    load: Callable[[int], Image.Image]
    labels: np.ndarray
    class_names: list[str]
    key: str

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return _to_rgb(self.load(int(index))), int(self.labels[index])

    def subset(self, indices: Sequence[int], *, tag: str) -> "FunctionImageSet":
        idx = [int(i) for i in indices]
        parent_load = self.load
        return FunctionImageSet(
            load=lambda i: parent_load(idx[i]),
            labels=self.labels[idx],
            class_names=self.class_names,
            key=subset_key(self.key, tag, idx),
        )
