"""Rendered text: digits, numbers and words drawn in many fonts, with captions, for pretraining the mini-CLIP.

Real CLIP reads the digits and words it sees in photos (Radford et al. 2021, section 3.1.5: its zero-shot
MNIST and rendered-SST2 results come from text seen in web images). Our mini-CLIP gets the same chance
from images we draw ourselves: a digit, a number or a word, in a font of a Debian font package (or
matplotlib's bundled fonts where none is installed), at a random size, rotation, stroke weight and
position, in random colours on a solid, gradient or noisy background, each with captions such as
"the number 7" or "the digit seven".

Never handwriting: no handwritten digit data set (MNIST, optdigits) is read, and fonts that imitate
handwriting or are not text fonts are left out (:data:`EXCLUDED_FONT_WORDS`).

Everything is decided by ``(seed, index)`` through a :class:`numpy.random.SeedSequence`, so item ``i``
is the same whatever other items are made, and two runs with the same fonts give identical pixels
(:func:`font_manifest` records the fonts' names and sha256 digests next to the data).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIRS = (Path("/usr/share/fonts/truetype"), Path("/usr/share/fonts/opentype"))
# Debian packages these fonts come from (installed by data_scripts/pretrain_mini_clip.py's instructions).
DEBIAN_FONT_PACKAGES = ("fonts-dejavu-core", "fonts-liberation2", "fonts-freefont-ttf", "fonts-urw-base35",
                        "fonts-noto-core")
# Handwriting imitations, symbol and display faces: not text fonts for our purpose.
EXCLUDED_FONT_WORDS = ("Z003", "D050000L", "Symbol", "Math", "Emoji", "Music", "Display", "Sign", "LastResort",
                       "cmex", "cmsy", "cmmi", "STIXSiz", "STIXNonUni", "Nushu")
REQUIRED_CHARACTERS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
KINDS = ("digit", "number", "word")


@dataclass(frozen=True)
class RenderConfig:
    """Ranges of the random rendering.

    Attributes:
        image_size: square output size in pixels.
        kind_weights: probabilities of a single digit, a multi-digit number and a word.
        max_rotation: degrees, either way.
        dark_background: probability of light text on a dark background (as in scans of white chalk or
            inverted prints); otherwise dark text on a light background or random colours.
        grayscale: probability of a grey-scale image.
        low_resolution: probability of drawing at a small size and scaling up (blurry, like small photos).
        max_fill: the largest share of the image's side the drawn text may span (the smallest is 0.45). At 1.0
            a digit can fill the frame edge to edge, as the digits of 8x8 scans do; version 2 was trained with
            0.9 (1.0 did not help: ``docs/measurements/mini_clip_tuning.md``, eleventh round).
        boxed_digits: share of single digits drawn the way scanned digit sets normalise theirs (e.g. UCI's
            optdigits, Alpaydin & Kaynak 1998): stretched to ``boxed_height`` ± 0.05 of the image height
            (above 1: cut at the top and bottom edges, which the ink then touches), 35-100% of its width,
            unrotated (our choice; eleventh round: 0.3 at height 1.05 lifted optdigits' train split by 1.6 and
            2.8 points, not adopted). 0 draws no extra random number, so items stay as before.
        boxed_height: the middle of the boxed digits' height range, as a share of the image height.
    """

    image_size: int = 128
    kind_weights: tuple[float, float, float] = (0.6, 0.15, 0.25)
    max_rotation: float = 20.0
    dark_background: float = 0.35
    grayscale: float = 0.3
    low_resolution: float = 0.3
    max_fill: float = 0.9
    boxed_digits: float = 0.0
    boxed_height: float = 0.95

    def __post_init__(self):
        if not 0.45 <= self.max_fill <= 1.0:
            raise ValueError(f"max_fill must lie in [0.45, 1.0] (a share of the image side), got {self.max_fill}")
        if not 0.0 <= self.boxed_digits <= 1.0:
            raise ValueError(f"boxed_digits is a share of the digits and must lie in [0, 1], got {self.boxed_digits}")
        if not 0.5 <= self.boxed_height <= 1.2:
            raise ValueError(f"boxed_height is a share of the image height in [0.5, 1.2], got {self.boxed_height}")


@dataclass(frozen=True)
class RenderedItem:
    """One rendered image and what it shows."""

    image: np.ndarray  # (S, S, 3) uint8
    kind: str  # "digit", "number" or "word"
    text: str  # the characters drawn
    captions: tuple[str, ...]


def _has_glyphs(path: Path, characters: str) -> bool:
    from fontTools.ttLib import TTFont

    try:
        with TTFont(str(path), fontNumber=0, lazy=True) as font:
            cmap = font.getBestCmap() or {}
    except Exception:  # unreadable or unusual font files are simply not used
        return False
    return all(ord(ch) in cmap for ch in characters)


def find_fonts(folders: Sequence[Path] = FONT_DIRS) -> list[Path]:
    """Text fonts that draw every digit and Latin letter, sorted by file name (a stable order).

    Falls back to matplotlib's bundled fonts (DejaVu, STIX, Computer Modern) when no Debian font is
    installed, so the generator works everywhere; the data records which fonts it used.
    """
    candidates = [p for folder in folders if folder.is_dir() for p in folder.rglob("*") if p.suffix in (".ttf", ".otf")]
    if not candidates:
        import matplotlib

        candidates = list((Path(matplotlib.get_data_path()) / "fonts" / "ttf").glob("*.ttf"))
    usable = [p for p in candidates if not any(word in p.name for word in EXCLUDED_FONT_WORDS)
              and _has_glyphs(p, REQUIRED_CHARACTERS)]
    return sorted(usable, key=lambda p: (p.name, str(p)))


def font_manifest(fonts: Sequence[Path]) -> list[dict]:
    """``[{"name", "sha256"}]`` of the fonts, to record beside generated data."""
    return [{"name": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in fonts]


def text_captions(kind: str, text: str) -> tuple[str, ...]:
    """Captions of a rendered item, e.g. ``("the number 7", "the digit seven", ...)`` for a ``"7"``."""
    if kind == "digit":
        word = DIGIT_WORDS[int(text)]
        return (f"the number {text}.", f"the digit {word}.", f"the number {word}.", f"a printed digit {text}.",
                f'the digit "{text}".', f"a {text}.")
    if kind == "number":
        return (f"the number {text}.", f'the number "{text}".', f"a sign with the number {text}.")
    return (f'the word "{text}".', f"the text {text}.", f'a sign that says "{text}".')


def _pick_text(kind: str, rng: np.random.Generator, words: Sequence[str]) -> str:
    if kind == "digit":
        return str(rng.integers(10))
    if kind == "number":
        return str(rng.integers(10, 10_000))
    return words[rng.integers(len(words))]


def _colours(rng: np.random.Generator, config: RenderConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Foreground and background colours with a luminance gap of at least 90 (of 255)."""
    choice = rng.random()
    if choice < config.dark_background:
        return tuple(int(v) for v in rng.integers(170, 256, 3)), tuple(int(v) for v in rng.integers(0, 70, 3))
    if choice < config.dark_background + 0.35:
        return tuple(int(v) for v in rng.integers(0, 90, 3)), tuple(int(v) for v in rng.integers(190, 256, 3))
    while True:
        fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        weights = np.array([0.299, 0.587, 0.114])
        if abs(float(fg @ weights - bg @ weights)) >= 90:
            return tuple(int(v) for v in fg), tuple(int(v) for v in bg)


def _background(size: int, colour: tuple[int, ...], rng: np.random.Generator) -> Image.Image:
    """A solid, a linear-gradient or a lightly noisy background of about ``colour``."""
    base = np.ones((size, size, 3), dtype=np.float32) * np.asarray(colour, dtype=np.float32)
    style = rng.integers(3)
    if style == 1:
        ramp = np.linspace(-1, 1, size, dtype=np.float32)
        direction = rng.uniform(-1, 1, 2)
        gradient = direction[0] * ramp[None, :] + direction[1] * ramp[:, None]
        base += 30 * gradient[..., None] * rng.uniform(-1, 1, 3).astype(np.float32)
    elif style == 2:
        base += rng.normal(0, 12, (size, size, 1)).astype(np.float32)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def render_item(index: int, *, seed: int, fonts: Sequence[Path], words: Sequence[str],
                config: RenderConfig = RenderConfig()) -> RenderedItem:
    """Item ``index`` of the rendered-text set with ``seed``: the same inputs always give the same image."""
    if not fonts:
        raise ValueError("no fonts to render with: install a Debian font package (e.g. apt-get install "
                         f"{' '.join(DEBIAN_FONT_PACKAGES)}) or matplotlib")
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    kind = KINDS[rng.choice(len(KINDS), p=np.asarray(config.kind_weights) / sum(config.kind_weights))]
    text = _pick_text(kind, rng, words)
    font_path = fonts[rng.integers(len(fonts))]
    size = config.image_size
    fg, bg = _colours(rng, config)
    # Draw the text on a transparent layer four times the target area, then rotate, fit and paste.
    font_size = int(rng.integers(size // 3, size)) if kind == "digit" else int(rng.integers(size // 5, size // 2))
    font = ImageFont.truetype(str(font_path), font_size)
    stroke = int(rng.integers(0, max(1, font_size // 20) + 1))
    layer = Image.new("L", (4 * size, 2 * size), 0)
    ImageDraw.Draw(layer).text((size // 4, size // 2), text, font=font, fill=255, stroke_width=stroke,
                               stroke_fill=255)
    layer = layer.crop(layer.getbbox() or (0, 0, 1, 1))
    angle = float(rng.uniform(-config.max_rotation, config.max_rotation))
    if kind == "digit" and config.boxed_digits and rng.random() < config.boxed_digits:
        height = rng.uniform(config.boxed_height - 0.05, config.boxed_height + 0.05)  # a scan normalised to its box
        width = rng.uniform(0.35, 1.0)
        layer = layer.resize((max(1, round(width * size)), max(1, round(height * size))), Image.Resampling.BICUBIC)
    else:
        layer = layer.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC)
        fill = float(rng.uniform(0.45, config.max_fill)) * size / max(layer.size)
        layer = layer.resize((max(1, round(layer.width * fill)), max(1, round(layer.height * fill))),
                             Image.Resampling.BICUBIC)
    image = _background(size, bg, rng)
    # Anywhere inside the image; text taller than the image (boxed digits only) is cut at both edges.
    x = int(rng.integers(0, size - layer.width + 1))
    y = int(rng.integers(min(0, size - layer.height), max(0, size - layer.height) + 1))
    image.paste(Image.new("RGB", layer.size, fg), (x, y), layer)
    if rng.random() < config.low_resolution:
        small = int(rng.integers(24, 48))
        image = image.resize((small, small), Image.Resampling.BILINEAR).resize((size, size), Image.Resampling.BICUBIC)
    elif rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.5))))
    if rng.random() < config.grayscale:
        image = image.convert("L").convert("RGB")
    return RenderedItem(np.asarray(image, dtype=np.uint8), kind, text, text_captions(kind, text))


def render_set(n: int, *, seed: int, fonts: Sequence[Path], words: Sequence[str],
               config: RenderConfig = RenderConfig()) -> list[RenderedItem]:
    """Items ``0..n-1`` of :func:`render_item` with ``seed``."""
    return [render_item(i, seed=seed, fonts=fonts, words=words, config=config) for i in range(n)]
