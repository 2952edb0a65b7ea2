"""The shim (uniil_lib.shim): each private attribute of another library it reads, and the token-tower protocol."""

from __future__ import annotations

import pytest
import torch

from uniil_lib.clip import TinyClipConfig, load_clip
from uniil_lib.shim import (OpenClipViTTokens, TokenImageTower, open_clip_vit_problem, token_protocol_problem,
                            token_tower, token_tower_problem, weights_version)

SMALL = TinyClipConfig(embed_dim=32, image_size=16, patch_size=8, vision_width=32, vision_layers=2,
                       text_width=32, text_layers=2, heads=2, context_length=16)


def pixels(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_open_clip_vit_embeds_then_blocks_then_pool_is_the_forward():
    """open_clip's ``_embeds`` and ``_pool`` still exist and still mean what we read them as."""
    visual = load_clip("tiny", tiny_config=SMALL).model.visual
    tower = token_tower(visual)
    assert isinstance(tower, OpenClipViTTokens) and isinstance(tower, TokenImageTower)
    with torch.no_grad():
        tokens = tower.embed(pixels())
        assert tokens.shape == (3, *tower.token_shape) == (3, (16 // 8) ** 2 + 1, 32), "class token + 4 patches"
        assert torch.equal(tower.pool_project(tower.transformer(tokens)), visual(pixels()))


def test_a_protocol_tower_is_used_as_it_is(token_clip):
    visual = token_clip().model.visual
    assert token_protocol_problem(visual) is None and open_clip_vit_problem(visual) is not None
    assert token_tower(visual) is visual
    with torch.no_grad():
        assert torch.equal(visual.pool_project(visual.transformer(visual.embed(pixels()))), visual(pixels()))


def test_a_tower_that_is_neither_is_refused_with_what_it_lacks():
    conv = torch.nn.Conv2d(3, 8, 3)
    assert "lacks embed, pool_project, token_shape" in token_protocol_problem(conv)
    with pytest.raises(ValueError, match="not an open_clip VisionTransformer.*TokenImageTower"):
        token_tower(conv)
    assert token_tower_problem(load_clip("tiny", tiny_config=SMALL).model.visual) is None


def test_a_protocol_tower_whose_blocks_are_not_batch_first_is_refused(token_clip):
    visual = token_clip().model.visual
    visual.transformer.batch_first = False
    assert "not batch_first" in token_protocol_problem(visual)


def test_weights_version_moves_with_in_place_updates_only():
    layer = torch.nn.Linear(4, 2)
    start = weights_version(layer.parameters())
    layer(torch.randn(3, 4)).sum().backward()
    assert weights_version(layer.parameters()) == start, "a forward and backward do not change the weights"
    torch.optim.SGD(layer.parameters(), lr=0.1).step()
    after_step = weights_version(layer.parameters())
    assert after_step > start
    layer.load_state_dict({k: v.clone() for k, v in layer.state_dict().items()})
    assert weights_version(layer.parameters()) > after_step


@pytest.mark.parametrize("adapted", [False, True], ids=["plain", "with MoE adapters in every text block"])
def test_a_causal_text_tower_run_up_to_the_last_end_token_gives_the_same_embeddings(adapted):
    """open_clip's text tower still pools at the end token under a causal mask: positions after the longest prompt's
    end change nothing, so the short forward equals the 16-position one (float rounding aside)."""
    from uniil_lib.adapters import AdapterConfig, attach_adapters
    from uniil_lib.clip_model import encode_text
    from uniil_lib.shim import causal_text_length, encode_text_prefix

    clip = load_clip("tiny", tiny_config=SMALL, seed=0)
    if adapted:
        attached = attach_adapters(clip.model, AdapterConfig(num_experts=4, top_k=2, bottleneck=8, image_blocks="none"))
        attached.add_router()
        with torch.no_grad():
            for p in attached.parameters():
                p.normal_(0, 0.1)
    tokens = clip.tokenizer(["a cat.", "a photo of a small red square."])
    length = causal_text_length(clip.model, tokens)
    assert length == int(tokens.argmax(-1).max()) + 1 < tokens.shape[1]
    with torch.no_grad():
        full = clip.model.encode_text(tokens)
        assert torch.allclose(encode_text_prefix(clip.model, tokens, length), full, atol=1e-6)
        assert torch.allclose(encode_text(clip.model, tokens), full, atol=1e-6)
        cut_too_short = encode_text_prefix(clip.model, tokens, length - 1)
    assert not torch.allclose(cut_too_short, full, atol=1e-3), "one position fewer loses the longest prompt's end"


def test_towers_that_are_not_causal_open_clip_text_towers_keep_every_position():
    from uniil_lib.shim import causal_text_length

    clip = load_clip("tiny", tiny_config=SMALL, seed=0)
    clip.model.text_pool_type = "first"
    assert causal_text_length(clip.model, clip.tokenizer(["a cat."])) is None
    assert causal_text_length(torch.nn.Linear(2, 2), torch.zeros(1, 5, dtype=torch.long)) is None
