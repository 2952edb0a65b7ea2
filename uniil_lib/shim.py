"""The one shim between uniil_lib and other libraries' internals, and the public image-tower protocol.

**Private attributes.** Three things we need have no public API in the versions we support; this module is the
only place in uniil_lib that reads them, each in one small function tested in ``tests/test_shim.py``, so a
library upgrade that moves them fails there, with a message, instead of deep inside a method:

- open_clip's ``VisionTransformer._embeds`` (patch embedding, class token, positions, pre-norm) and
  ``VisionTransformer._pool`` (pooling): the two ends of a ViT's forward, without the blocks in between,
  which is what running a tower in two halves needs (:mod:`uniil_lib.tower_split`);
- torch's ``Tensor._version``, the counter every in-place update bumps: how :func:`weights_version` tells that
  weights changed (the fine-tuning method keeps its evaluation text embeddings until they do).

**Short prompts** (:func:`causal_text_length`, :func:`encode_text_prefix`): open_clip's ``CLIP.encode_text`` always
runs all 77 token positions, though a class prompt ends after about 10 and, under the causal mask, the positions
after a prompt's end token change nothing the pooled end token sees. Running only the positions up to the longest
prompt's end is exact and several times cheaper in time and in the memory a training step keeps for the backward
pass; it needs the text tower's parts (token embedding, positional embedding, causal mask, final norm, pooling,
projection), which open_clip keeps as attributes, not as a function.

**The token-tower protocol** (:class:`TokenImageTower`). An image tower made of open_clip residual blocks that
says, in public, how to get its tokens in and its embedding out:

- ``embed(pixels)``: ``(B, 3, S, S)`` pixels -> ``(B, T, d)`` tokens, ready for block 0 (batch first);
- ``transformer``: an open_clip ``Transformer``-like module: ``transformer.resblocks`` an ``nn.ModuleList`` of
  open_clip ``ResidualAttentionBlock``\\ s run batch first, ``transformer.width == d``,
  ``transformer.batch_first`` True;
- ``pool_project(x)``: ``(B, T, d)`` output of the last block -> ``(B, D)``, pooling and projection,
  unnormalised like ``encode_image``;
- ``token_shape``: ``(T, d)``, tokens per image and width (for memory budgets).

A tower that follows it (the offline mini-CLIP's image tower is meant to) is used as it is; an open_clip
``VisionTransformer`` is given the same face by :class:`OpenClipViTTokens` through the private attributes
above. :func:`token_tower` returns one or the other.
"""

from __future__ import annotations

from typing import Iterable, Protocol, runtime_checkable

import open_clip
import torch
import torch.nn as nn

PROTOCOL_METHODS = ("embed", "pool_project")


@runtime_checkable
class TokenImageTower(Protocol):
    """An image tower of open_clip residual blocks with a public token interface (see the module docstring)."""

    transformer: nn.Module

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` pixels -> ``(B, T, d)`` tokens for block 0."""
        ...

    def pool_project(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, d)`` last-block output -> ``(B, D)`` unnormalised image embedding."""
        ...

    @property
    def token_shape(self) -> tuple[int, int]:
        """``(T, d)``: tokens per image and width."""
        ...


def token_protocol_problem(visual: object) -> str | None:
    """Why ``visual`` does not follow :class:`TokenImageTower` (None when it does)."""
    name = type(visual).__name__
    missing = [attr for attr in PROTOCOL_METHODS if not callable(getattr(visual, attr, None))]
    if not hasattr(visual, "token_shape"):
        missing.append("token_shape")
    if missing:
        return f"{name} lacks {', '.join(missing)}"
    transformer = getattr(visual, "transformer", None)
    if not isinstance(getattr(transformer, "resblocks", None), nn.ModuleList):
        return f"{name}.transformer has no resblocks ModuleList"
    if not getattr(transformer, "batch_first", False):
        return f"{name}.transformer is not batch_first (or does not say)"
    if not isinstance(getattr(transformer, "width", None), int):
        return f"{name}.transformer has no integer width"
    return None


def open_clip_vit_problem(visual: object) -> str | None:
    """Why ``visual`` is not an open_clip ViT that :class:`OpenClipViTTokens` can wrap (None when it is)."""
    if not isinstance(visual, open_clip.transformer.VisionTransformer):
        return f"the image tower is a {type(visual).__name__}, not an open_clip VisionTransformer"
    if not (hasattr(visual, "_embeds") and hasattr(visual, "_pool")):
        return "this open_clip version has no VisionTransformer._embeds/_pool (needs open_clip_torch >= 2.30)"
    if not visual.transformer.batch_first:
        return "the image transformer is not batch_first"
    return None


def token_tower_problem(visual: object) -> str | None:
    """Why :func:`token_tower` cannot give ``visual`` the token interface (None when it can)."""
    own = token_protocol_problem(visual)
    if own is None:
        return None
    vit = open_clip_vit_problem(visual)
    if vit is None:
        return None
    return f"{vit}, and it does not follow the token-tower protocol ({own}; see uniil_lib.shim.TokenImageTower)"


class OpenClipViTTokens:
    """An open_clip ``VisionTransformer`` seen through :class:`TokenImageTower` (a view; holds no weights).

    ``pool_project(x)`` after the blocks after ``embed(pixels)`` is exactly ``visual(pixels)``.
    """

    def __init__(self, visual: nn.Module):
        problem = open_clip_vit_problem(visual)
        if problem:
            raise ValueError(problem)
        self.visual = visual

    @property
    def transformer(self) -> nn.Module:
        return self.visual.transformer

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual._embeds(pixels)

    def pool_project(self, x: torch.Tensor) -> torch.Tensor:
        pooled, _ = self.visual._pool(x)
        return pooled @ self.visual.proj if self.visual.proj is not None else pooled

    @property
    def token_shape(self) -> tuple[int, int]:
        tokens, width = self.visual.positional_embedding.shape
        return int(tokens), int(width)


def token_tower(visual: nn.Module) -> TokenImageTower:
    """``visual`` itself if it follows :class:`TokenImageTower`, else an open_clip ViT wrapped in
    :class:`OpenClipViTTokens`.

    Raises:
        ValueError: neither (the message says what is missing).
    """
    if token_protocol_problem(visual) is None:
        return visual
    problem = token_tower_problem(visual)
    if problem:
        raise ValueError(problem)
    return OpenClipViTTokens(visual)


def causal_text_length(model: nn.Module, tokens: torch.Tensor) -> int | None:
    """How many token positions of ``tokens`` ``(N, 77)`` decide ``model.encode_text(tokens)``: up to the longest
    prompt's end token, for an open_clip ``CLIP`` whose text tower is causal and pools at the end token (argmax of
    the token ids); None for any other model (then all positions are needed)."""
    if not isinstance(model, open_clip.CLIP) or getattr(model, "text_pool_type", None) != "argmax":
        return None
    if getattr(model, "attn_mask", None) is None or tokens.ndim != 2 or tokens.shape[1] < 2:
        return None
    return int(tokens.argmax(dim=-1).max()) + 1


def encode_text_prefix(model: nn.Module, tokens: torch.Tensor, length: int) -> torch.Tensor:
    """``model.encode_text(tokens)`` computed on the first ``length`` positions only (positional embedding and causal
    mask cut to match): the same embeddings when ``length`` is :func:`causal_text_length`'s, unnormalised."""
    cast = model.transformer.get_cast_dtype()
    kept = tokens[:, :length]
    x = model.token_embedding(kept).to(cast) + model.positional_embedding[:length].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:length, :length]))
    pooled = x[torch.arange(x.shape[0], device=x.device), kept.argmax(dim=-1)]
    projection = model.text_projection
    if projection is None:
        return pooled
    return projection(pooled) if isinstance(projection, nn.Linear) else pooled @ projection


def weights_version(parameters: Iterable[torch.Tensor]) -> int:
    """A number that changes whenever any of ``parameters`` is updated in place (an optimiser step, ``copy_``,
    ``load_state_dict``): the sum of torch's per-tensor version counters."""
    return sum(p._version for p in parameters)
