"""MAGE end to end on a toy stream: attribute-guided gates in the image tower only, an attribute-guided selector,
no task identity, resume; the shared-router variant's routing memory; clear errors for a pool that lacks a class."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uniil_lib.adapters import AdapterConfig
from uniil_lib.attributes import AttributePool, MissingAttributesError, random_word_pool, scenario_vocabulary
from uniil_lib.clip import TinyClipConfig, load_clip
from uniil_lib.methods import TrainConfig, method_class
from uniil_lib.routers import DDAS, RouteMemory, routing_drift_loss
from uniil_lib.scenarios import DatasetPart, class_incremental
from uniil_lib.train import run_continual

SMALL = TinyClipConfig(embed_dim=32, image_size=16, patch_size=8, vision_width=32, vision_layers=2,
                       text_width=32, text_layers=2, heads=2, context_length=16)


def stream(squares):
    data = DatasetPart("sq", squares(4, 16, seed=0), squares(4, 6, seed=1), ("a {} square.",), "toy")
    return class_incremental("toy-cil", data, increment=2, seed=0)


def toy_pool(scenario, drop: str | None = None) -> AttributePool:
    classes, domains = scenario_vocabulary(scenario)
    return AttributePool({c: [f"{c} colour", f"{c} tint", "square shape"] for c in classes if c != drop},
                         {d: ["flat fill", "sharp edges", "no texture"] for d in domains}, {"source": "test"})


def build(name, scenario, *, seed=0, **options):
    clip = load_clip("tiny", tiny_config=SMALL, seed=seed)
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-2, seed=seed, progress=False)
    attribute_dim = 0 if name == "mage-noattr" else getattr(method_class(name), "attribute_parts", 2) * SMALL.embed_dim
    shared = name == "mage-shared"
    adapters = AdapterConfig(num_experts=4, top_k=2, bottleneck=8, image_blocks=1,
                             text_blocks="none" if shared else 1, attribute_dim=attribute_dim,
                             freeze_gate_columns=shared, balance_in_loss=shared)
    if not shared:
        options.setdefault("selector_attributes", name in ("mage", "mage-randwords", "mage-imagefeat",
                                                            "mage-constant", "mage-bias", "mage-shrunk"))
        options.setdefault("ddas", DDAS(SMALL.embed_dim + attribute_dim, hidden=8, iterations=30))
    return method_class(name)(clip, scenario, config, adapters=adapters, pool=toy_pool(scenario), **options)


def test_gates_read_attributes_in_the_image_tower_only(squares):
    method = build("mage", stream(squares))
    widths = {name: (layer.attribute_dim, layer.router_width) for name, layer in method.adapters.layers.items()}
    assert widths["image.1"] == (64, 32 + 64), widths
    assert widths["text.1"][0] == 0, "text gates must read the [CLS]/EOT token only"
    assert not method.uses_task_id


def test_image_gates_refuse_to_run_without_matched_attributes(squares):
    method = build("mage", stream(squares))
    method.before_step(method.scenario.steps[0])
    inputs, labels = method.step_inputs(method.scenario.steps[0])
    with pytest.raises(RuntimeError, match="RoutingContext.attributes"):
        with method.context.use(0):
            method.encode_image_inputs(inputs.images[:2], method._train_on_cache)


@pytest.mark.parametrize("name", ["mage", "mage-noattr", "mage-shared", "mage-randwords", "mage-imagefeat",
                                  "mage-constant", "mage-bias", "mage-shrunk"])
def test_runs_the_stream_and_resumes_bit_identically(squares, tmp_path, name):
    scenario = stream(squares)
    whole = run_continual(build(name, scenario), scenario).matrix
    run_continual(build(name, scenario), scenario, checkpoint_dir=tmp_path, stop_after=0)
    resumed = run_continual(build(name, scenario), scenario, checkpoint_dir=tmp_path).matrix
    assert whole.shape == (2, 2) and np.array_equal(whole, resumed), f"{whole} vs {resumed}"


def test_the_selector_reads_image_and_attribute_features(squares):
    scenario = stream(squares)
    method = build("mage", scenario)
    run_continual(method, scenario)
    features = method.frozen_features(scenario.steps[0].test)
    assert method.selector_input(features).shape == (len(features), 3 * SMALL.embed_dim)
    assert method.ddas.num_tasks == 2 and all(ae.fitted for ae in method.ddas.autoencoders)


def test_attributes_change_what_the_trained_gates_pick(squares):
    scenario = stream(squares)
    method = build("mage", scenario)
    run_continual(method, scenario)
    step = scenario.steps[0]
    matched = method.gate_records(step.test, route=0)["image.1"]
    own = method.gate_records(step.test, route=0, attributes=method.attribute_features(step.test))["image.1"]
    blank = method.gate_records(step.test, route=0, attributes=torch.zeros(len(step.test), 2 * SMALL.embed_dim))
    assert torch.equal(matched, own), "passing the matched attributes must give the default gates"
    assert not torch.equal(matched, blank["image.1"]), "the trained gates must depend on the attribute features"


def test_gate_records_refuse_attributes_for_gates_that_read_none(squares):
    scenario = stream(squares)
    method = build("mage-noattr", scenario)
    run_continual(method, scenario, stop_after=0)
    with pytest.raises(ValueError, match="read no attributes"):
        method.gate_records(scenario.steps[0].test, route=0, attributes=torch.zeros(1, 2 * SMALL.embed_dim))


def test_a_pool_without_a_class_names_it(squares):
    scenario = stream(squares)
    missing = scenario_vocabulary(scenario)[0][0]
    clip = load_clip("tiny", tiny_config=SMALL)
    with pytest.raises(MissingAttributesError, match=missing):
        method_class("mage")(clip, scenario, TrainConfig(progress=False), pool=toy_pool(scenario, drop=missing))


def test_routing_drift_is_zero_for_an_unchanged_gate_and_grows_with_change():
    torch.manual_seed(0)
    memory = RouteMemory.summarise(torch.randn(50, 6), torch.randn(6, 4))
    assert routing_drift_loss(memory, memory.gate).item() == pytest.approx(0.0, abs=1e-6)
    small, large = (routing_drift_loss(memory, memory.gate + s * torch.randn(6, 4)).item() for s in (0.1, 2.0))
    assert 0 < small < large


def test_shared_router_keeps_its_routing_memory_in_checkpoints(squares):
    scenario = stream(squares)
    method = build("mage-shared", scenario)
    run_continual(method, scenario)
    state = method.state_dict()
    assert any(key.startswith("route_memory.0.image.1.") for key in state)
    assert float(method.routing_memory_loss().detach()) >= 0.0
    other = build("mage-shared", scenario)
    for step in scenario.steps:
        other.before_step(step)
    other.load_state_dict(state)
    assert torch.equal(other.route_memory[0]["image.1"].gate, method.route_memory[0]["image.1"].gate)


def test_mage_trains_at_the_adapter_learning_rate_of_its_profile():
    """Regression: the MAGE methods were missing from the fast profile's per-method rates and trained at 1e-3."""
    from uniil_lib.profiles import get_profile

    fast = get_profile("fast")
    reference = fast.train_config("moe-adapters-ddas", seed=0).lr
    for name in ("mage", "mage-noattr", "mage-shared"):
        assert fast.train_config(name, seed=0).lr == reference, name


@pytest.mark.parametrize("name, balanced", [("mage", False), ("mage-noattr", False), ("moe-adapters-ddas", False),
                                            ("moe-adapters-ddas-balance", True), ("mage-shared", True)])
def test_only_the_balance_ablations_add_the_balance_loss(squares, name, balanced):
    """MAGE's routers select a specific expert combination per step: no load-balancing loss in its training loss
    (mage.py, choice 2), nor in MoE-Adapters4CL's as its authors' code runs; only the ``*-balance`` ablation (and
    ``mage-shared``, as it was measured) adds it. Every one of them computes it: one training forward, with the
    computed balance term replaced by 0, shows which adds it."""
    scenario = stream(squares)
    clip = load_clip("tiny", tiny_config=SMALL, seed=0)
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-2, seed=0, progress=False)
    options = {} if name.startswith("moe-adapters") else {"pool": toy_pool(scenario)}
    method = method_class(name)(clip, scenario, config, **options)
    step = scenario.steps[0]
    method.before_step(step)
    inputs, labels = method.step_inputs(step)
    pop = method.context.pop_aux_loss
    popped = []

    def loss_with(replace_balance: bool) -> float:
        def recording_pop():
            popped.append(pop())
            return 0.0 if replace_balance and len(popped) % 2 == 0 else popped[-1]  # the 2nd pop is the training one

        method.context.pop_aux_loss = recording_pop
        torch.manual_seed(0)
        return float(method.training_loss(inputs[:8], labels[:8], step).detach())

    difference = loss_with(False) - loss_with(True)
    balance = float(popped[1].detach())
    assert balance > 0, f"{name}: every training forward computes the balance loss, got {balance}"
    if balanced:
        assert difference == pytest.approx(balance, rel=1e-4), f"{name}: the balance loss must be added"
    else:
        assert difference == 0.0, f"{name}: the balance loss must not reach the training loss"


@pytest.mark.parametrize("name", ["mage", "mage-noattr"])
def test_freeze_coverage_option_reaches_activate_freeze(squares, name):
    scenario = stream(squares)
    clip = load_clip("tiny", tiny_config=SMALL, seed=0)
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-2, seed=0, progress=False)
    options = {"pool": toy_pool(scenario), "ddas": DDAS(SMALL.embed_dim, hidden=8, iterations=10)}
    default = method_class(name)(clip, scenario, config, **options)
    assert default.adapter_config.freeze_coverage is None, "the default stays MoE-Adapters4CL's two experts"
    method = method_class(name)(load_clip("tiny", tiny_config=SMALL, seed=0), scenario, config,
                                freeze_coverage=1.0, **options)
    assert method.adapter_config.freeze_coverage == 1.0
    method.before_step(scenario.steps[0])
    method.learn(scenario.steps[0])
    for layer in method.adapters.moe_layers():
        used = [e for e, count in enumerate(layer.usage[0].tolist()) if count > 0]
        assert method.frozen_log[0][layer.name] == used, f"{layer.name}: coverage 1.0 freezes every used expert"
    with pytest.raises(ValueError, match="not both"):
        method_class(name)(clip, scenario, config, freeze_coverage=0.9, adapters=AdapterConfig(), **options)


@pytest.mark.parametrize("name", ["mage", "mage-noattr"])
def test_freeze_per_task_option_sets_how_many_experts_a_step_freezes(squares, name):
    scenario = stream(squares)
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-2, seed=0, progress=False)
    options = {"pool": toy_pool(scenario), "ddas": DDAS(SMALL.embed_dim, hidden=8, iterations=10)}
    default = method_class(name)(load_clip("tiny", tiny_config=SMALL, seed=0), scenario, config, **options)
    assert default.adapter_config.freeze_per_task == 2, "the default stays MoE-Adapters4CL's two experts"
    method = method_class(name)(load_clip("tiny", tiny_config=SMALL, seed=0), scenario, config, freeze_per_task=3,
                                **options)
    method.before_step(scenario.steps[0])
    method.learn(scenario.steps[0])
    for layer in method.adapters.moe_layers():
        used = int((layer.usage[0] > 0).sum())
        assert len(method.frozen_log[0][layer.name]) == 3, f"{layer.name}: {used} experts used, three frozen"
    with pytest.raises(ValueError, match="not both"):
        method_class(name)(load_clip("tiny", tiny_config=SMALL, seed=0), scenario, config, freeze_per_task=3,
                           adapters=AdapterConfig(), **options)


def test_random_word_pool_keeps_the_shape_of_the_pool_and_draws_only_its_words():
    pool = AttributePool({"cat": ["pointed ears", "long thin tail", "whiskers"], "car": ["four wheels", "windscreen"]},
                         {"sketch": ["pencil lines", "no colour"]}, {"source": "test"})
    words = {w for a in pool.vocabulary() for w in a.split()}
    scrambled = random_word_pool(pool, seed=3)
    assert scrambled.classes.keys() == pool.classes.keys() and scrambled.domains.keys() == pool.domains.keys()
    for old, new in [*zip(pool.classes.values(), scrambled.classes.values()),
                     *zip(pool.domains.values(), scrambled.domains.values())]:
        assert [len(a.split()) for a in new] == [len(a.split()) for a in old]
        assert {w for a in new for w in a.split()} <= words
    assert scrambled.to_dict()["classes"] != pool.to_dict()["classes"]
    assert random_word_pool(pool, seed=3).classes == scrambled.classes, "the same seed must draw the same words"
    assert random_word_pool(pool, seed=4).classes != scrambled.classes
    assert "random words" in scrambled.metadata["source"]


def test_the_random_word_control_matches_random_words_and_the_image_control_reads_the_image(squares):
    scenario = stream(squares)
    words = build("mage-randwords", scenario)
    assert words.pool.classes == random_word_pool(toy_pool(scenario), seed=0).classes
    assert set(words.bank.texts) == set(words.pool.vocabulary()), "the gates must match the random words"
    image = build("mage-imagefeat", scenario)
    features = image.frozen_features(scenario.steps[0].test)
    matched, class_rows, domain_rows = image.match(features)
    unit = torch.nn.functional.normalize(features.float(), dim=-1)
    assert torch.allclose(matched, torch.cat([unit, unit], dim=-1))
    assert class_rows.shape == (len(features), 0) and domain_rows.shape == (len(features), 0)


def test_the_constant_control_gives_every_image_the_pools_centroids(squares):
    scenario = stream(squares)
    method = build("mage-constant", scenario)
    bank = method.bank
    features = method.frozen_features(scenario.steps[0].test)
    matched, class_rows, domain_rows = method.match(features)
    classes, domains = method.attribute_vocabulary()
    centroid = torch.cat([torch.nn.functional.normalize(bank.embeddings[bank.mask(kind, owners)].float().mean(0), dim=-1)
                          for kind, owners in (("class", classes), ("domain", domains))])
    assert matched.shape == (len(features), 2 * SMALL.embed_dim)
    assert torch.allclose(matched, centroid.expand_as(matched)), "every image must get the same second input"
    assert class_rows.shape == (len(features), 0) and domain_rows.shape == (len(features), 0)
    assert not torch.allclose(matched, build("mage", scenario).match(features)[0]), "mage's input depends on the image"
    assert method.selector_input(features).shape == (len(features), 3 * SMALL.embed_dim)


def test_the_gate_bias_candidate_reads_the_matched_attributes_and_the_centroids(squares):
    scenario = stream(squares)
    method = build("mage-bias", scenario)
    features = method.frozen_features(scenario.steps[0].test)
    matched, class_rows, domain_rows = method.match(features)
    mage_input, mage_class_rows, _ = build("mage", scenario).match(features)
    width = 2 * SMALL.embed_dim
    assert matched.shape == (len(features), 2 * width)
    assert torch.allclose(matched[:, :width], mage_input), "the first half must be mage's matched attributes"
    assert torch.allclose(matched[:, width:], method.attribute_centroids().expand(len(features), -1))
    assert torch.equal(class_rows, mage_class_rows)
    default = method_class("mage-bias")(load_clip("tiny", tiny_config=SMALL, seed=0), scenario,
                                        TrainConfig(epochs=1, progress=False), pool=toy_pool(scenario))
    assert default.adapters.layers[next(n for n in default.adapters.layers if n.startswith("image."))].attribute_dim \
        == 4 * SMALL.embed_dim, "without an adapters config the gates must be built for the wider input"


def test_the_shrunk_candidate_pulls_the_matched_attributes_halfway_to_the_centroids(squares):
    scenario = stream(squares)
    method = build("mage-shrunk", scenario)
    features = method.frozen_features(scenario.steps[0].test)
    matched, _, _ = method.match(features)
    mage_input = build("mage", scenario).match(features)[0]
    centroids = method.attribute_centroids()
    halves = [(centroids[part] + 0.5 * (mage_input[:, part] - centroids[part]))
              for part in (slice(0, SMALL.embed_dim), slice(SMALL.embed_dim, None))]
    expected = torch.cat([torch.nn.functional.normalize(h, dim=-1) for h in halves], dim=-1)
    assert torch.allclose(matched, expected, atol=1e-6)
    assert not torch.allclose(matched, mage_input) and not torch.allclose(matched, centroids.expand_as(matched))
    method.shrinkage = 1.0
    assert torch.allclose(method.match(features)[0], mage_input, atol=1e-6), "shrinkage 1 must be mage's input"
