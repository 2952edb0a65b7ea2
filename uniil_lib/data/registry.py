"""The dataset registry: every source uniil_lib can load, by name.

A source is a :class:`~uniil_lib.data.source_spec.SourceSpec`: how to load a split, whether it works offline,
which data_scripts command fetches it, and the zero-shot prompt templates that suit its images. Sources are
grouped by where they come from (``offline``, ``emoji``, ``torchvision``, ``domainnet``); each group's module lists its
own specs, and this module only gathers them into one read-only mapping.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from ..paths import data_root
from .base import ImageSet
from .domainnet import domainnet_sources
from .emoji import emoji_sources
from .offline import offline_sources
# SourceSpec and SPLITS live in source_spec, which the source modules import; re-exported here.
from .source_spec import SPLITS, SourceSpec  # noqa: F401
from .torchvision_sources import torchvision_sources


def _all_specs() -> Mapping[str, SourceSpec]:
    specs: dict[str, SourceSpec] = {}
    for spec in [*offline_sources(), *emoji_sources(), *torchvision_sources(), *domainnet_sources()]:
        if spec.name in specs:
            raise RuntimeError(f"two dataset sources are both named {spec.name!r}")
        specs[spec.name] = spec
    return MappingProxyType(specs)


def source_names() -> list[str]:
    """Names of every registered dataset source."""
    return sorted(_all_specs())


def get_source(name: str) -> SourceSpec:
    """Return the :class:`SourceSpec` named ``name``; an unknown name lists the valid ones."""
    specs = _all_specs()
    if name not in specs:
        raise KeyError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(specs))}")
    return specs[name]


def load_dataset(name: str, split: str = "train", *, root: str | Path | None = None) -> ImageSet:
    """Load split ``split`` of dataset ``name`` from ``root`` (default: :func:`uniil_lib.paths.data_root`).

    Raises:
        KeyError: unknown dataset name (the message lists the valid ones).
        ValueError: unknown split.
        DatasetNotFoundError: the files are missing (the message names the fetch command).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    spec = get_source(name)
    return spec.load(split, Path(root) if root is not None else data_root())
