"""Generate an attribute pool (visual attributes per class and per domain) with an OpenAI-compatible LLM.

    python data_scripts/generate_attribute_pool.py (--classes a,b,c | --classes-file FILE | --scenario NAME)
        [--domains x,y] [--describe DOMAIN=TEXT ...] --out pool.json [--model M] [--base-url URL]

- ``--classes``: comma-separated class names; ``--classes-file``: one name per line (blank lines and lines
  starting with ``#`` are skipped); ``--scenario``: every class and domain of a named scenario (builds it
  with the fast profile, so its data must be on disk).
- ``--domains`` adds domains; ``--describe emoji-foo="64x64 emoji in the Foo style"`` tells the LLM what a
  domain name means (the offline scenarios' domains are described already).
- Needs ``OPENAI_API_KEY`` (any non-empty value for a local server that needs no key); ``--base-url`` or
  ``OPENAI_BASE_URL`` for a server other than OpenAI's; ``--model`` or ``UNIIL_ATTRIBUTE_MODEL`` (default
  gpt-4o-mini). Answers are cached under ``$UNIIL_CACHE/attributes``: a rerun asks nothing twice.

Exit status: 0 written, 1 the server gave no valid answer, 2 bad arguments or no API key.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uniil_lib.attributes import (API_KEY_ENV_VAR, AttributeGenerationError, AttributeGenerator,
                                  MissingApiKeyError, generate_pool, scenario_vocabulary)


def split_list(text: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def read_class_file(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def parse_descriptions(items: list[str]) -> dict[str, str]:
    """``["name=text", ...]`` -> ``{"name": "text"}``; :class:`ValueError` for an item without ``=``."""
    descriptions = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise ValueError(f"--describe needs DOMAIN=TEXT, got {item!r}")
        descriptions[name.strip()] = text.strip()
    return descriptions


def wanted_names(args) -> tuple[list[str], list[str]]:
    """The classes and domains the arguments ask for."""
    if args.scenario:
        from uniil_lib.named_scenarios import build_scenario

        classes, domains = scenario_vocabulary(build_scenario(args.scenario, profile="fast"))
    elif args.classes_file:
        classes, domains = read_class_file(args.classes_file), []
    else:
        classes, domains = split_list(args.classes), []
    return classes, list(dict.fromkeys([*domains, *split_list(args.domains)]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--classes", help="comma-separated class names")
    source.add_argument("--classes-file", type=Path, help="file with one class name per line")
    source.add_argument("--scenario", help="a named scenario: all its classes and domains")
    parser.add_argument("--domains", help="comma-separated domain names to add")
    parser.add_argument("--describe", action="append", default=[], metavar="DOMAIN=TEXT",
                        help="what a domain looks like, for the prompt (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="pool JSON file to write")
    parser.add_argument("--model", help="chat model (default $UNIIL_ATTRIBUTE_MODEL or gpt-4o-mini)")
    parser.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1")
    parser.add_argument("--max-attempts", type=int, default=4, help="requests per question at most")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        descriptions = parse_descriptions(args.describe)
        classes, domains = wanted_names(args)
    except (ValueError, KeyError, OSError) as error:
        parser.error(str(error))
    if not classes and not domains:
        parser.error("no class or domain names given")
    try:
        generator = AttributeGenerator(base_url=args.base_url, model=args.model, max_attempts=args.max_attempts)
    except MissingApiKeyError as error:
        print(f"error: {error}. Without a key, uniil_lib uses its shipped pool (uniil_lib/pools/offline.json); "
              f"this script only generates, so set {API_KEY_ENV_VAR} first.", file=sys.stderr)
        return 2
    try:
        pool = generate_pool(generator, classes, domains, domain_descriptions=descriptions, progress=True)
    except AttributeGenerationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    pool.save(args.out)
    print(f"wrote {len(pool.classes)} classes and {len(pool.domains)} domains to {args.out} "
          f"(model {generator.model}; answers cached in {generator.cache_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
