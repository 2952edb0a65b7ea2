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
                                                           AdamW + cosine, as in MoE-Adapters' MTIL recipe,
                                                           with its per-dataset learning rates on ``mtil``
                                                           (:data:`MOE_ADAPTERS_MTIL_LR`); ``moe-adapters-cil``
                                                           with its CIL recipe (one epoch, batch 128)
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
        method_train: per-method settings that override any field of ``train`` (after ``method_lr``), for
            methods whose paper recipe differs from the profile's (``moe-adapters-cil``).
        step_lr: per-scenario learning-rate tables: ``{scenario: (methods, {step name: lr})}``; the listed
            methods train each step of that scenario at its own rate (:attr:`TrainConfig.step_lr`).
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
    method_train: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    step_lr: Mapping[str, tuple[tuple[str, ...], Mapping[str, float]]] = field(default_factory=dict)

    def train_config(self, method: str, *, seed: int, progress: bool = True, scenario: str | None = None) -> TrainConfig:
        """The :class:`TrainConfig` for ``method`` with ``seed``; with ``scenario`` (a named scenario, or a prefix
        of one such as ``"mtil[:3]"``) the step learning rates this profile has for that method there."""
        settings = {"lr": self.method_lr.get(method, self.train.lr), **self.method_train.get(method, {})}
        config = replace(self.train, seed=seed, progress=progress, **settings)
        methods, rates = self.step_lr.get(_base_scenario(scenario), ((), {}))
        return replace(config, step_lr=dict(rates)) if method in methods else config


def _base_scenario(name: str | None) -> str | None:
    """``"mtil[:3]"`` -> ``"mtil"`` (:meth:`uniil_lib.scenarios.Scenario.prefix` names a prefix so)."""
    return None if name is None else name.split("[:", 1)[0]


# The learning rate of every MTIL dataset in MoE-Adapters4CL's full-shot training script
# (JiazuoYu/MoE-Adapters4CL, mtil/scripts/train/train_full_shot_router11_experts22_1000iters.sh, line 11 `lr=(...)`,
# in the order of its line 10 `dataset=(...)`, which is ZSCL's order I: uniil_lib.named_scenarios.MTIL_ORDER_I).
MOE_ADAPTERS_MTIL_LR = MappingProxyType({
    "aircraft": 5e-3, "caltech101": 1e-3, "cifar100": 5e-3, "dtd": 1e-3, "eurosat": 1e-4, "flowers102": 1e-3,
    "food101": 1e-3, "mnist": 1e-4, "oxford-pets": 1e-3, "stanford-cars": 1e-3, "sun397": 1e-3,
})
# The methods that train MoE-Adapters4CL's experts and gates with its MTIL recipe, and so take those rates.
MTIL_RECIPE_METHODS = ("moe-adapters", "moe-adapters-ddas", "moe-adapters-balance", "moe-adapters-ddas-balance",
                       "mage", "mage-noattr", "mage-shared")
# MoE-Adapters4CL's class-incremental recipe (cil/continual_clip/models.py line 61: one epoch; lines 85-88: AdamW,
# cosine with 30 warm-up steps; cil/configs/class/cifar100_10-10-MoE-Adapters.yaml lines 20, 34, 39, 40: batch
# 128, weight decay 0, lr 1e-3, label smoothing 0). See uniil_lib/methods/moe_adapters_cil.py.
MOE_ADAPTERS_CIL_TRAIN = MappingProxyType({"epochs": 1, "iterations": None, "batch_size": 128, "lr": 1e-3,
                                          "weight_decay": 0.0, "warmup_steps": 30, "label_smoothing": 0.0})


def _profiles() -> Mapping[str, Profile]:
    fast = Profile(
        name="fast", model="mini", pretrained=None, train_per_class=40, test_per_class=20,
        emoji_train_per_class=12, emoji_test_per_class=4,
        train=TrainConfig(epochs=12, batch_size=32, lr=1e-3, device="cpu"),
        # 12 epochs: enough for fine-tuning to learn a task and visibly forget it; probes and adapters need a
        # larger step size (what we measured: docs/results_notes.md, fast-profile training).
        # MAGE trains the same adapter experts and gates as MoE-Adapters, so it gets their learning rate.
        # moe-adapters-cil keeps its paper's structure at the fast profile's data budget (12 epochs of batch 32,
        # this rate): one epoch of 12 images per class is one or two batches per step (moe_adapters_cil.py).
        method_lr={"finetune": 5e-4, "linear-probe": 1e-2, "adapter": 1e-2,
                   **{name: 1e-2 for name in (*MTIL_RECIPE_METHODS, "moe-adapters-cil")}},
    )
    cpu = replace(fast, name="cpu", train_per_class=80, test_per_class=40, emoji_train_per_class=24,
                  emoji_test_per_class=8)
    full = Profile(
        name="full", model="ViT-B-16", pretrained="openai", train_per_class=None, test_per_class=None,
        emoji_train_per_class=48, emoji_test_per_class=8,
        train=TrainConfig(iterations=1000, batch_size=64, lr=1e-3, weight_decay=0.0, warmup_steps=100,
                          label_smoothing=0.2, device="cuda", autocast="bf16"),
        method_lr={"finetune": 1e-5},
        method_train={"moe-adapters-cil": MOE_ADAPTERS_CIL_TRAIN},
        step_lr={"mtil": (MTIL_RECIPE_METHODS, MOE_ADAPTERS_MTIL_LR)},
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
