"""Continual-learning methods, one per file, all behind :class:`~uniil_lib.methods.base.ContinualMethod`.

``method_names()`` lists them and ``create_method(name, clip, scenario, config)`` builds one; an unknown
name lists the valid ones.
"""

from __future__ import annotations

from types import MappingProxyType

from .adapter import AdapterMethod
from .awpf import AWPF, FIXED_FACTOR_GRID, AWPFFixed, AWPFLDAOnly, AWPFMMDOnly, LowRankSeq, fixed_factor_method
from .base import ContinualMethod, TrainConfig
from .finetune import Finetune
from .linear_probe import LinearProbe
from .mage import (MAGE, MAGEConstantInput, MAGEGateBias, MAGEImageFeature, MAGENoAttributes, MAGERandomWords,
                   MAGESharedRouter, MAGEShrunkAttributes)
from .moe_adapters import MoEAdapters, MoEAdaptersBalance, MoEAdaptersDDAS, MoEAdaptersDDASBalance
from .moe_adapters_cil import MoEAdaptersCIL
from .zeroshot import ZeroShot

_METHODS = MappingProxyType({
    cls.name: cls for cls in (ZeroShot, Finetune, LinearProbe, AdapterMethod, MoEAdapters, MoEAdaptersDDAS,
                              MoEAdaptersBalance, MoEAdaptersDDASBalance, MoEAdaptersCIL,
                              MAGENoAttributes, MAGE, MAGERandomWords, MAGEImageFeature, MAGEConstantInput,
                              MAGEGateBias, MAGEShrunkAttributes, MAGESharedRouter,
                              LowRankSeq, AWPFFixed, AWPF, AWPFMMDOnly, AWPFLDAOnly,
                              *(fixed_factor_method(lam) for lam in FIXED_FACTOR_GRID))
})


def method_names() -> list[str]:
    """Names of all registered methods."""
    return list(_METHODS)


def method_class(name: str) -> type[ContinualMethod]:
    """The class registered under ``name``; an unknown name lists the valid ones."""
    if name not in _METHODS:
        raise KeyError(f"unknown method {name!r}; valid methods: {', '.join(_METHODS)}")
    return _METHODS[name]


def create_method(name: str, clip, scenario, config: TrainConfig, **options) -> ContinualMethod:
    """Build method ``name`` on ``clip`` for ``scenario``; ``options`` are its constructor's keyword options."""
    return method_class(name)(clip, scenario, config, **options)


__all__ = ["ContinualMethod", "TrainConfig", "create_method", "method_class", "method_names"]
