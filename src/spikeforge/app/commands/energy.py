"""``spikeforge energy CHECKPOINT``: MACs, spike rates, ACs and energy per inference of a checkpoint's ANN twin and
SNN on its test set (:mod:`spikeforge.analysis.energy`); prints a table and writes ``energy.json``."""

from __future__ import annotations

import argparse
from pathlib import Path

from spikeforge.analysis.energy import PJ, PRESETS, count_ops, energy_from_counts, energy_table, get_costs
from spikeforge.app.common import (DEVICE_HELP, add_data_options, check_float, check_min, check_output_file,
                                   load_for_eval)
from spikeforge.utils import atomic_write_json

JSON_FILE = "energy.json"


def cmd_energy(args) -> int:
    """Load a checkpoint, count on its test set, print the table, write the JSON."""
    check_min("--batches", args.batches)
    check_min("--timesteps", args.timesteps)
    check_min("--batch-size", args.batch_size)
    check_float("--e-mem", args.e_mem, ge=0)
    check_output_file("--json", args.json)
    costs = get_costs(args.preset, None if args.e_mem is None else args.e_mem * PJ)
    ev = load_for_eval(args.checkpoint, dataset=args.dataset, data_dir=args.data_dir, batch_size=args.batch_size,
                       device=args.device, timesteps=args.timesteps)
    model = ev.model
    counts = count_ops(model, ev.data.test, ev.device, max_batches=args.batches)
    report = energy_from_counts(counts, preset=costs, first_layer_per_step=args.first_layer_per_step,
                                membrane=not args.no_membrane)
    report = {"checkpoint": str(ev.path), "dataset": ev.dataset, "stage": ev.header.get("stage"),
              "kind": ev.header.get("kind"), "arch": model.spec.arch, **report}
    kind = f"SNN T={model.timesteps}, {model.snn.encoding} input" if model.spiking else "ANN"
    print(f"energy per inference of {ev.path} ({model.spec.arch}, {kind}) on {counts.samples} {ev.dataset} "
          "test images")
    print(energy_table(report))
    out = Path(args.json) if args.json else ev.path.parent / JSON_FILE
    atomic_write_json(out, report)
    print(f"wrote {out}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``spikeforge energy CHECKPOINT ...`` on an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "energy", help="estimate energy per inference of a checkpoint (ANN MACs vs SNN accumulates)",
        description="Count MACs, spike rates and ACs per layer on the test set and estimate the energy per "
                    "inference of the ANN twin and the SNN (Horowitz 2014 costs). Prints a table and writes JSON.")
    p.add_argument("checkpoint", help="checkpoint file, stage directory or run directory")
    p.add_argument("--timesteps", type=int, help="SNN: count at this T (default: the checkpoint's)")
    p.add_argument("--preset", default="45nm-fp32",
                   help=f"energy per operation: {', '.join(PRESETS)} or custom:MAC_PJ,AC_PJ (default 45nm-fp32)")
    p.add_argument("--batches", type=int, help="use only this many test batches (default: the whole test set)")
    p.add_argument("--batch-size", type=int, default=500, help="test batch size (default 500)")
    add_data_options(p)
    p.add_argument("--json", help="write the report here (default: energy.json beside the checkpoint)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--first-layer-per-step", action="store_true",
                   help="direct input: count the first layer's MACs at every timestep (default: once)")
    p.add_argument("--no-membrane", action="store_true", help="leave out the membrane read/write term")
    p.add_argument("--e-mem", type=float, metavar="PJ",
                   help="energy of one membrane read or write in picojoules (default 10, 8 KB SRAM)")
    p.set_defaults(func=cmd_energy)
    return p
