"""What the frozen CNN's own ImageNet classifier knows about unseen classes: ConSE, on tuning sets only.

Usage::

    python benchmarks/conse_probe.py [--top 1,5,10,1000] [--threads 1] [--out docs/measurements/stem_probe]

ConSE (Norouzi et al. 2014, "Zero-Shot Learning by Convex Combination of Semantic Embeddings", eq. 1-2) needs
no training at all: an image's embedding is the convex combination of the text embeddings of its ``T`` most
probable ImageNet classes, weighted by the classifier's probabilities,

    f(x) = 1/Z * sum_{t=1..T} p(y_t | x) * s(y_t),    Z = sum_{t=1..T} p(y_t | x),

and its label is the nearest class-name embedding. Here ``p`` is the frozen EfficientNet-Lite0 under the
mini-CLIP's image tower (the same 128 px pixels), ``s`` is MiniLM's pooled embedding of "a photo of a
{ImageNet class}." with the captions' mean direction projected out (the pretraining script's centred start of
the text projection), and class names are embedded with the card's prompt ensembles through the same map.

It asks whether the ImageNet classifier's predictions on emoji and digits carry the transfer the pretraining's
ImageNet distillation term (``--imagenet-weight``) would pass to the tower: if ConSE is near chance on the
tuning sets, distillation has little to give. Measured on ``benchmarks/mini_clip_tuning.py``'s tuning sets (50
left-out pretraining classes in twitter and fluent3d, Fashion-MNIST train 3,000, MNIST-5k train); no reported
set is read. One json, ``<out>/conse.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "data_scripts", REPO / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from evaluate_mini_clip import zero_shot_accuracy  # noqa: E402
from mini_clip_tuning import TUNING_KEYS, tuning_sets, validation_classes  # noqa: E402
from pretrain_data import DataRecipe, emoji_pretrain_classes  # noqa: E402

from uniil_lib.clip_model import ClipModel  # noqa: E402
from uniil_lib.fileio import atomic_write_text  # noqa: E402
from uniil_lib.hybrid_vit import StemFeatureCache  # noqa: E402
from uniil_lib.imagenet_backbone import imagenet_class_names  # noqa: E402
from uniil_lib.mini_clip import MiniClipConfig, build_mini_clip, mini_preprocess, mini_tokenizer, stem_cache_folder  # noqa: E402

IMAGENET_PROMPT = "a photo of a {}."


def conse_embedding(probabilities: torch.Tensor, class_text: torch.Tensor, top: int) -> torch.Tensor:
    """``(B, K)`` classifier probabilities, ``(K, D)`` class text embeddings -> ``(B, D)`` ConSE embeddings.

    The probability-weighted mean of the ``top`` most probable classes' embeddings (Norouzi et al. 2014, eq. 2).
    """
    weights, classes = probabilities.topk(top, dim=1)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return (weights.unsqueeze(-1) * class_text[classes]).sum(dim=1)


class ConseCLIP(nn.Module):
    """The mini-CLIP's frozen parts as a CLIP: ConSE image embeddings, MiniLM text embeddings (centred map)."""

    def __init__(self, mini: nn.Module, imagenet_prompt_tokens: torch.Tensor, top: int):
        super().__init__()
        self.mini, self.top = mini, top
        width = mini.text.proj.weight.shape[0]
        with torch.no_grad():
            mini.text.proj.weight.copy_(torch.eye(width))
            raw = F.normalize(mini.encode_text(imagenet_prompt_tokens), dim=-1)
            mean = F.normalize(raw.mean(0), dim=0)
            mini.text.proj.weight.copy_(torch.eye(width) - torch.outer(mean, mean))
            self.register_buffer("imagenet_text", F.normalize(mini.encode_text(imagenet_prompt_tokens), dim=-1))
        self.logit_scale = mini.logit_scale

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        visual = self.mini.visual
        probabilities = visual.stem.imagenet_logits(visual.stem_features(pixels)).softmax(dim=1)
        return conse_embedding(probabilities, self.imagenet_text, self.top)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.mini.encode_text(tokens, normalize=normalize)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", default="1,5,10,1000", help="ImageNet classes combined (ConSE's T), comma-separated")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "measurements" / "stem_probe")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = MiniClipConfig()
    classes, _ = emoji_pretrain_classes(DataRecipe(), args.root)
    left_out = validation_classes(len(classes), 50)
    sets = tuning_sets([classes[c].name for c in left_out], args.root)
    tokenizer = mini_tokenizer(config)
    prompts = tokenizer([IMAGENET_PROMPT.format(name) for name in imagenet_class_names()])
    results = {}
    for top in (int(t) for t in args.top.split(",")):
        mini = build_mini_clip(config, stem_cache=StemFeatureCache(stem_cache_folder(config))).eval()
        clip = ClipModel(ConseCLIP(mini, prompts, top), mini_preprocess(config), tokenizer, f"conse-top{top}",
                         config.image_size)
        results[str(top)] = {key: zero_shot_accuracy(clip, imageset, templates)["top1"]
                                for key, imageset, templates in sets}
        print(f"ConSE, T = {top}: " + ", ".join(f"{k} {v:.1f}" for k, v in results[str(top)].items()), flush=True)
    record = {"method": "ConSE (Norouzi et al. 2014) on the frozen EfficientNet-Lite0 classifier and MiniLM",
              "imagenet_prompt": IMAGENET_PROMPT, "image_size": config.image_size, "tuning_keys": list(TUNING_KEYS),
              "top1_percent_by_T": results}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "conse.json", json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
