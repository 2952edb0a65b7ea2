"""Continual-learning metrics as pure functions of an accuracy matrix.

``A[i, j]`` is the accuracy (in %) on the test set of task ``j`` after training step ``i``: rows are
training steps, columns are tasks in training order, ``T`` rows and columns (0-indexed below; the last
row is ``A[T-1]``).

=====================  ========================================================================  ==================
name                   definition                                                                 from
=====================  ========================================================================  ==================
``last``               ``mean_j A[T-1, j]``                                                       all
``avg``                mean of all entries of ``A``                                               ZSCL (MTIL) eq. in sec. 5
``transfer``           ``mean_{j>=1} mean_{i<j} A[i, j]`` (accuracy on tasks not yet learned)     ZSCL (MTIL)
``avg_incremental``    ``mean_i`` of the accuracy on all classes seen after step ``i``            Rebuffi et al. 2017 (iCaRL)
``bwt``                ``mean_{j<T-1} (A[T-1, j] - A[j, j])``                                     Lopez-Paz & Ranzato 2017
``forgetting``         ``mean_{j<T-1} (max_{j<=l<T-1} A[l, j] - A[T-1, j])``                       Chaudhry et al. 2018
``fwt``                ``mean_{j>=1} (A[j-1, j] - Z[j])``, ``Z`` the zero-shot accuracies         Lopez-Paz & Ranzato 2017
=====================  ========================================================================  ==================

``avg_incremental`` weighs each seen task's accuracy by its number of test images when ``test_sizes`` is
given (that is the accuracy on the union of their test sets); with no sizes the tasks count equally.
``forgetting`` takes the maximum over the steps since task ``j`` was learned (Chaudhry's definition); the
handbook writes ``max_{l<T}``, which differs only when a task's accuracy was higher *before* it was
learned.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

import numpy as np

METRIC_NAMES = ("transfer", "avg", "last", "avg_incremental", "bwt", "forgetting")


def _check(matrix) -> np.ndarray:
    a = np.asarray(matrix, dtype=float)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[0] != a.shape[1]:
        raise ValueError(f"an accuracy matrix must be square (steps x tasks), got shape {a.shape}")
    return a


def last(matrix) -> float:
    """Mean accuracy over all tasks after the final step."""
    return float(_check(matrix)[-1].mean())


def avg(matrix) -> float:
    """MTIL Avg: the mean of every entry (every task after every step)."""
    return float(_check(matrix).mean())


def transfer(matrix) -> float:
    """MTIL Transfer: mean over tasks ``j >= 1`` of their mean accuracy before they are learned."""
    a = _check(matrix)
    if len(a) < 2:
        return float("nan")
    return float(np.mean([a[:j, j].mean() for j in range(1, len(a))]))


def avg_incremental(matrix, test_sizes: Sequence[float] | None = None) -> float:
    """Average incremental accuracy: mean over steps of the accuracy on all tasks seen so far."""
    a = _check(matrix)
    sizes = np.ones(len(a)) if test_sizes is None else np.asarray(test_sizes, dtype=float)
    if sizes.shape != (len(a),):
        raise ValueError(f"test_sizes needs one entry per task ({len(a)}), got {sizes.shape}")
    return float(np.mean([np.average(a[i, : i + 1], weights=sizes[: i + 1]) for i in range(len(a))]))


def bwt(matrix) -> float:
    """Backward transfer: how the final accuracy on each earlier task differs from just after learning it."""
    a = _check(matrix)
    if len(a) < 2:
        return float("nan")
    return float(np.mean([a[-1, j] - a[j, j] for j in range(len(a) - 1)]))


def forgetting(matrix) -> float:
    """Average forgetting: best accuracy since learning task ``j`` minus its final accuracy."""
    a = _check(matrix)
    if len(a) < 2:
        return float("nan")
    return float(np.mean([a[j:-1, j].max() - a[-1, j] for j in range(len(a) - 1)]))


def fwt(matrix, zero_shot: Sequence[float]) -> float:
    """Forward transfer against the zero-shot baseline: accuracy on task ``j`` just before learning it."""
    a = _check(matrix)
    z = np.asarray(zero_shot, dtype=float)
    if z.shape != (len(a),):
        raise ValueError(f"zero_shot needs one accuracy per task ({len(a)}), got shape {z.shape}")
    if len(a) < 2:
        return float("nan")
    return float(np.mean([a[j - 1, j] - z[j] for j in range(1, len(a))]))


def all_metrics(matrix, *, test_sizes=None, zero_shot=None) -> dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` (plus ``fwt`` when ``zero_shot`` is given), rounded to 4 places."""
    result = {
        "transfer": transfer(matrix), "avg": avg(matrix), "last": last(matrix),
        "avg_incremental": avg_incremental(matrix, test_sizes), "bwt": bwt(matrix),
        "forgetting": forgetting(matrix),
    }
    if zero_shot is not None:
        result["fwt"] = fwt(matrix, zero_shot)
    return {key: round(value, 4) for key, value in result.items()}


def read_matrix_csv(path: str | Path) -> tuple[np.ndarray, list[str] | None]:
    """Read an accuracy matrix (in %) from a UTF-8 CSV file, with or without a byte-order mark.

    A first row whose cells are *all* non-numeric is a header of task names (returned); a first row with
    some numbers is data, so a typo there is an error rather than a silently dropped row.

    Raises:
        ValueError: the file is not UTF-8, is empty, has ragged rows, a cell that is not a number, a value
            that is NaN, infinite or outside [0, 100], or is not square. The message names the file and line.
    """
    try:
        # utf-8-sig drops the byte-order mark that spreadsheet programs put before the first cell.
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not a UTF-8 text file (byte {error.start}: {error.reason}); save it as "
                         "UTF-8 CSV") from error
    if not rows:
        raise ValueError(f"{path}: the file is empty; expected rows of comma-separated accuracies")
    header = None
    if not any(_number(cell) is not None for cell in rows[0][1]):
        header, rows = [cell.strip() for cell in rows[0][1]], rows[1:]
    widths = {len(row) for _, row in rows}
    if not rows:
        raise ValueError(f"{path}: only a header row; expected rows of comma-separated accuracies below it")
    if len(widths) != 1:
        raise ValueError(f"{path}: rows have different lengths {sorted(widths)}; every row needs one value per task")
    matrix = np.array([[_accuracy(cell, path, line) for cell in row] for line, row in rows])
    if matrix.shape[0] != matrix.shape[1]:
        raise ValueError(
            f"{path}: the matrix is {matrix.shape[0]} x {matrix.shape[1]}; it must be square "
            "(one row per training step, one column per task)"
        )
    if header is not None and len(header) != matrix.shape[1]:
        raise ValueError(f"{path}: the header names {len(header)} tasks but rows have {matrix.shape[1]} values")
    return matrix, header


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _accuracy(cell: str, path, line: int) -> float:
    """One cell as an accuracy in %: a finite number in [0, 100], else an error naming file and line."""
    value = _number(cell)
    if value is None:
        raise ValueError(f"{path}: line {line} has a non-numeric cell: {cell!r}")
    if not math.isfinite(value):
        raise ValueError(f"{path}: line {line} has {cell.strip()!r}; accuracies must be finite numbers")
    if not 0.0 <= value <= 100.0:
        raise ValueError(f"{path}: line {line} has {value:g}, outside [0, 100]; accuracies are in %")
    return value
