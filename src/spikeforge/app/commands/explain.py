"""``spikeforge explain CHECKPOINT --method sam|gradcam ...``: draw SAM (Kim & Panda, Sci. Rep. 2021) / Grad-CAM
(Selvaraju et al., ICCV 2017) panels for a few test images.

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

import torch

from spikeforge.analysis.common import finite_or_none
from spikeforge.analysis.explain.maps import NORMALIZE, SAM, VARIANTS, GradCAM, default_layer, fgsm, pearson, \
    resolve_layer
from spikeforge.analysis.explain.panels import overview_figure, sample_figure
from spikeforge.app.common import DEVICE_HELP, add_data_options, check_float, check_min, load_model, load_test_data
from spikeforge.engine.checkpoint import MODEL_FILE, resolve_checkpoint
from spikeforge.errors import ConfigError
from spikeforge.nn.encoders import PoissonEncoder
from spikeforge.utils import atomic_write_json


def add_parser(subparsers) -> argparse.ArgumentParser:
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
    add_data_options(p)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=cmd_explain)
    return p


def find_ann_twin(checkpoint: str | Path) -> Path | None:
    """The ``model.pt`` of the first stage of kind ``ann`` in the run directory of ``checkpoint``, if any.

    The run directory is the parent of the stage directory; its ``summary.json`` lists the stages with their
    ``kind``. The checkpoint's own stage is skipped.
    """
    path = resolve_checkpoint(checkpoint).resolve()
    run_dir = path.parent.parent
    try:
        stages = json.loads((run_dir / "summary.json").read_text()).get("stages", [])
    except (OSError, ValueError, AttributeError):
        return None
    for st in stages if isinstance(stages, list) else []:
        if not isinstance(st, dict) or st.get("kind") != "ann" or not st.get("stage"):
            continue
        cand = (run_dir / str(st["stage"]) / MODEL_FILE).resolve()
        if cand.is_file() and cand != path:
            return cand
    return None


# ---------------------------------------------------------------------------------------------------------------
# loading


def _check_args(args) -> None:
    check_min("--images", args.images)
    check_min("--start", args.start, 0)
    check_min("--timesteps", args.timesteps)
    check_min("--max-panels", args.max_panels)
    check_float("--gamma", args.gamma, gt=0)
    if args.attack and args.eps is None:
        raise ConfigError("--attack fgsm needs --eps E (attack strength on [0, 1] pixels, e.g. 0.1 for MNIST)")
    if args.eps is not None and not args.attack:
        raise ConfigError("--eps needs --attack fgsm")
    if args.eps is not None and not 0 <= args.eps <= 1:
        raise ConfigError(f"--eps must lie in [0, 1] (pixels are in [0, 1]), got {args.eps}")
    if args.ann and args.no_ann:
        raise ConfigError("--ann and --no-ann contradict each other; pass one")


def _configure(args, path: Path, model) -> None:
    """Check the method against the model; an SNN gets ``--timesteps`` and ``--encoding``."""
    if not model.spiking:
        if args.method == "sam":
            raise ConfigError(f"{path} holds an ANN; SAM needs an SNN checkpoint (use --method gradcam for an ANN)")
        if args.timesteps or args.encoding:
            raise ConfigError(f"{path} holds an ANN; --timesteps and --encoding apply to SNN checkpoints")
        return
    if args.timesteps:
        model.timesteps = args.timesteps
    enc = args.encoding or model.snn.encoding
    if enc == "poisson" and (model.snn.encoding != "poisson" or args.encoding):
        model.set_encoding("poisson", poisson_convention=args.poisson_convention)
    elif enc == "direct" and model.snn.encoding != "direct":
        model.set_encoding("direct")


def _load_twin(args, path: Path, model, layer: str):
    """The ANN twin for the Grad-CAM column, checked against the SNN: ``(model, path)`` or ``(None, None)``."""
    if not model.spiking or args.no_ann:
        return None, None
    ann_path = resolve_checkpoint(args.ann) if args.ann else find_ann_twin(path)
    if ann_path is None:
        return None, None
    _, ann, _ = load_model(ann_path)
    if ann.spiking:
        raise ConfigError(f"--ann {ann_path} holds an SNN; pass the ANN twin's checkpoint")
    if ann.spec.arch != model.spec.arch:
        raise ConfigError(f"the ANN {ann_path} is a {ann.spec.arch}, the SNN a {model.spec.arch}; "
                          "pass the SNN's ANN twin with --ann or use --no-ann")
    resolve_layer(ann, layer)
    return ann, ann_path


def _test_images(args, path: Path, model, head: dict) -> tuple[str, torch.Tensor, torch.Tensor, torch.device]:
    """Test images ``start .. start + images - 1`` and their labels, on the device: ``(dataset, x, y, device)``."""
    need = args.start + args.images
    dataset, data, device = load_test_data(path, model, head, dataset=args.dataset, data_dir=args.data_dir,
                                           batch_size=need, device=args.device)
    x, y = next(iter(data.test))
    if x.shape[0] < need:
        raise ConfigError(f"--start {args.start} + --images {args.images} exceeds the {x.shape[0]} test images")
    return dataset, x[args.start:need].to(device).float(), y[args.start:need].to(device), device


# ---------------------------------------------------------------------------------------------------------------
# explaining


class _Explainer:
    """The SNN (or ANN) map and the ANN twin's Grad-CAM of a batch of images, with the same Poisson draws each time."""

    def __init__(self, args, model, layer: str, ann, labels: torch.Tensor):
        self.args, self.model, self.layer, self.ann = args, model, layer, ann
        self.targets = labels if args.target == "label" else None
        self.poisson = model.spiking and isinstance(model.encoder, PoissonEncoder)
        if args.method == "sam":
            self.snn = SAM(model, [layer], gamma=args.gamma, variant=args.variant, normalize=args.normalize)
        else:
            self.snn = GradCAM(model, [layer], normalize=args.normalize)

    def reseed(self) -> None:
        if self.poisson:
            self.model.encoder.reseed(self.args.seed)

    def __call__(self, images: torch.Tensor) -> dict:
        self.reseed()
        maps = self.snn(images) if self.args.method == "sam" else self.snn(images, targets=self.targets)
        res = {"maps": maps.cpu(), "summed": self.snn.summed.cpu(), "pred": self.snn.outputs.argmax(-1).cpu()}
        if self.ann is not None:
            gc = GradCAM(self.ann, [self.layer])
            gc(images, targets=self.targets)
            res.update(ann_map=gc.summed.cpu(), ann_pred=gc.outputs.argmax(-1).cpu())
        return res

    def attacked(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """FGSM images crafted on the explained model (same Poisson draws as the clean run)."""
        self.reseed()
        return fgsm(self.model, images, labels, self.args.eps)


def _consistency(clean: dict, adv: dict | None, key: str, has_ann: bool) -> dict[str, list[float]]:
    """Pearson r per image of the clean and adversarial summed maps, for the SNN map (``key``) and the ANN twin."""
    if adv is None:
        return {}
    cons = {key: pearson(clean["summed"], adv["summed"]).tolist()}
    if has_ann:
        cons["ann_gradcam"] = pearson(clean["ann_map"], adv["ann_map"]).tolist()
    return cons


def _mean_consistency(cons: dict[str, list[float]]) -> dict[str, float | None]:
    mean = {}
    for k, v in cons.items():
        vals = [r for r in v if math.isfinite(r)]
        mean[k] = sum(vals) / len(vals) if vals else None
    return mean


def _tag(args, layer: str, steps: int, spiking: bool, poisson: bool) -> str:
    """The stem of the output files, e.g. ``sam_features.4_T3_fgsm0.1``."""
    tag = f"{args.method}_{layer}" + (f"_T{steps}" + ("_poisson" if poisson else "") if spiking else "")
    if args.normalize != "step":
        tag += f"_{args.normalize}norm"
    if args.attack:
        tag += f"_{args.attack}{args.eps:g}"
    return tag


def _record(i: int, idx: int, label: int, clean: dict, adv: dict | None, cons: dict, spiking: bool,
            has_ann: bool) -> dict:
    """The JSON record of one image: label, predictions (clean and adversarial) and its consistency scores."""
    rec = {"index": idx, "label": label, "snn_pred" if spiking else "pred": int(clean["pred"][i])}
    if has_ann:
        rec["ann_pred"] = int(clean["ann_pred"][i])
    if adv is not None:
        rec["adv_snn_pred" if spiking else "adv_pred"] = int(adv["pred"][i])
        if has_ann:
            rec["adv_ann_pred"] = int(adv["ann_pred"][i])
        rec["consistency"] = {k: finite_or_none(v[i]) for k, v in cons.items()}
    return rec


# ---------------------------------------------------------------------------------------------------------------
# the command


def cmd_explain(args) -> int:
    """Load the checkpoint (and the ANN twin), explain N test images, write PNGs + JSON, print a summary."""
    _check_args(args)
    path, model, head = load_model(args.checkpoint)
    _configure(args, path, model)
    layer = resolve_layer(model, args.layer) if args.layer else default_layer(model)
    ann, ann_path = _load_twin(args, path, model, layer)
    dataset, x, y, device = _test_images(args, path, model, head)
    model.to(device).eval()
    if ann is not None:
        ann.to(device).eval()
    explainer = _Explainer(args, model, layer, ann, y)
    clean = explainer(x)
    x_adv = explainer.attacked(x, y) if args.attack else None
    adv = explainer(x_adv) if x_adv is not None else None
    run = _Run(args, path, model, layer, ann_path, explainer.poisson, dataset)
    records, files = run.draw(x, x_adv, y, clean, adv)
    json_path = run.out / f"{run.tag}.json"
    atomic_write_json(json_path, run.report(records, files, _mean_consistency(run.cons)))
    run.print_summary(records, files + [json_path])
    return 0


class _Run:
    """The outputs of one ``spikeforge explain`` call: PNG panels, the JSON report and the printed summary."""

    def __init__(self, args, path: Path, model, layer: str, ann_path: Path | None, poisson: bool, dataset: str):
        self.args, self.path, self.model, self.layer = args, path, model, layer
        self.ann_path, self.poisson, self.dataset = ann_path, poisson, dataset
        self.spiking = model.spiking
        self.steps = model.timesteps if model.spiking else 1
        self.key = args.method if model.spiking else "gradcam"
        self.tag = _tag(args, layer, self.steps, self.spiking, poisson)
        self.out = Path(args.out) if args.out else path.parent / "explain"
        self.out.mkdir(parents=True, exist_ok=True)
        self.cons: dict[str, list[float]] = {}

    def title(self) -> str:
        args = self.args
        what = "SAM" if args.method == "sam" else ("Grad-CAM (BPTT)" if self.spiking else "Grad-CAM")
        where = f"{self.path.parent.name}/{self.path.name}"
        if not self.spiking:
            return f"{what} at {self.layer} - {where}"
        extra = f", gamma={args.gamma}, {args.variant}" if args.method == "sam" else f", class={args.target}"
        return (f"{what} at {self.layer} - {where}, T={self.steps}, {'Poisson' if self.poisson else 'direct'} "
                f"input{extra}")

    def draw(self, x, x_adv, y, clean: dict, adv: dict | None) -> tuple[list[dict], list[Path]]:
        """One PNG per image and the overview; returns the image records and the files written."""
        args, has_ann = self.args, "ann_map" in clean
        self.cons = _consistency(clean, adv, self.key, has_ann)
        shown = _shown_steps(self.steps, args.max_panels)
        files, records = [], []
        for i, label in enumerate(y.cpu().tolist()):
            rec = _record(i, args.start + i, label, clean, adv, self.cons, self.spiking, has_ann)
            name = f"{self.tag}_img{rec['index']}.png"
            sample_figure(self.out / name, i, x, x_adv, clean, adv, shown, rec, method=args.method,
                          layer=self.layer, spiking=self.spiking, title=self.title(),
                          raw_scale=args.normalize == "none")
            rec["png"] = name
            files.append(self.out / name)
            records.append(rec)
        name = f"{self.tag}_overview.png"
        overview_figure(self.out / name, x, x_adv, clean, adv, records, method=args.method, spiking=self.spiking,
                        title=self.title())
        return records, files + [self.out / name]

    def report(self, records: list[dict], files: list[Path], mean_cons: dict) -> dict:
        args, snn, sam = self.args, self.spiking, self.args.method == "sam"
        return {
            "checkpoint": str(self.path), "ann_checkpoint": None if self.ann_path is None else str(self.ann_path),
            "dataset": self.dataset, "method": args.method, "layer": self.layer,
            "timesteps": self.steps if snn else None, "encoding": self.model.snn.encoding if snn else None,
            "poisson_convention": self.model.snn.poisson_convention if self.poisson else None,
            "gamma": args.gamma if sam else None, "variant": args.variant if sam else None,
            "normalize": args.normalize, "gradcam_target": args.target, "seed": args.seed if self.poisson else None,
            "attack": {"name": args.attack, "eps": args.eps, "crafted_on": "snn" if snn else "ann"}
            if args.attack else None,
            "consistency_metric": "Pearson r of the clean and adversarial summed maps at image resolution"
            if args.attack else None,
            "images": records, "mean_consistency": mean_cons or None, "files": [f.name for f in files],
        }

    def print_summary(self, records: list[dict], files: list[Path]) -> None:
        args, has_ann = self.args, self.ann_path is not None
        what = "SAM" if args.method == "sam" else "Grad-CAM"
        print(f"{what} at {self.layer} of {self.path}"
              + (f" (T={self.steps}, {self.model.snn.encoding} input)" if self.spiking else "")
              + (f"; ANN twin {self.ann_path}" if has_ann else ""))
        for rec in records:
            line = f"image {rec['index']:>5}  label {rec['label']}"
            line += f"  {'SNN' if self.spiking else 'ANN'} pred {rec.get('snn_pred', rec.get('pred'))}"
            if has_ann:
                line += f"  ANN pred {rec['ann_pred']}"
            if "consistency" in rec:
                line += f"  | FGSM eps={args.eps}: pred {rec.get('adv_snn_pred', rec.get('adv_pred'))}"
                if has_ann:
                    line += f", ANN {rec['adv_ann_pred']}"
                line += "  consistency " + "  ".join(f"{k} {_fmt(v)}" for k, v in rec["consistency"].items())
            print(line)
        mean_cons = _mean_consistency(self.cons)
        if mean_cons:
            print("mean consistency (Pearson r, clean vs FGSM summed maps): "
                  + "  ".join(f"{k} {_fmt(v)}" for k, v in mean_cons.items()))
        for f in files:
            print(f"wrote {f}")


def _fmt(r: float | None) -> str:
    return "  n/a" if r is None else f"{r:+.3f}"


def _shown_steps(steps: int, max_panels: int) -> list[int]:
    """At most ``max_panels`` timestep indices, evenly spaced, always including the last one."""
    if steps <= max_panels:
        return list(range(steps))
    picks = {round(steps - 1 - k * (steps - 1) / (max_panels - 1)) for k in range(max_panels)} if max_panels > 1 \
        else {steps - 1}
    return sorted(picks)
