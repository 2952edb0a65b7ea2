"""benchmarks/mage_forgetting.py: the exposure measure on hand-made usage counts, and a bad --watch refused
before anything loads; benchmarks/mage_verdict.py running a run configuration (the commands it would run)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from repo_scripts import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("benchmarks/mage_forgetting.py")


def fake_method(usage_rows, frozen_log):
    layer = SimpleNamespace(name="image.3", usage=torch.tensor(usage_rows, dtype=torch.float))
    return SimpleNamespace(adapters=SimpleNamespace(moe_layers=lambda: [layer]), frozen_log=frozen_log)


def test_exposure_counts_only_experts_the_new_step_trained(script):
    # step 0 used experts 0-3 (40/30/20/10); activate-freeze protected 0 and 1; step 1 used 1, 2 and 4.
    method = fake_method([[40, 30, 20, 10, 0], [0, 50, 25, 0, 25]], {0: {"image.3": [0, 1]}})
    assert script.exposure(method, 1) == {"image.3": 0.2}  # expert 2 only: trained by step 1, not frozen
    method = fake_method([[40, 30, 20, 10, 0], [0, 50, 25, 0, 25]], {0: {"image.3": [0]}})
    assert script.exposure(method, 1) == {"image.3": 0.5}  # expert 1 now unprotected too


def test_a_watch_outside_the_learned_steps_is_refused(script, capsys):
    with pytest.raises(SystemExit):
        script.main(["--steps", "2", "--watch", "2"])
    assert "--watch 2 must name one of the 2 steps learned" in capsys.readouterr().err


def test_the_verdict_script_runs_a_run_configuration_into_its_own_files(tmp_path, monkeypatch):
    verdict = load_script("benchmarks/mage_verdict.py")
    commands = []
    monkeypatch.setattr(verdict.subprocess, "run", lambda command, **kw: commands.append(command))
    verdict.main(["--seeds", "30,31", "--config", str(verdict.ROOT / "configs/mage_coverage_uniil_offline_fast.json"),
                  "--out-dir", str(tmp_path)])
    assert len(commands) == 2
    first = commands[0]
    assert first[first.index("--config") + 1].endswith("configs/mage_coverage_uniil_offline_fast.json")
    assert "--scenario" not in first and "--profile" not in first, "the file names the scenario and the profile"
    assert first[first.index("--methods") + 1] == "zeroshot,moe-adapters-ddas,mage-noattr,mage"
    assert first[first.index("--out") + 1] == str(tmp_path / "faithful-mage_coverage_uniil_offline_fast-seed30.json")
