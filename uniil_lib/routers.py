"""Routers: who decides which experts an input uses, and which task's router an input goes to.

Two levels of routing in MoE-Adapters4CL (Yu et al., CVPR 2024):

1. **Inside an MoE layer**, a gate picks ``k`` of ``E`` experts per input: noisy top-k gating (Shazeer et
   al. 2017, "Outrageously Large Neural Networks", eqs. 3-5) with a load-balancing loss (eqs. 6-11).
   Each task has its own gate: the "router" of that task. :func:`noisy_top_k_gating`, :func:`balance_loss`.
   As in the authors' MTIL code (``mtil/clip/model.py``, ``ResidualAttentionBlock.forward``), every training
   forward computes the balance loss; whether a method adds it to its training loss is the method's choice
   (:attr:`uniil_lib.adapters.AdapterConfig.balance_in_loss`: only the ``*-balance`` ablations do).
2. **Across tasks**, something decides which task's router a test input uses:

   - task-id routing (:func:`task_id_route`): the task identity is given (task-incremental learning,
     ``scenario.task_id_at_test``), so the router of that task is used;
   - DDAS, the Distribution Discriminative Auto-Selector (:class:`DDAS`): no task identity; one small
     autoencoder per task learns to reconstruct that task's frozen CLIP image features; a test input goes to
     the task whose autoencoder reconstructs it best, and to frozen zero-shot CLIP when even that error is
     above the task's threshold (the input is "out of distribution" for every learned task).

:class:`RoutingContext` carries the chosen router into a model's MoE layers (explicitly, per model).

Route values used throughout: an int ``t >= 0`` is the router of task ``t``; :data:`ZERO_SHOT` (``-1``)
means adapters off, frozen CLIP.

DDAS as the authors implement it (``mtil/src/models/AutoEncoder.py`` and ``evaluation_dyn.py``): autoencoders
on ImageNet-AlexNet conv features (43,264 -> 100 -> 43,264, sigmoid, MSE), a fixed threshold 0.0655, a
reference autoencoder trained on TinyImageNet, and one decision per *batch* of 128 test images (the mean
error). Ours: autoencoders on the frozen CLIP image features the library already caches (our choice: no
second network), a threshold *calibrated* per task (the 95th percentile of the reconstruction errors on a
held-out 20% of the task's training features, our choice), and a decision per sample by default
(``mode="per_batch"`` reproduces theirs). No reference autoencoder: the per-task thresholds play its role.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

ZERO_SHOT = -1
ROUTE_MODES = ("per_sample", "per_batch")


# ----- the gate inside an MoE layer -------------------------------------------------------------------
@dataclass
class Gating:
    """What the gate decided for a batch.

    Attributes:
        gates: ``(B, E)``: ``k`` non-zero weights per row, summing to 1 (eq. 3).
        load: ``(E,)``: how many inputs each expert received; in training with noise, Shazeer's smooth
            estimate ``sum_x P(x, i)`` (eqs. 8-10), which is differentiable.
        logits: ``(B, E)``: the clean gate logits ``x W_g``.
    """

    gates: torch.Tensor
    load: torch.Tensor
    logits: torch.Tensor


def noisy_top_k_gating(x: torch.Tensor, w_gate: torch.Tensor, w_noise: torch.Tensor, k: int, *, train: bool,
                       noise_epsilon: float = 1e-2) -> Gating:
    """Noisy top-k gating (Shazeer et al. 2017, eqs. 3-5); noise only when ``train``.

    ``H(x) = x W_g + N(0, 1) * (softplus(x W_noise) + eps)`` (eq. 4; the ``eps`` is the authors' code's),
    ``G(x) = softmax(KeepTopK(H(x), k))`` (eqs. 3, 5). ``torch.topk`` breaks ties among equal logits
    arbitrarily: an untrained, zero-initialised gate at test time sends every input to the same ``k``
    experts, but not necessarily experts 0 and 1.

    Args:
        x: ``(B, d)`` router inputs.
        w_gate, w_noise: ``(d, E)`` gate and noise weights.
        k: experts per input.
        train: add noise (training) or not (evaluation).
        noise_epsilon: floor of the noise scale.
    """
    n_experts = w_gate.shape[1]
    # The gate runs in float32 even under mixed precision: small logit differences decide the experts.
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        clean = x @ w_gate.float()
        if train:
            noise_std = F.softplus(x @ w_noise.float()) + noise_epsilon
            logits = clean + torch.randn_like(clean) * noise_std
        else:
            logits = clean
        top_logits, top_indices = logits.topk(min(k + 1, n_experts), dim=1)
        gates = torch.zeros_like(logits).scatter(1, top_indices[:, :k], torch.softmax(top_logits[:, :k], dim=1))
        if train and k < n_experts:
            load = _prob_in_top_k(clean, logits, noise_std, top_logits, k).sum(0)
        else:
            load = (gates > 0).sum(0).float()
    return Gating(gates, load, clean)


def _prob_in_top_k(clean: torch.Tensor, noisy: torch.Tensor, noise_std: torch.Tensor, top_logits: torch.Tensor,
                   k: int) -> torch.Tensor:
    """``P(x, i)``: the probability that expert ``i`` stays in the top ``k`` when only its own noise is redrawn
    (Shazeer et al. 2017, eqs. 9-10). An expert now in the top k stays there if its noisy logit beats the
    (k+1)-th largest; an expert now out must beat the k-th largest. ``(B, E)``."""
    threshold_if_in = top_logits[:, k : k + 1]
    threshold_if_out = top_logits[:, k - 1 : k]
    normal = torch.distributions.Normal(torch.zeros((), device=clean.device), torch.ones((), device=clean.device))
    prob_if_in = normal.cdf((clean - threshold_if_in) / noise_std)
    prob_if_out = normal.cdf((clean - threshold_if_out) / noise_std)
    return torch.where(noisy > threshold_if_in, prob_if_in, prob_if_out)


def cv_squared(values: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """The squared coefficient of variation ``Var(v) / (mean(v)^2 + eps)``; 0 for one value.

    ``Var`` is the *sample* variance (divides by ``n - 1``), as the authors' ``cv_squared`` computes it with
    ``Tensor.var()`` (``mtil/clip/model.py``, ``ResidualAttentionBlock.cv_squared``); for 22 experts it is
    22/21 of the population variance. Small when ``values`` are even: the load-balancing losses are built from
    it (Shazeer et al. 2017, eqs. 7, 11).
    """
    values = values.float()
    if values.numel() <= 1:
        return values.new_zeros(())
    return values.var(correction=1) / (values.mean() ** 2 + eps)


def balance_loss(gating: Gating, weight: float = 1e-2) -> torch.Tensor:
    """``weight * (CV(Importance)^2 + CV(Load)^2)``, Importance = gates summed over the batch (eqs. 6-7, 11).

    ``weight`` 1e-2 is the authors' factor (``loss *= 1e-2`` in their MTIL block), which computes this value and
    never adds it to the training loss."""
    return weight * (cv_squared(gating.gates.sum(0)) + cv_squared(gating.load))


# ----- routing state -----------------------------------------------------------------------------------
class RoutingContext:
    """The routing state of one model's MoE layers, set by the method and read by the layers.

    Every :class:`MoEAdapter` holds a reference to the context it was attached with, so a method routes
    its own model without touching any other (the authors' code keeps the test-time router in a module
    global, ``val_task_id``, shared by every model in the process).

    Attributes:
        router: the router (task gate) the layers use now; ``None`` switches every MoE adapter off, so the
            model is the frozen CLIP (the zero-shot path of DDAS).
        aux_losses: balance losses the layers computed during the last training forward(s); the method reads
            them (:meth:`pop_aux_loss`), reports them, and adds them to its loss only in the ``*-balance``
            ablations.
        records: when not None, each layer stores its ``(B, E)`` gates here under its name (for plots).
        attributes: ``(B, D_a)`` matched-attribute features of the batch being run, for attribute-guided
            gates (MAGE); set with :meth:`matched`.
        router_inputs: when not None, each layer appends the inputs its gate read here under its name
            (:meth:`collecting`).
    """

    def __init__(self, router: int | None = None):
        self.router = router
        self.aux_losses: list[torch.Tensor] = []
        self.records: dict[str, torch.Tensor] | None = None
        self.attributes: torch.Tensor | None = None
        self.router_inputs: dict[str, list[torch.Tensor]] | None = None

    @contextmanager
    def collecting(self) -> Iterator[dict[str, list[torch.Tensor]]]:
        """Collect what every gate reads during the forwards inside the ``with`` block: ``{layer: [(B, d_in), ...]}``."""
        self.router_inputs = {}
        try:
            yield self.router_inputs
        finally:
            self.router_inputs = None

    @contextmanager
    def matched(self, attributes: torch.Tensor | None) -> Iterator["RoutingContext"]:
        """Attribute-guided gates read ``attributes`` ``(B, D_a)`` inside the ``with`` block (one row per image
        of the batch run there); restored afterwards."""
        previous, self.attributes = self.attributes, attributes
        try:
            yield self
        finally:
            self.attributes = previous

    @contextmanager
    def use(self, router: int | None) -> Iterator["RoutingContext"]:
        """Route with ``router`` (None: adapters off) inside the ``with`` block; restore afterwards."""
        previous, self.router = self.router, router
        try:
            yield self
        finally:
            self.router = previous

    @contextmanager
    def recording(self) -> Iterator[dict[str, torch.Tensor]]:
        """Collect every layer's gates of the forwards run inside the ``with`` block: ``{layer name: (B, E)}``."""
        self.records = {}
        try:
            yield self.records
        finally:
            self.records = None

    def add_aux_loss(self, loss: torch.Tensor) -> None:
        self.aux_losses.append(loss)

    def pop_aux_loss(self) -> torch.Tensor | float:
        """The sum of the collected balance losses (0.0 if none), and forget them."""
        total = torch.stack([l.float() for l in self.aux_losses]).sum() if self.aux_losses else 0.0
        self.aux_losses = []
        return total



# ----- task-id routing -----------------------------------------------------------------------------------
def task_id_route(task_id: int | None, num_routers: int) -> int:
    """The route of a test input whose task identity is ``task_id``, with routers for tasks ``0..num_routers-1``.

    - a learned task: its own router (MoE-Adapters4CL's task-incremental setting);
    - a task not learned yet (``task_id >= num_routers``): :data:`ZERO_SHOT`; no router exists for it, and
      frozen CLIP is what the method would give it (the MTIL "transfer" entries);
    - no task identity (``None``, e.g. class-incremental evaluation): the latest router, our fallback (the
      authors' class-incremental code has one router for all tasks); :data:`ZERO_SHOT` before any task.
    """
    if task_id is None:
        return num_routers - 1 if num_routers else ZERO_SHOT
    if task_id < 0:
        raise ValueError(f"task ids are >= 0, got {task_id}")
    return task_id if task_id < num_routers else ZERO_SHOT


# ----- DDAS ----------------------------------------------------------------------------------------------
class TaskAutoencoder(nn.Module):
    """One task's autoencoder on frozen CLIP image features: ``D -> hidden -> D`` (linear, sigmoid, linear).

    The sigmoid bottleneck follows the authors' autoencoder; the output is linear because CLIP features
    take negative values (theirs reconstruct non-negative ReLU conv features through a sigmoid).
    ``threshold`` is NaN until :meth:`DDAS.fit_task` calibrates it.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.encoder = nn.Linear(dim, hidden)
        self.decoder = nn.Linear(hidden, dim)
        self.register_buffer("threshold", torch.tensor(float("nan")))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.sigmoid(self.encoder(features)))

    def errors(self, features: torch.Tensor) -> torch.Tensor:
        """Per-sample mean squared reconstruction error, ``(N, D) -> (N,)``."""
        return ((self(features) - features) ** 2).mean(dim=1)

    @property
    def fitted(self) -> bool:
        return bool(torch.isfinite(self.threshold))


def fit_autoencoder(autoencoder: TaskAutoencoder, features: torch.Tensor, *, iterations: int = 500,
                    batch_size: int = 256, lr: float = 1e-3, seed: int = 0) -> list[float]:
    """Train ``autoencoder`` to reconstruct ``features`` ``(N, D)`` (MSE, Adam, seeded mini-batches); returns losses."""
    if len(features) == 0:
        raise ValueError("cannot fit an autoencoder on zero features")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=lr)
    losses = []
    autoencoder.train()
    for _ in range(iterations):
        batch = features[torch.randint(len(features), (min(batch_size, len(features)),), generator=generator)]
        loss = F.mse_loss(autoencoder(batch), batch)
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"the DDAS autoencoder's reconstruction loss is {losses[-1]} at iteration "
                                     f"{len(losses)}: its input features hold NaN or infinite values")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    autoencoder.eval()
    return losses


def holdout_split(n: int, fraction: float, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split of ``range(n)`` into (fit, held-out) indices, ``round(fraction * n)`` held out (at least 1)."""
    if n < 2 or not 0 < fraction < 1:
        raise ValueError(f"need n >= 2 and 0 < fraction < 1 to hold out data; got n={n}, fraction={fraction}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = min(n - 1, max(1, round(fraction * n)))
    return order[held:], order[:held]


def calibrate_threshold(errors: torch.Tensor, quantile: float = 0.95) -> float:
    """The out-of-distribution threshold: the ``quantile`` of in-distribution errors (linear interpolation).

    With held-out in-distribution errors and ``quantile=0.95``, about 5% of a task's own test inputs are
    expected above it (and sent to zero-shot CLIP): the price of catching inputs of unseen tasks.
    """
    if errors.numel() == 0 or not 0 < quantile <= 1:
        raise ValueError(f"need errors and 0 < quantile <= 1; got {errors.numel()} errors, quantile={quantile}")
    return float(torch.quantile(errors.detach().float().flatten(), quantile))


def select_routes(errors: torch.Tensor, thresholds: torch.Tensor, *, mode: str = "per_sample",
                  batch_size: int = 128) -> torch.Tensor:
    """DDAS's decision: the task whose autoencoder reconstructs best, or :data:`ZERO_SHOT` if even that is too poor.

    Args:
        errors: ``(N, T)`` reconstruction errors of every sample under every task's autoencoder
            (``inf`` for tasks without a fitted autoencoder).
        thresholds: ``(T,)`` calibrated thresholds.
        mode: ``"per_sample"`` decides each sample on its own errors; ``"per_batch"`` decides each run of
            ``batch_size`` consecutive samples together, on their mean errors (the authors' evaluation).
        batch_size: the run length of ``"per_batch"``.

    Returns:
        ``(N,)`` int64 routes: a task index, or ``ZERO_SHOT`` (-1).
    """
    if mode not in ROUTE_MODES:
        raise ValueError(f"mode must be one of {ROUTE_MODES}, got {mode!r}")
    n, n_tasks = errors.shape
    if n_tasks == 0 or n == 0:
        return torch.full((n,), ZERO_SHOT, dtype=torch.long)
    if mode == "per_batch":
        chunks = errors.split(batch_size)
        means = torch.stack([chunk.mean(dim=0) for chunk in chunks])
        errors = means.repeat_interleave(torch.tensor([len(c) for c in chunks]), dim=0)
    best_error, best = errors.min(dim=1)
    in_distribution = best_error <= thresholds.to(errors)[best]  # False for NaN thresholds and inf errors
    return torch.where(in_distribution, best, torch.full_like(best, ZERO_SHOT))


class DDAS(nn.Module):
    """The Distribution Discriminative Auto-Selector: one :class:`TaskAutoencoder` per task (see the module docstring).

    Args:
        dim: feature dimension ``D`` (CLIP's embedding width).
        hidden: bottleneck width; default ``clamp(D // 4, 4, 100)`` (100 is the authors'; a bottleneck
            as wide as ``D`` would reconstruct anything and detect nothing).
        quantile: threshold quantile of held-out in-distribution errors (0.95).
        holdout: fraction of a task's training features held out for calibration (0.2).
        iterations, batch_size, lr: autoencoder training (Adam).
        mode: default decision mode of :meth:`route` (``"per_sample"`` or ``"per_batch"``).
        decision_batch: run length of ``"per_batch"`` (128, the authors' test batch).
    """

    def __init__(self, dim: int, *, hidden: int | None = None, quantile: float = 0.95, holdout: float = 0.2,
                 iterations: int = 500, batch_size: int = 256, lr: float = 1e-3, mode: str = "per_sample",
                 decision_batch: int = 128):
        super().__init__()
        if mode not in ROUTE_MODES:
            raise ValueError(f"mode must be one of {ROUTE_MODES}, got {mode!r}")
        self.dim, self.hidden = dim, hidden or min(100, max(4, dim // 4))
        self.quantile, self.holdout, self.mode, self.decision_batch = quantile, holdout, mode, decision_batch
        self.iterations, self.batch_size, self.lr = iterations, batch_size, lr
        self.autoencoders = nn.ModuleList()

    @property
    def num_tasks(self) -> int:
        return len(self.autoencoders)

    def add_task(self, *, seed: int = 0) -> int:
        """An untrained autoencoder for a new task (seeded initialisation); returns the task index."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.autoencoders.append(TaskAutoencoder(self.dim, self.hidden))
        return self.num_tasks - 1

    def fit_task(self, task: int, features: torch.Tensor, *, seed: int = 0) -> dict[str, float]:
        """Train task ``task``'s autoencoder on 1 - ``holdout`` of ``features`` ``(N, D)`` and calibrate its
        threshold on the held-out rest. Returns ``{"threshold", "fit_loss", "held_out_error"}``."""
        autoencoder = self.autoencoders[task]
        features = features.detach().float().cpu()
        fit, held = holdout_split(len(features), self.holdout, seed=seed)
        losses = fit_autoencoder(autoencoder, features[fit], iterations=self.iterations,
                                 batch_size=self.batch_size, lr=self.lr, seed=seed)
        with torch.no_grad():
            held_errors = autoencoder.errors(features[held])
            autoencoder.threshold.fill_(calibrate_threshold(held_errors, self.quantile))
        return {"threshold": float(autoencoder.threshold), "fit_loss": losses[-1],
                "held_out_error": float(held_errors.mean())}

    @torch.no_grad()
    def errors(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, T)`` reconstruction errors; ``inf`` in the columns of tasks not fitted yet."""
        features = features.detach().float().cpu()
        columns = [ae.errors(features) if ae.fitted else torch.full((len(features),), float("inf"))
                   for ae in self.autoencoders]
        return torch.stack(columns, dim=1) if columns else torch.empty(len(features), 0)

    def thresholds(self) -> torch.Tensor:
        """``(T,)`` the calibrated thresholds (NaN for tasks not fitted yet)."""
        return torch.stack([ae.threshold for ae in self.autoencoders]) if self.num_tasks else torch.empty(0)

    def route(self, features: torch.Tensor, *, mode: str | None = None) -> torch.Tensor:
        """``(N,)`` routes of ``(N, D)`` frozen CLIP image features (:func:`select_routes`)."""
        return select_routes(self.errors(features), self.thresholds(), mode=mode or self.mode,
                             batch_size=self.decision_batch)


# ----- keeping a shared router's old decisions (MAGE) ------------------------------------------------------
@dataclass
class RouteMemory:
    """What a shared router must remember of one finished step in one layer, without keeping any input.

    Attributes:
        mean, std: ``(d_in,)`` per-dimension mean and standard deviation of the router inputs of the step's
            training images (a diagonal Gaussian summary).
        gate: ``(d_in, E)`` the gate weights at the end of the step.
    """

    mean: torch.Tensor
    std: torch.Tensor
    gate: torch.Tensor

    @classmethod
    def summarise(cls, inputs: torch.Tensor, gate: torch.Tensor) -> "RouteMemory":
        inputs = inputs.detach().float()
        return cls(inputs.mean(0), inputs.std(0, unbiased=False), gate.detach().float().clone())


def routing_drift_loss(memory: RouteMemory, gate: torch.Tensor, samples: int = 32) -> torch.Tensor:
    """How far ``gate`` has moved the routing of a finished step: ``KL(p_old || p_now)`` averaged over
    ``samples`` pseudo router inputs ``z ~ N(mean, diag(std^2))`` of that step, with
    ``p = softmax(z W)`` over all experts (our choice: the full distribution, so top-k ties cannot hide a drift).

    No input of the old step is stored or replayed; only its mean, spread and final gate.
    """
    device = gate.device
    z = memory.mean.to(device) + memory.std.to(device) * torch.randn(samples, memory.mean.numel(), device=device)
    old = torch.log_softmax(z @ memory.gate.to(device), dim=-1)
    now = torch.log_softmax(z @ gate.float(), dim=-1)
    return F.kl_div(now, old, log_target=True, reduction="batchmean")
