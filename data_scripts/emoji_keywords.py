"""Keywords of the pretraining emoji classes, from emojilib: more words for each drawing than its one name.

Real CLIP learns from captions that describe an image in many words; our pretraining captions name one class
each ("an emoji of a t-rex."), and a diagnostic of the shipped weights (``benchmarks/heldout_siblings.py``) found
that unseen classes are read only when their name has a near twin among the 749 pretraining names. emojilib
(npm ``emojilib`` 4.0.3, MIT, by Mu-An Chiou and contributors) lists the words people search each emoji by:
🦖 ``t_rex`` -> animal, nature, dinosaur, tyrannosaurus, extinct, trex; 🧬 ``dna`` -> biologist, genetics, life,
double, evolution, gene, helix. Tying each drawing to its keywords (``pretrain_mini_clip.keyword_loss``) places it
near words that unseen class names share (a sauropod is a dinosaur too): the nineteenth round of
``docs/measurements/mini_clip_tuning.md`` measures whether that reaches unseen classes (our ablation, off by
default).

Rules (our choices, the same as for the named icons and the extra emoji): emojilib's first entry (the emoji's own
snake-case name, which the class captions already say) is dropped; only keywords of letters, spaces, hyphens and
apostrophes are kept (":D" is not a word MiniLM reads as one); a keyword that shares a word (or its plural) with
a held-out emoji class or a Fashion-MNIST class (``banned``) is dropped, so no evaluation name enters pretraining
as a keyword; only the PRETRAINING classes' keywords are read.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import torch

from emoji_extra import name_words
from fetch_emoji import NpmPackage, code_point_key, fetch_package, require_npm

EMOJILIB = NpmPackage("emojilib", "4.0.3",
                      "sha512-KbWiYre9aRSaPbHrHZIz9zmoM+21LAsK1VFJtnTh1VCtWE/rNMDviGhQTmselFl95dhqtGlY22iH0leG5BuW0g==")
KEYWORD_MEMBER = "package/dist/emoji-en-US.json"  # emoji character -> [snake_case name, keyword, keyword, ...]
KEYWORD_PATTERN = re.compile(r"[a-z][a-z' -]*[a-z]")


def read_emojilib(tarball: Path) -> dict[str, list[str]]:
    """emojilib's keyword lists, keyed by normalised code point (``fetch_emoji.code_point_key``: "1F996").

    Raises:
        ValueError: the tarball has no ``package/dist/emoji-en-US.json`` (not emojilib 4).
    """
    with tarfile.open(tarball) as archive:
        try:
            member = archive.extractfile(KEYWORD_MEMBER)
        except KeyError:
            member = None
        if member is None:
            raise ValueError(f"{tarball} has no {KEYWORD_MEMBER}; is it the emojilib {EMOJILIB.version} tarball?")
        entries = json.load(member)
    return {code_point_key("-".join(f"{ord(ch):X}" for ch in emoji)): words for emoji, words in entries.items()}


def clean_keywords(entry: list[str], banned: set[str]) -> list[str]:
    """One emojilib entry -> its keywords: name dropped, lower case, ``_`` as space, non-words and keywords with
    a ``banned`` word dropped, first occurrence kept: ``["t_rex", "Dinosaur", ":D", "dinosaur"]`` -> ["dinosaur"]."""
    kept: list[str] = []
    for raw in entry[1:]:
        word = raw.lower().replace("_", " ").strip()
        if KEYWORD_PATTERN.fullmatch(word) and not banned & name_words(word) and word not in kept:
            kept.append(word)
    return kept


def class_keywords(code_points: list[str], banned: set[str], download_dir: Path) -> list[list[str]]:
    """The keywords of every class (by its ``code_point``), from the pinned emojilib tarball (fetched into
    ``download_dir`` if missing); a class emojilib does not list gets none."""
    table = read_emojilib(fetch_package(require_npm, EMOJILIB, download_dir))
    return [clean_keywords(table.get(code_point_key(cp), []), banned) for cp in code_points]


def keyword_targets(per_class: list[list[str]]) -> tuple[list[str], torch.Tensor]:
    """The sorted keyword vocabulary and ``(C, K)`` targets: row ``c`` spreads 1 evenly over class ``c``'s
    keywords (all zero for a class without any)."""
    vocabulary = sorted({k for words in per_class for k in words})
    column = {k: i for i, k in enumerate(vocabulary)}
    targets = torch.zeros(len(per_class), len(vocabulary))
    for c, words in enumerate(per_class):
        for k in words:
            targets[c, column[k]] = 1.0 / len(words)
    return vocabulary, targets
