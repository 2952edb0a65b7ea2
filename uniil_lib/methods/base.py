"""The one interface every continual-learning method implements.

A method is told about the stream one step at a time and is asked to classify test images among given
classes. Seven hooks, all with working defaults except :meth:`ContinualMethod.training_loss`:

- :meth:`before_step` grows structure for a new step (a new router, new head rows). The trainer also
  calls it for every finished step when resuming, so a checkpoint always finds the right shapes.
- :meth:`step_inputs` gives the training inputs of a step (pixels by default, cached features for
  frozen-encoder methods).
- :meth:`trainable_parameters` lists what the optimiser updates in the current step.
- :meth:`training_loss` is the loss of one batch.
- :meth:`predict` returns predicted global class ids for a test set (batched; methods with a frozen
  encoder override it to reuse cached features).
- :meth:`state_dict` / :meth:`load_state_dict` hold everything that learning changed (checkpoints).
- :meth:`run_report` says what the benchmark records beside the accuracy matrix (e.g. AWPF's factors).

The training loop itself (:meth:`learn`) is shared: AdamW, linear warm-up then cosine decay (as in the
MoE-Adapters MTIL recipe), seeded shuffling, a tqdm bar.
"""

from __future__ import annotations

import contextlib
import math
from typing import ClassVar, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..clip import ClipModel
from ..features import preprocess_images
from ..scenarios import Scenario, Step
# TrainConfig and MAX_SEED live in train_config (below the scenarios, so profiles can use them); re-exported here.
from ..train_config import MAX_SEED, TrainConfig  # noqa: F401


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the method, step and batch."""


class PixelStore:
    """Preprocessed pixels of each image set, computed once per run and kept in memory."""

    def __init__(self, preprocess):
        self.preprocess = preprocess
        self._pixels: dict[str, torch.Tensor] = {}

    def pixels(self, imageset) -> torch.Tensor:
        if imageset.key not in self._pixels:
            self._pixels[imageset.key] = preprocess_images(imageset, self.preprocess)
        return self._pixels[imageset.key]


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

    def __init__(self, clip: ClipModel, scenario: Scenario, config: TrainConfig):
        self.clip = clip
        self.scenario = scenario
        self.config = config
        self.store = PixelStore(clip.preprocess)
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

    def step_inputs(self, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        """The training inputs of a step and their global labels; default: preprocessed pixels."""
        return self.store.pixels(step.train), torch.as_tensor(step.train.labels)

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
        pixels = self.store.pixels(imageset)
        ids = torch.as_tensor(list(class_ids))
        out = []
        for start in range(0, len(pixels), self.config.eval_batch_size):
            batch = pixels[start : start + self.config.eval_batch_size].to(self.config.device)
            with self.config.autocast_context():
                scores = self.logits(batch, class_ids, task_id)
            out.append(ids[scores.argmax(dim=1).cpu()])
        return torch.cat(out).numpy() if out else np.empty(0, dtype=np.int64)

    def learn(self, step: Step) -> None:
        """Train on ``step``'s data with the shared loop (AdamW, warm-up + cosine, seeded shuffles)."""
        if not self.trains:
            return
        pixels, labels = self.step_inputs(step)
        params = self.trainable_parameters()
        # fused=True: one kernel for all parameters; on the CPU about 7x faster than the per-tensor loop
        # (measured: 9 ms vs 68 ms per step for the tiny CLIP, whose token embedding gets dense gradients).
        optimizer = torch.optim.AdamW(params, lr=self.config.lr_for(step.name), weight_decay=self.config.weight_decay,
                                      fused=True)
        total = self._total_iterations(len(pixels))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(self.config.warmup_steps, total))
        self.clip.model.train()
        # mininterval: at most one redraw every 2 s. Thousands of fast redraws flood a notebook's output channel
        # (nbval then times out waiting for a cell's output, measured in notebook 04).
        bar = tqdm(total=total, desc=f"{self.name} | {step.name}", leave=False, disable=not self.config.progress,
                   mininterval=2.0)
        batches = _batches(len(pixels), self.config.batch_size, total, seed=self.config.seed + step.index)
        with flush_denormal(), contextlib.closing(bar):
            for number, batch_index in enumerate(batches):
                with self.config.autocast_context():
                    loss = self.training_loss(pixels[batch_index].to(self.config.device),
                                              labels[batch_index].to(self.config.device), step)
                value = loss.item()
                self._check_loss(value, step, number, total)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}", refresh=False)
        self.clip.model.eval()

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


def _batches(n: int, batch_size: int, total: int, *, seed: int) -> Iterable[torch.Tensor]:
    """``total`` batches of indices, reshuffling with a seeded generator at every epoch boundary."""
    generator = torch.Generator().manual_seed(seed)
    produced = 0
    while produced < total:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            if produced == total:
                return
            yield order[start : start + batch_size]
            produced += 1
