"""Profiles: the colab profile, profile files, the adapter placement as a profile setting recorded in results, and
the command line's seeds and devices."""

from __future__ import annotations

import json

import pytest

from uniil_lib.benchmark import run_benchmark
from uniil_lib.cli import main
from uniil_lib.profiles import ProfileFileError, get_profile, profile_names
from uniil_lib.scenarios import DatasetPart, class_incremental


def test_the_colab_profile_is_vit_b16_with_openai_weights_cut_to_fit_a_t4():
    colab, full = get_profile("colab"), get_profile("full")
    assert "colab" in profile_names()
    assert (colab.model, colab.pretrained) == (full.model, full.pretrained) == ("ViT-B-16", "openai")
    assert colab.train.device == "cuda" and colab.train.autocast == "auto", "fp16 + scaler on a T4, bf16 elsewhere"
    assert colab.train_per_class < 40 and colab.test_per_class is not None
    assert colab.train.iterations < full.train.iterations / 10
    assert colab.train.adapter_placement == "top-quarter" and full.train.adapter_placement == "all"
    assert get_profile("fast").train.adapter_placement == "top-quarter"


def test_the_switch_reads_uniil_profile(monkeypatch):
    monkeypatch.setenv("UNIIL_PROFILE", "colab")
    assert get_profile().name == "colab"


def test_a_profile_file_changes_its_base(tmp_path):
    path = tmp_path / "gpu-check.json"
    path.write_text(json.dumps({"base": "full", "pretrained": "/models/vit.safetensors", "train_per_class": 4,
                                "test_per_class": None, "train": {"iterations": 3}}))
    profile = get_profile(str(path))
    full = get_profile("full")
    assert profile.name == "gpu-check" and profile.pretrained == "/models/vit.safetensors"
    assert profile.train_per_class == 4 and profile.test_per_class is None
    assert profile.train.iterations == 3 and profile.train.batch_size == full.train.batch_size
    assert profile.step_lr == full.step_lr, "the base's per-step settings are kept"


@pytest.mark.parametrize("data, message", [
    ([1, 2], "is a JSON object"),
    ({"base": "turbo"}, "base 'turbo' is not a profile"),
    ({"iterations": 3}, "unknown keys \\['iterations'\\]"),
    ({"train_per_class": 0}, "'train_per_class' must be a positive integer or null"),
    ({"emoji_test_per_class": None}, "'emoji_test_per_class' must be a positive integer"),
    ({"train": {"iterations": 3, "speed": 2}}, "unknown train settings \\['speed'\\]"),
    ({"train": {"autocast": "fp8"}}, "train: autocast must be one of"),
    ({"model": 5}, "'model' must be a string"),
])
def test_a_bad_profile_file_is_named_with_what_to_change(tmp_path, data, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileFileError, match=message) as caught:
        get_profile(str(path))
    assert str(path) in str(caught.value)


def toy(squares):
    data = DatasetPart("sq", squares(4, 8, seed=0), squares(4, 4, seed=1), ("a {} square.",), "toy")
    return class_incremental("toy", data, increment=2, seed=0)


@pytest.mark.parametrize("placement, image_blocks", [("top-quarter", [3]), ("all", [0, 1, 2, 3])])
def test_the_adapter_placement_is_the_profiles_and_is_recorded(squares, tmp_path, placement, image_blocks):
    from dataclasses import replace

    fast = get_profile("fast")
    profile = replace(fast, train=replace(fast.train, epochs=1, adapter_placement=placement))
    result = run_benchmark(toy(squares), ["adapter", "zeroshot"], profile=profile, model="tiny", progress=False)
    entry = result["methods"]["adapter"]
    assert entry["adapter_placement"] == placement and entry["adapter_blocks"]["image"] == image_blocks
    assert entry["precision"] == "fp32" and entry["device"] == "cpu" and entry["processes"] == 1
    assert set(entry["median_iteration_seconds"]) == {"0", "1"}
    assert "adapter_placement" not in result["methods"]["zeroshot"], "a method without adapters has no placement"


@pytest.mark.parametrize("args, message", [
    (["--seed", "1", "--seeds", "0,1"], "give --seed or --seeds, not both"),
    (["--seeds", "0,0"], "must name each seed once"),
    (["--seeds", "0,x"], "must be integers separated by commas"),
    (["--seeds", "0,1", "--out", "r.json"], "put {seed} in the name"),
    (["--profile", "nowhere.json"], "nowhere.json"),
])
def test_bad_seeds_devices_and_profiles_are_one_line_errors(capsys, args, message):
    code = main(["benchmark", "--scenario", "cil-emoji", "--methods", "zeroshot", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_devices_and_torchrun_do_not_mix(capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    code = main(["benchmark", "--scenario", "cil-emoji", "--methods", "zeroshot", "--devices", "cpu,cpu"])
    assert code == 2 and "Use one or the other" in capsys.readouterr().err


@pytest.mark.parametrize("profile", profile_names())
def test_every_method_on_moe_adapters_layers_trains_with_the_moe_adapters_rates(profile):
    """MAGE, its ablation and its controls train MoE-Adapters4CL's experts and per-task gates: a control that
    trained at another rate would measure the rate, not what it removes (mage-randwords and mage-imagefeat ran at a
    tenth of mage's rate in the fast profile until 2026-12-05). Every method built on ``MoEAdapters`` takes its
    learning rate and, where the profile has them, its per-step rates."""
    from uniil_lib.methods import method_class, method_names
    from uniil_lib.methods.moe_adapters import MoEAdapters

    chosen = get_profile(profile)
    reference = chosen.train_config("moe-adapters", seed=0, scenario="mtil")
    family = [name for name in method_names() if issubclass(method_class(name), MoEAdapters)]
    assert {"mage", "mage-noattr", "mage-randwords", "mage-imagefeat", "moe-adapters-ddas"} <= set(family)
    for name in family:
        config = chosen.train_config(name, seed=0, scenario="mtil")
        assert (config.lr, config.step_lr) == (reference.lr, reference.step_lr), (
            f"{profile}: {name} trains at lr {config.lr} (steps {config.step_lr}), moe-adapters at {reference.lr} "
            f"(steps {reference.step_lr}); add it to uniil_lib.profiles.MTIL_RECIPE_METHODS")


def test_the_result_records_the_learning_rate_a_method_trained_with(squares):
    from dataclasses import replace

    fast = get_profile("fast")
    profile = replace(fast, train=replace(fast.train, epochs=1))
    result = run_benchmark(toy(squares), ["adapter", "zeroshot"], profile=profile, model="tiny", progress=False)
    assert result["methods"]["adapter"]["lr"] == fast.train_config("adapter", seed=0).lr == 1e-2
    assert "step_lr" not in result["methods"]["adapter"], "no per-step rates in the fast profile"
    assert "lr" not in result["methods"]["zeroshot"], "a method that does not train has no learning rate"
