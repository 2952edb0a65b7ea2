"""Build the course site from the executed notebooks, the README and the course guide; check it in a browser.

    python scripts/build_site.py                 # -> build/site/ (open build/site/index.html)
    python scripts/build_site.py --check         # build, then open every page in headless Chromium
    python scripts/build_site.py --out DIR --screenshots DIR --check

The site (mkdocs with the material theme and mkdocs-jupyter, which renders the stored outputs and executes
nothing) has a home page (the README), the course guide (learning goals, times, the six-session plan, the
exercises), one page per solved notebook and the results and architecture notes. Each notebook page starts
with a box that says which session of the plan it belongs to, its learning goals (from the course guide) and
where to run it: the notebook and its student copy on Colab and on Binder. Links between the documents point
at their pages; links to other files of the repository point at GitHub.

``--check`` serves the site on 127.0.0.1 and opens every page in headless Chromium (Debian's ``chromium``,
installed by ``scripts/setup.sh``): the page must render its title and content, every figure a notebook holds
must be on its page, no page may show an error output, and a screenshot of each page goes to
``--screenshots`` (default ``build/site-screenshots``). Exit 1 with one line per problem.
"""

from __future__ import annotations

import argparse
import functools
import html
import http.server
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NUMBERED = "[0-9][0-9]_*.ipynb"
GITHUB = "https://github.com/uniil-lib/uniil_lib"
COLAB = "https://colab.research.google.com/github/uniil-lib/uniil_lib/blob/main/notebooks/"
BINDER = "https://mybinder.org/v2/gh/uniil-lib/uniil_lib/main?labpath=notebooks%2F"
# repository path -> site path, for every document that becomes a page (notebooks are added per file)
DOCUMENTS = MappingProxyType({"README.md": "index.md", "docs/course.md": "course.md",
                              "docs/results_notes.md": "results_notes.md", "docs/architecture.md": "architecture.md"})
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=8000")
LINK = re.compile(r"(\]\()([^)\s]+)(\))")


# ----------------------------------------------------------------------------------------------------
# the course guide: sessions and learning goals per notebook
# ----------------------------------------------------------------------------------------------------
def sessions(course: str) -> dict[str, int]:
    """``{"00": 1, "01": 1, ...}``: the session of the six-session plan each notebook belongs to."""
    found = {}
    for number, cells in re.findall(r"^\|\s*(\d+)\s*\|([^|]+)\|", course, flags=re.MULTILINE):
        for notebook in re.findall(r"\[(\d\d)\]\(", cells):
            found[notebook] = int(number)
    return found


def learning_goals(course: str) -> dict[str, str]:
    """``{"00": "install and run anywhere ...", ...}``: each notebook's learning goals in the course guide."""
    goals = {}
    for number, body in re.findall(r"^### (\d\d) · .*?\n(.*?)(?=^### |^## |\Z)", course, flags=re.MULTILINE | re.DOTALL):
        match = re.search(r"\*\*Learning goals\*\*:\s*(.*?)(?=\n- \*\*|\Z)", body, flags=re.DOTALL)
        if match:
            goals[number] = " ".join(match.group(1).split())
    return goals


# ----------------------------------------------------------------------------------------------------
# pages
# ----------------------------------------------------------------------------------------------------
def site_path_of(repo_path: str, notebooks: list[str]) -> str | None:
    """Where a repository file is in the site (None: not a page)."""
    if repo_path in DOCUMENTS:
        return DOCUMENTS[repo_path]
    if repo_path.startswith("notebooks/") and repo_path.count("/") == 1 and Path(repo_path).name in notebooks:
        return repo_path
    return None


def rewrite_links(text: str, source: str, page: str, notebooks: list[str]) -> str:
    """Links of ``text`` (written in repository file ``source``) as links of site page ``page``."""
    def replace(match: re.Match) -> str:
        target = match.group(2)
        if target.startswith(("http://", "https://", "mailto:", "#")):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = (Path(source).parent / path).as_posix()
        parts: list[str] = []
        for part in resolved.split("/"):
            if part == "..":
                parts = parts[:-1]
            elif part not in (".", ""):
                parts.append(part)
        repo_path = "/".join(parts)
        in_site = site_path_of(repo_path, notebooks)
        if in_site is None:
            kind = "tree" if (ROOT / repo_path).is_dir() or path.endswith("/") else "blob"
            url = f"{GITHUB}/{kind}/main/{repo_path}"
        else:
            depth = page.count("/")
            url = "../" * depth + in_site
        return f"{match.group(1)}{url}{'#' + anchor if anchor else ''}{match.group(3)}"

    return LINK.sub(replace, text)


def notebook_header(name: str, session: int | None, goals: str | None) -> str:
    """The box at the top of a notebook's page: session, learning goals, where to run it (a quote: notebook
    markdown is rendered by nbconvert, which knows no admonitions)."""
    where = (f"session {session} of the [six-session plan](../course.md#suggested-order-six-sessions)" if session
             else "not in the six-session plan")
    lines = [f"> **In the course**: {where}; times and exercises in the [course guide](../course.md)."]
    if goals:
        lines += [">", f"> **Learning goals**: {goals}"]
    lines += [">", f"> **Run it**: [on Colab]({COLAB}{name}) · [on Binder]({BINDER}{name}) · the student copy, with "
              f"the exercises left open: [on Colab]({COLAB}student/{name}) · [on Binder]({BINDER}student%2F{name})"]
    return "\n".join(lines)


def site_notebook(path: Path, header: str, notebooks: list[str]) -> nbformat.NotebookNode:
    """The page version of a solved notebook: its links rewritten and the course box after its title cell."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = rewrite_links(cell.source, f"notebooks/{path.name}", f"notebooks/{path.name}", notebooks)
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(header))
    return nb


def write_sources(src: Path, root: Path = ROOT) -> list[tuple[str, str]]:
    """Write the site's sources into ``src``; returns the navigation ``[(title, site path), ...]``."""
    paths = sorted((root / "notebooks").glob(NUMBERED))
    names = [p.name for p in paths]
    course = (root / "docs" / "course.md").read_text(encoding="utf-8")
    session_of, goals_of = sessions(course), learning_goals(course)
    (src / "notebooks").mkdir(parents=True, exist_ok=True)
    for repo_path, page in DOCUMENTS.items():
        text = (root / repo_path).read_text(encoding="utf-8")
        (src / page).write_text(rewrite_links(text, repo_path, page, names), encoding="utf-8")
    nav = [("Home", "index.md"), ("Course guide", "course.md")]
    for path in paths:
        number = path.name[:2]
        header = notebook_header(path.name, session_of.get(number), goals_of.get(number))
        nbformat.write(site_notebook(path, header, names), src / "notebooks" / path.name)
        title = nbformat.read(path, as_version=4).cells[0].source.split("\n")[0].lstrip("# ").strip()
        nav.append((title, f"notebooks/{path.name}"))
    nav += [("Results notes", "results_notes.md"), ("Architecture", "architecture.md")]
    return nav


def mkdocs_config(nav: list[tuple[str, str]], src: Path, out: Path) -> dict:
    pages = [{title: page} for title, page in nav if not page.startswith("notebooks/")]
    notebooks = [{title: page} for title, page in nav if page.startswith("notebooks/")]
    return {
        "site_name": "uniil_lib: continual learning with CLIP",
        "site_description": "A notebook-first course: zero-shot CLIP, adapters, MoE-Adapters with DDAS, MAGE, AWPF",
        "repo_url": GITHUB, "docs_dir": str(src), "site_dir": str(out), "use_directory_urls": False,
        "theme": {"name": "material", "font": False, "features": ["navigation.sections", "navigation.top"]},
        "nav": pages[:2] + [{"Notebooks": notebooks}] + pages[2:],
        "markdown_extensions": ["tables", "admonition", "toc", {"pymdownx.arithmatex": {"generic": True}}],
        "plugins": ["search", {"mkdocs-jupyter": {"execute": False, "include_source": True}}],
    }


def build(out: Path, root: Path = ROOT) -> list[tuple[str, str]]:
    """Build the site into ``out``; returns the navigation. Raises CalledProcessError with mkdocs' output."""
    with tempfile.TemporaryDirectory(prefix="uniil-site-") as tmp:
        src = Path(tmp) / "src"
        nav = write_sources(src, root)
        config = Path(tmp) / "mkdocs.yml"
        config.write_text(json.dumps(mkdocs_config(nav, src, out.resolve()), indent=1), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--quiet", "-f", str(config)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
    return nav


# ----------------------------------------------------------------------------------------------------
# checking the pages in a browser
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Page:
    """A page to open and what it must show."""

    url_path: str        # e.g. "notebooks/00_setup.html"
    title: str           # text the page must contain
    figures: int         # images its notebook holds (0 for a document)


def pages_of(nav: list[tuple[str, str]], root: Path = ROOT) -> list[Page]:
    pages = []
    for title, page in nav:
        figures = 0
        if page.endswith(".ipynb"):
            nb = nbformat.read(root / page, as_version=4)
            figures = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs
                          if "image/png" in o.get("data", {}))
        pages.append(Page(re.sub(r"\.(md|ipynb)$", ".html", page), title, figures))
    return pages


def page_problems(page: Page, dom: str) -> list[str]:
    """What is wrong with a page, from the DOM Chromium rendered (empty: nothing)."""
    problems = []
    text = html.unescape(re.sub(r"<[^>]+>", " ", dom))
    if "md-content" not in dom or len(text.split()) < 50:
        problems.append("the page did not render its content")
    if " ".join(page.title.split()) not in " ".join(text.split()):
        problems.append(f"the title {page.title!r} is not on the page")
    shown = len(re.findall(r"<img[^>]+src=\"data:image/png;base64,", dom))
    if shown < page.figures:
        problems.append(f"{shown} figures shown of the {page.figures} its notebook holds")
    if "Traceback (most recent call last)" in text or 'data-mime-type="application/vnd.jupyter.error"' in dom \
            or re.search(r"-{20,}\s*\w+(Error|Exception)\b", text):
        problems.append("an error output is on the page")
    return problems


def chromium(*args: str, timeout: int = 90) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise FileNotFoundError("headless Chromium is needed: apt-get install chromium (scripts/setup.sh does it as root)")
    with tempfile.TemporaryDirectory(prefix="uniil-chromium-") as profile:
        return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)


def screenshot_problems(path: Path) -> list[str]:
    from PIL import Image

    if not path.is_file() or path.stat().st_size < 5_000:
        return [f"no screenshot (or an empty one) at {path}"]
    with Image.open(path) as image:
        extrema = image.convert("L").getextrema()
    return [] if extrema[1] - extrema[0] > 50 else [f"the screenshot {path} is blank"]


def check_site(site: Path, pages: list[Page], screenshots: Path) -> list[str]:
    """Serve ``site`` on 127.0.0.1, open every page in headless Chromium; ``"page: problem"`` lines."""
    screenshots.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    problems = []
    try:
        for page in pages:
            url = f"http://127.0.0.1:{server.server_address[1]}/{page.url_path}"
            dom = chromium("--dump-dom", url).stdout
            shot = screenshots / (page.url_path.replace("/", "_").replace(".html", ".png"))
            chromium(f"--screenshot={shot}", "--window-size=1280,1800", url)
            problems += [f"{page.url_path}: {p}" for p in page_problems(page, dom) + screenshot_problems(shot)]
    finally:
        server.shutdown()
        server.server_close()
    return problems


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no request log on stderr
        pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "site", help="where the site goes")
    parser.add_argument("--check", action="store_true", help="open every page in headless Chromium")
    parser.add_argument("--screenshots", type=Path, default=ROOT / "build" / "site-screenshots")
    args = parser.parse_args(argv)
    try:
        nav = build(args.out)
    except subprocess.CalledProcessError as error:
        print(f"error: mkdocs failed:\n{error.stdout}{error.stderr}", file=sys.stderr)
        return 1
    print(f"site: {args.out / 'index.html'} ({len(nav)} pages)")
    if not args.check:
        return 0
    pages = pages_of(nav)
    problems = check_site(args.out, pages, args.screenshots)
    for line in problems:
        print(line)
    figures = sum(p.figures for p in pages)
    print(f"{len(pages)} pages opened in Chromium, {figures} notebook figures expected; screenshots in "
          f"{args.screenshots}; {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
