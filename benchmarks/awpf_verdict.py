"""AWPF's adaptive balance factor against the best fixed one (issue 20): tune, run, compare, seed by seed.

    .venv/bin/python benchmarks/awpf_verdict.py                         # tune on 10,11,12; report on 0-5
    .venv/bin/python benchmarks/awpf_verdict.py --report-only           # report from the saved JSONs
    .venv/bin/python benchmarks/awpf_verdict.py --config configs/awpf_cifar100_b0inc10.json --checkpoints ck
    .venv/bin/python benchmarks/awpf_verdict.py --smoke                 # minutes: check that it all runs

The protocol a reviewer of the AWPF paper would ask for:

1. **Tuning seeds** (``--tuning-seeds``, default 10,11,12; never reported): the fixed-factor grid ``awpf-fixed-0.3``
   ... ``awpf-fixed-0.9`` runs on each, and the factor with the best mean Last is chosen (ties: the better mean
   Avg, then the factor nearer RAPF's 0.6). ``awpf``'s own weights (lam_0, alpha, beta) are *not* tuned here: they
   were fixed on ``cil-emoji`` (``docs/results_notes.md``), so the comparison favours the fixed factor, if anything.
2. **Reported seeds** (``--seeds``, default 0-5, which chose nothing): ``awpf``, ``awpf-fixed-<chosen>``, the
   ablations ``awpf-mmd-only`` and ``awpf-lda-only``, ``lowrank-seq``, ``moe-adapters-cil``, ``zeroshot`` and
   ``finetune``.
3. **The report**: mean ± sample std of Avg (incremental) and Last with Last per seed; ``awpf`` against the best
   fixed factor (and against the ablations, ``lowrank-seq`` and ``moe-adapters-cil``), seed by seed, with the
   paired t-test, the two-sided exact sign test and the Wilcoxon signed-rank test
   (:func:`uniil_lib.benchmark.paired_comparison`; with 5 seeds the two rank tests cannot go below p = 0.0625,
   hence 6 reported seeds by default); what the MMD and LDA terms of the factor contributed per step; and the
   stream's own conditions (trained methods' Last, zero-shot against chance, fine-tuning's forgetting).

Every (role, seed) is one ``python -m uniil_lib benchmark ... --seed N --out FILE --quiet`` in a subprocess, one at a
time (torch runs fight over cores); FILE is ``<out-dir>/awpf-<role>-<scenario>-<profile>-seed<N>.json`` (role
``tuning`` or ``reported``; out-dir default ``docs/measurements/seeds``). A seed whose file already holds every
method asked for is skipped; methods missing from an existing file are run and merged into it (same scenario,
profile, model and seed, or an error says which file to move away). Set ``OMP_NUM_THREADS`` as for the CLI.

``--config FILE`` runs the same protocol through a run configuration (``benchmark --config FILE --methods ...``):
its scenario, profile, model, training and options; the methods it does not list are left out (and named).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uniil_lib.benchmark import format_table, paired_comparison, save_result, seed_table  # noqa: E402

GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # = uniil_lib.methods.awpf.FIXED_FACTOR_GRID (test_awpf_verdict checks)
REFERENCE_FACTOR = 0.6  # RAPF's mix_bias: the tie-break of the choice
ABLATIONS = ("awpf-mmd-only", "awpf-lda-only")
OTHERS = ("lowrank-seq", "moe-adapters-cil", "zeroshot", "finetune")
TRAINED = ("awpf", "lowrank-seq", "moe-adapters-cil")  # whose Last the stream should leave room for (50-80 %)
DEFAULT_SCENARIO = "cil-emoji-xstyle"
AVG = "avg_incremental"  # class-incremental learning's Avg: the mean over steps of the accuracy on the classes seen


def grid_name(factor: float) -> str:
    return f"awpf-fixed-{factor:.1f}"


def reported_methods(best: float) -> list[str]:
    return ["awpf", grid_name(best), *ABLATIONS, *OTHERS]


def result_path(out_dir: Path, role: str, scenario: str, profile: str, seed: int) -> Path:
    return out_dir / f"awpf-{role}-{scenario}-{profile}-seed{seed}.json"


def read_result(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def check_same_run(old: dict, new: dict, path: Path) -> None:
    """Refuse to merge results of another scenario, profile, model or seed into ``path``."""
    for key in ("scenario", "profile", "model", "seed"):
        if old.get(key) != new.get(key):
            raise SystemExit(f"error: {path} holds {key} {old.get(key)!r}, this run gives {new.get(key)!r}; move that "
                             "file away (or pass another --out-dir) so that one table never mixes two runs")


def benchmark_command(methods: list[str], seed: int, out: Path, target: dict) -> list[str]:
    """The CLI call that runs ``methods`` for ``seed`` (``target``: scenario and profile, or a config file)."""
    where = (["--config", target["config"]] if target.get("config")
             else ["--scenario", target["scenario"], "--profile", target["profile"]])
    extra = ["--checkpoints", target["checkpoints"]] if target.get("checkpoints") else []
    return [sys.executable, "-m", "uniil_lib", "benchmark", *where, "--methods", ",".join(methods),
            "--seed", str(seed), "--out", str(out), "--quiet", *extra]


def run_missing(methods: list[str], seed: int, path: Path, target: dict, *, execute) -> None:
    """Run the methods that ``path`` does not hold yet (all of them if it does not exist) with ``execute(methods,
    seed, out, target)``, which writes a result JSON to ``out``, and merge them into ``path``."""
    old = read_result(path)
    missing = [m for m in methods if old is None or m not in old["methods"]]
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    if not missing:
        print(f"have {shown}", flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="awpf-verdict-") as folder:
        out = Path(folder) / path.name
        execute(missing, seed, out, target)
        new = json.loads(out.read_text())
    if old is not None:
        check_same_run(old, new, path)
        new = {**old, "methods": {**old["methods"], **new["methods"]}}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_result(new, path)
    print(f"wrote {shown} ({', '.join(missing)})", flush=True)


def choose_factor(results: list[dict], grid=GRID) -> tuple[float, list[str]]:
    """The fixed factor with the best mean Last over the tuning ``results`` (ties: the better mean Avg, then the
    factor nearer :data:`REFERENCE_FACTOR`), and the lines of its table."""
    import numpy as np

    def values(factor, metric):
        return np.array([r["methods"][grid_name(factor)]["metrics"][metric] for r in results], dtype=float)

    present = [f for f in grid if all(grid_name(f) in r["methods"] for r in results)]
    if not results or not present:
        raise SystemExit("error: no tuning result holds the fixed-factor grid; run without --report-only first")
    seeds = ", ".join(str(r["seed"]) for r in results)
    lines = [f"| fixed factor | Avg (incremental) | Last | Last per tuning seed ({seeds}) |", "|---|---|---|---|"]
    for f in present:
        last, avg = values(f, "last"), values(f, AVG)
        per_seed = " / ".join(f"{v:.2f}" for v in last)
        lines.append(f"| {f:.1f} | {avg.mean():.2f} | {last.mean():.2f} ± {_std(last):.2f} | {per_seed} |")
    best = max(present, key=lambda f: (round(values(f, "last").mean(), 6), round(values(f, AVG).mean(), 6),
                                       -abs(f - REFERENCE_FACTOR)))
    return best, lines + [f"chosen on the tuning seeds: {best:.1f} ({grid_name(best)})"]


def _std(values) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def comparison_lines(results: list[dict], best: float) -> list[str]:
    """``awpf`` (and the ablations) against the best fixed factor and the other baselines, seed by seed."""
    fixed = grid_name(best)
    pairs = [("awpf", fixed), ("awpf-mmd-only", fixed), ("awpf-lda-only", fixed), ("awpf", "awpf-mmd-only"),
             ("awpf", "awpf-lda-only"), ("awpf", "lowrank-seq"), ("awpf", "moe-adapters-cil")]
    pairs = [(m, b) for m, b in pairs if all(m in r["methods"] and b in r["methods"] for r in results)]
    width = max((len(f"{m} - {b}") for m, b in pairs), default=0)
    lines = []
    for method, baseline in pairs:
        for metric in ("last", AVG):
            out = paired_comparison(results, method, baseline, metric)
            label = "Last" if metric == "last" else "Avg"
            lines.append(f"{f'{method} - {baseline}':<{width}} {label:<4} per seed {out['differences']}  mean "
                         f"{out['mean']:+.2f} (sd {out['std']:.2f})  ahead {out['wins']} behind {out['losses']} of "
                         f"{len(out['seeds'])}  t-test p {out['p']:.3f}  sign p {out['sign_p']:.3f}  "
                         f"Wilcoxon p {out['wilcoxon_p']:.3f}")
    return lines


def term_lines(results: list[dict], balance: dict) -> list[str]:
    """Per step, mean over seeds of ``awpf``'s factor, ``MMD^2``, ``rho`` and the two terms of its logit (A6),
    beside the factors the ablations used: which term moved the factor, and when."""
    import numpy as np

    runs = [r["methods"]["awpf"] for r in results if "mmd2" in r["methods"].get("awpf", {})]
    if not runs:
        return ["(no awpf result records MMD^2 and rho: run with this version of uniil_lib)"]
    steps = len(runs[0]["lambdas"])

    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else math.nan

    lines = ["| step | awpf lam | mmd-only lam | lda-only lam | MMD^2 | alpha MMD^2 | rho (seen) | beta (1 - rho) |",
             "|---|---|---|---|---|---|---|---|"]
    for k in range(1, steps):
        shift, rho = mean([r["mmd2"][k] for r in runs]), mean([r["rho"][k] for r in runs])
        lams = [mean([r["methods"][name]["lambdas"][k] for r in results if name in r["methods"]])
                for name in ("awpf", *ABLATIONS)]
        lines.append(f"| {k} | {lams[0]:.3f} | {lams[1]:.3f} | {lams[2]:.3f} | {shift:.4f} | "
                     f"{balance['alpha'] * shift:.3f} | {rho:.3f} | {balance['beta'] * (1 - rho):.3f} |")
    return lines + [f"(lam_0 {balance['lam_0']}, alpha {balance['alpha']}, beta {balance['beta']}; means over seeds "
                    f"{', '.join(str(r['seed']) for r in results)}; step 0 has lam = 1)"]


def stream_lines(results: list[dict]) -> list[str]:
    """The stream's own conditions (issue 20, item 1): room below the ceiling, zero-shot above chance, forgetting."""
    import numpy as np

    def mean(name, metric):
        values = [r["methods"][name]["metrics"][metric] for r in results if name in r["methods"]]
        return float(np.mean(values)) if values else math.nan

    classes = class_count(results[0])
    chance = 100.0 / classes if classes else math.nan
    trained = ", ".join(f"{name} {mean(name, 'last'):.2f}" for name in TRAINED)
    return [f"  trained methods' mean Last (aim 50-80): {trained}",
            f"  zeroshot mean Last {mean('zeroshot', 'last'):.2f} against chance {chance:.2f} ({classes} classes)",
            f"  finetune mean BWT {mean('finetune', 'bwt'):.2f}, forgetting {mean('finetune', 'forgetting'):.2f} "
            f"(awpf: {mean('awpf', 'bwt'):.2f}, {mean('awpf', 'forgetting'):.2f})"]


def class_count(result: dict) -> int:
    """Classes of a class-incremental result's stream, from its last step's name (``'emoji-xstyle 90-99'``: 100)."""
    last = result["tasks"][-1].rsplit(" ", 1)[-1].split("-")[-1]
    return int(last) + 1 if last.isdigit() else 0


def verdict_lines(results: list[dict], best: float) -> list[str]:
    """The issue's target: ``awpf`` ahead of the best fixed factor on the mean of >= 5 reported seeds, p < 0.05."""
    out = paired_comparison(results, "awpf", grid_name(best), "last")
    conditions = {
        f"at least 5 reported seeds ({len(out['seeds'])})": len(out["seeds"]) >= 5,
        f"awpf ahead of {grid_name(best)} on the mean Last ({out['mean']:+.2f})": out["mean"] > 0,
        f"paired t-test p < 0.05 ({out['p']:.3f})": out["p"] < 0.05,
        f"sign test p < 0.05 ({out['sign_p']:.3f})": out["sign_p"] < 0.05,
        f"Wilcoxon signed-rank p < 0.05 ({out['wilcoxon_p']:.3f})": out["wilcoxon_p"] < 0.05,
    }
    return [f"  [{'x' if ok else ' '}] {name}" for name, ok in conditions.items()]


def balance_weights(config: str | None) -> dict:
    """lam_0, alpha and beta of ``awpf``'s factor: the library's defaults, or those the run configuration sets."""
    from dataclasses import asdict

    from uniil_lib.fusion import BalanceConfig

    weights = asdict(BalanceConfig())
    if config:
        settings = json.loads(Path(config).read_text()).get("options", {}).get("settings", {})
        weights.update(settings.get("balance", {}))
    return weights


def check_one_run(results: list[dict]) -> None:
    """Refuse to report tuning and reported seeds of different scenarios, profiles or models together."""
    kinds = {(r["scenario"], r["profile"], r["model"]) for r in results}
    if len(kinds) > 1:
        raise SystemExit(f"error: the result files mix runs {sorted(kinds)}; move the stale ones away (the model "
                         "identity changes with the weights)")


def execute_cli(methods: list[str], seed: int, out: Path, target: dict) -> None:
    """Run ``methods`` for ``seed`` through the benchmark CLI in a subprocess, writing ``out``."""
    command = benchmark_command(methods, seed, out, target)
    print("running", " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def execute_smoke(methods: list[str], seed: int, out: Path, target: dict) -> None:
    """The first 2 steps, 1 epoch, 2 images per class, in this process: a check that everything runs, not a result."""
    from dataclasses import replace

    from uniil_lib.benchmark import run_benchmark
    from uniil_lib.named_scenarios import build_scenario
    from uniil_lib.profiles import get_profile

    base = get_profile(target["profile"])
    small = replace(base, train_per_class=4, test_per_class=2, emoji_train_per_class=2, emoji_test_per_class=2,
                    train=replace(base.train, epochs=1))
    stream = build_scenario(target["scenario"], profile=small, seed=seed).prefix(2)
    save_result(run_benchmark(stream, methods, profile=small, seed=seed, progress=False), out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    target = run_target(args)
    out_dir = Path(args.out_dir)
    execute = execute_smoke if args.smoke else execute_cli
    listed = target.get("methods")
    tuning = [result_path(out_dir, "tuning", target["scenario"], target["profile"], s) for s in args.tuning_seeds]
    grid = [grid_name(f) for f in (GRID[2:4] if args.smoke else GRID) if listed is None or grid_name(f) in listed]
    if not args.report_only:
        for seed, path in zip(args.tuning_seeds, tuning):
            run_missing(grid, seed, path, target, execute=execute)
    tuning_results = [r for r in map(read_result, tuning) if r is not None]
    best, tuning_table = choose_factor(tuning_results)
    methods = [m for m in reported_methods(best) if listed is None or m in listed]
    left_out = [m for m in reported_methods(best) if m not in methods]
    reported = [result_path(out_dir, "reported", target["scenario"], target["profile"], s) for s in args.seeds]
    if not args.report_only:
        for seed, path in zip(args.seeds, reported):
            run_missing(methods, seed, path, target, execute=execute)
    results = [r for r in map(read_result, reported) if r is not None]
    if not results:
        raise SystemExit("error: no reported result yet; run without --report-only")
    check_one_run(tuning_results + results)
    print("\n".join(report(tuning_table, results, best, balance_weights(target.get("config")), left_out)), flush=True)
    return 0


def report(tuning_table: list[str], results: list[dict], best: float, balance: dict, left_out: list[str]) -> list[str]:
    first = results[0]
    lines = [f"# AWPF verdict: {first['scenario']} | profile {first['profile']} | model {first['model']}", "",
             "## Tuning seeds: the fixed-factor grid", *tuning_table, "",
             f"## Reported seeds {sorted(r['seed'] for r in results)}",
             seed_table(results, (AVG, "last")) if len(results) > 1 else format_table(first, (AVG, "last"))]
    if left_out:
        lines.append(f"(not in the run configuration, left out: {', '.join(left_out)})")
    lines += ["", "## Paired comparisons (per-seed differences; two-sided p-values)", *comparison_lines(results, best),
              "", "## What MMD and LDA carried (awpf's factor per step; the ablations' factors)",
              *term_lines(results, balance), "", "## The stream", *stream_lines(results),
              "", "## The issue's target", *verdict_lines(results, best)]
    return lines


def seed_list(text: str) -> list[int]:
    """``"0-5"`` or ``"0,1,2"`` (or both, ``"0-2,7"``) as a list of seeds."""
    seeds = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        low, _, high = part.partition("-")
        seeds += list(range(int(low), int(high) + 1)) if high else [int(low)]
    return seeds


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default=DEFAULT_SCENARIO)
    parser.add_argument("--profile", default="fast", choices=["fast", "cpu", "full"])
    parser.add_argument("--config", help="a run configuration (configs/*.json): replaces --scenario and --profile")
    parser.add_argument("--seeds", type=seed_list, default=seed_list("0-5"), help="reported seeds, e.g. 0-5")
    parser.add_argument("--tuning-seeds", type=seed_list, default=seed_list("10-12"),
                        help="seeds that choose the fixed factor (never reported), e.g. 10-12")
    parser.add_argument("--out-dir", default=str(ROOT / "docs" / "measurements" / "seeds"))
    parser.add_argument("--checkpoints", help="checkpoint folder passed to every run (interrupted runs resume)")
    parser.add_argument("--report-only", action="store_true", help="run nothing; report from the saved files")
    parser.add_argument("--smoke", action="store_true",
                        help="2 steps, 1 epoch, 2 images per class, factors 0.5 and 0.6, the first tuning seed and "
                             "two reported seeds, into a temporary folder")
    args = parser.parse_args(argv)
    if set(args.seeds) & set(args.tuning_seeds):
        parser.error(f"seeds {sorted(set(args.seeds) & set(args.tuning_seeds))} are both tuning and reported seeds; "
                     "a reported seed must have chosen nothing")
    if args.smoke:
        args.out_dir = tempfile.mkdtemp(prefix="awpf-verdict-smoke-")
        args.tuning_seeds, args.seeds = args.tuning_seeds[:1], args.seeds[:2]
    return args


def run_target(args: argparse.Namespace) -> dict:
    """What every run runs on: ``{"scenario", "profile", "checkpoints"}`` and, with ``--config``, the file and the
    methods it lists."""
    if not args.config:
        return {"scenario": args.scenario, "profile": args.profile, "checkpoints": args.checkpoints}
    if args.smoke:
        raise SystemExit("error: --smoke runs the offline scenario in this process; drop --config")
    data = json.loads(Path(args.config).read_text())
    return {"scenario": data["scenario"], "profile": data.get("profile", "full"), "config": args.config,
            "methods": list(data["methods"]), "checkpoints": args.checkpoints}


if __name__ == "__main__":
    sys.exit(main())
