"""Named icon drawings for the mini-CLIP's pretraining: icon sets whose every drawing carries a name.

Six sets, each from a registry package (pinned), each drawn in its own style:

- ``material``: Google's Material Icons font from Debian's ``fonts-material-design-icons-iconfont``
  (Apache-2.0): one filled glyph per name ("directions_bike" -> "directions bike");
- ``phosphor``: ``@phosphor-icons/core`` from npm (MIT): every icon in six weights (thin, light, regular,
  bold, fill, duotone), six drawings of one name ("airplane-takeoff" -> "airplane takeoff");
- ``tabler``: ``@tabler/icons`` from npm (MIT): outline drawings, and filled ones where the set has them;
  the ``brand-*`` logos are skipped;
- ``game``: the game-icons.net drawings as the Iconify JSON package ``@iconify-json/game-icons`` from npm
  (CC BY 3.0, by Lorc, Delapouite and the other game-icons.net authors): 4,134 filled silhouettes of things,
  creatures and actions ("crossed-swords" -> "crossed swords"); numbered names ("abstract 001") are skipped;
- ``emojione`` and ``fxemoji``: two more emoji drawing styles, kept in colour, as the Iconify JSON packages
  ``@iconify-json/emojione`` (CC BY 4.0, EmojiOne 2 by Ranks.com) and ``@iconify-json/fxemoji`` (Apache-2.0,
  Mozilla's FxEmoji). More styles of the concepts the pretraining already names: an emojione key is a CLDR
  name ("red-apple" -> "red apple"), skin-tone variants skipped; an fxemoji key is a Unicode name without
  spaces ("redapple"), so it is named by the emoji class or emojione name it spells, and dropped when it
  spells none (:func:`emoji_style_members`).

An icon whose name shares a word with a banned word (a held-out emoji class or a Fashion-MNIST class, see
``pretrain_data.banned_words``) is dropped. Drawings are black on white (the emoji styles in their own colours), centred, filling 3/4 of the image.
Using icons at all, and these sets, is our choice for version 2's data (issue "A stronger offline CLIP":
richer offline pretraining data from registry packages); its effect is measured in
``docs/measurements/mini_clip_tuning.md``.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from fetch_emoji import NpmPackage, fetch_package, require_npm

MATERIAL_ICONS_PACKAGE = "fonts-material-design-icons-iconfont"
MATERIAL_ICONS_DIR = Path("/usr/share/fonts-material-design-icons-iconfont")
MATERIAL_ICONS_FONT = Path("/usr/share/fonts/truetype/material-design-icons-iconfont/MaterialIcons-Regular.ttf")
PHOSPHOR = NpmPackage("@phosphor-icons/core", "2.1.1",
                      "sha512-v4ARvrip4qBCImOE5rmPUylOEK4iiED9ZyKjcvzuezqMaiRASCHKcRIuvvxL/twvLpkfnEODCOJp5dM4eZilxQ==")
TABLER = NpmPackage("@tabler/icons", "3.52.0",
                    "sha512-dldKlJNfO/gZnGLcIY0X2EFFKIMGwL/rEvTqglvBgAPFiwj9pZOCN5V3Sf0Gyjq6foX4VQmLdOmsS4w5FdWKAw==")
GAME_ICONS = NpmPackage("@iconify-json/game-icons", "1.2.4",
                        "sha512-/HDDZxowXgDJcOEwPspUCq5RuDdl25OyZKdtxqqiPJQNTrWIym7r4StLzIVs77DyNzOWWhH5wDqwYR3WHeDfkg==")
EMOJIONE = NpmPackage("@iconify-json/emojione", "1.2.3",
                      "sha512-T9+T3HIbJNLKKsmxYKlaYhvnHYkz/HNYTV7SHCXVZPfeUi4FqskY70YeN8yYAZT8cCv7w5vJxS4Q1m8zb9CMMg==")
FXEMOJI = NpmPackage("@iconify-json/fxemoji", "1.2.2",
                     "sha512-UAasRaxzFUKfIGSmLwnoarsssA4LX0VLLuEmplIqM6ZNQqIQRtav8tZ4H1neTlBreXuMQyAifr5jP4kn78DpiQ==")
ICONIFY_PACKAGES = MappingProxyType({"game": GAME_ICONS, "emojione": EMOJIONE, "fxemoji": FXEMOJI})
EMOJI_STYLE_SETS = ("emojione", "fxemoji")  # drawn in colour, named after the emoji they draw
ICON_SETS = ("material", "phosphor", "tabler", "game", *EMOJI_STYLE_SETS)
FILL = 0.75  # share of the image side a drawing fills


@dataclass
class NamedDrawings:
    """Icon drawings and their names: ``names`` distinct, ``drawing_name[i]`` the name index of drawing ``i``."""

    names: list[str]
    drawing_name: list[int]
    images: torch.Tensor  # (D, 3, S, S) in [0, 1], black on white


def parse_icon_sets(text: str) -> tuple[str, ...]:
    """``"material+phosphor"`` -> ``("material", "phosphor")``; an unknown set is a ValueError naming the known."""
    sets = tuple(s for s in text.split("+") if s)
    unknown = [s for s in sets if s not in ICON_SETS]
    if unknown or not sets:
        raise ValueError(f"unknown icon set(s) {unknown or text!r}: use names from {ICON_SETS} joined by '+'")
    return sets


def material_icon_files(folder: Path = MATERIAL_ICONS_DIR, font: Path = MATERIAL_ICONS_FONT) -> tuple[Path, Path]:
    """The Material Icons font and its name -> code point map (``scss/_variables.scss``) of the Debian package.

    Raises:
        FileNotFoundError: the package is not installed (the message says how to install it).
    """
    names = folder / "scss" / "_variables.scss"
    for path in (font, names):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the material icon set needs the Debian package "
                                    f"{MATERIAL_ICONS_PACKAGE} (apt-get install {MATERIAL_ICONS_PACKAGE})")
    return font, names


def material_icon_names(names_file: Path, banned: set[str]) -> list[tuple[str, int]]:
    """``(name, code point)`` of every glyph once (first name of a code point, ``_`` -> space), minus the
    icons whose name has a banned word."""
    seen, icons = set(), []
    for name, code in re.findall(r'"([a-z0-9_]+)":\s*([0-9a-f]+)', names_file.read_text(encoding="utf-8")):
        words = name.split("_")
        if code in seen or banned & set(words):
            continue
        seen.add(code)
        icons.append((" ".join(words), int(code, 16)))
    return icons


def render_glyphs(font_path: Path, code_points: list[int], size: int) -> torch.Tensor:
    """``(N, 3, S, S)`` black glyphs on white in [0, 1], each centred, ``FILL`` of the image size."""
    font = ImageFont.truetype(str(font_path), round(size * FILL))
    images = []
    for code in code_points:
        image = Image.new("L", (size, size), 255)
        ImageDraw.Draw(image).text((size / 2, size / 2), chr(code), font=font, fill=0, anchor="mm")
        images.append(np.asarray(image))
    return _to_tensor(np.stack(images))


def render_svg(svg: bytes, size: int, *, colour: bool = False) -> np.ndarray:
    """An SVG icon (``currentColor`` drawn black) as ``(S, S)`` uint8 grey (``(S, S, 3)`` RGB with ``colour``),
    centred on white at ``FILL``."""
    import resvg_py

    inner = round(size * FILL)
    png = resvg_py.svg_to_bytes(svg_string=svg.decode("utf-8"), width=inner, height=inner)
    drawing = Image.open(io.BytesIO(bytes(png))).convert("RGBA")
    canvas = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    canvas.alpha_composite(drawing, ((size - inner) // 2, (size - inner) // 2))
    return np.asarray(canvas.convert("RGB" if colour else "L"))


def svg_members(tarball: Path, kind: str) -> list[tuple[str, str, bytes]]:
    """``(name, drawing style, svg bytes)`` of every icon in a phosphor or tabler tarball, in member order."""
    out = []
    with tarfile.open(tarball) as archive:
        for member in archive:
            if not member.isfile() or not member.name.endswith(".svg"):
                continue
            parts = member.name.split("/")
            if kind == "phosphor" and parts[1:2] == ["assets"] and len(parts) == 4:
                weight, stem = parts[2], parts[3][:-4]
                name = stem[: -len(weight) - 1] if weight != "regular" and stem.endswith("-" + weight) else stem
            elif kind == "tabler" and parts[1:2] == ["icons"] and len(parts) == 4 and not parts[3].startswith("brand-"):
                weight, name = parts[2], parts[3][:-4]
            else:
                continue
            out.append((name.replace("-", " "), weight, archive.extractfile(member).read()))
    return out


def iconify_members(tarball: Path) -> list[tuple[str, bytes]]:
    """``(name, svg bytes)`` of every icon in an Iconify JSON tarball (``package/icons.json``), in file order.

    Each icon's ``body`` is wrapped in an ``<svg>`` with its own or the set's view box; names with a number
    word ("abstract 001") name no concept and are skipped.
    """
    with tarfile.open(tarball) as archive:
        try:
            data = json.load(archive.extractfile("package/icons.json"))
        except KeyError:
            raise ValueError(f"{tarball} has no package/icons.json: not an Iconify JSON package "
                             "(delete the file to download it again)") from None
    out = []
    for key, icon in data["icons"].items():
        name = key.replace("-", " ")
        if any(word.isdigit() for word in name.split()):
            continue
        width, height = icon.get("width", data.get("width", 16)), icon.get("height", data.get("height", 16))
        svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
               f'viewBox="{icon.get("left", 0)} {icon.get("top", 0)} {width} {height}">{icon["body"]}</svg>')
        out.append((name, svg.encode()))
    return out


def spelled(name: str) -> str:
    """A name without case, spaces or punctuation: ``"Red-Apple"`` and ``"redapple"`` -> ``"redapple"``."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def emoji_style_members(kind: str, members: list[tuple[str, bytes]], class_names: list[str],
                        emojione_names: list[str]) -> list[tuple[str, bytes]]:
    """The drawings of an emoji-style set (``emojione`` or ``fxemoji``) under the names the pretraining uses.

    A drawing is named by the emoji class (``class_names``) whose name it spells, else (emojione) by its own
    CLDR name or (fxemoji) by the emojione name it spells; fxemoji keys that spell neither are dropped (their
    words cannot be told apart), as are emojione's skin-tone variants. Our choice, so that one concept has one
    caption across the styles.
    """
    known = {spelled(n): n for n in emojione_names}
    known.update({spelled(n): n for n in class_names})
    out = []
    for name, svg in members:
        if kind == "emojione" and "skin tone" in name:
            continue
        named = known.get(spelled(name), name if kind == "emojione" else None)
        if named is not None:
            out.append((named, svg))
    return out


def named_icon_drawings(sets: tuple[str, ...], size: int, banned: set[str], download_dir: Path,
                        class_names: list[str] = ()) -> NamedDrawings:
    """Every kept drawing of the icon ``sets`` at ``size`` px; npm tarballs are fetched into ``download_dir``.
    ``class_names`` (the emoji classes) name the drawings of the emoji-style sets where they match."""
    names, drawing_name, images, index = [], [], [], {}

    def add(name: str, image: torch.Tensor) -> None:
        if name not in index:
            index[name] = len(names)
            names.append(name)
        drawing_name.append(index[name])
        images.append(image)

    for kind in sets:
        if kind == "material":
            font, names_file = material_icon_files()
            icons = material_icon_names(names_file, banned)
            for (name, _), image in zip(icons, render_glyphs(font, [code for _, code in icons], size)):
                add(name, image)
            continue
        if kind in ICONIFY_PACKAGES:
            members = iconify_members(fetch_package(require_npm, ICONIFY_PACKAGES[kind], download_dir))
            if kind in EMOJI_STYLE_SETS:
                emojione = members if kind == "emojione" else iconify_members(
                    fetch_package(require_npm, EMOJIONE, download_dir))
                members = emoji_style_members(kind, members, list(class_names), [n for n, _ in emojione])
        else:
            tarball = fetch_package(require_npm, PHOSPHOR if kind == "phosphor" else TABLER, download_dir)
            members = [(name, svg) for name, _, svg in svg_members(tarball, kind)]
        for name, svg in tqdm(members, desc=f"render {kind} icons", leave=False):
            if not banned & set(name.split()):
                add(name, _to_tensor(render_svg(svg, size, colour=kind in EMOJI_STYLE_SETS)[None])[0])
    return NamedDrawings(names, drawing_name, torch.stack(images))


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``(N, S, S)`` uint8 grey or ``(N, S, S, 3)`` RGB -> ``(N, 3, S, S)`` float in [0, 1]."""
    x = torch.from_numpy(np.array(pixels)).float().div(255)
    return (x.permute(0, 3, 1, 2) if x.dim() == 4 else x.unsqueeze(1).expand(-1, 3, -1, -1)).contiguous()
