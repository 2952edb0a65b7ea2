"""Where an old step's accuracy goes when a later step is learned: the selector or the experts (issue 15, item 5).

    .venv/bin/python benchmarks/mage_forgetting.py --seed 20 --watch 1 --steps 3
    .venv/bin/python benchmarks/mage_forgetting.py --scenario uniil-offline --seed 20 --methods mage,mage-noattr
    .venv/bin/python benchmarks/mage_forgetting.py --seed 0 --watch 7 --steps 8 --freeze-coverage 0.9

Trains each method on the first ``--steps`` steps of the stream (the same seeds, settings and order as
``python -m uniil_lib benchmark``, so its rows are that run's rows) and, after every step from ``--watch`` on,
prints for the test set of step ``--watch``:

- ``routes``: how many images DDAS sends to each router (``-1``: zero-shot CLIP);
- ``acc_route{r}``: accuracy when every image goes through router ``r`` (the watched step's own router is the
  "task identity" oracle of the selector);
- ``acc_ddas``: accuracy with DDAS's routes (the benchmark's number);
- ``acc_route{watch}_own_classes``: the watched step's own router, choosing only among the classes seen when that
  step was learned (Uni-IL's label space grows with every step; this holds it fixed);
- ``lost_to_step``: the own router's wrong answers (current label space), counted by the step whose classes they name;

and, for the step just learned, per adapted layer, the share of the previous step's expert usage that fell on
experts this step trained (used by it, not frozen by an earlier step's activate-freeze): how exposed the previous
step's routing was to this step's updates (``exposure``); after steps later than ``--watch``, the same share of the
watched step's usage (``exposure_of_watched``): how exposed the followed step's routing was.

If ``acc_route{watch}`` drops while ``routes`` stays put, the old router answers worse: either the experts changed
under it (then ``acc_route{watch}_own_classes`` drops too) or new classes took its images (then it does not, and
``lost_to_step`` names the later steps); if ``routes`` moves, the selector sends old images elsewhere.

Each row also gives ``frozen``: per adapted layer, how many of its experts activate-freeze has frozen once the step
is learned (what the next step can no longer train). ``--freeze-coverage q`` runs MAGE with activate-freeze by
coverage (:attr:`uniil_lib.adapters.AdapterConfig.freeze_coverage`); ``none``, the default, is MAGE's own rule
(MoE-Adapters4CL's two experts per layer and step); methods without the option (``moe-adapters-ddas``) keep their
own rule.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uniil_lib.clip import load_clip  # noqa: E402
from uniil_lib.methods import create_method  # noqa: E402
from uniil_lib.named_scenarios import build_scenario  # noqa: E402
from uniil_lib.profiles import get_profile  # noqa: E402
from uniil_lib.run_config import method_parameters  # noqa: E402
from uniil_lib.train import run_continual  # noqa: E402


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    return round(100.0 * float((predicted == labels).float().mean()), 1) if len(labels) else float("nan")


@torch.no_grad()
def watched_accuracies(method, stream, watch: int, after: int) -> dict:
    """Routes and per-router accuracies on step ``watch``'s test set after step ``after`` was learned."""
    test = stream.steps[watch].test
    class_ids = stream.eval_class_ids(watch, after)
    labels = torch.as_tensor(test.labels)
    features = method.frozen_features(test)
    routes = method.routes(len(test), None, lambda: features)
    report = {"routes": {int(r): int((routes == r).sum()) for r in routes.unique()}}
    by_route = {route: torch.as_tensor(method.predict(test, class_ids, None, route=route))
                for route in range(after + 1)}
    report.update({f"acc_route{route}": accuracy(predicted, labels) for route, predicted in by_route.items()})
    report["acc_ddas"] = accuracy(torch.as_tensor(method.predict(test, class_ids, None)), labels)
    own = torch.as_tensor(method.predict(test, stream.eval_class_ids(watch, watch), None, route=watch))
    report[f"acc_route{watch}_own_classes"] = accuracy(own, labels)
    wrong = by_route[watch][by_route[watch] != labels].tolist()
    lost = Counter(first_step_of(stream, c) for c in wrong)
    report["lost_to_step"] = {str(step): n for step, n in sorted(lost.items())}
    return report


def first_step_of(stream, class_id: int) -> int:
    """The index of the first step of ``stream`` that holds ``class_id``."""
    return next(i for i, step in enumerate(stream.steps) if class_id in step.class_ids)


def frozen_by(method, layer: str, steps) -> set[int]:
    """The experts of ``layer`` that activate-freeze froze after any of ``steps``."""
    return set().union(*(set(method.frozen_log[i][layer]) for i in steps))


def exposure(method, step: int, of: int | None = None) -> dict[str, float]:
    """Per layer: the share of step ``of``'s usage (default ``step - 1``) on experts that step ``step`` used (> 1%)
    and that no earlier step's activate-freeze protected."""
    of = step - 1 if of is None else of
    shares = {}
    for layer in method.adapters.moe_layers():
        old = layer.usage[of].float() / layer.usage[of].sum().clamp_min(1)
        current = layer.usage[step].float() / layer.usage[step].sum().clamp_min(1)
        frozen = frozen_by(method, layer.name, range(step))
        trained = [e for e in range(len(current)) if e not in frozen and current[e] > 0.01]
        shares[layer.name] = round(float(old[trained].sum()), 2)
    return shares


def frozen_counts(method, step: int) -> dict[str, int]:
    """Per layer: how many experts activate-freeze has frozen after steps ``0..step``."""
    return {layer.name: len(frozen_by(method, layer.name, range(step + 1))) for layer in method.adapters.moe_layers()}


def coverage_option(text: str) -> float | None:
    """``--freeze-coverage``: ``none`` (the authors' two experts) or a share in (0, 1]."""
    if text.lower() == "none":
        return None
    try:
        share = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a share in (0, 1] nor 'none'") from None
    if not 0 < share <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a share of a step's routing lies in (0, 1]")
    return share


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="uniil-offline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="mage,mage-noattr", help="comma-separated MoE methods with DDAS")
    parser.add_argument("--steps", type=int, default=3, help="learn this many steps")
    parser.add_argument("--watch", type=int, default=1, help="the step whose test set is followed")
    parser.add_argument("--profile", default="fast", choices=["fast", "cpu", "full"])
    parser.add_argument("--freeze-coverage", type=coverage_option, default=None,
                        help="MAGE's activate-freeze by coverage, a share in (0, 1]; 'none' (default): two experts")
    args = parser.parse_args(argv)
    if not 0 <= args.watch < args.steps:
        parser.error(f"--watch {args.watch} must name one of the {args.steps} steps learned (0 to {args.steps - 1})")
    profile = get_profile(args.profile)
    stream = build_scenario(args.scenario, profile=profile, seed=args.seed)
    for name in args.methods.split(","):
        config = replace(profile.train_config(name, seed=args.seed, progress=False, scenario=stream.name),
                         seed=args.seed, progress=False)
        clip = load_clip(profile.model, pretrained=profile.pretrained, seed=args.seed, device=config.device)
        takes_coverage = "freeze_coverage" in method_parameters(name)  # mage, mage-noattr
        method = create_method(name, clip, stream, config,
                               **({"freeze_coverage": args.freeze_coverage} if takes_coverage else {}))

        def report(index: int, method, name=name) -> None:
            row = {"exposure": exposure(method, index)} if index else {}
            if index > args.watch:
                row["exposure_of_watched"] = exposure(method, index, of=args.watch)
            row["frozen"] = frozen_counts(method, index)
            if index >= args.watch:
                row.update(watched_accuracies(method, stream, args.watch, index))
            print(f"{name} after step {index} ({stream.task_names[index]}), watching step {args.watch} "
                  f"({stream.task_names[args.watch]}): {json.dumps(row)}", flush=True)

        # the benchmark's own loop (same step seeds), stopped after --steps steps, reporting after each
        run_continual(method, stream, stop_after=args.steps - 1, on_step=report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
