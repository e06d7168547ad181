"""``spikeforge schema``: the JSON Schema of recipe files, so that editors can complete and check recipes.

For example with VS Code's YAML extension: ``spikeforge schema --out recipe.schema.json``, then in a recipe's first
line ``# yaml-language-server: $schema=recipe.schema.json``.
"""

from __future__ import annotations

import argparse
import json
import sys

from spikeforge.engine.recipe import recipe_schema
from spikeforge.utils import atomic_write_text


def cmd_schema(args) -> int:
    text = json.dumps(recipe_schema(), indent=2) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("schema", help="write the JSON Schema of recipe files (for editors)")
    p.add_argument("--out", metavar="FILE", help="write it to FILE (default: print it)")
    p.set_defaults(func=cmd_schema)
    return p
