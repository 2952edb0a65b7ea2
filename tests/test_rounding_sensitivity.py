"""benchmarks/rounding_sensitivity.py: the perturbation is tiny, fixed per value and per draw, applied to the real
stem's head only inside its context, and the report reads the per-draw results it wrote."""

from __future__ import annotations

import json
from statistics import NormalDist

import pytest
import timm
import torch

from repo_scripts import load_script

rounding = load_script("benchmarks/rounding_sensitivity.py")


def test_perturbation_is_a_fixed_function_of_the_value_smaller_than_epsilon_and_different_per_draw():
    values = torch.linspace(-3, 3, 10_001)
    first = rounding.perturbation(values, 1e-6, 1)
    assert torch.equal(first, rounding.perturbation(values.clone(), 1e-6, 1)), "same value, same draw: same output"
    relative = ((first - values).abs() / values.abs().clamp_min(1e-12))
    assert relative.max() <= 1.2e-6, "at most epsilon, plus float32 rounding of the product"
    assert (first != values).float().mean() > 0.5, "most values must actually move"
    assert not torch.equal(first, rounding.perturbation(values, 1e-6, 2)), "another draw, another perturbation"
    assert torch.equal(rounding.perturbation(values, 0.0, 3), values), "epsilon 0 is the plain run"


def test_the_stem_head_is_perturbed_inside_the_context_and_restored_after_it():
    from uniil_lib.imagenet_backbone import FrozenCNNStem

    torch.manual_seed(0)
    stem = FrozenCNNStem(timm.create_model("tf_efficientnet_lite0", pretrained=False))
    trunk = torch.rand(2, 320, 2, 2)
    plain = stem.head(trunk)
    with rounding.perturbed_stem_head(1e-3, 5):
        perturbed = stem.head(trunk)
    assert torch.equal(perturbed, rounding.perturbation(plain, 1e-3, 5))
    assert not torch.equal(perturbed, plain)
    assert torch.equal(stem.head(trunk), plain), "the plain head must be back after the context"


def test_report_lists_each_draw_and_the_paired_difference(tmp_path):
    lasts = {"moe-adapters-ddas": [80.0, 78.0, 82.0], "mage": [83.0, 79.0, 81.0]}
    for method, values in lasts.items():
        for draw, last in enumerate(values):
            result = {"scenario": "uniil-offline", "seed": 0,
                      "methods": {method: {"metrics": {"last": last}}},
                      "perturbation": {"epsilon": 0.0 if draw == 0 else 1e-6, "draw": draw}}
            path = rounding.result_path(tmp_path, "uniil-offline", 0, method, 1e-6, draw)
            path.write_text(json.dumps(result))
    text = rounding.report(tmp_path, "uniil-offline", 0)
    assert "| moe-adapters-ddas | 0,1,2 | 80.00 / 78.00 / 82.00 | 80.00 ± 2.00 | 4.00 |" in text
    assert "| mage | 0,1,2 | 83.00 / 79.00 / 81.00 | 81.00 ± 2.00 | 4.00 |" in text
    assert "+3.00 / +1.00 / -1.00; mean +1.00 ± 2.00, ahead on 2 of 3" in text


def test_report_compares_with_the_spread_over_the_saved_ten_seed_table(tmp_path):
    result = {"methods": {"moe-adapters-ddas": {"metrics": {"last": 80.0}}}, "perturbation": {"draw": 0}}
    rounding.result_path(tmp_path, "uniil-offline", 0, "moe-adapters-ddas", 0.0, 0).write_text(json.dumps(result))
    lines = rounding.report(tmp_path, "uniil-offline", 0).splitlines()
    row = next(r for r in lines if r.startswith("| moe-adapters-ddas |"))
    assert row.endswith("| 2.44 (10 seeds) |"), row


def _write_draw(folder, seed, method, draw, last):
    result = {"methods": {method: {"metrics": {"last": last}}}, "perturbation": {"draw": draw}}
    rounding.result_path(folder, "uniil-offline", seed, method, 1e-6, draw).write_text(json.dumps(result))


def test_seed_differences_pair_draws_by_index_and_put_the_tables_value_first(tmp_path):
    table = tmp_path / "table"
    table.mkdir()
    (table / "faithful-uniil-offline-fast-seed4.json").write_text(json.dumps(
        {"methods": {"mage": {"metrics": {"last": 81.0}}, "moe-adapters-ddas": {"metrics": {"last": 80.0}}}}))
    for draw, (base, other) in enumerate([(70.0, 75.0), (72.0, 71.0)], start=1):
        _write_draw(tmp_path, 4, "moe-adapters-ddas", draw, base)
        _write_draw(tmp_path, 4, "mage", draw, other)
    _write_draw(tmp_path, 4, "mage", 3, 99.0)  # no baseline run of draw 3: not a pair, left out
    found = rounding.seed_differences(tmp_path, "uniil-offline", [4, 5], table_dirs=[table])
    assert found == {4: [1.0, 5.0, -1.0]}, "table first, then draws 1 and 2; seed 5 has nothing"
    draws_only = rounding.seed_differences(tmp_path, "uniil-offline", [4], with_table=False, table_dirs=[table])
    assert draws_only == {4: [5.0, -1.0]}


def test_seed_differences_take_each_seeds_table_from_the_first_folder_holding_it(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, seed, lead in ((first, 1, 2.0), (second, 1, 9.0), (second, 41, -3.0)):
        folder.mkdir(exist_ok=True)
        methods = {"mage": {"metrics": {"last": 80.0 + lead}}, "moe-adapters-ddas": {"metrics": {"last": 80.0}}}
        (folder / f"faithful-uniil-offline-fast-seed{seed}.json").write_text(json.dumps({"methods": methods}))
    found = rounding.seed_differences(tmp_path, "uniil-offline", [1, 41, 42], table_dirs=[first, second])
    assert found == {1: [2.0], 41: [-3.0]}, "seed 1 from the first folder, seed 41 from the second, 42 nowhere"
    _write_draw(tmp_path, 41, "moe-adapters-ddas", 1, 70.0)
    _write_draw(tmp_path, 41, "mage", 1, 71.0)
    text = rounding.seed_report(tmp_path, "uniil-offline", [1, 41, 42], table_dirs=[first, second])
    assert "| 41 | -3.00 / +1.00 | 2 | -1.00 |" in text, "the second folder's table value, then the draw"
    assert "missing (no value yet): seeds 42" in text
    assert "too few values for the rounding / between-seed split" in text, "draws only: seed 41's one draw"


def test_across_seeds_judges_the_method_named_on_the_command_line(tmp_path, capsys):
    table = tmp_path / "table"
    table.mkdir()
    methods = {"mage": {"metrics": {"last": 81.0}}, "mage-shrunk": {"metrics": {"last": 78.0}},
               "moe-adapters-ddas": {"metrics": {"last": 80.0}}}
    (table / "faithful-uniil-offline-fast-seed5.json").write_text(json.dumps({"methods": methods}))
    _write_draw(tmp_path, 5, "moe-adapters-ddas", 1, 70.0)
    _write_draw(tmp_path, 5, "mage-shrunk", 1, 74.0)
    rounding.main(["--across-seeds", "5", "--judge", "mage-shrunk", "--out", str(tmp_path), "--seed-tables", str(table)])
    text = capsys.readouterr().out
    assert "mage-shrunk - moe-adapters-ddas Last per seed" in text
    assert "| 5 | -2.00 / +4.00 | 2 | +1.00 |" in text, "the table's -2 and the draw's +4: mage-shrunk, not mage"


def test_one_run_a_seed_is_the_normal_models_chance_of_a_single_run_ahead_and_of_all_seeds_ahead(tmp_path):
    from uniil_lib.benchmark import random_effects

    fit = random_effects({0: [1.0, 3.0], 1: [5.0, 7.0], 2: [9.0, 11.0]})  # mu 6, sigma_w^2 2, sigma_b^2 15
    single, every = rounding.one_run_a_seed(fit, 3)
    assert single == pytest.approx(NormalDist().cdf(6 / 17 ** 0.5))
    assert every == pytest.approx(single ** 3)
    table = tmp_path / "table"
    table.mkdir()
    for seed, (lead, draw) in enumerate([(1.0, 3.0), (5.0, -7.0)]):
        methods = {"mage": {"metrics": {"last": 80.0 + lead}}, "moe-adapters-ddas": {"metrics": {"last": 80.0}}}
        (table / f"faithful-uniil-offline-fast-seed{seed}.json").write_text(json.dumps({"methods": methods}))
        _write_draw(tmp_path, seed, "moe-adapters-ddas", 1, 70.0)
        _write_draw(tmp_path, seed, "mage", 1, 70.0 + draw)
    text = rounding.seed_report(tmp_path, "uniil-offline", [0, 1], table_dirs=[table])
    fit = random_effects({0: [1.0, 3.0], 1: [5.0, -7.0]})
    single, every = rounding.one_run_a_seed(fit, 2)
    assert (f"one run a seed (normal model): ahead with chance {single:.3f} on a seed, on all 2 seeds {every:.2f}; "
            "single runs behind here: 1 of 4") in text
