"""What the matched attributes carry: do an image's best-matching attributes belong to its class and its style?

MAGE (:mod:`uniil_lib.methods.mage`) feeds each image's matched attributes to its gates. Whether that can
help depends first on what the matching finds. For every test image of a stream step this module matches the
image's frozen CLIP feature against the attribute pool exactly as MAGE does
(:meth:`~uniil_lib.attributes.AttributeBank.summarise`: the ``k`` closest class attributes among every class
of the scenario's pool, the ``k`` closest domain attributes among every domain's) and counts

- ``class_hits``: the share of the image's ``k_cls`` matched class attributes owned by its true class,
  averaged over the step's images (each (owner, attribute) row of the pool is one candidate, so a string two
  classes share is two candidates, as in MAGE's matching);
- ``class_top1``: the share of images whose single closest class attribute is owned by their true class;
- ``domain_hits`` / ``domain_top1``: the same for the domain attributes and the step's style (``Step.domain``);
- ``*_chance``: what a matching blind to the image would score: the share of the allowed attributes owned by
  the true class (or style), averaged over the images (both the top-1 and the top-k expectation).

A step's hits far above chance say the attributes describe *its* images; hits at chance say the gates receive
noise. (Issue 15, item 5: measure this with the model MAGE runs on before changing how attributes enter the
gates.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from .attributes import AttributeBank, AttributePool, load_shipped_pool, scenario_vocabulary
from .features import image_features


@dataclass(frozen=True)
class AttributeHits:
    """How often one step's test images match their own class's and style's attributes (module docstring)."""

    step: str
    images: int
    class_hits: float
    class_top1: float
    class_chance: float
    domain_hits: float
    domain_top1: float
    domain_chance: float

    def as_dict(self) -> dict:
        return asdict(self)


def owner_hits(bank: AttributeBank, image_features: torch.Tensor, owners: Sequence[str], *, kind: str,
               allowed: Sequence[str], k: int) -> tuple[float, float, float]:
    """``(hits, top1, chance)`` of ``(N, D)`` images whose true owners (class names or domains) are ``owners``.

    Matching is MAGE's: the ``k`` attributes of ``kind`` owned by one of ``allowed`` closest to each image.

    Raises:
        ValueError: no images, ``owners`` of another length, or a true owner outside ``allowed``.
    """
    if len(owners) != len(image_features) or len(owners) == 0:
        raise ValueError(f"need one true {kind} owner per image and at least one image; got {len(owners)} owners "
                         f"for {len(image_features)} images")
    stray = sorted(set(owners) - set(allowed))
    if stray:
        raise ValueError(f"true {kind} owners {stray[:5]} are not among the allowed ones: the pool must cover them")
    mask = bank.mask(kind, allowed)
    _, rows = bank.summarise(image_features, mask, k)  # (N, k') bank rows, closest first
    matched = [[bank.owners[r] for r in row] for row in rows.tolist()]
    hits = [sum(o == true for o in row) / len(row) for row, true in zip(matched, owners)]
    top1 = [row[0] == true for row, true in zip(matched, owners)]
    allowed_owners = [o for o, keep in zip(bank.owners, mask.tolist()) if keep]
    chance = [allowed_owners.count(true) / len(allowed_owners) for true in owners]
    n = len(owners)
    return sum(hits) / n, sum(top1) / n, sum(chance) / n


def attribute_hits(clip, scenario, *, pool: AttributePool | None = None, class_attributes: int = 5,
                   domain_attributes: int = 3, split: str = "test", batch_size: int = 256) -> list[AttributeHits]:
    """Per step of ``scenario``: how often its images' matched attributes belong to their class and style.

    Args:
        clip: the (frozen) CLIP model MAGE runs on; its image features come from the feature cache.
        scenario: the stream.
        pool: the attribute pool (default: the shipped pool, restricted to the scenario, as MAGE's default).
        class_attributes, domain_attributes: ``k_cls`` and ``k_dom`` (MAGE's defaults 5 and 3).
        split: ``"test"`` or ``"train"`` images of each step.
        batch_size: images per forward pass.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    classes, domains = scenario_vocabulary(scenario)
    pool = (pool or load_shipped_pool()).pool_for(classes, domains)
    bank = AttributeBank.build(clip, pool)
    rows = []
    for step in scenario.steps:
        images = getattr(step, split)
        features = image_features(clip, images, batch_size=batch_size, progress=False).float()
        names = [scenario.classes[int(label)].name for label in images.labels]
        class_part = owner_hits(bank, features, names, kind="class", allowed=list(pool.classes), k=class_attributes)
        domain_part = owner_hits(bank, features, [step.domain] * len(names), kind="domain",
                                 allowed=list(pool.domains), k=domain_attributes)
        rows.append(AttributeHits(step.name, len(names), *class_part, *domain_part))
    return rows


def format_hits(rows: Sequence[AttributeHits]) -> str:
    """A Markdown table of :func:`attribute_hits` in %, each rate beside its chance level."""
    lines = ["| step | images | class hits (chance) | class top-1 | domain hits (chance) | domain top-1 |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.step} | {r.images} | {100 * r.class_hits:.1f} ({100 * r.class_chance:.1f}) | "
                     f"{100 * r.class_top1:.1f} | {100 * r.domain_hits:.1f} ({100 * r.domain_chance:.1f}) | "
                     f"{100 * r.domain_top1:.1f} |")
    return "\n".join(lines)
