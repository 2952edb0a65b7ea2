"""EmojiDomains: the same emoji drawn in several styles, one domain per style.

The artwork comes from npm packages (fetched by ``python data_scripts/fetch_emoji.py``):

============  ==================================  ==============  ===============================
style         package                             licence         original artwork
============  ==================================  ==============  ===============================
twitter       emoji-datasource-twitter@16.0.0     CC-BY 4.0       Twemoji, flat 64 px PNG
google        emoji-datasource-google@16.0.0      Apache 2.0      Noto Emoji, 64 px PNG
openmoji      openmoji@17.0.0                     CC BY-SA 4.0    outlined SVG, rendered by us
fluent3d      @lobehub/fluent-emoji-3d@1.1.0      MIT             Fluent Emoji 3D, 256 px WebP
============  ==================================  ==============  ===============================

Classes are the concrete-object emoji (categories Animals & Nature, Food & Drink, Travel & Places,
Activities, Objects) of emoji-datasource's ``emoji.json``, aligned across styles by Unicode code point.

On-disk format, under ``<data root>/emoji-domains/``:

- ``classes.json``: ``{"format_version": 1, "image_size": 64, "styles": [built styles],
  "classes": [{"code_point", "name", "category", "subcategory", "styles"}, ...]}``. ``code_point`` is
  emoji.json's ``unified`` field (e.g. ``"1F408-200D-2B1B"``); ``name`` is a clean lowercase name,
  unique across classes; ``styles`` lists the styles that draw this class.
- ``<style>.npz``: ``images`` (uint8, ``(N, 64, 64, 3)``: one base drawing per class, composited on
  white) and ``code_points`` (``(N,)`` strings, in the order of ``classes.json``).
- ``ATTRIBUTION.md`` and ``checksums.json`` (written by the fetch script, last). Loaders check
  ``classes.json`` and every ``<style>.npz`` they read against the sha256 recorded there
  (:func:`verified_file`); the writers below keep an existing record current.

Train and test images (our choice). Each style holds only ONE drawing per class, so a split of files is
impossible. Instead each split is made at load time from the base drawings by seeded augmentation
(random affine: rotation, scale, shift; small brightness/contrast/saturation jitter; a light
multiplicative background tint): by default 6 train and 2 test images per class. The generator of a
(split, style, class) triple is seeded by the split's own seed, the style and the code point, so:

- the test set is fixed and never shares an image with the train set (different seeds);
- two loads give identical pixels, and restricting to a subset of classes keeps each class's images.

Registry sources ``emoji-<style>`` load the classes drawn by EVERY built style (so all emoji domains
share one label space, as domain-incremental scenarios need); :func:`load_emoji_style` can load any
list of class names, with labels in that list's order.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Sequence

import numpy as np
from PIL import Image

from ..fileio import CorruptFileError, atomic_write, read_json
from ..integrity import CHECKSUMS_FILE, Checksums, update_checksums
from ..paths import data_root
from .base import ArrayImageSet, DatasetNotFoundError, content_digest
from .source_spec import SourceSpec

STYLES = ("twitter", "google", "openmoji", "fluent3d")
FOLDER = "emoji-domains"
CLASSES_FILE = "classes.json"
FORMAT_VERSION = 1
IMAGE_SIZE = 64
FETCH_COMMAND = "python data_scripts/fetch_emoji.py"
EMOJI_TEMPLATES = ("an emoji of a {}.", "a {} emoji.")
PER_CLASS = MappingProxyType({"train": 6, "test": 2})
# Distinct seeds per split: this is what keeps every test image out of the train set.
SPLIT_SEEDS = MappingProxyType({"train": 20_240_001, "test": 20_240_002})
STYLE_DESCRIPTIONS = MappingProxyType({
    "twitter": "Twemoji (flat vector style, CC-BY 4.0)",
    "google": "Noto Emoji (Google, Apache 2.0)",
    "openmoji": "OpenMoji (outlined, CC BY-SA 4.0; rendered from SVG)",
    "fluent3d": "Fluent Emoji 3D (Microsoft, MIT; 3D renders)",
})


@dataclass(frozen=True)
class EmojiClass:
    """One emoji class.

    Attributes:
        code_point: emoji.json's ``unified`` code point(s), e.g. ``"1F415-200D-1F9BA"``.
        name: clean lowercase name used in prompts, e.g. ``"service dog"``.
        category: Unicode emoji group, e.g. ``"Animals & Nature"``.
        subcategory: Unicode emoji subgroup, e.g. ``"animal-mammal"``.
        styles: the built styles that draw this class.
    """

    code_point: str
    name: str
    category: str
    subcategory: str
    styles: tuple[str, ...]


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the seeded augmentation that turns one base drawing into train/test images.

    Attributes:
        max_rotation: rotation angle drawn uniformly from ``[-max_rotation, max_rotation]`` degrees.
        scale_range: zoom factor range (``< 1`` shrinks the drawing).
        max_shift: shift in pixels along each axis, uniform in ``[-max_shift, max_shift]``.
        jitter: brightness, contrast and saturation factors drawn from ``[1 - jitter, 1 + jitter]``.
        tint_min: each RGB channel of the background tint is uniform in ``[tint_min, 255]``; the image is
            multiplied by ``tint / 255`` (white background -> the tint colour).
    """

    max_rotation: float = 15.0
    scale_range: tuple[float, float] = (0.8, 1.05)
    max_shift: float = 4.0
    jitter: float = 0.1
    tint_min: int = 190


# ----------------------------------------------------------------------------------------------------
# Paths, metadata and the writers shared with data_scripts/fetch_emoji.py
# ----------------------------------------------------------------------------------------------------


def emoji_dir(root: str | Path | None = None) -> Path:
    """The EmojiDomains folder: ``<root>/emoji-domains`` (root defaults to the data root)."""
    return Path(root if root is not None else data_root()) / FOLDER


def style_file(root: str | Path | None, style: str) -> Path:
    """Path of the base drawings of ``style``: ``<root>/emoji-domains/<style>.npz``."""
    return emoji_dir(root) / f"{style}.npz"


def _not_found(what: str, root: str | Path | None) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"EmojiDomains {what} not found in {emoji_dir(root)}. Fetch it with: {FETCH_COMMAND}"
        + (f" --root {root}" if root is not None else "")
    )


def _rebuild(root: str | Path | None) -> str:
    return f"Rebuild it with: {FETCH_COMMAND}" + (f" --root {root}" if root is not None else "")


def verified_file(root: str | Path | None, name: str) -> Path:
    """``<root>/emoji-domains/<name>``, checked against the sha256 that ``checksums.json`` records for it.

    Raises:
        DatasetNotFoundError: the folder has no ``checksums.json`` (the fetch script writes it last, so
            the build is incomplete).
        IntegrityError: the file differs from its recorded digest (the message names it and the fix).
    """
    folder = emoji_dir(root)
    record = Checksums.read(folder, fix=_rebuild(root))
    if record is None:
        raise DatasetNotFoundError(f"{folder / CHECKSUMS_FILE} is missing: the EmojiDomains build in {folder} is "
                                   f"incomplete or too old to be checked. {_rebuild(root)}")
    return record.verify(folder / name)


def _read_manifest(root: str | Path | None) -> dict:
    path = emoji_dir(root) / CLASSES_FILE
    if not path.exists():
        raise _not_found(f"class list ({CLASSES_FILE})", root)
    manifest = read_json(verified_file(root, CLASSES_FILE), fix=_rebuild(root))
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise DatasetNotFoundError(
            f"{path} has format version {version!r}, this uniil_lib reads version {FORMAT_VERSION}. "
            f"{_rebuild(root)}"
        )
    return manifest


def load_emoji_classes(root: str | Path | None = None) -> list[EmojiClass]:
    """Read the class metadata of EmojiDomains.

    Args:
        root: data root holding ``emoji-domains/`` (default: :func:`uniil_lib.paths.data_root`).

    Returns:
        every class in ``classes.json`` order (Unicode order within the emoji.json listing).
    """
    entries = _read_manifest(root)["classes"]
    return [EmojiClass(**{**entry, "styles": tuple(entry["styles"])}) for entry in entries]


def built_styles(root: str | Path | None = None) -> tuple[str, ...]:
    """The styles the fetch script built under ``root``, in :data:`STYLES` order."""
    return tuple(_read_manifest(root)["styles"])


def aligned_class_names(root: str | Path | None = None) -> list[str]:
    """Names of the classes drawn by every built style (the shared label space of the emoji domains)."""
    styles = set(built_styles(root))
    return [c.name for c in load_emoji_classes(root) if styles.issubset(c.styles)]


def write_emoji_classes(root: str | Path | None, classes: Sequence[EmojiClass], styles: Sequence[str]) -> Path:
    """Write ``classes.json``.

    Args:
        root: data root; the file goes to ``<root>/emoji-domains/classes.json``.
        classes: the classes, in the order loaders will use.
        styles: the styles built in this run.
    """
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise ValueError("EmojiDomains class names must be unique (they become prompts and class names)")
    manifest = {
        "format_version": FORMAT_VERSION, "image_size": IMAGE_SIZE, "styles": list(styles),
        "classes": [{**asdict(c), "styles": list(c.styles)} for c in classes],
    }
    path = emoji_dir(root) / CLASSES_FILE
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    update_checksums(path.parent, [path.name])  # keep an existing record current (the fetch script writes its own)
    return path


def write_emoji_style(root: str | Path | None, style: str, code_points: Sequence[str], images: np.ndarray) -> Path:
    """Write the base drawings of one style to ``<root>/emoji-domains/<style>.npz``.

    Args:
        root: data root.
        style: one of :data:`STYLES`.
        code_points: ``(N,)`` code points, as in ``classes.json``.
        images: ``(N, 64, 64, 3)`` uint8 drawings on a white background.
    """
    images = np.asarray(images)
    expected = (len(code_points), IMAGE_SIZE, IMAGE_SIZE, 3)
    if images.dtype != np.uint8 or images.shape != expected:
        raise ValueError(f"{style}: expected uint8 images of shape {expected}, got {images.dtype} {images.shape}")
    path = style_file(root, style)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a file object: np.savez would otherwise append ".npz"
            np.savez_compressed(handle, images=images, code_points=np.asarray(code_points, dtype=str))

    atomic_write(path, write)
    update_checksums(path.parent, [path.name])
    return path


def load_base_drawings(style: str, root: str | Path | None = None) -> tuple[list[str], np.ndarray]:
    """Read one style's base drawings: ``(code_points, images (N, 64, 64, 3) uint8)``."""
    if style not in STYLES:
        raise ValueError(f"unknown emoji style {style!r}; valid styles: {', '.join(STYLES)}")
    path = style_file(root, style)
    if not path.exists():
        raise _not_found(f"style {style!r} ({path.name})", root)
    verified_file(root, path.name)
    try:
        with np.load(path, allow_pickle=False) as data:
            return [str(c) for c in data["code_points"]], data["images"]
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as error:
        raise CorruptFileError(f"{path} cannot be read as drawings ({error}). {_rebuild(root)}") from error


# ----------------------------------------------------------------------------------------------------
# Seeded augmentation: base drawing -> distinct train / test images
# ----------------------------------------------------------------------------------------------------


def class_rng(split: str, style: str, code_point: str) -> np.random.Generator:
    """The generator of one (split, style, class): independent of which other classes are loaded."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {tuple(SPLIT_SEEDS)}, got {split!r}")
    words = [SPLIT_SEEDS[split], zlib.crc32(style.encode()), zlib.crc32(code_point.encode())]
    return np.random.default_rng(np.random.SeedSequence(words))


def _affine(image: Image.Image, rng: np.random.Generator, config: AugmentConfig) -> Image.Image:
    """Rotate by a random angle and zoom about the centre, then shift; uncovered pixels are white."""
    angle = np.deg2rad(rng.uniform(-config.max_rotation, config.max_rotation))
    scale = rng.uniform(*config.scale_range)
    shift_x, shift_y = rng.uniform(-config.max_shift, config.max_shift, size=2)
    centre_x, centre_y = (image.width - 1) / 2, (image.height - 1) / 2
    # PIL wants the inverse map (output pixel -> input pixel): in = R(-angle) / scale @ (out - c - t) + c.
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    ox, oy = centre_x + shift_x, centre_y + shift_y
    coeffs = (cos, sin, centre_x - cos * ox - sin * oy, -sin, cos, centre_y + sin * ox - cos * oy)
    return image.transform(image.size, Image.Transform.AFFINE, coeffs,
                           resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255))


def _colour(batch: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Brightness, contrast and saturation jitter, then a multiplicative tint; ``batch`` is (n, H, W, 3)."""
    n = len(batch)
    x = batch.astype(np.float32)
    low, high = 1 - config.jitter, 1 + config.jitter
    brightness, contrast, saturation = (rng.uniform(low, high, size=(3, n, 1, 1, 1))).astype(np.float32)
    tint = rng.uniform(config.tint_min, 255, size=(n, 1, 1, 3)).astype(np.float32) / 255
    x = x * brightness
    x = (x - x.mean(axis=(1, 2, 3), keepdims=True)) * contrast + x.mean(axis=(1, 2, 3), keepdims=True)
    gray = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - gray[..., None]) * saturation + gray[..., None]
    return np.clip(np.clip(x, 0, 255) * tint, 0, 255).round().astype(np.uint8)


def augment_drawing(base: np.ndarray, n: int, rng: np.random.Generator,
                    config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Make ``n`` augmented copies of one drawing.

    Args:
        base: ``(H, W, 3)`` uint8 drawing on white.
        n: number of images to make.
        rng: the seeded generator (see :func:`class_rng`); it alone decides the result.
        config: augmentation ranges.

    Returns:
        ``(n, H, W, 3)`` uint8 images.
    """
    image = Image.fromarray(np.ascontiguousarray(base))
    moved = np.stack([np.asarray(_affine(image, rng, config)) for _ in range(n)])
    return _colour(moved, rng, config)


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------


def _select(classes: list[EmojiClass], style: str, wanted: Sequence[str] | None) -> list[EmojiClass]:
    if wanted is None:
        return [c for c in classes if style in c.styles]
    by_name = {c.name: c for c in classes}
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        raise ValueError(f"unknown emoji class names {unknown[:5]} (see load_emoji_classes() for the list)")
    missing = [name for name in wanted if style not in by_name[name].styles]
    if missing:
        raise ValueError(f"style {style!r} has no drawing of {missing[:5]}; restrict to classes it draws")
    if len(set(wanted)) != len(wanted):
        raise ValueError("the class list repeats a name; each class may appear once")
    return [by_name[name] for name in wanted]


def load_emoji_style(style: str, split: str, root: str | Path | None = None,
                     classes: Sequence[str] | None = None, *, n_per_class: int | None = None) -> ArrayImageSet:
    """Load one style of EmojiDomains as augmented 64x64 RGB images.

    Args:
        style: one of :data:`STYLES` that the fetch script built.
        split: ``"train"`` or ``"test"`` (different augmentation seeds: the sets share no image).
        root: data root holding ``emoji-domains/`` (default: :func:`uniil_lib.paths.data_root`).
        classes: class names to load, labels ``0..len-1`` in this order; default every class the style draws.
        n_per_class: images per class (default: 6 for train, 2 for test).

    Raises:
        DatasetNotFoundError: the data is missing (the message names ``python data_scripts/fetch_emoji.py``).
        ValueError: unknown style, split or class name, or a class this style does not draw.
    """
    code_points, bases = load_base_drawings(style, root)
    chosen = _select(load_emoji_classes(root), style, classes)
    if split not in PER_CLASS:
        raise ValueError(f"split must be one of {tuple(PER_CLASS)}, got {split!r}")
    n = PER_CLASS[split] if n_per_class is None else int(n_per_class)
    row = {cp: i for i, cp in enumerate(code_points)}
    images = np.zeros((len(chosen) * n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for label, cls in enumerate(chosen):
        if cls.code_point not in row:
            raise DatasetNotFoundError(f"{style_file(root, style)} lacks {cls.code_point} ({cls.name}), "
                                       f"which classes.json lists; rebuild with: {FETCH_COMMAND}")
        rng = class_rng(split, style, cls.code_point)
        images[label * n:(label + 1) * n] = augment_drawing(bases[row[cls.code_point]], n, rng)
    labels = np.repeat(np.arange(len(chosen)), n)
    names = [c.name for c in chosen]
    digest = content_digest(images, labels, np.asarray(names, dtype=str))
    return ArrayImageSet(images, labels, names, key=f"emoji-{style}/{split}[{digest}]")


def _aligned_loader(style: str):
    def load(split: str, root: Path) -> ArrayImageSet:
        return load_emoji_style(style, split, root, classes=aligned_class_names(root))

    return load


def emoji_sources() -> list[SourceSpec]:
    """The EmojiDomains sources ``emoji-<style>``, for the registry."""
    return [
        SourceSpec(
            name=f"emoji-{style}", load=_aligned_loader(style), offline=True,
            fetch_command=FETCH_COMMAND, templates=EMOJI_TEMPLATES, domain=f"emoji-{style}",
            description=f"EmojiDomains {STYLE_DESCRIPTIONS[style]}: classes of all built styles, "
                        f"{PER_CLASS['train']}/{PER_CLASS['test']} seeded augmentations per class, 64x64",
            extra=MappingProxyType({"style": style}),
        )
        for style in STYLES
    ]
