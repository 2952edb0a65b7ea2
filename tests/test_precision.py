"""Precision follows the hardware: fp32 on the CPU, bf16 autocast on GPUs that have it, fp16 with a gradient scaler
on the others (Colab's T4); and every method builds its tensors on the configured device."""

from __future__ import annotations


import pytest
import torch

from uniil_lib.clip import TinyClipConfig, load_clip
from uniil_lib.methods import TrainConfig, create_method, method_names
from uniil_lib.pixels import loader_settings
from uniil_lib.scenarios import DatasetPart, class_incremental
from uniil_lib.train_config import choose_precision

SMALL = TinyClipConfig(embed_dim=32, image_size=16, patch_size=8, vision_width=32, vision_layers=4,
                       text_width=32, text_layers=4, heads=2, context_length=16)


@pytest.mark.parametrize("setting, device, native_bf16, expected", [
    ("auto", "cpu", True, "fp32"),        # the CPU always trains in fp32
    ("bf16", "cpu", True, "fp32"),
    ("fp16", "cpu", False, "fp32"),
    (None, "cuda", True, "fp32"),         # mixed precision switched off
    ("auto", "cuda", True, "bf16"),       # A100 / H100 / L4: native bf16
    ("auto", "cuda:1", False, "fp16"),    # T4 (compute capability 7.5): fp16 with a gradient scaler
    ("bf16", "cuda", False, "bf16"),      # an explicit choice is kept
    ("fp16", "cuda", True, "fp16"),
])
def test_precision_is_chosen_from_the_device(setting, device, native_bf16, expected):
    assert choose_precision(setting, device, native_bf16=native_bf16) == expected


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="autocast must be one of"):
        choose_precision("fp8", "cuda", native_bf16=True)


def test_the_loader_pins_memory_and_uses_workers_on_a_gpu_only():
    gpu = loader_settings(TrainConfig(device="cuda:0", loader_workers="auto"))
    cpu = loader_settings(TrainConfig(device="cpu", loader_workers="auto"))
    assert gpu.pin_memory and gpu.workers >= 1
    assert not cpu.pin_memory and cpu.workers == 0
    assert loader_settings(TrainConfig(loader_workers=3)).workers == 3
    with pytest.raises(ValueError, match="loader_workers"):
        TrainConfig(loader_workers=-1)


def squares_stream(squares):
    data = DatasetPart("sq", squares(4, 12, seed=0), squares(4, 3, seed=1), ("a {} square.",), "toy")
    return class_incremental("toy", data, increment=2, seed=0)


def trained_weights(stream, scaler=None, monkeypatch=None):
    clip = load_clip("tiny", tiny_config=SMALL, seed=0)
    method = create_method("finetune", clip, stream, TrainConfig(iterations=3, batch_size=8, lr=1e-3,
                                                                    progress=False))
    if scaler is not None:
        monkeypatch.setattr(TrainConfig, "grad_scaler", lambda self: scaler)
    method.before_step(stream.steps[0])
    method.learn(stream.steps[0])
    return {name: p.detach().clone() for name, p in method.clip.model.named_parameters()}


def test_the_gradient_scaler_path_gives_the_unscaled_update(squares, monkeypatch):
    """fp16's loss scaling multiplies the loss by a power of two and divides the gradients by it again: exact in
    fp32, so the trained weights are bit-identical to a run without a scaler (torch's CPU scaler stands in for
    the T4's CUDA one: the same class, the same loop)."""
    stream = squares_stream(squares)
    plain = trained_weights(stream)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**14)
    scaled = trained_weights(stream, scaler, monkeypatch)
    assert scaler.get_scale() == 2.0**14, "no overflow: the scale stays"
    assert all(torch.equal(plain[name], scaled[name]) for name in plain)


def test_the_gradient_scaler_skips_steps_whose_scaled_gradients_overflow(squares, monkeypatch):
    stream = squares_stream(squares)
    before = {name: p.detach().clone() for name, p in load_clip("tiny", tiny_config=SMALL, seed=0)
              .model.named_parameters()}
    scaler = torch.amp.GradScaler("cpu", init_scale=3e38)  # loss x 3e38 overflows fp32: every step is skipped
    after = trained_weights(stream, scaler, monkeypatch)
    assert scaler.get_scale() < 3e38 / 4, "each overflow halves the scale"
    assert all(torch.equal(before[name], after[name]) for name in before), "a skipped step changes no weight"


@pytest.mark.parametrize("name", method_names())
def test_every_method_builds_its_tensors_on_the_configured_device(name, squares):
    stream = squares_stream(squares)
    config = TrainConfig(iterations=1, batch_size=8, progress=False, device="cpu")
    clip = load_clip("tiny", tiny_config=SMALL, seed=0)
    options = {"pool": _toy_pool(stream)} if name.startswith("mage") else {}
    method = create_method(name, clip, stream, config, **options)
    method.before_step(stream.steps[0])
    method.learn(stream.steps[0])
    device = torch.device(config.device)
    tensors = {"model": list(method.clip.model.parameters()), "trained": method.trainable_parameters()}
    for attribute in ("head", "text", "A", "B", "A_t", "B_t"):
        value = getattr(method, attribute, None)
        if torch.is_tensor(value):
            tensors[attribute] = [value]
    wrong = {kind: {str(t.device) for t in group} for kind, group in tensors.items()
             if any(t.device != device for t in group)}
    assert not wrong, f"{name}: tensors not on {device}: {wrong}"
    assert method.predict(stream.steps[0].test, stream.steps[0].class_ids, 0).shape == (len(stream.steps[0].test),)


def _toy_pool(stream):
    from uniil_lib.attributes import AttributePool, scenario_vocabulary

    classes, domains = scenario_vocabulary(stream)
    return AttributePool({c: [f"{c} colour", f"{c} tint"] for c in classes},
                         {d: ["flat fill", "sharp edges"] for d in domains}, {"source": "test"})
