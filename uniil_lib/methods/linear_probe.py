"""Linear probe on frozen CLIP features, with classes added step by step.

A linear head ``W`` (one row per class of the scenario) on top of frozen, L2-normalised image features;
logits are ``s * f @ W.T`` with CLIP's temperature ``s``. Our choice: each row starts from the class's
zero-shot text embedding (as in "LP++" and WiSE-FT's zero-shot head initialisation), so before training
the probe *is* zero-shot CLIP and a step only moves rows away from it. Each step trains the rows of the
step's label space with cross-entropy; rows of earlier classes receive gradients too (as negatives), which
is where this baseline forgets.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .zeroshot import FrozenFeatureMethod


class LinearProbe(FrozenFeatureMethod):
    """Frozen encoder, trainable linear head initialised from zero-shot text embeddings."""

    name = "linear-probe"
    trains = True

    def __init__(self, clip, scenario, config):
        super().__init__(clip, scenario, config)
        for parameter in self.clip.model.parameters():
            parameter.requires_grad_(False)
        self.head = torch.nn.Parameter(self.class_embeddings().clone().to(config.device))

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [self.head]

    def scores(self, features: torch.Tensor, class_ids: Sequence[int], task_id: int | None) -> torch.Tensor:
        head = self.head.detach()[list(class_ids)]
        return (features.to(head.device) @ head.T).cpu()

    def training_loss(self, pixels, labels, step) -> torch.Tensor:
        class_ids, targets = self.candidate_targets(labels, step)
        return self.cross_entropy(self.clip.logit_scale.detach() * pixels @ self.head[class_ids].T, targets)

    def step_inputs(self, step):
        # Train on cached features, not pixels: the encoder is frozen, so this is exact and far faster.
        return self.cached_features(step.train), torch.as_tensor(step.train.labels)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"head": self.head.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.head.copy_(state["head"])
