"""Learning rates per stream step: the full profile's MTIL table (MoE-Adapters4CL's scripts), and the trainer using it."""

from __future__ import annotations

import pytest
import torch

from fixtures_tv import writers
from uniil_lib.clip import TinyClipConfig, load_clip
from uniil_lib.methods import TrainConfig, create_method
from uniil_lib.named_scenarios import MTIL_ORDER_I, build_scenario
from uniil_lib.profiles import get_profile
from uniil_lib.scenarios import DatasetPart, class_incremental
from uniil_lib.train import run_continual

# mtil/scripts/train/train_full_shot_router11_experts22_1000iters.sh, lines 10-11 (JiazuoYu/MoE-Adapters4CL):
# dataset=(Aircraft Caltech101 CIFAR100 DTD EuroSAT Flowers Food MNIST OxfordPet StanfordCars SUN397)
# lr=(5e-3 1e-3 5e-3 1e-3 1e-4 1e-3 1e-3 1e-4 1e-3 1e-3 1e-3)
SCRIPT_LR = (5e-3, 1e-3, 5e-3, 1e-3, 1e-4, 1e-3, 1e-3, 1e-4, 1e-3, 1e-3, 1e-3)


@pytest.fixture(scope="module")
def mtil(tmp_path_factory):
    """The real ``mtil`` scenario, built from tiny fixture files of its eleven datasets."""
    root = tmp_path_factory.mktemp("mtil-data")
    for name in MTIL_ORDER_I:
        writers()[name](root)
    return build_scenario("mtil", profile="full", root=root)


@pytest.mark.parametrize("method", ["moe-adapters", "moe-adapters-ddas", "moe-adapters-balance", "mage"])
def test_full_profile_mtil_steps_take_the_reference_scripts_rates(mtil, method):
    config = get_profile("full").train_config(method, seed=0, scenario=mtil.name)
    rates = tuple(config.lr_for(step.name) for step in mtil.steps)
    assert [step.name for step in mtil.steps] == list(MTIL_ORDER_I)
    assert rates == SCRIPT_LR, f"{method}: per-dataset rates {rates}"
    prefix = mtil.prefix(3)
    assert get_profile("full").train_config(method, seed=0, scenario=prefix.name).step_lr == config.step_lr


def test_other_methods_and_scenarios_keep_one_rate(mtil):
    full = get_profile("full")
    finetune = full.train_config("finetune", seed=0, scenario=mtil.name)
    assert finetune.step_lr is None and {finetune.lr_for(s.name) for s in mtil.steps} == {1e-5}
    assert full.train_config("moe-adapters", seed=0, scenario="cifar100-b0inc10").step_lr is None
    assert get_profile("fast").train_config("moe-adapters", seed=0, scenario="mtil").step_lr is None


def test_a_rate_table_without_a_step_is_an_error():
    config = TrainConfig(lr=1e-3, step_lr={"aircraft": 5e-3})
    assert config.lr_for("aircraft") == 5e-3 and TrainConfig(lr=2e-3).lr_for("anything") == 2e-3
    with pytest.raises(KeyError, match="no learning rate for step 'dtd'.*aircraft"):
        config.lr_for("dtd")
    with pytest.raises(ValueError, match="positive"):
        TrainConfig(step_lr={"aircraft": 0.0})


def test_the_trainer_gives_each_step_its_rate(squares, monkeypatch):
    data = DatasetPart("sq", squares(4, 8, seed=0), squares(4, 2, seed=1), ("a {} square.",), "toy")
    stream = class_incremental("toy-cil", data, increment=2, seed=0)
    rates = {stream.steps[0].name: 3e-3, stream.steps[1].name: 7e-4}
    tiny = TinyClipConfig(embed_dim=16, image_size=16, patch_size=8, vision_width=16, vision_layers=1,
                          text_width=16, text_layers=1, heads=2, context_length=16)
    config = TrainConfig(epochs=1, batch_size=8, lr=1.0, step_lr=rates, progress=False)
    method = create_method("linear-probe", load_clip("tiny", tiny_config=tiny, seed=0), stream, config)
    used = []
    adamw = torch.optim.AdamW

    def recording_adamw(params, *args, **kwargs):
        used.append(kwargs["lr"])
        return adamw(params, *args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", recording_adamw)
    run_continual(method, stream)
    assert used == [3e-3, 7e-4], f"optimisers were built with {used}"
