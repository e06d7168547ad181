"""Do snnTorch, sinabs and Norse compute what spikeforge computes? Prediction and per-layer spike agreement on MNIST.

    spikeforge run recipes/mnist-quickstart.yaml --out runs/quickstart
    spikeforge export runs/quickstart/iir-T1 --target snntorch --out exports/q-snntorch.nir
    spikeforge export runs/quickstart/iir-T1 --target sinabs   --out exports/q-sinabs.nir
    python benchmarks/export_agreement.py runs/quickstart/iir-T1 --nir snntorch=exports/q-snntorch.nir \\
        --nir sinabs=exports/q-sinabs.nir --out docs/results/mnist-deploy/agreement-quickstart-T1.json

For every test image (default: the 10 000 MNIST test images, read with spikeforge's data API) the checkpoint's
spikeforge model and each exported network (loaded with the tool's own NIR importer through
``spikeforge.export.load_snntorch/load_sinabs/load_norse``) get the same input (the normalized image, as the graph
expects, at each of the T steps). Reported per tool: predictions that agree with spikeforge's (argmax of the summed
output), accuracy against the labels, the largest |logit difference|, and per neuron layer the number of spike values
that differ out of all spike values. ``--plain-sinabs`` also runs sinabs' importer without spikeforge's neuron settings
(sinabs' defaults: several spikes per step, subtractive reset), to show what they change. Not run in CI (minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

from spikeforge.data import load_tensors
from spikeforge.engine.checkpoint import load_checkpoint
from spikeforge.export import graph_info, load_norse, load_sinabs, load_snntorch, read_nir, run_exported
from spikeforge.neuron import SpikingNeuron

LOADERS = {"snntorch": load_snntorch, "sinabs": load_sinabs, "norse": load_norse}


@torch.no_grad()
def spikeforge_run(model, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and each neuron layer's spikes ``[T, B, ...]`` (keyed by node name, ``_`` for ``.``)."""
    spikes = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=name: spikes.__setitem__(n.replace(".", "_"), o.clone()))
             for name, m in model.named_modules() if isinstance(m, SpikingNeuron)]
    try:
        logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    return logits, spikes


def _empty(layers) -> dict:
    return {"agree": 0, "correct": 0, "n": 0, "max_abs_logit_diff": 0.0,
            "spikes": {k: {"differ": 0, "total": 0, "ones": 0} for k in layers}}


def _update(res: dict, logits, ref_logits, ref_spikes, spikes, labels) -> None:
    res["agree"] += int((logits.argmax(1) == ref_logits.argmax(1)).sum())
    res["correct"] += int((logits.argmax(1) == labels).sum())
    res["n"] += labels.numel()
    res["max_abs_logit_diff"] = max(res["max_abs_logit_diff"], float((logits - ref_logits).abs().max()))
    for k, s in ref_spikes.items():
        theirs = spikes[k].reshape(s.shape)
        res["spikes"][k]["differ"] += int((theirs != s).sum())
        res["spikes"][k]["total"] += s.numel()
        res["spikes"][k]["ones"] += int(s.sum())


def evaluate(args) -> dict:
    model, head = load_checkpoint(args.checkpoint)
    model.eval()
    steps = int(model.timesteps)
    images, labels = load_tensors(head.get("dataset", "mnist"), args.data_dir, train=False)
    images, labels = images[args.start: args.start + args.n].float() / 255.0, labels[args.start: args.start + args.n]
    nets = {}
    for spec in args.nir:
        target, path = spec.split("=", 1)
        graph = read_nir(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nets[target] = LOADERS[target](graph)
            if target == "sinabs" and args.plain_sinabs:
                nets["sinabs-plain"] = load_sinabs(graph, plain=True)
        print(f"{target}: {path} (exported for {graph_info(graph)['target']}, T={steps})", flush=True)
    results, timing = {}, {k: 0.0 for k in nets}
    for i in range(0, images.shape[0], args.batch):
        x, y = images[i: i + args.batch], labels[i: i + args.batch]
        ref_logits, ref_spikes = spikeforge_run(model, x)
        xn = model.normalize(x)
        for name, net in nets.items():
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out, spikes = run_exported(net, name.split("-")[0], xn, steps)
            timing[name] += time.perf_counter() - t0
            res = results.setdefault(name, _empty(ref_spikes))
            _update(res, out.sum(0), ref_logits, ref_spikes, spikes, y)
        print(f"  {min(i + args.batch, images.shape[0])}/{images.shape[0]} images", flush=True)
    for name, res in results.items():
        res["prediction_agreement"] = res["agree"] / res["n"]
        res["accuracy"] = res["correct"] / res["n"]
        res["seconds"] = round(timing[name], 1)
    return {"checkpoint": str(args.checkpoint), "stage": head.get("stage"), "timesteps": steps,
            "images": int(images.shape[0]), "first_image": args.start, "torch": torch.__version__, "results": results}


def merge(paths: list[str]) -> dict:
    """One report from reports of disjoint image ranges (runs split over several processes)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    out = {k: parts[0][k] for k in ("checkpoint", "stage", "timesteps", "torch")}
    out["images"] = sum(p["images"] for p in parts)
    out["ranges"] = [[p.get("first_image", 0), p["images"]] for p in parts]
    out["results"] = {}
    for name in parts[0]["results"]:
        rs = [p["results"][name] for p in parts]
        r = {k: sum(x[k] for x in rs) for k in ("agree", "correct", "n", "seconds")}
        r["max_abs_logit_diff"] = max(x["max_abs_logit_diff"] for x in rs)
        r["spikes"] = {k: {f: sum(x["spikes"][k][f] for x in rs) for f in ("differ", "total", "ones")}
                       for k in rs[0]["spikes"]}
        r["prediction_agreement"], r["accuracy"] = r["agree"] / r["n"], r["correct"] / r["n"]
        out["results"][name] = r
    return out


def _table(report: dict) -> str:
    lines = [f"{report['stage']} (T={report['timesteps']}), {report['images']} test images"]
    for name, r in report["results"].items():
        spikes = ", ".join(f"{k}: {v['differ']}/{v['total']} differ ({v['ones']} spikes)"
                           for k, v in r["spikes"].items())
        lines.append(f"  {name}: predictions agree {100 * r['prediction_agreement']:.2f}% "
                     f"({r['agree']}/{r['n']}), accuracy {100 * r['accuracy']:.2f}%, max |logit diff| "
                     f"{r['max_abs_logit_diff']:.3g}, {r['seconds']} s; {spikes}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="checkpoint, stage directory or run directory")
    p.add_argument("--nir", action="append", default=[], help="TARGET=FILE (snntorch, sinabs, norse); repeatable")
    p.add_argument("--n", type=int, default=10000, help="number of test images (default all 10 000)")
    p.add_argument("--start", type=int, default=0, help="first test image (to split a run over processes)")
    p.add_argument("--merge", nargs="+", help="merge these JSON reports (disjoint image ranges) into --out")
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--plain-sinabs", action="store_true", help="also run sinabs' importer with its default neurons")
    p.add_argument("--out", help="write the report as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    report = merge(args.merge) if args.merge else evaluate(args)
    print(_table(report))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
