"""A fixed split of EmojiDomains classes and styles: what a small CLIP may pretrain on, what is held out.

No pretrained CLIP weights can be had offline, so uniil_lib pretrains a small one on emoji. For the
zero-shot and continual-learning numbers to mean anything, the benchmark classes and one style must never
be seen in pretraining. This module fixes that split once, deterministically, from ``classes.json``.

Candidates are the classes drawn by EVERY built style (so a held-out class can be tested in every
domain; the few classes that some style lacks are in neither list). Two kinds of class split:

- ``"random"``: ``n_heldout`` (100) candidates chosen uniformly with ``seed`` (0). Easy-ish: a held-out
  class usually has close siblings among the pretraining classes: twelve clock faces and twelve
  half-hours differ by one hand, four banknotes differ by a currency sign, and many animals come both as
  a body ("cat") and a face ("cat face"). Zero-shot accuracy on this split partly measures
  interpolation between such siblings.
- ``"subcategory"`` (harder): whole Unicode subcategories (``animal-mammal``, ``time``, ``money``...) are
  held out, in a seeded random order, each one taken only if it brings the held-out count closer to
  ``n_heldout``. No held-out class then has a sibling of its own subcategory in pretraining.

Styles: ``fluent3d`` (3D renders, the visually most distinct style) is the held-out style when built;
otherwise the last built style in :data:`uniil_lib.data.emoji.STYLES` order. Pretraining uses the other
styles only; benchmarks may use every style.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..integrity import file_sha256, short_digest
from .emoji import CLASSES_FILE, EmojiClass, built_styles, emoji_dir, load_emoji_classes

SPLIT_KINDS = ("random", "subcategory")
HELDOUT_STYLE = "fluent3d"
N_HELDOUT = 100
SPLIT_SEED = 0
# The fingerprint (split_fingerprint) of the default random split of the EmojiDomains build that
# data_scripts/fetch_emoji.py makes from its pinned packages: the split the shipped mini-CLIP was pretrained
# around and every reported emoji result uses. Benchmarks refuse another split unless asked
# (uniil_lib.benchmark.run_benchmark's allow_other_split).
EXPECTED_SPLIT_FINGERPRINT = "230a5900c2ae"


@dataclass(frozen=True)
class EmojiSplit:
    """Classes and styles for pretraining versus held-out benchmarks.

    Attributes:
        kind: ``"random"`` or ``"subcategory"``.
        pretrain_classes: class names that pretraining may use (``classes.json`` order).
        heldout_classes: class names reserved for benchmarks (``classes.json`` order).
        pretrain_styles: styles that pretraining may use.
        heldout_styles: styles never used in pretraining.
    """

    kind: str
    pretrain_classes: tuple[str, ...]
    heldout_classes: tuple[str, ...]
    pretrain_styles: tuple[str, ...]
    heldout_styles: tuple[str, ...]


def split_styles(styles: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(pretrain_styles, heldout_styles)``: ``fluent3d`` held out if built, else the last style."""
    if len(styles) < 2:
        raise ValueError(f"a style split needs at least two built styles, got {list(styles)}; "
                         "build more with: python data_scripts/fetch_emoji.py")
    heldout = HELDOUT_STYLE if HELDOUT_STYLE in styles else styles[-1]
    return tuple(s for s in styles if s != heldout), (heldout,)


def random_heldout(candidates: Sequence[EmojiClass], n_heldout: int, seed: int) -> set[str]:
    """Names of ``n_heldout`` candidates drawn uniformly without replacement."""
    order = np.random.default_rng(seed).permutation(len(candidates))
    return {candidates[i].name for i in order[:n_heldout]}


def subcategory_heldout(candidates: Sequence[EmojiClass], n_heldout: int, seed: int) -> set[str]:
    """Names of the classes of whole subcategories, taken in seeded order while they approach ``n_heldout``."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for cls in candidates:
        groups[(cls.category, cls.subcategory)].append(cls.name)
    keys = sorted(groups)
    heldout: set[str] = set()
    for index in np.random.default_rng(seed).permutation(len(keys)):
        members = groups[keys[index]]
        if abs(len(heldout) + len(members) - n_heldout) < abs(len(heldout) - n_heldout):
            heldout.update(members)
    return heldout


def emoji_split(kind: str = "random", root: str | Path | None = None, *, n_heldout: int = N_HELDOUT,
                seed: int = SPLIT_SEED) -> EmojiSplit:
    """The split of EmojiDomains classes and styles into pretraining and held-out parts.

    Args:
        kind: ``"random"`` (uniform over classes) or ``"subcategory"`` (whole subcategories held out).
        root: data root holding ``emoji-domains/`` (default: :func:`uniil_lib.paths.data_root`).
        n_heldout: target number of held-out classes (exact for ``"random"``, approximate otherwise).
        seed: seed of the choice; the defaults define the split that uniil_lib reports results on.

    Raises:
        ValueError: unknown ``kind``, fewer than two built styles, or ``n_heldout`` not below the
            number of candidate classes.
        DatasetNotFoundError: EmojiDomains is not built (the message names the fetch command).
    """
    if kind not in SPLIT_KINDS:
        raise ValueError(f"kind must be one of {SPLIT_KINDS}, got {kind!r}")
    styles = built_styles(root)
    pretrain_styles, heldout_styles = split_styles(styles)
    candidates = [c for c in load_emoji_classes(root) if set(styles).issubset(c.styles)]
    if not 0 < n_heldout < len(candidates):
        raise ValueError(f"n_heldout must lie in [1, {len(candidates) - 1}] (there are {len(candidates)} "
                         f"classes in all built styles), got {n_heldout}")
    pick = random_heldout if kind == "random" else subcategory_heldout
    heldout = pick(candidates, n_heldout, seed)
    return EmojiSplit(
        kind=kind,
        pretrain_classes=tuple(c.name for c in candidates if c.name not in heldout),
        heldout_classes=tuple(c.name for c in candidates if c.name in heldout),
        pretrain_styles=pretrain_styles,
        heldout_styles=heldout_styles,
    )


def split_fingerprint(split: EmojiSplit, root: str | Path | None = None) -> str:
    """12 hex digits naming a split: a digest of its kind, its sorted held-out classes and the sha256 of the
    ``classes.json`` it was drawn from. Recorded in every benchmark result that uses held-out classes, so
    that two results on different splits can never be mistaken for comparable ones."""
    classes_digest = file_sha256(emoji_dir(root) / CLASSES_FILE)
    return short_digest(split.kind, classes_digest, *sorted(split.heldout_classes))
