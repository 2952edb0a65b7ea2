"""benchmarks/full_profile_memory.py in miniature: the full profile's code path on the CPU (ViT-B/16 with random
weights through a local safetensors file, the full profile's loader, adapter placement and training loop), one
step of uniil-offline with two training images per class; its last line is the JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_a_small_run_reports_images_and_peak_memory(tmp_path):
    pytest.importorskip("safetensors")
    try:
        from uniil_lib.emoji_scenarios import heldout_classes
        from uniil_lib.paths import data_root

        heldout_classes(data_root())
    except (FileNotFoundError, OSError, ValueError) as error:
        pytest.skip(f"the offline data is not fetched (bash scripts/setup.sh): {error}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(REPO / "benchmarks" / "full_profile_memory.py"), "--scenario", "uniil-offline",
               "--steps", "1", "--train-per-class", "2", "--test-per-class", "1", "--iterations", "1",
               "--batch-size", "2", "--methods", "adapter", "--weights", str(tmp_path / "vit.safetensors")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["scenario"] == "uniil-offline[:1]" and report["images"] == 20, report  # fashion-mnist: 10 x 2
    assert report["test_images"] == 10 and report["methods"] == ["adapter"]
    assert report["model"].startswith("ViT-B-16/file-"), "loaded through the local-checkpoint path"
    assert 0.5 < report["peak_rss_gb"] < 8, report
    assert (tmp_path / "vit.safetensors").stat().st_size > 500e6, "ViT-B/16's weights, saved as a local file"
