"""Run configurations (uniil_lib.run_config) and the one runner: every shipped config parses, a tiny config runs
end to end through the CLI, and a config that cannot run says why before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from uniil_lib.adapters import AdapterConfig
from uniil_lib.cli import main
from uniil_lib.methods.awpf import AWPFSettings
from uniil_lib.run_config import RunConfigError, load_run_config, method_parameters
from uniil_lib.train_config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "configs").glob("*.json"))


def write(tmp_path, **data) -> Path:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"scenario": "mtil-offline", "methods": ["zeroshot"], **data}))
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_config_parses_into_options_each_method_takes(path):
    config = load_run_config(path)
    assert config.methods and config.scenario
    for name in config.methods:
        options = config.options_for(name)
        assert set(options) <= set(method_parameters(name)), name
        if "settings" in options:
            assert isinstance(options["settings"], AWPFSettings), name
    assert config.train is None or isinstance(config.train, TrainConfig)


def test_the_awpf_configs_keep_their_settings():
    config = load_run_config(REPO / "configs" / "awpf_cifar100_b0inc10.json")
    assert (config.model, config.pretrained, config.profile) == ("ViT-B-16", "openai", "full")
    assert config.train == TrainConfig(epochs=15, batch_size=100, lr=1e-3, weight_decay=0.0, warmup_steps=0,
                                       label_smoothing=0.0, seed=0, device="cuda", eval_batch_size=256)
    settings = config.options_for("awpf")["settings"]
    assert (settings.rank, settings.replay, settings.memory, settings.balance.lam_0) == (32, 40, 256, 0.45)
    assert config.options_for("awpf-fixed") == {"settings": settings, "lam": 0.6}
    assert config.options_for("zeroshot") == {}, "zeroshot takes no settings, so the shared option skips it"
    assert load_run_config(REPO / "configs" / "awpf_imagenet100_b0inc10.json").options_for("awpf-fixed")["lam"] == 0.5


@pytest.mark.parametrize("path", [REPO / "configs" / "awpf_cifar100_b0inc10.json",
                                  REPO / "configs" / "awpf_imagenet100_b0inc10.json"], ids=lambda p: p.name)
def test_the_paper_configs_train_moe_adapters_cil_with_its_cil_recipe(path):
    """MoE-Adapters4CL's class-incremental anchor beside AWPF, at its CIL code's settings (moe_adapters_cil.py)."""
    config = load_run_config(path)
    assert "moe-adapters-cil" in config.methods
    cil, awpf = config.train_for("moe-adapters-cil", config.train), config.train_for("awpf", config.train)
    assert (cil.epochs, cil.batch_size, cil.lr, cil.warmup_steps, cil.label_smoothing) == (1, 128, 1e-3, 30, 0.0)
    assert (cil.seed, cil.device, cil.eval_batch_size) == (0, "cuda", 256), "the fields it does not name are train's"
    assert awpf == config.train and awpf.epochs == 15, "the other methods keep the config's own settings"


@pytest.mark.parametrize("path, rapf", [(REPO / "configs" / "awpf_cifar100_b0inc10.json", 0.6),
                                        (REPO / "configs" / "awpf_imagenet100_b0inc10.json", 0.5)],
                         ids=["cifar100", "imagenet100"])
def test_the_paper_configs_run_the_fixed_factor_grid_and_the_ablations(path, rapf):
    """Issue 20: the best-fixed-factor grid and the balance factor's ablations, with awpf's own settings."""
    config = load_run_config(path)
    grid = [f"awpf-fixed-{f:.1f}" for f in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)]
    assert [m for m in config.methods if m.startswith("awpf-fixed-")] == grid
    assert {"awpf", "awpf-mmd-only", "awpf-lda-only", "lowrank-seq", "moe-adapters-cil"} <= set(config.methods)
    settings = config.options_for("awpf")["settings"]
    for name in [*grid, "awpf-mmd-only", "awpf-lda-only"]:
        assert config.options_for(name) == {"settings": settings}, f"{name} must run with awpf's settings"
    assert config.options_for("awpf-fixed")["lam"] == rapf and f"awpf-fixed-{rapf}" in grid
    assert "benchmarks/awpf_verdict.py --config" in config.notes["grid and ablations"]


def test_options_follow_keyword_options_up_the_class_hierarchy():
    mage = method_parameters("mage")
    assert {"pool", "class_attributes", "ddas", "adapters", "block_cache", "cache_budget_bytes"} <= set(mage)
    assert set(method_parameters("awpf-fixed")) == {"lam", "settings"} and method_parameters("zeroshot") == {}


def test_a_json_object_becomes_the_parameter_dataclass(tmp_path):
    path = write(tmp_path, methods=["adapter"], options={"adapters": {"moe": False, "bottleneck": 8}})
    config = load_run_config(path)
    assert config.options_for("adapter")["adapters"] == AdapterConfig(moe=False, bottleneck=8)


@pytest.mark.parametrize("data, message", [
    ({"sceanrio": "x"}, "unknown keys \\['sceanrio'\\]"),
    ({"scenario": "nope"}, "unknown scenario 'nope'; valid: mtil-offline"),
    ({"methods": ["zeroshot", "magic"]}, "valid methods: zeroshot"),
    ({"profile": "huge"}, "unknown profile 'huge'"),
    ({"train": {"epcohs": 2}}, "unknown train settings \\['epcohs'\\]"),
    ({"options": {"lam": 0.5}}, "no listed method takes the option\\(s\\) \\['lam'\\]"),
    ({"method_options": {"awpf": {"rank": 4}}}, "method_options for 'awpf', which 'methods' does not list"),
    ({"methods": ["awpf"], "method_options": {"awpf": {"rank": 4}}}, "awpf takes no option \\['rank'\\]"),
    ({"methods": ["awpf"], "options": {"settings": {"rnak": 4}}}, "run.json: option 'settings' of awpf: unknown AWPF"),
    ({"methods": ["awpf"], "options": {"settings": {"replay": -1}}}, "replay must be >= 0"),
    ({"methods": ["moe-adapters-ddas"], "options": {"ddas": {"hidden": 8}}}, "which a JSON object cannot give"),
    ({"method_train": {"awpf": {"epochs": 1}}}, "method_train for 'awpf', which 'methods' does not list"),
    ({"method_train": {"zeroshot": {"epoch": 1}}}, "method_train for 'zeroshot': unknown or run-wide settings \\['epoch'\\]"),
    ({"method_train": {"zeroshot": {"seed": 1}}}, "unknown or run-wide settings \\['seed'\\].*set them in 'train'"),
    ({"method_train": {"zeroshot": {"autocast": "fp8"}}}, "method_train for 'zeroshot': autocast must be one of"),
    ({"method_train": {"zeroshot": {"step_lr": {"a": -1}}}}, "step_lr rates must be positive"),
    ({"method_train": {"zeroshot": 0.01}}, "method_train for 'zeroshot' must be an object of settings, not 0.01"),
    ({"method_train": ["zeroshot"]}, "'method_train' must be an object, not \\[\"zeroshot\"\\]"),
])
def test_a_config_that_cannot_run_says_why(tmp_path, data, message):
    with pytest.raises((RunConfigError, ValueError), match=message):
        load_run_config(write(tmp_path, **data))


def test_a_grid_point_and_an_ablation_run_from_a_config_as_the_verdict_script_runs_them(tmp_path, capsys):
    """``benchmark --config FILE --methods SUBSET --seed N``: the call benchmarks/awpf_verdict.py makes."""
    path = write(tmp_path, profile="fast", model="tiny", methods=["awpf", "awpf-fixed-0.3", "awpf-lda-only"],
                 train={"epochs": 1, "batch_size": 32, "lr": 0.01}, options={"settings": {"rank": 4, "replay": 8}})
    out = tmp_path / "result.json"
    assert main(["benchmark", "--config", str(path), "--methods", "awpf-fixed-0.3,awpf-lda-only", "--seed", "4",
                 "--out", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    n = len(result["tasks"])
    assert set(result["methods"]) == {"awpf-fixed-0.3", "awpf-lda-only"} and result["seed"] == 4
    assert result["methods"]["awpf-fixed-0.3"]["lambdas"] == [1.0] + [0.3] * (n - 1)
    ablation = result["methods"]["awpf-lda-only"]
    assert ablation["mmd2"][0] is None and len(ablation["rho"]) == n and all(0 < r < 1 for r in ablation["rho"])


def test_a_tiny_config_runs_end_to_end_through_the_cli(tmp_path, capsys):
    path = write(tmp_path, profile="fast", model="tiny", methods=["zeroshot", "lowrank-seq", "awpf-fixed"],
                 train={"epochs": 1, "batch_size": 32, "lr": 0.01, "seed": 3},
                 options={"settings": {"rank": 4, "replay": 8}}, method_options={"awpf-fixed": {"lam": 0.25}})
    out = tmp_path / "result.json"
    assert main(["benchmark", "--config", str(path), "--out", str(out), "--quiet"]) == 0
    assert "awpf-fixed" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["model"].startswith("tiny-") and (result["profile"], result["seed"]) == ("fast", 3)
    n = len(result["tasks"])
    assert set(result["methods"]) == {"zeroshot", "lowrank-seq", "awpf-fixed"}
    assert result["methods"]["awpf-fixed"]["lambdas"] == [1.0] + [0.25] * (n - 1), "method_options reach the method"
    assert result["methods"]["lowrank-seq"]["trainable_params"] == 2 * 4 * 64, "options reach every method: rank 4"
    assert result["methods"]["zeroshot"]["trainable_params"] == 0


@pytest.mark.parametrize("train", [None, {"epochs": 1, "batch_size": 32, "lr": 0.01, "seed": 3}],
                         ids=["profile-train", "file-train"])
def test_a_configs_per_method_training_settings_reach_that_methods_train_config(tmp_path, monkeypatch, train):
    import uniil_lib.benchmark as benchmark
    from uniil_lib.profiles import get_profile

    built, create_method = {}, benchmark.create_method

    def recording_create_method(name, clip, stream, config, **options):  # the real builder; keeps what it built
        built[name] = create_method(name, clip, stream, config, **options)
        return built[name]

    monkeypatch.setattr(benchmark, "create_method", recording_create_method)
    recipe = {"epochs": 1, "batch_size": 16, "lr": 0.002, "warmup_steps": 2, "label_smoothing": 0.1}
    extra = {} if train is None else {"train": train}
    path = write(tmp_path, profile="fast", model="tiny", methods=["linear-probe", "moe-adapters-cil"],
                 method_train={"moe-adapters-cil": recipe}, **extra)
    assert main(["benchmark", "--config", str(path), "--seed", "5", "--quiet"]) == 0
    cil, probe = built["moe-adapters-cil"].config, built["linear-probe"].config
    assert {key: getattr(cil, key) for key in recipe} == recipe, "method_train reaches the method's TrainConfig"
    assert (cil.seed, probe.seed) == (5, 5) and not cil.progress, "the run's seed and --quiet hold for every method"
    fast = get_profile("fast")
    if train is None:  # the profile's settings for the other method, and for the fields the recipe leaves alone
        assert probe == fast.train_config("linear-probe", seed=5, progress=False, scenario="mtil-offline")
        assert (cil.device, cil.eval_batch_size) == (fast.train.device, fast.train.eval_batch_size)
    else:  # the file's train for the other method, and under the recipe
        assert (probe.epochs, probe.batch_size, probe.lr, probe.label_smoothing) == (1, 32, 0.01, 0.0)
        assert cil == TrainConfig(**{**train, **recipe, "seed": 5, "progress": False})


def test_the_cli_runs_a_subset_and_refuses_mixed_arguments(tmp_path, capsys):
    path = write(tmp_path, profile="fast", model="tiny", methods=["zeroshot", "linear-probe"])
    assert main(["benchmark", "--config", str(path), "--methods", "awpf", "--quiet"]) == 2
    assert "does not list ['awpf']" in capsys.readouterr().err
    assert main(["benchmark", "--config", str(path), "--scenario", "cil-emoji", "--quiet"]) == 2
    assert "drop --scenario" in capsys.readouterr().err
    assert main(["benchmark", "--methods", "zeroshot"]) == 2
    assert "needs --scenario and --methods, or --config" in capsys.readouterr().err


def test_the_imagenet_config_fails_before_any_weights_load_when_the_data_is_missing(tmp_path, monkeypatch):
    from uniil_lib.benchmark import run_config
    from uniil_lib.data import DatasetNotFoundError

    monkeypatch.setenv("UNIIL_DATA", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # the config trains on cuda: pretend a GPU is here
    with pytest.raises(DatasetNotFoundError, match="fetch_torchvision.py --dataset imagenet100"):
        run_config(REPO / "configs" / "awpf_imagenet100_b0inc10.json")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match="'cuda': this machine has no CUDA GPU"):  # without one, that comes first
        run_config(REPO / "configs" / "awpf_imagenet100_b0inc10.json")


def test_the_imagenet_config_builds_its_scenario_from_the_imagefolder_layout(tmp_path):
    from PIL import Image

    from uniil_lib.integrity import record_folder
    from uniil_lib.named_scenarios import build_scenario

    folder = tmp_path / "imagenet100"
    wnids = [f"n{1440764 + k:08d}" for k in range(20)]
    for k, wnid in enumerate(wnids):
        for split, n in (("train", 2), ("val", 1)):
            (folder / split / wnid).mkdir(parents=True)
            for j in range(n):
                Image.new("RGB", (8, 8), (10 * k, 5 * j, 0)).save(folder / split / wnid / f"{wnid}_{j}.JPEG")
    (folder / "classnames.txt").write_text("".join(f"{w} class_{k}, other name\n" for k, w in enumerate(wnids)))
    record_folder(folder)  # the sha256 record the fetch script writes for files placed by hand
    stream = build_scenario(load_run_config(REPO / "configs" / "awpf_imagenet100_b0inc10.json").scenario,
                            profile="fast", root=tmp_path)
    assert len(stream.steps) == 2 and all(len(step.class_ids) == 10 for step in stream.steps)
    assert sorted(spec.name for spec in stream.classes) == sorted(f"class {k}" for k in range(20))
