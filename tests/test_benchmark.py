"""The benchmark CLI end to end on the offline mtil-offline scenario (fast profile)."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pytest

from uniil_lib.benchmark import random_effects, seed_differences
from uniil_lib.cli import main
from uniil_lib.named_scenarios import build_scenario, scenario_names


def test_list_names_everything(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ["mtil-offline", "cil-emoji", "dil-emoji", "uniil-offline", "zeroshot", "finetune", "linear-probe", "fast", "tiny"]:
        assert name in out


@pytest.mark.parametrize("args, message", [
    (["--scenario", "nope", "--methods", "zeroshot"], "valid scenarios: mtil-offline"),
    (["--scenario", "mtil-offline", "--methods", "zeroshot,magic"], "valid methods: zeroshot"),
])
def test_bad_names_list_valid_ones(capsys, args, message):
    assert main(["benchmark", *args]) == 2
    assert message in capsys.readouterr().err


def test_named_offline_scenarios_build():
    assert {"mtil-offline", "cil-emoji", "dil-emoji", "uniil-offline"} <= set(scenario_names())
    mtil = build_scenario("mtil-offline")
    assert len(mtil.steps) >= 5 and mtil.protocol == "task-incremental"
    cil = build_scenario("cil-emoji")
    assert len(cil.steps) == 10 and all(len(s.class_ids) == 10 for s in cil.steps)
    dil = build_scenario("dil-emoji")
    assert len({s.domain for s in dil.steps}) >= 4 and len({s.class_ids for s in dil.steps}) == 1
    uni = build_scenario("uniil-offline")
    assert {s.kind for s in uni.steps} == {"task", "class", "domain"}


def test_benchmark_writes_json_table_and_plot(tmp_path, capsys):
    out, plots = tmp_path / "results.json", tmp_path / "plots"
    code = main(["benchmark", "--scenario", "mtil-offline", "--methods", "zeroshot,linear-probe",
                 "--profile", "fast", "--seed", "0", "--out", str(out), "--plots", str(plots), "--quiet"])
    assert code == 0
    table = capsys.readouterr().out
    assert "linear-probe" in table and "transfer" in table
    result = json.loads(out.read_text())
    assert set(result) >= {"scenario", "profile", "model", "tasks", "methods"}
    assert result["scenario"] == "mtil-offline" and result["profile"] == "fast"
    n = len(result["tasks"])
    for name, entry in result["methods"].items():
        assert len(entry["matrix"]) == n and all(len(row) == n for row in entry["matrix"])
        assert {"transfer", "avg", "last"} <= set(entry["metrics"])
        assert isinstance(entry["trainable_params"], int) and isinstance(entry["train_seconds"], float)
    assert result["methods"]["zeroshot"]["trainable_params"] == 0
    probe = result["methods"]["linear-probe"]
    assert probe["metrics"]["last"] > result["methods"]["zeroshot"]["metrics"]["last"], "training must help"
    assert len(list(plots.glob("*.png"))) == 1


def _result(seed, last_by_method, scenario="s", profile="fast"):
    metrics = lambda last: {"transfer": 1.0, "avg": 2.0, "last": last, "bwt": -1.0}  # noqa: E731
    return {"scenario": scenario, "profile": profile, "seed": seed,
            "methods": {name: {"metrics": metrics(last)} for name, last in last_by_method.items()}}


def test_seeds_command_prints_mean_and_sample_std(tmp_path, capsys):
    files = []
    for seed, last in ((2, 70.0), (0, 60.0), (1, 65.0)):
        path = tmp_path / f"seed{seed}.json"
        path.write_text(json.dumps(_result(seed, {"a": last, "b": 10.0})))
        files.append(str(path))
    assert main(["seeds", *files]) == 0
    row_a = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| a |"))
    assert "| 65.00 ± 5.00 |" in row_a  # mean of 60, 65, 70; sample std 5
    assert row_a.endswith("| 0,1,2 | 60.00 / 65.00 / 70.00 |")  # seeds in order


@pytest.mark.parametrize("results, message", [
    ([_result(0, {"a": 1.0})], "at least two"),
    ([_result(0, {"a": 1.0}), _result(1, {"a": 1.0}, scenario="t")], "mix scenarios"),
    ([_result(0, {"a": 1.0}), _result(0, {"a": 2.0})], "repeated seeds"),
])
def test_seed_table_refuses_results_that_do_not_belong_together(results, message):
    from uniil_lib.benchmark import seed_table

    with pytest.raises(ValueError, match=message):
        seed_table(results)


def test_cpu_profile_is_fast_with_twice_the_images():
    """The "fuller CPU profile" of the seed tables: fast's model and recipe, twice the images per class."""
    from uniil_lib.profiles import get_profile

    fast, cpu = get_profile("fast"), get_profile("cpu")
    assert (cpu.model, cpu.train, dict(cpu.method_lr)) == (fast.model, fast.train, dict(fast.method_lr))
    assert (cpu.train_per_class, cpu.test_per_class) == (2 * fast.train_per_class, 2 * fast.test_per_class)
    assert (cpu.emoji_train_per_class, cpu.emoji_test_per_class) == (2 * fast.emoji_train_per_class,
                                                                     2 * fast.emoji_test_per_class)
    stream = build_scenario("mtil-offline", profile="cpu", seed=0)
    assert len(stream.steps[0].test) == 2 * len(build_scenario("mtil-offline", profile="fast", seed=0).steps[0].test)


def test_paired_comparison_by_hand():
    from uniil_lib.benchmark import paired_comparison

    results = [_result(seed, {"m": m, "b": b}) for seed, m, b in ((1, 70.0, 66.0), (0, 61.0, 60.0), (2, 64.0, 65.0))]
    out = paired_comparison(results, "m", "b")
    assert out["seeds"] == [0, 1, 2] and out["differences"] == [1.0, 4.0, -1.0] and out["wins"] == 2
    # deviations from the mean 4/3: -1/3, 8/3, -7/3; squares sum to 114/9; sample variance 57/9 = 19/3
    assert out["mean"] == pytest.approx(4 / 3) and out["std"] == pytest.approx((19 / 3) ** 0.5)
    assert out["t"] == pytest.approx(4 / 19 ** 0.5)  # (4/3) / (sqrt(19/3) / sqrt(3))
    assert out["p"] == pytest.approx(0.4565, abs=2e-3)  # t = 0.918 on 2 degrees of freedom
    assert out["losses"] == 1 and out["sign_p"] == pytest.approx(1.0)  # 2 of 3 ahead: P(X >= 2) + P(X <= 1) >= 1
    # 95% interval: t_{0.975, 2} = 4.3027 times the standard error sqrt(19/3) / sqrt(3) = 1.4530, i.e. +-6.2519
    assert out["ci95"] == pytest.approx((4 / 3 - 6.2519, 4 / 3 + 6.2519), abs=1e-3)
    with pytest.raises(ValueError, match="no result holds both"):
        paired_comparison(results, "m", "zz")


@pytest.mark.parametrize("differences, sign_p, wilcoxon_p", [
    ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2 / 64, 2 / 64),   # all six ahead: the most extreme of 2**6 sign patterns
    ([1.0, 2.0, 3.0, 4.0, 5.0], 2 / 32, 2 / 32),        # five seeds can never give p < 0.05
    # The tie is dropped; 5 of 6 ahead: sign test 2 * (1 + 6) / 64. The loss -2 has rank 2 among |0.5, 2, 3, 4, 6, 7|,
    # so W- = 2; rank subsets summing to <= 2: {}, {1}, {2}: P(W- <= 2) = 3/64, two-sided 6/64.
    ([0.5, 0.0, -2.0, 3.0, 4.0, 6.0, 7.0], 14 / 64, 6 / 64),
])
def test_paired_comparison_rank_tests_by_hand(differences, sign_p, wilcoxon_p):
    from uniil_lib.benchmark import paired_comparison

    results = [_result(seed, {"m": 50.0 + d, "b": 50.0}) for seed, d in enumerate(differences)]
    out = paired_comparison(results, "m", "b")
    assert out["sign_p"] == pytest.approx(sign_p, abs=1e-9)
    assert out["wilcoxon_p"] == pytest.approx(wilcoxon_p, abs=1e-9)
    tied = paired_comparison([_result(s, {"m": 1.0, "b": 1.0}) for s in range(3)], "m", "b")
    assert tied["wins"] == tied["losses"] == 0 and np.isnan(tied["sign_p"]) and np.isnan(tied["wilcoxon_p"])


def _setting(seed=0, **lasts):
    return {"scenario": "uniil-offline", "profile": "fast", "model": "mini-x", "seed": seed, "tasks": ["a", "b"],
            "split": None, "methods": {name: {"metrics": {"last": last}} for name, last in lasts.items()}}


def test_merge_method_entries_moves_only_the_named_rows_and_marks_them_when_asked():
    from uniil_lib.benchmark import merge_method_entries

    into, source = _setting(mage=80.0, finetune=40.0), _setting(mage=86.0, finetune=1.0)
    marked = merge_method_entries(into, source, ["mage"], source_name="new.json", mark="copied_from")
    assert marked["methods"] == {"mage": {"metrics": {"last": 86.0}, "copied_from": "new.json"},
                                 "finetune": {"metrics": {"last": 40.0}}}
    assert into["methods"]["mage"] == {"metrics": {"last": 80.0}}, "the inputs are not changed"
    plain = merge_method_entries(into, source, ["mage"], source_name="new.json")
    assert plain["methods"]["mage"] == {"metrics": {"last": 86.0}}, "no mark unless one is named"


@pytest.mark.parametrize("change, message", [({"seed": 1}, "differs in seed"), ({"tasks": ["a"]}, "differs in tasks"),
                                             ({"methods": {}}, "no entry for mage")])
def test_merge_method_entries_refuses_another_setting(change, message):
    from uniil_lib.benchmark import merge_method_entries

    with pytest.raises(ValueError, match=message):
        merge_method_entries(_setting(mage=80.0), {**_setting(mage=86.0), **change}, ["mage"], source_name="x.json")


def test_step_differences_per_step_and_on_the_larger_steps_only():
    from uniil_lib.benchmark import step_differences

    def result(seed, a, b):
        return {"seed": seed, "tasks": ["big", "small"], "methods": {"a": {"matrix": [[0.0, 0.0], a]},
                                                                      "b": {"matrix": [[0.0, 0.0], b]}}}
    one = step_differences([result(0, [60.0, 40.0], [50.0, 90.0])], "a", "b", [200, 40])
    assert [row["differences"] for row in one["steps"]] == [[10.0], [-50.0]], "the final row, not the first"
    assert math.isnan(one["steps"][0]["std"]), "one seed has no spread"
    assert one["larger_steps"]["tasks"] == ["big"] and one["larger_steps"]["differences"] == [10.0]
    assert step_differences([result(0, [60.0, 40.0], [50.0, 90.0])], "a", "b", [50, 40])["larger_steps"] is None
    with pytest.raises(ValueError, match="no result holds both 'a' and 'c'"):
        step_differences([result(0, [1.0, 1.0], [1.0, 1.0])], "a", "c", [200, 40])


def test_step_test_sizes_counts_each_steps_test_images_of_the_profile():
    from uniil_lib.benchmark import step_test_sizes
    from uniil_lib.profiles import get_profile

    fast = get_profile("fast")
    assert step_test_sizes("dil-emoji") == [100 * fast.emoji_test_per_class] * 4, "100 classes a style"
    uni = build_scenario("uniil-offline", profile="fast", seed=0)
    sizes = step_test_sizes("uniil-offline", profile=fast, seed=0)
    twitter = [size for size, step in zip(sizes, uni.steps) if step.name.startswith("emoji-twitter")]
    assert twitter == [10 * fast.emoji_test_per_class] * 3, "three steps of ten twitter classes"
    assert sizes[0] == 10 * fast.test_per_class, "Fashion-MNIST: ten classes"
    assert step_test_sizes("dil-emoji", profile="cpu") == [100 * get_profile("cpu").emoji_test_per_class] * 4


def test_random_effects_splits_the_spread_into_rounding_and_seed_parts():
    fit = random_effects({0: [1.0, 3.0], 1: [5.0, 7.0], 2: [9.0, 11.0]})
    assert fit["within_sd"] == pytest.approx(2 ** 0.5), "each seed's two values have variance 2"
    assert fit["between_sd"] == pytest.approx(15 ** 0.5), "var of the means (16) less 2 / 2"
    assert fit["grand_mean"] == pytest.approx(6.0)
    assert fit["share_above_zero"] == pytest.approx(NormalDist().cdf(6 / 15 ** 0.5))
    noise_only = random_effects({0: [-4.0, 4.0], 1: [-3.0, 5.0]})
    assert noise_only["between_sd"] == 0.0, "seed means closer than their rounding noise explains: floored at 0"
    assert noise_only["share_above_zero"] == 1.0
    with pytest.raises(ValueError, match="two values"):
        random_effects({0: [1.0], 1: [2.0]})


def _run(seed, lasts, draw=None):
    result = {"seed": seed, "methods": {name: {"metrics": {"last": last}} for name, last in lasts.items()}}
    return result if draw is None else {**result, "perturbation": {"draw": draw}}


def test_seed_differences_put_the_table_first_then_pair_the_draws_by_index():
    tables = [_run(7, {"mage": 81.0, "moe-adapters-ddas": 80.0}), _run(3, {"mage": 70.0, "moe-adapters-ddas": 72.0}),
              _run(9, {"mage": 50.0})]  # seed 9 lacks the baseline: not a comparison
    draws = [_run(7, {"mage": 71.0}, 2), _run(7, {"moe-adapters-ddas": 72.0}, 2),
             _run(7, {"moe-adapters-ddas": 70.0}, 1), _run(7, {"mage": 75.0}, 1),
             _run(7, {"mage": 99.0}, 3),  # no baseline run of draw 3: no pair, left out
             _run(5, {"mage": 60.0}, 1), _run(5, {"moe-adapters-ddas": 64.0}, 1)]  # a seed with draws only
    found = seed_differences(tables, draws, "mage", "moe-adapters-ddas")
    assert found == {3: [-2.0], 5: [-4.0], 7: [1.0, 5.0, -1.0]}, "ascending seeds; table value, then draws 1 and 2"
    assert list(found) == [3, 5, 7]
    fit = random_effects(found)
    assert fit["seed_means"][7] == pytest.approx(5 / 3)
    with pytest.raises(ValueError, match="one table result per seed"):
        seed_differences(tables + tables[:1], draws, "mage", "moe-adapters-ddas")
    with pytest.raises(ValueError, match="seed 7, method 'mage', draw 1"):
        seed_differences(tables, draws + draws[3:4], "mage", "moe-adapters-ddas")
