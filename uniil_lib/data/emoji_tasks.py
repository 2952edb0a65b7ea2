"""The EmojiDomains parts of the named offline scenarios (see :mod:`uniil_lib.named_scenarios`).

All of them use only *held-out* classes of the ``random`` split (:func:`uniil_lib.data.emoji_split.emoji_split`),
never the classes a mini-CLIP may have been pretrained on. Our choices:

- ``cil-emoji``: the 100 held-out classes, ``twitter`` style, B0 Inc10.
- ``dil-emoji``: the same 100 classes, one style per step: twitter, google, openmoji, fluent3d (the
  held-out style last).
- ``mtil-offline`` emoji tasks: held-out *Food & Drink* classes in ``google`` style and held-out
  *Animals & Nature* classes in ``fluent3d`` style.
- ``uniil-offline``: held-out classes split in two halves by a seeded shuffle: half A for class increments
  (twitter, 3 steps of 10), half B (30 classes) for domain increments (google -> openmoji -> fluent3d).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..scenarios import DatasetPart, Scenario, class_incremental, domain_incremental, task_incremental
from .emoji import EMOJI_TEMPLATES, built_styles, load_emoji_classes, load_emoji_style
from .emoji_split import emoji_split

CIL_STYLE = "twitter"
DIL_STYLES = ("twitter", "google", "openmoji", "fluent3d")
MTIL_TASKS = (("emoji-food", "Food & Drink", "google"), ("emoji-animals", "Animals & Nature", "fluent3d"))


def emoji_part(label: str, style: str, classes, profile, root: Path) -> DatasetPart:
    """Train/test images of ``classes`` in ``style``, with the profile's number of augmentations per class."""
    train = load_emoji_style(style, "train", root, classes, n_per_class=profile.emoji_train_per_class)
    test = load_emoji_style(style, "test", root, classes, n_per_class=profile.emoji_test_per_class)
    return DatasetPart(label, train, test, EMOJI_TEMPLATES, f"emoji-{style}")


def heldout_classes(root: Path) -> list[str]:
    return list(emoji_split("random", root).heldout_classes)


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


def uniil_offline_parts(profile, seed: int, root: Path) -> tuple[list[Scenario], list[int]]:
    """Sub-scenarios of ``uniil-offline`` and the order that interleaves them (see named_scenarios)."""
    from ..named_scenarios import dataset_part

    _require_styles(DIL_STYLES, root)
    held = heldout_classes(root)
    shuffled = [held[i] for i in np.random.default_rng(0).permutation(len(held))]
    half_a, half_b = sorted(shuffled[:30]), sorted(shuffled[30:60])
    fashion = task_incremental("fashion", [dataset_part("fashion-mnist", profile, seed, root)])
    emoji_classes = class_incremental("emoji-classes", emoji_part("emoji-twitter", "twitter", half_a, profile, root),
                                      increment=10, seed=seed)
    digits = domain_incremental("digits", [dataset_part("mnist-5k", profile, seed, root),
                                           dataset_part("optdigits", profile, seed, root)])
    emoji_styles = domain_incremental("emoji-styles", [emoji_part(f"emoji-{s}", s, half_b, profile, root)
                                                       for s in ("google", "openmoji", "fluent3d")])
    # fashion, emoji classes 1, mnist, emoji classes 2, emoji google, emoji classes 3, emoji openmoji,
    # optdigits, emoji fluent3d: every kind of increment, interleaved.
    order = [0, 1, 2, 1, 3, 1, 3, 2, 3]
    return [fashion, emoji_classes, digits, emoji_styles], order
