"""The course site (issue 18, item 2): built from the stored notebooks, the README and the course guide, and
every page opened in headless Chromium (``scripts/build_site.py --check`` does the same from the command line).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from repo_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "build_site.py"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _load_script():
    return load_script(SCRIPT)


site = _load_script()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "site"
    return out, site.build(out)


def test_every_page_renders_in_chromium(built, tmp_path):
    out, nav = built
    pages = site.pages_of(nav)
    assert len(pages) == 2 + len(NOTEBOOKS) + 2, [p.url_path for p in pages]
    problems = site.check_site(out, pages, tmp_path / "screenshots")
    assert not problems, "\n".join(problems)
    shots = sorted(p.name for p in (tmp_path / "screenshots").glob("*.png"))
    assert len(shots) == len(pages), shots
    print(f"screenshots: {tmp_path / 'screenshots'}; figures expected: {sum(p.figures for p in pages)}")


def test_notebook_pages_carry_the_course_box(built):
    out, _ = built
    course = (ROOT / "docs" / "course.md").read_text(encoding="utf-8")
    assert set(site.sessions(course)) == {p.name[:2] for p in NOTEBOOKS}, "every notebook has a session in the plan"
    assert set(site.learning_goals(course)) == {p.name[:2] for p in NOTEBOOKS}, "every notebook has learning goals"
    page = (out / "notebooks" / "04_moe_adapters.html").read_text(encoding="utf-8")
    assert "session 4 of the" in page and "Learning goals" in page
    assert f"{site.COLAB}04_moe_adapters.ipynb" in page and f"{site.BINDER}student%2F04_moe_adapters.ipynb" in page


def test_links_point_at_pages_or_at_github():
    names = [p.name for p in NOTEBOOKS]
    text = ("[guide](docs/course.md#the-notebooks) [nb](notebooks/00_setup.ipynb) [card](uniil_lib/weights/MODEL_CARD.md) "
            "[web](https://example.org/x) [here](#results)")
    assert site.rewrite_links(text, "README.md", "index.md", names) == (
        "[guide](course.md#the-notebooks) [nb](notebooks/00_setup.ipynb) "
        f"[card]({site.GITHUB}/blob/main/uniil_lib/weights/MODEL_CARD.md) [web](https://example.org/x) [here](#results)")
    from_course = site.rewrite_links("[back](../README.md) [03](../notebooks/03_adapters.ipynb) "
                                     "[copy](../notebooks/student/03_adapters.ipynb) [all](../notebooks/)",
                                     "docs/course.md", "course.md", names)
    assert from_course == (f"[back](index.md) [03](notebooks/03_adapters.ipynb) "
                           f"[copy]({site.GITHUB}/blob/main/notebooks/student/03_adapters.ipynb) "
                           f"[all]({site.GITHUB}/tree/main/notebooks)")
    assert site.rewrite_links("[next](04_moe_adapters.ipynb)", "notebooks/03_adapters.ipynb",
                              "notebooks/03_adapters.ipynb", names) == "[next](../notebooks/04_moe_adapters.ipynb)"


def page_dom(body: str) -> str:
    words = " ".join(["word"] * 60)
    return f'<html><body><div class="md-content"><h1>03 · Adapters</h1><p>{words}</p>{body}</div></body></html>'


def test_page_problems_name_what_is_missing():
    page = site.Page("notebooks/03_adapters.html", "03 · Adapters", figures=2)
    figure = '<img alt="No description has been provided for this image" src="data:image/png;base64,iVBORw0KGgo=">'
    assert site.page_problems(page, page_dom(figure * 2)) == []
    assert site.page_problems(page, page_dom(figure)) == ["1 figures shown of the 2 its notebook holds"]
    error = "<pre>----------------------------------------------------------------------\nValueError    Traceback</pre>"
    assert site.page_problems(page, page_dom(figure * 2 + error)) == ["an error output is on the page"]
    assert "the page did not render its content" in site.page_problems(page, "<html><body>Loading</body></html>")
    other = site.Page("course.html", "Teaching with uniil_lib", figures=0)
    assert site.page_problems(other, page_dom("")) == ["the title 'Teaching with uniil_lib' is not on the page"]
