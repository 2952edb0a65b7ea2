"""Adapter tuning: frozen CLIP with small trainable adapters beside its blocks.

The ``adapter`` method puts one plain adapter (:class:`uniil_lib.adapters.Adapter`) beside each selected
block of both encoders and trains the same adapters on every step in turn, with nothing to protect
earlier steps: the parameter-efficient counterpart of ``finetune``, and the baseline MoE-Adapters4CL
starts from ("w/o MoE" in the authors' code). :class:`AdapterTuning` holds what ``adapter``,
``moe-adapters`` and ``moe-adapters-ddas`` share:

- **Training** uses CLIP's own objective, cross-entropy over the scaled cosine similarities between the
  image embedding and the class-prompt embeddings of the step's label space (each class's first prompt),
  with the profile's label smoothing. The MoE layers compute the load-balancing loss in every training
  forward; it is logged per step (:attr:`AdapterTuning.balance_log`) and added to the loss only by the
  methods whose name says so (``*-balance``; :attr:`AdapterTuning.adds_balance_loss`). The CLIP weights stay
  frozen and in evaluation mode (no dropout in frozen layers, e.g. MiniLM's; our choice); only the
  adapters are in training mode.
- **Evaluation** uses every prompt of a class (prompt ensemble), like ``finetune``. Each test image
  gets a *route* (:meth:`AdapterTuning.routes`): a router index, or ``ZERO_SHOT`` (adapters off, the
  image is scored by frozen CLIP from the feature cache).
- **The frozen-block cache.** When the image tower's adapters sit only in its top blocks ``[s, L)``, the
  blocks below never change and training sees every image unaugmented, so their output for an image is
  always the same: the method keeps it (:class:`~uniil_lib.tower_split.FrozenBlockCache`) and runs only the
  top blocks. The text tower gets the same treatment for the fixed class prompts of a step, and for the class
  prompts of evaluation over the whole stream (:meth:`AdapterTuning.encode_prompts`). How a tower is split is
  :mod:`uniil_lib.tower_split`; attaching the adapters is :mod:`uniil_lib.adapters`.

Layout (:func:`default_adapter_config`): where the adapters go is a profile setting,
:attr:`~uniil_lib.train_config.TrainConfig.adapter_placement`, not a property of the device, so one method name
builds one model on any hardware: ``"top-quarter"`` (the fast and cpu profiles: the last quarter of each tower,
so the frozen-block cache skips the rest) or ``"all"`` (every block of both towers, MoE-Adapters4CL's layout: the
full profile). The benchmark records it with every result (:meth:`AdapterTuning.run_report`).
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Callable, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import distributed
from ..adapters import IMAGE, TEXT, AdapterConfig, AttachedAdapters, attach_adapters
from ..clip import class_prompt_weights
from ..clip_model import encode_text, trim_padding
from ..features import image_features
from ..pixels import iterate_batches
from ..routers import ZERO_SHOT
from ..tower_split import (DEFAULT_CACHE_BUDGET, FrozenBlockCache, block_input, image_split_problem, image_suffix,
                           run_blocks_from)
from .base import ContinualMethod

EVAL_TEXT_PREFIX_BYTES = 256 * 2**20  # the most memory the frozen text blocks' kept evaluation output takes


def default_adapter_config(placement: str, *, moe: bool) -> AdapterConfig:
    """The adapters of a placement (:attr:`~uniil_lib.train_config.TrainConfig.adapter_placement`): ``"all"``, the
    paper's layout (every block of both towers); ``"top-quarter"``, the last quarter of each tower (``ceil(L / 4)``
    blocks, at least one), so the frozen-block cache can skip the other three quarters."""
    if placement == "all":
        return AdapterConfig(moe=moe)
    if placement == "top-quarter":
        return AdapterConfig(moe=moe, image_blocks=0.25, text_blocks=0.25)
    raise ValueError(f"adapter placement must be 'top-quarter' or 'all', got {placement!r}")


# ----- the shared method -------------------------------------------------------------------------------
class AdapterTuning(ContinualMethod):
    """Frozen CLIP + adapters; the base of ``adapter``, ``moe-adapters`` and ``moe-adapters-ddas``.

    Subclasses choose ``uses_moe`` and ``adds_balance_loss`` and override the routing hooks:
    :meth:`training_route` (the router a step trains), :meth:`routes` (the route of each test image) and
    :meth:`after_learning` (what happens at the end of a step, e.g. activate-freeze).

    Attributes:
        balance_log: ``{step index: mean over the step's training batches of the summed load-balancing
            losses of all MoE layers}`` (x ``balance_weight``), whether or not the method adds them to its
            loss. Not kept in checkpoints: a resumed run logs the steps it trains.

    Args:
        clip, scenario, config: as for every method.
        adapters: what to attach and where (default :func:`default_adapter_config`).
        block_cache: the frozen-block cache: ``"auto"`` (image cache on when the image tower's lowest
            adapted block is above block 0 and the tower can be split; text prefix reuse on), ``True``
            (on, or an error saying why not), ``False`` (off for both towers: the plain full forward).
        cache_budget_bytes: memory the cache may keep.
    """

    name: ClassVar[str] = "adapter-tuning"
    uses_moe: ClassVar[bool] = False
    adds_balance_loss: ClassVar[bool] = False

    def __init__(self, clip, scenario, config, *, adapters: AdapterConfig | None = None,
                 block_cache: bool | str = "auto", cache_budget_bytes: int = DEFAULT_CACHE_BUDGET):
        super().__init__(clip, scenario, config)
        clip.model.requires_grad_(False)
        self.adapter_config = adapters or self.default_adapters(config.adapter_placement)
        self._check_adapter_config(self.adapter_config)
        self.balance_log: dict[int, float] = {}
        self._step_balance: list[torch.Tensor] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.adapters: AttachedAdapters = attach_adapters(clip.model, self.adapter_config)
        self.context = self.adapters.context
        self.cache = self._build_cache(block_cache, cache_budget_bytes)
        self.text_prefix_cache = block_cache is not False
        self._train_on_cache = False
        self._text_prefix: tuple[tuple[str, ...], torch.Tensor] | None = None
        self._eval_text: dict[tuple, torch.Tensor] = {}
        self._eval_text_prefix: dict[tuple[str, ...], torch.Tensor] = {}  # frozen text blocks' output, evaluation
        self._eval_text_prefix_bytes = 0
        self._frozen_text: dict[tuple, torch.Tensor] = {}

    def default_adapters(self, placement: str) -> AdapterConfig:
        """The adapter layout this method uses when none is given (:func:`default_adapter_config`)."""
        return replace(default_adapter_config(placement, moe=self.uses_moe),
                       balance_in_loss=self.adds_balance_loss and self.uses_moe)

    def _check_adapter_config(self, config: AdapterConfig) -> None:
        if config.moe != self.uses_moe:
            raise ValueError(f"{self.name} needs AdapterConfig(moe={self.uses_moe})")
        if self.uses_moe and config.balance_in_loss != self.adds_balance_loss:
            raise ValueError(f"{self.name} {'adds' if self.adds_balance_loss else 'does not add'} the load-balancing "
                             f"loss, but the AdapterConfig says balance_in_loss={config.balance_in_loss}; pass "
                             f"balance_in_loss={self.adds_balance_loss}, or use the method whose name matches "
                             "(moe-adapters / moe-adapters-balance, moe-adapters-ddas / moe-adapters-ddas-balance)")

    def _build_cache(self, block_cache: bool | str, budget: int) -> FrozenBlockCache | None:
        if block_cache not in (True, False, "auto"):
            raise ValueError(f"block_cache must be True, False or 'auto', got {block_cache!r}")
        problem = image_split_problem(self.clip.model.visual)
        if block_cache is True and problem:
            raise ValueError(f"cannot use the frozen-block cache: {problem}")
        if block_cache is False or problem:
            return None
        adapted = self.adapters.blocks_of(IMAGE)
        start = adapted[0] if adapted else len(self.adapters.towers[IMAGE].blocks)
        if start == 0:
            return None
        return FrozenBlockCache(self.clip, start, budget_bytes=budget, batch_size=self.config.eval_batch_size,
                                loader=self.loader)

    # ----- routing hooks (subclasses) ----------------------------------------------------------------
    def training_route(self, step) -> int:
        """The router step ``step`` trains (plain adapters ignore it)."""
        return 0

    def routes(self, n: int, task_id: int | None, features: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``(N,)`` route per test image: a router index or ``ZERO_SHOT``. ``features()`` gives their frozen
        CLIP features if a router needs them. Plain adapters: always on."""
        return torch.zeros(n, dtype=torch.long)

    def after_learning(self, step) -> None:
        """Called at the end of :meth:`learn` (activate-freeze, DDAS fitting)."""

    def attribute_features(self, imageset) -> torch.Tensor | None:
        """``(N, D_a)`` matched-attribute features that attribute-guided gates read for ``imageset`` (MAGE);
        None here: the gates read the data feature only."""
        return None

    def batch_attributes(self, features: Callable[[], torch.Tensor]) -> torch.Tensor | None:
        """``(B, D_a)`` matched-attribute features, on the model's device, of a pixel batch whose frozen CLIP
        features ``features()`` gives (MAGE); None here."""
        return None

    # ----- images --------------------------------------------------------------------------------------
    def image_inputs(self, imageset, *, keep: bool) -> tuple[object, bool]:
        """Cached block inputs ``(N, T, d)`` if the cache holds them, else the image set's
        :class:`~uniil_lib.pixels.PixelSource` (pixels made batch by batch); and which of the two."""
        if self.cache is not None:
            hidden = self.cache.hidden(imageset, keep=keep)
            if hidden is not None:
                return hidden, True
        return self.pixels(imageset), False

    def encode_image_inputs(self, inputs: torch.Tensor, cached: bool) -> torch.Tensor:
        """Normalised image embeddings ``(B, D)`` from pixels or cached block inputs."""
        if cached:
            features = image_suffix(self.clip.model.visual, inputs.to(self.clip.device, non_blocking=True),
                                    self.cache.start)
            return F.normalize(features, dim=-1)
        return self.clip.encode_images(inputs)

    def frozen_features(self, imageset) -> torch.Tensor:
        """Frozen-CLIP image features ``(N, D)`` (adapters off), from the on-disk feature cache."""
        if not self.uses_moe:
            raise RuntimeError("plain adapters cannot be switched off; frozen features need an MoE method")
        with self.context.use(None):
            return image_features(self.clip, imageset, batch_size=self.config.eval_batch_size,
                                  progress=self.config.progress, loader=self.loader)

    # ----- text ----------------------------------------------------------------------------------------
    def encode_prompts(self, prompts: Sequence[str], *, reuse_prefix: bool) -> torch.Tensor:
        """``(P, D)`` normalised text embeddings under the current route.

        The text blocks below the first adapted one are frozen, so their output for the same prompts never
        changes; unless the method was built with ``block_cache=False``, they run once and later calls start
        from their kept output (:func:`~uniil_lib.tower_split.run_blocks_from`, the same numbers as the full forward):
        with ``reuse_prefix`` (training: the same prompts every batch of a step) for the current step; without it
        (evaluation: a class's prompts are scored again after every step and under every route) for the method's
        lifetime, chunk by chunk, in fp32 only (under autocast the blocks' input dtype depends on the caller) and up to
        :data:`EVAL_TEXT_PREFIX_BYTES`.
        """
        tower, adapted = self.adapters.towers.get(TEXT), self.adapters.blocks_of(TEXT)
        if tower is None or not adapted:
            return self._frozen_prompts(tuple(prompts))
        tokens = self.tokenize(prompts)
        evaluation_cache = not reuse_prefix and self.config.precision() == "fp32"
        if not self.text_prefix_cache or adapted[0] == 0 or not (reuse_prefix or evaluation_cache):
            return F.normalize(encode_text(self.clip.model, tokens), dim=-1)
        key = tuple(prompts)
        if reuse_prefix:
            if self._text_prefix is None or self._text_prefix[0] != key:
                self._text_prefix = (key, self._text_block_input(tower, adapted[0], tokens))
            hidden = self._text_prefix[1]
        else:
            hidden = self._eval_text_prefix.get(key)
            if hidden is None:
                hidden = self._text_block_input(tower, adapted[0], tokens)
                if self._eval_text_prefix_bytes + hidden.nbytes <= EVAL_TEXT_PREFIX_BYTES:
                    self._eval_text_prefix[key] = hidden
                    self._eval_text_prefix_bytes += hidden.nbytes
        with run_blocks_from(tower, adapted[0], hidden):
            return F.normalize(encode_text(self.clip.model, tokens), dim=-1)

    @torch.no_grad()
    def _text_block_input(self, tower, start: int, tokens: torch.Tensor) -> torch.Tensor:
        """What text block ``start`` receives for ``tokens`` (the frozen blocks below it run, the rest do not)."""
        return block_input(tower, start, lambda: encode_text(self.clip.model, tokens))

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """Token ids on the model's device; trailing all-padding columns dropped for a BERT text tower."""
        tokens = self.clip.tokenizer(list(prompts))
        tower = self.adapters.towers.get(TEXT)
        if tower is not None and tower.kind == "bert":
            tokens = trim_padding(tokens, self.clip.model.text.config.pad_token_id)
        return tokens.to(self.clip.device)

    @torch.no_grad()
    def _frozen_prompts(self, prompts: tuple[str, ...]) -> torch.Tensor:
        # No text adapters: the text tower is frozen and its embeddings never change.
        if prompts not in self._frozen_text:
            self._frozen_text[prompts] = F.normalize(encode_text(self.clip.model, self.tokenize(prompts)), dim=-1)
        return self._frozen_text[prompts]

    @torch.no_grad()
    def class_text(self, class_ids: Sequence[int], route: int) -> torch.Tensor:
        """``(C, D)`` prompt-ensemble class embeddings under ``route`` (cached until the weights change)."""
        key = (route, tuple(class_ids))
        if key not in self._eval_text:
            prompts = [self.class_prompts(c) for c in class_ids]
            encode = lambda chunk: self.encode_prompts(chunk, reuse_prefix=False)  # noqa: E731
            with self.context.use(None if route == ZERO_SHOT else route):
                self._eval_text[key] = class_prompt_weights(encode, prompts, batches=self.config.eval_batch_size)
        return self._eval_text[key]

    # ----- training ----------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return self.adapters.trainable_parameters()

    def trainable_parameter_count(self) -> int:
        """Every parameter the method added and trained over the stream: all adapters and routers."""
        return sum(p.numel() for p in self.adapters.parameters())

    def step_inputs(self, step) -> tuple[torch.Tensor, torch.Tensor]:
        # Cached block inputs for this step only (keep=False): they are not needed after the step.
        inputs, self._train_on_cache = self.image_inputs(step.train, keep=False)
        return inputs, torch.as_tensor(step.train.labels)

    def class_prompts(self, class_id: int) -> tuple[str, ...]:
        """The prompts of a class: the first one in training, all of them (an ensemble) at evaluation."""
        return self.scenario.classes[class_id].prompts

    def training_loss(self, inputs: torch.Tensor, labels: torch.Tensor, step) -> torch.Tensor:
        """Cross-entropy (with the profile's label smoothing); + the MoE balance losses of this forward only
        when :attr:`adds_balance_loss` (they are logged in :attr:`balance_log` either way)."""
        self.clip.model.eval()  # frozen CLIP: no dropout; only the adapters train
        self.adapters.train(True)
        class_ids, targets = self.candidate_targets(labels, step)
        prompts = [self.class_prompts(c)[0] for c in class_ids]
        with self.context.use(self.training_route(step)):
            self.context.pop_aux_loss()  # forget losses of forwards outside training
            image = self.encode_image_inputs(inputs, self._train_on_cache)
            text = self.encode_prompts(prompts, reuse_prefix=True)
            logits = self.clip.logit_scale * image @ text.T
            loss = self.cross_entropy(logits, targets)
            balance = self.context.pop_aux_loss()
        if torch.is_tensor(balance):
            self._step_balance.append(balance.detach())
            if self.adapter_config.balance_in_loss:
                loss = loss + balance
        return loss

    def learn(self, step) -> None:
        """The shared loop of :class:`~uniil_lib.methods.base.ContinualMethod`, then :meth:`after_learning`.

        Under ``torchrun`` the step's expert-usage counts of all ranks are summed first, so every rank freezes
        the experts the whole batch used most (:mod:`uniil_lib.distributed`)."""
        self._eval_text.clear()
        self._step_balance = []
        usage_before = {layer.name: layer.usage.clone() for layer in self.adapters.moe_layers()}
        super().learn(step)
        self._sum_usage_over_ranks(usage_before)
        if self._step_balance:
            world = distributed.current()
            self.balance_log[step.index] = world.weighted_mean(float(torch.stack(self._step_balance).mean()),
                                                               1.0 / world.size)
        self._step_balance = []
        self._eval_text.clear()
        self._text_prefix = None
        self.after_learning(step)

    def _sum_usage_over_ranks(self, usage_before: dict[str, torch.Tensor]) -> None:
        """Add the other ranks' usage counts of this step to every layer's counters (nothing in one process)."""
        world = distributed.current()
        if not world.active:
            return
        for layer in self.adapters.moe_layers():
            before = usage_before[layer.name]
            counted = layer.usage[: len(before)] - before
            layer.usage[: len(before)] = before + world.sum_(counted.to(layer.usage.device))

    def run_report(self) -> dict:
        """The adapter layout: the profile's placement and the blocks of each tower that carry adapters."""
        return {"adapter_placement": self.config.adapter_placement,
                "adapter_blocks": {tower: self.adapters.blocks_of(tower) for tower in self.adapters.towers}}

    # ----- evaluation --------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, imageset, class_ids: Sequence[int], task_id: int | None, *,
                route: int | None = None) -> np.ndarray:
        """Predicted global class ids ``(N,)``: each route's images scored by its model, argmax over ``class_ids``.

        ``route`` sends every image through that router (:data:`~uniil_lib.routers.ZERO_SHOT`: frozen CLIP)
        instead of the method's choice (:meth:`routes`): e.g. an old step's own router, the oracle a selector
        such as DDAS is measured against."""
        self.clip.model.eval()
        routers = max(self.adapters.num_routers, 1)  # plain adapters: one route, 0
        if route is not None and not (route == ZERO_SHOT or 0 <= route < routers):
            raise ValueError(f"route {route} names no router: this model's routes are 0 to {routers - 1}, "
                             f"or {ZERO_SHOT} for frozen zero-shot CLIP")
        routes = (self.routes(len(imageset), task_id, lambda: self.frozen_features(imageset)) if route is None
                  else torch.full((len(imageset),), route, dtype=torch.long))
        ids = torch.as_tensor(list(class_ids))
        predicted = torch.empty(len(imageset), dtype=torch.long)
        for each_route in routes.unique().tolist():
            rows = (routes == each_route).nonzero(as_tuple=True)[0]
            with self.config.autocast_context():
                scores = self._route_scores(imageset, rows, class_ids, each_route)
            predicted[rows] = ids[scores.argmax(dim=1).cpu()]
        return predicted.numpy()

    def _route_scores(self, imageset, rows: torch.Tensor, class_ids: Sequence[int], route: int) -> torch.Tensor:
        text = self.class_text(class_ids, route)
        if route == ZERO_SHOT:
            return self.frozen_features(imageset)[rows].to(text) @ text.T
        inputs, cached = self.image_inputs(imageset, keep=True)
        attributes = self.attribute_features(imageset)
        parts = [part.tolist() for part in rows.split(self.config.eval_batch_size)]
        scores = []
        with self.context.use(route):
            for part, batch in zip(parts, iterate_batches(inputs, parts, self.loader)):
                with self.context.matched(None if attributes is None else attributes[part].to(self.clip.device)):
                    scores.append(self.encode_image_inputs(batch, cached) @ text.T)
        return torch.cat(scores)

    @torch.no_grad()
    def logits(self, pixels: torch.Tensor, class_ids: Sequence[int], task_id: int | None) -> torch.Tensor:
        """``(B, C)`` scaled cosine logits of a pixel batch (full forward; :meth:`predict` is the fast path):
        each image routed by :meth:`routes`, its gates given :meth:`batch_attributes`."""
        self.clip.model.eval()
        pixels = pixels.to(self.clip.device)
        with self.context.use(None):
            frozen = functools.cache(lambda: self.clip.encode_images(pixels).float().cpu())
            routes = self.routes(len(pixels), task_id, frozen)
            attributes = self.batch_attributes(frozen)
        out = torch.empty(len(pixels), len(class_ids), device=self.clip.device)
        for route in routes.unique().tolist():
            rows = (routes == route).nonzero(as_tuple=True)[0].to(self.clip.device)
            with self.context.use(None if route == ZERO_SHOT else route), \
                    self.context.matched(None if attributes is None else attributes[rows]):
                out[rows] = self.clip.encode_images(pixels[rows]) @ self.class_text(class_ids, route).T
        return self.clip.logit_scale * out

    # ----- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Adapters: experts, routers, usage counters, frozen masks (``adapters.<layer>.<tensor>``)."""
        return {f"adapters.{k}": v.detach().cpu() for k, v in self.adapters.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.adapters.load_state_dict({k[len("adapters."):]: v for k, v in state.items() if k.startswith("adapters.")})
        self._eval_text.clear()


class AdapterMethod(AdapterTuning):
    """One plain adapter per selected block of both towers, trained on every step in turn, no routing."""

    name = "adapter"
    uses_moe = False
