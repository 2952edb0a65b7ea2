"""What matched attributes carry (uniil_lib.attribute_analysis): hand-computed hit rates, and a stream end to end."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from uniil_lib.attribute_analysis import AttributeHits, attribute_hits, format_hits, owner_hits
from uniil_lib.attributes import AttributeBank, AttributePool
from uniil_lib.clip import TinyClipConfig, load_clip
from uniil_lib.scenarios import DatasetPart, class_incremental


def toy_bank() -> AttributeBank:
    """Class A owns two attributes near axis 0, class B one on axis 1; domains x and y sit on axes 2 and 3."""
    keys = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 0.3, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0],
                         [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    return AttributeBank(["a1", "a2", "b1", "x1", "y1"], F.normalize(keys, dim=-1),
                         ["class", "class", "class", "domain", "domain"], ["A", "A", "B", "x", "y"])


def test_hit_rates_on_a_hand_built_bank():
    bank = toy_bank()
    images = torch.tensor([[1.0, 0.1, 0.5, 0.0],    # class A, style x: both matched class attributes are A's
                           [0.2, 1.0, 0.0, 0.5],    # class B, style y: b1 first, then an A attribute
                           [0.1, 1.0, 0.5, 0.0]])   # labelled A but looks like B: top-1 wrong, 1 of 2 right
    hits, top1, chance = owner_hits(bank, images, ["A", "B", "A"], kind="class", allowed=["A", "B"], k=2)
    assert hits == pytest.approx((1.0 + 0.5 + 0.5) / 3)
    assert top1 == pytest.approx(2 / 3)
    assert chance == pytest.approx((2 / 3 + 1 / 3 + 2 / 3) / 3), "A owns 2 of the 3 class rows, B 1"
    hits, top1, chance = owner_hits(bank, images, ["x", "y", "y"], kind="domain", allowed=["x", "y"], k=1)
    assert (hits, top1, chance) == (pytest.approx(2 / 3), pytest.approx(2 / 3), pytest.approx(0.5))


def test_owner_hits_names_bad_input():
    bank = toy_bank()
    with pytest.raises(ValueError, match="not among the allowed"):
        owner_hits(bank, torch.ones(1, 4), ["C"], kind="class", allowed=["A", "B"], k=1)
    with pytest.raises(ValueError, match="one true class owner per image"):
        owner_hits(bank, torch.ones(2, 4), ["A"], kind="class", allowed=["A", "B"], k=1)


def test_attribute_hits_per_step_of_a_stream(squares):
    data = DatasetPart("sq", squares(4, 4, seed=0), squares(4, 3, seed=1), ("a {} square.",), "toy-style")
    stream = class_incremental("toy-cil", data, increment=2, seed=0)
    pool = AttributePool({c.name: [f"{c.name} edge", f"{c.name} fill", f"{c.name} glow"] for c in stream.classes},
                         {"toy-style": ["flat colour", "noisy background"]}, {"source": "test"})
    tiny = TinyClipConfig(embed_dim=16, image_size=16, patch_size=8, vision_width=16, vision_layers=1,
                          text_width=16, text_layers=1, heads=2, context_length=16)
    rows = attribute_hits(load_clip("tiny", tiny_config=tiny, seed=0), stream, pool=pool, class_attributes=3,
                          domain_attributes=2)
    assert [r.step for r in rows] == stream.task_names and [r.images for r in rows] == [6, 6]
    for r in rows:
        assert r.class_chance == pytest.approx(3 / 12), "3 of the 12 class attributes are each image's class's"
        assert (r.domain_hits, r.domain_top1, r.domain_chance) == (1.0, 1.0, 1.0), "one style: always its own"
        assert 0 <= r.class_hits <= 1 and 0 <= r.class_top1 <= 1
    table = format_hits(rows)
    assert table.count("\n") == 3 and "25.0" in table
    assert isinstance(rows[0], AttributeHits) and set(rows[0].as_dict()) >= {"class_hits", "domain_chance"}
    with pytest.raises(ValueError, match="split"):
        attribute_hits(None, stream, pool=pool, split="val")
