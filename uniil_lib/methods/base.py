"""The one interface every continual-learning method implements.

A method is told about the stream one step at a time and is asked to classify test images among given
classes. Seven hooks, all with working defaults except :meth:`ContinualMethod.training_loss`:

- :meth:`before_step` grows structure for a new step (a new router, new head rows). The trainer also
  calls it for every finished step when resuming, so a checkpoint always finds the right shapes.
- :meth:`step_inputs` gives the training inputs of a step (a :class:`~uniil_lib.pixels.PixelSource` by default,
  whose pixels are made batch by batch; cached features for frozen-encoder methods).
- :meth:`trainable_parameters` lists what the optimiser updates in the current step.
- :meth:`training_loss` is the loss of one batch.
- :meth:`predict` returns predicted global class ids for a test set (batched; methods with a frozen
  encoder override it to reuse cached features).
- :meth:`state_dict` / :meth:`load_state_dict` hold everything that learning changed (checkpoints).
- :meth:`run_report` says what the benchmark records beside the accuracy matrix (e.g. AWPF's factors).

The training loop itself (:meth:`learn`) is shared: AdamW, linear warm-up then cosine decay (as in the
MoE-Adapters MTIL recipe), seeded shuffling (:func:`shuffled_batches`), pixels streamed batch by batch
(:mod:`uniil_lib.pixels`), the precision the hardware allows (:meth:`TrainConfig.precision`, with a gradient
scaler in fp16), a tqdm bar. Under ``torchrun`` it is data-parallel (:mod:`uniil_lib.distributed`): every rank
draws the same global batch, trains on its slice and the gradients are averaged; methods whose inputs are cached
features (:attr:`ContinualMethod.data_parallel` False) train the whole batch on every rank instead (their steps
cost microseconds; splitting them would cost more in communication than it saves).
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import distributed
from ..clip import ClipModel
from ..pixels import PixelSource, iterate_batches, loader_settings, sequential_batches
from ..scenarios import Scenario, Step
# TrainConfig and MAX_SEED live in train_config (below the scenarios, so profiles can use them); re-exported here.
from ..train_config import MAX_SEED, TrainConfig  # noqa: F401


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the method, step and batch."""


class ContinualMethod:
    """Base class of all methods. Subclasses set ``name`` and implement :meth:`training_loss`.

    Args:
        clip: the CLIP model the method starts from (the method may change its weights).
        scenario: the stream, for its class list and evaluation rule.
        config: optimisation settings.
    """

    name: ClassVar[str] = "base"
    uses_task_id: ClassVar[bool] = False
    trains: ClassVar[bool] = True
    data_parallel: ClassVar[bool] = True  # under torchrun, each rank trains a slice of the batch (module docstring)

    def __init__(self, clip: ClipModel, scenario: Scenario, config: TrainConfig):
        self.clip = clip
        self.scenario = scenario
        self.config = config
        self.loader = loader_settings(config)
        self.iteration_seconds: dict[int, float] = {}
        self.clip.model.to(config.device)

    # ----- hooks -------------------------------------------------------------------------------
    def before_step(self, step: Step) -> None:
        """Grow structure for ``step`` (default: nothing)."""

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters the optimiser updates during the current step."""
        return [p for p in self.clip.model.parameters() if p.requires_grad]

    def training_loss(self, pixels: torch.Tensor, labels: torch.Tensor, step: Step) -> torch.Tensor:
        """Loss of one batch: ``pixels (B,3,S,S)``, ``labels (B,)`` global class ids."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_loss")

    def step_inputs(self, step: Step) -> tuple[object, torch.Tensor]:
        """The training inputs of a step and their global labels; default: its pixels, made batch by batch."""
        return self.pixels(step.train), torch.as_tensor(step.train.labels)

    def pixels(self, imageset) -> PixelSource:
        """The preprocessed pixels of ``imageset``, made when a batch asks for them (:mod:`uniil_lib.pixels`)."""
        return PixelSource(imageset, self.clip.preprocess)

    def logits(self, pixels: torch.Tensor, class_ids: Sequence[int], task_id: int | None) -> torch.Tensor:
        """``(B, len(class_ids))`` scores of a batch; used by the default :meth:`predict`."""
        raise NotImplementedError(f"{type(self).__name__} must implement logits or predict")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything learning changed; default: the CLIP model's weights."""
        return {k: v.detach().cpu() for k, v in self.clip.model.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.clip.model.load_state_dict(state)

    def run_report(self) -> dict:
        """JSON-ready facts of the finished run that the benchmark records beside the accuracy matrix (default:
        none; AWPF reports its balance factors)."""
        return {}

    # ----- shared machinery -------------------------------------------------------------------
    def trainable_parameter_count(self) -> int:
        """Number of scalar parameters trained (0 for methods that never train)."""
        if not self.trains:
            return 0
        return sum(p.numel() for p in self.trainable_parameters())

    @torch.no_grad()
    def predict(self, imageset, class_ids: Sequence[int], task_id: int | None) -> np.ndarray:
        """Predicted global class ids, ``(N,)``, for every image of ``imageset``."""
        self.clip.model.eval()
        ids = torch.as_tensor(list(class_ids))
        out = []
        batches = sequential_batches(len(imageset), self.config.eval_batch_size)
        for batch in iterate_batches(self.pixels(imageset), batches, self.loader):
            with self.config.autocast_context():
                scores = self.logits(batch.to(self.config.device, non_blocking=True), class_ids, task_id)
            out.append(ids[scores.argmax(dim=1).cpu()])
        return torch.cat(out).numpy() if out else np.empty(0, dtype=np.int64)

    def learn(self, step: Step) -> None:
        """Train on ``step``'s data with the shared loop (AdamW, warm-up + cosine, seeded shuffles)."""
        if not self.trains:
            return
        inputs, labels = self.step_inputs(step)
        params = self.trainable_parameters()
        # fused=True: one kernel for all parameters; on the CPU about 7x faster than the per-tensor loop
        # (measured: 9 ms vs 68 ms per step for the tiny CLIP, whose token embedding gets dense gradients).
        optimizer = torch.optim.AdamW(params, lr=self.config.lr_for(step.name), weight_decay=self.config.weight_decay,
                                      fused=True)
        total = self._total_iterations(len(inputs))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(self.config.warmup_steps, total))
        world = distributed.current()
        split = self.data_parallel and world.active
        batches = shuffled_batches(len(inputs), self.config.batch_size, total, seed=self.config.seed + step.index)
        local = [world.shard(batch) for batch in batches] if split else batches
        scaler = self.config.grad_scaler()
        self.clip.model.train()
        # mininterval: at most one redraw every 2 s. Thousands of fast redraws flood a notebook's output channel
        # (nbval then times out waiting for a cell's output, measured in notebook 04).
        bar = tqdm(total=total, desc=f"{self.name} | {step.name}", leave=False,
                   disable=not self.config.progress or not world.is_main, mininterval=2.0)
        timer = _IterationTimer()
        with flush_denormal(), contextlib.closing(bar):
            for number, (whole, part, batch) in enumerate(zip(batches, local, iterate_batches(inputs, local,
                                                                                               self.loader))):
                share = len(part) / len(whole)
                loss = self._batch_loss(batch, labels[part], step) if part else None
                value = world.weighted_mean(loss.item() if part else 0.0, share) if split else loss.item()
                self._check_loss(value, step, number, total)
                optimizer.zero_grad(set_to_none=True)
                if part:
                    scaler.scale(loss).backward()
                else:  # a rank without images in this batch: no gradient, but its scaler must hold a scale too
                    scaler.scale(torch.zeros((), device=self.config.device))
                if split:
                    world.average_gradients(params, share)
                scaler.step(optimizer)
                scaler.update()
                schedule.step()
                timer.tick()
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}", refresh=False)
        self.iteration_seconds[step.index] = timer.median()
        self.clip.model.eval()

    def _batch_loss(self, batch, labels: torch.Tensor, step: Step) -> torch.Tensor:
        """The training loss of one batch, moved to the device, under the config's precision."""
        device = self.config.device
        with self.config.autocast_context():
            return self.training_loss(batch.to(device, non_blocking=True), labels.to(device, non_blocking=True), step)

    def _check_loss(self, value: float, step: Step, number: int, total: int) -> None:
        """Stop at the first non-finite loss: nothing of this step is kept or checkpointed."""
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"{self.name}: the training loss is {value} at batch {number + 1} of {total} of step {step.index} "
                f"({step.name}); training stopped and nothing of this step was saved. Lower the learning rate, "
                "or check the inputs (a damaged data or cache file)"
            )

    def _total_iterations(self, n_train: int) -> int:
        if self.config.iterations is not None:
            return self.config.iterations
        return self.config.epochs * math.ceil(n_train / self.config.batch_size)

    def candidate_targets(self, labels: torch.Tensor, step: Step) -> tuple[list[int], torch.Tensor]:
        """The classes a training batch of ``step`` is classified among, and labels as positions in them."""
        class_ids = self.scenario.eval_class_ids(step.index, step.index)
        position = {c: k for k, c in enumerate(class_ids)}
        targets = torch.tensor([position[int(c)] for c in labels.tolist()], device=labels.device)
        return class_ids, targets

    def cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.config.label_smoothing)


def flush_denormal_enabled() -> bool:
    """Whether the CPU flushes denormal floats to zero now (torch has no getter: a denormal times one is
    zero exactly when flushing is on)."""
    return bool((torch.tensor([1e-39], dtype=torch.float32) * 1.0).item() == 0.0)


@contextlib.contextmanager
def flush_denormal():
    """Flush denormal floats to zero inside the block, and restore the setting found on entry.

    Near-zero gradients late in training become denormal floats, which x86 CPUs process up to 100x slower;
    flushing them changes no result that matters and keeps steps fast. The setting is process-wide, so a
    library call must not leave it changed.
    """
    before = flush_denormal_enabled()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def _warmup_cosine(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def shuffled_batches(n: int, batch_size: int, total: int, *, seed: int) -> list[list[int]]:
    """``total`` batches of indices into ``range(n)``, reshuffling with a seeded generator at every epoch boundary
    (the last batch of an epoch may be smaller)."""
    generator = torch.Generator().manual_seed(seed)
    batches: list[list[int]] = []
    while len(batches) < total:
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n, batch_size):
            if len(batches) == total:
                break
            batches.append(order[start : start + batch_size])
    return batches


class _IterationTimer:
    """Wall time per training iteration (the loss's ``.item()`` waits for the GPU, so each interval is one
    iteration's work); the median leaves out the first, which pays for warm-up."""

    def __init__(self):
        self.last = time.perf_counter()
        self.seconds: list[float] = []

    def tick(self) -> None:
        now = time.perf_counter()
        self.seconds.append(now - self.last)
        self.last = now

    def median(self) -> float:
        kept = self.seconds[1:] or self.seconds
        return float(np.median(kept)) if kept else float("nan")
