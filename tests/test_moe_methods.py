"""The adapter methods end to end: the balance loss (logged by all, added only by the ``*-balance`` ablations),
activate-freeze across steps, the frozen-block cache (same loss and predictions as the full forward), zero-shot
start, resume, and the authors' class-incremental setting (``moe-adapters-cil``)."""

from __future__ import annotations

import json
from dataclasses import replace

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
ADAPTER_METHODS = ["adapter", "moe-adapters", "moe-adapters-ddas", "moe-adapters-cil"]


def scenario(squares):
    data = DatasetPart("sq", squares(4, 24, seed=0), squares(4, 6, seed=1), ("a {} square.", "a {} block."), "toy")
    return class_incremental("toy-cil", data, increment=2, seed=0)


def build(name, stream, *, seed=0, epochs=2, balance_weight=1e-2, clip=None, **options):
    clip = clip or load_clip("tiny", tiny_config=SMALL, seed=seed)
    config = TrainConfig(epochs=epochs, batch_size=8, lr=1e-2, seed=seed, progress=False, label_smoothing=0.2)
    moe, cls = name != "adapter", method_class(name)
    adapters = AdapterConfig(moe=moe, num_experts=4, top_k=2, bottleneck=8, image_blocks=1, text_blocks=1,
                             balance_weight=balance_weight, balance_in_loss=moe and cls.adds_balance_loss)
    if name == "moe-adapters-cil":
        adapters = replace(adapters, num_experts=2, freeze_per_task=0, gate_noise_at_eval=True)
    if name in ("moe-adapters-ddas", "moe-adapters-ddas-balance"):
        options.setdefault("ddas", DDAS(SMALL.embed_dim, hidden=8, iterations=30))
    return method_class(name)(clip, stream, config, adapters=adapters, **options)


def test_methods_are_registered(squares):
    assert set(ADAPTER_METHODS) <= set(method_names())
    assert method_class("moe-adapters").uses_task_id and not method_class("moe-adapters-ddas").uses_task_id
    stream = scenario(squares)
    default = create_method("moe-adapters", load_clip("tiny", tiny_config=SMALL), stream, TrainConfig(progress=False))
    assert default.adapter_config.num_experts == 22 and default.adapter_config.top_k == 2
    assert default.adapters.blocks_of("image") == [1], "the default placement adapts the top quarter of the tower"


def first_batch_loss(method, step, seed=0):
    inputs, labels = method.step_inputs(step)
    torch.manual_seed(seed)
    return method.training_loss(inputs[:8], labels[:8], step)


@pytest.mark.parametrize("name, adds", [("moe-adapters", False), ("moe-adapters-balance", True),
                                        ("moe-adapters-ddas", False), ("moe-adapters-ddas-balance", True)])
def test_only_the_balance_ablations_add_the_balance_loss(squares, name, adds):
    """The authors' MTIL code computes the balance loss and drops it; adding it is the ``*-balance`` ablation."""
    stream = scenario(squares)
    losses = {}
    for weight in (1e-2, 0.0):
        method = build(name, stream, balance_weight=weight) if weight or not adds else None
        if method is None:  # balance_in_loss needs a positive weight: compare with the method that drops it
            method = build(name.replace("-balance", ""), stream, balance_weight=0.0)
        method.before_step(stream.steps[0])
        losses[weight] = first_batch_loss(method, stream.steps[0])
    difference = (losses[1e-2] - losses[0.0]).item()
    # 2 MoE layers (1 image, 1 text) each compute 1e-2 x (CV^2 + CV^2) > 0
    if adds:
        assert difference > 1e-4, f"{name}: the balance loss must be part of the training loss"
    else:
        assert difference == 0.0, f"{name}: the balance loss is computed but must not change the loss"


def test_balance_loss_is_logged_per_step_without_being_added(squares):
    stream = scenario(squares)
    method = build("moe-adapters", stream, epochs=1)
    method.before_step(stream.steps[0])
    method.learn(stream.steps[0])
    assert set(method.balance_log) == {0} and method.balance_log[0] > 0, method.balance_log
    assert build("adapter", stream).balance_log == {}, "plain adapters have no gate, nothing to log"


@pytest.mark.parametrize("name, balance_in_loss", [("moe-adapters", True), ("moe-adapters-balance", False)])
def test_a_method_refuses_an_adapter_config_that_contradicts_its_name(squares, name, balance_in_loss):
    stream = scenario(squares)
    clip = load_clip("tiny", tiny_config=SMALL, seed=0)
    adapters = AdapterConfig(num_experts=4, image_blocks=1, text_blocks=1, balance_in_loss=balance_in_loss)
    with pytest.raises(ValueError, match="balance_in_loss"):
        method_class(name)(clip, stream, TrainConfig(progress=False), adapters=adapters)


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


def test_freeze_coverage_freezes_every_expert_a_task_used_when_the_share_is_one(squares):
    stream = scenario(squares)
    method = build("moe-adapters", stream)
    method.adapters.config = replace(method.adapters.config, freeze_coverage=1.0)
    method.before_step(stream.steps[0])
    method.learn(stream.steps[0])
    for name, layer in method.adapters.layers.items():
        used = [e for e, count in enumerate(layer.usage[0].tolist()) if count > 0]
        assert len(used) > 2, f"{name}: the toy task should spread over more than top-2's experts"
        assert method.frozen_log[0][name] == used, f"{name}: coverage 1.0 freezes every expert the task used"


def test_on_step_sees_each_learned_step_and_predict_can_force_a_route(squares):
    stream = scenario(squares)
    method = build("moe-adapters", stream)
    seen = []

    def look(index, model):
        assert model is method
        seen.append((index, model.adapters.num_routers, expert_weights(model)))

    run_continual(method, stream, on_step=look)
    assert [(index, routers) for index, routers, _ in seen] == [(0, 1), (1, 2)], "once after each step, in order"
    assert any(not torch.equal(seen[0][2][k], seen[1][2][k]) for k in seen[0][2]), "a model between steps"
    test, ids = stream.steps[0].test, stream.eval_class_ids(0, 1)
    scored = []  # which routers score the images (a spy on the scoring step)
    score = method._route_scores
    method._route_scores = lambda imageset, rows, class_ids, route: scored.append((route, len(rows))) or score(
        imageset, rows, class_ids, route)
    for route in (0, 1):  # moe-adapters routes by the task id: forcing route r is giving task id r
        scored.clear()
        assert np.array_equal(method.predict(test, ids, None, route=route), method.predict(test, ids, route))
        assert scored == [(route, len(test))] * 2
    del method._route_scores
    zeroshot = create_method("zeroshot", load_clip("tiny", tiny_config=SMALL), stream, TrainConfig(progress=False))
    assert np.array_equal(method.predict(test, ids, None, route=-1), zeroshot.predict(test, ids, None))
    with pytest.raises(ValueError, match="route 2 names no router"):
        method.predict(test, ids, None, route=2)


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


def test_evaluation_text_runs_the_frozen_text_blocks_once_and_gives_the_full_forwards_numbers(squares, monkeypatch):
    """The class prompts' output of the frozen text blocks (below the first adapted one) is kept across routes and
    steps; the class embeddings equal the full forward's bit for bit, with the cache on, off, or over its budget."""
    from uniil_lib.adapters import TEXT
    from uniil_lib.methods import adapter as adapter_module
    from uniil_lib.routers import ZERO_SHOT

    stream = scenario(squares)
    step = stream.steps[0]
    cached, plain = build("moe-adapters", stream), build("moe-adapters", stream, block_cache=False)
    start = cached.adapters.blocks_of(TEXT)[0]
    assert start > 0, "the tiny model's text adapters sit above a frozen block"
    for method in (cached, plain):
        method.before_step(step)
    cached.learn(step)
    plain.load_state_dict(cached.state_dict())
    frozen_runs = []
    cached.adapters.towers[TEXT].blocks[0].register_forward_hook(lambda *_: frozen_runs.append(1))
    ids = stream.eval_class_ids(0, 1)
    for route in (0, ZERO_SHOT):
        assert torch.equal(cached.class_text(ids, route), plain.class_text(ids, route)), route
    assert len(frozen_runs) == len(cached._eval_text_prefix) > 0, "once per prompt chunk, not once per route"
    cached._eval_text.clear()  # as after the next step's training
    cached.class_text(ids, 0)
    assert len(frozen_runs) == len(cached._eval_text_prefix), "kept over steps: the frozen blocks do not run again"
    monkeypatch.setattr(adapter_module, "EVAL_TEXT_PREFIX_BYTES", 0)
    over_budget = build("moe-adapters", stream)
    over_budget.before_step(step)
    over_budget.load_state_dict(cached.state_dict())
    assert torch.equal(over_budget.class_text(ids, 0), plain.class_text(ids, 0))
    assert over_budget._eval_text_prefix == {} and over_budget._eval_text_prefix_bytes == 0, "nothing over budget"


@pytest.mark.parametrize("name", ADAPTER_METHODS[:3])  # moe-adapters-cil has its own prompt: its own test
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


# ----- moe-adapters-cil: the authors' class-incremental setting ------------------------------------------------
def test_cil_has_two_experts_one_shared_router_and_no_freeze(squares):
    stream = scenario(squares)
    default = create_method("moe-adapters-cil", load_clip("tiny", tiny_config=SMALL), stream, TrainConfig(progress=False))
    config = default.adapter_config
    assert (config.num_experts, config.top_k, config.freeze_per_task) == (2, 2, 0)
    assert config.gate_noise_at_eval and not config.balance_in_loss
    assert default.adapters.blocks_of("image") and default.adapters.blocks_of("text"), "both towers are adapted"
    method = build("moe-adapters-cil", stream, epochs=1)
    run_continual(method, stream)
    assert method.adapters.num_routers == 1, "one router for the whole stream"
    assert all(not layer.frozen.any() for layer in method.adapters.moe_layers()), "no activate-freeze"
    assert all(p.requires_grad for p in method.adapters.parameters()), "every expert and the router keep training"
    assert method.adapters.usage("image").sum() > 0 and method.routes(3, None, lambda: None).tolist() == [0, 0, 0]


def test_cil_loss_is_over_the_current_step_classes_only(squares):
    stream = scenario(squares)
    method = build("moe-adapters-cil", stream)
    second = stream.steps[1]
    labels = torch.as_tensor(second.train.labels[:6])
    class_ids, targets = method.candidate_targets(labels, second)
    assert class_ids == list(second.class_ids) and len(class_ids) == 2, "not the 4 classes seen so far"
    assert [class_ids[t] for t in targets.tolist()] == labels.tolist()
    with pytest.raises(ValueError, match="not classes of step"):
        method.candidate_targets(torch.as_tensor(stream.steps[0].train.labels[:2]), second)


def test_cil_prompts_and_start_are_zero_shot_clip_with_the_authors_template(squares):
    stream = scenario(squares)
    method = build("moe-adapters-cil", stream)
    assert method.class_prompts(0) == (f"a bad photo of a {stream.classes[0].name}.",)
    assert stream.classes[0].prompts != method.class_prompts(0), "not the scenario's prompt ensemble"
    run = run_continual(method, stream, stop_after=0)
    clip = load_clip("tiny", tiny_config=SMALL, seed=0)  # the same weights, no adapters
    for j, step in enumerate(stream.steps):
        ids = stream.eval_class_ids(j, j)
        text = clip.encode_texts([f"a bad photo of a {stream.classes[c].name}." for c in ids])
        with torch.no_grad():
            scores = clip.encode_images(method.pixels(step.test)[:]) @ text.T
        expected = 100.0 * np.mean(np.asarray(ids)[scores.argmax(1).numpy()] == step.test.labels)
        assert run.initial[j] == pytest.approx(expected), f"step {j}: zero-shot with 'a bad photo of a {{}}.'"


def test_cil_gates_stay_noisy_at_evaluation_as_in_the_authors_code(squares):
    stream = scenario(squares)
    method = build("moe-adapters-cil", stream)
    method.before_step(stream.steps[0])
    method.learn(stream.steps[0])
    layer = method.adapters.layers["image.1"]
    with torch.no_grad():
        layer.w_noise[0].normal_()  # a noise scale clearly away from 0.7, so the two draws differ visibly
    pixels = method.pixels(stream.steps[0].test)[:4]
    method.clip.model.eval()
    method.adapters.train(False)

    def embed(seed):
        torch.manual_seed(seed)
        with method.context.use(0), torch.no_grad():
            return method.clip.encode_images(pixels)

    assert not torch.allclose(embed(0), embed(1)), "noise at evaluation: two draws give two embeddings"
    layer.gate_noise_at_eval = False
    assert torch.equal(embed(0), embed(1)), "without it evaluation is deterministic"


def test_cil_recipe_in_the_profiles():
    from uniil_lib.profiles import get_profile

    full = get_profile("full").train_config("moe-adapters-cil", seed=0, scenario="cifar100-b0inc10")
    assert (full.epochs, full.iterations, full.batch_size, full.lr) == (1, None, 128, 1e-3)
    assert (full.warmup_steps, full.label_smoothing, full.weight_decay, full.step_lr) == (30, 0.0, 0.0, None)
    fast = get_profile("fast").train_config("moe-adapters-cil", seed=0, scenario="cil-emoji")
    assert (fast.epochs, fast.batch_size, fast.lr) == (12, 32, 1e-2), "the fast profile's data budget"
