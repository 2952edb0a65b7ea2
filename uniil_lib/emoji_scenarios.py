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
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data.emoji import EMOJI_TEMPLATES, built_styles, load_emoji_classes, load_emoji_style
from .data.emoji_split import emoji_split, split_fingerprint
from .scenarios import DatasetPart

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
