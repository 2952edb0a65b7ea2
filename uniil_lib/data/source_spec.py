"""What a dataset source is: :class:`SourceSpec`, and the split names every source serves.

The bottom of the data registry: the source modules (``offline``, ``emoji``, ``torchvision_sources``) describe
their datasets with it, and :mod:`uniil_lib.data.registry` gathers them, so no source imports the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from .base import ImageSet

SPLITS = ("train", "test")


@dataclass(frozen=True)
class SourceSpec:
    """One loadable dataset.

    Attributes:
        name: registry name, e.g. ``"fashion-mnist"``.
        load: ``load(split, root) -> ImageSet`` for ``split`` in ``("train", "test")``.
        offline: True if it can be had on a machine without internet (from a system package).
        fetch_command: the data_scripts command that puts it under the data root.
        templates: zero-shot prompt templates, each with one ``{}`` for the class name.
        domain: a short domain word (``"photo"``, ``"digit"``, ``"emoji-twitter"``) used by scenarios.
        description: one line for ``python -m uniil_lib list``.
    """

    name: str
    load: Callable[[str, Path], ImageSet]
    offline: bool
    fetch_command: str
    templates: tuple[str, ...] = ("a photo of a {}.",)
    domain: str = "photo"
    description: str = ""
    extra: Mapping[str, object] = field(default_factory=dict)
