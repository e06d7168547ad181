"""``spikeforge explain CHECKPOINT --method sam|gradcam ...``: draw SAM / Grad-CAM panels for a few test images.

For each image one PNG shows the image, the SNN map at each timestep overlaid on it, the map summed over time and the
ANN twin's Grad-CAM. With ``--attack fgsm --eps E`` a second row shows the same for the FGSM image (crafted on the
explained model by BPTT) and the **consistency score** -- the Pearson correlation between the clean and the
adversarial summed maps (at image resolution) -- is printed per image with its mean and saved as JSON, for the SNN
map and for the ANN Grad-CAM. An overview PNG puts all images side by side.

The ANN twin is ``--ann CHECKPOINT`` or, by default, the stage of kind ``ann`` listed in the run directory's
``summary.json`` (the parent of the stage directory); ``--no-ann`` leaves it out.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from spikeforge.errors import ConfigError
from spikeforge.analysis.explain.maps import NORMALIZE, SAM, VARIANTS, GradCAM, default_layer, fgsm, pearson, resolve_layer

DATA_HELP = "dataset directory (default: $SPIKEFORGE_DATA, else ~/.cache/spikeforge/data)"


def add_explain_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``spikeforge explain CHECKPOINT ...`` on an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "explain", help="SAM / Grad-CAM heatmaps per timestep for a few test images (PNG panels + JSON)",
        description="Draw visual explanations of a checkpoint on its first test images: SAM (spike activation map, "
                    "forward-only, label-free; SNN only) or Grad-CAM (gradients summed over T by BPTT), per "
                    "timestep and summed over time, beside the ANN twin's Grad-CAM. With --attack fgsm --eps E "
                    "also on the FGSM images, with the clean/adversarial consistency (Pearson r of the summed maps).")
    p.add_argument("checkpoint", help="checkpoint file, stage directory or run directory")
    p.add_argument("--method", choices=("sam", "gradcam"), default="sam", help="explanation method (default sam)")
    p.add_argument("--layer", help="target conv or neuron layer name, e.g. features.4 (a conv stands for the neuron "
                                   "layer after it; default: the middle one)")
    p.add_argument("--images", type=int, default=4, help="number of test images (default 4)")
    p.add_argument("--start", type=int, default=0, help="index of the first test image (default 0)")
    p.add_argument("--attack", choices=("fgsm",), help="also explain adversarial images (needs --eps)")
    p.add_argument("--eps", type=float, help="attack strength on [0, 1] pixels, e.g. 0.1 for MNIST, 8/255 for CIFAR")
    p.add_argument("--ann", help="ANN twin checkpoint for the Grad-CAM column (default: the run's 'ann' stage)")
    p.add_argument("--no-ann", action="store_true", help="leave out the ANN Grad-CAM column")
    p.add_argument("--timesteps", type=int, help="SNN: simulate this many timesteps (default: the checkpoint's)")
    p.add_argument("--encoding", choices=("direct", "poisson"), help="SNN input encoding (default: the checkpoint's)")
    p.add_argument("--poisson-convention", choices=("half", "rate"), default="half",
                   help="with --encoding poisson: spike probability |x|/2 (half, SAM code) or |x| (rate)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the Poisson input draws (the same for clean and adversarial images)")
    p.add_argument("--gamma", type=float, default=0.5, help="SAM decay gamma (default 0.5)")
    p.add_argument("--variant", choices=VARIANTS, default="paper",
                   help="SAM score: paper (strict past spikes, default) or reference (official code)")
    p.add_argument("--normalize", choices=NORMALIZE, default="step",
                   help="per-timestep maps normalized per step (default), per sequence, or not at all")
    p.add_argument("--target", choices=("label", "pred"), default="label",
                   help="Grad-CAM class: the true label (default, as in the SAM paper) or the prediction")
    p.add_argument("--max-panels", type=int, default=10, help="show at most this many timesteps (evenly spaced)")
    p.add_argument("--out", help="output directory (default: explain/ in the checkpoint's stage directory)")
    p.add_argument("--data-dir", help=DATA_HELP)
    p.add_argument("--dataset", help="dataset name if the checkpoint does not record it")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.set_defaults(func=explain_cli)
    return p


def find_ann_twin(checkpoint: str | Path) -> Path | None:
    """The ``model.pt`` of the first stage of kind ``ann`` in the run directory of ``checkpoint``, if any.

    The run directory is the parent of the stage directory; its ``summary.json`` lists the stages with their
    ``kind``. The checkpoint's own stage is skipped.
    """
    from spikeforge.engine.checkpoint import MODEL_FILE, resolve_checkpoint

    path = resolve_checkpoint(checkpoint).resolve()
    run_dir = path.parent.parent
    summary = run_dir / "summary.json"
    try:
        stages = json.loads(summary.read_text()).get("stages", [])
    except (OSError, ValueError, AttributeError):
        return None
    for st in stages if isinstance(stages, list) else []:
        if not isinstance(st, dict) or st.get("kind") != "ann" or not st.get("stage"):
            continue
        cand = (run_dir / str(st["stage"]) / MODEL_FILE).resolve()
        if cand.is_file() and cand != path:
            return cand
    return None


def _check_positive(name: str, value, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value}")


def _fmt(r: float | None) -> str:
    return "  n/a" if r is None else f"{r:+.3f}"


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def explain_cli(args) -> int:
    """``spikeforge explain``: load the checkpoint (and the ANN twin), explain N test images, write PNGs + JSON."""
    from spikeforge.app.common import pick_device
    from spikeforge.data import DataConfig, build_data
    from spikeforge.nn.encoders import PoissonEncoder
    from spikeforge.engine.checkpoint import load_checkpoint, resolve_checkpoint

    _check_positive("--images", args.images)
    _check_positive("--start", args.start, 0)
    _check_positive("--timesteps", args.timesteps)
    _check_positive("--max-panels", args.max_panels)
    if args.attack and args.eps is None:
        raise ConfigError("--attack fgsm needs --eps E (attack strength on [0, 1] pixels, e.g. 0.1 for MNIST)")
    if args.eps is not None and not args.attack:
        raise ConfigError("--eps needs --attack fgsm")
    if args.eps is not None and not 0 <= args.eps <= 1:
        raise ConfigError(f"--eps must lie in [0, 1] (pixels are in [0, 1]), got {args.eps}")
    if args.ann and args.no_ann:
        raise ConfigError("--ann and --no-ann contradict each other; pass one")

    path = resolve_checkpoint(args.checkpoint)
    model, head = load_checkpoint(path)
    device = pick_device(args.device)
    if not model.spiking:
        if args.method == "sam":
            raise ConfigError(f"{path} holds an ANN; SAM needs an SNN checkpoint (use --method gradcam for an ANN)")
        if args.timesteps or args.encoding:
            raise ConfigError(f"{path} holds an ANN; --timesteps and --encoding apply to SNN checkpoints")
    else:
        if args.timesteps:
            model.timesteps = args.timesteps
        enc = args.encoding or model.snn.encoding
        if enc == "poisson" and (model.snn.encoding != "poisson" or args.encoding):
            model.set_encoding("poisson", poisson_convention=args.poisson_convention)
        elif enc == "direct" and model.snn.encoding != "direct":
            model.set_encoding("direct")
    layer = resolve_layer(model, args.layer) if args.layer else default_layer(model)
    model.to(device).eval()

    ann, ann_path = None, None
    if model.spiking and not args.no_ann:
        ann_path = resolve_checkpoint(args.ann) if args.ann else find_ann_twin(path)
        if ann_path is not None:
            ann, _ = load_checkpoint(ann_path)
            if ann.spiking:
                raise ConfigError(f"--ann {ann_path} holds an SNN; pass the ANN twin's checkpoint")
            if ann.spec.arch != model.spec.arch:
                raise ConfigError(f"the ANN {ann_path} is a {ann.spec.arch}, the SNN a {model.spec.arch}; "
                                  "pass the SNN's ANN twin with --ann or use --no-ann")
            resolve_layer(ann, layer)
            ann.to(device).eval()

    dataset = args.dataset or head.get("dataset")
    if not dataset:
        raise ConfigError(f"{path} does not record its dataset; pass --dataset NAME")
    need = args.start + args.images
    data = build_data(DataConfig(dataset=dataset, data_dir=args.data_dir, test_batch_size=need,
                                 image_size=model.spec.input_size if dataset == "imagefolder" else None),
                      device=device)
    x, y = next(iter(data.test))
    if x.shape[0] < need:
        raise ConfigError(f"--start {args.start} + --images {args.images} exceeds the {x.shape[0]} test images")
    x, y = x[args.start:need].to(device).float(), y[args.start:need].to(device)

    poisson = model.spiking and isinstance(model.encoder, PoissonEncoder)

    def reseed():
        if poisson:
            model.encoder.reseed(args.seed)

    if args.method == "sam":
        snn_expl = SAM(model, [layer], gamma=args.gamma, variant=args.variant, normalize=args.normalize)
    else:
        snn_expl = GradCAM(model, [layer], normalize=args.normalize)

    def explain(images):
        reseed()
        if args.method == "sam":
            maps = snn_expl(images)
        else:
            maps = snn_expl(images, targets=y if args.target == "label" else None)
        res = {"maps": maps.cpu(), "summed": snn_expl.summed.cpu(), "pred": snn_expl.outputs.argmax(-1).cpu()}
        if ann is not None:
            gc = GradCAM(ann, [layer])
            gc(images, targets=y if args.target == "label" else None)
            res.update(ann_map=gc.summed.cpu(), ann_pred=gc.outputs.argmax(-1).cpu())
        return res

    clean = explain(x)
    adv, x_adv = None, None
    if args.attack:
        reseed()
        x_adv = fgsm(model, x, y, args.eps)
        adv = explain(x_adv)

    steps = model.timesteps if model.spiking else 1
    key = args.method if model.spiking else "gradcam"
    tag = f"{args.method}_{layer}" + (f"_T{steps}" + ("_poisson" if poisson else "") if model.spiking else "")
    if args.normalize != "step":
        tag += f"_{args.normalize}norm"
    if args.attack:
        tag += f"_{args.attack}{args.eps:g}"
    out = Path(args.out) if args.out else path.parent / "explain"
    out.mkdir(parents=True, exist_ok=True)

    cons = {}
    if adv is not None:
        cons[key] = pearson(clean["summed"], adv["summed"]).tolist()
        if ann is not None:
            cons["ann_gradcam"] = pearson(clean["ann_map"], adv["ann_map"]).tolist()

    from spikeforge.analysis.explain.panels import overview_figure, sample_figure

    files, records = [], []
    labels = y.cpu().tolist()
    shown = _shown_steps(steps, args.max_panels)
    for i in range(x.shape[0]):
        idx = args.start + i
        rec = {"index": idx, "label": labels[i], "snn_pred" if model.spiking else "pred": int(clean["pred"][i])}
        if ann is not None:
            rec["ann_pred"] = int(clean["ann_pred"][i])
        if adv is not None:
            rec["adv_snn_pred" if model.spiking else "adv_pred"] = int(adv["pred"][i])
            if ann is not None:
                rec["adv_ann_pred"] = int(adv["ann_pred"][i])
            rec["consistency"] = {k: _num(v[i]) for k, v in cons.items()}
        name = f"{tag}_img{idx}.png"
        sample_figure(out / name, i, x, x_adv, clean, adv, shown, rec, method=args.method, layer=layer,
                      spiking=model.spiking, title=_title(args, path, model, layer, steps, poisson),
                      raw_scale=args.normalize == "none")
        rec["png"] = name
        files.append(out / name)
        records.append(rec)
    name = f"{tag}_overview.png"
    overview_figure(out / name, x, x_adv, clean, adv, records, method=args.method, spiking=model.spiking,
                    title=_title(args, path, model, layer, steps, poisson))
    files.append(out / name)

    mean_cons = {}
    for k, v in cons.items():
        vals = [r for r in v if math.isfinite(r)]
        mean_cons[k] = sum(vals) / len(vals) if vals else None
    report = {
        "checkpoint": str(path), "ann_checkpoint": None if ann_path is None else str(ann_path), "dataset": dataset,
        "method": args.method, "layer": layer, "timesteps": steps if model.spiking else None,
        "encoding": (model.snn.encoding if model.spiking else None),
        "poisson_convention": model.snn.poisson_convention if poisson else None,
        "gamma": args.gamma if args.method == "sam" else None,
        "variant": args.variant if args.method == "sam" else None, "normalize": args.normalize,
        "gradcam_target": args.target, "seed": args.seed if poisson else None,
        "attack": {"name": args.attack, "eps": args.eps, "crafted_on": "snn" if model.spiking else "ann"}
        if args.attack else None,
        "consistency_metric": "Pearson r of the clean and adversarial summed maps at image resolution"
        if args.attack else None,
        "images": records, "mean_consistency": mean_cons or None,
        "files": [f.name for f in files],
    }
    json_path = out / f"{tag}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")

    what = "SAM" if args.method == "sam" else "Grad-CAM"
    print(f"{what} at {layer} of {path}" + (f" (T={steps}, {model.snn.encoding} input)" if model.spiking else "")
          + (f"; ANN twin {ann_path}" if ann is not None else ""))
    for rec in records:
        line = f"image {rec['index']:>5}  label {rec['label']}"
        line += f"  {'SNN' if model.spiking else 'ANN'} pred {rec.get('snn_pred', rec.get('pred'))}"
        if ann is not None:
            line += f"  ANN pred {rec['ann_pred']}"
        if adv is not None:
            line += f"  | FGSM eps={args.eps}: pred {rec.get('adv_snn_pred', rec.get('adv_pred'))}"
            if ann is not None:
                line += f", ANN {rec['adv_ann_pred']}"
            line += "  consistency " + "  ".join(f"{k} {_fmt(v)}" for k, v in rec["consistency"].items())
        print(line)
    if mean_cons:
        print("mean consistency (Pearson r, clean vs FGSM summed maps): "
              + "  ".join(f"{k} {_fmt(v)}" for k, v in mean_cons.items()))
    for f in files + [json_path]:
        print(f"wrote {f}")
    return 0


def _shown_steps(steps: int, max_panels: int) -> list[int]:
    """At most ``max_panels`` timestep indices, evenly spaced, always including the last one."""
    if steps <= max_panels:
        return list(range(steps))
    picks = {round(steps - 1 - k * (steps - 1) / (max_panels - 1)) for k in range(max_panels)} if max_panels > 1 \
        else {steps - 1}
    return sorted(picks)


def _title(args, path: Path, model, layer: str, steps: int, poisson: bool) -> str:
    what = "SAM" if args.method == "sam" else ("Grad-CAM (BPTT)" if model.spiking else "Grad-CAM")
    where = f"{path.parent.name}/{path.name}"
    if not model.spiking:
        return f"{what} at {layer} - {where}"
    extra = f", gamma={args.gamma}, {args.variant}" if args.method == "sam" else f", class={args.target}"
    return f"{what} at {layer} - {where}, T={steps}, {'Poisson' if poisson else 'direct'} input{extra}"
