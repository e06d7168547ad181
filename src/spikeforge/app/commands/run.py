"""``spikeforge run``: run or resume the stages of a recipe (:func:`spikeforge.engine.stages.run`).

Rerunning the same command resumes: finished stages are reused, an interrupted one resumes from its last epoch. A
run directory whose stages were computed with other settings is refused with the keys that differ;
``--restart STAGE`` redoes that stage and every later one. One run at a time per directory (a lock).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from spikeforge.app.common import pick_device
from spikeforge.engine.distributed import setup as setup_distributed
from spikeforge.engine.recipe import load_recipe
from spikeforge.app.report import write_run_plots
from spikeforge.engine.stages import run
from spikeforge.errors import ConfigError
from spikeforge.utils import text_table

DATA_HELP = "dataset directory (default: $SPIKEFORGE_DATA, else ~/.cache/spikeforge/data)"


def summary_table(summary: dict) -> str:
    rows = []
    for st in summary["stages"]:
        sr = st.get("spike_rate")
        rate = sr.get("mean") if isinstance(sr, dict) else None
        acc, secs = st.get("test_acc"), st.get("seconds")
        rows.append([st.get("stage", "?"), st.get("kind", "?"), "-" if st.get("timesteps") is None else st["timesteps"],
                     f"{100 * acc:.2f}%" if isinstance(acc, (int, float)) else "-",
                     f"{rate:.3f}" if isinstance(rate, (int, float)) else "-", st.get("epochs", "-"),
                     f"{secs:.0f}" if isinstance(secs, (int, float)) else "-"])
    return text_table(["stage", "kind", "T", "test acc", "spikes/neuron", "epochs", "seconds"], rows)


def cmd_run(args) -> int:
    sets = list(args.set or [])
    if args.data_dir:
        sets.append(f"data.data_dir={args.data_dir}")
    recipe = load_recipe(args.recipe, sets)
    dinfo = setup_distributed()
    device = pick_device(args.device or recipe.device)
    if dinfo.enabled and device.type == "cuda":
        device = torch.device("cuda", dinfo.local_rank)
    if not args.out and (recipe.name in ("", ".", "..") or any(c in recipe.name for c in "/\\\0")):
        raise ConfigError(f"the recipe name {recipe.name!r} cannot name the default run directory runs/<name>; "
                          "pass --out DIR")
    out = Path(args.out or Path("runs") / recipe.name)
    if dinfo.is_main:
        extra = f" ({dinfo.world_size} processes)" if dinfo.enabled else ""
        print(f"spikeforge run {recipe.name} -> {out} on {device}{extra}")
    written: list[Path] = []

    def report(out_dir: Path, summary: dict) -> None:  # inside the run directory's lock
        written.extend(write_run_plots(out_dir, summary))

    summary = run(recipe, out, device=device, progress=not args.quiet, restart=args.restart,
                  on_run_end=report)
    if not dinfo.is_main:
        return 0
    print()
    print(summary_table(summary))
    for path in written:
        print(f"wrote {path}")
    print(f"summary: {out / 'summary.json'}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("run", help="run (or resume) the stages of a recipe")
    p.add_argument("recipe", help="recipe YAML file, e.g. recipes/mnist-quickstart.yaml")
    p.add_argument("--out", help="run directory (default runs/<recipe name>); rerunning resumes")
    p.add_argument("--data-dir", help=DATA_HELP)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set stages.ann.epochs=1 (repeatable)")
    p.add_argument("--device", help="auto, cpu or cuda[:N] (default: the recipe's)")
    p.add_argument("--restart", metavar="STAGE",
                   help="redo this stage and every later one (their earlier results in --out are discarded), e.g. "
                        "after changing their settings")
    p.add_argument("--quiet", action="store_true",
                   help="no progress output (bars are drawn only on a terminal, SPIKEFORGE_PROGRESS=1 forces them; "
                        "a log file gets the stage and epoch lines)")
    p.set_defaults(func=cmd_run)
    return p
