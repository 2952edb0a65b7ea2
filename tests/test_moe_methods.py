"""The adapter methods end to end: the balance loss in the training loss, activate-freeze across steps, the
frozen-block cache (same loss and predictions as the full forward), zero-shot start, and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from uniil_lib.adapters import AdapterConfig
from uniil_lib.clip import TinyClipConfig, load_clip
from uniil_lib.methods import TrainConfig, create_method, method_class, method_names
from uniil_lib.routers import DDAS
from uniil_lib.scenarios import DatasetPart, class_incremental
from uniil_lib.train import run_continual

SMALL = TinyClipConfig(embed_dim=32, image_size=16, patch_size=8, vision_width=32, vision_layers=2,
                       text_width=32, text_layers=2, heads=2, context_length=16)
ADAPTER_METHODS = ["adapter", "moe-adapters", "moe-adapters-ddas"]


def scenario(squares):
    data = DatasetPart("sq", squares(4, 24, seed=0), squares(4, 6, seed=1), ("a {} square.", "a {} block."), "toy")
    return class_incremental("toy-cil", data, increment=2, seed=0)


def build(name, stream, *, seed=0, epochs=2, balance_weight=1e-2, clip=None, **options):
    clip = clip or load_clip("tiny", tiny_config=SMALL, seed=seed)
    config = TrainConfig(epochs=epochs, batch_size=8, lr=1e-2, seed=seed, progress=False, label_smoothing=0.2)
    adapters = AdapterConfig(moe=name != "adapter", num_experts=4, top_k=2, bottleneck=8, image_blocks=1,
                             text_blocks=1, balance_weight=balance_weight)
    if name == "moe-adapters-ddas":
        options.setdefault("ddas", DDAS(SMALL.embed_dim, hidden=8, iterations=30))
    return method_class(name)(clip, stream, config, adapters=adapters, **options)


def test_methods_are_registered(squares):
    assert set(ADAPTER_METHODS) <= set(method_names())
    assert method_class("moe-adapters").uses_task_id and not method_class("moe-adapters-ddas").uses_task_id
    stream = scenario(squares)
    default = create_method("moe-adapters", load_clip("tiny", tiny_config=SMALL), stream, TrainConfig(progress=False))
    assert default.adapter_config.num_experts == 22 and default.adapter_config.top_k == 2
    assert default.adapters.blocks_of("image") == [1], "on a CPU the default adapts the top quarter of the tower"


def first_batch_loss(method, step, seed=0):
    inputs, labels = method.step_inputs(step)
    torch.manual_seed(seed)
    return method.training_loss(inputs[:8], labels[:8], step)


def test_balance_loss_is_added_to_the_training_loss(squares):
    stream = scenario(squares)
    losses = {}
    for weight in (1e-2, 0.0):
        method = build("moe-adapters", stream, balance_weight=weight)
        method.before_step(stream.steps[0])
        losses[weight] = first_batch_loss(method, stream.steps[0])
    difference = (losses[1e-2] - losses[0.0]).item()
    # 4 MoE layers (2 image, 2 text) would each add 1e-2 x (CV^2 + CV^2) > 0; here 2 layers are adapted
    assert difference > 1e-4, "the balance loss must be part of the training loss"


def expert_weights(method):
    return {f"{name}.{e}": torch.cat([p.detach().flatten().clone() for p in expert.parameters()])
            for name, layer in method.adapters.layers.items() for e, expert in enumerate(layer.experts)}


def test_activate_freeze_keeps_the_most_used_experts_of_a_task_fixed(squares):
    stream = scenario(squares)
    method = build("moe-adapters", stream)
    method.before_step(stream.steps[0])
    method.learn(stream.steps[0])
    frozen = method.frozen_log[0]
    for name, layer in method.adapters.layers.items():
        counts = layer.usage[0].tolist()
        expected = sorted(sorted(range(4), key=lambda e: (-counts[e], e))[:2])
        assert frozen[name] == expected, f"{name}: the 2 most-used experts of task 0 must be frozen"
    after_first = expert_weights(method)

    method.before_step(stream.steps[1])
    method.learn(stream.steps[1])
    after_second = expert_weights(method)
    frozen_keys = {f"{name}.{e}" for name, experts in frozen.items() for e in experts}
    for key in frozen_keys:
        assert torch.equal(after_first[key], after_second[key]), f"frozen expert {key} changed in the next task"
    assert any(not torch.equal(after_first[k], after_second[k]) for k in after_first if k not in frozen_keys)
    assert method.adapters.usage("image").shape == (1, 2, 4)


@pytest.mark.parametrize("tower", ["open_clip ViT", "token protocol"])
def test_frozen_block_cache_gives_the_same_loss_and_predictions(squares, token_clip, tower):
    stream = scenario(squares)
    step = stream.steps[0]
    vit = tower == "open_clip ViT"
    model = (lambda: load_clip("tiny", tiny_config=SMALL, seed=0)) if vit else token_clip
    cached, plain = build("moe-adapters", stream, clip=model()), build("moe-adapters", stream, clip=model(),
                                                                         block_cache=False)
    assert cached.cache is not None and cached.cache.start == 1 and plain.cache is None
    for method in (cached, plain):
        method.before_step(step)
    inputs, _ = cached.step_inputs(step)
    tokens = 5 if vit else 4  # 4 patches, plus the ViT's class token
    assert inputs.shape == (len(step.train), tokens, 32), "cached inputs are block-1 inputs: (N, tokens, width)"
    assert cached.cache.bytes_per_image() == 4 * tokens * 32
    loss_cached, loss_plain = first_batch_loss(cached, step), first_batch_loss(plain, step)
    assert torch.allclose(loss_cached, loss_plain, atol=1e-5)
    (grad_cached,) = torch.autograd.grad(loss_cached, cached.adapters.layers["image.1"].w_noise[0])
    (grad_plain,) = torch.autograd.grad(loss_plain, plain.adapters.layers["image.1"].w_noise[0])
    assert torch.allclose(grad_cached, grad_plain, atol=1e-6)

    # Evaluation through the cache equals the full forward for trained adapters. (Two trainings are not compared:
    # the cache's batches round differently in the last bit, and Adam's first steps turn such differences in
    # near-zero gradients into full-size steps.)
    cached.learn(step)
    plain.load_state_dict(cached.state_dict())
    assert np.array_equal(cached.predict(step.test, step.class_ids, 0), plain.predict(step.test, step.class_ids, 0))


@pytest.mark.parametrize("name", ADAPTER_METHODS)
def test_methods_start_as_zero_shot_clip(name, squares):
    stream = scenario(squares)
    zeroshot = run_continual(create_method("zeroshot", load_clip("tiny", tiny_config=SMALL), stream,
                                           TrainConfig(progress=False)), stream, stop_after=0)
    method = run_continual(build(name, stream), stream, stop_after=0)
    assert np.array_equal(method.initial, zeroshot.initial)


def test_ddas_ignores_the_task_id(squares):
    stream = scenario(squares)
    method = build("moe-adapters-ddas", stream)
    run_continual(method, stream)
    assert set(method.ddas_log) == {0, 1} and all(r["threshold"] > 0 for r in method.ddas_log.values())
    test = stream.steps[0].test
    ids = stream.eval_class_ids(0, 1)
    assert np.array_equal(method.predict(test, ids, 0), method.predict(test, ids, None))


@pytest.mark.parametrize("name", ADAPTER_METHODS)
def test_interrupted_run_resumes_to_the_same_result(name, squares, tmp_path):
    stream = scenario(squares)
    first = build(name, stream)
    uninterrupted = run_continual(first, stream)
    partial = run_continual(build(name, stream), stream, checkpoint_dir=tmp_path, stop_after=0)
    assert json.loads((tmp_path / "progress.json").read_text())["last_step"] == 0
    assert np.isnan(partial.matrix[1]).all()

    resumed_method = build(name, stream)
    resumed = run_continual(resumed_method, stream, checkpoint_dir=tmp_path)
    assert np.array_equal(resumed.matrix, uninterrupted.matrix)
    expected, got = first.state_dict(), resumed_method.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected), "experts, routers, counters, masks, DDAS"
    if name != "adapter":
        assert any(k.endswith(".frozen") for k in got) and any(k.endswith(".usage") for k in got)
    if name == "moe-adapters-ddas":
        assert any(k.startswith("ddas.") and k.endswith("threshold") for k in got)
