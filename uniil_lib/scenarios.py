"""Continual-learning scenarios: a stream of steps, and how each step is evaluated.

The field names three ways a stream can grow (van de Ven, Tuytelaars & Tolias, 2022, "Three types of
incremental learning"), and Uni-IL (Meng et al., MMAsia 2025) mixes them in one stream:

- **task-incremental** (MTIL, Zheng et al. 2023): each step is a new dataset with its own classes; at test
  time the task is known, so a test image is classified among its own dataset's classes.
- **class-incremental** (B0 IncN / Bm IncN): one dataset's classes arrive in groups; a test image is
  classified among *all classes seen so far*.
- **domain-incremental**: the same classes in a new domain (style) each step; one fixed label space.
- **Uni-IL**: a stream whose steps are any of the three. No task identity at test time.

One rule covers all four. Every step belongs to a *group* (a label space that can grow): a dataset in
task-incremental learning, the whole stream in class- or domain-incremental learning. The test images of
step ``j``, evaluated after training step ``i``, are classified among the classes of all steps of
``j``'s group up to step ``max(i, j)`` (:meth:`Scenario.eval_class_ids`). In a Uni-IL stream nothing
tells a method which part of the stream an image comes from, so there the candidates are the classes of
*all* steps up to ``max(i, j)`` (our reading of "no task identity at test time"). Labels everywhere are
*global* class ids into ``Scenario.classes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .data.base import ArrayImageSet, FunctionImageSet, ImageSet

PROTOCOLS = ("task-incremental", "class-incremental", "domain-incremental", "uni-il")
STEP_KINDS = ("task", "class", "domain")


@dataclass(frozen=True)
class ClassSpec:
    """One class of a scenario: its name and the zero-shot prompts that describe it."""

    name: str
    prompts: tuple[str, ...]
    source: str = ""


@dataclass
class Step:
    """One experience of the stream.

    Attributes:
        index: position in the stream.
        name: human-readable, e.g. ``"fashion-mnist"`` or ``"emoji-twitter 10-19"``.
        kind: ``"task"``, ``"class"`` or ``"domain"`` increment.
        train / test: images whose labels are global class ids.
        class_ids: the global ids of the classes this step trains on.
        domain: the image domain (style), e.g. ``"emoji-google"``.
        group: the label space this step extends (see the module docstring).
        label_map: the source dataset's local label -> global class id.
    """

    index: int
    name: str
    kind: str
    train: ImageSet
    test: ImageSet
    class_ids: tuple[int, ...]
    domain: str
    group: str
    label_map: dict[int, int] = field(default_factory=dict)


@dataclass
class Scenario:
    """A named stream of steps over one global class list.

    Attributes:
        name: e.g. ``"mtil-offline"``.
        protocol: one of :data:`PROTOCOLS`.
        classes: the global class list; ``classes[k]`` is class id ``k``.
        steps: the stream.
        task_id_at_test: whether methods may use the step index of a test image (task-incremental only).
    """

    name: str
    protocol: str
    classes: list[ClassSpec]
    steps: list[Step]
    task_id_at_test: bool = False

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if not self.steps:
            raise ValueError(f"scenario {self.name!r} has no steps")

    @property
    def task_names(self) -> list[str]:
        return [step.name for step in self.steps]

    def eval_class_ids(self, test_step: int, after_step: int) -> list[int]:
        """Global class ids among which test images of ``test_step`` are classified after ``after_step``."""
        group = self.steps[test_step].group
        horizon = max(test_step, after_step)
        ids: set[int] = set()
        for step in self.steps[: horizon + 1]:
            if step.group == group or self.protocol == "uni-il":
                ids.update(step.class_ids)
        return sorted(ids)

    def prefix(self, n_steps: int) -> "Scenario":
        """The first ``n_steps`` steps as a stream of their own (a shorter run for a notebook or a test).
        Class ids and the class list stay those of the whole stream."""
        if not 1 <= n_steps <= len(self.steps):
            raise ValueError(f"{self.name} has {len(self.steps)} steps; cannot keep the first {n_steps}")
        return Scenario(f"{self.name}[:{n_steps}]", self.protocol, self.classes, list(self.steps[:n_steps]),
                        self.task_id_at_test)

    def task_id_for(self, test_step: int) -> int | None:
        """The task identity a method may use for ``test_step``'s images (None when the protocol hides it)."""
        return test_step if self.task_id_at_test else None

    def describe(self) -> str:
        lines = [f"{self.name} ({self.protocol}, {len(self.steps)} steps, {len(self.classes)} classes)"]
        for step in self.steps:
            lines.append(
                f"  {step.index:2d} {step.kind:6s} {step.name:28s} classes={len(step.class_ids):3d} "
                f"train={len(step.train):5d} test={len(step.test):5d} domain={step.domain}"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class DatasetPart:
    """A dataset handed to a builder: train and test images (local labels), templates and domain."""

    name: str
    train: ImageSet
    test: ImageSet
    templates: tuple[str, ...]
    domain: str


def relabel(imageset: ImageSet, label_map: dict[int, int], class_names: Sequence[str], *, tag: str) -> ImageSet:
    """Keep images whose label is in ``label_map`` and map their labels to global ids."""
    keep = np.flatnonzero(np.isin(imageset.labels, list(label_map)))
    chosen = imageset.subset(keep, tag=tag)
    new_labels = np.array([label_map[int(label)] for label in chosen.labels], dtype=np.int64)
    if isinstance(chosen, ArrayImageSet):
        return ArrayImageSet(chosen.images, new_labels, class_names, key=chosen.key)
    if isinstance(chosen, FunctionImageSet):
        return FunctionImageSet(chosen.load, new_labels, list(class_names), chosen.key)
    raise TypeError(f"cannot relabel an ImageSet of type {type(chosen).__name__}")


def _add_classes(classes: list[ClassSpec], part: DatasetPart, local_ids: Sequence[int]) -> dict[int, int]:
    label_map = {}
    for local in local_ids:
        name = part.train.class_names[local]
        label_map[int(local)] = len(classes)
        classes.append(ClassSpec(name, tuple(t.format(name) for t in part.templates), part.name))
    return label_map


def _make_step(index, name, kind, part, label_map, classes, group) -> Step:
    names = [c.name for c in classes]
    return Step(
        index=index, name=name, kind=kind,
        train=relabel(part.train, label_map, names, tag=f"{name}:train"),
        test=relabel(part.test, label_map, names, tag=f"{name}:test"),
        class_ids=tuple(sorted(label_map.values())), domain=part.domain, group=group, label_map=label_map,
    )


def _finalize(steps: list[Step], classes: list[ClassSpec]) -> list[Step]:
    """Give every step's ImageSets the final global class list (later steps add classes)."""
    names = [c.name for c in classes]
    for step in steps:
        step.train.class_names = list(names)
        step.test.class_names = list(names)
    return steps


def task_incremental(name: str, parts: Sequence[DatasetPart]) -> Scenario:
    """MTIL-style: one step per dataset, each its own label space; task identity known at test time."""
    classes: list[ClassSpec] = []
    steps = []
    for index, part in enumerate(parts):
        label_map = _add_classes(classes, part, range(len(part.train.class_names)))
        steps.append(_make_step(index, part.name, "task", part, label_map, classes, group=part.name))
    return Scenario(name, "task-incremental", classes, _finalize(steps, classes), task_id_at_test=True)


def class_order(n_classes: int, seed: int) -> list[int]:
    """The seeded class order used by class-incremental splits (seed 1993 is the field's habit; ours is 0)."""
    return np.random.default_rng(seed).permutation(n_classes).tolist()


def class_incremental(name: str, part: DatasetPart, *, increment: int, base: int = 0, seed: int = 0) -> Scenario:
    """B{base} Inc{increment}: the first step learns ``base`` classes (or ``increment`` if base is 0), then
    ``increment`` new classes per step, in a seeded random class order. Evaluation: all classes seen so far."""
    n_classes = len(part.train.class_names)
    if increment <= 0 or base < 0 or base >= n_classes:
        raise ValueError(f"need increment > 0 and 0 <= base < {n_classes}; got base={base}, increment={increment}")
    order = class_order(n_classes, seed)
    first = base or increment
    chunks = [order[:first]] + [order[k : k + increment] for k in range(first, n_classes, increment)]
    classes: list[ClassSpec] = []
    steps = []
    for index, chunk in enumerate(chunks):
        label_map = _add_classes(classes, part, chunk)
        step_name = f"{part.name} {len(classes) - len(chunk)}-{len(classes) - 1}"
        steps.append(_make_step(index, step_name, "class", part, label_map, classes, group=part.name))
    return Scenario(name, "class-incremental", classes, _finalize(steps, classes))


def domain_incremental(name: str, parts: Sequence[DatasetPart]) -> Scenario:
    """The same classes (by name) in a new domain each step; one fixed label space."""
    reference = list(parts[0].train.class_names)
    for part in parts[1:]:
        if list(part.train.class_names) != reference:
            raise ValueError(
                f"domain-incremental parts must share classes in the same order; {part.name!r} differs from "
                f"{parts[0].name!r}. Restrict each part to the common classes first."
            )
    classes: list[ClassSpec] = []
    label_map = _add_classes(classes, parts[0], range(len(reference)))
    steps = [
        _make_step(index, part.name, "domain", part, label_map, classes, group=name)
        for index, part in enumerate(parts)
    ]
    return Scenario(name, "domain-incremental", classes, _finalize(steps, classes))


def uni_il(name: str, scenarios: Sequence[Scenario], *, order: Sequence[int] | None = None) -> Scenario:
    """A Uni-IL stream: the steps of several scenarios in one stream, with no task identity at test time.

    Each sub-scenario keeps its own label-space groups (prefixed by its name) and its classes get new
    global ids, so a class-incremental part still grows and a domain-incremental part stays fixed.

    Args:
        name: the stream's name.
        scenarios: the parts.
        order: which part each stream position takes its next step from, e.g. ``[0, 1, 1, 2, 1]``
            interleaves; default: all steps of part 0, then of part 1, and so on.
    """
    order = list(order) if order is not None else [k for k, sub in enumerate(scenarios) for _ in sub.steps]
    expected = sorted(k for k, sub in enumerate(scenarios) for _ in sub.steps)
    if sorted(order) != expected:
        raise ValueError(f"order must use part k exactly len(part k.steps) times; got {order}")
    offsets = np.cumsum([0] + [len(sub.classes) for sub in scenarios])[:-1]
    classes = [spec for sub in scenarios for spec in sub.classes]
    cursors = [0] * len(scenarios)
    steps: list[Step] = []
    for part in order:
        sub, offset = scenarios[part], int(offsets[part])
        step = sub.steps[cursors[part]]
        cursors[part] += 1
        steps.append(Step(
            index=len(steps), name=step.name, kind=step.kind,
            train=_shift_labels(step.train, offset), test=_shift_labels(step.test, offset),
            class_ids=tuple(c + offset for c in step.class_ids), domain=step.domain,
            group=f"{sub.name}/{step.group}",
            label_map={local: glob + offset for local, glob in step.label_map.items()},
        ))
    return Scenario(name, "uni-il", classes, _finalize(steps, classes))


def _shift_labels(imageset: ImageSet, offset: int) -> ImageSet:
    identity = {int(label): int(label) + offset for label in np.unique(imageset.labels)}
    placeholder = [""] * (int(imageset.labels.max()) + offset + 1 if len(imageset) else 0)
    return relabel(imageset, identity, placeholder, tag=f"+{offset}")
