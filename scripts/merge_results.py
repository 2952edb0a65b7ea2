"""Replace some methods' entries of one benchmark result file with those of another run of the same setting.

    .venv/bin/python scripts/merge_results.py docs/measurements/seeds/uniil-offline-seed0.json \\
        /tmp/new/uniil-offline-fast-seed0.json --methods mage-noattr,mage

When a method's default changes (e.g. MAGE's activate-freeze), only its rows need running again; this puts the
new rows into the file that holds the others (:func:`uniil_lib.benchmark.merge_method_entries`). Both files must
be the same setting: scenario, profile, model, seed, tasks and held-out split; otherwise nothing is written. Each
merged entry records ``merged_from`` (the other file's name) and the rest of the file is kept as it was. The
entries are moved as they are: their ``options`` (when the run recorded any) travel with them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uniil_lib.benchmark import merge_method_entries, save_result  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("into", type=Path, help="the result file to update")
    parser.add_argument("source", type=Path, help="the result file whose entries replace them")
    parser.add_argument("--methods", required=True, help="comma-separated methods to take from SOURCE")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    try:
        into, source = (json.loads(path.read_text()) for path in (args.into, args.source))
        merged = merge_method_entries(into, source, methods, source_name=args.source.name, mark="merged_from")
    except (OSError, json.JSONDecodeError, KeyError, ValueError) as error:
        parser.error(str(error))
    save_result(merged, args.into)
    print(f"{args.into}: {', '.join(methods)} from {args.source.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
