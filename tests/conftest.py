"""Shared fixtures: an isolated cache, offline hub settings, a tiny synthetic image dataset, and a tiny CLIP whose
image tower follows the token-tower protocol instead of being an open_clip ViT."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

# open_clip / huggingface_hub must never wait on the network in tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty feature cache."""
    monkeypatch.setenv("UNIIL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def colour_squares(n_classes: int, per_class: int, *, seed: int, size: int = 16):
    """A learnable toy dataset: class k is a square of colour k on a noisy gray background."""
    from uniil_lib.data import ArrayImageSet

    rng = np.random.default_rng(seed)
    palette = np.random.default_rng(123).integers(0, 256, size=(n_classes, 3))
    images = rng.integers(100, 156, size=(n_classes * per_class, size, size, 3)).astype(np.uint8)
    labels = np.repeat(np.arange(n_classes), per_class)
    for i, label in enumerate(labels):
        x, y = rng.integers(0, size // 4 + 1, size=2)
        images[i, y : y + 3 * size // 4, x : x + 3 * size // 4] = palette[label]
    names = [f"colour {k}" for k in range(n_classes)]
    return ArrayImageSet(images, labels, names, key=f"squares-{n_classes}-{per_class}-{seed}")


@pytest.fixture
def squares():
    return colour_squares


class PatchTokenTower(torch.nn.Module):
    """A test-only image tower that follows the token-tower protocol (``uniil_lib.shim.TokenImageTower``) and is
    not an open_clip ``VisionTransformer``: a linear patch embedding, open_clip residual blocks, mean pooling and a
    linear projection."""

    def __init__(self, *, image_size: int = 16, patch_size: int = 8, width: int = 32, layers: int = 2,
                 heads: int = 2, output_dim: int = 32):
        super().__init__()
        import open_clip

        self.patch_size, self.output_dim = patch_size, output_dim
        self.patch_embed = torch.nn.Linear(3 * patch_size**2, width)
        self.positions = torch.nn.Parameter(0.02 * torch.randn((image_size // patch_size) ** 2, width))
        self.transformer = open_clip.transformer.Transformer(width, layers, heads, batch_first=True)
        self.ln_post = torch.nn.LayerNorm(width)
        self.proj = torch.nn.Linear(width, output_dim, bias=False)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = torch.nn.functional.unfold(pixels, self.patch_size, stride=self.patch_size).transpose(1, 2)
        return self.patch_embed(patches) + self.positions

    def pool_project(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.ln_post(x.mean(dim=1)))

    @property
    def token_shape(self) -> tuple[int, int]:
        return tuple(self.positions.shape)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.pool_project(self.transformer(self.embed(pixels)))


def token_tower_clip(seed: int = 0):
    """The tiny CLIP (16 px, width 32, 2 blocks per tower) with its ViT replaced by a :class:`PatchTokenTower`."""
    from uniil_lib.clip import TinyClipConfig, load_clip

    config = TinyClipConfig(embed_dim=32, image_size=16, patch_size=8, vision_width=32, vision_layers=2,
                            text_width=32, text_layers=2, heads=2, context_length=16)
    clip = load_clip("tiny", tiny_config=config, seed=seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        clip.model.visual = PatchTokenTower(output_dim=config.embed_dim).eval()
    return clip


@pytest.fixture
def token_clip():
    return token_tower_clip


@pytest.fixture
def file_server():
    """A local HTTP server on 127.0.0.1 standing in for a download server (npm registry, the authors' mirror):
    yields ``(base_url, files)``; it serves ``files[path]`` (bytes) at ``path`` and 404 for anything else."""
    import http.server
    import threading

    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", files
    server.shutdown()
    server.server_close()


@pytest.fixture
def openai_stub(monkeypatch):
    """A stub OpenAI-compatible server on 127.0.0.1 (``tests/openai_stub_server.py``) for the real openai client;
    no proxy may intercept it; shut down at the end of the test."""
    try:
        from .openai_stub_server import StubOpenAI
    except ImportError:
        from openai_stub_server import StubOpenAI

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    stub = StubOpenAI()
    yield stub
    stub.close()
