"""Zero-shot CLIP: no training at all; the lower bound of forgetting and the upper bound of transfer.

Each class is represented by its prompt ensemble (:func:`uniil_lib.clip.class_prompt_weights`), and an
image is assigned to the class whose text embedding is most similar (Radford et al. 2021, sec. 3.1.2).
Image features come from the on-disk feature cache, so re-evaluating after every step costs nothing.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..clip import class_prompt_weights
from ..features import image_features
from .base import ContinualMethod


class FrozenFeatureMethod(ContinualMethod):
    """A method whose image encoder never changes: image features are computed once and cached."""

    trains = False
    data_parallel = False  # its steps read cached features: each rank trains the whole batch (methods.base)

    def cached_features(self, imageset) -> torch.Tensor:
        """``(N, D)`` frozen image features of ``imageset`` (the on-disk cache), encoded at the config's precision."""
        with self.config.autocast_context():
            return image_features(self.clip, imageset, batch_size=self.config.eval_batch_size,
                                  progress=self.config.progress, loader=self.loader)

    @torch.no_grad()
    def class_embeddings(self) -> torch.Tensor:
        """``(C, D)`` prompt-ensemble text embeddings of every class of the scenario, computed once."""
        if not hasattr(self, "_class_embeddings"):
            prompts = [spec.prompts for spec in self.scenario.classes]
            weights = class_prompt_weights(self.clip.encode_texts, prompts, batches="class")
            self._class_embeddings = weights.float().cpu()
        return self._class_embeddings

    def scores(self, features: torch.Tensor, class_ids: Sequence[int], task_id: int | None) -> torch.Tensor:
        return features @ self.class_embeddings()[list(class_ids)].T

    @torch.no_grad()
    def predict(self, imageset, class_ids: Sequence[int], task_id: int | None) -> np.ndarray:
        features = self.cached_features(imageset)
        ids = torch.as_tensor(list(class_ids))
        return ids[self.scores(features, class_ids, task_id).argmax(dim=1)].numpy()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass


class ZeroShot(FrozenFeatureMethod):
    """Frozen CLIP, classifying by prompt-ensemble text embeddings."""

    name = "zeroshot"
