"""The one runner: several methods side by side on the same stream, and their report.

:func:`run_benchmark` builds the named scenario once, gives every method a fresh copy of the same model,
runs :func:`uniil_lib.train.run_continual`, and returns a JSON-ready dict::

    {"scenario", "profile", "model", "seed", "tasks": [...],
     "split": {"fingerprint", "expected", "matches"} or None,
     "methods": {NAME: {"matrix": [[...]], "metrics": {...}, "initial": [...],
                        "trainable_params": int, "train_seconds": float, "precision": "fp32" | "bf16" | "fp16",
                        "device": str, "median_iteration_seconds": {step: s}, "processes": int,
                        "lr": float and "step_lr": {step: float} (methods that train; step_lr where set),
                        ...what the method reports (adapter methods: "adapter_placement", "adapter_blocks")}}}

``split`` names the held-out EmojiDomains split of scenarios built from it (see
:func:`uniil_lib.data.emoji_split.split_fingerprint`): a benchmark on another split than the expected one
(a changed ``classes.json``, a different build) is an error unless ``allow_other_split`` is set, and the
result then says so. A result is either right or not produced: bad method lists, seeds and output paths
fail before any training (:func:`check_request`, :func:`check_outputs`).

:func:`run_config` runs a configuration file (:mod:`uniil_lib.run_config`, ``configs/*.json``) through it:
``python -m uniil_lib benchmark --config FILE``.

**More than one device.** Independent runs (each method with each seed) spread over devices with
:func:`run_spread` (``benchmark --devices cuda:0,cuda:1 --seeds 0,1,2``): one worker process per device takes the
next run from a shared queue; each run is exactly what :func:`run_benchmark` does for that method and seed, so the
results equal a one-device run's. One run on several GPUs at once is ``torchrun`` (:mod:`uniil_lib.distributed`).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, is_dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import distributed
from .clip import load_clip
from .fileio import atomic_write, atomic_write_text, check_input_folder, check_output_file, check_output_folder
from .methods import create_method, method_class
from .metrics import all_metrics
from .named_scenarios import build_scenario, get_named_scenario
from .paths import cache_root, data_root
from .profiles import Profile, get_profile
from .run_config import RunConfig, load_run_config
from .scenarios import Scenario
from .train import run_continual
from .train_config import MAX_SEED, TrainConfig, check_device

TABLE_METRICS = ("transfer", "avg", "last", "avg_incremental", "bwt", "forgetting")
ALLOW_SPLIT_FLAG = "--allow-other-split"


class SplitMismatchError(ValueError):
    """The held-out split on disk is not the one results are reported on (and that was not asked for)."""


def check_request(methods: Sequence[str], seed: int) -> None:
    """Refuse an empty or repeated method list, an unknown method or a seed out of range, before any work.

    Raises:
        ValueError: no methods, a repeated method, or a seed outside ``[0, MAX_SEED]``.
        KeyError: an unknown method (the message lists the valid ones).
    """
    if not methods:
        raise ValueError("no methods given; name at least one, e.g. --methods zeroshot,finetune")
    repeated = sorted({name for name in methods if list(methods).count(name) > 1})
    if repeated:
        raise ValueError(f"methods {repeated} are named more than once; name each method once")
    for name in methods:
        method_class(name)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")


def check_outputs(*, out: str | Path | None = None, plots: str | Path | None = None,
                  checkpoints: str | Path | None = None) -> None:
    """Check every path a benchmark writes or reads (outputs, cache and data roots) before any training.

    Raises:
        PathError: a path that is a file where a folder is needed (or the reverse), or cannot be written.
    """
    if out is not None:
        check_output_file(out, what="--out")
    if plots is not None:
        check_output_folder(plots, what="--plots")
    if checkpoints is not None:
        check_output_folder(checkpoints, what="--checkpoints")
    check_output_folder(cache_root(), what="the cache root (UNIIL_CACHE)")
    check_input_folder(data_root(), what="the data root (UNIIL_DATA)")


def split_record(scenario: str, *, allow_other_split: bool = False) -> dict | None:
    """The held-out split a named scenario uses: ``{"fingerprint", "expected", "matches"}`` (None if it uses
    none).

    Raises:
        SplitMismatchError: the split on disk differs from the expected one and ``allow_other_split`` is False.
    """
    if not get_named_scenario(scenario).heldout_split:
        return None
    from .data.emoji_split import EXPECTED_SPLIT_FINGERPRINT
    from .emoji_scenarios import heldout_fingerprint

    fingerprint = heldout_fingerprint(data_root())
    record = {"fingerprint": fingerprint, "expected": EXPECTED_SPLIT_FINGERPRINT,
              "matches": fingerprint == EXPECTED_SPLIT_FINGERPRINT}
    if not record["matches"] and not allow_other_split:
        raise SplitMismatchError(
            f"the held-out EmojiDomains split in {data_root() / 'emoji-domains'} has fingerprint {fingerprint}, "
            f"not the expected {EXPECTED_SPLIT_FINGERPRINT}: its classes.json differs from the build results are "
            "reported on, so pretraining classes may leak into the benchmark. Rebuild it with: python "
            f"data_scripts/fetch_emoji.py, or pass {ALLOW_SPLIT_FLAG} to run on it anyway (the result records it)"
        )
    return record


def run_benchmark(
    scenario: str | Scenario,
    methods: Sequence[str],
    *,
    profile: str | Profile = "fast",
    seed: int = 0,
    checkpoint_root: str | Path | None = None,
    progress: bool = True,
    model: str | None = None,
    pretrained: str | None = None,
    train: TrainConfig | None = None,
    method_train: Mapping[str, Mapping[str, Any]] | None = None,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    allow_other_split: bool = False,
    device: str | None = None,
) -> dict:
    """Run ``methods`` on ``scenario`` with ``profile`` and ``seed``; see the module docstring for the result.

    Args:
        scenario: a name from :func:`uniil_lib.named_scenarios.scenario_names`, or a built
            :class:`~uniil_lib.scenarios.Scenario` (reused as it is; ``seed`` then seeds training only).
        methods: names from :func:`uniil_lib.methods.method_names`.
        profile: ``"fast"``, ``"full"`` or a :class:`Profile`.
        seed: seeds data subsampling, weight init and training.
        checkpoint_root: if set, each method checkpoints into ``<root>/<scenario>/<method>-seed<seed>``
            and an interrupted benchmark resumes where it stopped.
        progress: show tqdm bars.
        model, pretrained: the model (default: the profile's).
        train: the training settings of every method (default: the profile's, per method, with its step
            learning rates for the scenario); its seed is replaced by ``seed``.
        method_train: ``{method: {TrainConfig field: value}}`` replacing fields of ``train`` (or of the
            profile's settings) for that method, e.g. ``moe-adapters-cil``'s one-epoch CIL recipe.
        method_options: ``{method: {keyword: value}}`` extra constructor options.
        allow_other_split: run on a held-out split other than the expected one (recorded in the result).
        device: run every method on this device (default: the training settings'), e.g. ``"cuda:1"``.

    Raises:
        ValueError: an empty or repeated method list, a seed out of range or a device this machine lacks
            (before any work).
        SplitMismatchError: another held-out split than the expected one, not allowed.
    """
    methods = list(methods)
    check_request(methods, seed)
    prof = get_profile(profile) if isinstance(profile, str) else profile
    check_device(device or (train if train is not None else prof.train).device)
    if checkpoint_root is not None:
        check_output_folder(checkpoint_root, what="the checkpoint folder")
    split = split_record(scenario, allow_other_split=allow_other_split) if isinstance(scenario, str) else None
    stream = build_scenario(scenario, profile=prof, seed=seed) if isinstance(scenario, str) else scenario
    scenario = stream.name
    result = {"scenario": scenario, "profile": prof.name, "model": None, "seed": seed,
              "tasks": stream.task_names, "split": split, "methods": {}}
    for name in methods:
        base = (train if train is not None
                else prof.train_config(name, seed=seed, progress=progress, scenario=stream.name))
        config = replace(base, **(method_train or {}).get(name, {}), seed=seed, progress=progress,
                         **({"device": device} if device else {}))
        clip = load_clip(model or prof.model, pretrained=pretrained if model else prof.pretrained, seed=seed,
                         device=config.device)
        result["model"] = clip.identity
        method = create_method(name, clip, stream, config, **(method_options or {}).get(name, {}))
        folder = Path(checkpoint_root) / scenario / f"{name}-seed{seed}" if checkpoint_root else None
        run = run_continual(method, stream, checkpoint_dir=folder)
        result["methods"][name] = method_entry(method, run)
        if (method_options or {}).get(name):  # what the method ran with beyond its defaults
            result["methods"][name]["options"] = {key: asdict(value) if is_dataclass(value) else value
                                                   for key, value in method_options[name].items()}
    return result


def method_entry(method, run) -> dict:
    """What the result records of one method's run (see the module docstring)."""
    return {
        "matrix": run.matrix.round(4).tolist(),
        "metrics": all_metrics(run.matrix, test_sizes=run.test_sizes, zero_shot=run.initial),
        "initial": run.initial.round(4).tolist(),
        "trainable_params": int(run.trainable_params),
        "train_seconds": round(run.train_seconds, 3),
        "device": str(method.config.device),
        "precision": method.config.precision(),
        "processes": distributed.current().size,
        "median_iteration_seconds": {str(k): round(v, 5) for k, v in method.iteration_seconds.items()},
        **({"lr": method.config.lr, **({"step_lr": dict(method.config.step_lr)} if method.config.step_lr else {})}
           if method.trains else {}),
        **method.run_report(),
    }


def run_spread(scenario: str | Scenario, methods: Sequence[str], *, seeds: Sequence[int], devices: Sequence[str],
               profile: str = "fast", **options) -> list[dict]:
    """Every method with every seed, spread over ``devices`` (one worker process per entry; a device may be named
    twice to run two jobs on it at once); one result per seed, each what :func:`run_benchmark` gives.

    Args:
        scenario: a named scenario, or a built :class:`~uniil_lib.scenarios.Scenario` (sent to the workers).
        methods, seeds: every method runs once per seed.
        devices: e.g. ``["cuda:0", "cuda:1"]`` or ``["cpu", "cpu"]``.
        profile: a profile name or profile file (workers load it themselves).
        **options: the other keyword arguments of :func:`run_benchmark`.

    Raises:
        ValueError: no devices, a device this machine lacks, or a profile given as an object; RuntimeError: a run
            failed (names it).
    """
    if not devices:
        raise ValueError("--devices names no device, e.g. --devices cuda:0,cuda:1")
    for device in devices:
        check_device(device)
    if not isinstance(profile, str):
        raise ValueError("run_spread needs the profile's name or file (worker processes load it themselves)")
    seeds = list(dict.fromkeys(seeds))
    for seed in seeds:
        check_request(list(methods), seed)
    jobs = [(seed, name) for seed in seeds for name in methods]
    entries = _run_jobs(jobs, list(devices), {"scenario": scenario, "profile": profile, **options})
    results = []
    for seed in seeds:
        first = entries[(seed, methods[0])]
        result = {**first, "methods": {name: entries[(seed, name)]["methods"][name] for name in methods}}
        results.append(result)
    return results


def _run_jobs(jobs: list[tuple[int, str]], devices: list[str], shared: dict) -> dict:
    """Run ``(seed, method)`` jobs in one spawned worker per device; ``{(seed, method): its result}``."""
    import multiprocessing
    from queue import Empty

    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    queue, answers = context.Queue(), context.Queue()
    for job in jobs:
        queue.put(job)
    workers = [context.Process(target=_spread_worker, args=(device, queue, answers, shared, len(devices)),
                               daemon=True)
               for device in devices]
    for worker in workers:
        queue.put(None)  # one stop sign per worker
        worker.start()
    entries = {}
    try:
        while len(entries) < len(jobs):
            try:
                job, entry, error = answers.get(timeout=10)
            except Empty:
                if not any(worker.is_alive() for worker in workers):
                    missing = [job for job in jobs if job not in entries]
                    raise RuntimeError(f"every device worker stopped before finishing {missing} (killed, or out of "
                                       "memory?); run those methods and seeds again") from None
                continue
            if error:
                raise RuntimeError(f"{job[1]} (seed {job[0]}) failed: {error}")
            entries[job] = entry
    finally:
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.terminate()
    return entries


def _spread_worker(device: str, queue, answers, shared: dict, workers: int = 1) -> None:
    """One device's worker: run jobs from ``queue`` until a stop sign (see :func:`run_spread`).

    The ``workers`` processes share the machine's cores evenly (:func:`~uniil_lib.threads.share_cores`).
    """
    import torch

    from .threads import share_cores

    share_cores(workers)
    if device.startswith("cuda:"):
        torch.cuda.set_device(torch.device(device))
    while (job := queue.get()) is not None:
        seed, name = job
        try:
            entry = run_benchmark(shared["scenario"], [name], seed=seed, device=device,
                                  **{k: v for k, v in shared.items() if k != "scenario"})
            answers.put((job, entry, None))
        except Exception as error:  # reported to the parent, which names the run and stops
            answers.put((job, None, f"{type(error).__name__}: {error}"))


def run_config(config: str | Path | RunConfig, *, methods: Sequence[str] | None = None, seed: int | None = None,
               checkpoint_root: str | Path | None = None, progress: bool = True,
               allow_other_split: bool = False) -> dict:
    """Run a configuration file (``configs/*.json``, :mod:`uniil_lib.run_config`) with :func:`run_benchmark`.

    Args:
        config: the file, or a loaded :class:`~uniil_lib.run_config.RunConfig`.
        methods: run only these (default: the file's methods).
        seed: overrides the file's training seed (default: the file's, else 0).
        checkpoint_root, progress, allow_other_split: as for :func:`run_benchmark`.

    Raises:
        RunConfigError: a file that cannot run (names what is wrong).
        DatasetNotFoundError: the scenario's data is not on disk (says how to fetch or place it).
    """
    config = config if isinstance(config, RunConfig) else load_run_config(config)
    arguments = config_arguments(config, methods)
    seed = seed if seed is not None else (config.seed if config.seed is not None else 0)
    return run_benchmark(seed=seed, checkpoint_root=checkpoint_root, progress=progress,
                         allow_other_split=allow_other_split, **arguments)


def config_arguments(config: RunConfig, methods: Sequence[str] | None = None) -> dict:
    """The keyword arguments of :func:`run_benchmark` (and :func:`run_spread`) that a run configuration fixes:
    scenario, methods, profile, model, training and method options (plain dicts, so worker processes can take
    them)."""
    methods = list(config.methods) if methods is None else list(methods)
    unknown = [name for name in methods if name not in config.methods]
    if unknown:
        raise ValueError(f"{config.source} does not list {unknown}; it lists {list(config.methods)}")
    return {"scenario": config.scenario, "methods": methods, "profile": config.profile, "model": config.model,
            "pretrained": config.pretrained, "train": config.train,
            "method_train": {name: dict(value) for name, value in config.method_train.items()},
            "method_options": {name: config.options_for(name) for name in methods}}


def format_table(result: dict, metrics: Sequence[str] = TABLE_METRICS) -> str:
    """A plain-text table: one row per method, one column per metric, plus trainable parameters."""
    width = max([20, *(len(name) + 2 for name in result["methods"])])
    header = f"{'method':<{width}}" + "".join(f"{m:>17}" for m in metrics) + f"{'trainable':>12}{'train s':>9}"
    lines = [f"{result['scenario']} | profile {result['profile']} | model {result['model']} | seed {result['seed']}",
             header, "-" * len(header)]
    for name, entry in result["methods"].items():
        values = "".join(f"{entry['metrics'][m]:>17.2f}" for m in metrics)
        lines.append(f"{name:<{width}}{values}{entry['trainable_params']:>12,}{entry['train_seconds']:>9.1f}")
    return "\n".join(lines)


def seed_table(results: Sequence[dict], metrics: Sequence[str] = ("transfer", "avg", "last", "bwt")) -> str:
    """A Markdown table of mean ± sample standard deviation over the seeds of several benchmark results.

    Each result is what :func:`run_benchmark` returns (or its saved JSON) for one seed; all must share the
    scenario and profile and have distinct seeds. A method missing from some seed is reported over the seeds
    that have it, with their count. The last column lists each seed's ``last``.

    Raises:
        ValueError: fewer than two results, mixed scenarios or profiles, or a repeated seed.
    """
    import numpy as np

    if len(results) < 2:
        raise ValueError(f"a seed table needs at least two results, got {len(results)}")
    kinds = {(r["scenario"], r["profile"]) for r in results}
    if len(kinds) != 1:
        raise ValueError(f"results mix scenarios or profiles: {sorted(kinds)}; pass the files of one benchmark")
    seeds = [r["seed"] for r in results]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"repeated seeds {seeds}: each file must be a different seed")
    order = sorted(range(len(results)), key=lambda i: seeds[i])
    results = [results[i] for i in order]
    names = list(dict.fromkeys(name for r in results for name in r["methods"]))
    header = "| method | " + " | ".join(metrics) + " | seeds | last per seed |"
    lines = [header, "|" + "---|" * (len(metrics) + 3)]
    for name in names:
        runs = [r for r in results if name in r["methods"]]
        cells = []
        for metric in metrics:
            values = np.array([r["methods"][name]["metrics"][metric] for r in runs], dtype=float)
            std = values.std(ddof=1) if len(values) > 1 else float("nan")
            cells.append(f"{values.mean():.2f} ± {std:.2f}")
        per_seed = " / ".join(f"{r['methods'][name]['metrics']['last']:.2f}" for r in runs)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {','.join(str(r['seed']) for r in runs)} | {per_seed} |")
    return "\n".join(lines)


def paired_comparison(results: Sequence[dict], method: str, baseline: str, metric: str = "last") -> dict:
    """``method`` against ``baseline`` on ``metric``, seed by seed (the results of one benchmark, one per seed).

    Returns ``{"seeds", "differences" (method - baseline, per seed), "mean", "std" (sample), "wins" (seeds where
    method is ahead), "losses" (behind), "t" (paired t statistic; NaN for one seed or no spread), "p" (two-sided,
    Student's t with n - 1 degrees of freedom), "ci95" (the 95% confidence interval of the mean difference,
    ``mean ± t_{0.975, n-1} · std / sqrt(n)``, as ``(low, high)``; NaNs for one seed), "sign_p" (two-sided exact
    sign test: wins against losses under Binomial(wins + losses, 1/2), ties dropped; NaN when every seed ties),
    "wilcoxon_p" (two-sided Wilcoxon signed-rank test, scipy's default: exact for small samples without ties, zero
    differences dropped; NaN when every seed ties)}``. With n seeds and no ties neither rank test can go below
    ``2 / 2**n``: 5 seeds never reach p < 0.05 (0.0625), 6 seeds all one way give 0.031.

    Raises:
        ValueError: no result holds both methods, or two results share a seed.
    """
    import numpy as np
    from scipy import stats

    runs = sorted((r for r in results if method in r["methods"] and baseline in r["methods"]), key=lambda r: r["seed"])
    seeds = [r["seed"] for r in runs]
    if not runs:
        raise ValueError(f"no result holds both {method!r} and {baseline!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"repeated seeds {seeds}: pass one result per seed")
    differences = np.array([r["methods"][method]["metrics"][metric] - r["methods"][baseline]["metrics"][metric]
                            for r in runs], dtype=float)
    n, mean = len(differences), float(differences.mean())
    std = float(differences.std(ddof=1)) if n > 1 else float("nan")
    t = mean / (std / np.sqrt(n)) if n > 1 and std > 0 else float("nan")
    p = float(2 * stats.t.sf(abs(t), n - 1)) if np.isfinite(t) else float("nan")
    half_width = float(stats.t.ppf(0.975, n - 1) * std / np.sqrt(n)) if n > 1 else float("nan")
    ci95 = (mean - half_width, mean + half_width)
    wins, losses = int((differences > 0).sum()), int((differences < 0).sum())
    untied = wins + losses
    sign_p = float(stats.binomtest(wins, untied, 0.5).pvalue) if untied else float("nan")
    wilcoxon_p = float(stats.wilcoxon(differences[differences != 0]).pvalue) if untied else float("nan")
    return {"seeds": seeds, "differences": differences.round(4).tolist(), "mean": mean, "std": std, "ci95": ci95,
            "wins": wins, "losses": losses, "t": float(t), "p": p, "sign_p": sign_p, "wilcoxon_p": wilcoxon_p}


def seed_differences(tables: Sequence[dict], draws: Sequence[dict], method: str, baseline: str,
                     metric: str = "last") -> dict[int, list[float]]:
    """Every measured ``method`` - ``baseline`` value of ``metric`` on each seed: the groups of :func:`random_effects`.

    ``tables`` are one-run-per-seed results that hold both methods (what :func:`paired_comparison` takes); a seed's
    table value comes first. ``draws`` are single-method results of the same seeds rerun under a rounding
    perturbation (``benchmarks/rounding_sensitivity.py``: ``result["perturbation"]["draw"]``); a draw counts where
    both methods ran it on that seed, paired by draw (the same perturbation), in the order of the draws. Every
    result carries its ``"seed"``. Seeds come out in ascending order; a seed with no value is left out.

    Raises:
        ValueError: two tables share a seed, or two draws share (seed, method, draw).
    """
    comparable = [r for r in tables if method in r["methods"] and baseline in r["methods"]]
    seeds = [r["seed"] for r in comparable]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"repeated seeds {sorted(seeds)} in the tables: pass one table result per seed")
    by_seed = {r["seed"]: [r["methods"][method]["metrics"][metric] - r["methods"][baseline]["metrics"][metric]]
               for r in comparable}
    runs: dict[tuple[int, str, int], float] = {}
    for r in draws:
        for name in set(r["methods"]) & {method, baseline}:
            key = (r["seed"], name, r["perturbation"]["draw"])
            if key in runs:
                raise ValueError(f"two draw results for seed {key[0]}, method {key[1]!r}, draw {key[2]}")
            runs[key] = r["methods"][name]["metrics"][metric]
    for seed, name, draw in sorted(runs):
        if name == method and (seed, baseline, draw) in runs:
            by_seed.setdefault(seed, []).append(runs[seed, method, draw] - runs[seed, baseline, draw])
    return dict(sorted(by_seed.items()))


def random_effects(groups: Mapping[int, Sequence[float]]) -> dict:
    """One-way random effects by the method of moments, for repeated runs of each seed (e.g. rounding draws:
    :func:`seed_differences` gives the groups).

    A value is ``mu + b_seed + e``: ``b ~ N(0, sigma_b^2)`` is the seed's expected value about the grand mean,
    ``e ~ N(0, sigma_w^2)`` the run-to-run noise within a seed (the one-way classification of Searle, Casella and
    McCulloch 1992, *Variance Components*, ch. 3; with unequal counts per seed we use the unweighted-means estimator
    below, our choice: it needs no iteration and equals the ANOVA estimator when every seed has the same count).

    ``sigma_w^2`` is the pooled within-seed variance (seeds with one value add nothing to it);
    ``sigma_b^2 = var(seed means) - mean_s(sigma_w^2 / n_s)``, floored at 0 (the spread of the seed means less what
    their own noise explains); ``mu`` the mean of the seed means. Returns those (as sds), the seed means and
    counts, and ``share_above_zero = Phi(mu / sigma_b)``: the share of seeds whose expected difference is above 0
    under the normal model (1 or 0 when ``sigma_b`` is 0).
    """
    means = {seed: statistics.mean(values) for seed, values in groups.items()}
    counts = {seed: len(values) for seed, values in groups.items()}
    dof = sum(n - 1 for n in counts.values())
    if dof == 0 or len(groups) < 2:
        raise ValueError("random_effects needs at least two seeds and one seed with two values or more; "
                         f"got counts {counts}")
    within = sum((n - 1) * statistics.variance(groups[s]) for s, n in counts.items() if n > 1) / dof
    between = max(0.0, statistics.variance(means.values()) - statistics.mean(within / n for n in counts.values()))
    mu = statistics.mean(means.values())
    share = statistics.NormalDist().cdf(mu / math.sqrt(between)) if between > 0 else float(mu > 0)
    return {"seed_means": means, "counts": counts, "within_sd": math.sqrt(within), "within_dof": dof,
            "between_sd": math.sqrt(between), "grand_mean": mu, "share_above_zero": share}


def step_test_sizes(scenario: str, *, profile: str | Profile = "fast", seed: int = 0) -> list[int]:
    """The number of test images of each step of the named ``scenario`` (``profile``'s stream of ``seed``): the
    ``test_sizes`` of :func:`step_differences`. Builds the scenario, so its data must be on disk."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    return [len(step.test) for step in build_scenario(scenario, profile=profile, seed=seed).steps]


def step_differences(results: Sequence[dict], method: str, baseline: str, test_sizes: Sequence[int], *,
                     min_test_images: int = 100) -> dict:
    """Where ``method``'s Last difference from ``baseline`` comes from: each step's final accuracy, seed by seed.

    Last is the unweighted mean of the final row of the accuracy matrix, so a step of 40 test images (one image 2.5
    points) moves it as much as a step of 200 (0.5 points): a few small steps can decide a per-seed comparison.

    Args:
        results: one benchmark's results, one per seed (as for :func:`paired_comparison`), same ``tasks``.
        test_sizes: the number of test images of each step, in the order of ``tasks``.
        min_test_images: the steps Last is recomputed on for ``"larger_steps"``.

    Returns:
        ``{"seeds", "steps": [{"task", "test_images", "differences" (per seed), "mean", "std" (sample; NaN for one
        seed), "wins", "losses"}], "larger_steps"}``: ``"larger_steps"`` is :func:`paired_comparison` of Last
        recomputed on the steps with at least ``min_test_images`` test images (``None`` when no step has that many),
        with ``"tasks"`` naming them.

    Raises:
        ValueError: ``test_sizes`` does not give one entry per step, or no result holds both methods.
    """
    import numpy as np

    tasks = list(results[0]["tasks"]) if results else []
    if len(test_sizes) != len(tasks):
        raise ValueError(f"test_sizes has {len(test_sizes)} entries for the {len(tasks)} steps {tasks}")
    runs = sorted((r for r in results if method in r["methods"] and baseline in r["methods"]), key=lambda r: r["seed"])
    if not runs:
        raise ValueError(f"no result holds both {method!r} and {baseline!r}")
    final = {name: np.array([r["methods"][name]["matrix"][-1] for r in runs], dtype=float)
             for name in (method, baseline)}
    differences = final[method] - final[baseline]
    steps = [{"task": task, "test_images": int(size), "differences": differences[:, i].round(4).tolist(),
              "mean": float(differences[:, i].mean()),
              "std": float(differences[:, i].std(ddof=1)) if len(runs) > 1 else float("nan"),
              "wins": int((differences[:, i] > 0).sum()), "losses": int((differences[:, i] < 0).sum())}
             for i, (task, size) in enumerate(zip(tasks, test_sizes))]
    kept = [i for i, size in enumerate(test_sizes) if size >= min_test_images]
    larger = None
    if kept:
        recomputed = [{"seed": r["seed"], "methods": {name: {"metrics": {"last": float(final[name][k, kept].mean())}}
                                                      for name in (method, baseline)}} for k, r in enumerate(runs)]
        larger = {**paired_comparison(recomputed, method, baseline, "last"), "tasks": [tasks[i] for i in kept]}
    return {"seeds": [r["seed"] for r in runs], "steps": steps, "larger_steps": larger}


def json_ready(value):
    """``value`` with every non-finite float replaced by None: strict JSON (``NaN`` is not JSON; an undefined
    metric, such as Transfer of a one-step stream, becomes ``null``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value


SAME_SETTING = ("scenario", "profile", "model", "seed", "tasks", "split")


def merge_method_entries(into: dict, source: dict, methods: Sequence[str], *, source_name: str,
                         mark: str | None = None) -> dict:
    """``into`` with the entries of ``methods`` taken from ``source``: a new dict, neither input changes.

    The two results must come from the same setting (every key of :data:`SAME_SETTING`: scenario, profile,
    model, seed, task list, held-out split), so a table never mixes rows of different runs' streams. With
    ``mark``, each moved entry records ``{mark: source_name}`` (``"merged_from"``, ``"copied_from"``); the entries
    move as they are, their ``options`` included.

    Raises:
        ValueError: the settings differ (the message names the keys), or ``source`` lacks one of ``methods``.
    """
    differ = [key for key in SAME_SETTING if into.get(key) != source.get(key)]
    if differ:
        raise ValueError(f"{source_name} is not the same setting: it differs in {', '.join(differ)}; "
                         f"merge only runs of the same scenario, profile, model, seed and split")
    missing = [m for m in methods if m not in source["methods"]]
    if missing:
        raise ValueError(f"{source_name} has no entry for {', '.join(missing)} (it has {', '.join(source['methods'])})")
    merged = {**into, "methods": dict(into["methods"])}
    for method in methods:
        merged["methods"][method] = {**source["methods"][method], **({mark: source_name} if mark else {})}
    return merged


def save_result(result: dict, path: str | Path) -> Path:
    """Write ``result`` as strict JSON, atomically (a reader never sees half a file)."""
    return atomic_write_text(path, json.dumps(json_ready(result), indent=1, allow_nan=False))


def save_plots(result: dict, folder: str | Path) -> list[Path]:
    """Write one PNG with the accuracy heatmaps of all methods into ``folder``; returns the paths.

    The matplotlib backend is left as it was (a notebook keeps its inline backend) and the figure is closed.
    """
    import matplotlib.pyplot as plt

    from .plots import heatmap_grid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    matrices = {name: entry["matrix"] for name, entry in result["methods"].items()}
    fig = heatmap_grid(matrices, result["tasks"], suptitle=f"{result['scenario']} ({result['profile']} profile)")
    path = folder / f"{result['scenario']}-{result['profile']}-seed{result['seed']}-heatmaps.png"
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return [path]
