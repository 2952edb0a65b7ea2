"""Continual full fine-tuning: every weight of CLIP trained on each step in turn.

The naive baseline of MTIL (ZSCL's "Continual-FT"): the image and the text encoder are both trained with
cross-entropy over the scaled cosine similarities between image embeddings and the class-prompt
embeddings of the step's label space. Nothing protects earlier tasks, so it shows catastrophic
forgetting, and it also erodes zero-shot transfer to tasks not yet seen. Training uses each class's first
prompt (one text forward per class per batch); evaluation uses the full prompt ensemble.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .base import ContinualMethod


class Finetune(ContinualMethod):
    """All CLIP parameters trained, step after step, with nothing to prevent forgetting."""

    name = "finetune"

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        # The temperature stays fixed at its pretrained value, as in ZSCL and MoE-Adapters.
        # Parameters a model keeps locked (e.g. the mini-CLIP's pretrained text tower) stay locked.
        return [p for n, p in self.clip.model.named_parameters() if n != "logit_scale" and p.requires_grad]

    def class_text(self, class_ids: Sequence[int], *, ensemble: bool) -> torch.Tensor:
        classes = self.scenario.classes
        if not ensemble:
            return self.clip.encode_texts([classes[c].prompts[0] for c in class_ids])
        prompts = [p for c in class_ids for p in classes[c].prompts]
        per_prompt = self.clip.encode_texts(prompts)
        counts = [len(classes[c].prompts) for c in class_ids]
        return F.normalize(torch.stack([chunk.mean(0) for chunk in per_prompt.split(counts)]), dim=-1)

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
        return sum(p._version for p in self.clip.model.parameters())

    def predict(self, imageset, class_ids, task_id):
        self._text_cache = {}
        return super().predict(imageset, class_ids, task_id)
