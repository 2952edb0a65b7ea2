"""CLIP loading (tiny, local checkpoint files, hub names offline), zero-shot heads and the feature cache."""

from __future__ import annotations

import time

import pytest
import torch
from safetensors.torch import save_file

from uniil_lib import clip as clip_module
from uniil_lib.clip import ClipLoadError, load_clip, zero_shot_weights
from uniil_lib.features import feature_cache_key, image_features


def test_tiny_model_is_seeded_and_encodes():
    a, b, c = load_clip("tiny", seed=0), load_clip("tiny", seed=0), load_clip("tiny", seed=1)
    pixels = torch.randn(3, 3, a.image_size, a.image_size)
    fa, fb, fc = a.encode_images(pixels), b.encode_images(pixels), c.encode_images(pixels)
    assert fa.shape == (3, 64)
    assert torch.allclose(fa.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.equal(fa, fb), "the same seed must give the same weights"
    assert not torch.allclose(fa, fc), "another seed must give other weights"
    assert a.identity == b.identity != c.identity


def test_zero_shot_weights_are_a_normalised_template_ensemble():
    model = load_clip("tiny")
    templates = ["a photo of a {}.", "a drawing of a {}."]
    weights = zero_shot_weights(model, ["cat", "dog", "car"], templates)
    assert weights.shape == (3, 64)
    assert torch.allclose(weights.norm(dim=-1), torch.ones(3), atol=1e-5)
    per_template = torch.stack([model.encode_texts([t.format("dog") for t in templates])]).squeeze(0)
    expected = torch.nn.functional.normalize(per_template.mean(0), dim=-1)
    assert torch.allclose(weights[1], expected, atol=1e-5)


def test_bad_template_is_rejected():
    with pytest.raises(ValueError, match="exactly one"):
        zero_shot_weights(load_clip("tiny"), ["cat"], ["a photo of a cat."])


def test_unknown_model_name_lists_valid_ones():
    with pytest.raises(ClipLoadError, match="Valid names: 'tiny', 'mini'"):
        load_clip("ViT-Q-99")


def test_hub_weights_offline_fail_fast_with_advice(monkeypatch):
    monkeypatch.setattr(clip_module, "_cached_hub_file", lambda name, tag: None)
    monkeypatch.setattr(clip_module, "HUB_HOST", "hub.invalid")  # a name that never resolves
    started = time.perf_counter()
    with pytest.raises(ClipLoadError, match="not reachable.*load_clip\\('mini'\\)"):
        load_clip("ViT-B-16", pretrained="openai")
    assert time.perf_counter() - started < 10, "offline failure must be fast, not a minute of retries"


def test_unknown_pretrained_tag_lists_tags():
    with pytest.raises(ClipLoadError, match="valid tags: openai"):
        load_clip("ViT-B-16", pretrained="no-such-tag")


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(ClipLoadError, match="does not exist"):
        load_clip("ViT-B-32", pretrained=str(tmp_path / "nothing.safetensors"))


def test_vit_b32_saved_to_safetensors_loads_back_identically(tmp_path):
    """A random ViT-B-32 saved to a file loads through the path users use for pretrained files."""
    original = load_clip("ViT-B-32", seed=3)
    path = tmp_path / "vit-b-32.safetensors"
    save_file({k: v.contiguous() for k, v in original.model.state_dict().items()}, str(path))
    reloaded = load_clip("ViT-B-32", pretrained=str(path), seed=99)  # another seed: weights must come from the file
    pixels = torch.randn(2, 3, 224, 224)
    texts = ["a photo of a cat.", "a photo of a dog."]
    with torch.no_grad():
        assert torch.equal(original.encode_images(pixels), reloaded.encode_images(pixels))
        assert torch.equal(original.encode_texts(texts), reloaded.encode_texts(texts))
    assert reloaded.identity.startswith("ViT-B-32/file-")


def test_feature_cache_stays_within_its_disk_budget(squares, isolated_cache, monkeypatch):
    """The files used longest ago go first; a file read counts as used; the file just written stays."""
    import os

    model = load_clip("tiny")
    folder = isolated_cache / "features"
    sets = [squares(3, 4, seed=k) for k in range(3)]
    for k, data in enumerate(sets):
        image_features(model, data, progress=False)
        path = folder / f"{feature_cache_key(model, data)}.safetensors"
        os.utime(path, (1000 + k, 1000 + k))  # written long ago, in this order
    one = max(p.stat().st_size for p in folder.glob("*.safetensors"))
    image_features(model, sets[0], progress=False)  # read: set 0 is now the most recently used
    monkeypatch.setenv("UNIIL_FEATURE_CACHE_BYTES", str(2 * one))
    image_features(model, squares(3, 4, seed=9), progress=False)  # a fourth file: two must go
    names = {p.name for p in folder.glob("*.safetensors")}
    keys = [f"{feature_cache_key(model, data)}.safetensors" for data in (*sets, squares(3, 4, seed=9))]
    assert names == {keys[0], keys[3]}, "kept: the one just read and the one just written"
    monkeypatch.setenv("UNIIL_FEATURE_CACHE_BYTES", "lots")
    with pytest.raises(ValueError, match="UNIIL_FEATURE_CACHE_BYTES must be a number of bytes"):
        image_features(model, squares(3, 4, seed=10), progress=False)


def test_feature_cache_is_written_and_read(squares, isolated_cache, monkeypatch):
    model = load_clip("tiny")
    data = squares(3, 4, seed=0)
    first = image_features(model, data, progress=False)
    assert first.shape == (12, 64)
    assert len(list((isolated_cache / "features").glob("*.safetensors"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("the encoder ran although the features were cached")

    monkeypatch.setattr(type(model), "encode_images", fail)
    second = image_features(model, data, progress=False)
    assert torch.equal(first, second)
    with pytest.raises(AssertionError, match="encoder ran"):
        image_features(model, squares(3, 4, seed=1), progress=False)  # other data: a cache miss
