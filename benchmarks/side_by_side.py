"""Two versions of the library, run at the same time on the same work: the speed ratio of a change, and whether it
changed any number.

    .venv/bin/python benchmarks/side_by_side.py --old REV [--methods moe-adapters-ddas,mage] [--json out.json]
        [--scenario uniil-offline --steps 5 --epochs 3 --seed 0]

**Why.** Absolute times on a shared 2-core machine move from day to day by a third (README, Timings), so a change's
speed is measured as a ratio of two runs made side by side, one torch thread each, and a change meant to be only
faster must leave every metric and accuracy matrix as it was.

**What it does.** Checks out ``REV`` as a temporary git worktree, then runs the same script in two processes at once,
one with ``REV``'s ``uniil_lib`` first on the path and one with this checkout's: each builds the stream of
``--scenario`` cut to its first ``--steps`` steps, with the fast profile at ``--epochs`` epochs
(``notebook08_two_workers.fast_stream_and_profile``; the defaults are notebook 08's training cell: ``uniil-offline``'s
first five steps, seed 0, 3 epochs) and runs every method of ``--methods`` with
:func:`uniil_lib.benchmark.run_benchmark`, one after another, timing each (wall seconds, and the training seconds the
result records). It prints, per method, both times, their ratio, and whether the metrics and the accuracy matrix are
identical, and removes the worktree. Both processes share the data and feature caches (written atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_methods(methods: list[str], work: dict) -> dict:
    """In a worker process: each method on the stream ``work`` names (scenario, steps, epochs, seed);
    ``{method: times, metrics, matrix}``."""
    from notebook08_two_workers import fast_stream_and_profile  # imports the library the path chose

    from uniil_lib.benchmark import run_benchmark
    from uniil_lib.threads import choose_threads

    choose_threads("fast")
    stream, profile = fast_stream_and_profile(work["scenario"], steps=work["steps"], epochs=work["epochs"],
                                              seed=work["seed"])
    rows = {}
    for name in methods:
        with tempfile.TemporaryDirectory(prefix="uniil-side-") as checkpoints:
            start = time.perf_counter()
            entry = run_benchmark(stream, [name], profile=profile, seed=work["seed"], checkpoint_root=checkpoints,
                                  progress=False)["methods"][name]
        rows[name] = {"wall_seconds": round(time.perf_counter() - start, 2), "train_seconds": entry["train_seconds"],
                      "metrics": entry["metrics"], "matrix": entry["matrix"]}
    return rows


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def check_work(parser: argparse.ArgumentParser, methods: list[str], work: dict) -> None:
    """Refuse an unknown method or scenario before a worktree is made and two runs start."""
    from uniil_lib.methods import method_names
    from uniil_lib.named_scenarios import scenario_names

    if not methods:
        parser.error("--methods names no method; give names joined by ',' (python -m uniil_lib list)")
    unknown = [name for name in methods if name not in method_names()]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; valid methods: {', '.join(method_names())}")
    if work["scenario"] not in scenario_names():
        parser.error(f"unknown scenario {work['scenario']!r}; valid scenarios: {', '.join(scenario_names())}")


def main(argv=None) -> None:
    from notebook08_two_workers import EPOCHS, SEED, STEPS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, metavar="REV", help="the git revision to compare this checkout with")
    parser.add_argument("--methods", default="moe-adapters-ddas,mage", help="methods joined by ','")
    parser.add_argument("--scenario", default="uniil-offline", help="a named scenario (python -m uniil_lib list)")
    parser.add_argument("--steps", type=positive_int, default=STEPS,
                        help=f"run the first STEPS steps of the stream (default {STEPS}, notebook 08's)")
    parser.add_argument("--all-steps", action="store_true", help="run every step of the stream (overrides --steps)")
    parser.add_argument("--epochs", type=positive_int, default=EPOCHS,
                        help=f"epochs a step in the fast profile (default {EPOCHS}, notebook 08's)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"the stream's and the methods' seed (default {SEED})")
    parser.add_argument("--json", type=Path, default=None, help="also write both runs and the comparison as JSON")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)  # internal: one side's output
    args = parser.parse_args(argv)
    methods = [name for name in args.methods.split(",") if name]
    work = {"scenario": args.scenario, "steps": None if args.all_steps else args.steps, "epochs": args.epochs,
            "seed": args.seed}
    if args.worker is not None:
        import uniil_lib

        args.worker.write_text(json.dumps({"library": str(Path(uniil_lib.__file__).parent),
                                           **run_methods(methods, work)}))
        return
    check_work(parser, methods, work)
    revision = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{args.old}^{{commit}}"],
                              capture_output=True, text=True)
    if revision.returncode != 0:
        parser.error(f"--old {args.old!r} is no commit of {REPO}: give a commit, tag or branch (git log --oneline)")
    with tempfile.TemporaryDirectory(prefix="uniil-side-by-side-") as scratch:
        old_tree = Path(scratch) / "old"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(old_tree),
                        revision.stdout.strip()], check=True)
        try:
            workers = {}
            for side, library in (("old", old_tree), ("new", REPO)):
                env = {**os.environ, "PYTHONPATH": str(library), "UNIIL_THREADS": "1"}
                out = Path(scratch) / f"{side}.json"
                command = [sys.executable, __file__, "--worker", str(out), "--old", args.old, "--methods",
                           ",".join(methods), "--scenario", args.scenario, "--epochs", str(args.epochs), "--seed",
                           str(args.seed), *(["--all-steps"] if args.all_steps else ["--steps", str(args.steps)])]
                workers[side] = (out, subprocess.Popen(command, env=env))
            for side, (out, process) in workers.items():
                if process.wait() != 0:
                    raise SystemExit(f"the {side} side failed (exit {process.returncode}); its messages are above")
            runs = {side: json.loads(out.read_text()) for side, (out, _) in workers.items()}
            for side, library in (("old", old_tree), ("new", REPO)):  # the path chose the library, not an install
                if Path(runs[side]["library"]) != library / "uniil_lib":
                    raise SystemExit(f"the {side} side imported {runs[side]['library']}, not {library / 'uniil_lib'}")
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old_tree)], check=False)
    comparison = {}
    for name in methods:
        old, new = runs["old"][name], runs["new"][name]
        comparison[name] = {"ratio_old_over_new": round(old["wall_seconds"] / new["wall_seconds"], 3),
                            "identical_metrics": old["metrics"] == new["metrics"],
                            "identical_matrix": old["matrix"] == new["matrix"]}
        print(f"{name:<20} old {old['wall_seconds']:7.2f} s  new {new['wall_seconds']:7.2f} s  "
              f"ratio {comparison[name]['ratio_old_over_new']:.3f}  identical metrics "
              f"{comparison[name]['identical_metrics']}, matrix {comparison[name]['identical_matrix']}")
    if args.json:
        record = {"old": args.old, "measured": time.strftime("%Y-%m-%d", time.gmtime()), **work, "runs": runs,
                  "comparison": comparison}
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
