"""Adapters and Mixture-of-Experts adapters in CLIP's residual blocks (MoE-Adapters4CL, Yu et al., CVPR 2024).

An **adapter** is a small bottleneck MLP added beside a frozen block (Houlsby et al. 2019; the "parallel
adapter" of He et al. 2022, "Towards a Unified View of Parameter-Efficient Transfer Learning"). A
**Mixture-of-Experts adapter** holds ``E`` such adapters (the experts) and a gate that sends each input to
``k`` of them (Shazeer et al. 2017, "Outrageously Large Neural Networks", noisy top-k gating, eqs. 3-5).
MoE-Adapters4CL puts one MoE adapter in every residual block of both CLIP encoders, in parallel with the
MLP, with one gate (router) per task:

    x = x + attn(ln_1(x))                      # the block's attention, unchanged
    x = x + mlp(ln_2(x)) + moe(x)               # moe reads the post-attention residual stream x

The router input is the token-0 feature of ``x`` (the class token of the ViT; the start-of-text token of
open_clip's causal text transformer, which under the causal mask sees only itself, so text routing does
not depend on the text at all: :func:`text_routing_is_input_independent`).

What is where:

- here: :class:`Adapter` (the expert), :class:`MoEAdapter` (experts + one gate per task, usage counters,
  activate-freeze), :func:`attach_adapters` / :func:`detach_adapters`, which put adapters beside the blocks
  of any open_clip model (the ViT image tower, open_clip's text transformer, a Hugging Face BERT-family
  text tower) and take them out again, restoring the original modules exactly, and :class:`AttachedAdapters`,
  the handle a method works with;
- :mod:`uniil_lib.routers`: the gate itself (noisy top-k gating, the load-balancing loss) and the
  :class:`~uniil_lib.routers.RoutingContext` through which a method tells the layers of *its* model which
  router to use (no module globals: two models in one process route independently);
- :mod:`uniil_lib.tower_split`: running a tower in two halves, for the frozen-block cache.

Where our code follows the authors' (``JiazuoYu/MoE-Adapters4CL``, ``mtil/clip/model.py`` and
``cil/clip/model.py``, ``ResidualAttentionBlock``): the expert, the noisy top-k gate (noise ``softplus(x W_noise)
+ 1e-2``, softmax over the top-k logits only), Shazeer's smooth load estimate in training, the per-sample
dispatch of all tokens, and the load-balancing loss ``1e-2 (CV^2(importance) + CV^2(load))`` with the sample
variance, computed in every training forward and **not added** to the training loss (their MTIL block computes
it into a local variable and drops it; their CIL block does not compute it). ``tests/test_reference_moe.py``
restates their block's equations and checks ours against them. Adding the loss is an ablation with its own
name (``moe-adapters-balance``, ``moe-adapters-ddas-balance``: ``AdapterConfig.balance_in_loss``).

Where our code differs from theirs: usage counters count training forwards of the current task only (theirs
also count every evaluation forward and accumulate over tasks); routing state lives in a
:class:`~uniil_lib.routers.RoutingContext` per model, not in module globals; the gate runs in float32 under
mixed precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence, Union

import open_clip
import torch
import torch.nn as nn
from open_clip.transformer import CustomResidualAttentionBlock, ResidualAttentionBlock

from .routers import RoutingContext, balance_loss, noisy_top_k_gating
from .shim import token_protocol_problem

BlockSpec = Union[str, int, float, Sequence[int]]
IMAGE, TEXT = "image", "text"
DISPATCH_MODES = ("auto", "loop", "batched")


@dataclass(frozen=True)
class AdapterConfig:
    """What to attach and where. Defaults are the MTIL setting of the MoE-Adapters4CL paper and code.

    Attributes:
        moe: True: a Mixture-of-Experts adapter per block; False: one plain :class:`Adapter` per block.
        num_experts: experts per MoE layer (22 in the paper's MTIL code).
        top_k: experts per input (2).
        bottleneck: the adapter's hidden width ``r`` (64).
        dropout: dropout on the adapter's hidden activation (0.1).
        scale: the adapter's output is multiplied by this (0.1).
        noise_epsilon: added to the softplus noise scale of the gate (1e-2, as in the authors' code).
        balance_weight: factor of the load-balancing loss every training forward computes and reports (1e-2,
            the authors'); 0: not computed at all.
        balance_in_loss: add that loss to the training loss (False, as the authors' code runs: it computes
            the loss and drops it). True only in the ``*-balance`` ablations and ``mage-shared``.
        gate_noise_at_eval: the gates stay noisy at evaluation (False). The authors' class-incremental code
            runs that way (``cil/clip/model.py``: each block reads ``is_train`` once, when it is built, while the
            module global is still True), so ``moe-adapters-cil`` sets it.
        freeze_per_task: activate-freeze: after a task, this many most-used experts of every layer are
            frozen for all later tasks (2).
        freeze_coverage: None (the authors' activate-freeze: exactly ``freeze_per_task``), or a share in (0, 1]:
            after a task, every layer freezes its most-used experts until they carry at least this share of the
            task's routing, and never fewer than ``freeze_per_task`` (:meth:`MoEAdapter.freeze_most_used`).
            Our own extension, for MAGE (:mod:`uniil_lib.methods.mage`).
        attribute_dim: MAGE's attribute-guided routers: width of the matched-attribute feature appended to
            every gate's input (0: the gate reads the data feature only, as in MoE-Adapters4CL). The method
            puts that feature into :attr:`RoutingContext.attributes` before each forward.
        freeze_gate_columns: activate-freeze also freezes the gate columns of the frozen experts (their
            logits for any input stay what they were), for methods that keep training one shared router.
        dispatch: how a MoE layer runs its experts (:func:`dispatch_to_experts`): ``"loop"`` (each expert on
            its samples), ``"batched"`` (gathered expert weights, batched matrix products) or ``"auto"``
            (batched on CUDA, loop on the CPU). Both compute the same function.
        image_blocks / text_blocks: which blocks get adapters (:func:`resolve_blocks`): ``"all"``,
            ``"none"``, an int ``k`` (the last ``k`` blocks), a float ``f`` in (0, 1] (the last
            ``ceil(f * L)`` blocks) or explicit indices such as ``range(8, 12)``.
    """

    moe: bool = True
    num_experts: int = 22
    top_k: int = 2
    bottleneck: int = 64
    dropout: float = 0.1
    scale: float = 0.1
    noise_epsilon: float = 1e-2
    balance_weight: float = 1e-2
    balance_in_loss: bool = False
    gate_noise_at_eval: bool = False
    freeze_per_task: int = 2
    freeze_coverage: float | None = None
    attribute_dim: int = 0
    freeze_gate_columns: bool = False
    dispatch: str = "auto"
    image_blocks: BlockSpec = "all"
    text_blocks: BlockSpec = "all"

    def __post_init__(self) -> None:
        if self.dispatch not in DISPATCH_MODES:
            raise ValueError(f"dispatch must be one of {', '.join(DISPATCH_MODES)}, got {self.dispatch!r}")
        if self.moe and not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"need 1 <= top_k <= num_experts, got top_k={self.top_k}, num_experts={self.num_experts}")
        if self.attribute_dim < 0 or (self.attribute_dim and not self.moe):
            raise ValueError(f"attribute_dim must be >= 0 and needs moe=True, got attribute_dim={self.attribute_dim}, "
                             f"moe={self.moe}")
        if self.bottleneck < 1 or not 0 <= self.dropout < 1 or self.balance_weight < 0:
            raise ValueError(f"bad adapter shape: bottleneck={self.bottleneck}, dropout={self.dropout}, "
                             f"balance_weight={self.balance_weight}")
        if self.freeze_per_task < 0:
            raise ValueError(f"freeze_per_task counts experts frozen per layer and step: 0 or more, "
                             f"got {self.freeze_per_task}")
        if self.freeze_coverage is not None and not 0 < self.freeze_coverage <= 1:
            raise ValueError(f"freeze_coverage is a share of a task's routing in (0, 1] (or None: freeze exactly "
                             f"freeze_per_task experts), got {self.freeze_coverage}")
        if self.balance_in_loss and not (self.moe and self.balance_weight > 0):
            raise ValueError("balance_in_loss=True adds the MoE load-balancing loss: it needs moe=True and "
                             f"balance_weight > 0, got moe={self.moe}, balance_weight={self.balance_weight}")


def resolve_blocks(spec: BlockSpec, n_blocks: int) -> tuple[int, ...]:
    """Block indices selected by ``spec`` among ``n_blocks`` (see :class:`AdapterConfig`), sorted.

    Raises:
        ValueError: an index out of range, a negative count, or a spec of another type.
    """
    if isinstance(spec, str):
        if spec not in ("all", "none"):
            raise ValueError(f"block spec string must be 'all' or 'none', got {spec!r}")
        return tuple(range(n_blocks)) if spec == "all" else ()
    if isinstance(spec, bool):
        raise ValueError("block spec must be 'all', 'none', an int, a float or indices, not a bool")
    if isinstance(spec, int):
        if not 0 <= spec <= n_blocks:
            raise ValueError(f"cannot take the last {spec} of {n_blocks} blocks")
        return tuple(range(n_blocks - spec, n_blocks))
    if isinstance(spec, float):
        if not 0 < spec <= 1:
            raise ValueError(f"a fraction of blocks must be in (0, 1], got {spec}")
        return tuple(range(n_blocks - math.ceil(spec * n_blocks), n_blocks))
    indices = sorted({i % n_blocks if -n_blocks <= i < n_blocks else _out_of_range(i, n_blocks) for i in spec})
    return tuple(indices)


def _out_of_range(index: int, n_blocks: int) -> int:
    raise ValueError(f"block index {index} out of range for a tower of {n_blocks} blocks")


# ----- the expert ------------------------------------------------------------------------------------
class Adapter(nn.Module):
    """One adapter (expert): ``x -> scale * up(dropout(relu(down(x))))``, ``d -> r -> d``.

    The down-projection keeps nn.Linear's Kaiming-uniform initialisation; the up-projection and both biases
    start at zero, so a new adapter outputs exactly 0 and the adapted block starts as the frozen block
    (the "lora" initialisation of the authors' ``Adapter``, after He et al. 2022).

    Args:
        width: the residual width ``d``.
        bottleneck: the hidden width ``r``.
        dropout: dropout on the hidden activation.
        scale: output multiplier.
    """

    def __init__(self, width: int, bottleneck: int = 64, *, dropout: float = 0.1, scale: float = 0.1):
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, width)
        self.scale = scale
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., d) -> (..., d)``."""
        return self.scale * self.up(self.dropout(self.act(self.down(x))))

    @staticmethod
    def parameter_count(width: int, bottleneck: int) -> int:
        """``2 d r + r + d``: two weight matrices and two bias vectors."""
        return 2 * width * bottleneck + bottleneck + width


# ----- the MoE layer -----------------------------------------------------------------------------------
class MoEAdapter(nn.Module):
    """``E`` adapter experts and one noisy top-k gate per task (router), in one block.

    The gate reads the token-0 feature of the block's post-attention stream and picks ``k`` experts per
    *sample*; all tokens of that sample go through the same experts (as in the authors' code). With
    ``config.attribute_dim > 0`` (MAGE) the gate reads ``[token-0 feature, matched-attribute feature]``
    (:meth:`router_input`).

    Buffers (part of ``state_dict``, so checkpoints keep them):
        usage: ``(routers, E)`` int64: how many training samples router ``t`` sent to each expert.
        frozen: ``(E,)`` bool: experts frozen by activate-freeze.
        gate_snapshot: ``(routers, d_in, E)``: with ``freeze_gate_columns``, the gate columns of frozen
            experts as they were when frozen (used in place of the live ones).

    Args:
        width: residual width ``d``.
        context: the model's :class:`RoutingContext` (held by reference, shared by all its layers).
        config: sizes, gate and balance settings.
        name: the layer's name in gate records, e.g. ``"image.11"``.
    """

    def __init__(self, width: int, context: RoutingContext, config: AdapterConfig, *, name: str = ""):
        super().__init__()
        self.width, self.name, self.context = width, name, context
        self.top_k, self.noise_epsilon, self.balance_weight = config.top_k, config.noise_epsilon, config.balance_weight
        self.gate_noise_at_eval = config.gate_noise_at_eval
        self.attribute_dim, self.freeze_gate_columns = config.attribute_dim, config.freeze_gate_columns
        self.dispatch = config.dispatch
        self.router_width = width + config.attribute_dim
        self.experts = nn.ModuleList(
            Adapter(width, config.bottleneck, dropout=config.dropout, scale=config.scale)
            for _ in range(config.num_experts)
        )
        self.w_gate = nn.ParameterList()
        self.w_noise = nn.ParameterList()
        self.register_buffer("usage", torch.zeros(0, config.num_experts, dtype=torch.long))
        self.register_buffer("frozen", torch.zeros(config.num_experts, dtype=torch.bool))
        self.register_buffer("gate_snapshot", torch.zeros(0, self.router_width, config.num_experts))

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    @property
    def num_routers(self) -> int:
        return len(self.w_gate)

    def add_router(self) -> int:
        """A new task gate; zero-initialised like Shazeer et al.'s (appendix A) and the authors'. Returns its index."""
        reference = self.experts[0].down.weight
        for params in (self.w_gate, self.w_noise):
            params.append(nn.Parameter(torch.zeros(self.router_width, self.num_experts, device=reference.device,
                                                   dtype=reference.dtype)))
        self.usage = torch.cat([self.usage, self.usage.new_zeros(1, self.num_experts)])
        self.gate_snapshot = torch.cat([self.gate_snapshot, self.gate_snapshot.new_zeros(1, *self.gate_snapshot.shape[1:])])
        return self.num_routers - 1

    def router_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the gate reads: the token-0 feature ``(B, d)``; with attribute-guided routing (MAGE) the
        concatenation ``[x_0, s * a]`` ``(B, d + D_a)``, ``a`` the matched-attribute feature from the
        context and ``s`` the mean norm of ``x_0`` (detached), so both halves enter the gate at the same scale
        (our choice: the residual stream's norm grows with depth, ``a`` is unit-norm)."""
        token = x[:, 0]
        if not self.attribute_dim:
            return token
        attributes = self.context.attributes
        if attributes is None:
            raise RuntimeError(f"{self.name or 'MoE layer'}: attribute-guided routing needs the matched-attribute "
                               "features in RoutingContext.attributes (use context.matched(features))")
        if attributes.shape != (len(token), self.attribute_dim):
            raise ValueError(f"{self.name or 'MoE layer'}: attribute features have shape {tuple(attributes.shape)}, "
                             f"expected ({len(token)}, {self.attribute_dim})")
        scale = token.detach().float().norm(dim=-1).mean()
        return torch.cat([token, (scale * attributes).to(token)], dim=-1)

    def gate_weights(self, router: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w_gate, w_noise)`` of ``router``; frozen experts' columns from the snapshot when those are frozen."""
        w_gate, w_noise = self.w_gate[router], self.w_noise[router]
        if self.freeze_gate_columns and bool(self.frozen.any()):
            keep = self.frozen.view(1, -1)
            w_gate = torch.where(keep, self.gate_snapshot[router].to(w_gate), w_gate)
        return w_gate, w_noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, d)`` post-attention stream -> ``(B, T, d)`` MoE output (zeros when routing is off)."""
        router = self.context.router
        if router is None:
            return torch.zeros_like(x)
        if not 0 <= router < self.num_routers:
            raise IndexError(f"{self.name or 'MoE layer'}: router {router} does not exist ({self.num_routers} "
                             "routers); add one per task with add_router()")
        w_gate, w_noise = self.gate_weights(router)
        inputs = self.router_input(x)
        if self.context.router_inputs is not None:
            self.context.router_inputs.setdefault(self.name, []).append(inputs.detach().float().cpu())
        gating = noisy_top_k_gating(inputs, w_gate, w_noise, self.top_k, train=self.training or self.gate_noise_at_eval,
                                    noise_epsilon=self.noise_epsilon)
        if self.training:
            with torch.no_grad():
                self.usage[router] += (gating.gates > 0).sum(0)
            if self.balance_weight > 0:  # reported to the method, which adds it only if balance_in_loss
                self.context.add_aux_loss(balance_loss(gating, self.balance_weight))
        if self.context.records is not None:
            self.context.records[self.name] = gating.gates.detach()
        batched = self.dispatch == "batched" or (self.dispatch == "auto" and x.is_cuda)
        if batched:
            return dispatch_batched(self.experts, gating.gates, x, self.top_k)
        return dispatch_to_experts(self.experts, gating.gates, x)

    def set_trainable(self, router: int | None) -> None:
        """Train the gate of ``router`` (None: no gate) and every expert that activate-freeze has not frozen."""
        for index, (gate, noise) in enumerate(zip(self.w_gate, self.w_noise)):
            gate.requires_grad_(index == router)
            noise.requires_grad_(index == router)
        for expert, frozen in zip(self.experts, self.frozen.tolist()):
            expert.requires_grad_(not frozen)

    def freeze_most_used(self, router: int, n: int, counts: torch.Tensor | None = None,
                         coverage: float | None = None) -> list[int]:
        """Activate-freeze (MoE-Adapters4CL): freeze the ``n`` experts ``router`` used most; returns them.

        Which experts: :func:`most_used_experts` (ties to the lower index; ``coverage``, our extension,
        :attr:`AdapterConfig.freeze_coverage`). An expert already frozen stays frozen, so a task that mostly
        reused frozen experts freezes fewer than ``n`` new ones. ``counts`` ``(E,)`` replaces ``usage[router]``
        (a shared router's usage during one step only).
        """
        chosen = most_used_experts(self.usage[router] if counts is None else counts, n, coverage)
        newly = [e for e in chosen if not bool(self.frozen[e])]
        if self.freeze_gate_columns and newly:
            with torch.no_grad():
                for r in range(self.num_routers):
                    self.gate_snapshot[r][:, newly] = self.w_gate[r][:, newly].detach().to(self.gate_snapshot)
        self.frozen[chosen] = True
        for index in chosen:
            self.experts[index].requires_grad_(False)
        return sorted(chosen)


def most_used_experts(counts: torch.Tensor, n: int, coverage: float | None = None) -> list[int]:
    """The experts activate-freeze picks from one task's usage ``counts`` ``(E,)``, most used first.

    MoE-Adapters4CL (Yu et al., CVPR 2024, Sec. 3.3) freezes the ``n`` most-used experts. With ``coverage``
    (our extension, :attr:`AdapterConfig.freeze_coverage`) the next most-used expert is added until the chosen
    ones carry at least that share of the counts, never fewer than ``n`` and never an expert that was not used.
    Ties go to the lower index (a stable sort; ``torch.topk`` breaks ties arbitrarily). A pure function of the
    counters, so a run's frozen experts can be replayed from a checkpoint's saved usage
    (``benchmarks/mage_frozen_replay.py``).
    """
    order = torch.argsort(counts, descending=True, stable=True)
    n = max(n, 0)
    if coverage is not None and float(counts.sum()) > 0:
        carried = torch.cumsum(counts[order].double(), 0) / counts.sum().double()
        n = max(n, min(int((carried < coverage - 1e-9).sum()) + 1, int((counts > 0).sum())))
    return order[:n].tolist()


def dispatch_to_experts(experts: nn.ModuleList, gates: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sum_e gates[b, e] * expert_e(x[b])``, running each expert only on the samples routed to it.

    Args:
        experts: ``E`` modules mapping ``(n, T, d) -> (n, T, d)``.
        gates: ``(B, E)`` sparse gate weights.
        x: ``(B, T, d)``.
    """
    rows, chosen = gates.nonzero(as_tuple=True)
    order = chosen.argsort(stable=True)
    rows, chosen = rows[order], chosen[order]
    counts = torch.bincount(chosen, minlength=len(experts)).tolist()
    out = torch.zeros_like(x)
    for expert, (e, part) in zip(experts, enumerate(rows.split(counts))):
        if part.numel():
            weight = gates[part, e].to(x.dtype).view(-1, 1, 1)
            out = out.index_add(0, part, (weight * expert(x[part])).to(out.dtype))
    return out


def dispatch_batched(experts: nn.ModuleList, gates: torch.Tensor, x: torch.Tensor, top_k: int) -> torch.Tensor:
    """The same sum as :func:`dispatch_to_experts`, as a fixed handful of batched matrix products.

    The loop above launches a few small kernels per expert and reads the routing back to the host
    (``tolist``), which on a GPU leaves it waiting on launches and synchronisations: 22 experts in 24 layers
    make thousands of tiny kernels per step. Here each sample gathers the weights of its ``top_k`` experts
    from the stacked expert parameters and runs them with two batched products; the work (FLOPs) is the same,
    the kernel count no longer grows with ``E`` and nothing waits for the host. Gradients reach each expert's
    own parameters through the stack and the gather. Needs experts of one shape (:class:`Adapter`).

    Args:
        experts: ``E`` :class:`Adapter` modules of one shape.
        gates: ``(B, E)`` gate weights with at most ``top_k`` non-zeros per row.
        x: ``(B, T, d)``.
        top_k: non-zeros per row of ``gates``.
    """
    weights, chosen = gates.topk(top_k, dim=1)  # (B, k): zero-weight picks contribute nothing
    first = experts[0]
    down_w = torch.stack([e.down.weight for e in experts])[chosen]  # (B, k, r, d)
    down_b = torch.stack([e.down.bias for e in experts])[chosen]  # (B, k, r)
    up_w = torch.stack([e.up.weight for e in experts])[chosen]  # (B, k, d, r)
    up_b = torch.stack([e.up.bias for e in experts])[chosen]  # (B, k, d)
    hidden = torch.einsum("btd,bkrd->bktr", x, down_w.to(x.dtype)) + down_b.unsqueeze(2).to(x.dtype)
    hidden = first.dropout(first.act(hidden))
    expert_out = torch.einsum("bktr,bkdr->bktd", hidden, up_w.to(hidden.dtype)) + up_b.unsqueeze(2).to(hidden.dtype)
    return first.scale * torch.einsum("bk,bktd->btd", weights.to(expert_out.dtype), expert_out)


# ----- blocks with a side module -----------------------------------------------------------------------
class _SwapBatchAndTokens(nn.Module):
    """``(T, B, d) <-> (B, T, d)``, for open_clip transformers built with ``batch_first=False``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1)


class AdaptedBlock(nn.Module):
    """An open_clip ``ResidualAttentionBlock`` with ``side`` in parallel with its MLP (the paper's layout):

        x = x + ls_1(attn(ln_1(x)))
        x = x + ls_2(mlp(ln_2(x))) + side(x)

    ``side`` sees ``(B, T, d)`` whatever the block's layout; the original block is kept as ``.block``.
    """

    def __init__(self, block: nn.Module, side: nn.Module, *, batch_first: bool = True):
        super().__init__()
        self.block = block
        self.side = side
        self.layout = nn.Identity() if batch_first else _SwapBatchAndTokens()

    def attention_residual(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        block = self.block
        return x + block.ls_1(block.attention(q_x=block.ln_1(x), attn_mask=attn_mask))

    def forward(self, q_x: torch.Tensor, k_x: torch.Tensor | None = None, v_x: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if k_x is not None or v_x is not None:
            raise NotImplementedError("adapters support self-attention blocks only, not cross-attention")
        x = self.attention_residual(q_x, attn_mask)
        block = self.block
        return x + block.ls_2(block.mlp(block.ln_2(x))) + self.layout(self.side(self.layout(x)))

    def get_weight_dtype(self) -> torch.dtype:
        """open_clip asks the first block for the weights' dtype (``Transformer.get_cast_dtype``)."""
        return self.block.get_weight_dtype()


class AdaptedCustomBlock(AdaptedBlock):
    """The same for open_clip's ``CustomResidualAttentionBlock`` (its attention has an extra norm)."""

    def attention_residual(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        block = self.block
        return x + block.ls_1(block.ln_attn(block.attn(block.ln_1(x), attn_mask=attn_mask)))


class AdaptedBertOutput(nn.Module):
    """A BERT-family layer's output sublayer with ``side`` in parallel with the feed-forward network.

    BERT is post-norm: ``out = LayerNorm(dropout(dense(ffn_hidden)) + a)`` with ``a`` the attention
    output. Our reading of "in parallel with the MLP" for it: ``out = LayerNorm(dropout(dense(ffn_hidden)) +
    a + side(a))``, the adapter added inside the residual sum before the norm (He et al. 2022's parallel
    adapter); adding after the norm would feed un-normalised values to the next layer. ``side`` reads
    ``a``, so the router input is the [CLS] token of the attention output, which under BERT's bidirectional
    attention depends on the whole text (unlike open_clip's causal text tower).
    """

    def __init__(self, output: nn.Module, side: nn.Module):
        super().__init__()
        missing = [name for name in ("dense", "dropout", "LayerNorm") if not hasattr(output, name)]
        if missing:
            raise TypeError(f"{type(output).__name__} is not a BERT-style output sublayer (lacks {missing})")
        self.output = output
        self.side = side

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        out = self.output
        return out.LayerNorm(out.dropout(out.dense(hidden_states)) + input_tensor + self.side(input_tensor))


# ----- finding the towers --------------------------------------------------------------------------------
@dataclass
class Tower:
    """The residual blocks of one encoder of an open_clip model.

    Attributes:
        name: ``"image"`` or ``"text"``.
        owner: the module holding the block list (``blocks = getattr(owner, attr)``).
        attr: ``"resblocks"`` (open_clip) or ``"layer"`` (Hugging Face BERT encoder).
        kind: ``"open_clip"`` or ``"bert"``.
        width: residual width.
        batch_first: open_clip blocks see ``(B, T, d)`` (True) or ``(T, B, d)``.
        causal: the tower's attention is causal, so token 0 sees only itself.
    """

    name: str
    owner: nn.Module
    attr: str
    kind: str
    width: int
    batch_first: bool = True
    causal: bool = False

    @property
    def blocks(self) -> nn.ModuleList:
        return getattr(self.owner, self.attr)


def find_towers(model: nn.Module) -> dict[str, Tower]:
    """The towers of ``model`` that have residual transformer blocks: ``{"image": ..., "text": ...}``.

    Image: an open_clip ``VisionTransformer`` or a tower following the token-tower protocol
    (:class:`uniil_lib.shim.TokenImageTower`), both as ``model.visual.transformer.resblocks``. Text: open_clip's
    own transformer (``model.transformer.resblocks`` in ``CLIP``, ``model.text.transformer.resblocks`` in
    ``CustomTextCLIP``) or a Hugging Face BERT-family tower (``model.text.transformer.encoder.layer``).
    Towers of other kinds (ResNets, timm models, other HF architectures) are left out.
    """
    towers = {}
    visual = getattr(model, "visual", None)
    if isinstance(visual, open_clip.transformer.VisionTransformer) or token_protocol_problem(visual) is None:
        blocks = visual.transformer
        towers[IMAGE] = Tower(IMAGE, blocks, "resblocks", "open_clip", blocks.width, blocks.batch_first)
    text = getattr(model, "text", None)
    if isinstance(model, open_clip.CLIP):
        blocks = model.transformer
        towers[TEXT] = Tower(TEXT, blocks, "resblocks", "open_clip", blocks.width, blocks.batch_first,
                             causal=model.attn_mask is not None)
    elif isinstance(text, open_clip.transformer.TextTransformer):
        blocks = text.transformer
        towers[TEXT] = Tower(TEXT, blocks, "resblocks", "open_clip", blocks.width, blocks.batch_first,
                             causal=text.attn_mask is not None)
    elif isinstance(text, open_clip.hf_model.HFTextEncoder) and hasattr(getattr(text.transformer, "encoder", None),
                                                                        "layer"):
        towers[TEXT] = Tower(TEXT, text.transformer.encoder, "layer", "bert", text.config.hidden_size,
                             causal=bool(getattr(text.config, "is_decoder", False)))
    return towers


def text_routing_is_input_independent(model: nn.Module) -> bool:
    """True when the text router input (token 0) cannot depend on the text: open_clip's causal text tower.

    Under a causal mask the start-of-text token attends only to itself, and the MLP and adapters act per
    token, so its feature at every layer is the same for every prompt: every prompt takes the same experts.
    A BERT-style tower (bidirectional) routes its [CLS] token, which sees the whole text.
    """
    tower = find_towers(model).get(TEXT)
    if tower is None:
        raise ValueError(f"{type(model).__name__} has no text tower with residual blocks")
    return tower.causal


# ----- attach and detach ---------------------------------------------------------------------------------
def attach_adapters(model: nn.Module, config: AdapterConfig, *,
                    context: RoutingContext | None = None) -> "AttachedAdapters":
    """Put an adapter (or MoE adapter) beside each selected residual block of ``model``; the model changes in place.

    Right after attaching, the model computes exactly what it computed before (every up-projection is 0).

    Args:
        model: an open_clip ``CLIP`` / ``CustomTextCLIP``.
        config: what to attach and in which blocks.
        context: the routing context the MoE layers read (a new one if None; unused by plain adapters).

    Returns:
        an :class:`AttachedAdapters` handle (layers, parameters, routers, ``detach()``).

    Raises:
        ValueError: blocks requested in a tower the model lacks, or adapters already attached.
    """
    towers = find_towers(model)
    context = context or RoutingContext()
    layers: dict[str, nn.Module] = {}
    for name, spec in ((IMAGE, config.image_blocks), (TEXT, config.text_blocks)):
        if name not in towers:
            if spec not in ("none", 0, ()):
                raise ValueError(f"{type(model).__name__} has no {name} tower of residual transformer blocks "
                                 f"that adapters fit; pass {name}_blocks='none'")
            continue
        tower = towers[name]
        # Attribute-guided gates (MAGE) exist only in the image tower: the matched attributes belong to images.
        side_config = config if name == IMAGE else replace(config, attribute_dim=0)
        for index in resolve_blocks(spec, len(tower.blocks)):
            layer_name = f"{name}.{index}"
            layers[layer_name] = _wrap_block(tower, index, _make_side(side_config, tower.width, context, layer_name))
    return AttachedAdapters(model, config, context, layers, towers)


def _make_side(config: AdapterConfig, width: int, context: RoutingContext, name: str) -> nn.Module:
    if config.moe:
        return MoEAdapter(width, context, config, name=name)
    return Adapter(width, config.bottleneck, dropout=config.dropout, scale=config.scale)


def _wrap_block(tower: Tower, index: int, side: nn.Module) -> nn.Module:
    block = tower.blocks[index]
    reference = next(block.parameters())
    side.to(device=reference.device, dtype=reference.dtype if reference.is_floating_point() else None)
    side.train(block.training)  # a model in eval mode gets adapters in eval mode (no gate noise, no dropout)
    if tower.kind == "bert":
        if isinstance(block.output, AdaptedBertOutput):
            raise ValueError(f"{tower.name} block {index} already has an adapter; call detach_adapters first")
        block.output = AdaptedBertOutput(block.output, side)
        return side
    if isinstance(block, AdaptedBlock):
        raise ValueError(f"{tower.name} block {index} already has an adapter; call detach_adapters first")
    if isinstance(block, CustomResidualAttentionBlock):
        tower.blocks[index] = AdaptedCustomBlock(block, side, batch_first=tower.batch_first)
    elif isinstance(block, ResidualAttentionBlock):
        tower.blocks[index] = AdaptedBlock(block, side, batch_first=tower.batch_first)
    else:
        raise TypeError(f"{tower.name} block {index} is a {type(block).__name__}; adapters fit open_clip "
                        "(Custom)ResidualAttentionBlock and BERT-style layers")
    return side


def detach_adapters(model: nn.Module) -> int:
    """Take every adapter out of ``model``, putting the original block modules back; returns how many."""
    removed = 0
    for tower in find_towers(model).values():
        for index, block in enumerate(tower.blocks):
            if tower.kind == "bert" and isinstance(block.output, AdaptedBertOutput):
                block.output = block.output.output
            elif isinstance(block, AdaptedBlock):
                tower.blocks[index] = block.block
            else:
                continue
            removed += 1
    return removed


@dataclass
class AttachedAdapters:
    """What :func:`attach_adapters` put into a model, and what can be done with it.

    Attributes:
        model: the adapted model.
        config: the attach config.
        context: the routing context of its MoE layers.
        layers: ``{"image.11": layer, "text.3": layer, ...}`` the side modules, image blocks first.
        towers: the model's towers (:func:`find_towers`).
    """

    model: nn.Module
    config: AdapterConfig
    context: RoutingContext
    layers: dict[str, nn.Module]
    towers: dict[str, Tower] = field(default_factory=dict)

    def moe_layers(self) -> list[MoEAdapter]:
        return [layer for layer in self.layers.values() if isinstance(layer, MoEAdapter)]

    def parameters(self) -> list[nn.Parameter]:
        """Every parameter the adapters added (experts and all routers)."""
        return [p for layer in self.layers.values() for p in layer.parameters()]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_counts(self) -> dict[str, int]:
        """``{"experts": ..., "gates": ..., "total": ...}`` scalar parameters added to the model.

        Per MoE layer of width ``d``: ``E (2 d r + r + d)`` in experts and ``2 d E`` per router (gate and
        noise weights); a plain adapter has ``2 d r + r + d``.
        """
        gates = sum(p.numel() for layer in self.moe_layers() for p in (*layer.w_gate, *layer.w_noise))
        total = sum(p.numel() for p in self.parameters())
        return {"experts": total - gates, "gates": gates, "total": total}

    def blocks_of(self, tower: str) -> list[int]:
        """Indices of the adapted blocks of ``tower`` (``"image"`` / ``"text"``), ascending."""
        return sorted(int(name.split(".")[1]) for name in self.layers if name.startswith(tower + "."))

    def add_router(self) -> int:
        """A new task gate in every MoE layer; returns its index (the same in all layers)."""
        indices = {layer.add_router() for layer in self.moe_layers()}
        if len(indices) > 1:
            raise RuntimeError(f"MoE layers disagree on the router count: {sorted(indices)}")
        return indices.pop() if indices else 0

    @property
    def num_routers(self) -> int:
        layers = self.moe_layers()
        return layers[0].num_routers if layers else 0

    def set_trainable(self, router: int | None) -> None:
        """Train the gate of ``router`` and every unfrozen expert; plain adapters are always trained."""
        for layer in self.layers.values():
            if isinstance(layer, MoEAdapter):
                layer.set_trainable(router)
            else:
                layer.requires_grad_(True)

    def activate_freeze(self, router: int, n: int | None = None,
                        counts: dict[str, torch.Tensor] | None = None) -> dict[str, list[int]]:
        """Freeze the ``n`` (default ``config.freeze_per_task``) experts ``router`` used most, in every layer.
        ``counts`` ``{layer name: (E,)}`` replaces the routers' usage counters (see :meth:`MoEAdapter.freeze_most_used`)."""
        n = self.config.freeze_per_task if n is None else n
        return {layer.name: layer.freeze_most_used(router, n, None if counts is None else counts[layer.name],
                                                    coverage=self.config.freeze_coverage)
                for layer in self.moe_layers()}

    def usage(self, tower: str) -> torch.Tensor:
        """``(adapted blocks, routers, E)`` expert-usage counts of ``tower``, for heatmaps."""
        return torch.stack([self.layers[f"{tower}.{i}"].usage.cpu() for i in self.blocks_of(tower)])

    def train(self, mode: bool = True) -> None:
        """Train/eval mode of the adapters only (dropout, gate noise, usage counting)."""
        for layer in self.layers.values():
            layer.train(mode)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Experts, gates, usage counters and frozen masks, keyed ``"<layer>.<tensor>"``."""
        return {f"{name}.{key}": value
                for name, layer in self.layers.items() for key, value in layer.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load :meth:`state_dict` output; the routers must already exist (:meth:`add_router` per task)."""
        for name, layer in self.layers.items():
            prefix = name + "."
            layer.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
            if isinstance(layer, MoEAdapter):
                for expert, frozen in zip(layer.experts, layer.frozen.tolist()):
                    expert.requires_grad_(expert.down.weight.requires_grad and not frozen)

    def detach(self) -> int:
        """Remove the adapters from the model (see :func:`detach_adapters`)."""
        return detach_adapters(self.model)
