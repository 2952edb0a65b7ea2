"""Run profiles: one switch between the fast CPU setting (CI, Binder, a laptop) and the papers' GPU setting.

=========  ==============================================  ===============================================
profile    model                                           data and training
=========  ==============================================  ===============================================
``fast``   ``mini``: the offline pretrained mini-CLIP       a few dozen images per class, a few epochs;
           (MiniLM text tower + ViT at 48 px)               minutes on 2 CPU cores, under 2 GB of memory
``cpu``    ``mini``, as ``fast``                           twice ``fast``'s images per class (train and
                                                           test), same recipe: the "fuller CPU profile" of
                                                           the three-seed tables (about twice as long)
``full``   ``ViT-B-16`` with OpenAI weights (hub download)  all images, 1000 iterations per task, batch 64,
                                                           AdamW + cosine, as in MoE-Adapters' MTIL recipe
=========  ==============================================  ===============================================

Notebooks switch between ``fast`` and ``full``; ``cpu`` is for the command line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

from .train_config import TrainConfig

PROFILE_ENV_VAR = "UNIIL_PROFILE"


@dataclass(frozen=True)
class Profile:
    """Everything that differs between a quick CPU run and a paper-scale GPU run.

    Attributes:
        name: ``"fast"``, ``"cpu"`` or ``"full"``.
        model: model name for :func:`uniil_lib.clip.load_clip`.
        pretrained: hub tag or checkpoint path (None for ``tiny`` / ``mini``).
        train_per_class: training images kept per class and step (None: all).
        test_per_class: test images kept per class (None: all).
        emoji_train_per_class: seeded augmentations per emoji class for training.
        emoji_test_per_class: seeded augmentations per emoji class for testing.
        train: optimisation settings shared by all methods.
        method_lr: per-method learning rates that override ``train.lr``.
    """

    name: str
    model: str
    pretrained: str | None
    train_per_class: int | None
    test_per_class: int | None
    emoji_train_per_class: int
    emoji_test_per_class: int
    train: TrainConfig
    method_lr: Mapping[str, float] = field(default_factory=dict)

    def train_config(self, method: str, *, seed: int, progress: bool = True) -> TrainConfig:
        """The :class:`TrainConfig` for ``method`` with ``seed``."""
        lr = self.method_lr.get(method, self.train.lr)
        return replace(self.train, lr=lr, seed=seed, progress=progress)


def _profiles() -> Mapping[str, Profile]:
    fast = Profile(
        name="fast", model="mini", pretrained=None, train_per_class=40, test_per_class=20,
        emoji_train_per_class=12, emoji_test_per_class=4,
        train=TrainConfig(epochs=12, batch_size=32, lr=1e-3, device="cpu"),
        # 12 epochs: enough for fine-tuning to learn a task and visibly forget it; probes and adapters need a
        # larger step size (what we measured: docs/results_notes.md, fast-profile training).
        # MAGE trains the same adapter experts and gates as MoE-Adapters, so it gets their learning rate.
        method_lr={"finetune": 5e-4, "linear-probe": 1e-2, "adapter": 1e-2, "moe-adapters": 1e-2,
                   "moe-adapters-ddas": 1e-2, "mage": 1e-2, "mage-noattr": 1e-2, "mage-shared": 1e-2},
    )
    cpu = replace(fast, name="cpu", train_per_class=80, test_per_class=40, emoji_train_per_class=24,
                  emoji_test_per_class=8)
    full = Profile(
        name="full", model="ViT-B-16", pretrained="openai", train_per_class=None, test_per_class=None,
        emoji_train_per_class=48, emoji_test_per_class=8,
        train=TrainConfig(iterations=1000, batch_size=64, lr=1e-3, weight_decay=0.0, warmup_steps=100,
                          label_smoothing=0.2, device="cuda", autocast="bf16"),
        method_lr={"finetune": 1e-5},
    )
    return MappingProxyType({"fast": fast, "cpu": cpu, "full": full})


def profile_names() -> list[str]:
    return list(_profiles())


def get_profile(name: str | None = None) -> Profile:
    """The profile ``name``; default: ``$UNIIL_PROFILE`` or ``"fast"``. Unknown names list the valid ones."""
    name = name or os.environ.get(PROFILE_ENV_VAR, "fast")
    profiles = _profiles()
    if name not in profiles:
        raise KeyError(f"unknown profile {name!r}; valid profiles: {', '.join(profiles)}")
    return profiles[name]
