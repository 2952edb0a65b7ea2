"""Where a step's training routing goes: onto experts earlier steps froze, or onto experts it can train (issue 15,
item 5).

    .venv/bin/python benchmarks/mage_gate_usage.py --seed 0 [--methods mage-noattr,mage,mage-randwords,mage-imagefeat]
        [--scenario uniil-offline] [--json out.json]

**Why.** On ``uniil-offline`` the two controls of MAGE's attributes (``mage-randwords``: the pool's attributes
replaced by random words; ``mage-imagefeat``: the gates read the frozen image feature instead) fail to *learn*
several steps (accuracy right after learning a twitter step 62-85% against 95-96%, ``optdigits`` 43-46% against 78%;
``docs/measurements/mage_verdict.md``), while ``mage`` with the pool's attributes learns every step as well as the
baseline. The within-class consistency of the gates' second input does not explain it
(``benchmarks/attribute_consistency.py``). A step can only learn through experts it may train: activate-freeze
(MoE-Adapters4CL) freezes the two experts per layer that each step used most, and a new step's zero-initialised
router may still send its images to them.

**What it measures.** Each method runs the benchmark's own loop (:func:`uniil_lib.train.run_continual`, same seeds
and settings as ``python -m uniil_lib benchmark``). After each step ``t`` it reads, for every MoE layer, the step's
training usage (how often each expert was among an image's or prompt's top-k while step ``t`` trained, the counts
activate-freeze itself reads) and prints, averaged over the image-tower layers and over the text-tower layers:

- ``on_frozen``: the share of step ``t``'s routing on experts frozen by steps ``0..t-1`` (experts it cannot train);
- ``top2``: the share on its two most used experts (how concentrated the step's routing is);
- ``used``: how many experts carry more than 1% of it;
- ``gate_norm``: the Frobenius norm of router ``t``'s gate weights, which start at zero: how far the step moved them;

and ``learned``: the accuracy on step ``t``'s test set right after learning it (the accuracy matrix's diagonal);
and, from what the gates of router ``t`` read on step ``t``'s test images and class prompts right after the step:

- ``stable``: the share of inputs whose top-k experts stay the same when the gate's training noise is drawn
  (:func:`uniil_lib.routers.noisy_top_k_gating`, ``NOISE_DRAWS`` draws): near 1, training routed each input as
  evaluation does; near 0, the noise chose its experts while the step trained.

It decides nothing; it describes.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT, ROOT / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from mage_forgetting import frozen_by  # noqa: E402

TOWERS = ("image", "text")
NOISE_DRAWS = 20


def tower_of(layer_name: str) -> str:
    """``"image"`` or ``"text"``: which tower an MoE layer (named by :mod:`uniil_lib.adapters`) belongs to."""
    for tower in TOWERS:
        if layer_name.startswith(tower):
            return tower
    raise ValueError(f"cannot tell the tower of MoE layer {layer_name!r}")


def step_usage(usage: torch.Tensor, frozen_before: set[int]) -> dict[str, float]:
    """One layer's view of one step: ``usage`` ``(E,)`` the step's expert counts, ``frozen_before`` the experts
    frozen by earlier steps. Returns ``on_frozen``, ``top2`` (shares of the step's routing) and ``used``."""
    total = float(usage.sum())
    if total == 0:
        raise ValueError("the step routed nothing through this layer")
    share = usage.double() / total
    return {"on_frozen": float(share[sorted(frozen_before)].sum()) if frozen_before else 0.0,
            "top2": float(share.topk(min(2, len(share))).values.sum()),
            "used": int((share > 0.01).sum())}


def top_k_stability(inputs: torch.Tensor, w_gate: torch.Tensor, w_noise: torch.Tensor, k: int, *,
                     noise_epsilon: float, draws: int = NOISE_DRAWS, seed: int = 0) -> float:
    """The share of (input, draw) pairs whose noisy top-``k`` expert set equals the clean one: the noise of
    :func:`uniil_lib.routers.noisy_top_k_gating` (``softplus(x W_noise) + eps`` times a standard normal)."""
    clean = inputs.float() @ w_gate.float()
    noise_std = torch.nn.functional.softplus(inputs.float() @ w_noise.float()) + noise_epsilon
    chosen = clean.topk(k, dim=1).indices.sort(dim=1).values
    generator = torch.Generator().manual_seed(seed)
    same = 0.0
    for _ in range(draws):
        noisy = clean + torch.randn(clean.shape, generator=generator) * noise_std
        same += float((noisy.topk(k, dim=1).indices.sort(dim=1).values == chosen).all(dim=1).float().mean())
    return same / draws


@torch.no_grad()
def gate_inputs(method, stream, step: int) -> dict[str, torch.Tensor]:
    """What every gate reads under router ``step`` for step ``step``'s test images and its classes' prompts."""
    test = stream.steps[step].test
    method.adapters.train(False)  # evaluation mode: no gate noise, no usage counted
    with method.context.collecting() as collected:
        method.predict(test, stream.eval_class_ids(step, step), None, route=step)
        prompts = [p for c in stream.steps[step].class_ids for p in method.class_prompts(c)]
        with method.context.use(step):
            method.encode_prompts(prompts, reuse_prefix=False)
    return {name: torch.cat(parts) for name, parts in collected.items()}


def step_report(method, step: int, stream=None) -> dict[str, dict[str, float]]:
    """Per tower, the mean over its MoE layers of :func:`step_usage` for ``step`` (router ``step``); with
    ``stream``, also :func:`top_k_stability` of the gates' inputs on that step's test images and prompts."""
    rows: dict[str, list[dict[str, float]]] = {tower: [] for tower in TOWERS}
    usage = {layer.name: layer.usage[step].clone() for layer in method.adapters.moe_layers()}
    inputs = gate_inputs(method, stream, step) if stream is not None else {}
    for layer in method.adapters.moe_layers():
        frozen_before = frozen_by(method, layer.name, range(step))
        row = step_usage(usage[layer.name], frozen_before)
        w_gate, w_noise = layer.gate_weights(step)
        row["gate_norm"] = float(w_gate.detach().float().norm())  # how far the zero-initialised gate has moved
        if layer.name in inputs:
            row["stable"] = top_k_stability(inputs[layer.name], w_gate, w_noise, layer.top_k,
                                            noise_epsilon=layer.noise_epsilon)
        rows[tower_of(layer.name)].append(row)
    return {tower: {key: round(sum(r[key] for r in layer_rows) / len(layer_rows), 3) for key in layer_rows[0]}
            for tower, layer_rows in rows.items() if layer_rows}


def run(name: str, scenario: str, seed: int, profile_name: str) -> dict:
    from uniil_lib.clip import load_clip
    from uniil_lib.methods import create_method
    from uniil_lib.named_scenarios import build_scenario
    from uniil_lib.profiles import get_profile
    from uniil_lib.train import run_continual

    profile = get_profile(profile_name)
    stream = build_scenario(scenario, profile=profile, seed=seed)
    config = replace(profile.train_config(name, seed=seed, progress=False, scenario=stream.name), seed=seed,
                     progress=False)
    clip = load_clip(profile.model, pretrained=profile.pretrained, seed=seed, device=config.device)
    method = create_method(name, clip, stream, config)
    if not hasattr(method, "frozen_log"):
        raise SystemExit(f"{name} has no activate-freeze log: give MoE methods with per-step routers")
    steps = []
    result = run_continual(method, stream, on_step=lambda index, m: steps.append(step_report(m, index, stream)))
    for index, row in enumerate(steps):
        row["learned"] = round(float(result.matrix[index][index]), 1)
        row["task"] = stream.task_names[index]
    return {"method": name, "scenario": scenario, "seed": seed, "steps": steps}


def print_table(record: dict) -> None:
    print(f"\n## {record['method']}, {record['scenario']}, seed {record['seed']}")
    keys = ("on_frozen", "top2", "used", "gate_norm", "stable")
    print("| step | learned | " + " | ".join(f"{tower} {key}" for tower in TOWERS for key in keys) + " |")
    print("|---|---|" + "---|" * (len(TOWERS) * len(keys)))
    for row in record["steps"]:
        cells = [row["task"], row["learned"]]
        for tower in TOWERS:
            part = row.get(tower, {})
            cells += [part.get(key, "-") for key in keys]
        print("| " + " | ".join(str(c) for c in cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="uniil-offline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="mage-noattr,mage,mage-randwords,mage-imagefeat",
                        help="MoE methods with per-step routers, joined by ','")
    parser.add_argument("--profile", default="fast", choices=["fast", "cpu", "full"])
    parser.add_argument("--json", type=Path, default=None, help="also write every record as JSON")
    args = parser.parse_args(argv)
    from uniil_lib.threads import choose_threads

    choose_threads(args.profile)
    records = []
    for name in [m for m in args.methods.split(",") if m]:
        records.append(run(name, args.scenario, args.seed, args.profile))
        print_table(records[-1])
        if args.json:
            args.json.write_text(json.dumps(records, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
