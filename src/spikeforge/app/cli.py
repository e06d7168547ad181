"""Command line: ``spikeforge run | eval | energy | attack | explain | export | models``.

Each verb lives in its own module under :mod:`spikeforge.app.commands` with an ``add_parser(subparsers)`` function.
Every user error (bad recipe, missing data, corrupt checkpoint) prints one line naming the problem and the fix and
exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys

from spikeforge.analysis.attacks import add_attack_parser
from spikeforge.analysis.energy import add_energy_parser
from spikeforge.app.commands import eval as eval_cmd
from spikeforge.app.commands import explain as explain_cmd
from spikeforge.app.commands import export as export_cmd
from spikeforge.app.commands import models as models_cmd
from spikeforge.app.commands import run as run_cmd
from spikeforge.errors import SpikeforgeError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spikeforge", description="Train, convert and evaluate spiking neural networks.")
    sub = p.add_subparsers(dest="command", required=True)
    run_cmd.add_parser(sub)
    eval_cmd.add_parser(sub)
    add_energy_parser(sub)
    add_attack_parser(sub)
    explain_cmd.add_explain_parser(sub)
    export_cmd.add_export_parser(sub)
    models_cmd.add_parser(sub)
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
