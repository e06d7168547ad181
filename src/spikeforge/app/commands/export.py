"""``spikeforge export CHECKPOINT --format nir|onnx [--target snntorch|sinabs|norse|generic] --out FILE``, and
``--check-dynapcnn`` (does the network fit SynSense's DYNAP-CNN / Speck chips): register with :func:`add_parser`."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch

from spikeforge.app.common import check_float, check_output_file
from spikeforge.engine.checkpoint import load_checkpoint, resolve_checkpoint
from spikeforge.errors import ConfigError
from spikeforge.export import TARGETS, InexactExportWarning, card_paths, check_dynapcnn, get_target, to_onnx, write_nir

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
    p.add_argument("--target", choices=tuple(TARGETS), default="generic",
                   help="NIR: the tool the graph is written for (its forms for pooling, IF neurons, thresholds and "
                        "readout; refuses what it cannot run exactly). Default generic")
    p.add_argument("--dt", type=float, default=None,
                   help="NIR: time of one step in NIR units (default 1.0: time in steps; --target snntorch: 1e-4, "
                        "the step its importer assumes)")
    p.add_argument("--allow-inexact", action="store_true",
                   help="NIR: write parts the target cannot run exactly (e.g. soft reset at T>1, fire-integrate "
                        "ordering) with a warning instead of refusing")
    p.add_argument("--no-readout", action="store_true",
                   help="NIR: leave out the readout integrator at T>1 (output = last layer's current at each step; "
                        "the default for targets without nir.I; at T=1 the last layer's output is the logits)")
    p.add_argument("--normalize-in-graph", action="store_true",
                   help="NIR, non-generic targets: write the input normalization as a 1x1 Conv2d (rounds differently "
                        "from spikeforge) instead of expecting the normalized image")
    p.add_argument("--check-dynapcnn", action="store_true",
                   help="print whether the SNN fits SynSense's DYNAP-CNN / Speck chips (layer memories, kernel, "
                        "pooling, neuron and input constraints; needs sinabs) and which change makes it fit")
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
        write_nir(model, out, target=args.target, dt=args.dt, allow_inexact=args.allow_inexact,
                  readout=False if args.no_readout else None, card=card, header=head, checkpoint=path,
                  normalize_in_graph=True if args.normalize_in_graph else None)
    for w in caught:
        if issubclass(w.category, InexactExportWarning):
            print(f"warning: {w.message}")
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    target = get_target(args.target)
    print(f"wrote {out} (NIR for {target.label}; load it with {target.loader.replace('path', repr(str(out)))})")


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
    if args.dt is not None:
        check_float("--dt", args.dt, gt=0)
    path = resolve_checkpoint(args.checkpoint)
    model, head = load_checkpoint(path)
    model.eval()
    if args.check_dynapcnn:
        print(check_dynapcnn(model).table())
        if not (args.format or args.out):
            return 0
    fmt = _format(args)
    if fmt == "onnx" and args.target != "generic":
        raise ConfigError(f"--target {args.target} is for NIR files; ONNX files run in any ONNX runtime "
                          "(drop --target)")
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
