"""benchmarks/mage_frozen_replay.py: activate-freeze replayed from a checkpoint's usage counters."""

from __future__ import annotations

import json

import pytest
import torch
from repo_scripts import load_script
from safetensors.torch import save_file

from uniil_lib.adapters import most_used_experts


@pytest.fixture(scope="module")
def script():
    return load_script("benchmarks/mage_frozen_replay.py")


USAGE = torch.tensor([[9., 5., 4., 0., 0.],   # step 0: two -> {0, 1}; 0.9 -> {0, 1, 2} (18 of 18)
                      [0., 8., 0., 1., 1.],   # step 1: two -> {1, 3}; 0.9 -> {1, 3} (9 of 10 = 0.9)
                      [1., 0., 0., 0., 6.]])  # step 2: two -> {4, 0}


def write_run(folder, frozen, rows=None):
    folder.mkdir(parents=True)
    save_file({"adapters.image.3.usage": USAGE, "adapters.image.3.frozen": torch.tensor(frozen)},
              str(folder / "step-02.safetensors"))
    save_file({"adapters.image.3.usage": USAGE[:1], "adapters.image.3.frozen": torch.tensor([True] * 5)},
              str(folder / "step-00.safetensors"))  # an earlier step: ignored
    if rows:
        (folder / "progress.json").write_text(json.dumps({"rows": rows}))
    return folder


def test_most_used_experts_by_count_and_by_coverage():
    assert most_used_experts(USAGE[0], 2) == [0, 1]
    assert most_used_experts(USAGE[0], 2, coverage=0.9) == [0, 1, 2]
    assert most_used_experts(torch.tensor([3., 3., 1.]), 1) == [0], "a tie goes to the lower index"
    assert most_used_experts(torch.tensor([5., 0., 0.]), 1, coverage=1.0) == [0], "an unused expert is never added"


def test_the_replay_counts_the_union_before_each_step_and_checks_the_saved_mask(script, tmp_path, capsys):
    run = write_run(tmp_path / "uniil-offline" / "mage-seed0", [True, True, False, True, True],
                    rows=[[10.0, 10.0, 10.0], [80.0, 10.0, 10.0], [70.0, 90.0, 10.0], [60.0, 85.0, 95.0]])
    assert script.main([str(run)]) == 0
    record = json.loads(capsys.readouterr().out)["uniil-offline/mage-seed0"]
    assert record["frozen_before_step"] == {"image.3": [0, 2, 3]}
    assert record["replay_matches"] is True
    assert record["own_step_accuracy"] == [80.0, 90.0, 95.0] and record["last"] == 80.0


def test_a_wrong_rule_shows_as_a_mismatch(script, tmp_path, capsys):
    run = write_run(tmp_path / "s" / "mage-seed0", [True, True, False, True, True])
    assert script.main([str(run), "--coverage", "0.9"]) == 1, "0.9 would also have frozen expert 2"
    assert json.loads(capsys.readouterr().out)["s/mage-seed0"]["frozen_before_step"] == {"image.3": [0, 3, 4]}


@pytest.mark.parametrize("args, message", [(["EMPTY"], "no step-NN.safetensors"), (["EMPTY", "--coverage", "2"], "--coverage")])
def test_bad_input_says_what_to_pass(script, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        script.main([str(tmp_path / "empty") if a == "EMPTY" else a for a in args])
    assert message in capsys.readouterr().err
