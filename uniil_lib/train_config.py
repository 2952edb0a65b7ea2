"""The optimisation settings every method trains with: :class:`TrainConfig`.

At the bottom of the package (it imports nothing of uniil_lib), so that :mod:`uniil_lib.profiles` and the
run configurations can build it without importing the methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by all methods.

    Attributes:
        epochs: passes over a step's training data (ignored when ``iterations`` is set).
        iterations: optimiser steps per task (the MoE-Adapters MTIL recipe uses 1000); None: use epochs.
        batch_size: training batch size.
        lr: peak learning rate.
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

    def autocast_context(self):
        """``torch.autocast`` for this config's device and precision (a no-op context on the CPU or when off)."""
        enabled = self.autocast == "bf16" and str(self.device).startswith("cuda")
        return torch.autocast(device_type="cuda" if enabled else "cpu", dtype=torch.bfloat16, enabled=enabled)
