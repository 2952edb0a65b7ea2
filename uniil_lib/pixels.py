"""Pixel batches from image sets: decoded and preprocessed batch by batch, never a whole dataset at once.

Images stay as compact as their source keeps them (uint8 arrays in memory, image files on disk). Whatever a
method reads pixels from, it reads them through :class:`PixelSource`, which preprocesses only the images a
batch needs, through a torch ``DataLoader`` (worker processes and pinned memory on a GPU run; see
:class:`LoaderSettings`). Host memory is bounded by the batch, the workers and one small buffer, not by the
size of the dataset.

The order of the images is never the loader's: the caller passes the batches of indices (the trainer's seeded
shuffle, :func:`uniil_lib.methods.base.shuffled_batches`), and the loader only turns each batch of indices into
pixels. So a seed gives the same batches with or without workers, and the same as the in-memory pixel store
this module replaced (results of the fast profile are unchanged, bit for bit).

**The buffer** (our choice, for speed on small data): when all the images one call asks for fit in
``buffer_bytes`` as preprocessed pixels (a training step of the fast profile: a few hundred images), they are
preprocessed once and the batches are cut from that buffer, instead of preprocessing every image once per
epoch. The buffer lives for one call (one training step, one evaluation) and never holds more than
``buffer_bytes``; above that, every batch is preprocessed when it is needed.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from .data.base import ImageSet

DEFAULT_BUFFER_BYTES = 256 * 2**20  # preprocessed pixels one call may keep (about 445 ViT-B/16 images at 224 px)
MAX_AUTO_WORKERS = 8
READ_BATCH = 64  # images per loader batch when filling the buffer


@dataclass(frozen=True)
class LoaderSettings:
    """How pixel batches are produced.

    Attributes:
        workers: worker processes that decode and preprocess (0: in the calling process).
        pin_memory: page-locked batches, so that copies to a GPU run asynchronously.
        buffer_bytes: preprocess the images of one call once when they fit in this many bytes (see the module
            docstring); 0 switches the buffer off.
    """

    workers: int = 0
    pin_memory: bool = False
    buffer_bytes: int = DEFAULT_BUFFER_BYTES

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"loader workers must be an integer >= 0, got {self.workers!r}")
        if self.buffer_bytes < 0:
            raise ValueError(f"buffer_bytes must be >= 0, got {self.buffer_bytes}")


def resolve_workers(setting: int | str, device: str) -> int:
    """Worker processes for ``setting``: an integer as given; ``"auto"``: none when the model runs on the CPU
    (the cores are busy with the model), else one fewer than the cores this process may use, at most 8."""
    if setting == "auto":
        if not str(device).startswith("cuda"):
            return 0
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(MAX_AUTO_WORKERS, cores - 1))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
        raise ValueError(f"loader_workers must be an integer >= 0 or 'auto', got {setting!r}")
    return setting


def loader_settings(config) -> LoaderSettings:
    """The :class:`LoaderSettings` of a :class:`~uniil_lib.train_config.TrainConfig`: its workers and buffer, and
    pinned memory when it trains on a GPU."""
    device = str(config.device)
    return LoaderSettings(workers=resolve_workers(config.loader_workers, device), pin_memory=device.startswith("cuda"),
                          buffer_bytes=config.pixel_buffer_bytes)


class Streamable:
    """Inputs a method reads batch by batch: ``len(inputs)``, and :meth:`batches` for given batches of indices.

    Tensors (cached features, cached block inputs) are indexed directly; :func:`iterate_batches` handles both.
    """

    def __len__(self) -> int:
        raise NotImplementedError

    def batches(self, index_batches: Sequence[Sequence[int]], loader: LoaderSettings) -> Iterator:
        """One batch per entry of ``index_batches``, in that order."""
        raise NotImplementedError


class _PreprocessedImages(Dataset):
    """``dataset[i]``: image ``i`` of an image set, decoded and preprocessed (what a DataLoader worker runs)."""

    def __init__(self, imageset: ImageSet, preprocess: Callable):
        self.imageset, self.preprocess = imageset, preprocess

    def __len__(self) -> int:
        return len(self.imageset)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.preprocess(self.imageset[int(index)][0])


class PixelSource(Streamable):
    """The preprocessed pixels of an image set, made when asked for: ``source[indices]`` is a ``(k, 3, S, S)``
    tensor, :meth:`batches` streams many batches through a DataLoader.

    Args:
        imageset: the images (kept as their source keeps them).
        preprocess: PIL image -> ``(3, S, S)`` tensor (a model's preprocessing).
    """

    def __init__(self, imageset: ImageSet, preprocess: Callable):
        self.imageset, self.preprocess = imageset, preprocess
        self.dataset = _PreprocessedImages(imageset, preprocess)
        self._bytes_per_image: int | None = None

    def __len__(self) -> int:
        return len(self.imageset)

    def __repr__(self) -> str:
        return f"PixelSource({self.imageset.key!r}, n={len(self)})"

    def __getitem__(self, index) -> torch.Tensor:
        """The pixels of the images at ``index`` (a slice, a list or a tensor of indices), preprocessed now."""
        indices = _index_list(index, len(self))
        if not indices:
            return torch.empty(0, *self._pixel_shape())
        return torch.stack([self.dataset[i] for i in indices])

    def bytes_per_image(self) -> int:
        """Bytes of one preprocessed image (preprocesses the first image once to find out)."""
        if self._bytes_per_image is None:
            first = self.dataset[0]
            self._bytes_per_image = first.numel() * first.element_size()
        return self._bytes_per_image

    def _pixel_shape(self) -> tuple[int, ...]:
        return tuple(self.dataset[0].shape) if len(self) else (3, 0, 0)

    def batches(self, index_batches: Sequence[Sequence[int]], loader: LoaderSettings) -> Iterator[torch.Tensor]:
        """Pixel batches ``(b, 3, S, S)`` for ``index_batches``, in order (see the module docstring's buffer)."""
        index_batches = [_index_list(batch, len(self)) for batch in index_batches]
        wanted = sorted({i for batch in index_batches for i in batch})
        if wanted and loader.buffer_bytes and len(wanted) * self.bytes_per_image() <= loader.buffer_bytes:
            yield from self._from_buffer(index_batches, wanted, loader)
        else:
            yield from self._stream(index_batches, loader)

    def _stream(self, index_batches: list[list[int]], loader: LoaderSettings) -> Iterator[torch.Tensor]:
        batches = [batch for batch in index_batches if batch]
        empty = torch.empty(0, *self._pixel_shape()) if len(batches) < len(index_batches) else None
        stream = iter(make_loader(self.dataset, batches, loader))
        for batch in index_batches:
            yield next(stream) if batch else empty

    def _from_buffer(self, index_batches: list[list[int]], wanted: list[int],
                     loader: LoaderSettings) -> Iterator[torch.Tensor]:
        buffer, filled = None, 0
        for chunk in make_loader(self.dataset, sequential_chunks(wanted, READ_BATCH), loader):
            if buffer is None:  # allocated once: no second copy of the buffer at its peak
                buffer = torch.empty(len(wanted), *chunk.shape[1:], dtype=chunk.dtype)
            buffer[filled:filled + len(chunk)] = chunk
            filled += len(chunk)
        position = {index: row for row, index in enumerate(wanted)}
        for batch in index_batches:
            yield buffer[[position[i] for i in batch]]


def make_loader(dataset: Dataset, index_batches: list[list[int]], loader: LoaderSettings) -> DataLoader:
    """A DataLoader that yields ``dataset``'s items stacked, one batch per entry of ``index_batches``, in order.

    Workers are forked where the platform can (no pickling of image sets or preprocessing; they only decode and
    preprocess on the CPU, so a CUDA context in the parent does not matter), else spawned.
    """
    workers = loader.workers if index_batches else 0
    options = {}
    if workers:
        methods = multiprocessing.get_all_start_methods()
        options = {"multiprocessing_context": "fork" if "fork" in methods else None, "prefetch_factor": 2}
    # A DataLoader draws its workers' base seed from its generator when it starts; without one of its own it would
    # draw from torch's global generator and move every random number the training step draws after it (dropout,
    # gate noise): results would depend on whether a loader ran. Workers draw no random numbers here.
    return DataLoader(dataset, batch_sampler=index_batches, num_workers=workers, generator=torch.Generator(),
                      pin_memory=loader.pin_memory and torch.cuda.is_available(), **options)


def iterate_batches(inputs, index_batches: Iterable[Sequence[int]], loader: LoaderSettings) -> Iterator:
    """``inputs`` batch by batch: a :class:`Streamable` through its loader, anything else (a tensor of cached
    features or block inputs) by indexing."""
    if isinstance(inputs, Streamable):
        yield from inputs.batches(list(index_batches), loader)
        return
    for batch in index_batches:
        yield inputs[torch.as_tensor(batch, dtype=torch.long)]


def sequential_batches(n: int, batch_size: int) -> list[list[int]]:
    """``[[0, ..., b-1], [b, ..., 2b-1], ...]``: ``n`` items in order, in batches of ``batch_size``."""
    return sequential_chunks(list(range(n)), batch_size)


def sequential_chunks(items: Sequence[int], size: int) -> list[list[int]]:
    """``items`` in order, cut into lists of at most ``size``."""
    return [list(items[start:start + size]) for start in range(0, len(items), size)]


def _index_list(index, n: int) -> list[int]:
    """Indices of ``range(n)`` named by a slice, an int, a list or a tensor/array, as a list of ints."""
    if isinstance(index, slice):
        return list(range(n))[index]
    if torch.is_tensor(index):
        return [int(i) for i in index.reshape(-1).tolist()]
    if isinstance(index, int):
        return [index]
    return [int(i) for i in index]
