"""``spikeforge attack TARGET``: clean, white-box, black-box (``--source``) and Gaussian-noise accuracy of a
checkpoint over an epsilon sweep (:func:`spikeforge.analysis.attacks.robustness`, the protocol of Sharmin et al.,
IJCNN 2019 and ECCV 2020); prints a table, writes JSON and an accuracy-against-epsilon plot."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from spikeforge.analysis.attacks import ATTACKS, GRAD_ESTIMATORS, parse_values, plot_robustness, robustness, \
    robustness_table
from spikeforge.app.common import DEVICE_HELP, Evaluation, add_data_options, check_min, load_for_eval, load_model
from spikeforge.errors import ConfigError
from spikeforge.neuron.surrogate import SURROGATES, get_surrogate
from spikeforge.utils import atomic_write_json


def _check_args(args) -> None:
    for name in ("steps", "eot_iter", "batches", "batch_size", "timesteps"):
        check_min(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.surrogate is not None:
        get_surrogate(args.surrogate)


def _load_source(args, ev: Evaluation):
    """The ``--source`` checkpoint (on the target's device), trained on the target's dataset: ``(path, model)``."""
    if not args.source:
        return None, None
    path, source, head = load_model(args.source)
    if head.get("dataset") and ev.header.get("dataset") and head["dataset"] != ev.header["dataset"]:
        raise ConfigError(f"--source {path} was trained on {head['dataset']} but the target on "
                          f"{ev.header['dataset']}; pass a source trained on the same dataset")
    return path, source.to(ev.device)


def cmd_attack(args) -> int:
    """Load the checkpoint(s), run :func:`~spikeforge.analysis.attacks.robustness`, print, write JSON and PNG."""
    eps = parse_values(args.eps, "--eps")
    noise = parse_values(args.noise, "--noise", high=math.inf) if args.noise is not None else []
    alpha = parse_values(args.alpha, "--alpha")[0] if args.alpha is not None else None
    _check_args(args)
    ev = load_for_eval(args.checkpoint, dataset=args.dataset, data_dir=args.data_dir, batch_size=args.batch_size,
                       device=args.device, timesteps=args.timesteps)
    src_path, source = _load_source(args, ev)
    if args.surrogate and not ev.model.spiking and (source is None or not source.spiking):
        raise ConfigError("--surrogate applies to SNN checkpoints, but no SNN was given")
    t0 = time.perf_counter()
    result = robustness(ev.model, ev.data.test, attack=args.attack, eps=eps, source=source, noise=noise,
                        max_batches=args.batches, alpha=alpha, steps=args.steps, eot_iter=args.eot_iter,
                        random_start=not args.no_random_start, surrogate=args.surrogate,
                        grad_estimator=args.grad_estimator, seed=args.seed, device=ev.device, progress=True)
    result = {"checkpoint": str(ev.path), "source": None if src_path is None else str(src_path),
              "dataset": ev.dataset, **result, "seconds": time.perf_counter() - t0}
    print(f"{args.attack.upper()} on {result['samples']} {ev.dataset} test images, target {ev.path}"
          + (f", source {src_path}" if src_path else ""))
    print(robustness_table(result))
    out = Path(args.out) if args.out else ev.path.parent
    json_path = out / f"attack-{args.attack}.json"
    atomic_write_json(json_path, result)
    png = plot_robustness(result, out / f"attack-{args.attack}.png")
    print(f"wrote {json_path} and {png}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``spikeforge attack TARGET ...`` on an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "attack", help="adversarial (FGSM/PGD/EOT-PGD) and Gaussian-noise robustness of a checkpoint",
        description="Clean and adversarial test accuracy of a checkpoint at each epsilon: white-box (crafted on the "
                    "target) and, with --source, black-box (crafted on the source checkpoint, e.g. an ANN, and "
                    "evaluated on the target); optional Gaussian noise sweep. Prints a table, writes JSON and a plot "
                    "of accuracy against epsilon (Sharmin et al., IJCNN 2019, ECCV 2020).")
    p.add_argument("checkpoint", help="target checkpoint file, stage directory or run directory")
    p.add_argument("--attack", default="pgd", choices=ATTACKS.names(), help="attack (default pgd)")
    p.add_argument("--eps", default="2/255,4/255,8/255",
                   help="comma-separated L-inf budgets in pixel units, fractions or decimals (default "
                        "2/255,4/255,8/255; MNIST papers go up to 0.3)")
    p.add_argument("--source", help="checkpoint to craft black-box (transfer) examples on")
    p.add_argument("--noise", help="comma-separated Gaussian noise sigmas, e.g. 0.05,0.1,0.2")
    p.add_argument("--steps", type=int, default=7, help="PGD steps (default 7)")
    p.add_argument("--alpha", help="PGD step size, e.g. 2/255 (default: eps/4 for every eps)")
    p.add_argument("--eot-iter", type=int, default=4, help="EOT-PGD: gradient samples per step (default 4)")
    p.add_argument("--no-random-start", action="store_true", help="PGD: start from the clean image")
    p.add_argument("--surrogate", help="attack-time surrogate for SNNs: " + ", ".join(sorted(SURROGATES))
                   + " (default: each model's own)")
    p.add_argument("--grad-estimator", default="auto", choices=list(GRAD_ESTIMATORS),
                   help="input gradient: auto (= bptt), bptt (straight-through Poisson encoder), sharmin "
                        "(Sharmin et al.'s first-layer method)")
    p.add_argument("--timesteps", type=int, help="run the target SNN at this T (default: the checkpoint's)")
    p.add_argument("--batches", type=int, help="use only this many test batches (default: the whole test set)")
    p.add_argument("--batch-size", type=int, default=100, help="test batch size (default 100)")
    add_data_options(p)
    p.add_argument("--out", help="output directory (default: the target's checkpoint directory)")
    p.add_argument("--seed", type=int, default=0, help="random seed (random start, Poisson draws, noise)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=cmd_attack)
    return p
