"""Our MoE layer against MoE-Adapters4CL's block, restated here from its equations (no code of theirs copied).

The authors' block (``JiazuoYu/MoE-Adapters4CL``, ``mtil/clip/model.py``, ``ResidualAttentionBlock``; the same
gate in ``cil/clip/model.py``), written out as equations:

- gate (``noisy_top_k_gating``, lines 429-460): ``c = x_0 W_g``; in training ``s = softplus(x_0 W_n) + 0.01`` and
  ``h = c + eps * s`` with ``eps ~ N(0, 1)``, else ``h = c``; ``G = softmax`` over the ``k`` largest entries of
  ``h``, zero elsewhere;
- load: in training with ``k < E``, ``sum_b P(b, e)`` with ``P = Phi((c - t_in) / s)`` where ``h > t_in`` and
  ``Phi((c - t_out) / s)`` elsewhere, ``t_in`` the ``(k+1)``-th and ``t_out`` the ``k``-th largest entry of ``h``
  (``_prob_in_top_k``, lines 396-427); otherwise the number of inputs with ``G > 0`` (``_gates_to_load``);
- balance loss (lines 481-483): ``0.01 (cv2(sum_b G) + cv2(load))``, ``cv2(v) = var(v) / (mean(v)^2 + 1e-10)``
  with the sample variance (``Tensor.var()``, line 384);
- expert (``mtil/clip/adapter.py``): ``0.1 * (W_up dropout(relu(W_down x + b_down)) + b_up)``;
- combination (``SparseDispatcher``, lines 16-127, and line 511): ``moe(x)_b = sum_e G_be expert_e(x_b)`` over all
  tokens of sample ``b``, added beside the MLP: ``x + mlp(ln_2(x)) + moe(x)`` after ``x = x + attn(ln_1(x))``.
"""

from __future__ import annotations

import math

import open_clip
import pytest
import torch
import torch.nn.functional as F

from uniil_lib.adapters import AdaptedBlock, AdapterConfig, MoEAdapter
from uniil_lib.routers import RoutingContext

WIDTH, TOKENS, BATCH, BOTTLENECK = 16, 5, 7, 8


def reference_gate(x0, w_gate, w_noise, k, eps=None):
    """``(G, load, h)`` of the authors' gate for router inputs ``x0`` ``(B, d)``; ``eps`` ``(B, E)`` or None (no noise)."""
    clean = x0 @ w_gate
    if eps is None:
        noisy, scale = clean, None
    else:
        scale = torch.log1p(torch.exp(x0 @ w_noise)) + 0.01
        noisy = clean + eps * scale
    ranked = noisy.sort(dim=1, descending=True).values
    kth = ranked[:, k - 1 : k]
    chosen = noisy >= kth  # the k largest entries of each row (no ties with continuous values)
    weights = torch.where(chosen, torch.exp(noisy - ranked[:, :1]), torch.zeros_like(noisy))
    gates = weights / weights.sum(dim=1, keepdim=True)
    if eps is not None and k < noisy.shape[1]:
        threshold_in, threshold_out = ranked[:, k : k + 1], kth

        def phi(z):
            return 0.5 * (1 + torch.erf(z / math.sqrt(2)))

        prob = torch.where(noisy > threshold_in, phi((clean - threshold_in) / scale), phi((clean - threshold_out) / scale))
        load = prob.sum(0)
    else:
        load = (gates > 0).sum(0).float()
    return gates, load


def reference_cv2(v):
    n = v.numel()
    mean = v.sum() / n
    return ((v - mean) ** 2).sum() / (n - 1) / (mean**2 + 1e-10)


def reference_moe(x, w_gate, w_noise, experts, k, eps=None):
    """``(moe(x) (B, T, d), balance loss)``: ``experts`` is a list of ``(W_down, b_down, W_up, b_up)``; dropout off."""
    gates, load = reference_gate(x[:, 0], w_gate, w_noise, k, eps)
    outputs = torch.stack([0.1 * (F.relu(x @ wd.T + bd) @ wu.T + bu) for wd, bd, wu, bu in experts], dim=1)  # (B,E,T,d)
    moe = (gates[:, :, None, None] * outputs).sum(dim=1)
    return moe, 0.01 * (reference_cv2(gates.sum(0)) + reference_cv2(load))


def random_weights(n_experts, seed):
    g = torch.Generator().manual_seed(seed)
    w_gate, w_noise = torch.randn(WIDTH, n_experts, generator=g), 0.3 * torch.randn(WIDTH, n_experts, generator=g)
    experts = [(torch.randn(BOTTLENECK, WIDTH, generator=g) / 4, torch.randn(BOTTLENECK, generator=g) / 4,
                torch.randn(WIDTH, BOTTLENECK, generator=g) / 4, torch.randn(WIDTH, generator=g) / 4)
               for _ in range(n_experts)]
    return w_gate, w_noise, experts


def our_layer(n_experts, k, w_gate, w_noise, experts):
    """Our MoEAdapter holding the same weights (one router), dropout off."""
    context = RoutingContext(router=0)
    config = AdapterConfig(num_experts=n_experts, top_k=k, bottleneck=BOTTLENECK, dropout=0.0, dispatch="loop")
    layer = MoEAdapter(WIDTH, context, config, name="image.0")
    layer.add_router()
    with torch.no_grad():
        layer.w_gate[0].copy_(w_gate)
        layer.w_noise[0].copy_(w_noise)
        for expert, (wd, bd, wu, bu) in zip(layer.experts, experts):
            expert.down.weight.copy_(wd)
            expert.down.bias.copy_(bd)
            expert.up.weight.copy_(wu)
            expert.up.bias.copy_(bu)
    return layer, context


SETTINGS = [(22, 2), (2, 2), (6, 3)]  # the MTIL setting, the CIL setting (every input uses both), another k


@pytest.mark.parametrize("n_experts, k", SETTINGS)
def test_outputs_equal_the_reference_block_without_noise(n_experts, k):
    w_gate, w_noise, experts = random_weights(n_experts, seed=n_experts)
    layer, _ = our_layer(n_experts, k, w_gate, w_noise, experts)
    x = torch.randn(BATCH, TOKENS, WIDTH, generator=torch.Generator().manual_seed(1))
    layer.eval()
    with torch.no_grad():
        ours = layer(x)
    expected, _ = reference_moe(x, w_gate, w_noise, experts, k)
    assert torch.allclose(ours, expected, atol=1e-5), f"max difference {(ours - expected).abs().max():.2e}"
    layer.dispatch = "batched"
    with torch.no_grad():
        assert torch.allclose(layer(x), expected, atol=1e-5), "the batched dispatch computes the same"


@pytest.mark.parametrize("n_experts, k", SETTINGS)
def test_noisy_gates_load_and_balance_loss_equal_the_reference_formulas(n_experts, k):
    w_gate, w_noise, experts = random_weights(n_experts, seed=10 + n_experts)
    layer, context = our_layer(n_experts, k, w_gate, w_noise, experts)
    x = torch.randn(BATCH, TOKENS, WIDTH, generator=torch.Generator().manual_seed(2))
    layer.train()
    torch.manual_seed(3)
    with context.recording() as records, torch.no_grad():
        ours = layer(x)
    (balance,) = context.aux_losses
    torch.manual_seed(3)
    eps = torch.randn(BATCH, n_experts)  # the gate's one draw: N(0, 1) per sample and expert
    expected, expected_balance = reference_moe(x, w_gate, w_noise, experts, k, eps)
    expected_gates, _ = reference_gate(x[:, 0], w_gate, w_noise, k, eps)
    assert torch.allclose(records["image.0"], expected_gates, atol=1e-6)
    assert torch.allclose(ours, expected, atol=1e-5)
    assert balance.item() == pytest.approx(expected_balance.item(), rel=1e-5, abs=1e-9)
    assert expected_balance.item() > 0


def test_the_block_adds_the_moe_output_beside_the_mlp():
    block = open_clip.transformer.ResidualAttentionBlock(WIDTH, 2, batch_first=True)
    w_gate, w_noise, experts = random_weights(4, seed=5)
    layer, _ = our_layer(4, 2, w_gate, w_noise, experts)
    adapted = AdaptedBlock(block, layer).eval()
    x = torch.randn(BATCH, TOKENS, WIDTH, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        after_attention = x + block.attention(block.ln_1(x))
        expected = after_attention + block.mlp(block.ln_2(after_attention)) + \
            reference_moe(after_attention, w_gate, w_noise, experts, 2)[0]
        assert torch.allclose(adapted(x), expected, atol=1e-5)
