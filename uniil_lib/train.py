"""The continual trainer: learn each step, evaluate on every task, checkpoint, resume.

:func:`run_continual` fills the accuracy matrix ``A[i, j]`` (accuracy on task ``j`` after step ``i``,
in %) row by row. After every finished step it writes a checkpoint into ``checkpoint_dir``:

- ``step-XX.safetensors`` : the method's :meth:`state_dict` after step ``XX``;
- ``progress.json``        : the matrix rows so far, timings, and a fingerprint of the run's settings.

Both are written to a temporary name and then renamed, so an interrupted run never leaves a half-written
checkpoint. Running again with the same ``checkpoint_dir`` skips the finished steps (their structure is
rebuilt with ``before_step`` and the last state loaded) and continues; with the same seed it reaches the
same final matrix as an uninterrupted run. A fingerprint mismatch (other method, scenario, seed or
settings) is an error rather than a silent mix of two runs.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .methods.base import ContinualMethod
from .scenarios import Scenario


class CheckpointMismatchError(RuntimeError):
    """The checkpoint directory holds a different run."""


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
        predictions = method.predict(step.test, class_ids, scenario.task_id_for(j))
        row.append(100.0 * float(np.mean(predictions == step.test.labels)) if len(step.test) else float("nan"))
    return np.array(row)


def run_continual(
    method: ContinualMethod,
    scenario: Scenario,
    *,
    checkpoint_dir: str | Path | None = None,
    stop_after: int | None = None,
) -> ContinualResult:
    """Train ``method`` on every step of ``scenario`` and fill the accuracy matrix.

    Args:
        method: a freshly built method (when resuming, built exactly as the first time).
        scenario: the stream.
        checkpoint_dir: where to write and look for checkpoints; None disables them.
        stop_after: stop (as if interrupted) after finishing this step index; for tests and demos.

    Returns:
        the :class:`ContinualResult`; when stopped early, ``matrix`` holds NaN for unfinished rows.
    """
    n = len(scenario.steps)
    progress = _Progress(Path(checkpoint_dir), _fingerprint(method, scenario)) if checkpoint_dir else None
    rows, seconds = (progress.load(method, scenario) if progress else ([], 0.0))
    initial = np.array(rows[0]) if rows else evaluate_row(method, scenario, -1)
    rows = rows[1:] if rows else []
    for index in tqdm(range(n), desc=f"{method.name} on {scenario.name}", disable=not method.config.progress):
        if index < len(rows):
            continue  # finished in an earlier run; its state was loaded by progress.load
        step = scenario.steps[index]
        torch.manual_seed(method.config.seed * 1000 + index)
        method.before_step(step)
        started = time.perf_counter()
        method.learn(step)
        seconds += time.perf_counter() - started
        rows.append(evaluate_row(method, scenario, index).tolist())
        if progress:
            progress.save(method, index, [initial.tolist(), *rows], seconds)
        if stop_after is not None and index >= stop_after:
            break
    matrix = np.full((n, n), np.nan)
    matrix[: len(rows)] = np.array(rows)
    return ContinualResult(
        method=method.name, task_names=scenario.task_names, matrix=matrix, initial=initial,
        test_sizes=[len(s.test) for s in scenario.steps], trainable_params=method.trainable_parameter_count(),
        train_seconds=seconds,
    )


def _fingerprint(method: ContinualMethod, scenario: Scenario) -> str:
    parts = [method.name, method.clip.identity, scenario.name, scenario.describe(), json.dumps(asdict(method.config), sort_keys=True, default=str)]
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


class _Progress:
    """Reads and writes one run's checkpoints (see the module docstring)."""

    def __init__(self, folder: Path, fingerprint: str):
        self.folder = folder
        self.fingerprint = fingerprint
        self.folder.mkdir(parents=True, exist_ok=True)

    @property
    def progress_file(self) -> Path:
        return self.folder / "progress.json"

    def load(self, method: ContinualMethod, scenario: Scenario) -> tuple[list, float]:
        if not self.progress_file.exists():
            return [], 0.0
        saved = json.loads(self.progress_file.read_text())
        if saved["fingerprint"] != self.fingerprint:
            raise CheckpointMismatchError(
                f"{self.folder} holds checkpoints of another run (method, model, scenario, seed or settings "
                "differ). Use a new checkpoint directory, or delete this one to start over."
            )
        last = saved["last_step"]
        for step in scenario.steps[: last + 1]:
            method.before_step(step)
        method.load_state_dict(load_file(self.folder / f"step-{last:02d}.safetensors"))
        return saved["rows"], saved["train_seconds"]

    def save(self, method: ContinualMethod, index: int, rows: list, seconds: float) -> None:
        state = {k: v.detach().cpu().contiguous().clone() for k, v in method.state_dict().items()}
        weights = self.folder / f"step-{index:02d}.safetensors"
        _atomic(weights, lambda tmp: save_file(state, str(tmp)))
        record = {"fingerprint": self.fingerprint, "last_step": index, "rows": rows, "train_seconds": seconds}
        _atomic(self.progress_file, lambda tmp: tmp.write_text(json.dumps(record)))
        previous = self.folder / f"step-{index - 1:02d}.safetensors"
        previous.unlink(missing_ok=True)  # keep only the latest weights: a ViT-B/16 state is 600 MB


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.replace(path)
