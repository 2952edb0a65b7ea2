"""A hybrid Vision Transformer: a frozen ImageNet CNN's feature map as the tokens of a few transformer blocks.

Dosovitskiy et al. 2021 ("An Image is Worth 16x16 Words", section 3.1, *Hybrid Architecture*): "the input
sequence can be formed from feature maps of a CNN ... the patch embedding projection is applied to patches
extracted from a CNN feature map", with patches of 1x1 pixel, i.e. every spatial position of the map is
one token. The mini-CLIP's image tower is such a hybrid:

    pixels (B, 3, S, S)
      -> stem: EfficientNet-Lite0, ImageNet weights, frozen           (B, 1280, g, g), g = ceil(S / 32)
      -> token projection (a 1x1 convolution, i.e. nn.Linear 1280 -> d) per position, plus a class token
         and learned position embeddings, layer norm                     (B, 1 + g*g, d)
      -> transformer blocks (open_clip ``ResidualAttentionBlock``s)      (B, 1 + g*g, d)
      -> layer norm of the class token, linear projection to the joint space (B, D)

Adapters and Mixture-of-Experts adapters attach to the transformer blocks exactly as to open_clip's own
ViT (the blocks are the same class). The tower exposes the public protocol that
:mod:`uniil_lib.adapters` and the frozen-block cache use to run a tower in two halves:
:meth:`HybridVisionTower.embed` (pixels -> block-0 input), ``transformer.resblocks``,
:meth:`HybridVisionTower.pool_project` (last block's output -> embedding) and
:attr:`HybridVisionTower.token_shape`.

The stem never trains, so its output for an image never changes: :class:`StemFeatureCache` keeps it,
keyed by the image's pixel content, in memory and on disk, and the CNN runs once per image (our choice:
a content-addressed cache is exact and needs no change in the code that feeds images in).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn as nn

from .fileio import atomic_write
from .imagenet_backbone import FEATURE_CHANNELS, STRIDE, FrozenCNNStem

POOLS = ("token", "mean")  # what the head reads: the class token, or the mean of the position tokens
DEFAULT_MEMORY_BUDGET = 128 * 2**20  # bytes of trunk features kept in memory per tower (10 KiB per 128-px image)


@dataclass(frozen=True)
class HybridConfig:
    """Shape of the hybrid tower.

    Attributes:
        image_size: input resolution ``S`` in pixels (square).
        width: transformer residual width ``d``.
        layers: transformer blocks.
        head_width: width of one attention head (``width // head_width`` heads).
        embed_dim: width of the joint image-text space.
        stem_channels: channels of the CNN feature map (1280 for EfficientNet-Lite0's conv head).
        pool: what the head reads from the last block: ``"token"``, the class token (ViT's choice, shipped), or
            ``"mean"``, the mean of the position tokens (ViT paper, appendix D.3, "global average pooling";
            open_clip's ``pool_type="avg"``). With the residual branches still small, ``"mean"`` starts near a
            linear map of the CNN's pooled features, the probe the issue measured.
    """

    image_size: int = 128
    width: int = 256
    layers: int = 4
    head_width: int = 64
    embed_dim: int = 384
    stem_channels: int = FEATURE_CHANNELS
    pool: str = "token"

    def __post_init__(self):
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")

    @property
    def grid(self) -> int:
        """Feature-map positions per side: ``ceil(S / 32)``."""
        return -(-self.image_size // STRIDE)


class StemFeatureCache:
    """Frozen-stem outputs keyed by a digest of each image's pixels: in memory (bounded), and on disk.

    Exact by construction: a cache entry is used only for an input with the same bytes. The on-disk
    part is shared by every process that uses the same stem (one ``.npy`` file per image, written
    atomically under a unique temporary name, so concurrent runs never see half a file); a file that
    cannot be read is recomputed.

    Args:
        folder: where the on-disk entries live (None: memory only).
        budget_bytes: memory kept for entries (least recently used first out).
    """

    def __init__(self, folder: str | Path | None, *, budget_bytes: int = DEFAULT_MEMORY_BUDGET):
        self.folder = Path(folder) if folder is not None else None
        self.budget_bytes = budget_bytes
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._used = 0
        self.hits = self.misses = 0

    @staticmethod
    def digest(image: torch.Tensor) -> str:
        """A 32-hex-digit digest of one image's pixel tensor (shape, dtype and bytes)."""
        data = image.detach().to("cpu", copy=False).contiguous()
        header = f"{tuple(data.shape)}{data.dtype}".encode()
        return hashlib.blake2b(header + data.numpy().tobytes(), digest_size=16).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def _remember(self, key: str, value: torch.Tensor) -> None:
        self._memory[key] = value
        self._used += value.numel() * value.element_size()
        while self._used > self.budget_bytes and self._memory:
            _, old = self._memory.popitem(last=False)
            self._used -= old.numel() * old.element_size()

    def get(self, key: str) -> torch.Tensor | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        if self.folder is None or not self._path(key).is_file():
            return None
        try:
            value = torch.from_numpy(np.load(self._path(key), allow_pickle=False))
        except (OSError, ValueError):  # truncated or foreign file: recompute it
            return None
        if not torch.isfinite(value).all():
            return None
        self._remember(key, value)
        return value

    def put(self, key: str, value: torch.Tensor) -> None:
        value = value.detach().to("cpu", torch.float16).contiguous()
        self._remember(key, value)
        if self.folder is None:
            return
        atomic_write(self._path(key), lambda tmp: _save_npy(tmp, value.numpy()))

    def features(self, pixels: torch.Tensor, stem: nn.Module) -> torch.Tensor:
        """``stem(pixels)`` for a batch, computing only the images not cached: ``(B, C, g, g)`` float32."""
        keys = [self.digest(image) for image in pixels]
        found = [self.get(key) for key in keys]
        todo = [i for i, value in enumerate(found) if value is None]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            computed = stem(pixels[todo])
            for i, value in zip(todo, computed):
                self.put(keys[i], value)
                found[i] = value.detach().to("cpu", torch.float16)
        return torch.stack(found).to(device=pixels.device, dtype=torch.float32)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.save would append ".npy" to a temporary file's name
        np.save(handle, array, allow_pickle=False)


class HybridVisionTower(nn.Module):
    """The mini-CLIP's image tower (see the module docstring): frozen CNN stem, token projection, blocks, head.

    Args:
        stem: the frozen CNN (:class:`~uniil_lib.imagenet_backbone.FrozenCNNStem`).
        config: the shape.
        stem_cache: where stem outputs are kept (None: computed every time).
    """

    def __init__(self, stem: FrozenCNNStem, config: HybridConfig, *, stem_cache: StemFeatureCache | None = None):
        super().__init__()
        d, scale = config.width, config.width ** -0.5
        self.config = config
        self.stem = stem
        self.stem_cache = stem_cache
        self.image_size = config.image_size
        self.token_proj = nn.Linear(config.stem_channels, d)
        self.class_embedding = nn.Parameter(scale * torch.randn(d))
        self.positional_embedding = nn.Parameter(scale * torch.randn(1 + config.grid**2, d))
        self.ln_pre = nn.LayerNorm(d)
        self.transformer = open_clip.transformer.Transformer(d, config.layers, d // config.head_width,
                                                             batch_first=True)
        self.ln_post = nn.LayerNorm(d)
        self.proj = nn.Parameter(scale * torch.randn(d, config.embed_dim))

    @property
    def token_shape(self) -> tuple[int, int]:
        """``(T, d)``: tokens per image (class token + ``g * g`` positions) and residual width."""
        return tuple(self.positional_embedding.shape)

    def stem_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` -> ``(B, 1280, g, g)``: the frozen CNN; its trunk through the cache when there is one."""
        trunk = self.stem.trunk(pixels) if self.stem_cache is None else self.stem_cache.features(pixels, self.stem.trunk)
        return self.stem.head(trunk)

    def tokens(self, feature_map: torch.Tensor) -> torch.Tensor:
        """``(B, C, g, g)`` stem features -> ``(B, 1 + g*g, d)`` block-0 input (projection, class token, positions)."""
        patches = self.token_proj(feature_map.flatten(2).transpose(1, 2))  # (B, g*g, d)
        cls = self.class_embedding.to(patches.dtype).expand(len(patches), 1, -1)
        return self.ln_pre(torch.cat([cls, patches], dim=1) + self.positional_embedding.to(patches.dtype))

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` pixels -> ``(B, T, d)`` input of block 0."""
        return self.tokens(self.stem_features(pixels))

    def pool_project(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(B, T, d)`` last block's output -> ``(B, D)`` embedding (class token or mean of the position tokens, see
        :attr:`HybridConfig.pool`; layer norm, projection)."""
        pooled = hidden[:, 0] if self.config.pool == "token" else hidden[:, 1:].mean(dim=1)
        return self.ln_post(pooled) @ self.proj

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.pool_project(self.transformer(self.embed(pixels)))

    def lock(self, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None:
        """open_clip's tower API: freeze every parameter (the stem is frozen anyway)."""
        self.requires_grad_(False)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.transformer.grad_checkpointing = enable
