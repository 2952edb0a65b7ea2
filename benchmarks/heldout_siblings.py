"""How much of the mini-CLIP's zero-shot accuracy on held-out emoji classes comes from close pretraining siblings.

    .venv/bin/python benchmarks/heldout_siblings.py [--styles twitter,fluent3d] [--bins 3] [--threads 1]
                                                  [--out docs/measurements/heldout_siblings.json]

A diagnostic for the issue "A stronger offline CLIP" (item 3: held-out twitter >= 25; the shipped weights read
20.25), not a tuning number: it decides nothing about a recipe. For every held-out class of the random split it
measures

- **how close its name lies to a pretraining class**: the largest cosine between the frozen MiniLM features (before
  the trained projection) of ``"an emoji of a {name}."`` for it and for each of the 749 pretraining classes, a
  property of the data and the text encoder alone (nothing trained);
- **the shipped weights' zero-shot top-1 on it**: the model card's measurement (the card's prompts, the seeded test
  augmentations, 8 per class, scored among the 100 held-out classes), per class.

It then groups the classes into ``--bins`` equal-count bins by that closeness and reports the mean per-class top-1
of each bin, and Spearman's rank correlation between the two over the classes. If the far bin stays near chance
while the near bin carries the mean, what the recipe transfers is reached through siblings, which is what the
subcategory split (no sibling of a held-out class in pretraining: 2.69) shows from the other side.

It also scores a **sibling reader**, a thought experiment on the text side alone: an image tower that read every
drawing of a held-out class as the pretraining class nearest to that class's *name* and placed it exactly on that
class's text embedding.
Held-out class ``h`` is then named right when, among the 100 held-out names, ``h``'s own is the nearest to its
nearest pretraining sibling's embedding. It is scored in two text spaces: the frozen MiniLM features of
``"an emoji of a {name}."`` (nothing trained) and the shipped weights' zero-shot class embeddings (the card's
prompt ensemble through the trained projection, what images are scored against). Its top-1 is what reading an
unseen class through the seen class nearest *in name* can reach with these names and this text tower. Whether the
tower does read drawings that way is then measured per style: the share of held-out test images whose nearest of
the 749 pretraining classes (the tower's own scores, same prompts) is their class's nearest-in-name sibling, and
the top-1 (among the 100) of the images read that way and of the rest. The last line printed is the JSON written
to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "data_scripts"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from uniil_lib.clip_model import pooled_text_features  # noqa: E402
from uniil_lib.fileio import atomic_write_text  # noqa: E402

NAME_TEMPLATE = "an emoji of a {}."


def nearest_similarity(query: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest cosine of each ``(Q, d)`` query row to the ``(K, d)`` key rows, and the index of that key."""
    return (F.normalize(query, dim=-1) @ F.normalize(keys, dim=-1).T).max(dim=1)


def per_class_top1(scores: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(C,)`` top-1 accuracy (%) of every class from ``(N, C)`` scores; a class without images is an error."""
    correct = (scores.argmax(dim=1) == labels).float()
    counts = torch.bincount(labels, minlength=n_classes)
    if (counts == 0).any():
        raise ValueError(f"classes {torch.nonzero(counts == 0).view(-1).tolist()} have no image to score")
    return 100 * torch.bincount(labels, weights=correct, minlength=n_classes) / counts


def accuracy_by_closeness(closeness: torch.Tensor, accuracy: torch.Tensor, bins: int) -> list[dict]:
    """Classes sorted by ``closeness`` into ``bins`` bins of (nearly) equal count, far to near: each bin's
    closeness range, class count and mean per-class accuracy."""
    if not 1 <= bins <= len(closeness):
        raise ValueError(f"--bins must lie in 1..{len(closeness)} (one class at least a bin), got {bins}")
    order = closeness.argsort()
    rows = []
    for part in order.tensor_split(bins):
        rows.append({"closeness_min": round(float(closeness[part].min()), 4),
                     "closeness_max": round(float(closeness[part].max()), 4),
                     "classes": len(part), "mean_top1": round(float(accuracy[part].mean()), 2)})
    return rows


def sibling_reader_top1(seen: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
    """``(H,)`` per-class top-1 (0 or 100) of the sibling reader (module docstring) from ``(S, d)`` pretraining-class
    and ``(H, d)`` held-out-class text embeddings: class ``h`` is right when, of all held-out rows, ``held[h]`` is
    the nearest (cosine) to the pretraining row nearest to ``held[h]``."""
    _, sibling = nearest_similarity(held, seen)
    guess = (F.normalize(seen[sibling], dim=-1) @ F.normalize(held, dim=-1).T).argmax(dim=1)
    return 100.0 * (guess == torch.arange(len(held))).float()


@torch.no_grad()
def name_features(clip, names: list[str]) -> torch.Tensor:
    """Frozen MiniLM features (before the trained projection) of ``NAME_TEMPLATE`` for every name."""
    return pooled_text_features(clip.model, clip.tokenizer([NAME_TEMPLATE.format(n) for n in names]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--styles", default="twitter,fluent3d", help="held-out test styles, comma-separated")
    parser.add_argument("--bins", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "measurements" / "heldout_siblings.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from uniil_lib.clip import load_clip, zero_shot_weights
    from uniil_lib.data.emoji import EMOJI_TEMPLATES, load_emoji_style
    from uniil_lib.data.emoji_split import emoji_split
    from uniil_lib.features import image_features

    clip = load_clip("mini")
    split = emoji_split("random", args.root)
    held, seen = list(split.heldout_classes), list(split.pretrain_classes)
    held_names, seen_names = name_features(clip, held), name_features(clip, seen)
    closeness, nearest = nearest_similarity(held_names, seen_names)
    held_weights, seen_weights = (zero_shot_weights(clip, names, EMOJI_TEMPLATES) for names in (held, seen))
    reader = {"minilm_names": sibling_reader_top1(seen_names, held_names),
              "zero_shot_weights": sibling_reader_top1(seen_weights, held_weights)}
    _, name_sibling = nearest_similarity(held_weights, seen_weights)
    record = {"weights": clip.identity, "name_template": NAME_TEMPLATE, "classes": len(held),
              "pretraining_classes": len(seen), "chance": round(100 / len(held), 2),
              "sibling_reader_top1": {space: round(float(r.mean()), 2) for space, r in reader.items()}, "styles": {}}
    print(f"sibling reader top-1: {record['sibling_reader_top1']}")
    for style in args.styles.split(","):
        imageset = load_emoji_style(style, "test", args.root, held, n_per_class=8)
        if list(imageset.class_names) != held:
            raise RuntimeError(f"{style}: the image set's classes are not the held-out classes in their order")
        features = image_features(clip, imageset, use_cache=False, progress=False)
        labels = torch.as_tensor(imageset.labels)
        scores = features @ held_weights.T  # the card's zero-shot scores (evaluate_mini_clip.zero_shot_scores)
        accuracy = per_class_top1(scores, labels, len(held))
        read_as_sibling = (features @ seen_weights.T).argmax(dim=1) == name_sibling[labels]
        right = (scores.argmax(dim=1) == labels).float() * 100
        record["styles"][style] = {
            "mean_top1": round(float(accuracy.mean()), 2),
            "spearman_closeness_top1": round(float(spearmanr(closeness, accuracy).statistic), 3),
            "bins_far_to_near": accuracy_by_closeness(closeness, accuracy, args.bins),
            "images_read_as_name_sibling_pct": round(100 * float(read_as_sibling.float().mean()), 2),
            "top1_of_images_read_as_name_sibling_or_not": [round(float(right[read_as_sibling].mean()), 2),
                                                           round(float(right[~read_as_sibling].mean()), 2)],
            "per_class": [{"class": name, "nearest_pretraining_class": seen[int(j)],
                           "closeness": round(float(c), 4), "top1": round(float(a), 2),
                           "name_sibling_zero_shot": seen[int(k)], "sibling_reader_top1": round(float(r), 2)}
                          for name, j, c, a, k, r in zip(held, nearest, closeness, accuracy, name_sibling,
                                                         reader["zero_shot_weights"])],
        }
        bins = record["styles"][style]["bins_far_to_near"]
        print(f"{style}: mean {record['styles'][style]['mean_top1']}%, Spearman "
              f"{record['styles'][style]['spearman_closeness_top1']}, far to near "
              + " / ".join(f"{b['mean_top1']}% (cos {b['closeness_min']:.2f}-{b['closeness_max']:.2f})" for b in bins))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "styles"}
                     | {s: {k: v for k, v in r.items() if k != "per_class"} for s, r in record["styles"].items()}))


if __name__ == "__main__":
    main()
