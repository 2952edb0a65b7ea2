"""Build EmojiDomains: the same concrete-object emoji drawn in up to four styles, from npm packages.

Usage::

    python data_scripts/fetch_emoji.py [--root DIR] [--styles twitter,google,openmoji,fluent3d]
                                       [--download-dir DIR] [--delete-downloads]

What it does (each choice that is ours is marked *ours*):

1. ``npm pack NAME@VERSION`` for each pinned package into a download folder (default
   ``<cache root>/downloads/emoji``), and checks each tarball against the sha512 integrity value pinned in
   :data:`PACKAGES` (the registry's ``dist.integrity``). A cached tarball that fails the check is fetched
   again once; a fresh one that fails is an error. Where npm is missing (Colab, a bare container) or
   ``npm pack`` fails, the tarball is downloaded over plain HTTPS from the registry
   (``<registry>/<name>/-/<basename>-<version>.tgz``, :func:`registry_tarball_url`; ``--registry`` or
   ``$npm_config_registry`` name another registry) and checked against the same pinned value.
2. Reads ``emoji.json`` (emoji-datasource, MIT) and keeps the concrete-object categories
   (:data:`KEPT_CATEGORIES`). *Ours*: sequences that are not one class (skin tones, flags, keycaps, tag
   sequences) are dropped; ZWJ sequences that name one thing (``black cat``, ``service dog``) are kept.
   Skin-tone variants live in ``skin_variations`` and are never read.
3. Extracts only the needed images of each style and aligns them across styles by code point
   (normalised: upper-case hex, no leading zeros, no FE0F variation selector, because the packages
   spell ``2708-fe0f``, ``2708`` and ``00ae`` differently).
4. Turns every drawing into 64x64 RGB composited on white (*ours*): the datasource PNGs are 64 px
   already; Fluent 3D WebPs (256 px) are composited, then shrunk with Lanczos; OpenMoji SVGs are
   rendered at 64 px with ``resvg-py`` (``pip install resvg-py``, self-contained) or else ``cairosvg``
   (``pip install cairosvg`` plus Debian ``libcairo2``). Without either, OpenMoji is skipped with a note.
5. Writes ``<root>/emoji-domains/``: ``<style>.npz``, ``classes.json`` (format described in
   ``uniil_lib/data/emoji.py``), ``ATTRIBUTION.md`` and, last, ``checksums.json`` (tarball integrity
   values and the sha256 of every output). A second run whose outputs verify does nothing.

Class names (*ours*): emoji.json's Unicode names, lowercased, with a few fixes to Unicode naming habits
(``"womans hat"`` -> ``"woman's hat"``, ``"new moon symbol"`` -> ``"new moon"``, ``"black scissors"``
-> ``"scissors"``, ``"clock face one oclock"`` -> ``"clock showing one o'clock"``; see
:data:`NAME_RULES` and :data:`NAME_OVERRIDES`).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

try:
    import uniil_lib  # noqa: F401
except ImportError:  # run as a script from a checkout: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniil_lib.data.emoji import (  # noqa: E402
    IMAGE_SIZE, STYLES, EmojiClass, emoji_dir, write_emoji_classes, write_emoji_style,
)
from uniil_lib.fileio import atomic_write, atomic_write_text  # noqa: E402
from uniil_lib.integrity import write_checksums  # noqa: E402
from uniil_lib.paths import cache_root, data_root  # noqa: E402

DEFAULT_REGISTRY = os.environ.get("npm_config_registry") or "https://registry.npmjs.org"
KEPT_CATEGORIES = ("Animals & Nature", "Food & Drink", "Travel & Places", "Activities", "Objects")
# Code points that make a sequence something other than one drawable class.
SKIN_TONES = range(0x1F3FB, 0x1F3FF + 1)
REGIONAL_INDICATORS = range(0x1F1E6, 0x1F1FF + 1)
TAGS = range(0xE0020, 0xE007F + 1)
KEYCAP = 0x20E3
VARIATION_SELECTOR = 0xFE0F


@dataclass(frozen=True)
class NpmPackage:
    """One pinned npm package: name, version and the registry's sha512 ``dist.integrity``."""

    name: str
    version: str
    integrity: str

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball_name(self) -> str:
        """The file name ``npm pack`` writes: scope ``@a/b`` becomes ``a-b``."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


@dataclass(frozen=True)
class StyleSource:
    """Where one style's drawings live and under which licence."""

    style: str
    package: NpmPackage
    member_prefix: str  # folder inside the tarball
    suffix: str  # file extension of the drawings
    artwork: str
    licence: str
    upstream: str


TWITTER = NpmPackage("emoji-datasource-twitter", "16.0.0",
                     "sha512-7F+uCuHH+7Qnrc15P5tnbvKkg9E6tlzi4MnT2uW1RlN4pLYTza6cP/dstIfSDMtpjFLWuZewWg8jBbuL2eyELQ==")
GOOGLE = NpmPackage("emoji-datasource-google", "16.0.0",
                    "sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A==")
OPENMOJI = NpmPackage("openmoji", "17.0.0",
                      "sha512-EBnYrNGdcdw+OSXmENeNE1yBNRu6tOraTmoOyUbJkTmvT/+XETp8RZLSJFzD3lrPc5N9CzsyPnRTk0Vp4UaI9w==")
FLUENT = NpmPackage("@lobehub/fluent-emoji-3d", "1.1.0",
                    "sha512-Wlq2lVStTnr8BDpIJ0pEnTKO4LuDxxqTEhTvRtD1DLRF0me7ogeRQjKoehDHXuVJ2Qaecgl5wRBv60lUAG3h7g==")
PACKAGES = (TWITTER, GOOGLE, OPENMOJI, FLUENT)
METADATA_PACKAGE = TWITTER  # emoji.json (identical in every emoji-datasource-* package)
METADATA_MEMBER = "package/emoji.json"
SOURCES = MappingProxyType({
    "twitter": StyleSource("twitter", TWITTER, "package/img/twitter/64/", ".png",
                           "Twemoji", "CC-BY 4.0", "https://github.com/jdecked/twemoji"),
    "google": StyleSource("google", GOOGLE, "package/img/google/64/", ".png",
                          "Noto Emoji (Google)", "Apache License 2.0", "https://github.com/googlefonts/noto-emoji"),
    "openmoji": StyleSource("openmoji", OPENMOJI, "package/color/svg/", ".svg",
                            "OpenMoji", "CC BY-SA 4.0", "https://openmoji.org"),
    "fluent3d": StyleSource("fluent3d", FLUENT, "package/assets/", ".webp",
                            "Fluent Emoji 3D (Microsoft)", "MIT", "https://github.com/microsoft/fluentui-emoji"),
})

NAME_OVERRIDES = MappingProxyType({
    "hocho": "kitchen knife", "moyai": "moai statue", "aubergine": "eggplant",
    "black scissors": "scissors", "black telephone": "telephone", "black sun with rays": "sun",
    "black nib": "pen nib", "black spade suit": "spade suit", "black club suit": "club suit",
    "black heart suit": "heart suit", "black diamond suit": "diamond suit",
    "white medium star": "star", "high voltage sign": "high voltage",
    "public address loudspeaker": "loudspeaker", "police cars revolving light": "police car light",
    "speaker with cancellation stroke": "muted speaker", "bell with cancellation stroke": "bell with slash",
    "mobile phone with rightwards arrow at left": "mobile phone with arrow",
    "envelope with downwards arrow above": "envelope with arrow",
    "chart with upwards trend and yen sign": "chart increasing with yen",
    "chart with upwards trend": "chart increasing", "chart with downwards trend": "chart decreasing",
    "left-pointing magnifying glass": "magnifying glass tilted left",
    "right-pointing magnifying glass": "magnifying glass tilted right",
})
NAME_RULES = (  # (regex, replacement), applied in order after lower-casing
    (r"[\u2018\u2019]", "'"),
    (r"\bwomans\b", "woman's"),
    (r"\bmans\b", "man's"),
    (r"\boclock\b", "o'clock"),
    (r"^clock face (.+)$", r"clock showing \1"),
    (r"^earth globe (.+)$", r"globe showing \1"),
    (r" symbol$", ""),
)


class ChecksumMismatchError(RuntimeError):
    """A downloaded file does not match its pinned checksum."""


# ----------------------------------------------------------------------------------------------------
# Pure helpers: names, code points, emoji.json filtering, checksums
# ----------------------------------------------------------------------------------------------------


def clean_name(unicode_name: str) -> str:
    """emoji.json's upper-case Unicode name -> a clean lowercase class name (see NAME_RULES/OVERRIDES)."""
    name = " ".join(unicode_name.lower().split())
    if name in NAME_OVERRIDES:
        return NAME_OVERRIDES[name]
    for pattern, replacement in NAME_RULES:
        name = re.sub(pattern, replacement, name)
    return name


def code_point_key(text: str) -> str:
    """Normalise a code point sequence (``"00ae-fe0f"``, ``"2708-FE0F"``) for matching: ``"AE"``, ``"2708"``."""
    values = [int(part, 16) for part in re.split(r"[-_ ]", text.strip()) if part]
    return "-".join(f"{v:X}" for v in values if v != VARIATION_SELECTOR)


def is_single_class(unified: str) -> bool:
    """False for sequences that are not one drawable class: skin tones, flags, keycaps, tag sequences."""
    for value in (int(part, 16) for part in unified.split("-")):
        if value in SKIN_TONES or value in REGIONAL_INDICATORS or value in TAGS or value == KEYCAP:
            return False
    return True


def filter_emoji_entries(entries: Iterable[Mapping], categories: Sequence[str] = KEPT_CATEGORIES, *,
                         drop_repeated: bool = False) -> list[dict]:
    """Keep the emoji.json entries that become classes.

    Args:
        entries: emoji.json records (``name``, ``unified``, ``category``, ``subcategory``, ``sort_order``...).
        categories: the emoji categories to keep.
        drop_repeated: drop every entry whose clean name another kept entry shares, instead of raising.

    Returns:
        records ``{"code_point", "name", "category", "subcategory"}`` in emoji sort order.

    Raises:
        ValueError: two kept entries get the same clean name (unless ``drop_repeated``).
    """
    kept = [
        e for e in entries
        if e.get("category") in categories and e.get("name") and not e.get("obsoleted_by")
        and is_single_class(e["unified"])
    ]
    kept.sort(key=lambda e: (e.get("sort_order", 0), e["unified"]))
    records = [{"code_point": e["unified"], "name": clean_name(e["name"]), "category": e["category"],
                "subcategory": e["subcategory"]} for e in kept]
    repeated = sorted(name for name, n in Counter(r["name"] for r in records).items() if n > 1)
    if repeated and drop_repeated:
        return [r for r in records if r["name"] not in repeated]
    if repeated:
        raise ValueError(f"emoji.json gives several kept emoji the same clean name: {repeated}; "
                         "add entries to NAME_OVERRIDES in data_scripts/fetch_emoji.py")
    return records


def sha512_integrity(path: Path) -> str:
    """The npm ``dist.integrity`` string of a file: ``"sha512-" + base64(sha512 digest)``."""
    digest = hashlib.sha512()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode("ascii")


def verify_integrity(path: Path, expected: str, *, what: str | None = None) -> None:
    """Raise :class:`ChecksumMismatchError` unless ``path`` has the npm integrity value ``expected``; the message
    names ``what`` (default: the path), e.g. the address a download came from."""
    actual = sha512_integrity(path)
    if actual != expected:
        raise ChecksumMismatchError(
            f"{what or path} does not match its pinned checksum:\n  expected {expected}\n  got      {actual}\n"
            "Delete the file and run the script again. If the registry really serves a new tarball for "
            "this version, check it and update the pinned value in data_scripts/fetch_emoji.py."
        )


def sha256_file(path: Path) -> str:
    """``"sha256:<hex>"`` of a file, for checksums.json."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


# ----------------------------------------------------------------------------------------------------
# npm
# ----------------------------------------------------------------------------------------------------


def require_npm() -> str:
    """The path of ``npm``, or a RuntimeError that says how to install it."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "npm is not on PATH, and it is needed to fetch the emoji packages from the npm registry. "
            "Install it (Debian/Ubuntu: `apt-get install npm`; elsewhere: Node.js from your package "
            "manager), then run this script again."
        )
    return npm


def registry_tarball_url(package: NpmPackage, registry: str = DEFAULT_REGISTRY) -> str:
    """Where the npm registry serves ``package``'s tarball: ``<registry>/<name>/-/<basename>-<version>.tgz``
    (for a scoped ``@scope/pkg`` the basename is ``pkg``), the ``dist.tarball`` address npm itself downloads."""
    basename = package.name.rsplit("/", 1)[-1]
    return f"{registry.rstrip('/')}/{package.name}/-/{basename}-{package.version}.tgz"


def download_tarball(package: NpmPackage, dest: Path, registry: str = DEFAULT_REGISTRY, *, timeout: float = 60) -> Path:
    """Download ``package``'s tarball over HTTP(S) into ``dest`` (no npm needed) and check its pinned integrity.

    Raises:
        RuntimeError: the registry cannot be reached or answers with an error (names the address).
        ChecksumMismatchError: the download differs from the pinned sha512 (nothing is left in ``dest``).
    """
    url = registry_tarball_url(package, registry)
    path = dest / package.tarball_name

    def write(tmp: Path) -> None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as handle:
                shutil.copyfileobj(response, handle, 1 << 20)
        except (urllib.error.URLError, OSError) as error:
            raise RuntimeError(f"cannot download {url} ({error}); is the registry reachable? Another registry: "
                               "--registry URL") from error
        verify_integrity(tmp, package.integrity, what=url)  # a bad download never takes the tarball's name

    return atomic_write(path, write)


def npm_pack(npm: str, package: NpmPackage, dest: Path) -> Path:
    """Download ``package``'s tarball into ``dest`` with ``npm pack`` (no node project needed)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:  # npm may read a package.json from its cwd: use an empty one
        result = subprocess.run([npm, "pack", package.spec, "--pack-destination", str(dest), "--json"],
                                cwd=work, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"`npm pack {package.spec}` failed (exit {result.returncode}); is the npm registry "
                           f"reachable (`npm config get registry`)?\n{result.stderr.strip()[-2000:]}")
    path = dest / package.tarball_name
    if not path.exists():
        raise RuntimeError(f"`npm pack {package.spec}` did not write {path}; npm said:\n{result.stdout[-2000:]}")
    return path


def fetch_package(npm_finder: Callable[[], str], package: NpmPackage, dest: Path,
                  registry: str = DEFAULT_REGISTRY) -> Path:
    """Return the verified tarball of ``package`` in ``dest``, downloading it if missing or corrupt: with ``npm
    pack`` where npm works, else over HTTPS from ``registry`` (:func:`download_tarball`)."""
    path = dest / package.tarball_name
    if path.exists():
        try:
            verify_integrity(path, package.integrity)
            return path
        except ChecksumMismatchError:
            tqdm.write(f"{path.name}: cached tarball fails its checksum, fetching it again")
            path.unlink()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        path = npm_pack(npm_finder(), package, dest)
    except RuntimeError as error:  # npm missing, or npm pack failing: the registry serves the same file
        tqdm.write(f"{package.spec}: {str(error).splitlines()[0]} Downloading "
                   f"{registry_tarball_url(package, registry)} instead.")
        return download_tarball(package, dest, registry)
    verify_integrity(path, package.integrity)
    return path


# ----------------------------------------------------------------------------------------------------
# Reading and converting drawings
# ----------------------------------------------------------------------------------------------------


def iter_tar_files(tarball: Path, select: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """Stream ``(member name, bytes)`` of the regular files that ``select`` keeps (one pass, low memory)."""
    with tarfile.open(tarball, mode="r|gz") as archive:
        for member in archive:
            if member.isfile() and select(member.name):
                handle = archive.extractfile(member)
                if handle is not None:
                    yield member.name, handle.read()


def read_emoji_json(tarball: Path) -> list[dict]:
    """emoji.json from an emoji-datasource tarball."""
    for _, data in iter_tar_files(tarball, lambda name: name == METADATA_MEMBER):
        return json.loads(data)
    raise RuntimeError(f"{tarball} has no {METADATA_MEMBER}; is it an emoji-datasource package?")


def on_white(image: Image.Image, size: int = IMAGE_SIZE) -> np.ndarray:
    """Composite a drawing (any mode, alpha honoured) on white, then resize to ``size`` (Lanczos): RGB uint8."""
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8)


def find_svg_renderer() -> tuple[str, Callable[[bytes, int], Image.Image]] | None:
    """An SVG rasteriser ``(description, render(svg_bytes, size) -> PIL image)``: resvg-py, else cairosvg."""
    try:
        import resvg_py

        def render_resvg(svg: bytes, size: int) -> Image.Image:
            png = resvg_py.svg_to_bytes(svg_string=svg.decode("utf-8"), width=size, height=size)
            return Image.open(io.BytesIO(bytes(png)))

        return "resvg-py", render_resvg
    except ImportError:
        pass
    try:
        import cairosvg  # needs the system cairo library: OSError when it is missing

        def render_cairo(svg: bytes, size: int) -> Image.Image:
            png = cairosvg.svg2png(bytestring=svg, output_width=size, output_height=size)
            return Image.open(io.BytesIO(png))

        return "cairosvg", render_cairo
    except (ImportError, OSError):
        return None


def make_decoder(source: StyleSource, renderer) -> Callable[[bytes], np.ndarray]:
    """File bytes of one drawing -> 64x64 RGB on white."""
    if source.suffix == ".svg":
        if renderer is None:
            raise RuntimeError("no SVG renderer: pip install resvg-py")
        return lambda data: on_white(renderer[1](data, IMAGE_SIZE))
    return lambda data: on_white(Image.open(io.BytesIO(data)))


def extract_style(tarball: Path, source: StyleSource, wanted: set[str],
                  decode: Callable[[bytes], np.ndarray]) -> dict[str, np.ndarray]:
    """Decode the drawings of ``source`` whose normalised code point is in ``wanted``: ``{key: image}``."""
    def select(name: str) -> bool:
        return name.startswith(source.member_prefix) and name.endswith(source.suffix)

    found: dict[str, np.ndarray] = {}
    failed: list[str] = []
    with tqdm(total=len(wanted), desc=f"{source.style:>9}: drawings", unit="img", leave=False) as bar:
        for name, data in iter_tar_files(tarball, select):
            stem = name[len(source.member_prefix):-len(source.suffix)]
            try:
                key = code_point_key(stem)
            except ValueError:  # a sub-folder or a file not named by code point
                continue
            if key in wanted and key not in found:
                try:
                    found[key] = decode(data)
                except (ValueError, OSError):  # an unreadable drawing: that class lacks this style
                    failed.append(stem)
                bar.update()
    if failed:
        tqdm.write(f"{source.style}: skipped {len(failed)} drawings that could not be decoded: {failed[:10]}")
    return found


def align_classes(records: Sequence[Mapping], drawings: Mapping[str, Mapping[str, np.ndarray]]
                  ) -> tuple[list[EmojiClass], dict[str, tuple[list[str], np.ndarray]]]:
    """Join the kept emoji.json records with each style's drawings by code point.

    Args:
        records: output of :func:`filter_emoji_entries`.
        drawings: ``{style: {code_point_key: image}}``.

    Returns:
        ``(classes, {style: (code_points, images)})``; classes that no style draws are dropped, and each
        style's arrays follow the class order.
    """
    styles = [s for s in STYLES if s in drawings]
    classes: list[EmojiClass] = []
    per_style: dict[str, tuple[list[str], list[np.ndarray]]] = {s: ([], []) for s in styles}
    for record in records:
        key = code_point_key(record["code_point"])
        have = tuple(s for s in styles if key in drawings[s])
        if not have:
            continue
        classes.append(EmojiClass(record["code_point"], record["name"], record["category"],
                                  record["subcategory"], have))
        for style in have:
            per_style[style][0].append(record["code_point"])
            per_style[style][1].append(drawings[style][key])
    empty = np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    return classes, {s: (cps, np.stack(imgs) if imgs else empty) for s, (cps, imgs) in per_style.items()}


# ----------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------


def attribution_text(styles: Sequence[str]) -> str:
    """ATTRIBUTION.md: each built style's licence and source package."""
    lines = [
        "# EmojiDomains: attribution", "",
        "Built by `python data_scripts/fetch_emoji.py` (uniil_lib). Every drawing was composited on a white",
        "background and resized to 64x64 pixels (OpenMoji: rendered from SVG); nothing else was changed.",
        "Class metadata (names, categories, code points) come from emoji.json of emoji-datasource",
        f"({METADATA_PACKAGE.spec}, MIT licence, https://github.com/iamcal/emoji-data).", "",
        "| style | artwork | licence | npm package | upstream |", "| --- | --- | --- | --- | --- |",
    ]
    for style in styles:
        s = SOURCES[style]
        lines.append(f"| {style} | {s.artwork} | {s.licence} | `{s.package.spec}` | {s.upstream} |")
    lines += ["", "Notes:",
              "- Twemoji graphics: Copyright Twitter, Inc and other contributors, CC-BY 4.0.",
              "- OpenMoji: the emoji and icons are licensed under CC BY-SA 4.0; `openmoji.npz` is an adaptation",
              "  and is shared under the same licence.",
              "- Noto Emoji images: Apache License 2.0. Fluent Emoji: MIT licence, Copyright Microsoft.", ""]
    return "\n".join(lines)


def outputs_up_to_date(out_dir: Path, styles: Sequence[str]) -> bool:
    """True if ``checksums.json`` lists exactly ``styles`` and current pins, and every output verifies."""
    path = out_dir / "checksums.json"
    if not path.exists():
        return False
    record = json.loads(path.read_text(encoding="utf-8"))
    pins = {p.spec: p.integrity for p in PACKAGES}
    if record.get("styles") != list(styles) or any(pins.get(k) != v for k, v in record.get("packages", {}).items()):
        return False
    outputs = record.get("outputs", {})
    expected = {"classes.json", "ATTRIBUTION.md", *(f"{s}.npz" for s in styles)}
    if set(outputs) != expected:
        return False
    return all((out_dir / name).exists() and sha256_file(out_dir / name) == digest
               for name, digest in outputs.items())


def write_outputs(root: Path, classes: list[EmojiClass], per_style: Mapping[str, tuple[list[str], np.ndarray]],
                  packages: Sequence[NpmPackage], renderer_name: str | None) -> Path:
    """Write the npz files, classes.json, ATTRIBUTION.md and (last) checksums.json; drop stale outputs."""
    out_dir = emoji_dir(root)
    old = out_dir / "checksums.json"
    previous = json.loads(old.read_text(encoding="utf-8")).get("outputs", {}) if old.exists() else {}
    old.unlink(missing_ok=True)  # until the new one is written, the folder does not claim to be complete
    styles = list(per_style)
    for style, (code_points, images) in per_style.items():
        write_emoji_style(root, style, code_points, images)
    write_emoji_classes(root, classes, styles)
    atomic_write_text(out_dir / "ATTRIBUTION.md", attribution_text(styles))
    names = ["classes.json", "ATTRIBUTION.md", *(f"{s}.npz" for s in styles)]
    for stale in set(previous) - set(names):
        (out_dir / stale).unlink(missing_ok=True)
        tqdm.write(f"removed {stale} (not part of this build)")
    # Loaders check every file against this record (uniil_lib.integrity.Checksums).
    write_checksums(out_dir, names, extra={"styles": styles, "svg_renderer": renderer_name,
                                           "packages": {p.spec: p.integrity for p in packages}})
    return out_dir


# ----------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------


def parse_styles(text: str) -> list[str]:
    """``"google,twitter"`` -> ``["twitter", "google"]`` (canonical order); unknown names are an error."""
    asked = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in asked if s not in STYLES]
    if unknown or not asked:
        raise SystemExit(f"--styles: unknown or empty {unknown or text!r}; choose from {','.join(STYLES)}")
    return [s for s in STYLES if s in asked]


def summarise(out_dir: Path, classes: list[EmojiClass], styles: Sequence[str], seconds: float) -> None:
    """Print classes per style, the aligned count, per-category counts, disk size and run time."""
    aligned = [c for c in classes if set(styles).issubset(c.styles)]
    print(f"EmojiDomains written to {out_dir} in {seconds:.1f} s")
    for style in styles:
        print(f"  {style:>9}: {sum(style in c.styles for c in classes)} classes")
    print(f"  aligned across all {len(styles)} styles: {len(aligned)} classes")
    for category, n in Counter(c.category for c in aligned).most_common():
        print(f"    {category}: {n}")
    size = sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())
    print(f"  disk: {size / 2**20:.1f} MiB")


def build(root: Path, styles: list[str], download_dir: Path, delete_downloads: bool,
          registry: str = DEFAULT_REGISTRY) -> Path:
    """Fetch, verify, extract, align and write EmojiDomains for ``styles`` (a no-op when up to date)."""
    start = time.perf_counter()
    renderer = find_svg_renderer() if "openmoji" in styles else None
    if "openmoji" in styles and renderer is None:
        print("NOTE: skipping openmoji: no SVG renderer. Install one with `pip install resvg-py` (or "
              "`pip install cairosvg` and `apt-get install libcairo2`), then run again.")
        styles = [s for s in styles if s != "openmoji"]
    if not styles:
        raise SystemExit("no style left to build")
    out_dir = emoji_dir(root)
    if outputs_up_to_date(out_dir, styles):
        print(f"EmojiDomains in {out_dir} is up to date ({', '.join(styles)}); nothing to do.")
        return out_dir
    packages = [METADATA_PACKAGE, *(SOURCES[s].package for s in styles if SOURCES[s].package != METADATA_PACKAGE)]
    tarballs = {p.spec: fetch_package(require_npm, p, download_dir, registry)
                for p in tqdm(packages, desc="npm packages")}
    records = filter_emoji_entries(read_emoji_json(tarballs[METADATA_PACKAGE.spec]))
    wanted = {code_point_key(r["code_point"]) for r in records}
    drawings = {}
    for style in tqdm(styles, desc="styles"):
        source = SOURCES[style]
        drawings[style] = extract_style(tarballs[source.package.spec], source, wanted, make_decoder(source, renderer))
    classes, per_style = align_classes(records, drawings)
    write_outputs(root, classes, per_style, packages, renderer[0] if renderer else None)
    if delete_downloads:
        for path in tarballs.values():
            path.unlink(missing_ok=True)
    summarise(out_dir, classes, styles, time.perf_counter() - start)
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="data root (default: uniil_lib data root)")
    parser.add_argument("--styles", default=",".join(STYLES), help=f"comma list from {','.join(STYLES)}")
    parser.add_argument("--download-dir", type=Path, default=None,
                        help="where npm tarballs are kept (default: <cache root>/downloads/emoji)")
    parser.add_argument("--delete-downloads", action="store_true", help="delete the tarballs after building")
    parser.add_argument("--registry", default=DEFAULT_REGISTRY,
                        help="the npm registry for downloads without npm (default: $npm_config_registry or "
                             "https://registry.npmjs.org)")
    args = parser.parse_args(argv)
    root = args.root if args.root is not None else data_root()
    download_dir = args.download_dir if args.download_dir is not None else cache_root() / "downloads" / "emoji"
    try:
        build(root, parse_styles(args.styles), download_dir, args.delete_downloads, args.registry)
    except (RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
