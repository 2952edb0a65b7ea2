"""The optimisation settings every method trains with: :class:`TrainConfig`.

At the bottom of the package (it imports nothing of uniil_lib), so that :mod:`uniil_lib.profiles` and the
run configurations can build it without importing the methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

# Seeds are used as numpy seeds (at most 2**32 - 1) and, times 1000 plus a step index, as torch seeds.
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by all methods.

    Attributes:
        epochs: passes over a step's training data (ignored when ``iterations`` is set).
        iterations: optimiser steps per task (the MoE-Adapters MTIL recipe uses 1000); None: use epochs.
        batch_size: training batch size.
        lr: peak learning rate.
        step_lr: ``{step name: peak learning rate}`` replacing ``lr`` step by step (the MoE-Adapters MTIL
            scripts give every dataset its own rate); None: ``lr`` for every step. A table that lacks a step of
            the stream is an error (:meth:`lr_for`).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps before cosine decay.
        label_smoothing: cross-entropy label smoothing (MoE-Adapters uses 0.2).
        seed: seeds weight init, shuffling and dropout; the same seed gives the same CPU run.
        device: ``"cpu"`` or ``"cuda"``.
        eval_batch_size: batch size for evaluation.
        progress: show tqdm bars.
        autocast: ``"bf16"`` runs training and evaluation forwards under ``torch.autocast`` with bfloat16 on
            CUDA (the papers' mixed precision; weights and optimiser state stay fp32); None: fp32. Ignored on
            the CPU, where bf16 matrix products are far slower than fp32 on the machines we measured.
    """

    epochs: int = 1
    iterations: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    step_lr: Mapping[str, float] | None = None
    weight_decay: float = 0.0
    warmup_steps: int = 0
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 256
    progress: bool = True
    autocast: str | None = None

    def __post_init__(self):
        if self.autocast not in (None, "bf16"):
            raise ValueError(f"autocast must be None or 'bf16', got {self.autocast!r}")
        if self.step_lr is not None and not all(rate > 0 for rate in self.step_lr.values()):
            raise ValueError(f"step_lr rates must be positive, got {dict(self.step_lr)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {self.seed!r}")

    def lr_for(self, step_name: str) -> float:
        """The peak learning rate of the step named ``step_name``: from ``step_lr`` if set, else ``lr``.

        Raises:
            KeyError: ``step_lr`` is set and has no rate for this step (names the steps it has).
        """
        if self.step_lr is None:
            return self.lr
        if step_name not in self.step_lr:
            raise KeyError(f"step_lr has no learning rate for step {step_name!r} (it has {', '.join(self.step_lr)}); "
                           "add one, or set step_lr=None to use lr for every step")
        return float(self.step_lr[step_name])

    def autocast_context(self):
        """``torch.autocast`` for this config's device and precision (a no-op context on the CPU or when off)."""
        enabled = self.autocast == "bf16" and str(self.device).startswith("cuda")
        return torch.autocast(device_type="cuda" if enabled else "cpu", dtype=torch.bfloat16, enabled=enabled)
