"""How far an ensemble of full-data mini-CLIP runs reaches, zero-shot: the ceiling of ensemble distillation.

Usage::

    python benchmarks/mini_clip_ensemble.py --members uniil_lib/weights/mini_clip.safetensors RUN1 RUN2 \\
        --out docs/measurements/mini_clip_ensemble.json [--card]

Fifteen tuning rounds of the issue "A stronger offline CLIP" found one recipe's full-length runs spreading by
3-13 points (``docs/measurements/mini_clip_tuning.md``). Runs that disagree that much usually make a better
ensemble than any member (Hansen & Salamon 1990; Lakshminarayanan et al. 2017), and an ensemble's knowledge can be
distilled into one network of the members' size (Hinton et al. 2015, "Distilling the Knowledge in a Neural
Network", section 1; Furlanello et al. 2018, "Born-Again Neural Networks"). One tower is what the course needs
(adapters and MoE adapters attach to its blocks), so the ensemble itself is a diagnostic, never shipped: if it is
not clearly ahead of its members, distilling it cannot be either.

The ensemble's score of class ``c`` for an image is the mean over members ``m`` of the cosine between member ``m``'s
image embedding and member ``m``'s prompt-ensemble class embedding (each member keeps its own text projection, so
the members' joint spaces are never mixed). The decision reads the *selection sets* (train splits of
Fashion-MNIST, MNIST-5k, optdigits; ``mini_clip_selection.SELECTION_KEYS``), which the card never reports;
``--card`` adds the card's sets after it, for the record.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "data_scripts", REPO / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from evaluate_mini_clip import top_k, zero_shot_scores as member_scores  # noqa: E402
from uniil_lib.fileio import atomic_write_text, check_output_file  # noqa: E402


def ensemble_numbers(clips: list, sets: list) -> dict:
    """Top-1/top-5 of every member and of the ensemble (mean of the members' cosines, each from
    ``evaluate_mini_clip.zero_shot_scores``) on ``(key, imageset, templates)`` sets."""
    numbers = {}
    for key, imageset, templates in sets:
        per_member = [member_scores(clip, imageset, templates) for clip in clips]
        numbers[key] = {"members": [top_k(s, imageset.labels) for s in per_member],
                        "ensemble": top_k(torch.stack(per_member).mean(0), imageset.labels)}
        members = " ".join(f"{m['top1']:5.1f}" for m in numbers[key]["members"])
        print(f"{key:22s} members {members}  ensemble {numbers[key]['ensemble']['top1']:5.1f}", flush=True)
    return numbers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=Path, nargs="+", required=True, help="weights files of the members")
    parser.add_argument("--out", type=Path, required=True, help="json file for every number")
    parser.add_argument("--card", action="store_true", help="also measure the card's sets (after the selection sets)")
    parser.add_argument("--root", type=Path, default=None, help="data root (default: the uniil_lib data root)")
    args = parser.parse_args(argv)
    from mini_clip_selection import check_candidates, describe, selection_sets

    check_candidates(args.members)
    if len(args.members) < 2:
        raise SystemExit("error: an ensemble needs at least two --members")
    check_output_file(args.out, what="the ensemble result (--out)")
    from uniil_lib.mini_clip import load_mini_clip

    clips = [load_mini_clip(path) for path in args.members]
    result = {"members": [describe(path) for path in args.members],
              "selection": ensemble_numbers(clips, selection_sets(args.root))}
    if args.card:
        from evaluate_mini_clip import evaluation_sets

        record = json.loads(args.members[0].with_suffix(".json").read_text(encoding="utf-8"))
        card_sets = [(key, imageset, templates) for key, _, imageset, templates
                     in evaluation_sets(record["recipe"]["data"]["split"], args.root)]
        result["card"] = ensemble_numbers(clips, card_sets)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
