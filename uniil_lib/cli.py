"""The command line: ``python -m uniil_lib {list,metrics,benchmark}``.

- ``list [--models]``: scenarios, methods, profiles and models that exist.
- ``metrics MATRIX.csv``: metrics of an accuracy matrix, as JSON.
- ``benchmark --scenario NAME --methods a,b --profile fast|full --out results.json [--seed N]
  [--plots DIR] [--checkpoints DIR]``: methods side by side; prints a table, writes JSON (and plots).
- ``benchmark --config configs/FILE.json [--methods a,b] [--seed N] ...``: the same runner, with the scenario,
  methods, model, training and method options of a run configuration (:mod:`uniil_lib.run_config`).
- ``seeds A.json B.json ...``: mean ± std over the seeds of one benchmark's result files (Markdown).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence


def _cmd_list(args: argparse.Namespace) -> int:
    from .clip import MINI_MODEL_NAME, TINY_MODEL_NAME, available_models
    from .data import source_names
    from .methods import method_names
    from .named_scenarios import _registry
    from .profiles import profile_names

    print("scenarios:")
    for entry in _registry().values():
        print(f"  {entry.name:<18} {entry.protocol:<19} {'offline' if entry.offline else 'online '}  {entry.description}")
    print("methods:  " + ", ".join(method_names()))
    print("profiles: " + ", ".join(profile_names()))
    print("datasets: " + ", ".join(source_names()))
    models = available_models() if args.models else [TINY_MODEL_NAME, MINI_MODEL_NAME, "ViT-B-16 (openai)", "... (--models)"]
    print("models:   " + ", ".join(models))
    return 0


def _cmd_metrics(args: argparse.Namespace) -> int:
    from .metrics import all_metrics, read_matrix_csv

    matrix, header = read_matrix_csv(args.csv)
    output = all_metrics(matrix)
    if header:
        output = {"tasks": header, **output}
    print(json.dumps(output, indent=1))
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmark import format_table, run_benchmark, run_config, save_plots, save_result

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    if args.config:
        if args.scenario or args.profile:
            raise ValueError("--config names the scenario and the profile; drop --scenario and --profile")
        result = run_config(args.config, methods=methods, seed=args.seed, checkpoint_root=args.checkpoints,
                            progress=not args.quiet)
    elif args.scenario and methods:
        result = run_benchmark(args.scenario, methods, profile=args.profile or "fast", seed=args.seed or 0,
                               checkpoint_root=args.checkpoints, progress=not args.quiet)
    else:
        raise ValueError("benchmark needs --scenario and --methods, or --config FILE (e.g. configs/*.json)")
    print(format_table(result))
    if args.out:
        print(f"results written to {save_result(result, args.out)}")
    if args.plots:
        for path in save_plots(result, args.plots):
            print(f"plot written to {path}")
    return 0


def _cmd_seeds(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .benchmark import seed_table

    results = []
    for name in args.results:
        try:
            results.append(json.loads(Path(name).read_text()))
        except json.JSONDecodeError as error:
            raise ValueError(f"{name} is not a benchmark result JSON ({error}); pass files written by "
                             "benchmark --out") from error
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    print(seed_table(results, metrics))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m uniil_lib", description="Continual learning with CLIP.")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="scenarios, methods, profiles, datasets and models")
    listing.add_argument("--models", action="store_true", help="list every open_clip architecture too")
    listing.set_defaults(run=_cmd_list)
    metrics = commands.add_parser("metrics", help="metrics of an accuracy-matrix CSV, as JSON")
    metrics.add_argument("csv", help="CSV file: rows = after step i, columns = task j, values in %%")
    metrics.set_defaults(run=_cmd_metrics)
    bench = commands.add_parser("benchmark", help="run methods side by side on a scenario")
    bench.add_argument("--config", help="a run configuration (configs/*.json); replaces --scenario and --profile")
    bench.add_argument("--scenario")
    bench.add_argument("--methods", help="comma-separated, e.g. zeroshot,finetune (with --config: a subset)")
    bench.add_argument("--profile", choices=["fast", "cpu", "full"], help="default fast")
    bench.add_argument("--seed", type=int, help="default 0 (with --config: the file's)")
    bench.add_argument("--out", help="write the results JSON here")
    bench.add_argument("--plots", help="write accuracy heatmaps (PNG) into this folder")
    bench.add_argument("--checkpoints", help="checkpoint folder; an interrupted run resumes from it")
    bench.add_argument("--quiet", action="store_true", help="no progress bars")
    bench.set_defaults(run=_cmd_benchmark)
    seeds = commands.add_parser("seeds", help="mean ± std over seeds of benchmark result files (Markdown)")
    seeds.add_argument("results", nargs="+", help="result JSONs of one scenario and profile, one per seed")
    seeds.add_argument("--metrics", default="transfer,avg,last,bwt", help="comma-separated metric names")
    seeds.set_defaults(run=_cmd_seeds)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (KeyError, ValueError, FileNotFoundError, RuntimeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
