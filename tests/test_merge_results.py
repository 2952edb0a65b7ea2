"""scripts/merge_results.py: a method's rows move between result files of one setting, and only of one setting."""

from __future__ import annotations

import json

import pytest
from repo_scripts import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("scripts/merge_results.py")


def result(seed=0, **methods):
    return {"scenario": "uniil-offline", "profile": "fast", "model": "mini-x", "seed": seed, "tasks": ["a", "b"],
            "split": {"fingerprint": "f"}, "methods": {name: {"metrics": {"last": last}} for name, last in methods.items()}}


def test_the_named_methods_are_replaced_and_the_rest_kept(script, tmp_path):
    into, source = tmp_path / "into.json", tmp_path / "new.json"
    into.write_text(json.dumps(result(finetune=40.0, mage=80.0, **{"mage-noattr": 70.0})))
    source.write_text(json.dumps(result(mage=86.0, **{"mage-noattr": 82.0})))
    assert script.main([str(into), str(source), "--methods", "mage"]) == 0
    merged = json.loads(into.read_text())["methods"]
    assert merged["mage"] == {"metrics": {"last": 86.0}, "merged_from": "new.json"}
    assert merged["mage-noattr"] == {"metrics": {"last": 70.0}}, "a method not named stays as it was"
    assert merged["finetune"] == {"metrics": {"last": 40.0}}


@pytest.mark.parametrize("source, message", [(result(seed=1, mage=86.0), "differs in seed"),
                                             (result(finetune=1.0), "no entry for mage")])
def test_another_setting_or_a_missing_method_writes_nothing(script, tmp_path, capsys, source, message):
    into, other = tmp_path / "into.json", tmp_path / "other.json"
    into.write_text(json.dumps(result(mage=80.0)))
    other.write_text(json.dumps(source))
    before = into.read_text()
    with pytest.raises(SystemExit):
        script.main([str(into), str(other), "--methods", "mage"])
    assert message in capsys.readouterr().err
    assert into.read_text() == before
