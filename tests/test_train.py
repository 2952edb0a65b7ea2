"""The continual trainer: learning, forgetting, checkpoints, resume, and method registry errors."""

from __future__ import annotations

import json

import numpy as np
import torch
import pytest

from uniil_lib.clip import TinyClipConfig, load_clip
from uniil_lib.methods import TrainConfig, create_method, method_names
from uniil_lib.scenarios import DatasetPart, class_incremental
from uniil_lib.train import CheckpointMismatchError, run_continual

SMALL = TinyClipConfig(embed_dim=32, image_size=16, patch_size=8, vision_width=32, vision_layers=1,
                       text_width=32, text_layers=1, heads=2, context_length=16)


def scenario(squares):
    data = DatasetPart("sq", squares(4, 24, seed=0), squares(4, 6, seed=1), ("a {} square.",), "toy")
    return class_incremental("toy-cil", data, increment=2, seed=0)


def build(name, stream, seed=0, lr=1e-3):
    clip = load_clip("tiny", tiny_config=SMALL, seed=seed)
    return create_method(name, clip, stream, TrainConfig(epochs=10, batch_size=8, lr=lr, seed=seed, progress=False))


def test_finetune_learns_then_forgets(squares):
    stream = scenario(squares)
    result = run_continual(build("finetune", stream), stream)
    a = result.matrix
    assert a.shape == (2, 2) and not np.isnan(a).any()
    assert a[0, 0] >= 90, f"the first task should be learned, got {a[0, 0]:.0f}%"
    assert a[1, 0] <= a[0, 0] - 40, f"fine-tuning on task 2 should forget task 1: {a[0, 0]:.0f}% -> {a[1, 0]:.0f}%"
    assert result.trainable_params == sum(p.numel() for p in build("finetune", stream).clip.model.parameters()) - 1


def test_zeroshot_trains_nothing_and_rows_are_constant(squares):
    stream = scenario(squares)
    result = run_continual(build("zeroshot", stream), stream)
    assert result.trainable_params == 0
    assert np.array_equal(result.matrix[0, :1], result.matrix[1, :1])


def test_linear_probe_trains_only_its_head(squares):
    stream = scenario(squares)
    method = build("linear-probe", stream, lr=1e-2)
    before = {k: v.clone() for k, v in method.clip.model.state_dict().items()}
    result = run_continual(method, stream)
    assert result.trainable_params == 4 * 32
    assert all(np.array_equal(before[k], v) for k, v in method.clip.model.state_dict().items())
    assert result.matrix[0, 0] > result.initial[0], "training the head should beat its zero-shot start"


def test_same_seed_same_run(squares):
    stream = scenario(squares)
    first = run_continual(build("finetune", stream), stream).matrix
    second = run_continual(build("finetune", stream), stream).matrix
    assert np.array_equal(first, second)


def test_interrupted_run_resumes_to_the_same_result(squares, tmp_path):
    stream = scenario(squares)
    uninterrupted = run_continual(build("finetune", stream), stream)
    partial = run_continual(build("finetune", stream), stream, checkpoint_dir=tmp_path, stop_after=0)
    assert np.isnan(partial.matrix[1]).all() and not np.isnan(partial.matrix[0]).any()
    saved = json.loads((tmp_path / "progress.json").read_text())
    assert saved["last_step"] == 0 and (tmp_path / "step-00.safetensors").exists()

    resumed_method = build("finetune", stream)
    resumed_method.learn = _forbid_relearning(resumed_method.learn, stream.steps[0].name)
    resumed = run_continual(resumed_method, stream, checkpoint_dir=tmp_path)
    assert np.array_equal(resumed.matrix, uninterrupted.matrix)
    assert (tmp_path / "step-01.safetensors").exists() and not (tmp_path / "step-00.safetensors").exists()


def _forbid_relearning(learn, finished_name):
    def guarded(step):
        assert step.name != finished_name, "a finished step was trained again after resuming"
        return learn(step)
    return guarded


def test_checkpoint_of_another_run_is_refused(squares, tmp_path):
    stream = scenario(squares)
    run_continual(build("finetune", stream), stream, checkpoint_dir=tmp_path, stop_after=0)
    with pytest.raises(CheckpointMismatchError, match="another run"):
        run_continual(build("finetune", stream, seed=1), stream, checkpoint_dir=tmp_path)


def test_unknown_method_lists_valid_ones(squares):
    assert {"zeroshot", "finetune", "linear-probe"} <= set(method_names())
    with pytest.raises(KeyError, match="valid methods: zeroshot"):
        build("magic", scenario(squares))


def test_autocast_setting_is_validated_and_off_on_the_cpu():
    """Mixed precision is a CUDA-only setting: a typo fails loudly, and on the CPU training stays fp32."""
    with pytest.raises(ValueError, match="autocast"):
        TrainConfig(autocast="fp8")
    for setting in ("auto", "bf16", "fp16"):
        config = TrainConfig(autocast=setting, device="cpu")
        assert config.precision() == "fp32" and not config.grad_scaler().is_enabled()
        with config.autocast_context():
            assert not torch.is_autocast_enabled("cpu")
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
