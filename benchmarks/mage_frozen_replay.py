"""Replay activate-freeze from a run's checkpoint: how many experts each layer had frozen before each step.

    .venv/bin/python -m uniil_lib benchmark --scenario uniil-offline --methods mage --profile fast --seed 0 \\
        --out /tmp/run.json --checkpoints /tmp/ckpt
    .venv/bin/python benchmarks/mage_frozen_replay.py /tmp/ckpt/uniil-offline/mage-seed0 --coverage 0.9 \\
        --out frozen.json

A run's last checkpoint (``step-NN.safetensors``, written by ``--checkpoints``) keeps every layer's per-router
usage counters (``adapters.<layer>.usage``, one row per step: MAGE and MoE-Adapters give each step its own router)
and the frozen mask the run ended with (``adapters.<layer>.frozen``). Activate-freeze picks a step's experts
from that step's counters alone (:func:`uniil_lib.adapters.most_used_experts`), so replaying the rule step by
step gives the frozen count before every step, and the union after the last step must equal the saved mask:
``replay_matches`` says whether it does (a wrong ``--coverage`` or ``--per-task`` shows as ``false``). Each run
also gets its accuracy on every step right after learning it (``progress.json``'s accuracy rows, whose first row
is the model before any step) and Last (the mean of the last row). This made ``docs/measurements/mage_coverage_frozen.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from mage_forgetting import coverage_option  # noqa: E402  (one parser for --coverage / --freeze-coverage)
from uniil_lib.adapters import most_used_experts  # noqa: E402
from uniil_lib.fileio import atomic_write_text  # noqa: E402


def last_checkpoint(folder: Path) -> Path:
    """The ``step-NN.safetensors`` with the highest ``NN`` in ``folder``."""
    steps = sorted(folder.glob("step-*.safetensors"), key=lambda p: int(p.stem.split("-")[1]))
    if not steps:
        raise FileNotFoundError(f"{folder} holds no step-NN.safetensors; pass the folder that --checkpoints wrote "
                                f"for one method and seed (e.g. CKPT/uniil-offline/mage-seed0)")
    return steps[-1]


def replay(usage: torch.Tensor, per_task: int, coverage: float | None) -> tuple[list[int], torch.Tensor]:
    """``usage`` ``(steps, E)`` -> frozen count before each step, and the frozen mask after the last step."""
    frozen = torch.zeros(usage.shape[1], dtype=torch.bool)
    before = []
    for counts in usage:
        before.append(int(frozen.sum()))
        frozen[most_used_experts(counts, per_task, coverage)] = True
    return before, frozen


def replay_run(folder: Path, per_task: int, coverage: float | None) -> dict:
    """One run's replay: per layer, the frozen counts before each step; whether every layer's replay matches."""
    from safetensors.torch import load_file

    state = load_file(str(last_checkpoint(folder)))
    layers = sorted(key[len("adapters."):-len(".usage")] for key in state if key.endswith(".usage"))
    if not layers:
        raise ValueError(f"{folder}: the checkpoint has no adapters.<layer>.usage counters (not a MoE-adapter run)")
    record: dict = {"frozen_before_step": {}, "replay_matches": True}
    for layer in layers:
        before, frozen = replay(state[f"adapters.{layer}.usage"], per_task, coverage)
        record["frozen_before_step"][layer] = before
        record["replay_matches"] &= bool(torch.equal(frozen, state[f"adapters.{layer}.frozen"].bool()))
    progress = folder / "progress.json"
    if progress.exists():
        rows = json.loads(progress.read_text())["rows"]  # rows[0]: before any step; rows[t + 1]: after step t
        record["own_step_accuracy"] = [round(rows[t + 1][t], 1) for t in range(len(rows) - 1)]
        record["last"] = round(sum(rows[-1]) / len(rows[-1]), 2)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="checkpoint folders, one per method and seed")
    parser.add_argument("--coverage", type=coverage_option, default=None,
                        help="the runs' freeze_coverage (none: the authors' fixed count)")
    parser.add_argument("--per-task", type=int, default=2, help="the runs' freeze_per_task (default 2)")
    parser.add_argument("--out", type=Path, help="write the records as JSON here")
    args = parser.parse_args(argv)
    try:
        records = {f"{run.parent.name}/{run.name}": replay_run(run, args.per_task, args.coverage) for run in args.runs}
    except (OSError, ValueError) as error:
        parser.error(str(error))
    text = json.dumps(records, indent=1)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0 if all(record["replay_matches"] for record in records.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
