"""Loading CLIP models and classifying images zero-shot (Radford et al., 2021, "Learning Transferable
Visual Models From Natural Language Supervision", section 3.1.4 and the prompt ensembles of 3.1.4).

One entry point, :func:`load_clip`, covers every way a learner gets a model:

===========================================  ============================================================
``load_clip("ViT-B-16", pretrained="openai")``  open_clip model from the hub (the papers' setting; needs internet
                                             the first time, then the local hub cache)
``load_clip("ViT-B-32", pretrained="w.safetensors")``  open_clip architecture + a local checkpoint file
``load_clip("mini")``                        the offline pretrained mini-CLIP shipped with uniil_lib
``load_clip("tiny", seed=0)``                a tiny randomly initialised CLIP for tests and quick demos
===========================================  ============================================================

All models come back as a :class:`ClipModel`: the open_clip module, its image preprocessing, its tokenizer
and an ``identity`` string used as the key of the on-disk feature cache (:mod:`uniil_lib.features`).
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

import open_clip
import torch
import torch.nn.functional as F

# ClipModel, ClipLoadError and trim_padding live in clip_model (the bottom of the model layer); they are
# re-exported here, where notebooks and tests import them.
from .clip_model import ClipLoadError, ClipModel, trim_padding  # noqa: F401
from .integrity import file_sha256
from .mini_clip import load_mini_clip

TINY_MODEL_NAME = "tiny"
MINI_MODEL_NAME = "mini"
HUB_HOST = "huggingface.co"


@dataclass(frozen=True)
class TinyClipConfig:
    """A deliberately small CLIP (about 3.5 M parameters, most in the token embedding) for tests and CI.

    Attributes:
        embed_dim: width of the joint image-text embedding space.
        image_size: input resolution in pixels (square).
        patch_size: ViT patch size; ``image_size // patch_size`` patches per side.
        vision_width: ViT residual width.
        vision_layers: number of ViT residual blocks.
        text_width: text transformer residual width.
        text_layers: number of text transformer blocks.
        heads: attention heads in both towers.
        context_length: text tokens per prompt.
    """

    embed_dim: int = 64
    image_size: int = 32
    patch_size: int = 8
    vision_width: int = 64
    vision_layers: int = 4
    text_width: int = 64
    text_layers: int = 4
    heads: int = 4
    context_length: int = 32


def load_clip(
    name: str,
    *,
    pretrained: str | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    tiny_config: TinyClipConfig | None = None,
) -> ClipModel:
    """Load a CLIP model by name.

    Args:
        name: ``"tiny"``, ``"mini"``, or any open_clip architecture (``open_clip.list_models()``).
        pretrained: for open_clip architectures, a hub tag (``"openai"``; see
            ``open_clip.list_pretrained_tags_by_model(name)``) or a path to a checkpoint file
            (``.safetensors``, ``.pt``, ``.bin``). ``None`` gives random weights.
        device: where to put the model.
        seed: random seed for randomly initialised weights (``"tiny"`` or ``pretrained=None``).
        tiny_config: overrides the shape of the ``"tiny"`` model.

    Raises:
        ClipLoadError: unknown name (lists valid ones), missing file, or hub weights unreachable offline.
    """
    if name == TINY_MODEL_NAME:
        clip = _load_tiny(tiny_config or TinyClipConfig(), seed=seed)
    elif name == MINI_MODEL_NAME:
        clip = load_mini_clip()
    else:
        clip = _load_open_clip(name, pretrained, seed=seed)
    clip.model.to(device).eval()
    return clip


def available_models() -> list[str]:
    """Names :func:`load_clip` accepts: our own models first, then open_clip's architectures."""
    return [TINY_MODEL_NAME, MINI_MODEL_NAME, *open_clip.list_models()]


def _load_tiny(config: TinyClipConfig, *, seed: int) -> ClipModel:
    vision_cfg = open_clip.CLIPVisionCfg(
        layers=config.vision_layers, width=config.vision_width, head_width=config.vision_width // config.heads,
        patch_size=config.patch_size, image_size=config.image_size,
    )
    text_cfg = open_clip.CLIPTextCfg(
        context_length=config.context_length, width=config.text_width, heads=config.heads,
        layers=config.text_layers,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.CLIP(embed_dim=config.embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg)
    preprocess = open_clip.image_transform(config.image_size, is_train=False)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=config.context_length)
    digest = hashlib.sha1(repr(config).encode()).hexdigest()[:8]
    return ClipModel(model, preprocess, tokenizer, f"tiny-{digest}/random-seed{seed}", config.image_size)


def _load_open_clip(name: str, pretrained: str | None, *, seed: int) -> ClipModel:
    if name not in open_clip.list_models():
        raise ClipLoadError(
            f"unknown model {name!r}. Valid names: {TINY_MODEL_NAME!r}, {MINI_MODEL_NAME!r}, or an open_clip "
            f"architecture such as 'ViT-B-16' (all of them: python -m uniil_lib list --models)"
        )
    identity = f"{name}/random-seed{seed}"
    if pretrained is not None and _looks_like_path(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise ClipLoadError(f"checkpoint file {path} does not exist; pass an existing .safetensors/.pt file")
        identity = f"{name}/file-{file_sha256(path)[7:19]}"  # the full content digest, remembered across runs
        pretrained = str(path)
    elif pretrained is not None:
        pretrained = _resolve_hub_weights(name, pretrained)
        identity = f"{name}/{Path(pretrained).name if _looks_like_path(pretrained) else pretrained}"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
        except Exception as error:  # torch.load, safetensors and state-dict errors of a damaged or wrong file
            if not identity.startswith(f"{name}/file-"):
                raise
            raise ClipLoadError(f"{pretrained} cannot be loaded as {name} weights ({type(error).__name__}: "
                                f"{' '.join(str(error).split())[:200]}); pass an intact checkpoint of this "
                                "architecture") from error
    tokenizer = open_clip.get_tokenizer(name)
    image_size = model.visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else int(image_size)
    return ClipModel(model, preprocess, tokenizer, identity, image_size)


def _looks_like_path(value: str) -> bool:
    return any(sep in value for sep in ("/", "\\")) or Path(value).suffix in {".safetensors", ".pt", ".bin", ".pth"}


def _resolve_hub_weights(name: str, tag: str) -> str:
    """Return ``tag`` if the hub can be reached, a cached file path if the weights are cached, else fail fast.

    open_clip retries a failed download for about a minute; on a machine without internet we want a
    clear error at once, so we look for the cached file first and probe the hub's host name.
    """
    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag not in tags:
        raise ClipLoadError(f"{name!r} has no pretrained tag {tag!r}; valid tags: {', '.join(tags) or 'none'}")
    cached = _cached_hub_file(name, tag)
    if cached is not None:
        return cached
    if not _host_reachable(HUB_HOST):
        raise ClipLoadError(
            f"cannot download {name}/{tag}: {HUB_HOST} is not reachable (offline?) and the weights are not "
            "in the local hub cache. Offline, use load_clip('mini') (pretrained, ships with uniil_lib) or "
            "load_clip('tiny'); or download the weights on a machine with internet and pass the file: "
            f"load_clip({name!r}, pretrained='/path/to/open_clip_model.safetensors')."
        )
    return tag


def _cached_hub_file(name: str, tag: str) -> str | None:
    cfg = open_clip.get_pretrained_cfg(name, tag)
    repo = (cfg.get("hf_hub") or "").strip("/")
    if not repo:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return found
    return None


def _host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


# ----- the zero-shot head -------------------------------------------------------------------------------
PromptBatches = Union[int, str]


def prompt_ensemble(prompt_embeddings: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """CLIP's prompt ensemble (Radford et al. 2021, section 3.1.4) from embedded prompts.

    Args:
        prompt_embeddings: ``(P, D)`` unit-norm prompt embeddings, grouped by class in class order.
        counts: ``C`` prompt counts, ``counts[c]`` rows for class ``c`` (``sum(counts) == P``).

    Returns:
        ``(C, D)``: each class's mean prompt embedding, normalised again.
    """
    counts = [int(n) for n in counts]
    if sum(counts) != len(prompt_embeddings) or any(n < 1 for n in counts):
        raise ValueError(f"need at least one prompt per class and {sum(counts)} embeddings for counts {counts[:8]}, "
                         f"got {len(prompt_embeddings)} embeddings")
    return F.normalize(torch.stack([chunk.mean(0) for chunk in prompt_embeddings.split(counts)]), dim=-1)


def class_prompt_weights(encode: Callable[[list[str]], torch.Tensor], class_prompts: Sequence[Sequence[str]], *,
                         batches: PromptBatches = "all") -> torch.Tensor:
    """The zero-shot head every method uses: one unit-norm text embedding per class, the ensemble of its prompts.

    Args:
        encode: a list of prompts -> their ``(n, D)`` unit-norm embeddings (``ClipModel.encode_texts``, or a
            method's own text forward under its adapters).
        class_prompts: ``C`` lists of prompts, one list per class.
        batches: how prompts go through ``encode``: ``"all"`` (one call), ``"class"`` (one call per class) or
            an int (that many prompts per call). The choice changes only float rounding (a BERT-style tower
            trims padding to the longest prompt of a call); each caller keeps the one its measured numbers
            were made with.

    Returns:
        ``(C, D)`` class weights (:func:`prompt_ensemble`).
    """
    class_prompts = [list(prompts) for prompts in class_prompts]
    flat = [prompt for prompts in class_prompts for prompt in prompts]
    if batches == "all":
        groups = [flat]
    elif batches == "class":
        groups = class_prompts
    elif isinstance(batches, int) and not isinstance(batches, bool) and batches > 0:
        groups = [flat[i : i + batches] for i in range(0, len(flat), batches)]
    else:
        raise ValueError(f"batches must be 'all', 'class' or a positive int, got {batches!r}")
    embeddings = torch.cat([encode(group) for group in groups if group])
    return prompt_ensemble(embeddings, [len(prompts) for prompts in class_prompts])


@torch.no_grad()
def zero_shot_weights(clip: ClipModel, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """The zero-shot classifier: one normalised text embedding per class, averaged over templates.

    This is CLIP's prompt ensemble (Radford et al. 2021, section 3.1.4): embed every
    ``template.format(class_name)``, normalise, average over templates, normalise again
    (:func:`class_prompt_weights`).

    Args:
        clip: the model.
        class_names: ``C`` class names.
        templates: ``T`` templates, each containing exactly one ``{}``.

    Returns:
        ``(C, D)`` tensor of unit-norm class embeddings.
    """
    bad = [t for t in templates if t.count("{}") != 1]
    if not templates or bad:
        raise ValueError(f"each template needs exactly one '{{}}' for the class name; bad: {bad or 'no templates'}")
    return class_prompt_weights(clip.encode_texts, [[t.format(name) for t in templates] for name in class_names])


@torch.no_grad()
def zero_shot_logits(clip: ClipModel, image_features: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """``(B, D)`` normalised image features x ``(C, D)`` class weights -> ``(B, C)`` scaled cosine logits."""
    return clip.logit_scale * image_features.to(class_weights.device) @ class_weights.T
