"""benchmarks/awpf_verdict.py (issue 20): the choice of the fixed factor, resuming and merging per-seed files, the
runs it asks for, and its report, on hand-made result files (no training)."""

from __future__ import annotations

import json

import pytest

from uniil_lib.methods import method_names
from uniil_lib.methods.awpf import FIXED_FACTOR_GRID
from repo_scripts import load_script


def _import_script():
    return load_script("benchmarks/awpf_verdict.py")


verdict = _import_script()


def result(seed: int, lasts: dict, *, avgs: dict | None = None, model: str = "mini-abc") -> dict:
    """A benchmark result of one seed with the given Last (and Avg) per method."""
    methods = {name: {"metrics": {"last": last, "avg_incremental": (avgs or {}).get(name, 50.0), "bwt": -1.0,
                                   "forgetting": 1.0},
                      "lambdas": [1.0, 0.5, 0.6], "mmd2": [None, 0.05, 0.1], "rho": [0.9, 0.8, 0.7]}
               for name, last in lasts.items()}
    return {"scenario": "cil-emoji-xstyle", "profile": "fast", "model": model, "seed": seed,
            "tasks": ["emoji-xstyle 0-9", "emoji-xstyle 10-19", "emoji-xstyle 20-29"], "methods": methods}


def test_the_grid_and_the_reported_methods_are_registered():
    assert verdict.GRID == FIXED_FACTOR_GRID
    names = set(method_names())
    assert {verdict.grid_name(f) for f in verdict.GRID} <= names
    assert set(verdict.reported_methods(0.7)) <= names and "awpf-fixed-0.7" in verdict.reported_methods(0.7)
    assert {"finetune", "zeroshot", "moe-adapters-cil", "lowrank-seq", "awpf-mmd-only", "awpf-lda-only"} \
        <= set(verdict.reported_methods(0.3))


def test_the_fixed_factor_with_the_best_mean_last_is_chosen():
    grid = verdict.GRID
    runs = [result(10, {verdict.grid_name(f): 40 + 10 * f for f in grid} | {"awpf-fixed-0.5": 80.0}),
            result(11, {verdict.grid_name(f): 40 + 10 * f for f in grid} | {"awpf-fixed-0.5": 10.0})]
    best, lines = verdict.choose_factor(runs)
    assert best == 0.9, "0.5 wins one seed but loses on the mean (45.0 < 49.0)"
    assert "| 0.5 | 50.00 | 45.00 ± 49.50 | 80.00 / 10.00 |" in lines
    tied = [result(10, {"awpf-fixed-0.4": 60.0, "awpf-fixed-0.8": 60.0, "awpf-fixed-0.7": 60.0},
                   avgs={"awpf-fixed-0.4": 70.0, "awpf-fixed-0.8": 70.0, "awpf-fixed-0.7": 65.0})]
    assert verdict.choose_factor(tied)[0] == 0.4, "equal Last and Avg: the factor nearer 0.6 (0.4 before 0.8)"
    with pytest.raises(SystemExit, match="no tuning result"):
        verdict.choose_factor([])


def recorder(lasts_for):
    """An ``execute`` that records its calls and writes a result of the methods asked for."""
    calls = []

    def execute(methods, seed, out, target):
        calls.append((list(methods), seed))
        out.write_text(json.dumps(result(seed, {m: lasts_for.get(m, 1.0) for m in methods})))

    return execute, calls


def test_seeds_resume_and_missing_methods_are_merged(tmp_path):
    path = tmp_path / "awpf-reported-cil-emoji-xstyle-fast-seed3.json"
    target = {"scenario": "cil-emoji-xstyle", "profile": "fast"}
    execute, calls = recorder({"awpf": 61.0, "zeroshot": 12.0})
    verdict.run_missing(["awpf", "zeroshot"], 3, path, target, execute=execute)
    verdict.run_missing(["awpf", "zeroshot"], 3, path, target, execute=execute)
    assert calls == [(["awpf", "zeroshot"], 3)], "a seed whose file holds every method is not run again"
    verdict.run_missing(["awpf", "zeroshot", "finetune"], 3, path, target, execute=execute)
    assert calls[-1] == (["finetune"], 3), "only the missing method runs"
    saved = json.loads(path.read_text())
    assert set(saved["methods"]) == {"awpf", "zeroshot", "finetune"}
    assert saved["methods"]["awpf"]["metrics"]["last"] == 61, "the earlier run is kept"


def test_results_of_another_model_are_never_merged_or_reported_together(tmp_path):
    path = tmp_path / "f.json"
    path.write_text(json.dumps(result(3, {"awpf": 50.0}, model="mini-old")))
    execute, _ = recorder({})
    with pytest.raises(SystemExit, match="model 'mini-old'"):
        verdict.run_missing(["zeroshot"], 3, path, {"scenario": "s", "profile": "fast"}, execute=execute)
    with pytest.raises(SystemExit, match="mix runs"):
        verdict.check_one_run([result(0, {}, model="mini-old"), result(1, {}, model="mini-new")])


def test_runs_go_through_the_benchmark_cli_with_a_scenario_or_a_run_config(tmp_path):
    out = tmp_path / "r.json"
    plain = verdict.benchmark_command(["awpf", "awpf-fixed-0.7"], 4, out, {"scenario": "cil-emoji-xstyle",
                                                                             "profile": "fast"})
    assert plain[1:] == ["-m", "uniil_lib", "benchmark", "--scenario", "cil-emoji-xstyle", "--profile", "fast",
                         "--methods", "awpf,awpf-fixed-0.7", "--seed", "4", "--out", str(out), "--quiet"]
    config = verdict.benchmark_command(["awpf"], 0, out, {"scenario": "cifar100-b0inc10", "profile": "full",
                                                          "config": "configs/x.json", "checkpoints": "ck"})
    assert config[4:6] == ["--config", "configs/x.json"] and "--scenario" not in config
    assert config[-2:] == ["--checkpoints", "ck"]
    assert verdict.result_path(tmp_path, "tuning", "cil-emoji-xstyle", "fast", 11).name == \
        "awpf-tuning-cil-emoji-xstyle-fast-seed11.json"


def test_a_reported_seed_may_not_be_a_tuning_seed():
    with pytest.raises(SystemExit):
        verdict.parse_args(["--seeds", "0-5", "--tuning-seeds", "5,10"])
    assert verdict.parse_args(["--seeds", "0-2,7"]).seeds == [0, 1, 2, 7]


def test_report_only_prints_the_tables_tests_and_the_target(tmp_path, capsys):
    grid = {verdict.grid_name(f): 60.0 + (5.0 if f == 0.7 else 0.0) for f in verdict.GRID}
    for seed in (10, 11):
        (tmp_path / f"awpf-tuning-cil-emoji-xstyle-fast-seed{seed}.json").write_text(json.dumps(result(seed, grid)))
    for seed in range(6):  # awpf ahead of the chosen 0.7 on all six seeds: sign and Wilcoxon p = 2/64
        lasts = {"awpf": 70.0 + seed, "awpf-fixed-0.7": 69.0, "awpf-mmd-only": 69.5, "awpf-lda-only": 70.0,
                 "lowrank-seq": 60.0, "moe-adapters-cil": 65.0, "zeroshot": 10.0, "finetune": 8.0}
        (tmp_path / f"awpf-reported-cil-emoji-xstyle-fast-seed{seed}.json").write_text(json.dumps(result(seed, lasts)))
    assert verdict.main(["--report-only", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "chosen on the tuning seeds: 0.7 (awpf-fixed-0.7)" in out
    per_seed = "70.00 / 71.00 / 72.00 / 73.00 / 74.00 / 75.00"
    assert f"| awpf | 50.00 ± 0.00 | 72.50 ± 1.87 | 0,1,2,3,4,5 | {per_seed} |" in out
    assert "ahead 6 behind 0 of 6" in out and "sign p 0.031  Wilcoxon p 0.031" in out
    assert "[x] paired t-test p < 0.05" in out and "[x] sign test p < 0.05 (0.031)" in out
    assert "zeroshot mean Last 10.00 against chance 3.33 (30 classes)" in out
    assert "| 1 | 0.500 | 0.500 | 0.500 | 0.0500 | 0.200 | 0.800 | 0.600 |" in out, "alpha 4 and beta 3 by default"
