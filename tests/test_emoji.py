"""EmojiDomains: loader, class split and the fetch script's pure helpers, on a tiny fake dataset.

Nothing here needs npm or the real download: the fixture writes a few hand-made drawings in the format
``data_scripts/fetch_emoji.py`` writes (through the same writer functions).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uniil_lib.data import DatasetNotFoundError, get_source, load_dataset
from uniil_lib.data.emoji import (
    EmojiClass, aligned_class_names, load_emoji_classes, load_emoji_style, write_emoji_classes,
)
from uniil_lib.data.emoji_split import emoji_split
from repo_scripts import load_script

FETCH_COMMAND = "python data_scripts/fetch_emoji.py"


def _import_fetch_script():
    return load_script("data_scripts/fetch_emoji.py")


fetch = _import_fetch_script()

# (code point, name, category, subcategory, styles): 3 subcategories, one class only in twitter.
FAKE = [
    ("1F408", "cat", "Animals & Nature", "animal-mammal", ("twitter", "google")),
    ("1F415", "dog", "Animals & Nature", "animal-mammal", ("twitter", "google")),
    ("1F434", "horse face", "Animals & Nature", "animal-mammal", ("twitter", "google")),
    ("1F34E", "red apple", "Food & Drink", "food-fruit", ("twitter", "google")),
    ("1F350", "pear", "Food & Drink", "food-fruit", ("twitter", "google")),
    ("1F680", "rocket", "Travel & Places", "transport-air", ("twitter", "google")),
    ("2708-FE0F", "airplane", "Travel & Places", "transport-air", ("twitter", "google")),
    ("1F681", "helicopter", "Travel & Places", "transport-air", ("twitter",)),
]


def _drawing(index: int, style: str) -> np.ndarray:
    """A white 64x64 image with a coloured disc whose size and colour depend on the class and style."""
    yy, xx = np.mgrid[:64, :64]
    radius = 10 + 2 * index + (3 if style == "google" else 0)
    image = np.full((64, 64, 3), 255, np.uint8)
    image[(yy - 32) ** 2 + (xx - 30) ** 2 < radius**2] = (40 * index % 255, 200 - 20 * index, 90)
    image[28:36, 10:20] = (20, 20, 20)  # an off-centre mark, so rotations change pixels
    return image


@pytest.fixture()
def fake_root(tmp_path: Path) -> Path:
    classes = [EmojiClass(cp, name, cat, sub, styles) for cp, name, cat, sub, styles in FAKE]
    per_style = {}
    for style in ("twitter", "google"):
        have = [(i, c) for i, c in enumerate(classes) if style in c.styles]
        per_style[style] = ([c.code_point for _, c in have], np.stack([_drawing(i, style) for i, _ in have]))
    fetch.write_outputs(tmp_path, classes, per_style, [fetch.TWITTER, fetch.GOOGLE], None)
    return tmp_path


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------


def test_files_written_in_documented_format(fake_root):
    folder = fake_root / "emoji-domains"
    assert sorted(p.name for p in folder.iterdir()) == [
        "ATTRIBUTION.md", "checksums.json", "classes.json", "google.npz", "twitter.npz"]
    manifest = json.loads((folder / "classes.json").read_text())
    assert manifest["styles"] == ["twitter", "google"] and manifest["image_size"] == 64
    with np.load(folder / "google.npz") as data:
        assert data["images"].shape == (7, 64, 64, 3) and data["images"].dtype == np.uint8
        assert list(data["code_points"]) == [cp for cp, *_, styles in FAKE if "google" in styles]
    assert "CC-BY 4.0" in (folder / "ATTRIBUTION.md").read_text()


def test_load_emoji_classes(fake_root):
    classes = load_emoji_classes(fake_root)
    assert [c.name for c in classes] == [row[1] for row in FAKE]
    assert classes[-1].styles == ("twitter",) and classes[0].subcategory == "animal-mammal"
    assert aligned_class_names(fake_root) == [row[1] for row in FAKE[:-1]]


@pytest.mark.parametrize("style, n_classes", [("twitter", 8), ("google", 7)])
def test_load_shapes_and_counts(fake_root, style, n_classes):
    train = load_emoji_style(style, "train", fake_root)
    test = load_emoji_style(style, "test", fake_root)
    assert train.images.shape == (6 * n_classes, 64, 64, 3), train.images.shape
    assert test.images.shape == (2 * n_classes, 64, 64, 3), test.images.shape
    assert np.bincount(train.labels).tolist() == [6] * n_classes
    image, label = test[3]
    assert image.size == (64, 64) and image.mode == "RGB" and label == 1


@pytest.mark.parametrize("style", ["twitter", "google"])
def test_train_and_test_images_are_distinct(fake_root, style):
    train = load_emoji_style(style, "train", fake_root)
    test = load_emoji_style(style, "test", fake_root)
    train_bytes = {image.tobytes() for image in train.images}
    assert len(train_bytes) == len(train), "two train images are identical"
    assert not any(image.tobytes() in train_bytes for image in test.images), "a test image is also a train image"
    assert train.key != test.key


def test_loading_is_deterministic(fake_root):
    first = load_emoji_style("google", "test", fake_root)
    second = load_emoji_style("google", "test", fake_root)
    np.testing.assert_array_equal(first.images, second.images)
    assert first.key == second.key


def test_class_restriction_remaps_labels_and_keeps_images(fake_root):
    full = load_emoji_style("twitter", "train", fake_root)
    part = load_emoji_style("twitter", "train", fake_root, classes=["pear", "cat"])
    assert part.class_names == ["pear", "cat"]
    assert part.labels.tolist() == [0] * 6 + [1] * 6
    pear = full.class_names.index("pear")
    np.testing.assert_array_equal(part.images[:6], full.images[full.labels == pear])
    assert part.key != full.key


def test_class_restriction_errors(fake_root):
    with pytest.raises(ValueError, match="unknown emoji class"):
        load_emoji_style("twitter", "train", fake_root, classes=["unicorn"])
    with pytest.raises(ValueError, match="has no drawing"):
        load_emoji_style("google", "train", fake_root, classes=["helicopter"])
    with pytest.raises(ValueError, match="unknown emoji style"):
        load_emoji_style("apple", "train", fake_root)


def test_registry_sources_share_the_aligned_label_space(fake_root):
    twitter = load_dataset("emoji-twitter", "test", root=fake_root)
    google = load_dataset("emoji-google", "test", root=fake_root)
    assert twitter.class_names == google.class_names == aligned_class_names(fake_root)
    spec = get_source("emoji-fluent3d")
    assert spec.offline and spec.domain == "emoji-fluent3d" and "{}" in spec.templates[0]


def test_missing_data_names_the_fetch_command(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=FETCH_COMMAND):
        load_emoji_style("twitter", "train", tmp_path)
    with pytest.raises(DatasetNotFoundError, match=FETCH_COMMAND):
        load_dataset("emoji-google", "train", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match=FETCH_COMMAND):
        emoji_split("random", tmp_path)


def test_missing_style_file_names_the_fetch_command(fake_root):
    (fake_root / "emoji-domains" / "google.npz").unlink()
    with pytest.raises(DatasetNotFoundError, match=FETCH_COMMAND):
        load_emoji_style("google", "test", fake_root)


# ---------------------------------------------------------------------------------------------------
# The class / style split
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["random", "subcategory"])
def test_split_is_disjoint_deterministic_and_holds_out_a_style(fake_root, kind):
    split = emoji_split(kind, fake_root, n_heldout=2)
    again = emoji_split(kind, fake_root, n_heldout=2)
    assert split == again
    assert not set(split.pretrain_classes) & set(split.heldout_classes)
    assert set(split.pretrain_classes) | set(split.heldout_classes) == set(aligned_class_names(fake_root))
    assert "helicopter" not in split.pretrain_classes + split.heldout_classes  # not in every style
    assert split.heldout_styles == ("google",) and split.pretrain_styles == ("twitter",)


def test_random_split_holds_out_exactly_n(fake_root):
    assert len(emoji_split("random", fake_root, n_heldout=3).heldout_classes) == 3


def test_subcategory_split_holds_out_whole_subcategories(fake_root):
    split = emoji_split("subcategory", fake_root, n_heldout=2)
    by_name = {c.name: c.subcategory for c in load_emoji_classes(fake_root)}
    held = {by_name[n] for n in split.heldout_classes}
    assert held and not held & {by_name[n] for n in split.pretrain_classes}


def test_split_prefers_fluent3d_as_heldout_style(fake_root):
    classes = [EmojiClass(cp, n, c, s, ("twitter", "fluent3d")) for cp, n, c, s, _ in FAKE]
    write_emoji_classes(fake_root, classes, ["twitter", "fluent3d"])
    split = emoji_split("random", fake_root, n_heldout=2)
    assert split.heldout_styles == ("fluent3d",) and split.pretrain_styles == ("twitter",)


def test_split_argument_errors(fake_root):
    with pytest.raises(ValueError, match="kind"):
        emoji_split("alphabetical", fake_root)
    with pytest.raises(ValueError, match="n_heldout"):
        emoji_split("random", fake_root)  # 100 > the 7 fake candidates
    classes = [EmojiClass(cp, n, c, s, ("twitter",)) for cp, n, c, s, _ in FAKE]
    write_emoji_classes(fake_root, classes, ["twitter"])
    with pytest.raises(ValueError, match="two built styles"):
        emoji_split("random", fake_root, n_heldout=2)


# ---------------------------------------------------------------------------------------------------
# Pure helpers of data_scripts/fetch_emoji.py
# ---------------------------------------------------------------------------------------------------


def _entry(unified, name, category="Animals & Nature", sub="animal-mammal", order=0, **extra):
    return {"unified": unified, "name": name, "category": category, "subcategory": sub,
            "sort_order": order, **extra}


def test_filter_emoji_entries_keeps_single_concrete_classes():
    entries = [
        _entry("1F415", "DOG", order=2),
        _entry("1F408-200D-2B1B", "BLACK CAT", order=1),  # ZWJ sequence naming one thing: kept
        _entry("1F44B-1F3FB", "WAVING HAND SIGN", order=3),  # skin tone
        _entry("1F1EB-1F1F7", "FRANCE", "Flags", "country-flag", order=4),
        _entry("0031-FE0F-20E3", "KEYCAP 1", "Objects", "keycap", order=5),
        _entry("1F600", "GRINNING FACE", "Smileys & Emotion", "face-smiling", order=6),
        _entry("1F3A4", "MICROPHONE", "Activities", "music", order=7, obsoleted_by="1F3A5"),
        _entry("1F452", "WOMANS HAT", "Objects", "clothing", order=8),
    ]
    records = fetch.filter_emoji_entries(entries)
    assert [r["name"] for r in records] == ["black cat", "dog", "woman's hat"]
    assert records[0] == {"code_point": "1F408-200D-2B1B", "name": "black cat",
                          "category": "Animals & Nature", "subcategory": "animal-mammal"}


def test_filter_emoji_entries_rejects_repeated_names():
    with pytest.raises(ValueError, match="same clean name"):
        fetch.filter_emoji_entries([_entry("1F415", "DOG"), _entry("1F436", "DOG")])


@pytest.mark.parametrize("raw, clean", [
    ("NEW MOON SYMBOL", "new moon"), ("CLOCK FACE ONE OCLOCK", "clock showing one o'clock"),
    ("RESCUE WORKER\u2019S HELMET", "rescue worker's helmet"), ("HOCHO", "kitchen knife"),
    ("MANS SHOE", "man's shoe"), ("EARTH GLOBE AMERICAS", "globe showing americas"),
])
def test_clean_name(raw, clean):
    assert fetch.clean_name(raw) == clean


def test_code_point_key_matches_package_spellings():
    assert fetch.code_point_key("00ae-fe0f") == fetch.code_point_key("AE") == "AE"
    assert fetch.code_point_key("2708-FE0F") == fetch.code_point_key("2708") == "2708"
    assert fetch.code_point_key("1f408-200d-2b1b") == "1F408-200D-2B1B"


def test_verify_integrity(tmp_path):
    path = tmp_path / "pkg.tgz"
    path.write_bytes(b"abc")
    good = "sha512-3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2Q86A4qmslPpUyknw=="
    fetch.verify_integrity(path, good)
    path.write_bytes(b"abd")
    with pytest.raises(fetch.ChecksumMismatchError, match="does not match its pinned checksum"):
        fetch.verify_integrity(path, good)


@pytest.fixture
def registry(file_server):
    """The shared local file server (conftest.file_server) as this module's download server."""
    return file_server


def _package_tarball() -> bytes:
    """A small npm-style tarball: ``package/package.json`` and one drawing."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in (("package/package.json", b'{"name": "@test/emoji", "version": "1.0.0"}'),
                           ("package/assets/1f408.png", _png_bytes(np.full((8, 8, 4), 255, np.uint8)))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _integrity(data: bytes) -> str:
    import base64
    import hashlib

    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def test_registry_tarball_urls_follow_npm():
    package = fetch.NpmPackage("@lobehub/fluent-emoji-3d", "1.1.0", "sha512-x")
    assert fetch.registry_tarball_url(package) == \
        "https://registry.npmjs.org/@lobehub/fluent-emoji-3d/-/fluent-emoji-3d-1.1.0.tgz"
    assert fetch.registry_tarball_url(fetch.TWITTER, "http://mirror/") == \
        "http://mirror/emoji-datasource-twitter/-/emoji-datasource-twitter-16.0.0.tgz"


def test_without_npm_the_tarball_comes_over_http_and_is_verified(tmp_path, monkeypatch, registry):
    """No npm on PATH (Colab): the pinned tarball is downloaded from the registry and its sha512 checked."""
    url, files = registry
    data = _package_tarball()
    package = fetch.NpmPackage("@test/emoji", "1.0.0", _integrity(data))
    files["/@test/emoji/-/emoji-1.0.0.tgz"] = data
    monkeypatch.setattr(fetch.shutil, "which", lambda name: None)
    path = fetch.fetch_package(fetch.require_npm, package, tmp_path / "downloads", url)
    assert path == tmp_path / "downloads" / "test-emoji-1.0.0.tgz" and path.read_bytes() == data
    drawings = [name for name, _ in fetch.iter_tar_files(path, lambda n: n.endswith(".png"))]
    assert drawings == ["package/assets/1f408.png"]


def test_a_download_that_fails_its_pinned_hash_is_refused_and_not_kept(tmp_path, monkeypatch, registry):
    url, files = registry
    data = _package_tarball()
    package = fetch.NpmPackage("@test/emoji", "1.0.0", _integrity(data + b"tampered"))
    files["/@test/emoji/-/emoji-1.0.0.tgz"] = data
    monkeypatch.setattr(fetch.shutil, "which", lambda name: None)
    with pytest.raises(fetch.ChecksumMismatchError, match=r"emoji-1\.0\.0\.tgz does not match its pinned checksum"):
        fetch.fetch_package(fetch.require_npm, package, tmp_path / "downloads", url)
    assert list((tmp_path / "downloads").iterdir()) == [], "a bad download must leave nothing behind"
    missing = fetch.NpmPackage("@test/absent", "1.0.0", _integrity(data))
    with pytest.raises(RuntimeError, match="cannot download .*absent-1.0.0.tgz"):
        fetch.fetch_package(fetch.require_npm, missing, tmp_path / "downloads", url)


def test_require_npm_says_how_to_install(monkeypatch):
    monkeypatch.setattr(fetch.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install npm"):
        fetch.require_npm()


def _png_bytes(rgba: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG")
    return buffer.getvalue()


def test_extract_and_align_from_a_tarball(tmp_path):
    transparent = np.zeros((128, 128, 4), np.uint8)
    transparent[:64, :, :] = (255, 0, 0, 255)  # top half opaque red, bottom half transparent
    tarball = tmp_path / "fake.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        for name in ("package/assets/1f408.webp", "package/assets/2708-fe0f.webp", "package/assets/x/1f415.webp"):
            info = tarfile.TarInfo(name.replace(".webp", ".png"))
            data = _png_bytes(transparent)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    source = fetch.StyleSource("fluent3d", fetch.FLUENT, "package/assets/", ".png", "a", "MIT", "u")
    decode = fetch.make_decoder(source, None)
    found = fetch.extract_style(tarball, source, {"1F408", "2708", "1F415"}, decode)
    assert sorted(found) == ["1F408", "2708"]  # the file in a sub-folder is ignored
    image = found["2708"]
    assert image.shape == (64, 64, 3) and tuple(image[5, 5]) == (255, 0, 0) and tuple(image[60, 5]) == (255,) * 3
    records = [{"code_point": "2708-FE0F", "name": "airplane", "category": "Travel & Places",
                "subcategory": "transport-air"},
               {"code_point": "1F415", "name": "dog", "category": "Animals & Nature", "subcategory": "mammal"}]
    classes, per_style = fetch.align_classes(records, {"fluent3d": found})
    assert [c.name for c in classes] == ["airplane"] and per_style["fluent3d"][0] == ["2708-FE0F"]


def test_outputs_verify_until_a_file_changes(fake_root):
    folder = fake_root / "emoji-domains"
    assert fetch.outputs_up_to_date(folder, ["twitter", "google"])
    assert not fetch.outputs_up_to_date(folder, ["twitter"])
    (folder / "ATTRIBUTION.md").write_text("changed")
    assert not fetch.outputs_up_to_date(folder, ["twitter", "google"])
