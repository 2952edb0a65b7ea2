"""The optimisation settings every method trains with: :class:`TrainConfig`.

At the bottom of the package (it imports nothing of uniil_lib), so that :mod:`uniil_lib.profiles` and the
run configurations can build it without importing the methods.

**Precision follows the hardware** (:func:`choose_precision`, our rule): on the CPU everything runs in fp32 (bf16
matrix products are hundreds of times slower than fp32 on the CPUs we measured); on a GPU with native bf16 (compute
capability 8.0 and up: A100, H100, L4, RTX 30xx and later) training and evaluation forwards run under bf16
autocast, the papers' mixed precision; on older GPUs (Colab's T4 is 7.5) under fp16 autocast with a gradient
scaler, since fp16's narrow range would otherwise flush small gradients to zero. Weights and optimiser state stay
fp32 in every case.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import torch

PRECISIONS = (None, "auto", "bf16", "fp16")
ADAPTER_PLACEMENTS = ("top-quarter", "all")

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
        device: ``"cpu"``, ``"cuda"`` (the current GPU) or ``"cuda:N"``.
        eval_batch_size: batch size for evaluation.
        progress: show tqdm bars.
        autocast: mixed precision on a GPU: ``"auto"`` (bf16 where the GPU has it natively, else fp16 with a
            gradient scaler: the module docstring), ``"bf16"``, ``"fp16"``, or None (fp32). The CPU always runs
            fp32, whatever this says.
        loader_workers: processes that decode and preprocess images for a training step or an evaluation
            (:mod:`uniil_lib.pixels`); ``"auto"``: none on the CPU, one fewer than the cores (at most 8) on a GPU.
            Never changes a result.
        pixel_buffer_bytes: a step's or an evaluation's images are preprocessed once when they fit in this many
            bytes, else batch by batch (:mod:`uniil_lib.pixels`). Never changes a result.
        adapter_placement: which blocks adapter methods put their adapters in (unless a method is given its own
            ``AdapterConfig``): ``"top-quarter"`` (the last quarter of each tower's blocks, at least one: the fast
            CPU layout, which lets the frozen-block cache skip the rest) or ``"all"`` (every block of both towers,
            MoE-Adapters4CL's layout). A profile setting, recorded with every result: a method's name names one
            model whatever the device.
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
    autocast: str | None = "auto"
    loader_workers: int | str = 0
    pixel_buffer_bytes: int = 256 * 2**20
    adapter_placement: str = "top-quarter"

    def __post_init__(self):
        if self.autocast not in PRECISIONS:
            raise ValueError(f"autocast must be one of {PRECISIONS}, got {self.autocast!r}")
        if self.adapter_placement not in ADAPTER_PLACEMENTS:
            raise ValueError(f"adapter_placement must be one of {ADAPTER_PLACEMENTS}, got {self.adapter_placement!r}")
        workers = self.loader_workers
        if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
            raise ValueError(f"loader_workers must be an integer >= 0 or 'auto', got {workers!r}")
        if isinstance(self.pixel_buffer_bytes, bool) or not isinstance(self.pixel_buffer_bytes, int) \
                or self.pixel_buffer_bytes < 0:
            raise ValueError(f"pixel_buffer_bytes must be an integer >= 0, got {self.pixel_buffer_bytes!r}")
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

    def precision(self) -> str:
        """``"fp32"``, ``"bf16"`` or ``"fp16"``: what :attr:`autocast` means on this config's device."""
        return choose_precision(self.autocast, self.device)

    def autocast_context(self):
        """``torch.autocast`` for this config's device and precision (a no-op context on the CPU or in fp32)."""
        precision = self.precision()
        enabled = precision != "fp32"
        return torch.autocast(device_type="cuda" if enabled else "cpu", dtype=AUTOCAST_DTYPES[precision],
                              enabled=enabled)

    def grad_scaler(self) -> "torch.amp.GradScaler":
        """The gradient scaler of a training loop: on in fp16 (the scale keeps small gradients representable),
        a pass-through otherwise."""
        return torch.amp.GradScaler("cuda", enabled=self.precision() == "fp16")


AUTOCAST_DTYPES = MappingProxyType({"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16})


def choose_precision(setting: str | None, device: str, *, native_bf16: bool | None = None) -> str:
    """The precision a run uses (the module docstring's rule): ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    Args:
        setting: :attr:`TrainConfig.autocast` (None, ``"auto"``, ``"bf16"`` or ``"fp16"``).
        device: the run's device; anything but CUDA gives fp32.
        native_bf16: whether the GPU computes bf16 natively (default: asked from the device, see
            :func:`has_native_bf16`).
    """
    if setting not in PRECISIONS:
        raise ValueError(f"autocast must be one of {PRECISIONS}, got {setting!r}")
    if setting is None or not str(device).startswith("cuda"):
        return "fp32"
    if setting != "auto":
        return setting
    native = has_native_bf16(device) if native_bf16 is None else native_bf16
    return "bf16" if native else "fp16"


def has_native_bf16(device: str) -> bool:
    """Whether a CUDA device has bf16 tensor cores: compute capability 8.0 or higher (Ampere and later).

    ``torch.cuda.is_bf16_supported()`` also says True for older GPUs that only emulate bf16, slowly."""
    major, _ = torch.cuda.get_device_capability(torch.device(device))
    return major >= 8


def check_device(name: str) -> str:
    """``name`` if this machine can train on it, else a ``ValueError`` that says what to use instead.

    Called on every device a benchmark is asked for before any model or data is loaded, so that a typo
    (``--devices gpu0``) or a GPU device on a machine without one fails in a second with a fix, rather than
    inside the first method with torch's driver message. Counting CUDA devices leaves torch's CUDA state
    uninitialised (``torch.cuda.is_initialized()`` stays False); the spread workers are spawned processes that
    initialise CUDA themselves.
    """
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{name!r} is not a device: use cpu, cuda or cuda:N (e.g. --devices cpu,cpu)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError(f"{name!r}: this machine has no CUDA GPU that torch can use (torch.cuda.device_count() "
                             "is 0). Train on the CPU: --devices cpu (or cpu,cpu for two workers) with a CPU profile "
                             "such as --profile fast")
        if device.index is not None and device.index >= count:
            raise ValueError(f"{name!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name!r}: Apple's MPS backend is not available on this machine; use cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{name!r}: uniil_lib trains on cpu, cuda or mps devices")
    return name
