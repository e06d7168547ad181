"""Command line: ``spikeforge run | eval | energy | attack | explain | export | models``.

Every user error (bad recipe, missing data, corrupt checkpoint) prints one line naming the problem and the fix and
exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from spikeforge.errors import ConfigError, SpikeforgeError


def pick_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available; use --device cpu")
    return torch.device(name)


def _table(rows: list[list[str]], head: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def summary_table(summary: dict) -> str:
    rows = []
    for st in summary["stages"]:
        rate = (st.get("spike_rate") or {}).get("mean")
        rows.append([st["stage"], st["kind"], "-" if st.get("timesteps") is None else st["timesteps"],
                     f"{100 * st['test_acc']:.2f}%", "-" if rate is None else f"{rate:.3f}",
                     st.get("epochs", "-"), f"{st.get('seconds', 0):.0f}"])
    return _table(rows, ["stage", "kind", "T", "test acc", "spikes/neuron", "epochs", "seconds"])


def cmd_run(args) -> int:
    from spikeforge.engine.distributed import setup as setup_distributed
    from spikeforge.engine.stages import run
    from spikeforge.engine.recipe import load_recipe

    sets = list(args.set or [])
    if args.data_dir:
        sets.append(f"data.data_dir={args.data_dir}")
    recipe = load_recipe(args.recipe, sets)
    dinfo = setup_distributed()
    device = pick_device(args.device or recipe.device)
    if dinfo.enabled and device.type == "cuda":
        device = torch.device("cuda", dinfo.local_rank)
    out = Path(args.out or Path("runs") / recipe.name)
    if dinfo.is_main:
        extra = f" ({dinfo.world_size} processes)" if dinfo.enabled else ""
        print(f"spikeforge run {recipe.name} -> {out} on {device}{extra}")
    summary = run(recipe, out, device=device, progress=not args.quiet)
    if not dinfo.is_main:
        return 0
    print()
    print(summary_table(summary))
    try:
        from spikeforge.app.report import write_run_plots

        for path in write_run_plots(out, summary):
            print(f"wrote {path}")
    except ImportError:
        pass
    print(f"summary: {out / 'summary.json'}")
    return 0


def cmd_eval(args) -> int:
    from spikeforge.data import DataConfig, build_data
    from spikeforge.engine.checkpoint import load_checkpoint, resolve_checkpoint
    from spikeforge.engine.stages import accuracy_over_time
    from spikeforge.engine.train import evaluate

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
        print(_table([[t, f"{100 * a:.2f}%"] for t, a in accs.items()], ["T", "test acc"]))
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
    from spikeforge.methods.bntt_exit import exit_time, gamma_profile

    if not model.spiking or not model.spec.bntt:
        raise ConfigError("--early-exit applies to BNTT SNN checkpoints (model.bntt: true)")
    if threshold < 0:
        threshold = float(head.get("metrics", {}).get("exit_threshold", 0.1))
    t = exit_time(gamma_profile(model), threshold)
    print(f"early exit: layer-mean gamma stays below {threshold:g} after t={t} (of {model.timesteps})")
    return [t]


def cmd_models(args) -> int:
    from spikeforge.models import list_models

    print("\n".join(list_models()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spikeforge", description="Train, convert and evaluate spiking neural networks.")
    sub = p.add_subparsers(dest="command", required=True)
    data_help = "dataset directory (default: $SPIKEFORGE_DATA, else ~/.cache/spikeforge/data)"

    r = sub.add_parser("run", help="run (or resume) the stages of a recipe")
    r.add_argument("recipe", help="recipe YAML file, e.g. recipes/mnist-quickstart.yaml")
    r.add_argument("--out", help="run directory (default runs/<recipe name>); rerunning resumes")
    r.add_argument("--data-dir", help=data_help)
    r.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set stages.ann.epochs=1 (repeatable)")
    r.add_argument("--device", help="auto, cpu or cuda[:N] (default: the recipe's)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=cmd_run)

    e = sub.add_parser("eval", help="evaluate a checkpoint (file or stage directory) on its test set")
    e.add_argument("checkpoint")
    e.add_argument("--timesteps", type=int, nargs="+", help="SNN: accuracy at these T (one simulation)")
    e.add_argument("--data-dir", help=data_help)
    e.add_argument("--dataset", help="dataset name if the checkpoint does not record it")
    e.add_argument("--batches", type=int, help="evaluate only this many test batches")
    e.add_argument("--early-exit", type=float, nargs="?", const=-1.0, metavar="THRESHOLD",
                   help="BNTT: also evaluate at the early-exit time chosen from the learned gammas (default "
                        "threshold: the one the training stage used)")
    e.add_argument("--batch-size", type=int, default=500)
    e.add_argument("--device", default="auto")
    e.add_argument("--json", help="also write the result to this JSON file")
    e.set_defaults(func=cmd_eval)

    from spikeforge.analysis.energy import add_energy_parser

    add_energy_parser(sub)
    from spikeforge.analysis.attacks import add_attack_parser

    add_attack_parser(sub)
    from spikeforge.app.explain_cmd import add_explain_parser

    add_explain_parser(sub)
    from spikeforge.app.export_cmd import add_export_parser

    add_export_parser(sub)

    m = sub.add_parser("models", help="list the architectures")
    m.set_defaults(func=cmd_models)
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
