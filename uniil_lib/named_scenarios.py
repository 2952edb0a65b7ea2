"""The named scenarios the notebooks and the benchmark CLI use.

Offline (work on a fresh machine here; emoji data via ``python data_scripts/fetch_emoji.py``):

- ``mtil-offline`` (task-incremental): five datasets in sequence, MTIL-style, task identity at test time.
- ``cil-emoji`` (class-incremental): 100 held-out emoji classes in one style, B0 Inc10.
- ``cil-emoji-xstyle`` (class-incremental): the same classes and class order, trained on two styles and tested on
  the two others (:func:`cil_emoji_xstyle` takes other style assignments).
- ``dil-emoji`` (domain-incremental): held-out emoji classes, one drawing style per step.
- ``uniil-offline`` (Uni-IL): task, class and domain increments mixed in one stream.

Online (need internet once, through ``data_scripts``): ``cifar100-b0inc10`` (class-incremental) and
``mtil`` (the 11-dataset MTIL order I of ZSCL). ``imagenet100-b0inc10`` (class-incremental) reads ImageNet-100
from files you place yourself (``python data_scripts/fetch_torchvision.py --dataset imagenet100`` says how).

``uniil`` (online too) is the paper-scale Uni-IL stream: CIFAR-100 class increments, DomainNet domain increments
and MTIL task increments, interleaved (:func:`uniil_stream_parts`; the exact definition is in the README).

Every builder subsamples by the profile (``train_per_class``, ``test_per_class``) with a seeded generator,
so a seed fixes the data as well as the training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np

from .data import get_source, load_dataset
from .data.base import ImageSet
from .emoji_scenarios import emoji_cil_part, emoji_dil_parts, emoji_mtil_parts, emoji_part, uniil_emoji_halves
from .emoji_scenarios import XSTYLE_TEST, XSTYLE_TRAIN, emoji_xstyle_part, xstyle_label
from .paths import data_root
from .profiles import Profile, get_profile
from .scenarios import DatasetPart, Scenario, class_incremental, domain_incremental, task_incremental, uni_il
from .scenarios import relabel

MTIL_ORDER_I = ("aircraft", "caltech101", "cifar100", "dtd", "eurosat", "flowers102", "food101", "mnist",
                "oxford-pets", "stanford-cars", "sun397")


@dataclass(frozen=True)
class NamedScenario:
    """A scenario recipe: ``build(profile, seed, root) -> Scenario``; ``heldout_split``: its classes are the
    held-out EmojiDomains classes (benchmarks record and check that split's fingerprint)."""

    name: str
    protocol: str
    offline: bool
    description: str
    build: Callable[[Profile, int, Path], Scenario]
    heldout_split: bool = False


def _subsample(imageset: ImageSet, per_class: int | None, seed: int) -> ImageSet:
    return imageset if per_class is None else imageset.per_class_subset(per_class, seed=seed)


def dataset_part(name: str, profile: Profile, seed: int, root: Path, *, label: str | None = None) -> DatasetPart:
    """Load a registered dataset's two splits, subsampled by the profile."""
    spec = get_source(name)
    train = _subsample(load_dataset(name, "train", root=root), profile.train_per_class, seed)
    test = _subsample(load_dataset(name, "test", root=root), profile.test_per_class, seed)
    return DatasetPart(label or name, train, test, spec.templates, spec.domain)


def _mtil_offline(profile: Profile, seed: int, root: Path) -> Scenario:
    names = ["fashion-mnist", "mnist-5k", "optdigits"]
    parts = [dataset_part(n, profile, seed, root) for n in names]
    return task_incremental("mtil-offline", parts + emoji_mtil_parts(profile, seed, root))


def _cil_emoji(profile: Profile, seed: int, root: Path) -> Scenario:
    return class_incremental("cil-emoji", emoji_cil_part(profile, seed, root), increment=10, seed=seed)


def cil_emoji_xstyle(*, profile: str | Profile | None = None, seed: int = 0, root: str | Path | None = None,
                     train_styles=XSTYLE_TRAIN, test_styles=XSTYLE_TEST) -> Scenario:
    """``cil-emoji``'s stream (the 100 held-out classes, B0 Inc10, the same seeded class order) with each class
    trained on drawings in ``train_styles`` and tested on drawings in ``test_styles`` (disjoint; see
    :func:`uniil_lib.emoji_scenarios.emoji_xstyle_part`). The defaults are the named scenario
    ``cil-emoji-xstyle``; another assignment is named ``cil-emoji-<train>-to-<test>``.

    Raises:
        ValueError: unknown styles, or a style both trained and tested on.
    """
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    part = emoji_xstyle_part(prof, Path(root) if root is not None else data_root(), train_styles=train_styles,
                             test_styles=test_styles)
    name = "cil-" + xstyle_label(train_styles, test_styles)
    return class_incremental(name, part, increment=10, seed=seed)


def _cil_emoji_xstyle(profile: Profile, seed: int, root: Path) -> Scenario:
    return cil_emoji_xstyle(profile=profile, seed=seed, root=root)


def _dil_emoji(profile: Profile, seed: int, root: Path) -> Scenario:
    return domain_incremental("dil-emoji", emoji_dil_parts(profile, seed, root))


def _uniil_offline(profile: Profile, seed: int, root: Path) -> Scenario:
    half_a, half_b = uniil_emoji_halves(root)
    fashion = task_incremental("fashion", [dataset_part("fashion-mnist", profile, seed, root)])
    emoji_classes = class_incremental("emoji-classes", emoji_part("emoji-twitter", "twitter", half_a, profile, root),
                                      increment=10, seed=seed)
    digits = domain_incremental("digits", [dataset_part("mnist-5k", profile, seed, root),
                                           dataset_part("optdigits", profile, seed, root)])
    emoji_styles = domain_incremental("emoji-styles", [emoji_part(f"emoji-{s}", s, half_b, profile, root)
                                                       for s in ("google", "openmoji", "fluent3d")])
    # fashion, emoji classes 1, mnist, emoji classes 2, emoji google, emoji classes 3, emoji openmoji,
    # optdigits, emoji fluent3d: every kind of increment, interleaved.
    order = [0, 1, 2, 1, 3, 1, 3, 2, 3]
    return uni_il("uniil-offline", [fashion, emoji_classes, digits, emoji_styles], order=order)


def _cifar100(profile: Profile, seed: int, root: Path) -> Scenario:
    return class_incremental("cifar100-b0inc10", dataset_part("cifar100", profile, seed, root), increment=10, seed=seed)


def _imagenet100(profile: Profile, seed: int, root: Path) -> Scenario:
    return class_incremental("imagenet100-b0inc10", dataset_part("imagenet100", profile, seed, root), increment=10,
                             seed=seed)


def _mtil(profile: Profile, seed: int, root: Path) -> Scenario:
    return task_incremental("mtil", [dataset_part(n, profile, seed, root) for n in MTIL_ORDER_I])


# ----- uniil: the paper-scale Uni-IL stream ------------------------------------------------------------------
UNIIL_CIFAR_STEPS = 5  # CIFAR-100 in 5 class increments (20 classes each)
UNIIL_DOMAIN_ORDER = ("real", "clipart", "painting", "sketch", "infograph", "quickdraw")
UNIIL_DOMAINNET_CLASSES = 50
UNIIL_MTIL_TASKS = ("aircraft", "dtd", "mnist", "oxford-pets")


def uniil_domainnet_classes(names: list[str], taken: set[str], n: int = UNIIL_DOMAINNET_CLASSES) -> list[str]:
    """The DomainNet classes of ``uniil``: ``n`` of ``names`` whose lower-case name is not in ``taken`` (the other
    parts' classes, so that no two classes of the stream share a name), chosen by a shuffle seeded with 0 (fixed,
    whatever the run's seed), in alphabetical order."""
    free = [name for name in names if name.lower() not in taken]
    shuffled = [free[i] for i in np.random.default_rng(0).permutation(len(free))]
    return sorted(shuffled[:n])


def round_robin(lengths: list[int]) -> list[int]:
    """A stream order taking one step of each part in turn until each is used up:
    ``[2, 3, 1] -> [0, 1, 2, 0, 1, 1]``."""
    order, used = [], [0] * len(lengths)
    while len(order) < sum(lengths):
        for part, length in enumerate(lengths):
            if used[part] < length:
                order.append(part)
                used[part] += 1
    return order


def _restrict(part: DatasetPart, names: list[str], tag: str) -> DatasetPart:
    """``part`` with only the classes ``names`` (relabelled 0..k-1 in that order)."""
    index = {name: label for label, name in enumerate(part.train.class_names)}
    label_map = {index[name]: new for new, name in enumerate(names)}
    return DatasetPart(part.name, relabel(part.train, label_map, names, tag=f"{tag}:train"),
                       relabel(part.test, label_map, names, tag=f"{tag}:test"), part.templates, part.domain)


def uniil_stream_parts(profile: Profile, seed: int, root: Path) -> list[Scenario]:
    """The three parts of ``uniil``: CIFAR-100 in :data:`UNIIL_CIFAR_STEPS` class increments (seeded class order),
    DomainNet's :data:`UNIIL_DOMAIN_ORDER` domains over the classes of :func:`uniil_domainnet_classes`, and the MTIL
    tasks :data:`UNIIL_MTIL_TASKS` (whose class names no other part uses)."""
    cifar_part = dataset_part("cifar100", profile, seed, root)
    increment = -(-len(cifar_part.train.class_names) // UNIIL_CIFAR_STEPS)
    cifar = class_incremental("cifar100", cifar_part, increment=increment, seed=seed)
    tasks = task_incremental("mtil-tasks", [dataset_part(name, profile, seed, root) for name in UNIIL_MTIL_TASKS])
    domains = [dataset_part(f"domainnet-{domain}", profile, seed, root) for domain in UNIIL_DOMAIN_ORDER]
    taken = {spec.name.lower() for spec in cifar.classes + tasks.classes}
    chosen = uniil_domainnet_classes(list(domains[0].train.class_names), taken)
    restricted = [_restrict(part, chosen, "uniil classes") for part in domains]
    return [cifar, domain_incremental("domainnet", restricted), tasks]


def _uniil(profile: Profile, seed: int, root: Path) -> Scenario:
    parts = uniil_stream_parts(profile, seed, root)
    return uni_il("uniil", parts, order=round_robin([len(part.steps) for part in parts]))


def _registry() -> Mapping[str, NamedScenario]:
    entries = [
        NamedScenario("mtil-offline", "task-incremental", True,
                      "Fashion-MNIST, MNIST-5k, optdigits and two emoji tasks, MTIL-style", _mtil_offline,
                      heldout_split=True),
        NamedScenario("cil-emoji", "class-incremental", True,
                      "100 held-out emoji classes in one style, B0 Inc10", _cil_emoji, heldout_split=True),
        NamedScenario("cil-emoji-xstyle", "class-incremental", True,
                      f"cil-emoji's classes, trained on {'+'.join(XSTYLE_TRAIN)}, tested on {'+'.join(XSTYLE_TEST)}",
                      _cil_emoji_xstyle, heldout_split=True),
        NamedScenario("dil-emoji", "domain-incremental", True,
                      "held-out emoji classes, one drawing style per step", _dil_emoji, heldout_split=True),
        NamedScenario("uniil-offline", "uni-il", True,
                      "task, class and domain increments mixed in one stream", _uniil_offline, heldout_split=True),
        NamedScenario("cifar100-b0inc10", "class-incremental", False,
                      "CIFAR-100, 10 steps of 10 classes (needs internet once)", _cifar100),
        NamedScenario("imagenet100-b0inc10", "class-incremental", False,
                      "ImageNet-100, 10 steps of 10 classes (ImageNet placed by hand)", _imagenet100),
        NamedScenario("mtil", "task-incremental", False,
                      "the 11 MTIL datasets in ZSCL's order I (needs internet once)", _mtil),
        NamedScenario("uniil", "uni-il", False,
                      "CIFAR-100 classes, DomainNet domains and MTIL tasks in one stream (needs internet once)",
                      _uniil),
    ]
    return MappingProxyType({entry.name: entry for entry in entries})


def scenario_names() -> list[str]:
    """Names of all named scenarios."""
    return list(_registry())


def get_named_scenario(name: str) -> NamedScenario:
    registry = _registry()
    if name not in registry:
        raise KeyError(f"unknown scenario {name!r}; valid scenarios: {', '.join(registry)}")
    return registry[name]


def build_scenario(name: str, *, profile: str | Profile | None = None, seed: int = 0,
                   root: str | Path | None = None) -> Scenario:
    """Build the named scenario ``name`` for ``profile`` (default fast) and ``seed``.

    Raises:
        KeyError: unknown scenario name (lists the valid ones).
        DatasetNotFoundError: data missing (names the data_scripts command that fetches it).
    """
    recipe = get_named_scenario(name)
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    return recipe.build(prof, seed, Path(root) if root is not None else data_root())
