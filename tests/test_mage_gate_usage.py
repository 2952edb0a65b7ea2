"""benchmarks/mage_gate_usage.py: a step's routing shares on frozen experts, on its two most used experts, and the
experts it uses, per tower, from the counts activate-freeze reads."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from repo_scripts import load_script

gate_usage = load_script("benchmarks/mage_gate_usage.py")


def test_step_usage_counts_shares_of_the_steps_own_routing():
    usage = torch.tensor([50, 30, 10, 5, 5, 0])
    row = gate_usage.step_usage(usage, frozen_before={1, 3})
    assert row["on_frozen"] == pytest.approx(0.35)
    assert row["top2"] == pytest.approx(0.80)
    assert row["used"] == 5, "experts with more than 1% of the step's routing"
    assert gate_usage.step_usage(usage, frozen_before=set())["on_frozen"] == 0.0
    with pytest.raises(ValueError, match="routed nothing"):
        gate_usage.step_usage(torch.zeros(6, dtype=torch.long), set())


def test_step_report_reads_each_layers_own_router_and_what_earlier_steps_froze():
    def gate_weights(router):  # router r's gate: a (2, 4) block of r + 1, norm sqrt(8) (r + 1)
        return torch.full((2, 4), router + 1.0), torch.zeros(2, 4)

    layers = [
        SimpleNamespace(name="image.2", usage=torch.tensor([[9, 1, 0, 0], [2, 2, 6, 0]]), gate_weights=gate_weights),
        SimpleNamespace(name="image.3", usage=torch.tensor([[0, 0, 5, 5], [0, 10, 0, 0]]), gate_weights=gate_weights),
        SimpleNamespace(name="text.5", usage=torch.tensor([[4, 4, 0, 0], [0, 0, 4, 4]]), gate_weights=gate_weights),
    ]
    method = SimpleNamespace(adapters=SimpleNamespace(moe_layers=lambda: layers),
                             frozen_log={0: {"image.2": [0, 1], "image.3": [2, 3], "text.5": [0, 1]},
                                         1: {"image.2": [2, 0], "image.3": [1, 0], "text.5": [2, 3]}})
    first = gate_usage.step_report(method, 0)
    assert first["image"] == {"on_frozen": 0.0, "top2": 1.0, "used": 2.0, "gate_norm": round(8 ** 0.5, 3)}
    second = gate_usage.step_report(method, 1)
    # image.2: step 1 put 4 of 10 on experts 0 and 1 (frozen after step 0); image.3: none of its 10 on 2 and 3
    assert second["image"]["on_frozen"] == pytest.approx(0.2)
    assert second["image"]["top2"] == pytest.approx((0.8 + 1.0) / 2)
    assert second["text"] == {"on_frozen": 0.0, "top2": 1.0, "used": 2.0, "gate_norm": round(2 * 8 ** 0.5, 3)}


def test_a_layer_of_no_known_tower_is_refused():
    assert gate_usage.tower_of("image.0") == "image" and gate_usage.tower_of("text.11") == "text"
    with pytest.raises(ValueError, match="tower"):
        gate_usage.tower_of("audio.1")


def test_top_k_stability_is_one_when_the_clean_logits_dominate_and_near_chance_when_the_noise_does():
    torch.manual_seed(0)
    inputs = torch.randn(64, 8)
    strong = torch.randn(8, 6) * 100.0  # clean gaps of hundreds against a noise of softplus(0) + eps = 0.70
    zeros = torch.zeros(8, 6)
    assert gate_usage.top_k_stability(inputs, strong, zeros, 2, noise_epsilon=1e-2) == 1.0
    untrained = gate_usage.top_k_stability(inputs, zeros, zeros, 2, noise_epsilon=1e-2, draws=50)
    assert untrained < 0.2, "a zero gate: the noise picks 2 of 6 experts, 1 in 15 times the clean pair"
    loud_noise = torch.full((8, 6), 0.0)
    loud_noise[0] = 50.0  # the noise scale grows with the input's first coordinate
    noisy = gate_usage.top_k_stability(inputs.abs(), strong * 0.01, loud_noise, 2, noise_epsilon=1e-2)
    assert noisy < gate_usage.top_k_stability(inputs.abs(), strong * 0.01, zeros, 2, noise_epsilon=1e-2)
