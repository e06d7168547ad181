"""``spikeforge export CHECKPOINT --format nir|onnx --out FILE``: register with :func:`add_parser`."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch

from spikeforge.app.common import check_float, check_output_file
from spikeforge.engine.checkpoint import load_checkpoint, resolve_checkpoint
from spikeforge.errors import ConfigError
from spikeforge.export import InexactExportWarning, card_paths, to_onnx, write_nir

FORMATS = ("nir", "onnx")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``spikeforge export`` on an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "export", help="export a checkpoint to NIR or ONNX, with a model card",
        description="Write a checkpoint's model as a NIR graph (SNNs; spikeforge.export.to_nir) or an ONNX file "
                    "(ANN twins and T=1 SNNs; spikeforge.export.to_onnx), plus FILE.card.json and FILE.card.md "
                    "(architecture, dataset, timesteps, encoding, accuracy, spike rate, energy ratio). "
                    "See docs/export.md.")
    p.add_argument("checkpoint", help="checkpoint file, stage directory or run directory")
    p.add_argument("--format", choices=FORMATS, help="nir or onnx (default: from the suffix of --out)")
    p.add_argument("--out", help="output file (default: model.nir / model.onnx beside the checkpoint)")
    p.add_argument("--dt", type=float, default=1.0,
                   help="NIR: time of one step in NIR units (default 1.0: time in steps; snnTorch's NIR import "
                        "assumes 1e-4 for LIF nodes)")
    p.add_argument("--allow-inexact", action="store_true",
                   help="NIR: write parts NIR cannot express exactly (soft reset at T>1, fire-integrate ordering) "
                        "with a warning instead of refusing")
    p.add_argument("--no-readout", action="store_true",
                   help="NIR: leave out the readout integrator (output = last layer's current at each step)")
    p.add_argument("--expose-spikes", action="store_true", help="ONNX: add each neuron layer's spikes as outputs")
    p.add_argument("--no-check", action="store_true",
                   help="ONNX: do not run the file in onnxruntime against PyTorch on a random batch")
    p.add_argument("--no-card", action="store_true", help="do not write the model card")
    p.set_defaults(func=export_cli)
    return p


def _format(args) -> str:
    if args.format:
        return args.format
    if args.out:
        suffix = Path(args.out).suffix.lower().lstrip(".")
        if suffix in FORMATS:
            return suffix
    raise ConfigError("say which format to write: --format nir or --format onnx (or an --out ending in .nir/.onnx)")


def _write_nir(model, out: Path, args, card: bool, head: dict, path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InexactExportWarning)
        write_nir(model, out, dt=args.dt, allow_inexact=args.allow_inexact, readout=not args.no_readout,
                  card=card, header=head, checkpoint=path)
    for w in caught:
        if issubclass(w.category, InexactExportWarning):
            print(f"warning: {w.message}")
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    print(f"wrote {out} (NIR, dt={args.dt})")


def _write_onnx(model, out: Path, args, card: bool, head: dict, path: Path) -> None:
    spec = model.spec
    gen = torch.Generator().manual_seed(0)
    example = torch.rand(16, spec.in_channels, spec.input_size, spec.input_size, generator=gen)
    to_onnx(model, out, example, expose_spikes=args.expose_spikes, check=not args.no_check, card=card,
            header=head, checkpoint=path)
    print(f"wrote {out} (ONNX opset 17, {'SNN T=1' if model.spiking else 'ANN'})")
    if card and not args.no_check:
        checks = json.loads(card_paths(out)[0].read_text())["export"].get("checks")
        if checks:
            print(f"onnxruntime vs PyTorch on {checks['samples']} random images: max |logit diff| "
                  f"{checks['max_abs_logit_diff']:.3g}, argmax agreement {100 * checks['argmax_agree']:.1f}%")


def export_cli(args) -> int:
    """``spikeforge export``: load the checkpoint, write the file and its card, print what was written."""
    fmt = _format(args)
    check_float("--dt", args.dt, gt=0)
    path = resolve_checkpoint(args.checkpoint)
    model, head = load_checkpoint(path)
    model.eval()
    out = Path(args.out) if args.out else path.parent / f"model.{fmt}"
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a file name, e.g. {out / f'model.{fmt}'}")
    check_output_file("--out", out)
    card = not args.no_card
    writer = _write_nir if fmt == "nir" else _write_onnx
    writer(model, out, args, card, head, path)
    if card:
        for p in card_paths(out):
            print(f"wrote {p}")
    return 0
