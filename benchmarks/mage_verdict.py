"""MAGE against the faithful MoE-Adapters baselines, seed by seed (issue 15, item 4): run, save, compare.

    .venv/bin/python benchmarks/mage_verdict.py --seeds 0,1,2                       # run what is missing, report
    .venv/bin/python benchmarks/mage_verdict.py --seeds 0,1,2 --report-only         # report from the saved JSONs
    .venv/bin/python benchmarks/mage_verdict.py --seeds 10,11 --role tuning         # tuning seeds, never reported
    .venv/bin/python benchmarks/mage_verdict.py --seeds 0 --scenarios cil-emoji --methods zeroshot,moe-adapters-cil
    .venv/bin/python benchmarks/mage_verdict.py --seeds 0 --smoke                   # minutes: check it all runs
    .venv/bin/python benchmarks/mage_verdict.py --seeds 0 --attributes --report-only  # what the attributes carry
    .venv/bin/python benchmarks/mage_verdict.py --seeds 0,1,2 --per-step --report-only  # which steps decide Last
    .venv/bin/python benchmarks/mage_verdict.py --seeds 30,31,32 --config configs/mage_coverage_uniil_offline_fast.json
    .venv/bin/python benchmarks/mage_verdict.py --seeds 0,1,2,3,4,5,6,7,8,9,40,41,42,43,44,45,46,47,48,49 \
        --scenarios uniil-offline --out-dir docs/measurements/fixed_trunk \
        --also-read docs/measurements/verdict_seeds_40_49 --report-only          # the twenty-seed verdict

For every scenario and seed it runs ``python -m uniil_lib benchmark --scenario S --methods ... --profile P --seed N
--out FILE --quiet`` in a subprocess, one at a time (torch runs fight over cores), unless FILE already holds
every method asked for. FILE is ``<out-dir>/<role>-<scenario>-<profile>-seed<N>.json`` (out-dir default
``docs/measurements/seeds``; role ``faithful`` for reported seeds, ``tuning`` for seeds used to choose settings,
kept apart so that they are never reported). Set ``OMP_NUM_THREADS`` for the runs as you would for the CLI.
With ``--config FILE`` (a run configuration, :mod:`uniil_lib.run_config`, e.g. a MAGE option under test) the CLI
runs that file instead: its scenario, profile and method options, its methods unless ``--methods`` picks some,
into ``<out-dir>/<role>-<FILE's stem>-seed<N>.json``. With ``--reuse-unchanged``, methods the file gives no
options (e.g. ``zeroshot``, ``moe-adapters-ddas``) are copied from the same seed's plain result file
(``<role>-<scenario>-<profile>-seed<N>.json``, same model and split) instead of run again: the file changes
nothing about them, and each entry notes where it came from.

Then, per scenario, it prints the seed table (mean ± sample std of Avg and Last, Last per seed), the paired
comparison of ``mage`` with ``mage-noattr`` and with ``moe-adapters-ddas`` (per-seed differences, mean, wins,
paired t and p), and the issue's conditions: ``mage`` Last >= each baseline + 2 on the mean, ahead of both on
every seed, Avg not below either on the mean.

``--smoke`` runs every scenario's first 2 steps in-process through :func:`uniil_lib.benchmark.run_benchmark`
with 1 epoch and a few images per class, into a temporary folder: a check that every method runs there, not a
measurement.

``--per-step`` also prints, per scenario, where ``mage``'s Last difference from ``moe-adapters-ddas`` comes from:
each step's final-accuracy difference over the seeds (mean, sample sd, ahead / behind) next to its number of test
images, and the paired comparison of Last recomputed on the steps with at least ``--min-test-images`` (100) test
images, the steps on which one image is worth less than a point (issue 15, item 5).

When the result files hold the controls ``mage-randwords`` (the attribute pool replaced by random words) or
``mage-imagefeat`` (the gates read the frozen image feature instead of matched attributes), the report adds
``mage`` against each and each against the faithful baseline, on the seeds that ran them, with the rule fixed before
they ran (issue 15, item 5; ``docs/measurements/mage_verdict.md``, "What the attributes carry on dil-emoji").

``--attributes`` also prints, per scenario (data of the first seed, the profile's model), how often each step's
test images match their own class's and style's attributes, against chance
(:func:`uniil_lib.attribute_analysis.attribute_hits`, issue 15 item 5).

Note: with the balance loss no longer added, ``moe-adapters-ddas`` and ``mage-noattr`` compute the same method
(:mod:`uniil_lib.methods.mage`, "mage-noattr"); both are run so that each table names what it compares. A run
configuration that changes ``mage-noattr`` (``configs/mage_coverage_*.json``) separates them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uniil_lib.benchmark import (  # noqa: E402
    format_table, merge_method_entries, paired_comparison, run_benchmark, save_result, seed_table, step_differences,
    step_test_sizes,
)

COMMON = ("zeroshot", "moe-adapters", "moe-adapters-ddas", "moe-adapters-balance", "moe-adapters-ddas-balance",
          "mage-noattr", "mage")
METHODS = MappingProxyType({"uniil-offline": COMMON, "dil-emoji": (*COMMON, "moe-adapters-cil"),
                            "cil-emoji": (*COMMON, "moe-adapters-cil")})
BASELINES = ("mage-noattr", "moe-adapters-ddas")
MARGIN = 2.0  # the target: Last at least 2 points above each baseline on the mean
# what the attributes carry (issue 15, item 5): random words, no pool, the same input for every image (a gate bias)
CONTROLS = ("mage-randwords", "mage-imagefeat", "mage-constant")
CONTROL_MARGIN = 1.0  # the rule fixed before the controls ran: mage - control >= 1 on the mean, 95% CI above 0
# candidates for MAGE's gates after the controls: a gate bias beside the matched attributes (mage.py's docstring)
CANDIDATES = ("mage-bias", "mage-shrunk")


def result_path(out_dir: Path, role: str, scenario: str, profile: str, seed: int) -> Path:
    return out_dir / f"{role}-{scenario}-{profile}-seed{seed}.json"


def found_result(path: Path, also_read: list[Path]) -> Path | None:
    """``path`` if it exists, else the first file of that name in the ``also_read`` folders, else None."""
    for candidate in (path, *(folder / path.name for folder in also_read)):
        if candidate.exists():
            return candidate
    return None


def run_cli(scenario: str, methods: list[str], *, profile: str, seed: int, path: Path,
                config: Path | None = None) -> None:
    """Run the benchmark CLI for ``methods`` on ``(scenario, seed)`` (or run configuration ``config``) into
    ``path``."""
    what = ["--config", str(config)] if config else ["--scenario", scenario, "--profile", profile]
    command = [sys.executable, "-m", "uniil_lib", "benchmark", *what, "--methods", ",".join(methods),
               "--seed", str(seed), "--out", str(path), "--quiet"]
    print("running", " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def reuse_unchanged(path: Path, source: Path, methods: list[str], changed: set[str]) -> list[str]:
    """Start ``path`` with ``source``'s entries of the ``methods`` not in ``changed`` (when ``source`` has them);
    returns the methods still to run."""
    if path.exists() or not source.exists():
        return methods
    plain = json.loads(source.read_text())
    reusable = [m for m in methods if m not in changed and m in plain["methods"]]
    if reusable:
        copied = merge_method_entries({**plain, "methods": {}}, plain, reusable, source_name=source.name,
                                      mark="copied_from")
        save_result(copied, path)
        print(f"copied {', '.join(reusable)} from {source.name}", flush=True)
    return [m for m in methods if m not in reusable]


def merge_into(path: Path, methods: list[str], run) -> None:
    """Run ``methods`` (``run(methods, out)``) into a side file and add their entries to ``path``."""
    if not path.exists():
        run(methods, path)
        return
    side = path.with_name(path.stem + ".part.json")
    run(methods, side)
    held, new = json.loads(path.read_text()), json.loads(side.read_text())
    try:
        merged = merge_method_entries(held, new, list(new["methods"]), source_name=side.name)
    except ValueError as error:
        raise SystemExit(f"{error}; delete {side} and {path} and run again") from None
    save_result(merged, path)
    side.unlink()


def run_smoke(scenario: str, methods: list[str], *, profile: str, seed: int, path: Path) -> None:
    """The first 2 steps of ``scenario``, 1 epoch, a few images per class, in this process (a check, not a result)."""
    from dataclasses import replace

    from uniil_lib.named_scenarios import build_scenario
    from uniil_lib.profiles import get_profile

    base = get_profile(profile)
    small = replace(base, train_per_class=8, test_per_class=4, emoji_train_per_class=2, emoji_test_per_class=2,
                    train=replace(base.train, epochs=1))
    stream = build_scenario(scenario, profile=small, seed=seed).prefix(2)
    save_result(run_benchmark(stream, methods, profile=small, seed=seed, progress=False), path)


def attribute_report(scenario: str, *, profile: str, seed: int) -> str:
    """:func:`uniil_lib.attribute_analysis.attribute_hits` of ``scenario`` with the profile's model, as Markdown."""
    from uniil_lib.attribute_analysis import attribute_hits, format_hits
    from uniil_lib.clip import load_clip
    from uniil_lib.named_scenarios import build_scenario
    from uniil_lib.profiles import get_profile

    prof = get_profile(profile)
    clip = load_clip(prof.model, pretrained=prof.pretrained, seed=seed, device=prof.train.device)
    rows = attribute_hits(clip, build_scenario(scenario, profile=prof, seed=seed))
    return f"### attributes matched on {scenario} (seed {seed}, model {clip.identity}), in %\n" + format_hits(rows)


def per_step_report(results: list[dict], test_sizes: list[int], *, method: str = "mage",
                    baseline: str = "moe-adapters-ddas", min_test_images: int = 100) -> list[str]:
    """:func:`uniil_lib.benchmark.step_differences` of ``method`` against ``baseline`` as Markdown lines: a row per
    step, then Last recomputed on the steps with at least ``min_test_images`` test images."""
    split = step_differences(results, method, baseline, test_sizes, min_test_images=min_test_images)
    lines = [f"### {method} - {baseline}, final accuracy per step, seeds {split['seeds']}",
             "| step | test images | mean | sd | ahead / behind | per seed |", "|---|---|---|---|---|---|"]
    lines += [f"| {row['task']} | {row['test_images']} | {row['mean']:+.2f} | {row['std']:.2f} | {row['wins']} / "
              f"{row['losses']} | {' / '.join(f'{v:+.1f}' for v in row['differences'])} |" for row in split["steps"]]
    out = split["larger_steps"]
    if out is None:
        return lines + [f"(no step has {min_test_images} test images or more)"]
    return lines + [f"Last on the {len(out['tasks'])} steps with >= {min_test_images} test images: {method} - {baseline} "
                    f"per seed {[round(v, 2) for v in out['differences']]}  mean {out['mean']:+.2f} (sd {out['std']:.2f}, "
                    f"95% CI {out['ci95'][0]:+.2f} to {out['ci95'][1]:+.2f})  wins {out['wins']}/{len(out['seeds'])}  "
                    f"p {out['p']:.3f}"]


def report(scenario: str, results: list[dict], method: str = "mage", *, table: bool = True) -> list[str]:
    """The seed table, the paired comparisons of ``method`` and the issue's conditions for one scenario, as lines.

    A baseline missing from some seed's results is named and left out (``mage-noattr`` computes what
    ``moe-adapters-ddas`` computes, so a run may skip it)."""
    lines = [f"## {scenario} | profile {results[0]['profile']} | seeds {sorted(r['seed'] for r in results)}"]
    if table:
        lines += [seed_table(results, ("avg", "last")) if len(results) > 1
                  else format_table(results[0], ("avg", "last")), ""]
    means = {}
    baselines = [b for b in BASELINES if all(b in r["methods"] for r in results)]
    skipped = [b for b in BASELINES if b not in baselines]
    if skipped:
        lines.append(f"(not compared: {', '.join(skipped)}, missing from some seed's results)")
    for baseline in baselines:
        for metric in ("last", "avg"):
            out = paired_comparison(results, method, baseline, metric)
            means[baseline, metric] = out
            lines.append(f"{method} - {baseline:<18} {metric:<4} per seed {out['differences']}  mean {out['mean']:+.2f} "
                         f"(sd {out['std']:.2f}, 95% CI {out['ci95'][0]:+.2f} to {out['ci95'][1]:+.2f})  "
                         f"wins {out['wins']}/{len(out['seeds'])}  t {out['t']:.2f}  p {out['p']:.3f}")
    conditions = {f"Last >= {b} + {MARGIN:g} on the mean": means[b, "last"]["mean"] >= MARGIN for b in baselines}
    conditions.update({f"Last ahead of {b} on every seed": min(means[b, "last"]["differences"]) > 0
                       for b in baselines})
    conditions.update({f"Avg not below {b} on the mean": means[b, "avg"]["mean"] >= 0 for b in baselines})
    conditions.update({f"Last lead over {b} shown (95% CI above 0)": means[b, "last"]["ci95"][0] > 0
                       for b in baselines})
    lines += [f"  [{'x' if ok else ' '}] {name}" for name, ok in conditions.items()]
    return lines


def controls_report(results: list[dict], controls: tuple[str, ...] = CONTROLS) -> list[str]:
    """``mage`` against each control every result holds, and the control against the faithful baseline, on Last and
    Avg, with the rule fixed before the controls ran (``docs/measurements/mage_verdict.md``): what the attributes say
    is credited only if ``mage`` - control >= CONTROL_MARGIN on the mean with the 95% CI above 0."""
    lines = []
    for control in [c for c in controls if results and all(c in r["methods"] for r in results)]:
        for method, baseline in (("mage", control), (control, "moe-adapters-ddas")):
            for metric in ("last", "avg"):
                out = paired_comparison(results, method, baseline, metric)
                lines.append(f"{method} - {baseline:<18} {metric:<4} per seed {out['differences']}  mean "
                             f"{out['mean']:+.2f} (95% CI {out['ci95'][0]:+.2f} to {out['ci95'][1]:+.2f})  wins "
                             f"{out['wins']}/{len(out['seeds'])}  p {out['p']:.4f}")
        lead = paired_comparison(results, "mage", control, "last")
        credited = lead["mean"] >= CONTROL_MARGIN and lead["ci95"][0] > 0
        lines.append(f"  [{'x' if credited else ' '}] mage Last >= {control} + {CONTROL_MARGIN:g} on the mean, "
                     "95% CI above 0: what the attributes carry is credited")
    return lines


def candidates_report(scenario: str, results: list[dict], candidates: tuple[str, ...] = CANDIDATES) -> list[str]:
    """Each candidate for MAGE's gates that every result holds: against ``mage`` and ``mage-constant`` (where every
    result holds it) on Last and Avg, then the issue's conditions against the faithful baselines (:func:`report`)."""
    lines = []
    for candidate in [c for c in candidates if all(c in r["methods"] for r in results)]:
        lines.append(f"### candidate {candidate}")
        for other in [m for m in ("mage", "mage-constant") if all(m in r["methods"] for r in results)]:
            for metric in ("last", "avg"):
                out = paired_comparison(results, candidate, other, metric)
                lines.append(f"{candidate} - {other:<18} {metric:<4} per seed {out['differences']}  mean "
                             f"{out['mean']:+.2f} (95% CI {out['ci95'][0]:+.2f} to {out['ci95'][1]:+.2f})  wins "
                             f"{out['wins']}/{len(out['seeds'])}  p {out['p']:.4f}")
        lines += report(scenario, results, candidate, table=False)[1:]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", required=True, help="comma-separated, e.g. 0,1,2")
    parser.add_argument("--scenarios", default=",".join(METHODS), help="comma-separated scenario names")
    parser.add_argument("--methods", help="comma-separated; default: the scenario's list in METHODS")
    parser.add_argument("--config", help="a run configuration to run instead (its scenario, profile, options)")
    parser.add_argument("--reuse-unchanged", action="store_true",
                        help="with --config: copy the methods it gives no options from the plain result files")
    parser.add_argument("--profile", default="fast", choices=["fast", "cpu", "full"])
    parser.add_argument("--role", default="faithful", choices=["faithful", "tuning"],
                        help="faithful: reported seeds; tuning: seeds for choosing settings (never reported)")
    parser.add_argument("--out-dir", default=str(ROOT / "docs" / "measurements" / "seeds"))
    parser.add_argument("--report-only", action="store_true", help="run nothing; report from the saved files")
    parser.add_argument("--also-read", help="comma-separated folders where the report also looks for a seed's file "
                        "missing from --out-dir (e.g. seeds kept apart from the notebooks' folder)")
    parser.add_argument("--smoke", action="store_true", help="2 steps, 1 epoch, few images, into a temporary folder")
    parser.add_argument("--per-step", action="store_true",
                        help="also print mage - moe-adapters-ddas per step and Last on the larger steps")
    parser.add_argument("--min-test-images", type=int, default=100,
                        help="with --per-step: the steps Last is recomputed on (default 100 test images or more)")
    parser.add_argument("--attributes", action="store_true", help="also print what the matched attributes carry")
    args = parser.parse_args(argv)
    if args.smoke:
        import tempfile

        args.out_dir, args.role = tempfile.mkdtemp(prefix="mage-verdict-smoke-"), "smoke"
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    out_dir = Path(args.out_dir)
    also_read = [Path(d) for d in (args.also_read or "").split(",") if d.strip()]
    out_dir.mkdir(parents=True, exist_ok=True)
    config = None
    if args.config:
        from uniil_lib.run_config import load_run_config

        if args.smoke:
            parser.error("--smoke runs the named scenarios in this process; drop --config")
        config = Path(args.config).resolve()
        loaded = load_run_config(config)  # a bad file fails here, before any run
        changed = {name for name in loaded.methods if loaded.options_for(name)}
        args.scenarios, args.profile = loaded.scenario, loaded.profile
        args.methods = args.methods or ",".join(loaded.methods)
    for scenario in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
        methods = args.methods.split(",") if args.methods else list(METHODS.get(scenario, COMMON))
        paths = [out_dir / f"{args.role}-{config.stem}-seed{seed}.json" if config
                 else result_path(out_dir, args.role, scenario, args.profile, seed) for seed in seeds]
        if not args.report_only:
            for seed, path in zip(seeds, paths):
                if args.smoke:
                    run_smoke(scenario, methods, profile=args.profile, seed=seed, path=path)
                else:  # run only what the file lacks (a --reuse-unchanged run first copies the unchanged methods)
                    left = (reuse_unchanged(path, result_path(out_dir, args.role, scenario, args.profile, seed),
                                            methods, changed) if config and args.reuse_unchanged else methods)
                    held = set(json.loads(path.read_text())["methods"]) if path.exists() else set()
                    missing = [m for m in left if m not in held]
                    if missing:
                        merge_into(path, missing, lambda ms, out: run_cli(
                            scenario, ms, profile=args.profile, seed=seed, path=out, config=config))
                    else:
                        print(f"have {path}", flush=True)
        if args.attributes:
            print(attribute_report(scenario, profile=args.profile, seed=seeds[0]) + "\n", flush=True)
        results = [json.loads(p.read_text()) for p in (found_result(p, also_read) for p in paths) if p is not None]
        if not results or "mage" not in results[0]["methods"] or not any(b in results[0]["methods"] for b in BASELINES):
            print(f"## {scenario}: no results with mage, {', '.join(BASELINES)} for seeds {seeds}; run without "
                  "--report-only (or pass those methods)")
            continue
        print("\n".join(report(scenario, results)) + "\n", flush=True)
        held = [r for r in results if any(c in r["methods"] for c in CONTROLS)]
        if held:
            print("\n".join(controls_report(held)) + "\n", flush=True)
        held = [r for r in results if any(c in r["methods"] for c in CANDIDATES)]
        if held:
            print("\n".join(candidates_report(scenario, held)) + "\n", flush=True)
        if args.per_step:
            sizes = step_test_sizes(scenario, profile=args.profile, seed=seeds[0])
            print("\n".join(per_step_report(results, sizes, min_test_images=args.min_test_images)) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
