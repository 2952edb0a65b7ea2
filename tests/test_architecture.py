"""The package's import graph (scripts/import_graph.py): no cycles, every import points to the same or a lower
layer, and docs/architecture.md is current; no module keeps mutable state at its top level. Also that the checks
themselves can fail."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from repo_scripts import load_script

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def graph_tool():
    return load_script("scripts/import_graph.py")


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


MUTABLE_LITERALS = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)
MUTABLE_CALLS = {"dict", "list", "set", "bytearray", "defaultdict", "OrderedDict", "Counter", "deque"}


def module_level_mutables(source: str) -> list[str]:
    """Names that a module binds, at its top level, to a mutable container (a dict, list or set literal, a
    comprehension, or a call such as ``dict(...)``): shared state that any importer can change for everyone."""
    found = []
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, ast.AnnAssign) and node.value is not None else []
        value = getattr(node, "value", None)
        values = value.elts if isinstance(value, ast.Tuple) else [value]
        names = [n for t in targets for n in (t.elts if isinstance(t, ast.Tuple) else [t])]
        for name, v in zip(names, values if len(values) == len(names) else [value] * len(names)):
            call = v.func.id if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) else \
                v.func.attr if isinstance(v, ast.Call) and isinstance(v.func, ast.Attribute) else None
            dunder = isinstance(name, ast.Name) and name.id.startswith("__")  # __all__ is a list by convention
            if not dunder and (isinstance(v, MUTABLE_LITERALS) or call in MUTABLE_CALLS):
                found.append(ast.unparse(name))
    return found


def test_no_module_level_mutable_state():
    files = sorted(path for folder in ("uniil_lib", "scripts", "benchmarks", "data_scripts")
                   for path in (REPO / folder).rglob("*.py"))
    assert len(files) > 60 and REPO / "uniil_lib" / "mini_clip.py" in files
    problems = [f"{path.relative_to(REPO)}: {name}" for path in files
                for name in module_level_mutables(path.read_text(encoding="utf-8"))]
    assert problems == [], "module-level mutable containers (use MappingProxyType, frozenset or a tuple): " \
        + ", ".join(problems)


def test_the_mutable_state_check_finds_dicts_sets_and_lists():
    source = ("A = {'x': 1}\nB, C = {1}, (2,)\nD: list[int] = []\nE = dict(a=1)\nF = collections.OrderedDict()\n"
              "G = MappingProxyType({'x': 1})\nH = frozenset({1})\nI = (1, 2)\nJ = [i for i in range(3)]\n"
              "__all__ = ['f']\ndef f():\n    local = {}\n")
    assert module_level_mutables(source) == ["A", "B", "D", "E", "F", "J"]
