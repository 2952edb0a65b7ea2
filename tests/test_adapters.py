"""Adapters and MoE adapters: identity at attach, exact detach, parameter counts, activate-freeze, routing
context without globals, the Hugging Face BERT text tower, and running the image tower in two halves."""

from __future__ import annotations

from dataclasses import replace

import open_clip
import pytest
import torch

from uniil_lib.adapters import (
    Adapter, AdapterConfig, AdaptedBlock, MoEAdapter, attach_adapters, detach_adapters, find_towers,
    resolve_blocks, text_routing_is_input_independent,
)
from uniil_lib.clip import TinyClipConfig, load_clip
from uniil_lib.clip_model import trim_padding
from uniil_lib.routers import RoutingContext
from uniil_lib.tower_split import block_input, image_prefix, image_suffix, run_blocks_from

SMALL = TinyClipConfig(embed_dim=32, image_size=16, patch_size=8, vision_width=32, vision_layers=2,
                       text_width=32, text_layers=2, heads=2, context_length=16)
MOE = AdapterConfig(num_experts=4, top_k=2, bottleneck=8)


def tiny_model(seed=0):
    return load_clip("tiny", tiny_config=SMALL, seed=seed).model.eval()


def inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(3, 3, 16, 16, generator=generator)
    tokens = open_clip.tokenizer.SimpleTokenizer(context_length=16)(["a red square.", "a cat.", "two dogs"])
    return pixels, tokens


def outputs(model, pixels, tokens):
    with torch.no_grad():
        return model.encode_image(pixels), model.encode_text(tokens)


def perturb(adapters):
    """Give every up-projection non-zero weights, so the adapters change the model's outputs."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in adapters.model.modules():
            if isinstance(module, Adapter):
                module.up.weight.copy_(torch.randn(module.up.weight.shape, generator=generator))
            if isinstance(module, MoEAdapter):
                for gate in module.w_gate:
                    gate.copy_(torch.randn(gate.shape, generator=generator))


@pytest.mark.parametrize("config", [MOE, AdapterConfig(moe=False, bottleneck=8)], ids=["moe", "plain"])
def test_attach_is_identity_and_detach_restores_exactly(config):
    model = tiny_model()
    pixels, tokens = inputs()
    before = outputs(model, pixels, tokens)
    originals = list(model.visual.transformer.resblocks) + list(model.transformer.resblocks)

    adapters = attach_adapters(model, config)
    adapters.add_router()
    with adapters.context.use(0):
        attached = outputs(model, pixels, tokens)
        perturb(adapters)
        changed = outputs(model, pixels, tokens)
    assert all(torch.equal(a, b) for a, b in zip(before, attached)), "zero up-projections must give the same outputs"
    assert not torch.allclose(before[0], changed[0]), "non-zero adapters should change image features"

    assert detach_adapters(model) == 4
    assert list(model.visual.transformer.resblocks) + list(model.transformer.resblocks) == originals
    assert all(torch.equal(a, b) for a, b in zip(before, outputs(model, pixels, tokens)))
    assert not any(isinstance(m, (Adapter, MoEAdapter)) for m in model.modules())


def test_attaching_twice_is_refused():
    model = tiny_model()
    attach_adapters(model, MOE)
    with pytest.raises(ValueError, match="already has an adapter"):
        attach_adapters(model, MOE)


def test_parameter_counts_match_hand_computation():
    model = tiny_model()
    config = AdapterConfig(num_experts=4, top_k=2, bottleneck=8, image_blocks=1, text_blocks="all")
    adapters = attach_adapters(model, config)
    assert sorted(adapters.layers) == ["image.1", "text.0", "text.1"]
    # one expert: 32*8 + 8 (down) + 8*32 + 32 (up) = 552; 4 experts x 3 layers = 6624
    assert Adapter.parameter_count(32, 8) == 552
    assert adapters.parameter_counts() == {"experts": 6624, "gates": 0, "total": 6624}
    adapters.add_router()
    adapters.add_router()
    # per router and layer: w_gate and w_noise, 32 x 4 each = 256; 2 routers x 3 layers = 1536
    assert adapters.parameter_counts() == {"experts": 6624, "gates": 1536, "total": 8160}
    plain = attach_adapters(tiny_model(), AdapterConfig(moe=False, bottleneck=8, text_blocks="none"))
    assert plain.parameter_counts()["total"] == 2 * 552


def test_block_specs():
    assert resolve_blocks("all", 12) == tuple(range(12))
    assert resolve_blocks("none", 12) == ()
    assert resolve_blocks(3, 12) == (9, 10, 11)
    assert resolve_blocks(0.25, 12) == (9, 10, 11) and resolve_blocks(0.25, 6) == (4, 5)
    assert resolve_blocks(range(8, 12), 12) == (8, 9, 10, 11) and resolve_blocks([-1], 12) == (11,)
    with pytest.raises(ValueError, match="out of range"):
        resolve_blocks([12], 12)


def test_activate_freeze_freezes_the_most_used_experts():
    layer = MoEAdapter(8, RoutingContext(), MOE, name="image.0")
    layer.add_router()
    layer.usage[0] = torch.tensor([5, 1, 9, 3])
    assert layer.freeze_most_used(0, 2) == [0, 2]
    assert layer.frozen.tolist() == [True, False, True, False]
    assert [e.up.weight.requires_grad for e in layer.experts] == [False, True, False, True]

    layer.add_router()
    layer.usage[1] = torch.tensor([5, 7, 7, 7])
    assert layer.freeze_most_used(1, 2) == [1, 2], "ties go to the lower index"
    assert layer.frozen.tolist() == [True, True, True, False]
    layer.add_router()
    layer.set_trainable(2)
    assert [g.requires_grad for g in layer.w_gate] == [False, False, True]
    assert [e.down.weight.requires_grad for e in layer.experts] == [False, False, False, True]


def test_activate_freeze_by_coverage_adds_experts_until_they_carry_the_share():
    usage = torch.tensor([50, 30, 10, 6, 4, 0])  # shares .50 .30 .10 .06 .04 .00

    def frozen_for(coverage, n=2):
        layer = MoEAdapter(8, RoutingContext(), replace(MOE, num_experts=6), name="image.0")
        layer.add_router()
        return layer.freeze_most_used(0, n, counts=usage, coverage=coverage)

    assert frozen_for(None) == [0, 1], "no coverage: exactly n, the authors' rule"
    assert frozen_for(0.8) == [0, 1], "the top two carry exactly .80"
    assert frozen_for(0.9) == [0, 1, 2] and frozen_for(0.95) == [0, 1, 2, 3]
    assert frozen_for(1.0) == [0, 1, 2, 3, 4], "an expert never used is never frozen for the coverage"
    assert frozen_for(0.3) == [0, 1], "never fewer than n"
    assert frozen_for(0.3, n=0) == [0]


def test_freeze_per_task_must_not_be_negative():
    with pytest.raises(ValueError, match="freeze_per_task counts experts"):
        replace(MOE, freeze_per_task=-1)


def test_freeze_coverage_must_be_a_share():
    with pytest.raises(ValueError, match="freeze_coverage is a share"):
        replace(MOE, freeze_coverage=1.5)
    with pytest.raises(ValueError, match="freeze_coverage is a share"):
        replace(MOE, freeze_coverage=0.0)


def test_usage_counts_training_forwards_of_the_current_router_only():
    context = RoutingContext()
    layer = MoEAdapter(8, context, MOE)
    layer.add_router()
    layer.add_router()
    x = torch.randn(5, 3, 8)
    with context.use(1):
        layer.train()
        layer(x)
        layer.eval()
        layer(x)
    assert layer.usage[0].sum() == 0 and layer.usage[1].sum() == 5 * MOE.top_k


def test_two_models_route_independently():
    first, second = tiny_model(), tiny_model()
    pixels, tokens = inputs()
    frozen = outputs(second, pixels, tokens)
    a, b = attach_adapters(first, MOE), attach_adapters(second, MOE)
    assert a.context is not b.context
    for adapters in (a, b):
        adapters.add_router()
        perturb(adapters)
    with a.context.use(0):  # only the first model routes; the second's adapters stay off
        routed = outputs(first, pixels, tokens)
        off = outputs(second, pixels, tokens)
    assert all(torch.equal(x, y) for x, y in zip(off, frozen))
    assert not torch.allclose(routed[0], frozen[0])
    with pytest.raises(IndexError, match="router 3 does not exist"), b.context.use(3):
        outputs(second, pixels, tokens)


def test_open_clip_text_routing_ignores_the_text():
    model = tiny_model()
    _, tokens = inputs()
    adapters = attach_adapters(model, MOE)
    adapters.add_router()
    perturb(adapters)
    assert text_routing_is_input_independent(model)
    with adapters.context.use(0), adapters.context.recording() as gates, torch.no_grad():
        model.encode_text(tokens)
        model.encode_image(inputs()[0])
    for name in ("text.0", "text.1"):
        assert (gates[name] == gates[name][0]).all(), "every prompt should take the same experts"
    assert not (gates["image.1"] == gates["image.1"][0]).all(), "image routing depends on the image"


@pytest.fixture(scope="module")
def bert_clip(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tiny-bert")
    transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=32).save_pretrained(folder)
    vision = open_clip.CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8, image_size=16)
    text = dict(hf_model_name=str(folder), hf_model_pretrained=False, hf_pooler_type="mean_pooler",
                hf_proj_type="linear")
    torch.manual_seed(0)
    return open_clip.CustomTextCLIP(embed_dim=32, vision_cfg=vision, text_cfg=text).eval()


def bert_tokens():
    tokens = torch.randint(1, 100, (3, 12), generator=torch.Generator().manual_seed(0))
    tokens[:, 9:] = 0  # padding
    return tokens


def test_hf_bert_text_tower_attach_and_detach(bert_clip):
    tokens = bert_tokens()
    tower = find_towers(bert_clip)["text"]
    assert tower.kind == "bert" and not text_routing_is_input_independent(bert_clip)
    originals = [layer.output for layer in tower.blocks]
    with torch.no_grad():
        before = bert_clip.encode_text(tokens)
    adapters = attach_adapters(bert_clip, AdapterConfig(num_experts=4, bottleneck=8, image_blocks="none"))
    adapters.add_router()
    with adapters.context.use(0), torch.no_grad():
        assert torch.equal(bert_clip.encode_text(tokens), before)
        perturb(adapters)
        with adapters.context.recording() as gates:
            changed = bert_clip.encode_text(tokens)
    assert not torch.allclose(changed, before)
    assert not (gates["text.1"] == gates["text.1"][0]).all(), "BERT's [CLS] token sees the whole text"
    assert detach_adapters(bert_clip) == 2
    assert [layer.output for layer in tower.blocks] == originals
    with torch.no_grad():
        assert torch.equal(bert_clip.encode_text(tokens), before)


def test_trimming_padding_leaves_bert_text_features_unchanged(bert_clip):
    tokens = torch.cat([bert_tokens(), torch.zeros(3, 20, dtype=torch.long)], dim=1)
    trimmed = trim_padding(tokens, 0)
    assert trimmed.shape == (3, 9)
    with torch.no_grad():
        assert torch.allclose(bert_clip.encode_text(trimmed), bert_clip.encode_text(tokens), atol=1e-5)


def assert_two_halves_equal_the_full_forward(model) -> None:
    """With MoE adapters on the first image block, the tower's prefix then suffix, split at every block boundary,
    gives the full forward's features (the frozen-block cache relies on it)."""
    adapters = attach_adapters(model, AdapterConfig(num_experts=4, bottleneck=8, image_blocks=1, text_blocks="none"))
    adapters.add_router()
    perturb(adapters)
    pixels, _ = inputs()
    with adapters.context.use(0), torch.no_grad():
        full = model.encode_image(pixels)
        for start in (0, 1, 2):
            split = image_suffix(model.visual, image_prefix(model.visual, pixels, start), start)
            assert torch.allclose(split, full, atol=1e-6), f"split at block {start} differs"


def test_image_tower_in_two_halves_equals_the_full_forward():
    assert_two_halves_equal_the_full_forward(tiny_model())


def test_a_token_protocol_tower_is_found_as_the_image_tower(token_clip):
    model = token_clip().model
    tower = find_towers(model)["image"]
    assert (tower.kind, tower.owner, tower.attr, tower.width) == ("open_clip", model.visual.transformer, "resblocks", 32)
    assert tower.blocks is model.visual.transformer.resblocks


def test_a_token_protocol_tower_in_two_halves_equals_the_full_forward(token_clip):
    assert_two_halves_equal_the_full_forward(token_clip().model.eval())


@pytest.mark.parametrize("config", [MOE, AdapterConfig(moe=False, bottleneck=8)], ids=["moe", "plain"])
def test_attach_and_detach_on_a_token_protocol_tower(token_clip, config):
    model = token_clip().model.eval()
    pixels, _ = inputs()
    originals = list(model.visual.transformer.resblocks)
    with torch.no_grad():
        before = model.encode_image(pixels)
    adapters = attach_adapters(model, config)
    assert adapters.blocks_of("image") == [0, 1]
    assert all(isinstance(block, AdaptedBlock) for block in model.visual.transformer.resblocks)
    adapters.add_router()
    with adapters.context.use(0), torch.no_grad():
        assert torch.equal(model.encode_image(pixels), before), "zero up-projections must give the same outputs"
        perturb(adapters)
        assert not torch.allclose(model.encode_image(pixels), before), "non-zero adapters change the features"
    assert detach_adapters(model) == 4
    assert list(model.visual.transformer.resblocks) == originals
    with torch.no_grad():
        assert torch.equal(model.encode_image(pixels), before)


@pytest.mark.parametrize("tower_kind", ["open_clip", "bert"])
def test_text_tower_from_a_cached_block_input_equals_the_full_forward(tower_kind, bert_clip):
    model = tiny_model() if tower_kind == "open_clip" else bert_clip
    tokens = inputs()[1] if tower_kind == "open_clip" else bert_tokens()
    adapters = attach_adapters(model, AdapterConfig(num_experts=4, bottleneck=8, image_blocks="none", text_blocks=1))
    adapters.add_router()
    perturb(adapters)
    tower = adapters.towers["text"]
    try:
        with adapters.context.use(0), torch.no_grad():
            full = model.encode_text(tokens)
            hidden = block_input(tower, 1, lambda: model.encode_text(tokens))
            with run_blocks_from(tower, 1, hidden):
                resumed = model.encode_text(tokens)
            assert len(tower.blocks) == 2, "the block list must be restored"
            with pytest.raises(RuntimeError, match="other inputs"), run_blocks_from(tower, 1, hidden[:1]):
                model.encode_text(tokens)
    finally:
        adapters.detach()
    assert torch.allclose(resumed, full, atol=1e-6)


def test_adapted_block_keeps_open_clip_dtype_query():
    model = tiny_model()
    attach_adapters(model, MOE)
    assert isinstance(model.transformer.resblocks[0], AdaptedBlock)
    assert model.transformer.get_cast_dtype() == torch.float32


def test_batched_dispatch_equals_the_expert_loop_in_value_and_gradient():
    """The GPU dispatch (gathered weights, batched products) computes what the per-expert loop computes,
    and sends each expert the same gradient; a frozen expert gets none either way."""
    from uniil_lib.adapters import dispatch_batched, dispatch_to_experts

    torch.manual_seed(0)
    layer = MoEAdapter(16, RoutingContext(), AdapterConfig(num_experts=5, top_k=2, bottleneck=4, dropout=0.0))
    with torch.no_grad():
        for expert in layer.experts:  # non-zero up-projections and biases, so every expert's output counts
            for parameter in expert.parameters():
                parameter.copy_(torch.randn(parameter.shape))
    layer.experts[3].requires_grad_(False)
    x = torch.randn(6, 3, 16)
    logits = torch.randn(6, 5)
    top = logits.topk(2, dim=1)
    gates = torch.zeros_like(logits).scatter(1, top.indices, top.values.softmax(dim=1))
    results = []
    for run in (lambda: dispatch_to_experts(layer.experts, gates, x), lambda: dispatch_batched(layer.experts, gates, x, 2)):
        layer.zero_grad(set_to_none=True)
        out = run()
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads = [None if p.grad is None else p.grad.clone() for p in layer.experts.parameters()]
        results.append((out.detach(), grads))
    (loop_out, loop_grads), (batched_out, batched_grads) = results
    torch.testing.assert_close(batched_out, loop_out, rtol=1e-5, atol=1e-6)
    assert loop_out.abs().max() > 0
    for loop_grad, batched_grad in zip(loop_grads, batched_grads):
        if loop_grad is None:
            assert batched_grad is None
        else:
            torch.testing.assert_close(batched_grad, loop_grad, rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in layer.experts[3].parameters())


def test_dispatch_mode_is_validated():
    with pytest.raises(ValueError, match="dispatch"):
        AdapterConfig(dispatch="vectorised")
