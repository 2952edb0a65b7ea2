"""The mini-CLIP's pretraining data (version 2), made offline from registry packages, seeded.

Three parts (five with the optional icons and extra emoji classes), each a tensor of frozen-stem features plus
what the captions need:

1. **EmojiDomains** (npm packages, ``python data_scripts/fetch_emoji.py``): the PRETRAIN classes of
   ``emoji_split(split)`` in the PRETRAIN styles (twitter, google, openmoji), ``augmentations`` copies of
   each class's one drawing: random affine, background, colour jitter and grey scale (as version 1), plus
   inversion (light drawing on dark) and low resolution (shrunk to 28 px and scaled back), so the model
   meets the looks of small grey-scale photos without seeing any evaluation set.
2. **Rendered text** (Debian font packages, :mod:`uniil_lib.data.rendered_text`): digits, numbers and words
   with captions. Words come from MiniLM's own vocabulary (whole alphabetic words of 3-10 letters), minus
   every word of a held-out emoji class name and of a Fashion-MNIST class name.
3. **ImageNet** (the EfficientNet-Lite0 package): the 1000 class names and the pretrained classifier, used
   in the loss (``pretrain_mini_clip.py``); no ImageNet image is needed or used.
4. **Named icons** (optional, ``DataRecipe.icon_augmentations > 0``; :mod:`icon_sets`): the drawings of
   the icon sets ``DataRecipe.icon_sets`` (Debian's Material Icons font, npm's Phosphor, Tabler and game icons, and
   two more emoji styles, EmojiOne and FxEmoji) with
   their names, minus every icon whose name shares a word with a held-out emoji class or a Fashion-MNIST
   class; augmented as the emoji are. More named drawings, in more drawing styles, for the image-text
   alignment (our choice, measured in ``docs/measurements/mini_clip_tuning.md``).
5. **Extra emoji classes** (optional, ``DataRecipe.extra_emoji``; :mod:`emoji_extra`): the Unicode categories
   EmojiDomains leaves out (smileys, people, symbols), in the three pretraining styles, minus every name that
   shares a word with a held-out emoji class or a Fashion-MNIST class; they join the emoji part as more classes.

Held out, never read here: the held-out emoji classes, the fluent3d style, Fashion-MNIST, MNIST, optdigits.

The frozen stem's *trunk* (:meth:`~uniil_lib.imagenet_backbone.FrozenCNNStem.trunk`, 320 channels) runs
once per image; its output (float16) is cached under the cache root by the digest of everything that
decides it (split, seed, counts, image size, fonts), so a second run and a resumed run start at once.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from uniil_lib.data.emoji import load_base_drawings, load_emoji_classes  # noqa: E402
from uniil_lib.data.emoji_split import emoji_split  # noqa: E402
from uniil_lib.data.offline import FASHION_MNIST_CLASSES  # noqa: E402
from emoji_extra import extra_emoji_drawings, parse_extra_categories  # noqa: E402
from icon_sets import named_icon_drawings, parse_icon_sets  # noqa: E402

from uniil_lib.data.rendered_text import RenderConfig, find_fonts, font_manifest, render_item  # noqa: E402
from uniil_lib.imagenet_backbone import PIXEL_MEAN, PIXEL_STD, FrozenCNNStem  # noqa: E402
from uniil_lib.mini_clip import text_model_dir  # noqa: E402
from uniil_lib.paths import cache_root  # noqa: E402

MEAN = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)


@dataclass(frozen=True)
class DataRecipe:
    """Every number that decides the pretraining data (part of the cache key and of mini_clip.json)."""

    split: str = "random"
    seed: int = 0
    image_size: int = 128
    augmentations: int = 12  # augmented copies per (class, style) drawing
    rendered_items: int = 12000  # rendered digits, numbers and words
    invert: float = 0.15  # share of emoji augmentations drawn light on dark
    grey: float = 0.1  # share of emoji augmentations turned grey scale
    icon_augmentations: int = 0  # augmented copies per named icon drawing (0: no icon part)
    icon_sets: str = "material"  # icon sets joined by "+" (data_scripts/icon_sets.py)
    text_max_fill: float = 0.9  # largest share of the image side rendered text spans (RenderConfig.max_fill)
    text_boxed_digits: float = 0.0  # share of rendered digits stretched to their box (RenderConfig.boxed_digits)
    text_boxed_height: float = 0.95  # middle of their height range, share of the side (RenderConfig.boxed_height)
    extra_emoji: str = ""  # more emoji categories in the pretraining styles, joined by "+" (emoji_extra.py)


@dataclass
class StemData:
    """Cached trunk features of one part, and per-image labels."""

    trunk: torch.Tensor  # (N, 320, g, g) float16
    labels: dict  # part-specific per-image labels (lists or tensors)


# ----------------------------------------------------------------------------------------------------
# Batched, seeded augmentation of emoji drawings (torch)
# ----------------------------------------------------------------------------------------------------


def _uniform(gen: torch.Generator, n: int, low: float, high: float, *shape: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, *shape, generator=gen)


def resize_bases(images: np.ndarray, size: int) -> torch.Tensor:
    """``(N, 64, 64, 3)`` uint8 -> ``(N, 3, S, S)`` float in [0, 1], antialiased like the eval transform."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def random_affine(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rotate (±25°), zoom (0.7-1.15), shear, shift (±12 %) and flip; uncovered pixels are white."""
    n = len(x)
    angle = torch.deg2rad(_uniform(gen, n, -25, 25))
    scale = _uniform(gen, n, 0.7, 1.15)
    shear = _uniform(gen, n, -0.15, 0.15)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    shift = _uniform(gen, n, -0.12, 0.12, 2)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # affine_grid maps OUTPUT coordinates to INPUT coordinates, so this is the inverse transform.
    theta = torch.stack([torch.stack([cos * flip, -sin + shear, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Sample the "ink" (1 - x) with zero padding so that the border fills with white.
    return 1 - F.grid_sample(1 - x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_background(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Half the images get a random solid background colour, the other half a multiplicative tint."""
    n = len(x)
    whiteness = ((x.min(dim=1, keepdim=True).values - 0.90) / 0.08).clamp(0, 1)  # 1 on the white background
    colour = torch.rand(n, 3, 1, 1, generator=gen)
    tint = _uniform(gen, n, 0.7, 1.0, 3, 1, 1)
    solid = torch.rand(n, 1, 1, 1, generator=gen) < 0.5
    return torch.where(solid, x * (1 - whiteness) + colour * whiteness, x * tint)


def colour_jitter(x: torch.Tensor, gen: torch.Generator, *, grey: float = 0.1) -> torch.Tensor:
    """Brightness, contrast, saturation jitter; a share ``grey`` in grey scale; light Gaussian pixel noise."""
    n = len(x)
    x = x * _uniform(gen, n, 0.7, 1.3, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * _uniform(gen, n, 0.7, 1.3, 1, 1, 1) + mean
    gray = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    saturation = _uniform(gen, n, 0.5, 1.5, 1, 1, 1) * (torch.rand(n, 1, 1, 1, generator=gen) > grey)
    x = (x - gray) * saturation + gray
    x = x + 0.02 * torch.rand(n, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    return x.clamp(0, 1)


def invert_and_shrink(x: torch.Tensor, gen: torch.Generator, *, invert: float = 0.15,
                      shrink: float = 0.25) -> torch.Tensor:
    """Invert a share of the images (light on dark); shrink another share to 28 px and scale it back."""
    inverted = torch.rand(len(x), 1, 1, 1, generator=gen) < invert
    x = torch.where(inverted, 1 - x, x)
    small = torch.rand(len(x), generator=gen) < shrink
    if small.any():
        low = F.interpolate(x[small], size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
        x = x.clone()
        x[small] = F.interpolate(low, size=x.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
    return x


def augment(bases: torch.Tensor, gen: torch.Generator, *, invert: float = 0.15, grey: float = 0.1) -> torch.Tensor:
    """``(B, 3, S, S)`` drawings in [0, 1] -> augmented drawings in [0, 1] (the generator and shares decide)."""
    x = colour_jitter(random_background(random_affine(bases, gen), gen), gen, grey=grey)
    return invert_and_shrink(x, gen, invert=invert)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels -> the EfficientNet-Lite input ``(255 x - 127) / 128``."""
    return (x - MEAN) / STD


# ----------------------------------------------------------------------------------------------------
# The three parts
# ----------------------------------------------------------------------------------------------------


def run_trunk(stem: FrozenCNNStem, pixels01: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Trunk features (float16) of ``[0, 1]`` pixels, in batches."""
    return torch.cat([stem.trunk(normalise(pixels01[i:i + batch_size])).half()
                      for i in range(0, len(pixels01), batch_size)])


def emoji_pretrain_classes(recipe: DataRecipe, root: Path | None = None):
    """The pretraining classes (EmojiClass records) and styles of ``recipe.split``."""
    split = emoji_split(recipe.split, root)
    by_name = {c.name: c for c in load_emoji_classes(root)}
    return [by_name[name] for name in split.pretrain_classes], tuple(split.pretrain_styles)


EXTRA_EMOJI_SEED_OFFSET = 5_555_555  # the extra emoji classes draw their augmentations apart from EmojiDomains'


def emoji_images(recipe: DataRecipe, k: int, style_index: int, bases: torch.Tensor,
                 seed_offset: int = 0) -> torch.Tensor:
    """Augmentation ``k`` of every class in style ``style_index``: one seeded generator per (k, style)."""
    gen = torch.Generator().manual_seed(recipe.seed * 1_000_003 + seed_offset + 1000 * k + style_index)
    return augment(bases[:, style_index], gen, invert=recipe.invert, grey=recipe.grey)


def augmented_rows(recipe: DataRecipe, stem: FrozenCNNStem, bases: torch.Tensor, *, seed_offset: int = 0,
                   what: str = "emoji") -> torch.Tensor:
    """Trunk features of every augmentation of ``(C, styles, 3, S, S)`` bases, rows ordered (k, style, class)."""
    chunks = []
    for k in tqdm(range(recipe.augmentations), desc=f"{what} augmentations -> stem", leave=False):
        for s in range(bases.shape[1]):
            chunks.append(run_trunk(stem, emoji_images(recipe, k, s, bases, seed_offset)))
    return torch.cat(chunks)


def row_labels(augmentations: int, n_styles: int, n_classes: int) -> dict:
    """Class and style of every row ordered (k, style, class)."""
    grid = torch.arange(augmentations * n_styles * n_classes)
    return {"class": grid % n_classes, "style": (grid // n_classes) % n_styles}


def emoji_bases(recipe: DataRecipe, root: Path | None = None):
    """``(C, styles, 3, S, S)`` base drawings of every pretraining class and style at the recipe's size, with the
    classes and styles."""
    classes, styles = emoji_pretrain_classes(recipe, root)
    per_style = []
    for style in styles:
        code_points, images = load_base_drawings(style, root)
        row = {cp: i for i, cp in enumerate(code_points)}
        per_style.append(resize_bases(images[[row[c.code_point] for c in classes]], recipe.image_size))
    return torch.stack(per_style, 1), classes, styles


def build_emoji_part(recipe: DataRecipe, stem: FrozenCNNStem, root: Path | None = None) -> StemData:
    """Trunk features of every augmentation: rows ordered (k, style, class)."""
    bases, classes, styles = emoji_bases(recipe, root)
    return StemData(augmented_rows(recipe, stem, bases), {**row_labels(recipe.augmentations, len(styles), len(classes)),
                                                          "class_names": [c.name for c in classes],
                                                          "styles": list(styles)})


def build_extra_emoji_part(recipe: DataRecipe, stem: FrozenCNNStem, root: Path | None = None) -> StemData:
    """Trunk features of every augmentation of the extra emoji classes (:mod:`emoji_extra`), rows ordered
    (k, style, class) as the emoji part's, so the two join along the class axis (:func:`join_emoji_parts`)."""
    _, styles = emoji_pretrain_classes(recipe, root)
    records, images = extra_emoji_drawings(parse_extra_categories(recipe.extra_emoji), styles,
                                           banned_words(recipe, root), cache_root() / "downloads" / "emoji")
    bases = torch.stack([resize_bases(images[:, s], recipe.image_size) for s in range(len(styles))], 1)
    trunk = augmented_rows(recipe, stem, bases, seed_offset=EXTRA_EMOJI_SEED_OFFSET, what="extra emoji")
    return StemData(trunk, {"records": records, "styles": list(styles)})


def join_emoji_parts(emoji: StemData, extra: StemData, augmentations: int) -> StemData:
    """The emoji part with the extra classes appended after its own (class indices ``C`` on), rows still ordered
    (k, style, class); ``labels["domain_classes"]`` keeps ``C``, the number of EmojiDomains classes."""
    n_styles, n_base = len(emoji.labels["styles"]), len(emoji.labels["class_names"])
    n_extra, shape = len(extra.labels["records"]), emoji.trunk.shape[1:]
    trunk = torch.cat([emoji.trunk.view(augmentations, n_styles, n_base, *shape),
                       extra.trunk.view(augmentations, n_styles, n_extra, *shape)], dim=2)
    names = emoji.labels["class_names"] + [r["name"] for r in extra.labels["records"]]
    return StemData(trunk.reshape(-1, *shape), {**row_labels(augmentations, n_styles, len(names)),
                                                "class_names": names, "styles": emoji.labels["styles"],
                                                "domain_classes": n_base})


def rendered_words(recipe: DataRecipe, root: Path | None = None) -> list[str]:
    """MiniLM vocabulary words (alphabetic, 3-10 letters) that name no held-out class or Fashion-MNIST class."""
    banned = banned_words(recipe, root)
    vocab = (text_model_dir() / "vocab.txt").read_text(encoding="utf-8").split()
    return [w for w in vocab if w.isascii() and w.isalpha() and 3 <= len(w) <= 10 and w not in banned]


def words_and_plurals(class_names) -> set[str]:
    """Every word of the class names ("ankle-boot" -> ankle, boot) and its plural (+s): what a name must avoid."""
    words = {w for name in class_names for w in name.replace("-", " ").split()}
    return words | {w + "s" for w in words}


def banned_words(recipe: DataRecipe, root: Path | None = None) -> set[str]:
    """Every word of a held-out emoji class name or a Fashion-MNIST class name, and their plurals."""
    return words_and_plurals([*emoji_split(recipe.split, root).heldout_classes, *FASHION_MNIST_CLASSES])


def build_icon_part(recipe: DataRecipe, stem: FrozenCNNStem, root: Path | None = None) -> StemData:
    """Trunk features of every augmentation of every named icon drawing: rows ordered (k, drawing)."""
    drawings = named_icon_drawings(parse_icon_sets(recipe.icon_sets), recipe.image_size, banned_words(recipe, root),
                                   cache_root() / "downloads" / "icons", [c.name for c in load_emoji_classes(root)])
    chunks = []
    for k in tqdm(range(recipe.icon_augmentations), desc="icon augmentations -> stem", leave=False):
        gen = torch.Generator().manual_seed(recipe.seed * 1_000_003 + 7_777_777 + k)
        chunks.append(run_trunk(stem, augment(drawings.images, gen, invert=recipe.invert, grey=recipe.grey)))
    return StemData(torch.cat(chunks), {"names": drawings.names, "drawing_name": torch.tensor(drawings.drawing_name)})


def build_text_part(recipe: DataRecipe, stem: FrozenCNNStem, root: Path | None = None) -> StemData:
    """Trunk features of the rendered digits, numbers and words, with their text and captions."""
    fonts, words = find_fonts(), rendered_words(recipe, root)
    config = RenderConfig(max_fill=recipe.text_max_fill, boxed_digits=recipe.text_boxed_digits,
                          boxed_height=recipe.text_boxed_height)
    items = [render_item(i, seed=recipe.seed, fonts=fonts, words=words, config=config)
             for i in tqdm(range(recipe.rendered_items), desc="render text", leave=False)]
    pixels = torch.from_numpy(np.stack([it.image for it in items])).permute(0, 3, 1, 2).float() / 255
    if pixels.shape[-1] != recipe.image_size:
        pixels = F.interpolate(pixels, size=(recipe.image_size,) * 2, mode="bicubic", antialias=True).clamp(0, 1)
    return StemData(run_trunk(stem, pixels), {"text": [it.text for it in items], "kind": [it.kind for it in items],
                                              "captions": [list(it.captions) for it in items],
                                              "fonts": font_manifest(fonts)})


PART_FIELDS = MappingProxyType({  # the DataRecipe fields that decide each part
    "emoji": ("split", "seed", "image_size", "augmentations", "invert", "grey"),
    "text": ("split", "seed", "image_size", "rendered_items", "text_max_fill", "text_boxed_digits",
             "text_boxed_height"),
    "icon": ("split", "seed", "image_size", "icon_augmentations", "icon_sets", "invert", "grey"),
    "extra": ("split", "seed", "image_size", "augmentations", "invert", "grey", "extra_emoji"),
})
# Fields added after the version-2 weights: left out of the cache key at their default value, so that data
# built before they existed keeps its key (and is not built again).
FIELDS_KEYED_WHEN_CHANGED = ("text_max_fill", "text_boxed_digits", "text_boxed_height")


def data_digest(recipe: DataRecipe, part: str) -> str:
    """Cache key of one part: the recipe fields that decide it, the part's name and the fonts (rendered text)."""
    extra = [p.name for p in find_fonts()] if part == "text" else []
    default = asdict(DataRecipe())
    fields = {name: value for name, value in asdict(recipe).items() if name in PART_FIELDS[part]
              and not (name in FIELDS_KEYED_WHEN_CHANGED and value == default[name])}
    text = json.dumps([fields, part, extra], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def load_or_build(part: str, recipe: DataRecipe, stem: FrozenCNNStem, root: Path | None = None) -> StemData:
    """One part from the cache, or built (and cached): ``part`` is ``"emoji"``, ``"text"``, ``"icon"`` or
    ``"extra"`` (the extra emoji classes)."""
    from uniil_lib.fileio import atomic_write

    builders = {"emoji": build_emoji_part, "text": build_text_part, "icon": build_icon_part,
                "extra": build_extra_emoji_part}
    path = cache_root() / "mini_clip_pretrain" / f"{part}-{data_digest(recipe, part)}.pt"
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=False)
            return StemData(saved["trunk"], saved["labels"])
        except Exception as error:  # a damaged cache file is rebuilt
            print(f"rebuilding {path}: {error}")
    data = builders[part](recipe, stem, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: torch.save({"trunk": data.trunk, "labels": data.labels}, handle))
    return data
