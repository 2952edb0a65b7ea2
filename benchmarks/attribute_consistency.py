"""How consistent is the gates' attribute input within a class, with the LLM's pool and with random words?

    .venv/bin/python benchmarks/attribute_consistency.py --scenarios dil-emoji,uniil-offline --seed 0

For every step's test images (the fast profile's stream of ``--seed``) it builds what MAGE's image gates read next to
the data feature (:meth:`uniil_lib.methods.mage.AttributeMatching.match`: the renormalised means of the 5 closest
class attributes and the 3 closest domain attributes of the frozen image feature), once with the shipped pool and
once with :func:`uniil_lib.attributes.random_word_pool` (seed 0, ``mage-randwords``), and prints the mean cosine
between two images of the same class and between two images of different classes; the frozen image feature itself
(``mage-imagefeat``'s input) for comparison. A question from issue 15, item 5: do random words give the gates an
input that varies more within a class? (``docs/measurements/mage_verdict.md``, the `uniil-offline` control.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def within_between(vectors: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean cosine between two different rows of the same label, and between rows of different labels."""
    unit = F.normalize(vectors.float(), dim=-1)
    cosine = unit @ unit.T
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(len(labels), dtype=torch.bool)
    other = labels[:, None] != labels[None, :]
    if not same.any() or not other.any():
        raise ValueError("need at least two rows of one label and two labels")
    return float(cosine[same].mean()), float(cosine[other].mean())


def main(argv: list[str] | None = None) -> int:
    from uniil_lib.attributes import AttributeBank, load_shipped_pool, random_word_pool, scenario_vocabulary
    from uniil_lib.clip import load_clip
    from uniil_lib.features import image_features
    from uniil_lib.named_scenarios import build_scenario
    from uniil_lib.profiles import get_profile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="dil-emoji,uniil-offline")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    profile = get_profile("fast")
    clip = load_clip(profile.model, pretrained=profile.pretrained, seed=args.seed, device="cpu")
    for name in args.scenarios.split(","):
        scenario = build_scenario(name, profile=profile, seed=args.seed)
        classes, domains = scenario_vocabulary(scenario)
        llm = load_shipped_pool().pool_for(classes, domains)
        pools = {"pool": llm, "random words": random_word_pool(llm, seed=0)}
        banks = {kind: AttributeBank.build(clip, pool) for kind, pool in pools.items()}
        print(f"### {name}, seed {args.seed}: mean cosine within a class / between classes (test images)")
        print("| step | " + " | ".join([*pools, "image feature"]) + " |")
        print("|---|" + "---|" * (len(pools) + 1))
        for step in scenario.steps:
            features = image_features(clip, step.test, batch_size=64, progress=False).float()
            labels = torch.as_tensor(step.test.labels)
            cells = []
            for kind, bank in banks.items():
                class_part, _ = bank.summarise(features, bank.mask("class", pools[kind].classes), 5)
                domain_part, _ = bank.summarise(features, bank.mask("domain", pools[kind].domains), 3)
                cells.append(within_between(torch.cat([class_part, domain_part], dim=-1), labels))
            cells.append(within_between(features, labels))
            print(f"| {step.name} | " + " | ".join(f"{w:.3f} / {b:.3f}" for w, b in cells) + " |", flush=True)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
