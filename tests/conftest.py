"""Shared fixtures: an isolated cache, offline hub settings, and a tiny synthetic image dataset."""

from __future__ import annotations

import os

import numpy as np
import pytest

# open_clip / huggingface_hub must never wait on the network in tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty feature cache."""
    monkeypatch.setenv("UNIIL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def colour_squares(n_classes: int, per_class: int, *, seed: int, size: int = 16):
    """A learnable toy dataset: class k is a square of colour k on a noisy gray background."""
    from uniil_lib.data import ArrayImageSet

    rng = np.random.default_rng(seed)
    palette = np.random.default_rng(123).integers(0, 256, size=(n_classes, 3))
    images = rng.integers(100, 156, size=(n_classes * per_class, size, size, 3)).astype(np.uint8)
    labels = np.repeat(np.arange(n_classes), per_class)
    for i, label in enumerate(labels):
        x, y = rng.integers(0, size // 4 + 1, size=2)
        images[i, y : y + 3 * size // 4, x : x + 3 * size // 4] = palette[label]
    names = [f"colour {k}" for k in range(n_classes)]
    return ArrayImageSet(images, labels, names, key=f"squares-{n_classes}-{per_class}-{seed}")


@pytest.fixture
def squares():
    return colour_squares
