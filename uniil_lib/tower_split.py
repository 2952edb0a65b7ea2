"""Running a CLIP tower in two halves, and the frozen-block cache built on it.

When adapters sit only in a tower's top blocks ``[s, L)``, the blocks below never change, so their output for
a fixed input is always the same. Splitting the forward at block ``s`` lets a method compute that output once
and run only the top blocks afterwards: exact, and several times faster (``benchmarks/frozen_block_cache.py``).

- Image tower: :func:`image_prefix` (embedding and blocks ``[0, s)``) and :func:`image_suffix` (blocks
  ``[s, L)``, pooling, projection), for any tower :func:`uniil_lib.shim.token_tower` accepts: an open_clip
  ``VisionTransformer`` or a tower following the public :class:`~uniil_lib.shim.TokenImageTower` protocol.
  :class:`FrozenBlockCache` keeps the prefix output of whole image sets in memory, within a byte budget.
- Any tower whose forward loops over its block list (open_clip's transformers, Hugging Face BERT):
  :func:`block_input` captures what block ``s`` receives, :func:`run_blocks_from` feeds it back in and skips
  the blocks below (used for the fixed class prompts of a training step).

Attaching and detaching the adapters themselves is :mod:`uniil_lib.adapters`; which blocks a tower has is
:func:`uniil_lib.adapters.find_towers`.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn as nn

from .adapters import Tower
from .pixels import LoaderSettings, PixelSource, sequential_batches
from .shim import token_tower, token_tower_problem

DEFAULT_CACHE_BUDGET = 512 * 2**20  # bytes of cached block outputs kept in memory


def image_split_problem(visual: nn.Module) -> str | None:
    """Why :func:`image_prefix` / :func:`image_suffix` cannot split ``visual`` (None when they can)."""
    return token_tower_problem(visual)


def image_prefix(visual: nn.Module, pixels: torch.Tensor, stop: int) -> torch.Tensor:
    """Token embedding and blocks ``[0, stop)`` of an image tower: ``(B, 3, S, S) -> (B, T, d)``."""
    tower = token_tower(visual)
    x = tower.embed(pixels)
    for block in tower.transformer.resblocks[:stop]:
        x = block(x)
    return x


def image_suffix(visual: nn.Module, hidden: torch.Tensor, start: int) -> torch.Tensor:
    """Blocks ``[start, L)``, pooling and projection: ``(B, T, d) -> (B, D)`` (unnormalised, like ``encode_image``).

    ``image_suffix(v, image_prefix(v, p, s), s)`` equals ``v(p)`` for every ``s``.
    """
    tower = token_tower(visual)
    x = hidden
    for block in tower.transformer.resblocks[start:]:
        x = block(x)
    return tower.pool_project(x)


class _ReachedBlock(Exception):
    """Raised by :func:`block_input`'s hook to stop a forward once the wanted block input is captured."""


def block_input(tower: Tower, index: int, forward: Callable[[], object]) -> torch.Tensor:
    """Run ``forward()`` (a forward of the model through ``tower``) only up to block ``index``; return that
    block's input. The blocks from ``index`` on do not run, so no adapter consumes random numbers."""
    captured = []

    def hook(module, args, kwargs):
        captured.append((args[0] if args else kwargs["hidden_states"]).detach())
        raise _ReachedBlock

    handle = tower.blocks[index].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        forward()
    except _ReachedBlock:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"the forward never reached {tower.name} block {index}")
    return captured[0]


@contextmanager
def run_blocks_from(tower: Tower, start: int, hidden: torch.Tensor) -> Iterator[None]:
    """Inside the ``with`` block the tower skips blocks ``[0, start)`` and feeds ``hidden`` to block ``start``.

    The tower's own forward still runs (embeddings, masks, pooling), so this works for any tower whose
    forward loops over its block list (open_clip's transformers, Hugging Face BERT). ``hidden`` must be what
    block ``start`` receives for the same inputs (:func:`block_input`).
    """
    blocks = tower.blocks
    if not 0 <= start < len(blocks):
        raise ValueError(f"start block {start} out of range for {len(blocks)} blocks")

    def inject(module, args, kwargs):
        given = args[0] if args else kwargs["hidden_states"]
        if given.shape != hidden.shape:
            raise RuntimeError(f"cached block input has shape {tuple(hidden.shape)} but this forward feeds "
                               f"{tuple(given.shape)}: the cache was computed for other inputs")
        if args:
            return (hidden.to(given.dtype), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden.to(given.dtype)}

    handle = blocks[start].register_forward_pre_hook(inject, with_kwargs=True)
    setattr(tower.owner, tower.attr, nn.ModuleList(list(blocks)[start:]))
    try:
        yield
    finally:
        setattr(tower.owner, tower.attr, blocks)
        handle.remove()


class FrozenBlockCache:
    """The output of the frozen image blocks ``[0, start)`` for whole image sets, computed once, kept on the CPU.

    Args:
        clip: the (adapted) model; blocks below ``start`` must carry no adapters.
        start: the first adapted image block.
        budget_bytes: the most memory kept; an image set that does not fit is computed on the fly
            (:meth:`hidden` returns None and the caller falls back to the full forward).
        batch_size: images per prefix forward.
        loader: how the pixels of those forwards are made (:mod:`uniil_lib.pixels`); they are never all kept.
    """

    def __init__(self, clip, start: int, *, budget_bytes: int = DEFAULT_CACHE_BUDGET, batch_size: int = 256,
                 loader: LoaderSettings | None = None):
        self.clip, self.start, self.budget_bytes, self.batch_size = clip, start, budget_bytes, batch_size
        self.loader = LoaderSettings(workers=loader.workers, pin_memory=loader.pin_memory, buffer_bytes=0) \
            if loader is not None else LoaderSettings(buffer_bytes=0)
        self._kept: dict[str, torch.Tensor] = {}
        self._warned = False

    @property
    def token_shape(self) -> tuple[int, int]:
        """``(T, d)`` of one image's cached block input."""
        return tuple(token_tower(self.clip.model.visual).token_shape)

    def bytes_per_image(self) -> int:
        tokens, width = self.token_shape
        return 4 * tokens * width

    @property
    def used_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._kept.values())

    @torch.no_grad()
    def hidden(self, imageset, *, keep: bool) -> torch.Tensor | None:
        """``(N, T, d)`` float32 block-``start`` inputs of ``imageset``; kept for later calls if ``keep``."""
        if imageset.key in self._kept:
            return self._kept[imageset.key]
        if len(imageset) * self.bytes_per_image() > self.budget_bytes - self.used_bytes:
            if not self._warned:
                warnings.warn(f"frozen-block cache budget ({self.budget_bytes / 2**20:.0f} MiB) exceeded by "
                              f"{imageset.key}; running the full image tower for it", stacklevel=2)
                self._warned = True
            return None
        pixels = PixelSource(imageset, self.clip.preprocess).batches(
            sequential_batches(len(imageset), self.batch_size), self.loader)
        model, visual = self.clip.model, self.clip.model.visual
        was_training = model.training
        model.eval()
        chunks = [image_prefix(visual, batch.to(self.clip.device, non_blocking=True), self.start).float().cpu()
                  for batch in pixels]
        model.train(was_training)
        hidden = torch.cat(chunks) if chunks else torch.empty(0, *self.token_shape)
        if keep:
            self._kept[imageset.key] = hidden
        return hidden
