"""Metrics on hand-computed matrices, on ZSCL's published MTIL tables, and through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from uniil_lib import metrics
from uniil_lib.cli import main

# A[i, j]: accuracy on task j after step i.
A = np.array([[80.0, 30.0, 20.0],
              [60.0, 90.0, 40.0],
              [50.0, 70.0, 85.0]])


def test_hand_computed_values():
    assert metrics.last(A) == pytest.approx((50 + 70 + 85) / 3)
    assert metrics.avg(A) == pytest.approx(A.sum() / 9)
    # transfer: task 1 before learning: A[0,1]=30; task 2: mean(A[0,2], A[1,2]) = 30 -> mean(30, 30)
    assert metrics.transfer(A) == pytest.approx(30.0)
    # avg_incremental, equal sizes: mean(80, mean(60,90), mean(50,70,85))
    assert metrics.avg_incremental(A) == pytest.approx((80 + 75 + 205 / 3) / 3)
    assert metrics.bwt(A) == pytest.approx(((50 - 80) + (70 - 90)) / 2)
    # forgetting: task 0 best since learned = 80 -> 30; task 1 best 90 -> 20
    assert metrics.forgetting(A) == pytest.approx(25.0)
    assert metrics.fwt(A, [10, 20, 30]) == pytest.approx(((30 - 20) + (40 - 30)) / 2)


def test_avg_incremental_weights_by_test_size():
    weighted = metrics.avg_incremental(A, test_sizes=[1, 3, 1])
    expected = (80 + (60 * 1 + 90 * 3) / 4 + (50 + 70 * 3 + 85) / 5) / 3
    assert weighted == pytest.approx(expected)


def test_bad_matrices_are_rejected():
    with pytest.raises(ValueError, match="square"):
        metrics.avg(np.ones((2, 3)))
    with pytest.raises(ValueError, match="one entry per task"):
        metrics.avg_incremental(A, test_sizes=[1, 2])


REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "zscl_mtil"
PUBLISHED = {  # ZSCL (Zheng et al., ICCV 2023), Transfer / Avg / Last, order I
    "zeroshot": (69.4, 65.3, 65.3), "continualFT": (44.6, 55.9, 77.3), "LwF": (56.9, 64.7, 74.6),
    "iCaRL": (50.4, 65.7, 80.1), "LwF-VR": (57.2, 65.1, 76.6), "WiSE-FT": (52.3, 60.7, 77.7),
    "ZSCLstar": (62.2, 72.6, 84.5), "ZSCL": (68.1, 75.4, 83.6),
}


@pytest.mark.skipif(not REFERENCE.exists(), reason="../shared/reference (ZSCL's matrices) is not beside this checkout")
@pytest.mark.parametrize("method", sorted(PUBLISHED))
def test_matches_zscl_published_table(method):
    matrix, header = metrics.read_matrix_csv(REFERENCE / f"{method}_order1.csv")
    assert header[0] == "Aircraft" and matrix.shape == (11, 11)
    got = (metrics.transfer(matrix), metrics.avg(matrix), metrics.last(matrix))
    assert np.round(got, 1).tolist() == pytest.approx(list(PUBLISHED[method]), abs=0.051)


def test_csv_with_header_and_cli_json(tmp_path, capsys):
    path = tmp_path / "m.csv"
    path.write_text("a,b,c\n" + "\n".join(",".join(str(v) for v in row) for row in A))
    assert main(["metrics", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tasks"] == ["a", "b", "c"]
    assert set(metrics.METRIC_NAMES) <= set(out)
    assert out["transfer"] == pytest.approx(30.0)


@pytest.mark.parametrize("content, message", [
    ("1,2\n3\n", "different lengths"),
    ("1,2\n3,x\n", "non-numeric"),
    ("1,2,3\n4,5,6\n", "square"),
    ("", "empty"),
])
def test_cli_rejects_bad_csv(tmp_path, capsys, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    assert main(["metrics", str(path)]) == 2
    assert message in capsys.readouterr().err
