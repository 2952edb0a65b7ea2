"""Pixels are made batch by batch (uniil_lib.pixels): only the images a batch asks for are decoded, in the order the
caller gives, with the same values as preprocessing each image by itself, with or without workers and buffer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from uniil_lib.clip import TinyClipConfig, load_clip
from uniil_lib.data.base import FunctionImageSet
from uniil_lib.methods import TrainConfig, create_method
from uniil_lib.methods.base import shuffled_batches
from uniil_lib.pixels import LoaderSettings, PixelSource, iterate_batches, sequential_batches
from uniil_lib.scenarios import DatasetPart, class_incremental

SMALL = TinyClipConfig(embed_dim=32, image_size=16, patch_size=8, vision_width=32, vision_layers=1,
                       text_width=32, text_layers=1, heads=2, context_length=16)


class CountingImages:
    """A picklable ``load(i)``: image ``i`` is a 20x20 picture whose pixels encode ``i``; counts its calls."""

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, index: int) -> Image.Image:
        self.calls.append(index)
        rng = np.random.default_rng(index)
        return Image.fromarray(rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8))


def big_imageset(n: int = 100_000):
    load = CountingImages()
    return FunctionImageSet(load, np.arange(n) % 7, [f"c{k}" for k in range(7)], key=f"virtual-{n}"), load


def reference(imageset, preprocess, indices):
    return torch.stack([preprocess(imageset[i][0]) for i in indices])


@pytest.mark.parametrize("loader", [LoaderSettings(buffer_bytes=0), LoaderSettings(),
                                    LoaderSettings(workers=2, buffer_bytes=0), LoaderSettings(workers=2)],
                         ids=["streamed", "buffered", "2 workers", "2 workers, buffered"])
def test_batches_hold_the_images_asked_for_in_that_order(loader):
    imageset, _ = big_imageset(50)
    preprocess = load_clip("tiny", tiny_config=SMALL).preprocess
    wanted = [[7, 3, 3, 49], [0], [12, 11, 10, 9, 8]]
    got = list(PixelSource(imageset, preprocess).batches(wanted, loader))
    assert [len(b) for b in got] == [4, 1, 5]
    for batch, indices in zip(got, wanted):
        assert torch.equal(batch, reference(imageset, preprocess, indices)), indices


def test_only_the_images_a_batch_needs_are_decoded():
    """A dataset of 100,000 images: three batches of four decode twelve of them, never the set."""
    imageset, load = big_imageset()
    source = PixelSource(imageset, load_clip("tiny", tiny_config=SMALL).preprocess)
    batches = [[5, 99_999, 17, 42], [1, 2, 3, 4], [50_000, 6, 7, 8]]
    list(source.batches(batches, LoaderSettings(buffer_bytes=0)))
    assert sorted(load.calls) == sorted(i for b in batches for i in b)


def test_the_buffer_decodes_each_image_once_per_call_and_respects_its_budget():
    imageset, load = big_imageset(40)
    source = PixelSource(imageset, load_clip("tiny", tiny_config=SMALL).preprocess)
    epochs = shuffled_batches(40, 8, 15, seed=0)  # three epochs over 40 images
    source.bytes_per_image()  # one image is preprocessed to learn the size of one
    load.calls.clear()
    list(source.batches(epochs, LoaderSettings()))
    assert sorted(load.calls) == list(range(40)), "buffered: each image decoded once, not once per epoch"
    load.calls.clear()
    small = LoaderSettings(buffer_bytes=source.bytes_per_image() * 39)  # one image too many for the buffer
    list(source.batches(epochs, small))
    assert len(load.calls) == 3 * 40, "over budget: streamed, each image decoded when its batch comes"


def test_tensors_are_indexed_and_sources_streamed_alike():
    features = torch.arange(30.0).reshape(10, 3)
    batches = [[4, 1], [9, 0, 3]]
    assert [b.tolist() for b in iterate_batches(features, batches, LoaderSettings())] == \
        [features[[4, 1]].tolist(), features[[9, 0, 3]].tolist()]
    assert sequential_batches(5, 2) == [[0, 1], [2, 3], [4]]


def test_the_seeded_shuffle_visits_every_image_once_per_epoch():
    batches = shuffled_batches(10, 4, 7, seed=3)
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2, 4]
    assert sorted(sum(batches[:3], [])) == list(range(10)) and sorted(sum(batches[3:6], [])) == list(range(10))
    assert batches == shuffled_batches(10, 4, 7, seed=3) and batches != shuffled_batches(10, 4, 7, seed=4)


def test_training_with_workers_gives_the_same_weights(squares):
    """Workers only decode; the order is the trainer's: the same seed trains the same weights."""
    data = DatasetPart("sq", squares(4, 12, seed=0), squares(4, 3, seed=1), ("a {} square.",), "toy")
    stream = class_incremental("toy", data, increment=4, seed=0)
    weights = []
    for workers, buffer in ((0, 0), (2, 0), (0, 256 * 2**20)):
        config = TrainConfig(iterations=4, batch_size=8, progress=False, loader_workers=workers,
                             pixel_buffer_bytes=buffer)
        method = create_method("finetune", load_clip("tiny", tiny_config=SMALL, seed=0), stream, config)
        method.learn(stream.steps[0])
        weights.append([p.detach().clone() for p in method.clip.model.parameters()])
    for other in weights[1:]:
        assert all(torch.equal(a, b) for a, b in zip(weights[0], other))


def test_making_pixels_draws_no_random_number_from_torch(squares):
    """A DataLoader starting would otherwise draw its workers' seed from torch's global generator, shifting the
    dropout and gate noise of the training step that follows (the fast profile's seeded results would change)."""
    imageset, _ = big_imageset(20)
    source = PixelSource(imageset, load_clip("tiny", tiny_config=SMALL).preprocess)
    for loader in (LoaderSettings(), LoaderSettings(buffer_bytes=0)):
        torch.manual_seed(5)
        list(source.batches([[1, 2], [3]], loader))
        after = torch.rand(3)
        torch.manual_seed(5)
        assert torch.equal(after, torch.rand(3)), loader
