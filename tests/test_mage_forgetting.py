"""benchmarks/mage_forgetting.py: the exposure measure on hand-made usage counts, and a bad --watch refused
before anything loads."""

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
