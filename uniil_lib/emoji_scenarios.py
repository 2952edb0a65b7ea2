"""The EmojiDomains parts of the named offline scenarios (built in :mod:`uniil_lib.named_scenarios`).

All of them use only *held-out* classes of the ``random`` split (:func:`uniil_lib.data.emoji_split.emoji_split`),
never the classes a mini-CLIP may have been pretrained on. Our choices:

- ``cil-emoji``: the 100 held-out classes, ``twitter`` style, B0 Inc10.
- ``dil-emoji``: the same 100 classes, one style per step: twitter, google, openmoji, fluent3d (the
  held-out style last).
- ``mtil-offline`` emoji tasks: held-out *Food & Drink* classes in ``google`` style and held-out
  *Animals & Nature* classes in ``fluent3d`` style.
- ``uniil-offline``: held-out classes split in two halves by a seeded shuffle: half A for class increments
  (twitter, 3 steps of 10), half B (30 classes) for domain increments (google -> openmoji -> fluent3d).
- ``cil-emoji-xstyle``: the 100 held-out classes as in ``cil-emoji``, but each class is *trained* on drawings of
  some styles and *tested* on drawings of the others (:func:`emoji_xstyle_part`; the named scenario fixes
  ``XSTYLE_TRAIN`` / ``XSTYLE_TEST``), so a test image is never an augmentation of a drawing trained on: what
  is measured is generalisation to another drawing of the class, not memorisation of one drawing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data.base import ArrayImageSet, content_digest
from .data.emoji import EMOJI_TEMPLATES, built_styles, load_emoji_classes, load_emoji_style
from .data.emoji_split import emoji_split, split_fingerprint
from .scenarios import DatasetPart

CIL_STYLE = "twitter"
DIL_STYLES = ("twitter", "google", "openmoji", "fluent3d")
MTIL_TASKS = (("emoji-food", "Food & Drink", "google"), ("emoji-animals", "Animals & Nature", "fluent3d"))
# cil-emoji-xstyle's style assignment (our choice): train on the two flat, filled 64 px styles (Twemoji, Noto),
# test on the two that look least like them, the outlined OpenMoji line art and the Fluent 3D renders (fluent3d
# is also the style dil-emoji holds out to the end). emoji_xstyle_part takes any other disjoint assignment.
XSTYLE_TRAIN = ("twitter", "google")
XSTYLE_TEST = ("openmoji", "fluent3d")


def emoji_part(label: str, style: str, classes, profile, root: Path) -> DatasetPart:
    """Train/test images of ``classes`` in ``style``, with the profile's number of augmentations per class."""
    train = load_emoji_style(style, "train", root, classes, n_per_class=profile.emoji_train_per_class)
    test = load_emoji_style(style, "test", root, classes, n_per_class=profile.emoji_test_per_class)
    return DatasetPart(label, train, test, EMOJI_TEMPLATES, f"emoji-{style}")


def heldout_classes(root: Path) -> list[str]:
    return list(emoji_split("random", root).heldout_classes)


def heldout_fingerprint(root: Path) -> str:
    """The fingerprint of the split these scenarios draw their classes from (see ``split_fingerprint``)."""
    return split_fingerprint(emoji_split("random", root), root)


def _require_styles(styles, root: Path) -> None:
    missing = [s for s in styles if s not in built_styles(root)]
    if missing:
        raise FileNotFoundError(f"EmojiDomains styles {missing} are not built; run: python data_scripts/fetch_emoji.py")


def emoji_cil_part(profile, seed: int, root: Path) -> DatasetPart:
    return emoji_part(f"emoji-{CIL_STYLE}", CIL_STYLE, heldout_classes(root), profile, root)


def emoji_dil_parts(profile, seed: int, root: Path) -> list[DatasetPart]:
    _require_styles(DIL_STYLES, root)
    classes = heldout_classes(root)
    return [emoji_part(f"emoji-{style}", style, classes, profile, root) for style in DIL_STYLES]


def emoji_mtil_parts(profile, seed: int, root: Path) -> list[DatasetPart]:
    _require_styles([style for _, _, style in MTIL_TASKS], root)
    category = {c.name: c.category for c in load_emoji_classes(root)}
    held = heldout_classes(root)
    return [
        emoji_part(label, style, [name for name in held if category[name] == wanted], profile, root)
        for label, wanted, style in MTIL_TASKS
    ]


def uniil_emoji_halves(root: Path) -> tuple[list[str], list[str]]:
    """The two halves of ``uniil-offline``'s emoji classes: 30 held-out classes for the class increments (half A)
    and 30 others for the domain increments (half B), by a shuffle seeded with 0 (fixed, whatever the run's seed)."""
    _require_styles(DIL_STYLES, root)
    held = heldout_classes(root)
    shuffled = [held[i] for i in np.random.default_rng(0).permutation(len(held))]
    return sorted(shuffled[:30]), sorted(shuffled[30:60])


def emoji_styles_imageset(styles, split: str, classes, n_per_class: int, root: Path) -> ArrayImageSet:
    """``n_per_class`` images of each of ``classes``, drawn in ``styles`` and shared among them as evenly as
    ``n_per_class`` allows (the first ``n_per_class % len(styles)`` styles give one image more); labels in the
    order of ``classes``.

    Raises:
        ValueError: no style, a repeated style, or fewer images per class than styles (a style would give none).
    """
    styles = tuple(styles)
    if not styles or len(set(styles)) != len(styles):
        raise ValueError(f"give one or more distinct styles, got {list(styles)}")
    if n_per_class < len(styles):
        raise ValueError(f"{n_per_class} {split} images per class cannot cover the {len(styles)} styles "
                         f"{list(styles)}; give at least one image per class and style")
    shares = style_shares(n_per_class, len(styles))
    sets = [load_emoji_style(style, split, root, classes, n_per_class=n) for style, n in zip(styles, shares)]
    images = np.concatenate([s.images for s in sets])
    labels = np.concatenate([s.labels for s in sets])
    names = sets[0].class_names
    digest = content_digest(images, labels, np.asarray(names, dtype=str))
    return ArrayImageSet(images, labels, names, key=f"emoji-{'+'.join(styles)}/{split}[{digest}]")


def style_shares(n_per_class: int, n_styles: int) -> list[int]:
    """How many of a class's ``n_per_class`` images each of ``n_styles`` styles gives (in style order): as even as
    possible, the first ``n_per_class % n_styles`` styles one more. :func:`emoji_styles_imageset` stacks the styles
    in this order, so a set restricted to some classes holds ``share * classes`` images of each style in turn."""
    return [n_per_class // n_styles + (k < n_per_class % n_styles) for k in range(n_styles)]


def emoji_xstyle_part(profile, root: Path, *, train_styles=XSTYLE_TRAIN, test_styles=XSTYLE_TEST) -> DatasetPart:
    """The 100 held-out classes (in ``cil-emoji``'s order), trained on ``train_styles`` and tested on
    ``test_styles``, with the profile's emoji images per class (``emoji_train_per_class`` training images per
    class in all, shared among the training styles; the same for testing).

    Raises:
        ValueError: an unknown style, or a style both in ``train_styles`` and in ``test_styles``.
        FileNotFoundError: a style that the EmojiDomains build lacks (names the fetch command).
    """
    train_styles, test_styles = tuple(train_styles), tuple(test_styles)
    unknown = sorted(set(train_styles + test_styles) - set(DIL_STYLES))
    if unknown:
        raise ValueError(f"unknown emoji styles {unknown}; valid styles: {', '.join(DIL_STYLES)}")
    shared = sorted(set(train_styles) & set(test_styles))
    if shared:
        raise ValueError(f"styles {shared} are both trained and tested on; a cross-style stream tests on styles "
                         "it never trains on, so give disjoint train_styles and test_styles")
    _require_styles(train_styles + test_styles, root)
    classes = heldout_classes(root)
    train = emoji_styles_imageset(train_styles, "train", classes, profile.emoji_train_per_class, root)
    test = emoji_styles_imageset(test_styles, "test", classes, profile.emoji_test_per_class, root)
    return DatasetPart(xstyle_label(train_styles, test_styles), train, test, EMOJI_TEMPLATES,
                       f"emoji-{'+'.join(train_styles)}")


def xstyle_label(train_styles, test_styles) -> str:
    """The part's name (and the prefix of its step names): ``emoji-xstyle`` for the named assignment, else
    ``emoji-<train styles>-to-<test styles>``."""
    if (tuple(train_styles), tuple(test_styles)) == (XSTYLE_TRAIN, XSTYLE_TEST):
        return "emoji-xstyle"
    return f"emoji-{'+'.join(train_styles)}-to-{'+'.join(test_styles)}"
