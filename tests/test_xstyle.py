"""cil-emoji-xstyle: cil-emoji's classes and class order, trained on some styles and tested on the others
(issue 20), on a small EmojiDomains build in the real format (four styles, 104 classes)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from uniil_lib.data.emoji import EmojiClass, load_emoji_style, write_emoji_classes, write_emoji_style
from uniil_lib.emoji_scenarios import (XSTYLE_TEST, XSTYLE_TRAIN, emoji_styles_imageset, heldout_classes,
                                      style_shares)
from uniil_lib.integrity import write_checksums
from uniil_lib.named_scenarios import build_scenario, cil_emoji_xstyle, get_named_scenario
from uniil_lib.profiles import get_profile

STYLES = ("twitter", "google", "openmoji", "fluent3d")
N_CLASSES = 104  # > 100, so the held-out split of the real scenarios exists


def drawing(k: int, style_index: int) -> np.ndarray:
    """A disc whose size depends on the class and whose colour on the style: every style draws differently."""
    yy, xx = np.mgrid[:64, :64]
    image = np.full((64, 64, 3), 255, np.uint8)
    image[(yy - 32) ** 2 + (xx - 30) ** 2 < (6 + k % 20) ** 2] = ((60 * style_index) % 256, (37 * k) % 256, 90)
    image[28:36, 8:16] = (20, 20, 20)  # off-centre, so augmentations move pixels
    return image


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    classes = [EmojiClass(f"1F{k:03X}", f"thing {k}", "Objects", f"group-{k % 7}", STYLES) for k in range(N_CLASSES)]
    for index, style in enumerate(STYLES):
        write_emoji_style(root, style, [c.code_point for c in classes],
                          np.stack([drawing(k, index) for k in range(N_CLASSES)]))
    write_emoji_classes(root, classes, list(STYLES))
    write_checksums(root / "emoji-domains", ["classes.json", *(f"{s}.npz" for s in STYLES)], extra={"styles": 4})
    return root


FAST = get_profile("fast")


def test_named_scenario_trains_on_two_styles_and_tests_on_the_two_others(root):
    assert set(XSTYLE_TRAIN) | set(XSTYLE_TEST) == set(STYLES) and not set(XSTYLE_TRAIN) & set(XSTYLE_TEST)
    assert "fluent3d" in XSTYLE_TEST
    recipe = get_named_scenario("cil-emoji-xstyle")
    assert recipe.protocol == "class-incremental" and recipe.offline and recipe.heldout_split
    stream = build_scenario("cil-emoji-xstyle", profile=FAST, seed=0, root=root)
    classes = heldout_classes(root)
    # The pixels are exactly those of the training styles (train) and of the other styles (test), the profile's
    # number per class in all, shared evenly: cil-emoji's budget.
    train = [load_emoji_style(s, "train", root, classes, n_per_class=FAST.emoji_train_per_class // 2)
             for s in XSTYLE_TRAIN]
    test = [load_emoji_style(s, "test", root, classes, n_per_class=FAST.emoji_test_per_class // 2) for s in XSTYLE_TEST]
    for step in stream.steps:
        local = sorted(step.label_map)
        for kind, parts, images in (("train", train, step.train.images), ("test", test, step.test.images)):
            expected = np.concatenate([p.images[np.isin(p.labels, local)] for p in parts])
            assert np.array_equal(images, expected), f"step {step.index} {kind}: images of other styles"
        assert len(step.train) == 10 * FAST.emoji_train_per_class and len(step.test) == 10 * FAST.emoji_test_per_class
        assert step.domain == "emoji-twitter+google"


def images_of(stream, styles, root) -> int:
    """How many of the stream's test images are images the loader makes of ``styles`` (either split)."""
    classes = heldout_classes(root)
    made = {image.tobytes() for style in styles for split in ("train", "test")
            for n in (FAST.emoji_test_per_class // 2, FAST.emoji_test_per_class, FAST.emoji_train_per_class // 2)
            for image in load_emoji_style(style, split, root, classes, n_per_class=n).images}
    return sum(image.tobytes() in made for step in stream.steps for image in step.test.images)


def test_no_test_image_is_drawn_in_a_training_style(root):
    stream = build_scenario("cil-emoji-xstyle", profile=FAST, seed=0, root=root)
    assert images_of(stream, XSTYLE_TRAIN, root) == 0
    assert images_of(stream, XSTYLE_TEST, root) == 10 * len(stream.steps[0].test), "the check finds images"


@pytest.mark.parametrize("seed", [0, 3])
def test_class_order_and_evaluation_rule_are_cil_emoji_s(root, seed):
    xstyle = build_scenario("cil-emoji-xstyle", profile=FAST, seed=seed, root=root)
    cil = build_scenario("cil-emoji", profile=FAST, seed=seed, root=root)
    assert len(xstyle.steps) == 10 and xstyle.protocol == cil.protocol == "class-incremental"
    for ours, theirs in zip(xstyle.steps, cil.steps):
        assert [xstyle.classes[c].name for c in ours.class_ids] == [cil.classes[c].name for c in theirs.class_ids]
    assert [c.prompts for c in xstyle.classes] == [c.prompts for c in cil.classes]
    # Class-incremental: every class seen so far, no task identity.
    assert xstyle.eval_class_ids(0, after_step=4) == sorted(c for s in xstyle.steps[:5] for c in s.class_ids)
    assert xstyle.eval_class_ids(7, after_step=2) == list(range(80))
    assert all(xstyle.task_id_for(j) is None for j in range(10))


def test_another_style_assignment_is_a_parameter_and_is_named(root):
    stream = cil_emoji_xstyle(profile=FAST, seed=0, root=root, train_styles=("twitter",),
                              test_styles=("google", "fluent3d"))
    assert stream.name == "cil-emoji-twitter-to-google+fluent3d"
    assert stream.steps[0].train.key.startswith("emoji-twitter/") and "google+fluent3d" in stream.steps[0].test.key
    assert len(stream.steps[0].train) == 10 * FAST.emoji_train_per_class


@pytest.mark.parametrize("train_styles, test_styles, message", [
    (("twitter", "google"), ("google", "fluent3d"), "both trained and tested on"),
    (("twitter",), ("noto",), "unknown emoji styles"),
    ((), ("fluent3d",), "one or more distinct styles"),
])
def test_bad_style_assignments_are_refused(root, train_styles, test_styles, message):
    with pytest.raises(ValueError, match=message):
        cil_emoji_xstyle(profile=FAST, root=root, train_styles=train_styles, test_styles=test_styles)


def test_images_are_shared_among_styles_as_evenly_as_possible(root):
    classes = heldout_classes(root)[:3]
    assert (style_shares(5, 2), style_shares(4, 2), style_shares(12, 1), style_shares(7, 3)) == \
        ([3, 2], [2, 2], [12], [3, 2, 2])
    mixed = emoji_styles_imageset(("twitter", "google"), "train", classes, 5, root)
    assert len(mixed) == 15 and np.bincount(mixed.labels).tolist() == [5, 5, 5]
    assert np.array_equal(mixed.images[:9], load_emoji_style("twitter", "train", root, classes, n_per_class=3).images)
    with pytest.raises(ValueError, match="cannot cover the 2 styles"):
        cil_emoji_xstyle(profile=replace(FAST, emoji_test_per_class=1), root=root)
