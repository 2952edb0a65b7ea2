"""Choose the full-data mini-CLIP weights among run seeds, by sets the model card never reports.

Usage::

    python benchmarks/mini_clip_selection.py --candidates uniil_lib/weights/mini_clip.safetensors RUN1 RUN2 \\
        --out docs/measurements/mini_clip_selection.json [--card]

One recipe's full-length runs spread by about ten points on Fashion-MNIST's and optdigits' train splits with only
the run seed drawn (``docs/measurements/mini_clip_tuning.md``, fourteenth round), so the shipped weights are one
draw among many. This script measures each candidate (a weights file and its ``.json``, from
``data_scripts/pretrain_mini_clip.py --run-seed N``) zero-shot on the *selection sets*: the train splits of
Fashion-MNIST (the 3,000 seeded images of the tuning rounds), MNIST-5k and optdigits
(:func:`mini_clip_tuning.train_split_tuning_sets`). The card reads their test splits and the held-out emoji
classes, never these. The candidate with the highest mean top-1 over the selection sets is chosen
(:func:`choose`); the first candidate (the shipped weights) stays on a tie.

This is model selection on a validation split, our choice for the issue "A stronger offline CLIP": it can move
Fashion-MNIST and the digits, not the held-out emoji classes, for which a full-data run has no unreported
validation set. ``--card`` also measures every candidate's card numbers (``evaluate_mini_clip.evaluate``) after
the choice, so the card's own run-to-run spread is on record; they never change the choice.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "data_scripts", REPO / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from uniil_lib.fileio import atomic_write_text, check_output_file  # noqa: E402

SELECTION_KEYS = ("fashion-mnist-train", "mnist-5k-train", "optdigits-train")
TIE = 0.01  # points of mean top-1 under which two candidates count as level


def selection_score(numbers: dict) -> float:
    """Mean top-1 (%) over :data:`SELECTION_KEYS` of one candidate's selection numbers."""
    missing = [key for key in SELECTION_KEYS if key not in numbers]
    if missing:
        raise ValueError(f"selection numbers lack {missing}; measure every set of {SELECTION_KEYS}")
    return round(statistics.fmean(numbers[key]["top1"] for key in SELECTION_KEYS), 3)


def choose(scores: list[float]) -> int:
    """Index of the chosen candidate: the highest score; the earliest (the shipped weights first) unless a later
    one beats it by more than :data:`TIE`."""
    if not scores:
        raise ValueError("no candidates to choose from")
    best = 0
    for index, score in enumerate(scores[1:], start=1):
        if score > scores[best] + TIE:
            best = index
    return best


def describe(weights: Path) -> dict:
    """What a candidate is: its file, digest, run seed and training time (from its json)."""
    from uniil_lib.mini_clip import weights_digest

    record = json.loads(weights.with_suffix(".json").read_text(encoding="utf-8"))
    shown = Path(weights).resolve()
    for base, name in ((REPO, ""), (Path.home(), "~/")):  # no machine-specific folders in the record
        if shown.is_relative_to(base):
            shown = name + str(shown.relative_to(base))
            break
    return {"weights": str(shown), "weights_sha1_12": weights_digest(weights),
            "run_seed": record.get("run_seed", 0), "train_seconds": record.get("train_seconds"),
            "recipe_steps": record["recipe"]["steps"]}


def selection_sets(root=None) -> list:
    """``(key, imageset, templates)`` of every selection set, built once for all candidates."""
    from mini_clip_tuning import train_split_tuning_sets

    return train_split_tuning_sets(root)


def measure(weights: Path, sets: list) -> dict:
    """Zero-shot top-1/top-5 of one candidate on every selection set of ``sets`` (:func:`selection_sets`)."""
    from mini_clip_tuning import measure_tuning_sets

    from uniil_lib.mini_clip import load_mini_clip

    return measure_tuning_sets(load_mini_clip(weights), sets, f"{weights.parent.name}/{weights.name}")


def check_candidates(paths: list[Path]) -> None:
    """Refuse, before any work, a candidate file or json that is missing or named twice."""
    if len(set(p.resolve() for p in paths)) != len(paths):
        raise SystemExit("error: a candidate is named twice; name each weights file once")
    for path in paths:
        if not path.is_file() or not path.with_suffix(".json").is_file():
            raise SystemExit(f"error: candidate {path} or its json {path.with_suffix('.json')} does not exist; "
                             "train it with: python data_scripts/pretrain_mini_clip.py --run-seed N --out DIR")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=Path, nargs="+", required=True,
                        help="weights files; the first is the one that stays on a tie (the shipped weights)")
    parser.add_argument("--out", type=Path, required=True, help="json file for every number and the choice")
    parser.add_argument("--card", action="store_true", help="also measure every candidate's card numbers")
    parser.add_argument("--root", type=Path, default=None, help="data root (default: the uniil_lib data root)")
    args = parser.parse_args(argv)
    check_candidates(args.candidates)
    check_output_file(args.out, what="the selection result (--out)")
    candidates, sets = [], selection_sets(args.root)
    for path in args.candidates:
        entry = {**describe(path), "selection": measure(path, sets)}
        entry["score"] = selection_score(entry["selection"])
        candidates.append(entry)
    chosen = choose([c["score"] for c in candidates])
    print(f"chosen: {candidates[chosen]['weights']} (run seed {candidates[chosen]['run_seed']}, "
          f"mean top-1 {candidates[chosen]['score']:.2f} over {', '.join(SELECTION_KEYS)})")
    if args.card:
        from evaluate_mini_clip import evaluate

        for path, entry in zip(args.candidates, candidates):
            entry["card"] = evaluate(path, args.root)
    result = {"selection_keys": list(SELECTION_KEYS), "rule": "highest mean top-1; the first candidate on a tie",
              "tie_points": TIE, "chosen": chosen, "candidates": candidates}
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
