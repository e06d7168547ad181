"""``spikeforge eval``: test accuracy of a checkpoint (SNN: at several T from one simulation).

A run directory stands for its last finished stage (:func:`spikeforge.engine.checkpoint.last_finished_stage`)."""

from __future__ import annotations

import argparse

from spikeforge.app.common import (DEVICE_HELP, add_data_options, check_float, check_min, check_output_file,
                                   load_for_eval)
from spikeforge.engine.train import accuracy_over_time, evaluate
from spikeforge.errors import ConfigError
from spikeforge.methods.bntt_exit import exit_time, gamma_profile
from spikeforge.utils import atomic_write_json, text_table


def cmd_eval(args) -> int:
    if args.timesteps:
        check_min("--timesteps", min(args.timesteps))
    check_min("--batches", args.batches)
    check_min("--batch-size", args.batch_size)
    check_float("--early-exit", args.early_exit)
    check_output_file("--json", args.json)
    ev = load_for_eval(args.checkpoint, dataset=args.dataset, data_dir=args.data_dir, batch_size=args.batch_size,
                       device=args.device)
    model, device = ev.model, ev.device
    result: dict = {"checkpoint": str(ev.path), "dataset": ev.dataset}
    steps = list(args.timesteps or [])
    if args.early_exit is not None:
        exit_steps = _early_exit_steps(model, ev.header, args.early_exit)
        result["exit_time"] = exit_steps[0]
        steps = sorted(set(steps + exit_steps + [model.timesteps]))
    if model.spiking:
        steps = steps or [model.timesteps]
        accs = accuracy_over_time(model, ev.data.test, device, steps, args.batches, progress=True)
        model.timesteps = max(steps)
        res = evaluate(model, ev.data.test, device, max_batches=args.batches)
        result.update({"acc_vs_timesteps": {str(t): a for t, a in accs.items()}, "spike_rate": res.get("spike_rate")})
        print(text_table(["T", "test acc"], [[t, f"{100 * a:.2f}%"] for t, a in accs.items()]))
    else:
        if steps:
            raise ConfigError(f"{ev.path} holds an ANN; --timesteps applies to SNN checkpoints")
        res = evaluate(model, ev.data.test, device, max_batches=args.batches, progress=True)
        result["test_acc"] = res["acc"]
        print(f"ANN test acc {100 * res['acc']:.2f}%")
    if args.json:
        atomic_write_json(args.json, result)
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
    p = subparsers.add_parser("eval", help="evaluate a checkpoint (file, stage directory, or run directory: its last "
                                           "finished stage) on its test set")
    p.add_argument("checkpoint", help="checkpoint file, stage directory, or run directory (evaluates the last stage, "
                                      "in recipe order, whose model.pt and metrics.json are both written)")
    p.add_argument("--timesteps", type=int, nargs="+", help="SNN: accuracy at these T (one simulation)")
    add_data_options(p)
    p.add_argument("--batches", type=int, help="evaluate only this many test batches")
    p.add_argument("--early-exit", type=float, nargs="?", const=-1.0, metavar="THRESHOLD",
                   help="BNTT: also evaluate at the early-exit time chosen from the learned gammas (default "
                        "threshold: the one the training stage used)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(func=cmd_eval)
    return p
