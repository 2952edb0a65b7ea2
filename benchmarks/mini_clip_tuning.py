"""Compare mini-CLIP pretraining recipes on tuning sets that no reported number uses.

Usage::

    python benchmarks/mini_clip_tuning.py --name base --steps 600 [--weight-decay 0.05]
                                          [--weight-average D] [--extra-averages D,D]
                                          [--lr 1e-3] [--batch-size 192] [--augmentations 12]
                                          [--freeze-text-projection] [--invert P] [--grey P]
                                          [--run-seed R] [--image-size 128] [--vision-width 256]
                                          [--imagenet-weight W]
                                          [--text-max-fill 0.9] [--text-boxed-digits 0.0]
                                          [--text-boxed-height 0.95] [--stem-head-lr-scale S] [--keyword-weight W]
                                          [--mixup-alpha A] [--patch-dropout P] [--imagenet-negatives]
                                          [--soup-children K --spawn-step S] [--trained-classes N]
                                          [--threads 1] [--out docs/measurements/mini_clip_tuning]
    python benchmarks/mini_clip_tuning.py --report docs/measurements/mini_clip_tuning

Each run trains the recipe of ``data_scripts/pretrain_mini_clip.py`` (its own step function, on the cached
pretraining data) with ``--validation-classes`` pretraining classes left out, then measures zero-shot top-1
on the **tuning sets**: those left-out classes (twitter and fluent3d test augmentations: stand-ins for the
held-out classes and the held-out style), Fashion-MNIST's *train* split (3,000 images, seeded),
MNIST-5k's *train* split and optdigits' *train* split (from the eleventh round on). The model card reports the
*test* splits and the real held-out classes, which a tuning run never reads. One json per run,
``<out>/<name>.json``; with ``--extra-averages`` one more per decay, ``<out>/<name>-avg<D>.json``, measured from
the same run (each also stores the last weights' numbers).

With ``--soup-children K`` a run trains ``S = --spawn-step`` steps once, then ``K`` children from that state to the
end of the schedule, each with its own batch order (child 0 draws the batches of the plain run, so it *is* the plain
run), and averages their weights: a *spawned soup*. Frankle et al. 2020 ("Linear Mode Connectivity and the Lottery
Ticket Hypothesis") found that copies of a network trained on from one state past the first part of training end in
one linearly connected basin, and Wortsman et al. 2022 ("Model soups") that averaging such weights is as good as or
better than the best of them, out of distribution too. Here it asks whether the run-to-run spread of the recipe (the
earlier rounds' main obstacle) is batch-order noise that averaging removes. Jsons ``<name>-child<k>.json`` (each
child) and ``<name>.json`` (the soup), all from one run, so soup against children carries no run-to-run spread.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "data_scripts"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from evaluate_mini_clip import zero_shot_accuracy  # noqa: E402
from emoji_extra import name_words  # noqa: E402
from emoji_keywords import keyword_targets  # noqa: E402
from pretrain_data import DataRecipe, StemData, emoji_pretrain_classes, words_and_plurals  # noqa: E402
from pretrain_mini_clip import (  # noqa: E402
    LR_SCALE, ONE_OR_MORE, ZERO_OR_MORE, Recipe, TrainData, WeightAverage, add_run_options, drawings_of_names,
    load_train_data, make_optimizer, optimisation_step, recipe_and_config, run_base_seed, start_trained_parts,
)
from tqdm.auto import tqdm  # noqa: E402

from uniil_lib.clip_model import ClipModel  # noqa: E402
from uniil_lib.fileio import atomic_write_text  # noqa: E402
from uniil_lib.hybrid_vit import StemFeatureCache  # noqa: E402
from uniil_lib.imagenet_backbone import imagenet_class_names  # noqa: E402
from uniil_lib.mini_clip import (  # noqa: E402
    MiniClipConfig, build_mini_clip, mini_preprocess, mini_tokenizer, stem_cache_folder, trained_state_dict,
)

VALIDATION_SEED = 12345  # which pretraining classes a tuning run leaves out (never the reported held-out ones)
SUBSET_SEED = 54321  # which of the other classes a run with --trained-classes N trains on
FASHION_TUNING_IMAGES = 3000
CHILD_SEED_STRIDE = 1000  # child k > 0 of a spawned soup draws its batches with run seed ``run_seed + 1000 k``


def validation_classes(n_classes: int, count: int) -> list[int]:
    """The ``count`` pretraining class indices that tuning runs leave out (seeded, the same for every run)."""
    order = torch.randperm(n_classes, generator=torch.Generator().manual_seed(VALIDATION_SEED))
    return sorted(order[:count].tolist())


def untrained_classes(n_classes: int, left_out: list[int], trained: int | None) -> list[int]:
    """The classes, besides ``left_out``, that a run training on only ``trained`` classes also leaves out (seeded,
    nested: a smaller subset is part of every larger one). ``None``: every class that is not left out."""
    excluded = set(left_out)
    rest = [c for c in range(n_classes) if c not in excluded]
    if trained is None:
        return []
    if not 0 < trained <= len(rest):
        raise ValueError(f"--trained-classes must lie in 1..{len(rest)} (the classes not left out), got {trained}")
    order = torch.randperm(len(rest), generator=torch.Generator().manual_seed(SUBSET_SEED))
    return sorted(rest[i] for i in order[trained:].tolist())


def without_classes(data: TrainData, left_out: list[int], augmentations: int) -> TrainData:
    """``data`` with the emoji classes ``left_out`` removed (images, captions' fits, style-free rows), and the
    extra emoji classes and named icons that share a word with a left-out class's name."""
    n_classes, n_styles = len(data.fits), len(data.fits[0])
    names = data.emoji.labels["class_names"]
    banned = words_and_plurals([names[c] for c in left_out])
    n_domain = data.emoji.labels.get("domain_classes", n_classes)  # extra emoji classes come after these
    dropped = set(left_out) | {c for c in range(n_domain, n_classes) if banned & name_words(names[c])}
    keep = torch.tensor([c for c in range(n_classes) if c not in dropped])
    trunk = data.emoji.trunk.view(augmentations, n_styles, n_classes, *data.emoji.trunk.shape[1:])
    trunk = trunk[:, :, keep].reshape(-1, *data.emoji.trunk.shape[1:]).contiguous()
    emoji = StemData(trunk, {"class_names": [data.emoji.labels["class_names"][c] for c in keep.tolist()]})
    data = replace(data, emoji=emoji, fits=[data.fits[c] for c in keep.tolist()], generic=data.generic[keep])
    if data.keyword_targets is not None:
        data = without_keywords(data, keep, banned)
    if data.imagenet_negatives is not None:  # no ImageNet name with a word of a left-out class either
        names = imagenet_class_names()
        data = replace(data, imagenet_negatives=torch.tensor(
            [i for i in data.imagenet_negatives.tolist() if not banned & name_words(names[i])], dtype=torch.long))
    return data if data.icons is None else without_icons(data, banned)


def without_keywords(data: TrainData, keep: torch.Tensor, banned: set[str]) -> TrainData:
    """``data``'s keyword targets of the ``keep`` classes only, without the keywords that have a ``banned`` word
    (a word of a left-out class name) or that no kept class has; each row spread evenly again
    (``emoji_keywords.keyword_targets`` on the kept classes' keyword lists)."""
    per_class = [[word for word, weight in zip(data.keywords, row.tolist())
                  if weight > 0 and not banned & name_words(word)] for row in data.keyword_targets[keep]]
    vocabulary, targets = keyword_targets(per_class)
    column = {word: k for k, word in enumerate(data.keywords)}
    return replace(data, keywords=vocabulary, keyword_targets=targets,
                   keyword_features=data.keyword_features[[column[word] for word in vocabulary]])


def without_icons(data: TrainData, banned: set[str]) -> TrainData:
    """``data`` without the icon names that have a ``banned`` word, nor their drawings."""
    names, drawing_name = data.icons.labels["names"], data.icons.labels["drawing_name"]
    keep_names = [i for i, name in enumerate(names) if not banned & set(name.split())]
    new_index = torch.full((len(names),), -1, dtype=torch.long)
    new_index[keep_names] = torch.arange(len(keep_names))
    keep = torch.nonzero(new_index[drawing_name] >= 0).view(-1)
    copies = len(data.icons.trunk) // len(drawing_name)
    trunk = data.icons.trunk.view(copies, len(drawing_name), *data.icons.trunk.shape[1:])[:, keep]
    icons = StemData(trunk.reshape(-1, *trunk.shape[2:]).contiguous(),
                     {"names": [names[i] for i in keep_names], "drawing_name": new_index[drawing_name[keep]]})
    return replace(data, icons=icons, icon_captions=data.icon_captions[keep_names],
                   icon_drawings=drawings_of_names(icons.labels["drawing_name"], len(keep_names)))


def train_variant(recipe: Recipe, config: MiniClipConfig, left_out: list[int], root, *,
                  run_seed: int = 0, extra_averages: tuple[float, ...] = (), soup_children: int = 0,
                  spawn_step: int = 0):
    """The pretraining loop of the script (same step, optimiser and schedule), on the classes not left out.

    ``run_seed`` 0 initialises and draws batches exactly as the script does; another value changes both (the
    data stay the same), which measures how much a recipe's numbers move from run to run.

    Returns ``(model, averages, info)``: the model holds the last weights, ``averages`` maps each decay (the
    recipe's ``weight_average`` if it has one, then ``extra_averages``) to its :class:`WeightAverage` kept
    along the same run, so the last weights and every average can be measured without run-to-run spread.
    With ``soup_children`` > 0 the run is a spawned soup (module docstring): ``info["children"]`` holds each
    child's trained tensors, and the model holds their mean.
    """
    if soup_children and (extra_averages or recipe.weight_average > 0):
        raise ValueError("a spawned soup and a running weight average are two answers to one question: pick one")
    if soup_children and not 0 < spawn_step < recipe.steps:
        raise ValueError(f"--spawn-step must lie inside the schedule (0 < S < {recipe.steps}), got {spawn_step}")
    if soup_children and recipe.stem_head_lr_scale:
        raise ValueError("a spawned soup averages the weights file's tensors, which hold no stem head: "
                         "drop --stem-head-lr-scale or --soup-children")
    model = build_mini_clip(config, seed=run_base_seed(recipe, run_seed))
    data = load_train_data(model, recipe, root)
    start_trained_parts(model, data.emoji_captions, recipe)
    data = without_classes(data, left_out, recipe.data.augmentations)
    optimizer, scheduler = make_optimizer(model, recipe)
    decays = ([recipe.weight_average] if recipe.weight_average > 0 else []) + list(extra_averages)
    averages = {decay: WeightAverage(model, decay) for decay in decays}
    began, last = time.perf_counter(), {}

    def train_steps(steps: range, batch_seed: int, label: str) -> None:
        nonlocal last
        model.train()
        for step in tqdm(steps, desc=label, mininterval=10):
            parts = optimisation_step(model, data, recipe, optimizer, scheduler, step, run_seed=batch_seed)
            for average in averages.values():
                average.update(model)
            last = {k: round(float(v.detach() if torch.is_tensor(v) else v), 4) for k, v in parts.items()}

    if not soup_children:
        train_steps(range(recipe.steps), run_seed, "tuning run")
        model.eval()
        return model, averages, {"train_seconds": round(time.perf_counter() - began, 1), "last_losses": last}
    train_steps(range(spawn_step), run_seed, "shared start")
    spawn = copy.deepcopy((model.state_dict(), optimizer.state_dict(), scheduler.state_dict()))
    children, child_losses = [], []
    for child in range(soup_children):
        model_state, optimizer_state, scheduler_state = copy.deepcopy(spawn)
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(scheduler_state)
        train_steps(range(spawn_step, recipe.steps), run_seed + CHILD_SEED_STRIDE * child, f"child {child}")
        children.append(trained_state_dict(model))  # copies: the next child trains the same model on
        child_losses.append(last)
    model.load_state_dict(soup(children), strict=False)
    model.eval()
    return model, averages, {"train_seconds": round(time.perf_counter() - began, 1), "last_losses": child_losses,
                             "children": children}


def soup(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of same-shaped state dicts (a uniform model soup); non-float tensors from the first."""
    return {name: torch.stack([state[name] for state in states]).mean(dim=0) if tensor.is_floating_point() else tensor
            for name, tensor in states[0].items()}


def measure_tuning_sets(clip: ClipModel, sets, label: str) -> dict:
    """Zero-shot top-1/top-5 of ``clip`` on every tuning set of ``sets`` (from :func:`tuning_sets`), printed."""
    results = {}
    for key, imageset, templates in sets:
        results[key] = zero_shot_accuracy(clip, imageset, templates)
        print(f"{label}: {key:22s} top-1 {results[key]['top1']:5.1f}%  top-5 {results[key]['top5']:5.1f}%", flush=True)
    return results


def train_split_tuning_sets(root):
    """``(key, imageset, templates)`` of the tuning numbers read from train splits: Fashion-MNIST (3,000 seeded
    images), MNIST-5k, optdigits."""
    from uniil_lib.data import get_source, load_dataset

    fashion = load_dataset("fashion-mnist", "train", root=root)
    order = torch.randperm(len(fashion), generator=torch.Generator().manual_seed(0))[:FASHION_TUNING_IMAGES]
    return [("fashion-mnist-train", fashion.subset(sorted(order.tolist()), tag="tuning3000"),
             get_source("fashion-mnist").templates),
            ("mnist-5k-train", load_dataset("mnist-5k", "train", root=root), get_source("mnist-5k").templates),
            ("optdigits-train", load_dataset("optdigits", "train", root=root), get_source("optdigits").templates)]


def tuning_sets(left_out_names: list[str], root):
    """``(key, imageset, templates)`` of every tuning number: the left-out emoji classes, then the train splits."""
    from uniil_lib.data.emoji import EMOJI_TEMPLATES, load_emoji_style

    sets = [(f"validation_{style}", load_emoji_style(style, "test", root, left_out_names, n_per_class=8),
             EMOJI_TEMPLATES) for style in ("twitter", "fluent3d")]
    return sets + train_split_tuning_sets(root)


# optdigits-train joined in the eleventh round: runs measured before it lack it (shown as "-").
TUNING_KEYS = ("validation_twitter", "validation_fluent3d", "fashion-mnist-train", "mnist-5k-train", "optdigits-train")


def _top1(run: dict, key: str) -> float | None:
    """The run's top-1 on tuning set ``key``, or None for a run measured before that set existed."""
    return run["tuning"][key]["top1"] if key in run["tuning"] else None


def report(folder: Path) -> str:
    """A markdown table of every run's json in ``folder`` (top-1 %, tuning sets), in file-name order."""
    lines = ["| run | steps | changed from the shipped recipe | run seed | " + " | ".join(TUNING_KEYS) + " |",
             "|---|---|---|---|" + "---|" * len(TUNING_KEYS)]
    default_recipe, default_config = Recipe(data=DataRecipe()).to_dict(), MiniClipConfig().to_dict()
    groups: dict[tuple, list[dict]] = {}
    for path in sorted(folder.glob("*.json")):
        run = json.loads(path.read_text(encoding="utf-8"))
        changed = [f"{k}={v}" for k, v in run["recipe"]["data"].items() if default_recipe["data"].get(k) != v]
        changed += [f"{k}={v}" for k, v in run["recipe"].items()
                    if k not in ("data", "steps") and default_recipe.get(k) != v]
        # A config field this version lacks is an option tried and removed since (stem_class_token, commit a9a3b88).
        changed += [f"{k}={v}" for k, v in run["config"].items()
                    if default_config.get(k) != v and (k in default_config or v)]
        if run.get("trained_classes") is not None:
            changed.append(f"trained_classes={run['trained_classes']}")
        changed = list(dict.fromkeys(changed))  # image_size is in both the data recipe and the config
        if "spawn" in run:
            spawn = run["spawn"]
            changed.append(f"child {spawn['child']} of a soup spawned at step {spawn['spawn_step']}" if "child" in spawn
                           else f"soup of {spawn['soup_children']} children spawned at step {spawn['spawn_step']}")
        cells = " | ".join("-" if _top1(run, key) is None else f"{_top1(run, key):.1f}" for key in TUNING_KEYS)
        lines.append(f"| {run['name']} | {run['recipe']['steps']} | {', '.join(changed) or '-'} | "
                     f"{run.get('run_seed', 0)} | {cells} |")
        groups.setdefault((run["recipe"]["steps"], ", ".join(changed) or "-"), []).append(run)
    lines += ["", "Mean ± sample std over run seeds, recipes with more than one run:", "",
              "| steps | changed from the shipped recipe | run seeds | " + " | ".join(TUNING_KEYS) + " |",
              "|---|---|---|" + "---|" * len(TUNING_KEYS)]
    for (steps, changed), repeated in groups.items():
        runs = one_run_per_seed(repeated)
        if len(runs) > 1:
            cells = " | ".join(_mean_std([_top1(r, key) for r in runs if _top1(r, key) is not None])
                               for key in TUNING_KEYS)
            seeds = ",".join(str(r.get("run_seed", 0)) for r in runs)
            lines.append(f"| {steps} | {changed} | {seeds} | {cells} |")
    return "\n".join(lines)


def one_run_per_seed(runs: list[dict]) -> list[dict]:
    """Runs of one recipe, each run seed once: a run seed trained again (to measure a tuning set that joined later,
    e.g. ``steps600-od`` repeating ``steps600``) counts once, as the run that measured the most tuning sets."""
    best: dict[int, dict] = {}
    for run in runs:
        seed = run.get("run_seed", 0)
        if seed not in best or len(run["tuning"]) > len(best[seed]["tuning"]):
            best[seed] = run
    return list(best.values())


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return "-" if not values else f"{values[0]:.1f}"
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.1f} ± {std:.1f}"


def parse_args(argv=None) -> argparse.Namespace:
    """The pretraining script's run options (:func:`pretrain_mini_clip.add_run_options`), 600 steps on one thread
    by default, and the options of a tuning run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_options(parser)
    parser.set_defaults(steps=600, threads=1)
    tuning = parser.add_argument_group("the tuning run")
    tuning.add_argument("--report", type=Path, default=None, metavar="FOLDER",
                        help="only print the table of the runs stored in FOLDER")
    tuning.add_argument("--name")
    tuning.add_argument("--validation-classes", type=ONE_OR_MORE, default=50)
    tuning.add_argument("--trained-classes", type=ONE_OR_MORE, default=None, metavar="N",
                        help="train on a seeded subset of N of the classes not left out (default: all of them)")
    tuning.add_argument("--stem-head-lr-scale", type=LR_SCALE, default=Recipe.stem_head_lr_scale,
                        help="train the CNN's 1x1 conv head at lr x this (0: frozen, as shipped)")
    tuning.add_argument("--extra-averages", default="", metavar="D,D",
                        help="more decays averaged along the same run, one json each (<name>-avg<D>.json)")
    tuning.add_argument("--soup-children", type=ZERO_OR_MORE, default=0,
                        help="train K children from step --spawn-step on and average them (0: a plain run)")
    tuning.add_argument("--spawn-step", type=ZERO_OR_MORE, default=0,
                        help="where the children of a spawned soup part")
    tuning.add_argument("--out", type=Path, default=REPO / "docs" / "measurements" / "mini_clip_tuning")
    args = parser.parse_args(argv)
    if args.report is None and not args.name:
        parser.error("--name is required to train a run")
    if args.trained_classes is not None and args.trained_classes < args.batch_size:
        parser.error(f"--trained-classes {args.trained_classes} is below the emoji batch of {args.batch_size} "
                     "distinct classes: lower --batch-size too")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.report is not None:
        print(report(args.report))
        return
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    recipe, config = recipe_and_config(args)
    classes, _ = emoji_pretrain_classes(recipe.data, args.root)
    left_out = validation_classes(len(classes), args.validation_classes)
    untrained = untrained_classes(len(classes), left_out, args.trained_classes)
    extra = tuple(float(d) for d in args.extra_averages.split(",") if d)
    model, averages, info = train_variant(recipe, config, sorted(left_out + untrained), args.root,
                                          run_seed=args.run_seed, extra_averages=extra,
                                          soup_children=args.soup_children, spawn_step=args.spawn_step)
    children = info.pop("children", [])
    model.visual.stem_cache = StemFeatureCache(stem_cache_folder(config))
    clip = ClipModel(model, mini_preprocess(config), mini_tokenizer(config), f"tuning-{args.name}", config.image_size)
    sets = tuning_sets([classes[c].name for c in left_out], args.root)  # loaded once, measured once per weights
    common = {"config": config.to_dict(), "validation_classes": args.validation_classes,
              "validation_seed": VALIDATION_SEED, "run_seed": args.run_seed, "threads": args.threads, **info}
    if args.trained_classes is not None:
        common.update(trained_classes=args.trained_classes, subset_seed=SUBSET_SEED)
    records = {}
    if children:
        soup_numbers = measure_tuning_sets(clip, sets, f"{args.name} (soup of {len(children)})")
        spawn = {"soup_children": len(children), "spawn_step": args.spawn_step}
        measured = []
        for k, state in enumerate(children):
            model.load_state_dict(state, strict=False)
            name = f"{args.name}-child{k}"
            measured.append(measure_tuning_sets(clip, sets, name))
            records[name] = {"name": name, "recipe": recipe.to_dict(), **common, "spawn": {**spawn, "child": k},
                             "tuning": measured[-1]}
        records[args.name] = {"name": args.name, "recipe": recipe.to_dict(), **common, "spawn": spawn,
                              "tuning": soup_numbers, "tuning_children": measured}
    last_weights = None if children else measure_tuning_sets(clip, sets, f"{args.name} (last weights)")
    if recipe.weight_average == 0 and not children:
        records[args.name] = {"name": args.name, "recipe": recipe.to_dict(), **common, "tuning": last_weights}
    for decay, average in averages.items():  # the recipe's own average (if any) first, then the extra ones
        name = args.name if decay == recipe.weight_average else f"{args.name}-avg{decay:g}"
        average.copy_to(model)
        records[name] = {"name": name, "recipe": replace(recipe, weight_average=decay).to_dict(), **common,
                         "tuning": measure_tuning_sets(clip, sets, name),
                         "tuning_last_weights": last_weights}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, record in records.items():
        atomic_write_text(args.out / f"{name}.json", json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
