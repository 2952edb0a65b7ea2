"""Scenario builders and the evaluation rule of each protocol, on tiny synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from uniil_lib.scenarios import (DatasetPart, class_incremental, class_order, domain_incremental,
                                 task_incremental, uni_il)


def part(squares, name, n_classes, seed=0, names=None):
    train, test = squares(n_classes, 4, seed=seed), squares(n_classes, 2, seed=seed + 100)
    if names:
        train.class_names = list(names)
        test.class_names = list(names)
    return DatasetPart(name, train, test, ("a photo of a {}.",), name)


def test_task_incremental_gives_each_dataset_its_own_label_space(squares):
    s = task_incremental("til", [part(squares, "a", 3), part(squares, "b", 2, seed=1)])
    assert [len(step.class_ids) for step in s.steps] == [3, 2]
    assert s.steps[1].class_ids == (3, 4)
    assert s.eval_class_ids(0, after_step=1) == [0, 1, 2]
    assert s.eval_class_ids(1, after_step=0) == [3, 4]
    assert s.task_id_for(1) == 1
    assert set(s.steps[1].train.labels.tolist()) == {3, 4}
    assert s.classes[3].prompts == ("a photo of a colour 0.",)


def test_class_incremental_b0_and_bm(squares):
    s = class_incremental("cil", part(squares, "d", 10), increment=3, seed=0)
    assert [len(step.class_ids) for step in s.steps] == [3, 3, 3, 1]
    assert s.eval_class_ids(0, after_step=0) == [0, 1, 2]
    assert s.eval_class_ids(0, after_step=2) == list(range(9)), "all classes seen so far"
    assert s.task_id_for(0) is None
    order = class_order(10, 0)
    first_step_local = sorted(s.steps[0].label_map)
    assert first_step_local == sorted(order[:3]), "classes follow the seeded order"
    b5 = class_incremental("cil", part(squares, "d", 10), increment=5, base=5, seed=1)
    assert [len(step.class_ids) for step in b5.steps] == [5, 5]
    with pytest.raises(ValueError, match="increment"):
        class_incremental("cil", part(squares, "d", 10), increment=0)


def test_domain_incremental_keeps_one_label_space(squares):
    s = domain_incremental("dil", [part(squares, "x", 3), part(squares, "y", 3, seed=5)])
    assert s.steps[0].class_ids == s.steps[1].class_ids == (0, 1, 2)
    assert s.eval_class_ids(1, after_step=0) == [0, 1, 2]
    with pytest.raises(ValueError, match="share classes"):
        domain_incremental("dil", [part(squares, "x", 3), part(squares, "y", 3, names=["p", "q", "r"])])


def test_uni_il_interleaves_and_hides_task_identity(squares):
    til = task_incremental("t", [part(squares, "a", 2)])
    cil = class_incremental("c", part(squares, "b", 4, seed=2), increment=2, seed=0)
    dil = domain_incremental("d", [part(squares, "x", 3), part(squares, "y", 3, seed=9)])
    s = uni_il("u", [til, cil, dil], order=[1, 0, 2, 1, 2])
    assert [step.kind for step in s.steps] == ["class", "task", "domain", "class", "domain"]
    assert len(s.classes) == 2 + 4 + 3
    assert s.steps[1].class_ids == (0, 1) and s.steps[0].class_ids == (2, 3)
    assert np.isin(s.steps[0].train.labels, [2, 3]).all()
    assert s.task_id_for(0) is None
    # no task identity: a test image is classified among every class seen so far
    assert s.eval_class_ids(0, after_step=0) == [2, 3]
    assert s.eval_class_ids(0, after_step=2) == [0, 1, 2, 3, 6, 7, 8]
    with pytest.raises(ValueError, match="order"):
        uni_il("u", [til, cil], order=[0, 1])


def test_subsets_with_the_same_tag_but_other_images_get_other_cache_keys():
    """Regression: a step's subset was keyed by its name alone, so two seeds (other classes in
    'emoji-twitter 0-9') shared cached features."""
    import numpy as np
    from uniil_lib.data.base import ArrayImageSet

    base = ArrayImageSet(np.zeros((6, 4, 4), dtype=np.uint8), np.arange(6) % 3, ["a", "b", "c"], key="toy")
    one, other, again = (base.subset(i, tag="step 0:test") for i in ([0, 1], [2, 3], [0, 1]))
    assert one.key != other.key, "different images under one tag must not share a cache key"
    assert one.key == again.key, "the same images must keep their cache key"


def test_prefix_keeps_the_first_steps_and_the_evaluation_rule(squares):
    from uniil_lib.scenarios import DatasetPart, class_incremental

    data = DatasetPart("sq", squares(6, 2, seed=0), squares(6, 1, seed=1), ("a {} square.",), "toy")
    whole = class_incremental("toy", data, increment=2, seed=0)
    short = whole.prefix(2)
    assert [s.name for s in short.steps] == [s.name for s in whole.steps[:2]]
    assert short.eval_class_ids(1, 0) == whole.eval_class_ids(1, 0)
    import pytest
    with pytest.raises(ValueError, match="cannot keep the first 4"):
        whole.prefix(4)
