"""The import graph of uniil_lib, its layers, and the drawing of both in docs/architecture.md.

    python scripts/import_graph.py            # (re)write docs/architecture.md
    python scripts/import_graph.py --check    # exit 1 if docs/architecture.md is out of date, a module has no
                                              # layer, an import points to a higher layer, or imports form a cycle

The graph is read from the source, not from a running interpreter: every ``import`` and ``from ... import`` in
every module of the package, those inside functions included (an import inside a function is still a
dependency; it only runs later). An edge ``a -> b`` means module ``a`` imports module ``b``; importing a name
from a package (``from .data import load_dataset``) is an edge to the package's ``__init__``.

:data:`LAYERS` is the one place that says which layer a module belongs to. A module may import modules of its
own layer and of lower layers only; within a layer the imports may not form a cycle either.
``tests/test_architecture.py`` checks all of it.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "uniil_lib"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

# Lowest layer first: (name, what it holds, module patterns relative to the package; "uniil_lib" is its __init__).
LAYERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("foundation", "paths, settings, file integrity and pure functions that know nothing of data or models",
     ("uniil_lib", "paths", "threads", "fileio", "integrity", "shipped", "train_config", "profiles", "metrics", "plots",
      "distributed")),
    ("data", "datasets as ImageSets, loaded by name from one data root",
     ("data", "data.*")),
    ("models", "CLIP models, their features, adapters, routers and the other parts methods are built from",
     ("clip_model", "imagenet_backbone", "hybrid_vit", "mini_clip", "clip", "pixels", "features", "shim", "routers",
      "adapters", "tower_split", "fusion", "attributes", "attribute_analysis", "llm_server")),
    ("scenarios", "steps and streams, and the named scenarios built from the data",
     ("scenarios", "emoji_scenarios", "named_scenarios")),
    ("methods", "continual-learning methods behind one interface",
     ("methods", "methods.*")),
    ("training and benchmark", "the continual trainer, run configurations and the one runner",
     ("train", "run_config", "benchmark")),
    ("front ends", "the command line and the notebooks' helpers",
     ("cli", "__main__", "widgets", "exercises", "notebook_setup")),
)


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """``{module name: file}`` of every module of the package, named relative to it (``"data.base"``; the
    package's own ``__init__`` is ``"uniil_lib"``, a subpackage's is its name)."""
    modules = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root / PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts) or PACKAGE] = path
    return modules


def _absolute(name: str) -> str:
    return PACKAGE if name == PACKAGE else f"{PACKAGE}.{name}"


def _relative(absolute: str) -> str:
    return PACKAGE if absolute == PACKAGE else absolute[len(PACKAGE) + 1:]


def imports_of(name: str, source: str, modules: set[str], *, is_package: bool) -> set[str]:
    """The package modules that module ``name`` (its ``source``) imports, anywhere in the file."""
    found = set()
    here = _absolute(name).split(".")
    base = here if is_package else here[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = base[: len(base) - node.level + 1] if node.level else []
            prefix = ".".join(parts + ([node.module] if node.module else []))
            # "from . import metrics" imports a module; "from .data import load_dataset" a name of a package
            targets = [f"{prefix}.{alias.name}" if _relative(f"{prefix}.{alias.name}") in modules else prefix
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                relative = _relative(target)
                while relative not in modules and "." in relative:
                    relative = relative.rsplit(".", 1)[0]
                if relative in modules and relative != name:
                    found.add(relative)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``{module: modules it imports}`` for the whole package."""
    modules = package_modules(root)
    return {name: imports_of(name, path.read_text(encoding="utf-8"), set(modules),
                             is_package=path.name == "__init__.py")
            for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import each other in a circle (strongly connected components with more than
    one module), each sorted; Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of ``module``'s layer (None when no pattern matches)."""
    for number, (_, _, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, pattern) for pattern in patterns):
            return number
    return None


def layer_problems(graph: dict[str, set[str]]) -> list[str]:
    """Modules without a layer, and imports that point to a higher layer, as sentences."""
    problems = [f"{module} has no layer: add it to LAYERS in scripts/import_graph.py"
                for module in sorted(graph) if layer_of(module) is None]
    for module in sorted(graph):
        for target in sorted(graph[module]):
            low, high = layer_of(module), layer_of(target)
            if low is not None and high is not None and high > low:
                problems.append(f"{module} ({LAYERS[low][0]}) imports {target} ({LAYERS[high][0]}), a higher layer")
    return problems


def _node(module: str) -> str:
    return "m_" + module.replace(".", "_")


def _summary(path: Path) -> str:
    """The first paragraph of a module's docstring, its reStructuredText roles turned into Markdown code."""
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    paragraph = " ".join(docstring.strip().split("\n\n")[0].split())
    paragraph = re.sub(r":\w+:`~?([^`]+)`", lambda match: f"`{match.group(1)}`", paragraph)
    return paragraph.replace("``", "`").replace("|", "/")


def mermaid(graph: dict[str, set[str]]) -> str:
    """The module graph as a Mermaid flowchart, one box per layer, the highest layer on top."""
    lines = ["```mermaid", "flowchart TD"]
    for number in reversed(range(len(LAYERS))):
        members = sorted(module for module in graph if layer_of(module) == number)
        lines.append(f'    subgraph L{number}["{number} · {LAYERS[number][0]}"]')
        lines += [f'        {_node(module)}["{module}"]' for module in members]
        lines.append("    end")
    lines += [f"    {_node(module)} --> {_node(target)}"
              for module in sorted(graph) for target in sorted(graph[module])]
    lines.append("```")
    return "\n".join(lines)


def layer_mermaid(graph: dict[str, set[str]]) -> str:
    """The layers as a Mermaid flowchart: an arrow where some module of one layer imports one of another."""
    lines = ["```mermaid", "flowchart TD"]
    lines += [f'    L{number}["{number} · {name}"]' for number, (name, _, _) in reversed(list(enumerate(LAYERS)))]
    pairs = {(layer_of(module), layer_of(target)) for module in graph for target in graph[module]}
    lines += [f"    L{low} --> L{high}" for low, high in sorted(pairs, reverse=True)
              if low is not None and high is not None and low != high]
    lines.append("```")
    return "\n".join(lines)


def render(root: Path = ROOT) -> str:
    """The text of docs/architecture.md."""
    graph, modules = import_graph(root), package_modules(root)
    lines = ["# Architecture: the layers of uniil_lib", "",
             "Generated by `python scripts/import_graph.py` from the package's source; "
             "`tests/test_architecture.py` fails when this file is out of date. Do not edit it by hand.", "",
             "Each module belongs to one layer and imports only modules of its own layer or of lower ones, and no "
             "group of modules imports each other in a circle (imports inside functions count). Read from the "
             "bottom up: data and models first, then scenarios, methods, the trainer and the benchmark, and the "
             "command line on top.", "", layer_mermaid(graph), ""]
    for number in reversed(range(len(LAYERS))):
        name, what, _ = LAYERS[number]
        lines += [f"## {number} · {name}", "", f"{what[0].upper()}{what[1:]}.", "", "| module | what it is |",
                  "|---|---|"]
        for module in sorted(m for m in graph if layer_of(m) == number):
            lines.append(f"| `{_absolute(module)}` | {_summary(modules[module])} |")
        lines.append("")
    lines += ["## The import graph", "", "An arrow `a --> b`: module `a` imports module `b`.", "", mermaid(graph), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="check instead of writing")
    args = parser.parse_args(argv)
    graph = import_graph()
    problems = [f"import cycle: {' <-> '.join(cycle)}" for cycle in find_cycles(graph)] + layer_problems(graph)
    for problem in problems:
        print(problem, file=sys.stderr)
    text = render()
    if args.check:
        current = ARCHITECTURE.is_file() and ARCHITECTURE.read_text(encoding="utf-8") == text
        if not current:
            print(f"{ARCHITECTURE.relative_to(ROOT)} is out of date: run python scripts/import_graph.py",
                  file=sys.stderr)
        return 1 if problems or not current else 0
    ARCHITECTURE.write_text(text, encoding="utf-8")
    print(f"wrote {ARCHITECTURE.relative_to(ROOT)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
