"""Replace some methods' entries of one benchmark result file with those of another run of the same setting.

    .venv/bin/python scripts/merge_results.py docs/measurements/seeds/uniil-offline-seed0.json \\
        /tmp/new/uniil-offline-fast-seed0.json --methods mage-noattr,mage

When a method's default changes (e.g. MAGE's activate-freeze), only its rows need running again; this puts the
new rows into the file that holds the others. Both files must be the same setting: scenario, profile, model,
seed, tasks and held-out split; otherwise nothing is written. Each merged entry records ``merged_from`` (the
other file's name) and the rest of the file is kept as it was. The entries are moved as they are: their
``options`` (when the run recorded any) travel with them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uniil_lib.benchmark import save_result  # noqa: E402

SAME = ("scenario", "profile", "model", "seed", "tasks", "split")


def merge_methods(into: dict, source: dict, methods: list[str], source_name: str) -> dict:
    """``into`` with the entries of ``methods`` taken from ``source`` (a new dict; neither input changes).

    Raises:
        ValueError: the two results differ in a key of :data:`SAME`, or ``source`` lacks one of ``methods``.
    """
    differ = [key for key in SAME if into.get(key) != source.get(key)]
    if differ:
        raise ValueError(f"{source_name} is not the same setting: it differs in {', '.join(differ)}; "
                         f"merge only runs of the same scenario, profile, model, seed and split")
    missing = [m for m in methods if m not in source["methods"]]
    if missing:
        raise ValueError(f"{source_name} has no entry for {', '.join(missing)} (it has {', '.join(source['methods'])})")
    merged = {**into, "methods": dict(into["methods"])}
    for method in methods:
        merged["methods"][method] = {**source["methods"][method], "merged_from": source_name}
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("into", type=Path, help="the result file to update")
    parser.add_argument("source", type=Path, help="the result file whose entries replace them")
    parser.add_argument("--methods", required=True, help="comma-separated methods to take from SOURCE")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    try:
        into, source = (json.loads(path.read_text()) for path in (args.into, args.source))
        merged = merge_methods(into, source, methods, args.source.name)
    except (OSError, json.JSONDecodeError, KeyError, ValueError) as error:
        parser.error(str(error))
    save_result(merged, args.into)
    print(f"{args.into}: {', '.join(methods)} from {args.source.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
