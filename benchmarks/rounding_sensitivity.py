"""How far does one seed's result move when the image features move by less than rounding moves them?

    .venv/bin/python benchmarks/rounding_sensitivity.py --seed 0 --methods moe-adapters-ddas --draws 0,1,2,3,4
    .venv/bin/python benchmarks/rounding_sensitivity.py --seed 0 --report-only
    .venv/bin/python benchmarks/rounding_sensitivity.py --across-seeds 0,1,2,3,4,5,6,7,8,9
    .venv/bin/python benchmarks/rounding_sensitivity.py --across-seeds 0,1,2,3,4,5,6,7,8,9,40,41,42,43,44,45,46,47,48,49

**Why.** A seed's Last on ``uniil-offline`` did not repeat across machines: the README's seed-0
``moe-adapters-ddas`` Last was 76.91 when the ten-seed table was measured (2026-12-01, another machine and
another stem cache) and is 82.41 today (one thread), 81.91 from an empty cache and 75.04 at two threads a
process. The frozen CNN's output for an image differs between CPUs, thread counts and convolution kernels by
up to 3e-5 (``docs/measurements/stem_chunks.json``); if training amplifies differences of that size into points
of accuracy, a single seed's number is one draw from a spread, and only a comparison over seeds means anything.

**What it does.** Each *draw* runs ``run_benchmark(scenario, [method], profile, seed)`` exactly as the CLI
does, in a fresh process and a fresh feature cache, with every output of the frozen stem's head multiplied by
``1 + epsilon * sin(1e4 * value + draw)``: a fixed function of the value, so an image gets the same perturbed
features every time it is encoded (as it gets the same rounding on one machine), and a different one per draw.
With ``epsilon`` = 1e-6 a feature moves by at most 1e-6 of itself, less than thread counts move it: measured on
16 random images at 128 px, the head's output at one thread against two differs by up to 2.2e-5, and where
``|x| > 1e-3`` by 3.4e-6 of its value at the median (mean 1.7e-5); zeros after ReLU6 stay zero, here as there.
Draw 0 is unperturbed: it must repeat the plain run. The stem's trunk cache and the downloaded data are shared
(linked) with the normal cache root, the perturbation is applied after them. One json per (seed, method, draw) in
``--out`` (default ``docs/measurements/rounding_sensitivity``); the report gives, per method, Last per draw, their
mean, sample standard deviation and range, next to the spread over seeds of the saved ten-seed table
(``docs/measurements/fixed_trunk/faithful-<scenario>-fast-seed*.json``), and the paired difference of two
methods draw by draw. ``--across-seeds`` reports, per seed, every measured ``mage`` (or ``--judge``'s method)
− ``moe-adapters-ddas`` Last
(the table's, from the first of ``--seed-tables`` that holds the seed: by default ``fixed_trunk/`` for seeds 0-9
and ``verdict_seeds_40_49/`` for seeds 40-49; then one per draw) and their mean, the seed's expected difference,
and splits the spread of those values into a rounding part and a between-seed part (one-way random effects,
method of moments: :func:`uniil_lib.benchmark.random_effects`), and what that fit expects of one run a seed: the
chance that a single run is ahead and that one run each is ahead on every seed (:func:`one_run_a_seed`).

Run it with one torch thread a process (the default here), one or two processes at a time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "docs" / "measurements" / "rounding_sensitivity"
SEED_TABLE = ROOT / "docs" / "measurements" / "fixed_trunk"
# every saved one-run-per-seed table: seeds 0-9 (fixed_trunk) and seeds 40-49 (kept apart for notebook 08)
SEED_TABLES = (SEED_TABLE, ROOT / "docs" / "measurements" / "verdict_seeds_40_49")
SHARED_CACHE_PARTS = ("downloads", "stem", "file-digests.json")  # read-only inputs a draw may share
WOBBLE_FREQUENCY = 1e4  # sin(1e4 * value): neighbouring values get unrelated perturbations


def perturbation(values, epsilon: float, draw: int):
    """``values * (1 + epsilon * sin(1e4 * values + draw))``: deterministic per value, different per draw."""
    import torch

    if epsilon == 0:
        return values
    return values * (1 + epsilon * torch.sin(values * WOBBLE_FREQUENCY + float(draw)))


@contextmanager
def perturbed_stem_head(epsilon: float, draw: int) -> Iterator[None]:
    """Inside, every :class:`FrozenCNNStem` head output passes through :func:`perturbation`; restored on exit."""
    from uniil_lib.imagenet_backbone import FrozenCNNStem

    plain_head = FrozenCNNStem.head

    def head(self, trunk_features):
        return perturbation(plain_head(self, trunk_features), epsilon, draw)

    FrozenCNNStem.head = head
    try:
        yield
    finally:
        FrozenCNNStem.head = plain_head


def result_path(out_dir: Path, scenario: str, seed: int, method: str, epsilon: float, draw: int) -> Path:
    return out_dir / f"{scenario}-seed{seed}-{method}-eps{epsilon:g}-draw{draw}.json"


def fresh_cache_root(parent: Path) -> Path:
    """A cache root whose stem cache and downloads are the normal ones (linked), with no cached features."""
    from uniil_lib.paths import cache_root

    shared = cache_root()
    root = parent / "cache"
    root.mkdir()
    for part in SHARED_CACHE_PARTS:
        if (shared / part).exists():
            (root / part).symlink_to(shared / part)
    return root


def run_one(args) -> None:
    """The child: one method, one draw, in this process (its cache root already set by the parent)."""
    import torch

    from uniil_lib.benchmark import run_benchmark, save_result

    torch.set_num_threads(args.threads)
    with perturbed_stem_head(args.epsilon, args.draw):
        result = run_benchmark(args.scenario, [args.method], profile=args.profile, seed=args.seed, progress=False)
    result["perturbation"] = {"where": "FrozenCNNStem.head output", "epsilon": args.epsilon, "draw": args.draw,
                              "formula": "x * (1 + epsilon * sin(1e4 * x + draw))", "threads": args.threads}
    save_result(result, args.path)


def run_missing(args, out_dir: Path) -> None:
    for method in args.methods.split(","):
        for draw in (int(d) for d in args.draws.split(",")):
            epsilon = 0.0 if draw == 0 else args.epsilon
            path = result_path(out_dir, args.scenario, args.seed, method, epsilon, draw)
            if path.exists():
                continue
            with tempfile.TemporaryDirectory(prefix="rounding-") as tmp:
                env = dict(os.environ, UNIIL_CACHE=str(fresh_cache_root(Path(tmp))), OMP_NUM_THREADS=str(args.threads))
                command = [sys.executable, __file__, "--child", "--scenario", args.scenario, "--profile", args.profile,
                           "--seed", str(args.seed), "--method", method, "--draw", str(draw),
                           "--epsilon", repr(epsilon), "--threads", str(args.threads), "--path", str(path)]
                print(f"{method} seed {args.seed} draw {draw} (epsilon {epsilon:g}) ...", flush=True)
                subprocess.run(command, check=True, env=env)


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def draw_lasts(out_dir: Path, scenario: str, seed: int) -> dict[str, dict[int, float]]:
    """Last of every draw of ``seed`` saved in ``out_dir``: ``{method: {draw: last}}``."""
    runs: dict[str, dict[int, float]] = {}
    for path in sorted(out_dir.glob(f"{scenario}-seed{seed}-*.json")):
        result = json.loads(path.read_text())
        (method,) = result["methods"]
        runs.setdefault(method, {})[result["perturbation"]["draw"]] = result["methods"][method]["metrics"]["last"]
    return runs


def report(out_dir: Path, scenario: str, seed: int, baseline: str = "moe-adapters-ddas") -> str:
    """The Markdown table of the draws saved in ``out_dir``, and the other method minus ``baseline`` per draw."""
    runs = draw_lasts(out_dir, scenario, seed)
    lines = [f"{scenario}, seed {seed}: Last per draw (draw 0 unperturbed)", "",
             "| method | draws | Last per draw | mean ± sd over draws | range | sd over seeds (saved table) |",
             "|---|---|---|---|---|---|"]
    seed_results = [json.loads(p.read_text()) for p in sorted(SEED_TABLE.glob(f"faithful-{scenario}-fast-seed*.json"))]
    for method, by_draw in runs.items():
        draws = sorted(by_draw)
        values = [by_draw[d] for d in draws]
        mean, sd = mean_sd(values)
        seed_values = [r["methods"][method]["metrics"]["last"] for r in seed_results if method in r["methods"]]
        seeds = f"{mean_sd(seed_values)[1]:.2f} ({len(seed_values)} seeds)" if len(seed_values) > 1 else "-"
        lines.append(f"| {method} | {','.join(map(str, draws))} | {' / '.join(f'{v:.2f}' for v in values)} | "
                     f"{mean:.2f} ± {sd:.2f} | {max(values) - min(values):.2f} | {seeds} |")
    others = [method for method in runs if method != baseline]
    if baseline in runs and len(others) == 1:
        first, (second,) = baseline, others
        common = sorted(set(runs[first]) & set(runs[second]))
        differences = [runs[second][d] - runs[first][d] for d in common]
        if differences:
            mean, sd = mean_sd(differences)
            lines += ["", f"{second} - {first}, draw by draw ({','.join(map(str, common))}): "
                      f"{' / '.join(f'{v:+.2f}' for v in differences)}; mean {mean:+.2f} ± {sd:.2f}, "
                      f"ahead on {sum(v > 0 for v in differences)} of {len(differences)}"]
    return "\n".join(lines)


def seed_differences(out_dir: Path, scenario: str, seeds: list[int], method: str = "mage",
                     baseline: str = "moe-adapters-ddas", *, with_table: bool = True,
                     table_dirs: Sequence[Path] = SEED_TABLES) -> dict[int, list[float]]:
    """Every measured value of ``method`` - ``baseline`` Last on each seed: the saved table's (if ``with_table``;
    one rounding, that machine's; the first of ``table_dirs`` holding the seed) first, then one per draw both
    methods ran (paired: the same perturbation). The files of :func:`uniil_lib.benchmark.seed_differences`."""
    from uniil_lib.benchmark import seed_differences as differences_of_results

    tables, draws = [], []
    for seed in seeds:
        name = f"faithful-{scenario}-fast-seed{seed}.json"
        table = next((folder / name for folder in table_dirs if (folder / name).exists()), None)
        if with_table and table is not None:
            tables.append({**json.loads(table.read_text()), "seed": seed})
        draws += [{**json.loads(path.read_text()), "seed": seed}
                  for path in sorted(out_dir.glob(f"{scenario}-seed{seed}-*.json"))]
    found = differences_of_results(tables, draws, method, baseline)
    return {seed: found[seed] for seed in seeds if seed in found}


def one_run_a_seed(fit: dict, seeds: int) -> tuple[float, float]:
    """Under a :func:`uniil_lib.benchmark.random_effects` fit (its normal model, seeds independent): the chance that
    one run of a seed is ahead, ``Phi(mu / sqrt(sigma_b^2 + sigma_w^2))`` (a seed's expected difference plus one
    rounding), and the chance that one run a seed is ahead on every one of ``seeds`` seeds (the first to the
    power ``seeds``). What "ahead on every seed, one run each" can be expected to give for a lead of that size."""
    spread = math.hypot(fit["between_sd"], fit["within_sd"])
    single = statistics.NormalDist().cdf(fit["grand_mean"] / spread) if spread > 0 else float(fit["grand_mean"] > 0)
    return single, single ** seeds


def seed_report(out_dir: Path, scenario: str, seeds: list[int], method: str = "mage",
                baseline: str = "moe-adapters-ddas", table_dirs: Sequence[Path] = SEED_TABLES) -> str:
    """Each seed's expected ``method`` - ``baseline`` Last (mean over its roundings), with and without the table."""
    from uniil_lib.benchmark import random_effects

    lines, found = [], set()
    for with_table, title in ((True, "the table's value and every rounding draw"), (False, "rounding draws only")):
        groups = seed_differences(out_dir, scenario, seeds, method, baseline, with_table=with_table,
                                  table_dirs=table_dirs)
        found |= set(groups)
        lines += [f"{method} - {baseline} Last per seed, {title}", ""]
        if not groups:
            lines += ["(no values yet)", ""]
            continue
        try:
            fit = random_effects(groups)
        except ValueError:  # too few values to split the spread yet (e.g. while the draws are still running)
            fit = None
        lines += ["| seed | values | n | mean |" + (" verdict |" if fit else ""),
                  "|---|---|---|---|" + ("---|" if fit else "")]
        for seed, values in groups.items():
            mean = statistics.mean(values)
            row = f"| {seed} | {' / '.join(f'{v:+.2f}' for v in values)} | {len(values)} | {mean:+.2f} |"
            if fit:
                half = 1.96 * fit["within_sd"] / math.sqrt(len(values))
                verdict = "clearly ahead" if mean - half > 0 else "clearly behind" if mean + half < 0 else "undecided"
                row += f" {verdict} (± {half:.2f}) |"
            lines.append(row)
        if not fit:
            lines += ["", "too few values for the rounding / between-seed split (it needs two seeds and a seed with "
                      "two values or more)", ""]
            continue
        ahead = sum(m > 0 for m in fit["seed_means"].values())
        lines += ["", f"seeds with mean above 0: {ahead} of {len(groups)}; grand mean {fit['grand_mean']:+.2f}; "
                  f"rounding sd {fit['within_sd']:.2f} ({fit['within_dof']} dof); between-seed sd of the expected "
                  f"difference {fit['between_sd']:.2f}; share of seeds expected above 0 (normal model) "
                  f"{fit['share_above_zero']:.2f}"]
        single, every = one_run_a_seed(fit, len(groups))
        values = [v for group in groups.values() for v in group]
        lines += [f"one run a seed (normal model): ahead with chance {single:.3f} on a seed, on all {len(groups)} "
                  f"seeds {every:.2f}; single runs behind here: {sum(v < 0 for v in values)} of {len(values)}", ""]
    missing = [s for s in seeds if s not in found]
    if missing:
        lines.append(f"missing (no value yet): seeds {', '.join(map(str, missing))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="uniil-offline")
    parser.add_argument("--profile", default="fast")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="moe-adapters-ddas,mage")
    parser.add_argument("--draws", default="0,1,2,3,4")
    parser.add_argument("--epsilon", type=float, default=1e-6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--across-seeds", help="comma-separated seeds: report each seed's expected difference "
                        "(mean over the table's value and its draws) and the random-effects split, then stop")
    parser.add_argument("--judge", default="mage",
                        help="the method --across-seeds compares with moe-adapters-ddas (default mage)")
    parser.add_argument("--seed-tables", default=",".join(str(path) for path in SEED_TABLES),
                        help="comma-separated folders of one-run-per-seed tables "
                        "(faithful-<scenario>-fast-seed<S>.json) whose values --across-seeds counts; "
                        "a seed's file is taken from the first folder holding it")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--draw", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_one(args)
        return
    if args.across_seeds:
        tables = [Path(folder) for folder in args.seed_tables.split(",")]
        print(seed_report(args.out, args.scenario, [int(s) for s in args.across_seeds.split(",")], args.judge,
                          table_dirs=tables))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        run_missing(args, args.out)
    print(report(args.out, args.scenario, args.seed))


if __name__ == "__main__":
    main()
