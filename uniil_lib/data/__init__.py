"""Datasets as :class:`ImageSet` objects, loaded by name from one data root."""

from .base import ArrayImageSet, DatasetNotFoundError, FunctionImageSet, ImageSet
from .registry import SourceSpec, get_source, load_dataset, source_names

__all__ = [
    "ArrayImageSet", "DatasetNotFoundError", "FunctionImageSet", "ImageSet",
    "SourceSpec", "get_source", "load_dataset", "source_names",
]
