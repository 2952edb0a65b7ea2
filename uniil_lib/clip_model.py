"""What every loaded CLIP is: :class:`ClipModel`, the error :class:`ClipLoadError`, and text-tower helpers.

The bottom of the model layer. :mod:`uniil_lib.clip` (loading by name, zero-shot heads) and
:mod:`uniil_lib.mini_clip` (the offline mini-CLIP) both import from here, and neither imports the other
upwards: ``clip`` imports ``mini_clip``, never the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .shim import causal_text_length, encode_text_prefix


class ClipLoadError(RuntimeError):
    """A model could not be loaded; the message says why and what to do instead."""


@dataclass
class ClipModel:
    """A CLIP model together with everything needed to use it.

    Attributes:
        model: the open_clip ``CLIP`` / ``CustomTextCLIP`` module.
        preprocess: PIL image -> ``(3, S, S)`` float tensor (resize, crop, normalise).
        tokenizer: list of strings -> ``(N, context_length)`` token tensor.
        identity: names the exact weights, e.g. ``"ViT-B-16/openai"``; cache key for features.
        image_size: ``S``, the input resolution.
    """

    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    identity: str
    image_size: int

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` preprocessed pixels -> ``(B, D)`` L2-normalised image embeddings."""
        return F.normalize(self.model.encode_image(pixels.to(self.device)), dim=-1)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids ``(N, L)`` on the model's device; for a BERT-style text tower (the mini-CLIP's) the
        trailing columns that are padding in every row are dropped (:func:`trim_padding`)."""
        tokens = self.tokenizer(list(texts))
        pad_id = getattr(getattr(getattr(self.model, "text", None), "config", None), "pad_token_id", None)
        if pad_id is not None:
            tokens = trim_padding(tokens, pad_id)
        return tokens.to(self.device)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """``N`` strings -> ``(N, D)`` L2-normalised text embeddings."""
        return F.normalize(encode_text(self.model, self.tokenize(texts)), dim=-1)

    @property
    def logit_scale(self) -> torch.Tensor:
        """CLIP's learned temperature, ``exp(t)`` (100 for OpenAI's models)."""
        return self.model.logit_scale.exp()


def encode_text(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` (unnormalised), run on the token positions up to the longest prompt's end when
    that gives the same embeddings (a causal open_clip text tower: :func:`uniil_lib.shim.causal_text_length`),
    which is several times cheaper; every text forward of uniil_lib goes through here."""
    length = causal_text_length(model, tokens)
    if length is None or length >= tokens.shape[1]:
        return model.encode_text(tokens)
    return encode_text_prefix(model, tokens, length)


def trim_padding(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Drop the trailing token columns that are padding in every row: ``(N, L) -> (N, L')``.

    Exact for a BERT-style tower, which masks padding out of attention and pooling (the all-MiniLM-L6-v2
    tokenizer pads every prompt to 64 tokens; class prompts have about 10, so this makes the text tower
    several times cheaper). Not for open_clip's text transformer, whose positional embedding has a fixed length.
    """
    used = (tokens != pad_id).any(dim=0).nonzero()
    return tokens[:, : int(used.max()) + 1] if len(used) else tokens[:, :1]


def locked_text_backbone(model: torch.nn.Module) -> bool:
    """True when ``model``'s text tower is a Hugging Face backbone (open_clip's ``HFTextEncoder``: ``text.transformer``,
    ``text.pooler``, ``text.proj``) whose backbone weights are all frozen, as the mini-CLIP's MiniLM is.

    Then the pooled backbone features of a prompt never change, and training can reuse them
    (:func:`pooled_text_features`) and run only the projection.
    """
    text = getattr(model, "text", None)
    backbone = getattr(text, "transformer", None)
    return (backbone is not None and hasattr(text, "proj") and hasattr(text, "config")
            and not any(p.requires_grad for p in backbone.parameters()))


@torch.no_grad()
def pooled_text_features(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """A Hugging Face text tower's pooled features *before* its projection: ``(N, L)`` tokens -> ``(N, width)``.

    ``model.text.proj`` of these is ``model.encode_text(tokens)`` (unnormalised).
    """
    mask = (tokens != model.text.config.pad_token_id).long()
    out = model.text.transformer(input_ids=tokens, attention_mask=mask)
    return model.text.pooler(out, mask)
