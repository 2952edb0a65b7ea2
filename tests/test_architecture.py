"""The package's import graph (scripts/import_graph.py): no cycles, every import points to the same or a lower
layer, and docs/architecture.md is current. Also that the checks themselves can fail."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def graph_tool():
    spec = importlib.util.spec_from_file_location("import_graph", REPO / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def graph(graph_tool):
    return graph_tool.import_graph()


def test_the_package_has_no_import_cycles(graph_tool, graph):
    assert len(graph) > 40 and "methods.mage" in graph and "clip" in graph["methods.zeroshot"]
    assert graph_tool.find_cycles(graph) == []


def test_every_module_has_a_layer_and_imports_point_down(graph_tool, graph):
    assert graph_tool.layer_problems(graph) == []


def test_docs_architecture_is_current(graph_tool):
    assert graph_tool.ARCHITECTURE.read_text(encoding="utf-8") == graph_tool.render(), \
        "docs/architecture.md is out of date: run python scripts/import_graph.py"


def test_imports_inside_functions_count_and_a_cycle_through_them_is_found(graph_tool):
    modules = {"a", "b", "data", "data.base", "metrics", "uniil_lib"}
    lazy = "import os\n\ndef f():\n    from .b import helper\n    return helper\n"
    assert graph_tool.imports_of("a", lazy, modules, is_package=False) == {"b"}
    assert graph_tool.imports_of("b", "from .a import f\nfrom . import metrics\n", modules, is_package=False) \
        == {"a", "metrics"}
    assert graph_tool.imports_of("data.base", "from ..data import x\nfrom . import y\n", modules,
                                 is_package=False) == {"data"}, "names of a package are edges to the package"
    assert graph_tool.imports_of("b", "import uniil_lib.data.base\nimport numpy\n", modules, is_package=False) \
        == {"data.base"}
    assert graph_tool.find_cycles({"a": {"b"}, "b": {"a", "c"}, "c": set()}) == [["a", "b"]]


def test_an_upward_import_and_a_module_without_a_layer_are_reported(graph_tool):
    problems = graph_tool.layer_problems({"metrics": {"cli"}, "cli": set(), "brand_new": set()})
    assert problems == ["brand_new has no layer: add it to LAYERS in scripts/import_graph.py",
                        "metrics (foundation) imports cli (front ends), a higher layer"]
