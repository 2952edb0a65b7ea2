"""``moe-adapters-cil``: MoE-Adapters4CL's class-incremental setting, as the authors' ``cil/`` code runs it.

The authors' repository (``JiazuoYu/MoE-Adapters4CL``) holds two different methods under one name. Its ``mtil/``
code is :mod:`uniil_lib.methods.moe_adapters` (22 experts, a router per task, activate-freeze, DDAS). Its
``cil/`` code, which produced the paper's CIFAR-100 and TinyImageNet class-incremental tables (and the
"about 4 M parameters" later CLIP-based CIL papers compare with), is this method. Every setting, with where it
was read (paths in that repository; line numbers of its current ``main``):

=============================  ===============================================================================
setting                        the authors' CIL code
=============================  ===============================================================================
experts per block              2 (``cil/clip/model.py`` line 292, ``experts_num = 2``)
experts per input              top-2 (line 290), so every input uses both experts, weighted by the softmax of
                               the two gate logits
expert                         down 64 (``cil/clip/adapter.py`` line 35), ReLU, dropout 0.1, up, scale 0.1,
                               "lora" init (model.py lines 309-314; adapter.py lines 43-47)
where                          every block of both towers, beside the MLP: ``x + mlp(ln_2(x)) + moe(x)``
                               (model.py lines 419-449; the same block class builds the image and the text
                               transformer, lines 460, 484, 551-557); router input the token-0 feature (421)
routers                        ONE, shared by all steps (``self.step = 1``, lines 304-308; the model is always
                               called with task id 0, ``cil/continual_clip/models.py`` lines 38 and 126)
gate noise                     ``softplus(x W_noise) + 1e-2`` (model.py lines 397-402), **also at evaluation**:
                               each block copies the module global ``global_is_train`` (True, line 15) when it
                               is built (line 288); ``forward`` later changes only the global (lines 630-632)
load-balancing loss            none (lines 418-449 compute the importance and no loss); we log it, never add it
activate-freeze, DDAS          none: every expert, the router and its noise weights train in every step
                               (models.py lines 69-79); no selector
training loss                  cross-entropy over the **current step's classes only** (models.py lines 96-100:
                               the text of this step's classes; lines 114-122 shift the targets to them)
label smoothing                0.0 (``cil/configs/class/cifar100_10-10-MoE-Adapters.yaml`` line 40)
epochs, schedule               1 epoch per step (models.py line 61); AdamW (line 85), weight decay 0.0 (yaml
                               line 34), cosine with 30 warm-up steps (lines 86-88;
                               ``cil/continual_clip/utils.py`` lines 56-75). Their loop runs one batch more
                               than an epoch (models.py line 106), at learning rate 0 (the cosine's end):
                               it changes no weight, so we leave it out.
learning rate, batch           1e-3, batch 128 (yaml lines 39, 20; batch 64 in the 2-2 and TinyImageNet
                               configs)
prompt                         "a bad photo of a {}." for training and evaluation, one template, no ensemble
                               (yaml line 18; models.py lines 43-46 and 98)
evaluation                     all classes seen so far, the one router (models.py lines 36-40,
                               ``cil/main.py`` line 55)
preprocessing                  a random resized crop (scale 0.9-1.0) for training **and** evaluation:
                               ``clip.load`` returns the training transform second (``cil/clip/clip.py``
                               lines 63-71, 233-235), the one ``models.py`` line 29 keeps and
                               ``cil/continual_clip/datasets.py`` line 101 applies to both splits
model                          ViT-B/16 (yaml line 17) in float32 (``cil/clip/model.py`` lines 711-712)
=============================  ===============================================================================

The optimisation settings live in the profiles (:mod:`uniil_lib.profiles`, ``method_train``) and in the paper
configs (``configs/awpf_*.json``, ``method_train``). **Our choice for the fast profile**: the method's structure
above, but the fast profile's data budget (12 epochs of 32-image batches, at the fast profile's adapter learning
rate 1e-2, no warm-up): one epoch of the fast profile's 12 images per class is one or two batches per step,
too little to learn anything, so the single epoch would measure nothing but the budget.

Where we differ: the library's fixed preprocessing (resize and centre crop) in place of their random crop,
since the frozen-block cache needs each image to give the same pixels every time; in the fast profile the adapters
sit in the top quarter of each tower (that profile's adapter placement, for that cache; every block in the full
profile); class order, class
names and data come from our scenarios; the
text embeddings of the classes are computed (with their gate noise) once per evaluation of a step's label space,
not once per test batch of 64.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from ..adapters import AdapterConfig
from .adapter import AdapterTuning

REFERENCE_PROMPT = "a bad photo of a {}."


class MoEAdaptersCIL(AdapterTuning):
    """Two experts, one shared noisy top-2 router, both towers, no freeze, no selector (the module docstring).

    Args:
        template: the one prompt of every class, in training and evaluation (the authors': "a bad photo of a {}.").
        **options: as for :class:`~uniil_lib.methods.adapter.AdapterTuning`.
    """

    name = "moe-adapters-cil"
    uses_moe = True
    uses_task_id = False

    def __init__(self, clip, scenario, config, *, template: str = REFERENCE_PROMPT, **options):
        if template.count("{}") != 1:
            raise ValueError(f"template needs exactly one '{{}}' for the class name, got {template!r}")
        super().__init__(clip, scenario, config, **options)
        self.template = template
        self.adapters.add_router()  # the one router, zero-initialised: the method starts as zero-shot CLIP
        self.adapters.set_trainable(0)

    def default_adapters(self, placement: str) -> AdapterConfig:
        return replace(super().default_adapters(placement), num_experts=2, top_k=2, freeze_per_task=0,
                       gate_noise_at_eval=True)

    def before_step(self, step) -> None:
        self.adapters.set_trainable(0)  # every expert and the one router train in every step

    def training_route(self, step) -> int:
        return 0

    def routes(self, n: int, task_id: int | None, features: Callable[[], torch.Tensor]) -> torch.Tensor:
        return torch.zeros(n, dtype=torch.long)

    def class_prompts(self, class_id: int) -> tuple[str, ...]:
        return (self.template.format(self.scenario.classes[class_id].name),)

    def candidate_targets(self, labels: torch.Tensor, step) -> tuple[list[int], torch.Tensor]:
        """The current step's classes only (not every class seen so far), and labels as positions among them."""
        class_ids = list(step.class_ids)
        position = {c: k for k, c in enumerate(class_ids)}
        unknown = sorted({int(c) for c in labels.tolist()} - set(position))
        if unknown:
            raise ValueError(f"{self.name}: labels {unknown} are not classes of step {step.name!r}")
        return class_ids, torch.tensor([position[int(c)] for c in labels.tolist()], device=labels.device)
