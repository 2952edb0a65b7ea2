"""The benchmark CLI end to end on the offline mtil-offline scenario (fast profile)."""

from __future__ import annotations

import json

import pytest

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
