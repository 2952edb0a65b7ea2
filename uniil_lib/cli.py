"""The command line: ``python -m uniil_lib {list,metrics,benchmark}``.

- ``list [--models]``: scenarios, methods, profiles and models that exist.
- ``metrics MATRIX.csv``: metrics of an accuracy matrix, as JSON.
- ``benchmark --scenario NAME --methods a,b --profile fast|cpu|colab|full|FILE.json --out results.json [--seed N]
  [--plots DIR] [--checkpoints DIR] [--allow-other-split]``: methods side by side; prints a table, writes
  JSON (and plots). Every path is checked before any training.
- ``benchmark --config configs/FILE.json [--methods a,b] [--seed N] ...``: the same runner, with the scenario,
  methods, model, training and method options of a run configuration (:mod:`uniil_lib.run_config`); the
  same checks, and a file that cannot run is named before any work.
- ``benchmark ... --seeds 0,1,2 --devices cuda:0,cuda:1 --out r-seed{seed}.json``: the runs (each method with
  each seed) spread over devices, one worker process per device (:func:`uniil_lib.benchmark.run_spread`).
- ``torchrun --nproc_per_node N -m uniil_lib benchmark ...``: one run, data-parallel over N processes
  (:mod:`uniil_lib.distributed`); rank 0 prints and writes.
- ``seeds A.json B.json ...``: mean ± std over the seeds of one benchmark's result files (Markdown).

Every error the CLI can meet (bad names and arguments, missing, unreadable or damaged files, diverging
training) is one line on stderr, ``error: ...``, naming the file where there is one, with exit code 2;
never a traceback. An interrupted benchmark exits with 130 and says how to resume.
"""

from __future__ import annotations

import argparse
import json
import pickle
import struct
import sys
import zipfile
import zlib
from typing import Callable, Iterable, Sequence

# What a run can meet that is the user's to fix (names, arguments, files, data, diverging training); anything
# else is a bug and keeps its traceback.
USER_ERRORS = (KeyError, ValueError, OSError, RuntimeError, EOFError, FloatingPointError, ImportError,
               zipfile.BadZipFile, pickle.UnpicklingError, struct.error, zlib.error)


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
    from .benchmark import json_ready
    from .metrics import all_metrics, read_matrix_csv

    matrix, header = read_matrix_csv(args.csv)
    output = all_metrics(matrix)
    if header:
        output = {"tasks": header, **output}
    print(json.dumps(json_ready(output), indent=1, allow_nan=False))  # an undefined metric is null, never NaN
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmark import check_outputs
    from .distributed import init_from_environment, launched_by_torchrun, shutdown
    from .threads import choose_threads

    run, device = _benchmark_run(args)  # names, seeds, devices and the config file are checked here
    choose_threads()  # only $UNIIL_THREADS counts here: a command-line run keeps torch's default otherwise
    check_outputs(out=args.out, plots=args.plots, checkpoints=args.checkpoints)  # before any training
    world = init_from_environment(device)  # under torchrun: join the other ranks (uniil_lib.distributed)
    try:
        for result in run():  # one result per seed, reported as soon as it is there
            if world.is_main:  # rank 0 alone prints and writes
                _report(result, args)
    except KeyboardInterrupt:
        resume = (f"run the same command again to resume from {args.checkpoints}" if args.checkpoints else
                  "pass --checkpoints DIR to make a run resumable")
        print(f"error: interrupted; {resume}", file=sys.stderr)
        return 130
    finally:
        if launched_by_torchrun():
            shutdown()
    return 0


def _report(result: dict, args: argparse.Namespace) -> None:
    """Print one seed's table and write its JSON and plots."""
    from .benchmark import format_table, save_plots, save_result

    print(format_table(result))
    if result["split"] and not result["split"]["matches"]:
        print(f"note: held-out split {result['split']['fingerprint']} is not the expected "
              f"{result['split']['expected']} (recorded in the result)", file=sys.stderr)
    if args.out:
        print(f"results written to {save_result(result, args.out.replace('{seed}', str(result['seed'])))}")
    if args.plots:
        for path in save_plots(result, args.plots):
            print(f"plot written to {path}")


def _benchmark_run(args: argparse.Namespace) -> tuple[Callable[[], Iterable[dict]], str]:
    """The benchmark the arguments ask for, checked (methods, seeds, devices, the config file) and ready to run;
    and the device its first method trains on (for the process group under torchrun)."""
    from .benchmark import check_request, config_arguments, run_benchmark, run_spread
    from .distributed import launched_by_torchrun
    from .profiles import get_profile
    from .run_config import load_run_config
    from .train_config import check_device

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods is not None else None
    if args.config:
        if args.scenario or args.profile:
            raise ValueError("--config names the scenario and the profile; drop --scenario and --profile")
        config = load_run_config(args.config)
        arguments = config_arguments(config, methods)
        default_seed = config.seed if config.seed is not None else 0
    else:
        if not args.scenario or methods is None:
            raise ValueError("benchmark needs --scenario and --methods, or --config FILE (e.g. configs/*.json)")
        arguments = {"scenario": args.scenario, "methods": methods, "profile": args.profile or "fast"}
        default_seed = 0
    seeds = _seeds(args, default_seed)
    for seed in seeds:
        check_request(arguments["methods"], seed)
    profile = get_profile(arguments["profile"])  # an unknown profile or a bad profile file fails here
    device = (arguments.get("train") or profile.train).device
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    for name in devices or [device]:  # the workers' devices replace the profile's (run_* check them again)
        check_device(name)
    if devices is not None and launched_by_torchrun():
        raise ValueError("--devices spreads independent runs over devices; under torchrun the ranks share one run. "
                         "Use one or the other")
    common = {"checkpoint_root": args.checkpoints, "progress": not args.quiet,
              "allow_other_split": args.allow_other_split, **arguments}
    if devices is not None:
        return (lambda: run_spread(seeds=seeds, devices=devices, **common)), device
    return (lambda: (run_benchmark(seed=seed, **common) for seed in seeds)), device


def _seeds(args: argparse.Namespace, default: int) -> list[int]:
    """The seeds asked for: ``--seeds 0,1,2``, else ``--seed N``, else ``default``; ``--out`` must then name each
    seed's file (``{seed}`` in the name) when there are several."""
    if args.seeds is not None and args.seed is not None:
        raise ValueError("give --seed or --seeds, not both")
    if args.seeds is not None:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"--seeds must be integers separated by commas, e.g. 0,1,2; got {args.seeds!r}") from None
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"--seeds must name each seed once, e.g. 0,1,2; got {args.seeds!r}")
    else:
        seeds = [default if args.seed is None else args.seed]
    if len(seeds) > 1 and args.out and "{seed}" not in args.out:
        raise ValueError(f"--out {args.out} is one file but {len(seeds)} seeds run: put {{seed}} in the name, "
                         "e.g. --out results/run-seed{seed}.json")
    return seeds


def _read_result(name: str, metrics: Sequence[str]) -> dict:
    """One benchmark result JSON, checked to hold every requested metric of every method."""
    from .fileio import read_json

    fix = "pass files written by benchmark --out"
    data = read_json(name, fix=fix)
    if not isinstance(data, dict) or not isinstance(data.get("methods"), dict) or "seed" not in data:
        raise ValueError(f"{name} is not a benchmark result JSON (no 'seed' and 'methods'); {fix}")
    for method, entry in data["methods"].items():
        missing = [m for m in metrics if m not in (entry.get("metrics") or {})]
        if missing:
            raise ValueError(f"{name}: method {method!r} has no metrics {missing}; valid metric names are those "
                             "of the result files (transfer, avg, last, avg_incremental, bwt, forgetting, fwt)")
    return data


def _cmd_seeds(args: argparse.Namespace) -> int:
    from .benchmark import seed_table

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if not metrics:
        raise ValueError("--metrics names no metric, e.g. --metrics transfer,avg,last")
    results = [_read_result(name, metrics) for name in args.results]
    print(seed_table(results, metrics))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line (``error: ...``) and exit code 2 like every other error."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m uniil_lib", description="Continual learning with CLIP.")
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
    bench.add_argument("--profile", help="fast, cpu, colab, full, or a profile file (some/path.json); default fast")
    bench.add_argument("--seed", type=int, help="an integer in [0, 2**32 - 1]; default 0 (with --config: the file's)")
    bench.add_argument("--seeds", help="several seeds, e.g. 0,1,2 (one result each: put {seed} in --out)")
    bench.add_argument("--devices", help="spread the runs (each method with each seed) over these devices, one "
                                         "worker each, e.g. cuda:0,cuda:1")
    bench.add_argument("--out", help="write the results JSON here")
    bench.add_argument("--plots", help="write accuracy heatmaps (PNG) into this folder")
    bench.add_argument("--checkpoints", help="checkpoint folder; an interrupted run resumes from it")
    bench.add_argument("--quiet", action="store_true", help="no progress bars (a run may resume with or without)")
    bench.add_argument("--allow-other-split", action="store_true",
                       help="run although the held-out emoji split differs from the expected one (recorded)")
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
    except USER_ERRORS as error:
        print(f"error: {error_line(error)}", file=sys.stderr)
        return 2


def error_line(error: BaseException) -> str:
    """An exception as one line that names its file: ``"<file>: <reason>"`` for bare OS errors."""
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    elif isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())
