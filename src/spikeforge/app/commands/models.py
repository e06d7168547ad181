"""``spikeforge models``: list the architectures."""

from __future__ import annotations

import argparse

from spikeforge.models import list_models


def cmd_models(args) -> int:
    print("\n".join(list_models()))
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("models", help="list the architectures")
    p.set_defaults(func=cmd_models)
    return p
