"""Run profiles: one switch between the fast CPU setting (CI, Binder, a laptop), a free Colab GPU and the papers'
GPU setting.

=========  ==============================================  ===============================================
profile    model                                           data and training
=========  ==============================================  ===============================================
``fast``   ``mini``: the offline pretrained mini-CLIP       a few dozen images per class, a few epochs;
           (MiniLM + EfficientNet-Lite0/ViT hybrid)        minutes on 2 CPU cores, under 2 GB of memory;
                                                           adapters in the top quarter of each tower
``cpu``    ``mini``, as ``fast``                           twice ``fast``'s images per class (train and
                                                           test), same recipe: the "fuller CPU profile" of
                                                           the three-seed tables (about twice as long)
``colab``  ``ViT-B-16`` with OpenAI weights (hub download)  the data and iterations cut so that each notebook
                                                           runs in about 15 minutes on Colab's free T4
                                                           (the arithmetic: ``docs/course.md``); adapters in
                                                           the top quarter of each tower
``full``   ``ViT-B-16`` with OpenAI weights (hub download)  all images, 1000 iterations per task, batch 64,
                                                           AdamW + cosine, as in MoE-Adapters' MTIL recipe,
                                                           with its per-dataset learning rates on ``mtil``
                                                           (:data:`MOE_ADAPTERS_MTIL_LR`); ``moe-adapters-cil``
                                                           with its CIL recipe (one epoch, batch 128);
                                                           adapters in every block (the paper's layout)
=========  ==============================================  ===============================================

Notebooks switch between ``fast``, ``colab`` and ``full`` (``UNIIL_PROFILE``); ``cpu`` is for the command line.

**Profile files.** ``get_profile("my_profile.json")`` (and ``UNIIL_PROFILE=my_profile.json``, and ``benchmark
--profile my_profile.json``) read a profile from a JSON object: a built-in profile to start from (``"base"``,
default ``"full"``) and the fields to change, e.g. the GPU check's (``scripts/gpu_check.sh``)::

    {"base": "full", "name": "gpu-check", "pretrained": "/models/vit-b-16.safetensors",
     "train_per_class": 4, "test_per_class": 2, "emoji_train_per_class": 2, "emoji_test_per_class": 1,
     "train": {"iterations": 3, "warmup_steps": 1}}

The base's per-method and per-step settings are kept; ``train`` replaces fields of the base's training settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .fileio import CorruptFileError, read_json
from .train_config import TrainConfig

PROFILE_ENV_VAR = "UNIIL_PROFILE"


@dataclass(frozen=True)
class Profile:
    """Everything that differs between a quick CPU run and a paper-scale GPU run.

    Attributes:
        name: ``"fast"``, ``"cpu"``, ``"colab"``, ``"full"`` (or a profile file's name).
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
# The methods that train MoE-Adapters4CL's experts and gates with its MTIL recipe, and so take those rates: every
# method built on its per-task MoE layers, MAGE's two controls included (until 2026-12-05 they were missing here and
# trained at the profile's default rate, ten times lower in the fast profile; tests/test_profiles.py now checks
# every such method against this list).
MTIL_RECIPE_METHODS = ("moe-adapters", "moe-adapters-ddas", "moe-adapters-balance", "moe-adapters-ddas-balance",
                       "mage", "mage-noattr", "mage-randwords", "mage-imagefeat", "mage-constant",
                       "mage-bias", "mage-shrunk", "mage-shared")
# MoE-Adapters4CL's class-incremental recipe (cil/continual_clip/models.py line 61: one epoch; lines 85-88: AdamW,
# cosine with 30 warm-up steps; cil/configs/class/cifar100_10-10-MoE-Adapters.yaml lines 20, 34, 39, 40: batch
# 128, weight decay 0, lr 1e-3, label smoothing 0). See uniil_lib/methods/moe_adapters_cil.py.
MOE_ADAPTERS_CIL_TRAIN = MappingProxyType({"epochs": 1, "iterations": None, "batch_size": 128, "lr": 1e-3,
                                          "weight_decay": 0.0, "warmup_steps": 30, "label_smoothing": 0.0})


def _profiles() -> Mapping[str, Profile]:
    fast = Profile(
        name="fast", model="mini", pretrained=None, train_per_class=40, test_per_class=20,
        emoji_train_per_class=12, emoji_test_per_class=4,
        train=TrainConfig(epochs=12, batch_size=32, lr=1e-3, device="cpu", adapter_placement="top-quarter"),
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
                          label_smoothing=0.2, device="cuda", autocast="auto", loader_workers="auto",
                          adapter_placement="all"),
        method_lr={"finetune": 1e-5},
        method_train={"moe-adapters-cil": MOE_ADAPTERS_CIL_TRAIN},
        step_lr={"mtil": (MTIL_RECIPE_METHODS, MOE_ADAPTERS_MTIL_LR)},
    )
    # Colab's free T4: the full profile's model and recipe, cut to fit about 15 minutes per notebook (the
    # projection from measured step times is in docs/course.md). Adapters in the top quarter of each tower: four
    # times cheaper per step than every block, and the frozen-block cache can skip the other blocks.
    # moe-adapters-cil's one-epoch recipe is left out: one epoch of 128-image batches is a batch or two here.
    colab = replace(full, name="colab", train_per_class=COLAB_TRAIN_PER_CLASS, test_per_class=10,
                    emoji_train_per_class=6, emoji_test_per_class=2,
                    train=replace(full.train, iterations=COLAB_ITERATIONS, batch_size=32, warmup_steps=3,
                                  adapter_placement="top-quarter"),
                    method_train={})
    return MappingProxyType({"fast": fast, "cpu": cpu, "colab": colab, "full": full})


# The colab profile's cut (docs/course.md, "Colab"): training images per class, iterations per task.
COLAB_TRAIN_PER_CLASS = 16
COLAB_ITERATIONS = 15
PROFILE_FILE_KEYS = ("base", "name", "model", "pretrained", "train_per_class", "test_per_class",
                     "emoji_train_per_class", "emoji_test_per_class", "train")


class ProfileFileError(ValueError):
    """A profile file that cannot be used; the message names the file and what to change."""


def profile_names() -> list[str]:
    return list(_profiles())


def get_profile(name: str | None = None) -> Profile:
    """The profile ``name`` (or the profile file ``name``, ending in ``.json``: the module docstring); default:
    ``$UNIIL_PROFILE`` or ``"fast"``. Unknown names list the valid ones.

    Raises:
        KeyError: an unknown profile name.
        ProfileFileError: a profile file that cannot be read or used (names the file and the key).
        FileNotFoundError: no such profile file.
    """
    name = name or os.environ.get(PROFILE_ENV_VAR, "fast")
    if str(name).endswith(".json"):
        return load_profile_file(name)
    profiles = _profiles()
    if name not in profiles:
        raise KeyError(f"unknown profile {name!r}; valid profiles: {', '.join(profiles)} (or a profile file, "
                       "some/path.json)")
    return profiles[name]


def load_profile_file(path: str | Path) -> Profile:
    """A :class:`Profile` from a JSON file: ``"base"`` (a built-in profile, default ``"full"``) with the file's
    fields replacing the base's (see the module docstring).

    Raises:
        ProfileFileError: not a JSON object, an unknown key or base, or a value of the wrong type.
    """
    path = Path(path).expanduser()
    try:
        data = read_json(path, fix='a profile file is a JSON object such as {"base": "full", "train_per_class": 4}')
    except CorruptFileError as error:
        raise ProfileFileError(str(error)) from None
    if not isinstance(data, dict):
        raise ProfileFileError(f"{path}: a profile file is a JSON object, e.g. {{\"base\": \"full\"}}")
    unknown = sorted(set(data) - set(PROFILE_FILE_KEYS))
    if unknown:
        raise ProfileFileError(f"{path}: unknown keys {unknown}; valid keys: {list(PROFILE_FILE_KEYS)}")
    base_name = data.get("base", "full")
    if base_name not in _profiles():
        raise ProfileFileError(f"{path}: base {base_name!r} is not a profile; valid: {', '.join(_profiles())}")
    base = _profiles()[base_name]
    changes: dict[str, Any] = {"name": _typed_field(data, "name", (str,), path) or path.stem}
    for key in ("model", "pretrained"):
        if key in data:
            changes[key] = _typed_field(data, key, (str, type(None)), path)
    for key in ("train_per_class", "test_per_class", "emoji_train_per_class", "emoji_test_per_class"):
        if key in data:
            changes[key] = _count(data, key, path, optional=key in ("train_per_class", "test_per_class"))
    return replace(base, **changes, train=_train_changes(base.train, data.get("train", {}), path))


def _typed_field(data: dict, key: str, kinds: tuple[type, ...], path: Path) -> Any:
    value = data.get(key)
    if key in data and not isinstance(value, kinds):
        raise ProfileFileError(f"{path}: {key!r} must be a string, not {value!r}")
    return value


def _count(data: dict, key: str, path: Path, *, optional: bool) -> int | None:
    value = data[key]
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        allowed = "a positive integer or null (all images)" if optional else "a positive integer"
        raise ProfileFileError(f"{path}: {key!r} must be {allowed}, not {value!r}")
    return value


def _train_changes(base: TrainConfig, train: Any, path: Path) -> TrainConfig:
    if not isinstance(train, dict):
        raise ProfileFileError(f"{path}: 'train' must be an object of training settings, not {train!r}")
    valid = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(train) - valid)
    if unknown:
        raise ProfileFileError(f"{path}: unknown train settings {unknown}; valid: {sorted(valid)}")
    try:
        return replace(base, **train)
    except (TypeError, ValueError) as error:
        raise ProfileFileError(f"{path}: train: {error}") from None
