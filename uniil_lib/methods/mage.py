"""MAGE, the Mixture of Attribute-Guided Experts (Meng et al., Uni-IL, MMAsia 2025): our reading of the abstract.

The paper's code is not released; the abstract says: an LLM-generated **attribute pool** holds class and
domain knowledge; the **most relevant attributes are matched** to each input and fed, with the data
feature, to the **routers of a Mixture of Experts** that fine-tunes CLIP; the routers learn to select expert
combinations from the data and attribute features; no task identity is needed, so one model handles task,
class and domain increments (Uni-IL). Everything below that the abstract does not fix is **our choice**:

1. **Experts** are MoE-Adapters4CL's (:class:`~uniil_lib.adapters.MoEAdapter`: 22 adapter experts, noisy
   top-2 gating, load-balancing loss), in the image tower only (the CPU default: its top quarter, so the
   frozen-block cache applies). The text tower stays frozen: class prompts and attributes are embedded by
   frozen CLIP, so the classifier of old classes never drifts.
2. **One router per layer for the whole stream** (there is no task identity to pick a per-task router).
   Its input is ``[x_0, s a_cls, s a_dom]`` (:meth:`~uniil_lib.adapters.MoEAdapter.router_input`):
   ``x_0`` the block's token-0 feature (the data feature), ``a_cls`` / ``a_dom`` the matched class and
   domain attribute features, ``s`` the mean norm of ``x_0``.
3. **Matching** (:meth:`~uniil_lib.attributes.AttributeBank.summarise`): with the frozen CLIP image feature
   ``f`` of an image, ``a_cls`` is the renormalised mean of the ``k_cls`` (5) class-attribute embeddings
   closest to ``f`` in cosine similarity, among the attributes of classes seen so far; ``a_dom`` likewise
   with ``k_dom`` (3) domain attributes of the domains seen so far. Attributes of classes and domains not
   seen yet are never used (the stream has not revealed them).
4. **Against forgetting**: activate-freeze after every step (the ``freeze_per_task`` experts this step used
   most are frozen in every layer, as in MoE-Adapters4CL) and, because the router keeps training, the gate
   columns of frozen experts are frozen with them (``AdapterConfig.freeze_gate_columns``): an old input
   that the router sent to frozen experts keeps those experts' logits.
5. **Training objective**: CLIP's cross-entropy over all classes seen so far (the Uni-IL label space) plus the
   balance loss; no replay, no distillation.

``mage-noattr`` is the ablation the issue asks for: the same method whose routers read ``x_0`` only.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import torch

from ..adapters import AdapterConfig
from ..attributes import AttributeBank, AttributePool, load_shipped_pool, scenario_vocabulary
from ..routers import ZERO_SHOT
from .adapter import AdapterTuning, default_adapter_config


class RoutedInputs:
    """Image inputs (pixels or cached block inputs) with their matched-attribute features, indexed together.

    The shared training loop indexes ``inputs[batch]`` and calls ``.to(device)``; this keeps each image's
    attribute feature next to it without the loop knowing about attributes.
    """

    def __init__(self, images: torch.Tensor, attributes: torch.Tensor | None):
        self.images, self.attributes = images, attributes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index) -> "RoutedInputs":
        return RoutedInputs(self.images[index], None if self.attributes is None else self.attributes[index])

    def to(self, device) -> "RoutedInputs":
        return RoutedInputs(self.images.to(device), None if self.attributes is None else self.attributes.to(device))


def mage_adapter_config(device: str, attribute_dim: int) -> AdapterConfig:
    """MAGE's layout: image tower only (all blocks on a GPU, the top quarter on a CPU), one shared router whose
    frozen experts keep their gate columns, attribute features of width ``attribute_dim`` in the gate input."""
    base = default_adapter_config(device, moe=True)
    return replace(base, text_blocks="none", attribute_dim=attribute_dim, freeze_gate_columns=True)


class MAGE(AdapterTuning):
    """Mixture of Attribute-Guided Experts (see the module docstring for every choice).

    Args:
        pool: the attribute pool (default: the shipped pool, restricted to the scenario's classes and domains).
        class_attributes, domain_attributes: ``k_cls`` and ``k_dom``, attributes matched per image.
        **options: as for :class:`~uniil_lib.methods.adapter.AdapterTuning`.
    """

    name = "mage"
    uses_moe = True
    uses_task_id = False
    use_attributes = True

    def __init__(self, clip, scenario, config, *, pool: AttributePool | None = None, class_attributes: int = 5,
                 domain_attributes: int = 3, adapters: AdapterConfig | None = None, **options):
        width = clip.encode_texts(["a"]).shape[-1]
        adapters = adapters or mage_adapter_config(config.device, 2 * width if self.use_attributes else 0)
        super().__init__(clip, scenario, config, adapters=adapters, **options)
        self.class_attributes, self.domain_attributes = class_attributes, domain_attributes
        classes, domains = scenario_vocabulary(scenario)
        self.pool = (pool or load_shipped_pool()).pool_for(classes, domains)
        self.bank = AttributeBank.build(clip, self.pool) if self.use_attributes else None
        self.seen_classes: list[str] = []
        self.seen_domains: list[str] = []
        self.adapters.add_router()
        self.adapters.set_trainable(0)
        self._usage_at_start: dict[str, torch.Tensor] = {}
        self.frozen_log: dict[int, dict[str, list[int]]] = {}

    # ----- the stream reveals classes and domains ------------------------------------------------------
    def before_step(self, step) -> None:
        names = [self.scenario.classes[c].name for c in step.class_ids]
        self.seen_classes = list(dict.fromkeys([*self.seen_classes, *names]))
        self.seen_domains = list(dict.fromkeys([*self.seen_domains, step.domain]))
        self._usage_at_start = {layer.name: layer.usage[0].clone() for layer in self.adapters.moe_layers()}

    def training_route(self, step) -> int:
        return 0

    def routes(self, n: int, task_id: int | None, features: Callable[[], torch.Tensor]) -> torch.Tensor:
        # One router for everything (the attributes do the rest); before the first step, frozen CLIP.
        return torch.full((n,), 0 if self.seen_classes else ZERO_SHOT, dtype=torch.long)

    def after_learning(self, step) -> None:
        used = {layer.name: layer.usage[0] - self._usage_at_start[layer.name] for layer in self.adapters.moe_layers()}
        self.frozen_log[step.index] = self.adapters.activate_freeze(0, counts=used)

    # ----- matched attributes -----------------------------------------------------------------------
    def match(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(router attributes (B, 2D), class-attribute rows (B, k_cls), domain-attribute rows (B, k_dom))`` of
        frozen CLIP image features, among the attributes of the classes and domains seen so far."""
        bank = self.bank
        class_feature, class_rows = bank.summarise(features, bank.mask("class", self.seen_classes),
                                                   self.class_attributes)
        domain_feature, domain_rows = bank.summarise(features, bank.mask("domain", self.seen_domains),
                                                     self.domain_attributes)
        return torch.cat([class_feature, domain_feature], dim=-1), class_rows, domain_rows

    def attribute_features(self, imageset) -> torch.Tensor | None:
        """``(N, 2D)`` router attribute features of every image of ``imageset`` (None for ``mage-noattr``)."""
        if not self.use_attributes:
            return None
        return self.match(self.frozen_features(imageset))[0]

    def matched_texts(self, imageset, rows: Sequence[int]) -> list[tuple[list[str], list[str]]]:
        """For showing: ``(class attributes, domain attributes)`` matched to images ``rows`` of ``imageset``."""
        features = self.frozen_features(imageset)[torch.as_tensor(list(rows))]
        _, class_rows, domain_rows = self.match(features)
        return [([self.bank.texts[a] for a in c], [self.bank.texts[a] for a in d])
                for c, d in zip(class_rows.tolist(), domain_rows.tolist())]

    # ----- training and evaluation with attributes in the routing context ------------------------------
    def step_inputs(self, step) -> tuple[RoutedInputs, torch.Tensor]:
        images, labels = super().step_inputs(step)
        return RoutedInputs(images, self.attribute_features(step.train)), labels

    def training_loss(self, inputs: RoutedInputs, labels: torch.Tensor, step) -> torch.Tensor:
        with self.context.matched(inputs.attributes):
            return super().training_loss(inputs.images, labels, step)

    def _route_scores(self, imageset, rows: torch.Tensor, class_ids: Sequence[int], route: int) -> torch.Tensor:
        if route == ZERO_SHOT:
            return super()._route_scores(imageset, rows, class_ids, route)
        text = self.class_text(class_ids, route)
        inputs, cached = self.image_inputs(imageset, keep=True)
        attributes = self.attribute_features(imageset)
        scores = []
        with self.context.use(route):
            for part in rows.split(self.config.eval_batch_size):
                with self.context.matched(None if attributes is None else attributes[part].to(self.clip.device)):
                    scores.append(self.encode_image_inputs(inputs[part], cached) @ text.T)
        return torch.cat(scores)

    @torch.no_grad()
    def logits(self, pixels: torch.Tensor, class_ids: Sequence[int], task_id: int | None) -> torch.Tensor:
        self.clip.model.eval()
        pixels = pixels.to(self.clip.device)
        if not self.seen_classes:
            return super().logits(pixels, class_ids, task_id)
        attributes = None
        if self.use_attributes:
            with self.context.use(None):
                attributes = self.match(self.clip.encode_images(pixels).float().cpu())[0].to(self.clip.device)
        with self.context.use(0), self.context.matched(attributes):
            return self.clip.logit_scale * self.clip.encode_images(pixels) @ self.class_text(class_ids, 0).T

    @torch.no_grad()
    def gate_records(self, imageset, rows: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """``{layer name: (N, E)}`` the gates each image of ``imageset`` (or ``rows`` of it) gets now (for plots)."""
        rows = torch.arange(len(imageset)) if rows is None else torch.as_tensor(list(rows))
        inputs, cached = self.image_inputs(imageset, keep=True)
        attributes = self.attribute_features(imageset)
        self.clip.model.eval()
        self.adapters.train(False)
        with self.context.use(0), self.context.matched(None if attributes is None else attributes[rows]), \
                self.context.recording() as records:
            self.encode_image_inputs(inputs[rows], cached)
        return {name: gates.cpu() for name, gates in records.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        # before_step ran again for the finished steps on resume; the per-step usage baseline is the loaded one
        self._usage_at_start = {layer.name: layer.usage[0].clone() for layer in self.adapters.moe_layers()}


class MAGENoAttributes(MAGE):
    """``mage-noattr``: MAGE whose routers read the data feature ``x_0`` only (the ablation)."""

    name = "mage-noattr"
    use_attributes = False
