"""MoE-Adapters4CL (Yu et al., CVPR 2024): Mixture-of-Experts adapters with one router per task (its MTIL code).

Every selected block of both CLIP encoders gets an :class:`~uniil_lib.adapters.MoEAdapter` (22 experts,
noisy top-2 gating). The experts are shared by all tasks; each task adds its own gate (router) in every
layer. Two methods, trained as the authors' MTIL code runs (``mtil/src/models/finetune.py`` line 182: the loss
is the cross-entropy alone; ``mtil/clip/model.py`` lines 481-483: the balance loss is computed and dropped):

- ``moe-adapters``: the router is chosen by the task identity (task-incremental learning, where
  ``scenario.task_id_at_test`` holds). :func:`~uniil_lib.routers.task_id_route` decides what happens
  without one: a task not learned yet goes to frozen zero-shot CLIP; with no task id at all (class- or
  domain-incremental evaluation) the latest router is used (our fallback).
- ``moe-adapters-ddas``: no task identity. :class:`~uniil_lib.routers.DDAS` picks the router of each test
  image from its frozen CLIP features, or sends it to frozen zero-shot CLIP when it looks unlike every
  learned task (out of distribution).

A step, in order (hooks of :class:`~uniil_lib.methods.adapter.AdapterTuning`):

1. ``before_step``: every MoE layer gets a new, zero-initialised router for this step; the method trains
   that router and every expert not frozen yet (earlier routers and frozen experts stay fixed). DDAS adds
   an (untrained) autoencoder. The trainer calls ``before_step`` again for finished steps when resuming,
   so a checkpoint always finds the routers and autoencoders it holds.
2. ``learn``: the shared loop; loss = cross-entropy with label smoothing. Every layer computes the
   load-balancing loss (``1e-2 (CV^2(importance) + CV^2(load))``) and the method logs its mean per step
   (``balance_log``) without adding it.
3. ``after_learning`` (end of ``learn``): **activate-freeze**: in every layer the ``freeze_per_task`` (2)
   experts this step's router used most during training are frozen for all later steps. DDAS fits this
   step's autoencoder on the step's frozen training features and calibrates its threshold.

Checkpoints (``state_dict``) hold experts, all routers, the usage counters, the frozen masks and, for
DDAS, every autoencoder with its threshold.

The ablations ``moe-adapters-balance`` and ``moe-adapters-ddas-balance`` are the same methods with the
balance loss **added** to the training loss (what this library's baselines did before they followed the
authors' code; kept because the difference is a measured finding about activate-freeze: see
:mod:`uniil_lib.methods.mage`, choice 2). The authors' class-incremental setting is another method,
``moe-adapters-cil`` (:mod:`uniil_lib.methods.moe_adapters_cil`).
"""

from __future__ import annotations

from typing import Callable

import torch

from ..routers import DDAS, ZERO_SHOT, task_id_route
from .adapter import AdapterTuning


class MoEAdapters(AdapterTuning):
    """Shared experts, one router per task chosen by the task id (see the module docstring)."""

    name = "moe-adapters"
    uses_task_id = True
    uses_moe = True

    def __init__(self, clip, scenario, config, **options):
        super().__init__(clip, scenario, config, **options)
        self.frozen_log: dict[int, dict[str, list[int]]] = {}

    def before_step(self, step) -> None:
        router = self.adapters.add_router()
        if router != step.index:
            raise RuntimeError(f"step {step.index} got router {router}: before_step must be called once per "
                               "step, in stream order")
        self.adapters.set_trainable(router)

    def training_route(self, step) -> int:
        return step.index

    def after_learning(self, step) -> None:
        self.frozen_log[step.index] = self.adapters.activate_freeze(step.index)

    def routes(self, n: int, task_id: int | None, features: Callable[[], torch.Tensor]) -> torch.Tensor:
        return torch.full((n,), task_id_route(task_id, self.adapters.num_routers), dtype=torch.long)


class MoEAdaptersDDAS(MoEAdapters):
    """MoE-Adapters with DDAS choosing each test image's router (or zero-shot CLIP); no task identity used.

    Args:
        ddas: the selector (default :class:`~uniil_lib.routers.DDAS` on CLIP's embedding width,
            per-sample decisions).
        **options: as for :class:`~uniil_lib.methods.adapter.AdapterTuning`.
    """

    name = "moe-adapters-ddas"
    uses_task_id = False

    def __init__(self, clip, scenario, config, *, ddas: DDAS | None = None, **options):
        super().__init__(clip, scenario, config, **options)
        self.ddas = ddas or DDAS(self._embedding_width())
        self.ddas_log: dict[int, dict[str, float]] = {}

    def _embedding_width(self) -> int:
        width = getattr(self.clip.model.visual, "output_dim", None)
        if width is None:
            with torch.no_grad():
                width = self.clip.encode_texts(["a"]).shape[-1]
        return int(width)

    def _ddas_seed(self, step) -> int:
        return self.config.seed * 1000 + step.index

    def selector_input(self, features: torch.Tensor) -> torch.Tensor:
        """What DDAS's autoencoders read for frozen CLIP image features ``(N, D)``: the features themselves
        (MAGE may add matched attributes)."""
        return features

    def before_step(self, step) -> None:
        super().before_step(step)
        task = self.ddas.add_task(seed=self._ddas_seed(step))
        if task != step.index:
            raise RuntimeError(f"step {step.index} got DDAS autoencoder {task}; before_step runs once per step")

    def after_learning(self, step) -> None:
        super().after_learning(step)
        features = self.selector_input(self.frozen_features(step.train))
        self.ddas_log[step.index] = self.ddas.fit_task(step.index, features, seed=self._ddas_seed(step))

    def routes(self, n: int, task_id: int | None, features: Callable[[], torch.Tensor]) -> torch.Tensor:
        if not any(ae.fitted for ae in self.ddas.autoencoders):
            return torch.full((n,), ZERO_SHOT, dtype=torch.long)  # nothing learned yet: zero-shot CLIP
        return self.ddas.route(self.selector_input(features()))

    def trainable_parameter_count(self) -> int:
        return super().trainable_parameter_count() + sum(p.numel() for p in self.ddas.parameters())

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = super().state_dict()
        state.update({f"ddas.{k}": v.detach().cpu() for k, v in self.ddas.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        self.ddas.load_state_dict({k[len("ddas."):]: v for k, v in state.items() if k.startswith("ddas.")})


class MoEAdaptersBalance(MoEAdapters):
    """``moe-adapters`` with the load-balancing loss added to the training loss (an ablation; module docstring)."""

    name = "moe-adapters-balance"
    adds_balance_loss = True


class MoEAdaptersDDASBalance(MoEAdaptersDDAS):
    """``moe-adapters-ddas`` with the load-balancing loss added to the training loss (an ablation)."""

    name = "moe-adapters-ddas-balance"
    adds_balance_loss = True
