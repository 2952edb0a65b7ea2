"""The continual trainer: learn each step, evaluate on every task, checkpoint, resume.

:func:`run_continual` fills the accuracy matrix ``A[i, j]`` (accuracy on task ``j`` after step ``i``,
in %) row by row. After every finished step it writes a checkpoint into ``checkpoint_dir``:

- ``step-XX.safetensors`` : the method's :meth:`state_dict` after step ``XX``;
- ``progress.json``        : the matrix rows so far, timings, and a fingerprint of the run's settings.

Both are written to a uniquely named temporary file and then renamed (:func:`uniil_lib.fileio.atomic_write`),
so an interrupted run never leaves a half-written checkpoint and two processes sharing a folder never
collide. Running again with the same ``checkpoint_dir`` skips the finished steps (their structure is
rebuilt with ``before_step`` and the last state loaded) and continues; with the same seed it reaches the
same final matrix as an uninterrupted run.

A result is either right or not produced:

- the fingerprint covers what changes results (method, model, scenario and its data keys, seed, training
  settings) and nothing that does not (:data:`DISPLAY_FIELDS`: progress bars, loader workers), so ``--quiet`` never
  blocks a resume, while a mismatch is an error rather than a silent mix of two runs;
- ``progress.json`` records the sha256 of the step file; a damaged, truncated or missing step file, or one
  holding NaN or infinite weights, is a :class:`CheckpointError` that names it and says how to recompute;
- a non-finite loss stops training before the step is checkpointed
  (:class:`uniil_lib.methods.base.NonFiniteLossError`), and so do non-finite trained weights after a step
  (:class:`NonFiniteStateError`).

Under ``torchrun`` (:mod:`uniil_lib.distributed`) every rank runs this loop: training is data-parallel inside
:meth:`~uniil_lib.methods.base.ContinualMethod.learn`, each test set's predictions are split across the ranks and
gathered (:func:`predict_split`), and rank 0 alone writes the checkpoints while the others wait for it.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from . import distributed
from .fileio import (CorruptFileError, atomic_write, atomic_write_text, non_finite_entries, read_json,
                     read_safetensors)
from .integrity import hash_file
from .methods.base import ContinualMethod
from .scenarios import Scenario

# TrainConfig fields that change what is shown or how fast pixels are made, never a result: left out of the resume
# fingerprint (a run may resume with other loader workers or a quieter bar).
DISPLAY_FIELDS = ("progress", "loader_workers", "pixel_buffer_bytes")
# Reading a checkpoint while another process moves on (and removes the step file read) is retried.
LOAD_ATTEMPTS = 5


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: damaged, missing, or holding non-finite values; says how to recompute."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint directory holds a different run."""


class NonFiniteStateError(FloatingPointError):
    """A step left NaN or infinite weights; nothing of it was checkpointed."""


@dataclass
class ContinualResult:
    """What a continual run produced.

    Attributes:
        method: method name.
        task_names: the columns of the matrix.
        matrix: ``(T, T)`` accuracies in %, rows = after step i, columns = task j.
        initial: ``(T,)`` accuracies before any training (the zero-shot baseline for FWT).
        test_sizes: test images per task (weights for class-incremental Avg).
        trainable_params: parameters the method trains.
        train_seconds: wall time spent in ``learn`` (evaluation excluded).
    """

    method: str
    task_names: list[str]
    matrix: np.ndarray
    initial: np.ndarray
    test_sizes: list[int]
    trainable_params: int
    train_seconds: float
    extra: dict = field(default_factory=dict)


def evaluate_row(method: ContinualMethod, scenario: Scenario, after_step: int) -> np.ndarray:
    """Accuracy (%) on every task's test set after training step ``after_step`` (-1: before training)."""
    row = []
    for j, step in enumerate(scenario.steps):
        class_ids = scenario.eval_class_ids(j, max(after_step, 0) if after_step >= 0 else j)
        predictions = predict_split(method, step.test, class_ids, scenario.task_id_for(j))
        row.append(100.0 * float(np.mean(predictions == step.test.labels)) if len(step.test) else float("nan"))
    return np.array(row)


def predict_split(method: ContinualMethod, imageset, class_ids, task_id: int | None) -> np.ndarray:
    """``method.predict`` of every image of ``imageset``; under ``torchrun`` each rank predicts a contiguous slice
    and the slices are gathered in order (every rank returns all predictions)."""
    world = distributed.current()
    if not world.active:
        return method.predict(imageset, class_ids, task_id)
    rows = world.shard(range(len(imageset)))
    local = (method.predict(imageset.subset(rows, tag=f"rank {world.rank} of {world.size}"), class_ids, task_id)
             if rows else np.empty(0, dtype=np.int64))
    return np.concatenate([np.asarray(part, dtype=np.int64) for part in world.gather(local)])


def run_continual(
    method: ContinualMethod,
    scenario: Scenario,
    *,
    checkpoint_dir: str | Path | None = None,
    stop_after: int | None = None,
    on_step: Callable[[int, ContinualMethod], None] | None = None,
) -> ContinualResult:
    """Train ``method`` on every step of ``scenario`` and fill the accuracy matrix.

    Torch's global random state is the same after the call as before (each step seeds its own).

    Args:
        method: a freshly built method (when resuming, built exactly as the first time).
        scenario: the stream.
        checkpoint_dir: where to write and look for checkpoints; None disables them.
        stop_after: stop (as if interrupted) after finishing this step index; for tests and demos.
        on_step: called as ``on_step(index, method)`` after each step this call learns (after its row is
            evaluated and its checkpoint written), to look at the model between steps (e.g.
            ``benchmarks/mage_forgetting.py``); steps loaded from a checkpoint are not reported.

    Returns:
        the :class:`ContinualResult`; when stopped early, ``matrix`` holds NaN for unfinished rows.

    Raises:
        CheckpointMismatchError: ``checkpoint_dir`` holds another run.
        CheckpointError: a checkpoint there is damaged (the message says how to recompute).
        NonFiniteLossError, NonFiniteStateError: training diverged (nothing of that step is saved).
    """
    n = len(scenario.steps)
    world = distributed.current()
    progress = _Progress(Path(checkpoint_dir), _fingerprint(method, scenario), world) if checkpoint_dir else None
    with torch.random.fork_rng(devices=_cuda_devices()):
        rows, seconds = (progress.load(method, scenario) if progress else ([], 0.0))
        initial = np.array(rows[0]) if rows else evaluate_row(method, scenario, -1)
        rows = rows[1:] if rows else []
        for index in tqdm(range(n), desc=f"{method.name} on {scenario.name}",
                          disable=not method.config.progress or not world.is_main):
            if index < len(rows):
                continue  # finished in an earlier run; its state was loaded by progress.load
            step = scenario.steps[index]
            torch.manual_seed(method.config.seed * 1000 + index)
            method.before_step(step)
            started = time.perf_counter()
            method.learn(step)
            seconds += time.perf_counter() - started
            _check_finite_weights(method, step)
            rows.append(evaluate_row(method, scenario, index).tolist())
            if progress:
                progress.save(method, index, [initial.tolist(), *rows], seconds)
            if on_step is not None:
                on_step(index, method)
            if stop_after is not None and index >= stop_after:
                break
    matrix = np.full((n, n), np.nan)
    matrix[: len(rows)] = np.array(rows)
    return ContinualResult(
        method=method.name, task_names=scenario.task_names, matrix=matrix, initial=initial,
        test_sizes=[len(s.test) for s in scenario.steps], trainable_params=method.trainable_parameter_count(),
        train_seconds=seconds,
    )


def _check_finite_weights(method: ContinualMethod, step) -> None:
    """Stop if learning left a NaN or infinite trained weight (the last batch's update is not seen by any loss)."""
    if not method.trains:
        return
    names = {id(p): name for name, p in method.clip.model.named_parameters()}
    bad = [names.get(id(p), f"parameter {i}") for i, p in enumerate(method.trainable_parameters())
           if not bool(torch.isfinite(p.detach()).all())]
    if bad:
        raise NonFiniteStateError(f"{method.name}: after step {step.index} ({step.name}) the trained weights "
                                  f"{bad[:3]} hold NaN or infinite values; nothing of this step was saved. Lower "
                                  "the learning rate")


def _cuda_devices() -> list[int]:
    """The CUDA devices whose random state a run may change (none when CUDA was never started)."""
    return list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []


def _fingerprint(method: ContinualMethod, scenario: Scenario) -> str:
    """What decides a run's results: method, model, scenario (with its data keys, which carry content
    digests) and training settings except :data:`DISPLAY_FIELDS`."""
    settings = {k: v for k, v in asdict(method.config).items() if k not in DISPLAY_FIELDS}
    data = [f"{step.train.key}|{step.test.key}" for step in scenario.steps]
    parts = [method.name, method.clip.identity, scenario.name, scenario.describe(), *data,
             json.dumps(settings, sort_keys=True, default=str)]
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


class _Progress:
    """Reads and writes one run's checkpoints (see the module docstring)."""

    def __init__(self, folder: Path, fingerprint: str, world: distributed.World | None = None):
        self.folder = folder
        self.fingerprint = fingerprint
        self.world = world or distributed.World()
        self.folder.mkdir(parents=True, exist_ok=True)

    @property
    def progress_file(self) -> Path:
        return self.folder / "progress.json"

    @property
    def recompute(self) -> str:
        return (f"To recompute the finished steps, delete {self.folder} (or pass another checkpoint folder) "
                "and run again")

    def weights_file(self, index: int) -> Path:
        return self.folder / f"step-{index:02d}.safetensors"

    def load(self, method: ContinualMethod, scenario: Scenario) -> tuple[list, float]:
        if not self.progress_file.exists():
            return [], 0.0
        for attempt in range(LOAD_ATTEMPTS):
            saved = self._read_progress(len(scenario.steps))
            try:
                state = self._read_state(saved)
                break
            except FileNotFoundError:
                # Another process sharing this folder finished a later step and removed this file meanwhile:
                # its progress.json now names the later one. Read it again.
                if attempt == LOAD_ATTEMPTS - 1:
                    raise CheckpointError(f"{self.weights_file(saved['last_step'])}, named by {self.progress_file}, "
                                          f"is missing. {self.recompute}") from None
                time.sleep(0.2)
        for step in scenario.steps[: saved["last_step"] + 1]:
            method.before_step(step)
        try:
            method.load_state_dict(state)
        except (RuntimeError, KeyError) as error:  # a method's own ValueError already says what to do
            raise CheckpointError(f"{self.weights_file(saved['last_step'])} does not fit {method.name} "
                                  f"({' '.join(str(error).split())[:200]}). {self.recompute}") from error
        return saved["rows"], saved["train_seconds"]

    def _read_progress(self, n_steps: int) -> dict:
        """``progress.json``, checked: its fingerprint first, then its shape and values."""
        try:
            saved = read_json(self.progress_file, fix=self.recompute)
        except CorruptFileError as error:
            raise CheckpointError(str(error)) from error
        if not isinstance(saved, dict) or saved.get("fingerprint") is None:
            raise CheckpointError(f"{self.progress_file} is not a progress record of uniil_lib. {self.recompute}")
        if saved["fingerprint"] != self.fingerprint:
            raise CheckpointMismatchError(
                f"{self.folder} holds checkpoints of another run (method, model, scenario, data, seed or training "
                "settings differ). Use a new checkpoint directory, or delete this one to start over."
            )
        problem = _progress_problem(saved, n_steps)
        if problem:
            raise CheckpointError(f"{self.progress_file} is damaged: {problem}. {self.recompute}")
        return saved

    def _read_state(self, saved: dict) -> dict:
        weights = self.weights_file(saved["last_step"])
        if not weights.is_file():
            raise FileNotFoundError(weights)
        if hash_file(weights) != saved["weights_sha256"]:
            raise CheckpointError(f"{weights} differs from the sha256 recorded in {self.progress_file}: the file "
                                  f"is damaged. {self.recompute}")
        try:
            state = read_safetensors(weights, fix=self.recompute)
        except CorruptFileError as error:
            raise CheckpointError(str(error)) from error
        bad = sorted(set(non_finite_entries(state)) - set(saved.get("non_finite", [])))
        if bad:
            raise CheckpointError(f"{weights} holds NaN or infinite values in {bad[:3]}. {self.recompute}")
        return state

    def save(self, method: ContinualMethod, index: int, rows: list, seconds: float) -> None:
        """Write the step's weights and progress record (rank 0 only; the other ranks wait until it is written)."""
        if self.world.is_main:
            self._write(method, index, rows, seconds)
        self.world.barrier()

    def _write(self, method: ContinualMethod, index: int, rows: list, seconds: float) -> None:
        state = {k: v.detach().cpu().contiguous().clone() for k, v in method.state_dict().items()}
        digests = []

        def write(tmp: Path) -> None:
            save_file(state, str(tmp))
            digests.append(hash_file(tmp))

        atomic_write(self.weights_file(index), write)
        record = {"fingerprint": self.fingerprint, "last_step": index, "rows": rows, "train_seconds": seconds,
                  "weights_sha256": digests[0],
                  # entries that hold NaN by design (e.g. AWPF's history of undefined MMD values): any other
                  # non-finite value found when loading is damage
                  "non_finite": non_finite_entries(state)}
        atomic_write_text(self.progress_file, json.dumps(record))
        # Keep only the latest weights (a ViT-B/16 state is 600 MB).
        self.weights_file(index - 1).unlink(missing_ok=True)


def _progress_problem(saved: dict, n_steps: int) -> str | None:
    """What is wrong with a progress record's fields (None if nothing): step, rows, seconds, digest."""
    last, rows = saved.get("last_step"), saved.get("rows")
    if not isinstance(last, int) or not 0 <= last < n_steps:
        return f"last_step {last!r} is not a step index below {n_steps}"
    if not isinstance(rows, list) or len(rows) != last + 2:
        return f"it needs {last + 2} matrix rows (the initial one and one per finished step)"
    for row in rows:
        if not isinstance(row, list) or len(row) != n_steps or not all(_is_accuracy(v) for v in row):
            return f"a matrix row is not {n_steps} accuracies in [0, 100]: {str(row)[:80]}"
    if not isinstance(saved.get("train_seconds"), (int, float)) or not isinstance(saved.get("weights_sha256"), str):
        return "train_seconds or weights_sha256 is missing"
    return None


def _is_accuracy(value) -> bool:
    """An accuracy in % (NaN stands for a task without test images)."""
    return isinstance(value, (int, float)) and (math.isnan(value) or 0.0 <= value <= 100.0)
