"""``spikeforge eval``: test accuracy of a checkpoint (SNN: at several T from one simulation)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from spikeforge.app.common import pick_device
from spikeforge.data import DataConfig, build_data
from spikeforge.engine.checkpoint import load_checkpoint, resolve_checkpoint
from spikeforge.engine.stages import accuracy_over_time
from spikeforge.engine.train import evaluate
from spikeforge.errors import ConfigError
from spikeforge.methods.bntt_exit import exit_time, gamma_profile
from spikeforge.utils import text_table

DATA_HELP = "dataset directory (default: $SPIKEFORGE_DATA, else ~/.cache/spikeforge/data)"


def cmd_eval(args) -> int:
    if args.timesteps and min(args.timesteps) < 1:
        raise ConfigError(f"--timesteps must be positive integers, got {args.timesteps}")
    if args.batches is not None and args.batches < 1:
        raise ConfigError(f"--batches must be a positive integer, got {args.batches}")
    path = resolve_checkpoint(args.checkpoint)
    model, head = load_checkpoint(path)
    device = pick_device(args.device)
    dataset = args.dataset or head.get("dataset")
    if not dataset:
        raise ConfigError(f"{path} does not record its dataset; pass --dataset NAME")
    data = build_data(DataConfig(dataset=dataset, data_dir=args.data_dir, test_batch_size=args.batch_size,
                                 image_size=model.spec.input_size if dataset == "imagefolder" else None),
                      device=device)
    model.to(device)
    result: dict = {"checkpoint": str(path), "dataset": dataset}
    if args.early_exit is not None:
        steps = _early_exit_steps(model, head, args.early_exit)
        result["exit_time"] = steps[0]
        args.timesteps = sorted(set((args.timesteps or []) + steps + [model.timesteps]))
    if model.spiking:
        steps = args.timesteps or [model.timesteps]
        accs = accuracy_over_time(model, data.test, device, steps, args.batches, progress=True)
        model.timesteps = max(steps)
        ev = evaluate(model, data.test, device, max_batches=args.batches)
        result.update({"acc_vs_timesteps": {str(t): a for t, a in accs.items()}, "spike_rate": ev.get("spike_rate")})
        print(text_table(["T", "test acc"], [[t, f"{100 * a:.2f}%"] for t, a in accs.items()]))
    else:
        if args.timesteps:
            raise ConfigError(f"{path} holds an ANN; --timesteps applies to SNN checkpoints")
        ev = evaluate(model, data.test, device, max_batches=args.batches, progress=True)
        result["test_acc"] = ev["acc"]
        print(f"ANN test acc {100 * ev['acc']:.2f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


def _early_exit_steps(model, head: dict, threshold: float) -> list[int]:
    """BNTT early exit: the exit time from the checkpoint's learned gammas (threshold < 0: the stage's own)."""

    if not model.spiking or not model.spec.bntt:
        raise ConfigError("--early-exit applies to BNTT SNN checkpoints (model.bntt: true)")
    if threshold < 0:
        threshold = float(head.get("metrics", {}).get("exit_threshold", 0.1))
    t = exit_time(gamma_profile(model), threshold)
    print(f"early exit: layer-mean gamma stays below {threshold:g} after t={t} (of {model.timesteps})")
    return [t]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="evaluate a checkpoint (file or stage directory) on its test set")
    p.add_argument("checkpoint")
    p.add_argument("--timesteps", type=int, nargs="+", help="SNN: accuracy at these T (one simulation)")
    p.add_argument("--data-dir", help=DATA_HELP)
    p.add_argument("--dataset", help="dataset name if the checkpoint does not record it")
    p.add_argument("--batches", type=int, help="evaluate only this many test batches")
    p.add_argument("--early-exit", type=float, nargs="?", const=-1.0, metavar="THRESHOLD",
                   help="BNTT: also evaluate at the early-exit time chosen from the learned gammas (default "
                        "threshold: the one the training stage used)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(func=cmd_eval)
    return p
