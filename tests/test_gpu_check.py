"""scripts/gpu_check.sh and its Python half (benchmarks/gpu_check.py), as far as a machine without a GPU can check
them: the profile file it writes is the full profile's path with small data and a local weights file that loads,
the summary of step times is the median of what learn() measured, it names every method, and without a GPU the
script stops at once with a clear message. (The GPU run itself needs an NVIDIA GPU.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from uniil_lib.clip import load_clip
from uniil_lib.methods import method_names
from uniil_lib.profiles import get_profile
from repo_scripts import load_script

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def check():
    return load_script("benchmarks/gpu_check.py")


def test_prepare_writes_a_full_profile_file_with_a_local_weights_file(check, tmp_path):
    path = check.prepare(tmp_path, None, model="ViT-S-32", allow_cpu=True)
    profile, full = get_profile(str(path)), get_profile("full")
    weights = Path(profile.pretrained)
    assert weights.parent == tmp_path and weights.is_file()
    assert load_clip("ViT-S-32", pretrained=str(weights)).identity.startswith("ViT-S-32/file-")
    assert profile.name == "gpu-check" and profile.train.iterations == check.ITERATIONS
    for field in ("device", "autocast", "loader_workers", "adapter_placement", "batch_size"):
        assert getattr(profile.train, field) == getattr(full.train, field), field
    assert profile.train_per_class == 4 and profile.step_lr == full.step_lr


def test_prepare_refuses_a_missing_weights_file_and_a_machine_without_cuda(check, tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="does not exist"):
        check.prepare(tmp_path, tmp_path / "absent.safetensors", allow_cpu=True)
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs an NVIDIA GPU"):
        check.prepare(tmp_path, None)


def test_summarise_takes_the_median_over_steps_of_the_times_measured_in_learn(check, tmp_path):
    result = {"scenario": "uniil-offline", "profile": "gpu-check", "model": "ViT-B-16/file-x", "methods": {
        "finetune": {"median_iteration_seconds": {"0": 0.09, "1": 0.07, "2": 0.5}, "device": "cuda",
                     "precision": "bf16"},
        "zeroshot": {"median_iteration_seconds": {}, "device": "cuda", "precision": "bf16"}}}
    (tmp_path / check.RESULT_FILE).write_text(json.dumps(result))
    summary = check.summarise(tmp_path)
    assert summary["methods"]["finetune"]["median_iteration_seconds"] == 0.09
    assert summary["methods"]["zeroshot"]["median_iteration_seconds"] is None
    assert json.loads((tmp_path / check.STEP_TIMES_FILE).read_text()) == summary


def test_it_runs_every_method(check):
    assert check.all_methods() == list(method_names())


def test_without_a_gpu_the_script_stops_at_once_with_a_clear_message(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "", str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "needs an NVIDIA GPU" in done.stderr, (done.returncode, done.stderr[-2000:])
    assert not (tmp_path / "out" / "benchmark.json").exists()


def test_merge_joins_the_one_method_results_and_names_the_methods_that_did_not_finish(check, tmp_path):
    with pytest.raises(SystemExit, match="no method finished"):
        check.merge(tmp_path, ["finetune", "mage"])
    folder = tmp_path / check.METHODS_FOLDER
    folder.mkdir()
    for name, seconds in (("finetune", 0.2), ("adapter", 0.3)):
        (folder / f"{name}.json").write_text(json.dumps(
            {"scenario": "uniil-offline", "profile": "gpu-check", "model": "ViT-B-16/file-x", "methods": {
                name: {"median_iteration_seconds": {"0": seconds}, "device": "cuda", "precision": "bf16"}}}))
    merged = check.merge(tmp_path, ["finetune", "mage", "adapter"])
    assert list(merged["methods"]) == ["finetune", "adapter"] and merged["not_finished"] == ["mage"]
    summary = check.summarise(tmp_path)
    assert summary["not_finished"] == ["mage"] and summary["methods"]["adapter"]["median_iteration_seconds"] == 0.3
