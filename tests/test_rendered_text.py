"""Rendered digits, numbers and words for pretraining: deterministic from the seed, captioned, never handwriting."""

from __future__ import annotations

import numpy as np
import pytest

from uniil_lib.data.rendered_text import (
    DIGIT_WORDS, EXCLUDED_FONT_WORDS, RenderConfig, find_fonts, font_manifest, render_item, render_set, text_captions,
)

WORDS = ("river", "green", "table")


@pytest.fixture(scope="module")
def fonts():
    found = find_fonts()
    assert found, "find_fonts must find Debian fonts or fall back to matplotlib's"
    return found[:6]


def test_same_seed_same_pixels_and_captions(fonts):
    first = render_set(12, seed=3, fonts=fonts, words=WORDS)
    second = render_set(12, seed=3, fonts=fonts, words=WORDS)
    for a, b in zip(first, second):
        assert np.array_equal(a.image, b.image) and a.captions == b.captions and a.text == b.text


def test_an_item_does_not_depend_on_the_others(fonts):
    alone = render_item(7, seed=3, fonts=fonts, words=WORDS)
    in_set = render_set(8, seed=3, fonts=fonts, words=WORDS)[7]
    assert np.array_equal(alone.image, in_set.image)


def test_another_seed_gives_other_images(fonts):
    a = render_set(6, seed=0, fonts=fonts, words=WORDS)
    b = render_set(6, seed=1, fonts=fonts, words=WORDS)
    assert sum(np.array_equal(x.image, y.image) for x, y in zip(a, b)) == 0


def test_images_have_the_configured_shape_and_show_something(fonts):
    for item in render_set(20, seed=0, fonts=fonts, words=WORDS, config=RenderConfig(image_size=64)):
        assert item.image.shape == (64, 64, 3) and item.image.dtype == np.uint8
        assert item.image.std() > 5, f"item {item.text!r} is blank"
        assert item.kind in ("digit", "number", "word")


def test_digit_captions_name_the_digit():
    captions = text_captions("digit", "7")
    assert "the number 7." in captions and f"the digit {DIGIT_WORDS[7]}." in captions
    assert all("handwritten" not in c for c in captions), "rendered digits are printed, never 'handwritten'"
    assert text_captions("word", "river")[0] == 'the word "river".'


def test_no_handwriting_or_symbol_fonts():
    for path in find_fonts():
        assert not any(word in path.name for word in EXCLUDED_FONT_WORDS), path


def test_manifest_records_digests(fonts):
    manifest = font_manifest(fonts[:2])
    assert [m["name"] for m in manifest] == [p.name for p in fonts[:2]]
    assert all(len(m["sha256"]) == 64 for m in manifest)


def test_no_fonts_is_a_clear_error():
    with pytest.raises(ValueError, match="apt-get install"):
        render_item(0, seed=0, fonts=[], words=WORDS)


def _ink_box(image: np.ndarray) -> tuple[float, float]:
    """Height and width of the bounding box of the pixels far (in luminance) from the image's median, as shares of
    the image side. The text/background luminance gap is at least 90, so 45 separates them."""
    lum = image.astype(float) @ np.array([0.299, 0.587, 0.114])
    ys, xs = np.nonzero(np.abs(lum - np.median(lum)) > 45)
    if not len(ys):
        return 0.0, 0.0
    return (np.ptp(ys) + 1) / image.shape[0], (np.ptp(xs) + 1) / image.shape[1]


def _ink_extent(image: np.ndarray) -> float:
    return max(_ink_box(image))


def _ink_height(image: np.ndarray) -> float:
    return _ink_box(image)[0]


def test_max_fill_lets_text_span_the_frame_and_changes_nothing_else(fonts):
    sharp = dict(image_size=64, low_resolution=0.0, grayscale=0.0)
    shipped = render_set(40, seed=0, fonts=fonts, words=WORDS, config=RenderConfig(**sharp))
    framed = render_set(40, seed=0, fonts=fonts, words=WORDS, config=RenderConfig(max_fill=1.0, **sharp))
    assert [(a.kind, a.text, a.captions) for a in shipped] == [(b.kind, b.text, b.captions) for b in framed], \
        "the same random draws: only the size of the text changes"
    before, after = [_ink_extent(a.image) for a in shipped], [_ink_extent(b.image) for b in framed]
    assert all(b >= a - 0.04 for a, b in zip(before, after)), "each item is drawn at least as large as before"
    assert max(before) <= 0.92 < 0.95 <= max(after), "at max_fill 1.0 some text spans (almost) the whole side"


def test_max_fill_outside_the_frame_is_refused():
    with pytest.raises(ValueError, match="max_fill"):
        RenderConfig(max_fill=1.2)


def test_boxed_digits_fill_the_height_and_leave_other_items_alone(fonts):
    sharp = dict(image_size=64, low_resolution=0.0, grayscale=0.0)
    shipped = render_set(40, seed=0, fonts=fonts, words=WORDS, config=RenderConfig(**sharp))
    boxed = render_set(40, seed=0, fonts=fonts, words=WORDS, config=RenderConfig(boxed_digits=1.0, **sharp))
    digits = [i for i, item in enumerate(shipped) if item.kind == "digit"]
    assert len(digits) >= 10
    for i, (a, b) in enumerate(zip(shipped, boxed)):
        assert (a.kind, a.text, a.captions) == (b.kind, b.text, b.captions)
        assert np.array_equal(a.image, b.image) == (i not in digits), "only the digits change"
    heights = [_ink_height(boxed[i].image) for i in digits]
    assert min(heights) >= 0.85, heights
    assert sum(_ink_height(shipped[i].image) >= 0.85 for i in digits) < len(digits) / 2, "unboxed digits vary"
    cut = render_set(40, seed=0, fonts=fonts, words=WORDS, config=RenderConfig(boxed_digits=1.0, boxed_height=1.05,
                                                                                **sharp))
    assert min(_ink_height(cut[i].image) for i in digits) >= 0.97, "taller than the image: the ink meets both edges"
    with pytest.raises(ValueError, match="boxed_digits"):
        RenderConfig(boxed_digits=1.5)
    with pytest.raises(ValueError, match="boxed_height"):
        RenderConfig(boxed_height=2.0)
