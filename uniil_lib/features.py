"""CLIP image features of image sets, cached on disk.

Frozen-encoder methods (zero-shot, linear probes, DDAS, AWPF) look at the same images through the same
frozen encoder again and again. :func:`image_features` computes the features once and stores them on disk
as safetensors, keyed by the model's identity, the data's key and the preprocessing; a second call (in
the same run or a later one) reads the file instead of running the encoder.

The cache stays under a byte budget on disk (:func:`keep_within_budget`: ``$UNIIL_FEATURE_CACHE_BYTES``, default
:data:`DEFAULT_DISK_BUDGET`): after a write, the files used longest ago are deleted until the folder fits (reading
a file counts as using it). A deleted file is recomputed when it is needed again.

The key derives from content: every dataset source puts a digest of its files or pixels into
``ImageSet.key``, and a model's identity names its exact weights. Each file records the sha256 of its
features; a cache file that cannot be read, differs from that digest, has the wrong shape or holds NaN or
infinite values is named in a warning and recomputed. Writes are atomic with unique temporary names, so
processes may share one cache. An encoder that produces NaN or infinite features is an error (its weights
are broken), never a cached result.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .clip import ClipModel
from .data.base import ImageSet
from .fileio import CorruptFileError, atomic_write, read_safetensors
from .integrity import sha256_text
from .paths import cache_root
from .pixels import LoaderSettings, PixelSource, sequential_batches

CACHE_FORMAT_VERSION = "2"  # 2: files record the sha256 of their features
DISK_BUDGET_ENV_VAR = "UNIIL_FEATURE_CACHE_BYTES"
DEFAULT_DISK_BUDGET = 20 * 2**30  # bytes of cached features kept on disk (MTIL's features of one model: about 0.5 GB)


def feature_cache_key(clip: ClipModel, imageset: ImageSet) -> str:
    """A file-name-safe key that changes when the model, the data, the preprocessing or the precision changes
    (features encoded under a GPU's mixed precision are cached apart from fp32 ones)."""
    parts = [CACHE_FORMAT_VERSION, clip.identity, imageset.key, str(len(imageset)), repr(clip.preprocess)]
    precision = _autocast_in_effect(clip.device)
    if precision is not None:
        parts.append(precision)
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:20]


def _autocast_in_effect(device: torch.device) -> str | None:
    """``"autocast-<dtype>"`` when a forward on ``device`` would run under autocast now, else None (fp32)."""
    if device.type != "cuda" or not torch.is_autocast_enabled("cuda"):
        return None
    return f"autocast-{torch.get_autocast_dtype('cuda')}"


@torch.no_grad()
def image_features(
    clip: ClipModel,
    imageset: ImageSet,
    *,
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    loader: LoaderSettings | None = None,
) -> torch.Tensor:
    """L2-normalised image features of a frozen model, ``(N, D)`` float32 on the CPU.

    Args:
        clip: a model whose weights will not change (the cache assumes it).
        imageset: the images.
        batch_size: images per forward pass.
        cache_dir: where cached features live (default ``<cache root>/features``).
        use_cache: False computes afresh and writes nothing.
        progress: show a tqdm bar.
        loader: how pixels are made (workers; :mod:`uniil_lib.pixels`); default: in this process, batch by batch.
    """
    path = Path(cache_dir or cache_root() / "features") / f"{feature_cache_key(clip, imageset)}.safetensors"
    if use_cache and path.exists():
        cached = _read_cached(path, len(imageset))
        if cached is not None:
            path.touch()  # used now: the budget deletes the files used longest ago first
            return cached
    was_training = clip.model.training
    clip.model.eval()
    chunks = []
    batches = sequential_batches(len(imageset), batch_size)
    # No buffer: every image is encoded once, so preprocessing them ahead would only cost memory.
    settings = replace(loader or LoaderSettings(), buffer_bytes=0)
    stream = PixelSource(imageset, clip.preprocess).batches(batches, settings)
    for pixels in tqdm(stream, total=len(batches), desc=f"encode {imageset.key}", leave=False, disable=not progress):
        chunks.append(clip.encode_images(pixels.to(clip.device, non_blocking=True)).float().cpu())
    clip.model.train(was_training)
    features = torch.cat(chunks).contiguous() if chunks else torch.empty(0, 0)
    if not bool(torch.isfinite(features).all()):
        raise FloatingPointError(f"{clip.identity} produced NaN or infinite features for {imageset.key}: the "
                                 "model's weights are broken (reload the model)")
    if use_cache:
        metadata = {"model": clip.identity, "data": imageset.key, "sha256": _digest(features)}
        atomic_write(path, lambda tmp: save_file({"features": features}, str(tmp), metadata=metadata))
        keep_within_budget(path.parent, keep=path)
    return features


def disk_budget() -> int:
    """The feature cache's byte budget on disk: ``$UNIIL_FEATURE_CACHE_BYTES`` or :data:`DEFAULT_DISK_BUDGET`.

    Raises:
        ValueError: the variable is set but is not a non-negative integer.
    """
    value = os.environ.get(DISK_BUDGET_ENV_VAR)
    if value is None:
        return DEFAULT_DISK_BUDGET
    if not value.strip().isdigit():
        raise ValueError(f"{DISK_BUDGET_ENV_VAR} must be a number of bytes (e.g. 10000000000), got {value!r}")
    return int(value)


def keep_within_budget(folder: Path, *, keep: Path | None = None, budget: int | None = None) -> list[Path]:
    """Delete the feature files of ``folder`` used longest ago (oldest modification time) until the rest fit in
    ``budget`` bytes (default :func:`disk_budget`); ``keep`` (the file just written) is never deleted. Files another
    process deletes meanwhile are skipped. Returns the deleted files."""
    budget = disk_budget() if budget is None else budget
    files = []
    for path in Path(folder).glob("*.safetensors"):
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        files.append((info.st_mtime_ns, info.st_size, path))
    total, deleted = sum(size for _, size, _ in files), []
    for _, size, path in sorted(files, key=lambda entry: entry[0]):
        if total <= budget:
            break
        if keep is not None and path == keep:
            continue
        path.unlink(missing_ok=True)
        total -= size
        deleted.append(path)
    return deleted


def _digest(features: torch.Tensor) -> str:
    return sha256_text(features.numpy().tobytes())


def _read_cached(path: Path, n_images: int) -> torch.Tensor | None:
    """The cached ``(N, D)`` features, or None (with a warning naming the file) if they cannot be trusted."""
    try:
        features = read_safetensors(path, fix="it is recomputed").get("features")
        recorded = _recorded_digest(path)
    except (CorruptFileError, OSError) as error:
        problem = str(error)
    else:
        if features is None or features.ndim != 2 or len(features) != n_images:
            problem = f"{path} does not hold ({n_images}, D) features"
        elif not bool(torch.isfinite(features).all()):
            problem = f"{path} holds NaN or infinite features"
        elif recorded != _digest(features):
            problem = f"{path} differs from the sha256 it records (damaged)"
        else:
            return features
    warnings.warn(f"ignoring a bad feature cache file: {problem}; recomputing it", stacklevel=3)
    return None


def _recorded_digest(path: Path) -> str | None:
    """The features' sha256 stored in the file's safetensors metadata (None in files of older versions)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return (handle.metadata() or {}).get("sha256")
