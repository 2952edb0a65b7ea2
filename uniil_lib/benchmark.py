"""The one runner: several methods side by side on the same stream, and their report.

:func:`run_benchmark` builds the named scenario once, gives every method a fresh copy of the same model,
runs :func:`uniil_lib.train.run_continual`, and returns a JSON-ready dict::

    {"scenario", "profile", "model", "seed", "tasks": [...],
     "methods": {NAME: {"matrix": [[...]], "metrics": {...}, "initial": [...],
                        "trainable_params": int, "train_seconds": float, ...what the method reports}}}

:func:`run_config` runs a configuration file (:mod:`uniil_lib.run_config`, ``configs/*.json``) through it:
``python -m uniil_lib benchmark --config FILE``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from .clip import load_clip
from .methods import create_method, method_class
from .metrics import all_metrics
from .named_scenarios import build_scenario
from .profiles import Profile, get_profile
from .run_config import RunConfig, load_run_config
from .scenarios import Scenario
from .train import run_continual
from .train_config import TrainConfig

TABLE_METRICS = ("transfer", "avg", "last", "avg_incremental", "bwt", "forgetting")


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
    """
    prof = get_profile(profile) if isinstance(profile, str) else profile
    for name in methods:
        method_class(name)  # fail on a bad name before any work is done
    stream = build_scenario(scenario, profile=prof, seed=seed) if isinstance(scenario, str) else scenario
    scenario = stream.name
    result = {"scenario": scenario, "profile": prof.name, "model": None, "seed": seed,
              "tasks": stream.task_names, "methods": {}}
    for name in methods:
        base = (train if train is not None
                else prof.train_config(name, seed=seed, progress=progress, scenario=stream.name))
        config = replace(base, **(method_train or {}).get(name, {}), seed=seed, progress=progress)
        clip = load_clip(model or prof.model, pretrained=pretrained if model else prof.pretrained, seed=seed,
                         device=config.device)
        result["model"] = clip.identity
        method = create_method(name, clip, stream, config, **(method_options or {}).get(name, {}))
        folder = Path(checkpoint_root) / scenario / f"{name}-seed{seed}" if checkpoint_root else None
        run = run_continual(method, stream, checkpoint_dir=folder)
        result["methods"][name] = {
            "matrix": run.matrix.round(4).tolist(),
            "metrics": all_metrics(run.matrix, test_sizes=run.test_sizes, zero_shot=run.initial),
            "initial": run.initial.round(4).tolist(),
            "trainable_params": int(run.trainable_params),
            "train_seconds": round(run.train_seconds, 3),
            **method.run_report(),
        }
    return result


def run_config(config: str | Path | RunConfig, *, methods: Sequence[str] | None = None, seed: int | None = None,
               checkpoint_root: str | Path | None = None, progress: bool = True) -> dict:
    """Run a configuration file (``configs/*.json``, :mod:`uniil_lib.run_config`) with :func:`run_benchmark`.

    Args:
        config: the file, or a loaded :class:`~uniil_lib.run_config.RunConfig`.
        methods: run only these (default: the file's methods).
        seed: overrides the file's training seed (default: the file's, else 0).
        checkpoint_root, progress: as for :func:`run_benchmark`.

    Raises:
        RunConfigError: a file that cannot run (names what is wrong).
        DatasetNotFoundError: the scenario's data is not on disk (says how to fetch or place it).
    """
    config = config if isinstance(config, RunConfig) else load_run_config(config)
    methods = list(methods or config.methods)
    unknown = [name for name in methods if name not in config.methods]
    if unknown:
        raise ValueError(f"{config.source} does not list {unknown}; it lists {list(config.methods)}")
    seed = seed if seed is not None else (config.seed if config.seed is not None else 0)
    return run_benchmark(config.scenario, methods, profile=config.profile, seed=seed, checkpoint_root=checkpoint_root,
                         progress=progress, model=config.model, pretrained=config.pretrained, train=config.train,
                         method_train=config.method_train,
                         method_options={name: config.options_for(name) for name in methods})


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
    method is ahead), "t" (paired t statistic; NaN for one seed or no spread), "p" (two-sided, Student's t with
    n - 1 degrees of freedom)}``.

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
    n = len(differences)
    std = float(differences.std(ddof=1)) if n > 1 else float("nan")
    t = float(differences.mean() / (std / np.sqrt(n))) if n > 1 and std > 0 else float("nan")
    p = float(2 * stats.t.sf(abs(t), n - 1)) if np.isfinite(t) else float("nan")
    return {"seeds": seeds, "differences": differences.round(4).tolist(), "mean": float(differences.mean()),
            "std": std, "wins": int((differences > 0).sum()), "t": t, "p": p}


def save_result(result: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return path


def save_plots(result: dict, folder: str | Path) -> list[Path]:
    """Write one PNG with the accuracy heatmaps of all methods into ``folder``; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    from .plots import heatmap_grid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    matrices = {name: entry["matrix"] for name, entry in result["methods"].items()}
    fig = heatmap_grid(matrices, result["tasks"], suptitle=f"{result['scenario']} ({result['profile']} profile)")
    path = folder / f"{result['scenario']}-{result['profile']}-seed{result['seed']}-heatmaps.png"
    fig.savefig(path, dpi=110)
    return [path]
