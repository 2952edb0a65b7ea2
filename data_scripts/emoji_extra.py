"""More emoji concepts in the pretraining styles: the Unicode categories that EmojiDomains leaves out.

EmojiDomains keeps the concrete-object categories (``fetch_emoji.KEPT_CATEGORIES``); its held-out classes come from
them. The same npm packages draw three more categories in the same three pretraining styles (twitter, google,
openmoji): *Smileys & Emotion*, *People & Body* and *Symbols*. They are new concepts in exactly the drawing styles
the tower learns from, the one kind of data the tuning rounds of the issue "A stronger offline CLIP" had not tried
(the icon sets were new concepts in other styles, EmojiOne and FxEmoji new styles of the same concepts).

Rules (our choices, the same as for the named icons): a drawing joins only if all three pretraining styles draw it
(so it fits the emoji part's ``(augmentation, style, class)`` rows); a name that shares a word (or its plural) with a
held-out emoji class or a Fashion-MNIST class is dropped (``banned``), which removes most faces ("face" is a word of
held-out classes); two emoji that clean to one name are both dropped; skin tones, flags and keycaps never become
classes (``fetch_emoji.is_single_class``). The fluent3d style, held out, is never read.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from types import MappingProxyType

import numpy as np

from fetch_emoji import (
    METADATA_PACKAGE, SOURCES, code_point_key, extract_style, fetch_package, filter_emoji_entries, find_svg_renderer,
    make_decoder, read_emoji_json, require_npm,
)

EXTRA_CATEGORIES = MappingProxyType({"smileys": "Smileys & Emotion", "people": "People & Body", "symbols": "Symbols"})


def parse_extra_categories(text: str) -> tuple[str, ...]:
    """``"people+symbols"`` -> the Unicode category names; ``""`` -> none.

    Raises:
        ValueError: an unknown key (the message lists the valid ones).
    """
    keys = tuple(k for k in text.split("+") if k)
    unknown = [k for k in keys if k not in EXTRA_CATEGORIES]
    if unknown:
        raise ValueError(f"unknown extra emoji categories {unknown}; valid: {'+'.join(EXTRA_CATEGORIES)}")
    return tuple(EXTRA_CATEGORIES[k] for k in keys)


def extra_categories_argument(text: str) -> str:
    """``--extra-emoji`` on a command line: the text itself once :func:`parse_extra_categories` accepts it, so a
    wrong key stops the script at once with the valid keys named."""
    try:
        parse_extra_categories(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def name_words(name: str) -> set[str]:
    """The words of a name, punctuation removed: ``"family: man, girl"`` -> {family, man, girl}."""
    return set(re.findall(r"[a-z0-9']+", name.lower()))


def extra_emoji_records(entries: list[dict], categories: tuple[str, ...], banned: set[str]) -> list[dict]:
    """emoji.json entries of ``categories`` that become extra classes (``fetch_emoji.filter_emoji_entries``, names
    two emoji share dropped), without the names that have a banned word."""
    return [r for r in filter_emoji_entries(entries, categories, drop_repeated=True)
            if not banned & name_words(r["name"])]


def extra_emoji_drawings(categories: tuple[str, ...], styles: tuple[str, ...], banned: set[str],
                         download_dir: Path) -> tuple[list[dict], np.ndarray]:
    """The extra classes drawn in every one of ``styles``, and their drawings ``(C, styles, 64, 64, 3)`` uint8 on
    white, read from the pinned npm tarballs (fetched into ``download_dir`` if missing).

    Raises:
        ValueError: ``styles`` names the held-out fluent3d style, or no class is left.
        RuntimeError: openmoji is asked for and no SVG renderer is installed (``pip install resvg-py``).
    """
    if "fluent3d" in styles:
        raise ValueError("the fluent3d style is held out of pretraining; extra emoji come in the pretraining styles")
    metadata = fetch_package(require_npm, METADATA_PACKAGE, download_dir)
    records = extra_emoji_records(read_emoji_json(metadata), categories, banned)
    wanted = {code_point_key(r["code_point"]) for r in records}
    renderer = find_svg_renderer() if "openmoji" in styles else None
    drawings = {}
    for style in styles:
        source = SOURCES[style]
        drawings[style] = extract_style(fetch_package(require_npm, source.package, download_dir), source, wanted,
                                        make_decoder(source, renderer))
    complete = [r for r in records if all(code_point_key(r["code_point"]) in drawings[s] for s in styles)]
    if not complete:
        raise ValueError(f"no emoji of {list(categories)} is drawn in every style of {list(styles)} once the held-out "
                         "words are dropped; ask for other --extra-emoji categories")
    images = np.stack([np.stack([drawings[s][code_point_key(r["code_point"])] for s in styles]) for r in complete])
    return complete, images
