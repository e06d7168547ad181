"""Command line: ``spikeforge run | eval | energy | attack | explain | export | schema | models``.

Each verb lives in its own module under :mod:`spikeforge.app.commands` with an ``add_parser(subparsers)`` function
that registers the verb and its handler (``func``). Every user error (bad recipe, missing data, corrupt checkpoint)
prints one line naming the problem and the fix and exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys

from spikeforge.app.commands import attack, energy, explain, export, models, run, schema
from spikeforge.app.commands import eval as eval_
from spikeforge.errors import SpikeforgeError
from spikeforge.version import __version__

VERBS = (run, eval_, energy, attack, explain, export, schema, models)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spikeforge", description="Train, convert and evaluate spiking neural networks.")
    p.add_argument("--version", action="version", version=f"spikeforge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for verb in VERBS:
        verb.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SpikeforgeError as exc:
        print(f"spikeforge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spikeforge: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
