"""Continual full fine-tuning: every weight of CLIP trained on each step in turn.

The naive baseline of MTIL (ZSCL's "Continual-FT"): the image and the text encoder are both trained with
cross-entropy over the scaled cosine similarities between image embeddings and the class-prompt
embeddings of the step's label space. Nothing protects earlier tasks, so it shows catastrophic
forgetting, and it also erodes zero-shot transfer to tasks not yet seen. Training uses each class's first
prompt (one text forward per class per batch); evaluation uses the full prompt ensemble.

With a locked Hugging Face text backbone (the mini-CLIP's MiniLM), only the text projection trains on the
text side: the backbone's pooled features of the class prompts are computed once per label space and reused
(:func:`uniil_lib.clip_model.pooled_text_features`; exact, and cheaper). Evaluation text embeddings are kept
until the weights change (:func:`uniil_lib.shim.weights_version`).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..clip import class_prompt_weights
from ..clip_model import locked_text_backbone, pooled_text_features
from ..shim import weights_version
from .base import ContinualMethod


class Finetune(ContinualMethod):
    """All CLIP parameters trained, step after step, with nothing to prevent forgetting."""

    name = "finetune"

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        # The temperature stays fixed at its pretrained value, as in ZSCL and MoE-Adapters.
        # Parameters a model keeps locked (e.g. the mini-CLIP's pretrained text tower) stay locked.
        return [p for n, p in self.clip.model.named_parameters() if n != "logit_scale" and p.requires_grad]

    def training_text(self, prompts: list[str]) -> torch.Tensor:
        """``(C, D)`` embeddings of the training prompts, with gradients to whatever text weights train."""
        if not locked_text_backbone(self.clip.model):
            return self.clip.encode_texts(prompts)
        cached = getattr(self, "_pooled_cache", None)
        if cached is None or cached[0] != prompts:
            cached = (prompts, pooled_text_features(self.clip.model, self.clip.tokenize(prompts)))
            self._pooled_cache = cached
        return F.normalize(self.clip.model.text.proj(cached[1]), dim=-1)

    def class_text(self, class_ids: Sequence[int], *, ensemble: bool) -> torch.Tensor:
        classes = self.scenario.classes
        if not ensemble:
            return self.training_text([classes[c].prompts[0] for c in class_ids])
        return class_prompt_weights(self.clip.encode_texts, [classes[c].prompts for c in class_ids])

    def training_loss(self, pixels: torch.Tensor, labels: torch.Tensor, step) -> torch.Tensor:
        class_ids, targets = self.candidate_targets(labels, step)
        logits = self.clip.logit_scale * self.clip.encode_images(pixels) @ self.class_text(class_ids, ensemble=False).T
        return self.cross_entropy(logits, targets)

    def logits(self, pixels: torch.Tensor, class_ids: Sequence[int], task_id: int | None) -> torch.Tensor:
        text = self._eval_text(tuple(class_ids))
        return self.clip.encode_images(pixels) @ text.T

    def _eval_text(self, class_ids: tuple[int, ...]) -> torch.Tensor:
        # Text embeddings change only when the model trains; cache them between predict() calls of one
        # evaluation by remembering which weights version they came from.
        version = self._weights_version()
        cache = getattr(self, "_text_cache", {})
        if cache.get("version") != version:
            cache = {"version": version}
        if class_ids not in cache:
            cache[class_ids] = self.class_text(class_ids, ensemble=True)
        self._text_cache = cache
        return cache[class_ids]

    def _weights_version(self) -> int:
        return weights_version(self.clip.model.parameters())

    def predict(self, imageset, class_ids, task_id):
        self._text_cache = {}
        return super().predict(imageset, class_ids, task_id)
