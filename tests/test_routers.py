"""Routers: noisy top-k gating, the load-balancing loss, task-id routing and DDAS, on hand-made inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from uniil_lib.adapters import AdapterConfig, MoEAdapter
from uniil_lib.routers import (
    DDAS, ZERO_SHOT, Gating, RoutingContext, balance_loss, calibrate_threshold, cv_squared, holdout_split,
    noisy_top_k_gating, select_routes, task_id_route,
)


def random_gate(batch=16, width=8, experts=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, width, generator=generator), torch.randn(width, experts, generator=generator),
            torch.randn(width, experts, generator=generator))


@pytest.mark.parametrize("k", [1, 2, 3, 6])
@pytest.mark.parametrize("train", [False, True])
def test_top_k_gating_picks_exactly_k_experts_whose_gates_sum_to_one(k, train):
    x, w_gate, w_noise = random_gate()
    gating = noisy_top_k_gating(x, w_gate, w_noise, k, train=train)
    assert gating.gates.shape == (16, 6)
    assert ((gating.gates > 0).sum(dim=1) == k).all(), "every sample must use exactly k experts"
    assert torch.allclose(gating.gates.sum(dim=1), torch.ones(16))
    assert gating.load.shape == (6,)


def test_noise_only_in_training():
    x, w_gate, w_noise = random_gate()
    first = noisy_top_k_gating(x, w_gate, w_noise, 2, train=False)
    second = noisy_top_k_gating(x, w_gate, w_noise, 2, train=False)
    assert torch.equal(first.gates, second.gates)
    top = (x @ w_gate).topk(2, dim=1)
    expected = torch.zeros(16, 6).scatter(1, top.indices, F.softmax(top.values, dim=1))
    assert torch.allclose(first.gates, expected), "evaluation gates are softmax over the clean top-k logits"
    assert torch.equal(first.load, (first.gates > 0).sum(0).float()), "evaluation load counts the samples"

    torch.manual_seed(0)
    noisy = noisy_top_k_gating(x, w_gate, w_noise, 2, train=True)
    torch.manual_seed(1)
    other = noisy_top_k_gating(x, w_gate, w_noise, 2, train=True)
    assert not torch.equal(noisy.gates, other.gates), "training gates are noisy"
    assert noisy.load.requires_grad is False and not torch.equal(noisy.load, noisy.load.round()), \
        "training load is Shazeer's smooth estimate, not a count"


def test_cv_squared_and_balance_loss_on_a_hand_computed_case():
    assert cv_squared(torch.tensor([3.0])) == 0
    assert cv_squared(torch.tensor([2.0, 2.0, 2.0])) == 0
    # The sample variance (divide by n - 1), as the authors' Tensor.var():
    # importance [1, 1, 0, 0]: mean 0.5, variance 4 * 0.25 / 3 = 1/3 -> CV^2 = 4/3
    # load [2, 2, 0, 0]: mean 1, variance 4 / 3 -> CV^2 = 4/3; loss = 1e-2 * 8/3
    gates = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    loss = balance_loss(Gating(gates, torch.tensor([2.0, 2.0, 0.0, 0.0]), gates), weight=1e-2)
    assert loss.item() == pytest.approx(0.08 / 3)
    assert cv_squared(torch.tensor([1.0, 3.0])).item() == pytest.approx(2.0 / 4.0), "variance 2 (n - 1 = 1), mean 2"
    even = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]])
    assert balance_loss(Gating(even, torch.ones(4), even)).item() == pytest.approx(0.0)


def moe_gradients(balance_weight: float, *, with_aux: bool):
    torch.manual_seed(0)
    context = RoutingContext(router=0)
    layer = MoEAdapter(8, context, AdapterConfig(num_experts=4, top_k=2, bottleneck=4, dropout=0.0,
                                                 balance_weight=balance_weight))
    layer.add_router()
    with torch.no_grad():
        for expert in layer.experts:
            expert.up.weight.normal_()
    x = torch.randn(6, 3, 8, generator=torch.Generator().manual_seed(1))
    layer.train()
    torch.manual_seed(2)  # the same gate noise in every call
    loss = layer(x).square().mean()
    loss = loss + context.pop_aux_loss() if with_aux else loss
    return torch.autograd.grad(loss, [layer.w_gate[0], layer.w_noise[0]])


def test_balance_loss_changes_gradients_only_when_enabled():
    plain = moe_gradients(1e-2, with_aux=False)
    balanced = moe_gradients(1e-2, with_aux=True)
    assert not torch.allclose(plain[1], balanced[1]), "an enabled balance loss must reach the noise weights"
    off = moe_gradients(0.0, with_aux=True)
    assert all(torch.equal(a, b) for a, b in zip(off, plain)), "a disabled balance loss must change nothing"


def test_task_id_route():
    assert task_id_route(1, 3) == 1
    assert task_id_route(3, 3) == ZERO_SHOT, "a task not learned yet has no router: zero-shot CLIP"
    assert task_id_route(None, 3) == 2, "no task id: the latest router"
    assert task_id_route(None, 0) == ZERO_SHOT
    with pytest.raises(ValueError):
        task_id_route(-2, 3)


def test_threshold_is_the_quantile_of_held_out_errors():
    assert calibrate_threshold(torch.arange(101.0) / 100, 0.95) == pytest.approx(0.95)
    fit, held = holdout_split(50, 0.2, seed=3)
    assert len(held) == 10 and len(fit) == 40 and not set(fit.tolist()) & set(held.tolist())
    with pytest.raises(ValueError):
        holdout_split(1, 0.2)


def test_select_routes_per_sample_and_per_batch():
    errors = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.9, 0.7], [0.2, 0.8]])
    thresholds = torch.tensor([0.3, 0.3])
    assert select_routes(errors, thresholds).tolist() == [0, 1, ZERO_SHOT, 0]
    # per batch of 2: means [0.45, 0.55] -> task 0 but above its threshold; [0.55, 0.75] -> too
    assert select_routes(errors, thresholds, mode="per_batch", batch_size=2).tolist() == [ZERO_SHOT] * 4
    # per batch of 4 with a looser threshold: means [0.5, 0.65] -> everything to task 0
    assert select_routes(errors, torch.tensor([0.6, 0.6]), mode="per_batch", batch_size=4).tolist() == [0] * 4
    unfitted = torch.tensor([0.3, float("nan")])
    assert select_routes(errors, unfitted).tolist() == [0, ZERO_SHOT, ZERO_SHOT, 0]
    with pytest.raises(ValueError, match="mode"):
        select_routes(errors, thresholds, mode="per_task")


def clustered_features(centre: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    noise = 0.05 * torch.randn(n, len(centre), generator=torch.Generator().manual_seed(seed))
    return F.normalize(centre + noise, dim=-1)


@pytest.fixture(scope="module")
def fitted_ddas():
    dim = 16
    centres = torch.eye(dim)[:3]  # task A, task B, and a far-away out-of-distribution cluster
    ddas = DDAS(dim, hidden=4, iterations=300, lr=1e-2)
    reports = []
    for task, centre in enumerate(centres[:2]):
        ddas.add_task(seed=task)
        reports.append(ddas.fit_task(task, clustered_features(centre, 200, seed=task), seed=task))
    tests = [clustered_features(centre, 40, seed=10 + k) for k, centre in enumerate(centres)]
    return ddas, reports, tests


def test_ddas_routes_each_sample_to_its_task_or_to_zero_shot(fitted_ddas):
    ddas, reports, (a, b, far) = fitted_ddas
    assert ddas.num_tasks == 2 and all(r["threshold"] > 0 for r in reports)
    assert (ddas.route(a) == 0).float().mean() >= 0.85
    assert (ddas.route(b) == 1).float().mean() >= 0.85
    assert (ddas.route(far) == ZERO_SHOT).all(), "features of no learned task go to zero-shot CLIP"

    mixed = torch.cat([a[:10], b[:10], far[:10]])
    per_sample = ddas.route(mixed)
    per_batch = ddas.route(mixed, mode="per_batch")
    assert (per_sample[:10] == 0).sum() >= 8 and (per_sample[20:] == ZERO_SHOT).all()
    assert (per_batch == per_batch[0]).all(), "one decision for the whole batch of 30 (< 128)"
    assert not torch.equal(per_batch, per_sample)


def test_ddas_threshold_is_calibrated_on_held_out_training_features():
    features = clustered_features(torch.eye(8)[0], 100, seed=0)
    ddas = DDAS(8, hidden=2, iterations=50)
    ddas.add_task(seed=5)
    report = ddas.fit_task(0, features, seed=5)
    _, held = holdout_split(100, 0.2, seed=5)
    with torch.no_grad():
        expected = torch.quantile(ddas.autoencoders[0].errors(features[held]), 0.95)
    assert report["threshold"] == pytest.approx(float(expected), rel=1e-6)
    assert ddas.thresholds().tolist() == pytest.approx([float(expected)], rel=1e-6)
