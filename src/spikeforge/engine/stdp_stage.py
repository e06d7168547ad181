"""The ``stdp`` stage: unsupervised Diehl & Cook training (optionally with pruning + quantization), neuron labeling on
training images, test accuracy, crossbar cost, plots; resumable from ``last.pt`` (written every
``checkpoint_every`` images).

Recipe keys (see :class:`StdpStage`)::

    - {name: stdp, kind: stdp, n_neurons: 400, passes: 1, batch_size: 16,
       net: {model: conductance, rule: trace, t_present: 250, dt: 1.0},
       prune_fraction: 0.5, prune_every: 5000, levels: 16}
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from spikeforge.engine.checkpoint import (FORMAT, MODEL_FILE, RESUME_FILE, VERSION, atomic_write_bytes, atomic_write_json,
                                 load_raw)
from spikeforge.engine.stages import METRICS_FILE, Context, register_runner
from spikeforge.errors import CheckpointError, ConfigError
from spikeforge.models import register_model
from spikeforge.engine.recipe import StageConfig, register_stage_kind
from spikeforge.methods.stdp.hardware import CrossbarModel, compare, crossbar_cost
from spikeforge.methods.stdp.learn import assign_labels, predict, respond, train_batch
from spikeforge.methods.stdp.network import DiehlCook, NetConfig
from spikeforge.methods.stdp.prune import prune_lowest, pruned_fraction, quantize


@dataclass
class StdpStage(StageConfig):
    """Unsupervised STDP training of a Diehl & Cook network (methods.md §6).

    ``n_neurons``: excitatory neurons. ``passes``: passes over the training images (``train_images`` of them per
    pass, None: all); ``max_train_minutes``: stop training early (after the batch that reaches it; the result then
    depends on the machine's speed) when this much time has been spent training.
    ``batch_size``: images simulated in parallel while learning (their STDP updates are
    summed: a deviation, docs/stdp.md); ``eval_batch_size``: images per batch with learning off.
    ``label_images``: training images used to label the neurons (None: all; the first of a fixed seeded
    permutation); ``test_images``: test images evaluated (None: all). ``net``: :class:`NetConfig` overrides.
    Pruning: every ``prune_every`` images from ``prune_start`` on, each neuron's lowest weights are pruned so that the
    pruned fraction rises linearly to ``prune_fraction``, reached at ``prune_end`` (a fraction of all training
    images); ``levels``: quantize the surviving weights to this many levels (range ``quant_range``: wmax or neuron;
    ``quant_rounding``: ``nearest``, or ``sum`` = largest-remainder rounding that keeps each neuron's total weight,
    see :func:`~spikeforge.methods.stdp.prune.quantize`) at the same times and at the end. ``sweep_prune`` / ``sweep_levels``: after training, also evaluate the final
    network pruned/quantized further (post-hoc, relabeled on the labeling images). ``preprocess``: image preparation
    (``grayscale``, ``size``, ``dog``: [sigma1, sigma2] difference-of-Gaussians edge filter, ``invert``) for
    non-MNIST data. ``hardware``: :class:`~spikeforge.methods.stdp.hardware.CrossbarModel` overrides. ``compare``: an
    earlier ``stdp`` stage whose accuracy and crossbar cost this one is compared with.
    """

    n_neurons: int = 100
    passes: int = 1
    train_images: int | None = None
    max_train_minutes: float | None = None
    batch_size: int = 16
    eval_batch_size: int = 256
    label_images: int | None = None
    test_images: int | None = None
    checkpoint_every: int = 5000
    net: dict = field(default_factory=dict)
    prune_fraction: float = 0.0
    prune_every: int = 5000
    prune_start: int = 0
    prune_end: float = 0.5
    levels: int | None = None
    quant_range: str = "wmax"
    quant_rounding: str = "nearest"
    sweep_prune: list = field(default_factory=list)
    sweep_levels: list = field(default_factory=list)
    preprocess: dict = field(default_factory=dict)
    hardware: dict = field(default_factory=dict)
    plots: bool = True
    compare: str | None = None

    def __post_init__(self):
        where = f"stages.{self.name}"
        for k in ("n_neurons", "passes", "batch_size", "eval_batch_size", "checkpoint_every", "prune_every"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{where}.{k} must be a positive integer, got {v!r}")
        for k in ("train_images", "label_images", "test_images", "levels"):
            v = getattr(self, k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ConfigError(f"{where}.{k} must be a positive integer or null, got {v!r}")
        if self.levels is not None and self.levels < 2:
            raise ConfigError(f"{where}.levels must be at least 2, got {self.levels!r}")
        if not isinstance(self.prune_fraction, (int, float)) or not 0 <= self.prune_fraction < 1:
            raise ConfigError(f"{where}.prune_fraction must be in [0, 1), got {self.prune_fraction!r}")
        if self.quant_range not in ("wmax", "neuron"):
            raise ConfigError(f"{where}.quant_range must be 'wmax' or 'neuron', got {self.quant_range!r}")
        if self.quant_rounding not in ("nearest", "sum"):
            raise ConfigError(f"{where}.quant_rounding must be 'nearest' or 'sum', got {self.quant_rounding!r}")
        unknown = sorted(set(self.preprocess) - {"grayscale", "size", "dog", "invert"})
        if unknown:
            raise ConfigError(f"{where}.preprocess: unknown key(s) {unknown}; allowed: dog, grayscale, invert, size")
        NetConfig.from_dict({**self.net, "n_neurons": self.n_neurons}, where=f"{where}.net")
        CrossbarModel.from_dict(self.hardware, where=f"{where}.hardware")
        for f in self.sweep_prune:
            if not isinstance(f, (int, float)) or not 0 <= f < 1:
                raise ConfigError(f"{where}.sweep_prune values must be in [0, 1), got {f!r}")
        for q in self.sweep_levels:
            if q is not None and (not isinstance(q, int) or q < 2):
                raise ConfigError(f"{where}.sweep_levels values must be integers >= 2 or null, got {q!r}")


register_stage_kind("stdp", StdpStage)


def _placeholder_model(spec, snn=None):
    raise ConfigError("model.arch 'diehl-cook' is built by the 'stdp' stage only (it has no ANN/SNN twin)")


register_model("diehl-cook", _placeholder_model)  # recipes need a model section; this names the network there


# ---------------------------------------------------------------------------------------------------------- data
def preprocess(x: torch.Tensor, cfg: dict) -> torch.Tensor:
    """Images ``[B, C, H, W]`` in [0, 1] -> ``[B, D]`` input intensities in [0, 1].

    ``grayscale`` (default True for 3-channel images): luminance; ``size``: bilinear resize; ``dog``:
    ``[s1, s2]`` difference of Gaussians (on-center minus surround), rectified and scaled so each image's
    maximum is 1 (the usual edge preprocessing for Diehl & Cook style networks on natural images); ``invert``.
    """
    x = x.float()
    if cfg.get("grayscale", x.shape[1] == 3) and x.shape[1] == 3:
        x = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    size = cfg.get("size")
    if size and (x.shape[-1] != size or x.shape[-2] != size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    dog = cfg.get("dog")
    if dog:
        x = _gauss(x, float(dog[0])) - _gauss(x, float(dog[1]))
        x = x.clamp_min(0)
        x = x / x.flatten(1).amax(1).clamp_min(1e-6).view(-1, 1, 1, 1)
    if cfg.get("invert"):
        x = 1.0 - x
    return x.clamp(0, 1).reshape(x.shape[0], -1)


def _gauss(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _all_images(loader, pre: dict) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int]]:
    """Every image of a loader, preprocessed, in a fixed order: ``(x [M, D] float, y [M], (C, H, W))``."""
    if hasattr(loader, "images") and hasattr(loader, "labels"):  # TensorLoader: the whole split in memory
        imgs, labels = loader.images, loader.labels
        xs = [preprocess(imgs[i:i + 4096].float().div_(255.0), pre) for i in range(0, imgs.shape[0], 4096)]
        shape = _shape(imgs[:1].float(), pre)
        return torch.cat(xs), labels.clone(), shape
    xs, ys, shape = [], [], None
    for x, y in loader:
        shape = shape or _shape(x[:1], pre)
        xs.append(preprocess(x, pre))
        ys.append(y)
    return torch.cat(xs), torch.cat(ys), shape


def _shape(x1: torch.Tensor, pre: dict) -> tuple[int, int, int]:
    x = x1.float()
    c = 1 if (pre.get("grayscale", x.shape[1] == 3) and x.shape[1] == 3) else x.shape[1]
    size = pre.get("size")
    h, w = (size, size) if size else tuple(x.shape[-2:])
    return (c, h, w)


# ---------------------------------------------------------------------------------------------------------- state
def _save(path: Path, net: DiehlCook, header: dict, extra: dict | None = None) -> None:
    head = json.loads(json.dumps(header, default=str))
    payload = {"format": FORMAT, "version": VERSION, "header": head,
               "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}
    if extra is not None:
        payload["train_state"] = extra
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def load_stdp(path: str | Path) -> tuple[DiehlCook, dict]:
    """Load an ``stdp`` stage's ``model.pt`` (or ``last.pt``): ``(network, header)``; safe (weights_only)."""
    data = load_raw(path)  # clear errors for missing / corrupt / foreign files
    if not isinstance(data.get("header"), dict) or data["header"].get("kind") != "stdp":
        raise CheckpointError(f"{path} is a spikeforge checkpoint but not of an stdp stage")
    net = DiehlCook(NetConfig.from_dict(data["header"]["net"]))
    state = dict(data["state_dict"])
    state.setdefault("norm_target", net.norm_target.clone())  # files written before pruning kept the mass
    net.load_state_dict(state)
    return net, data["header"]


def prune_target(stage: StdpStage, seen: int, total: int) -> float:
    """Pruned fraction wanted after ``seen`` of ``total`` training images (linear ramp, see :class:`StdpStage`)."""
    if stage.prune_fraction <= 0 or seen < stage.prune_start:
        return 0.0
    end = max(stage.prune_start + 1, int(stage.prune_end * total))
    return stage.prune_fraction * min(1.0, (seen - stage.prune_start) / max(1, end - stage.prune_start))


def constrain(net: DiehlCook, stage: StdpStage, fraction: float | None, levels: int | None) -> None:
    """Prune to ``fraction`` (if more than now), re-normalize the survivors, quantize to ``levels``."""
    if fraction and fraction > pruned_fraction(net.mask) + 1e-9:
        net.prune_to(prune_lowest(net.W, net.mask, fraction))
    net.normalize()
    if levels:
        net.W.copy_(quantize(net.W, net.mask, levels, net.cfg.w_max, stage.quant_range, stage.quant_rounding))


# ---------------------------------------------------------------------------------------------------------- runner
def evaluate(net: DiehlCook, x_label, y_label, x_test, y_test, num_classes: int, batch: int, gen, progress=False,
             desc="eval") -> dict:
    """Label neurons from training responses, then test accuracy (learning off)."""
    t0 = time.time()
    cl = _responses(net, x_label, batch, gen, progress, f"{desc}: labeling")
    assign = assign_labels(cl, y_label, num_classes)
    t1 = time.time()
    ct = _responses(net, x_test, batch, gen, progress, f"{desc}: test")
    acc = float((predict(ct, assign, num_classes) == y_test).float().mean())
    return {"acc": acc, "assignments": assign, "label_seconds": t1 - t0, "test_seconds": time.time() - t1,
            "test_counts_mean": float(ct.sum(1).mean()), "test_counts": ct}


def _responses(net, x, batch, gen, progress, desc):
    T, N = net.cfg.steps, net.cfg.n_neurons
    sub = max(1, min(batch, (16 * 2 ** 20) // (T * N)))  # bound the [T, B, N] input buffer to 64 MB
    out = []
    for i in tqdm(range(0, x.shape[0], sub), desc=desc, disable=not progress, leave=False, mininterval=5):
        out.append(respond(net, x[i:i + sub], gen))
    return torch.cat(out)


@register_runner("stdp")
def run_stdp(stage: StdpStage, ctx: Context) -> dict:
    t_start = time.time()
    seed = ctx.recipe.seed
    pre = dict(stage.preprocess)
    x_train, y_train, shape = _all_images(ctx.data.train, pre)
    x_test, y_test, _ = _all_images(ctx.data.test, pre)
    num_classes = int(ctx.data.num_classes)
    if stage.test_images:
        x_test, y_test = x_test[:stage.test_images], y_test[:stage.test_images]
    cfg = NetConfig.from_dict({**stage.net, "n_neurons": stage.n_neurons, "n_input": x_train.shape[1]})
    gen = torch.Generator().manual_seed(seed * 1000 + ctx.index + 17)
    net = DiehlCook(cfg, generator=gen)
    net.normalize()
    M = x_train.shape[0]
    per_pass = min(M, stage.train_images or M)
    total = per_pass * stage.passes
    header = {"stage": stage.name, "kind": "stdp", "recipe": ctx.recipe.name, "dataset": ctx.recipe.data.dataset,
              "stage_config": dataclasses.asdict(stage), "net": cfg.to_dict(), "input_shape": list(shape)}
    seen, train_seconds, presentations, history = 0, 0.0, 0, []
    resume = ctx.stage_dir / RESUME_FILE
    if resume.exists():
        data = load_raw(resume)
        if data.get("header", {}).get("net") != json.loads(json.dumps(cfg.to_dict())):
            raise CheckpointError(f"{resume} was written with other network settings; delete it to start over")
        net.load_state_dict(data["state_dict"])
        st = data["train_state"]
        seen, train_seconds, presentations = int(st["seen"]), float(st["train_seconds"]), int(st["presentations"])
        history = json.loads(st["history"])
        gen.set_state(st["rng"])
        ctx.log(f"  [{stage.name}] resuming after {seen} of {total} training images")
    budget = None if stage.max_train_minutes is None else 60.0 * stage.max_train_minutes
    bar = tqdm(total=total, initial=seen, desc=f"{stage.name} STDP N={cfg.n_neurons}", disable=not ctx.progress,
               unit="img", mininterval=5)
    next_prune = (seen // stage.prune_every + 1) * stage.prune_every
    stopped_early = False
    t_seg = time.time()
    while seen < total:
        p, start = divmod(seen, per_pass)
        order = torch.randperm(M, generator=torch.Generator().manual_seed(seed * 7919 + p))[:per_pass]
        stop = min(per_pass, start + stage.batch_size)
        r = train_batch(net, x_train.index_select(0, order[start:stop]), gen)
        presentations += r["presentations"]
        n = stop - start
        seen += n
        bar.update(n)
        if (stage.prune_fraction > 0 or stage.levels) and seen >= next_prune and seen < total:
            next_prune = (seen // stage.prune_every + 1) * stage.prune_every
            if seen >= stage.prune_start:
                frac = prune_target(stage, seen, total)
                constrain(net, stage, frac, stage.levels)
                history.append({"seen": seen, "pruned": pruned_fraction(net.mask)})
        over = budget is not None and train_seconds + (time.time() - t_seg) >= budget and seen < total
        boundary = seen % stage.checkpoint_every < n or seen == total or over
        if boundary:
            train_seconds += time.time() - t_seg
            t_seg = time.time()
            bar.set_postfix(img_s=f"{seen / max(train_seconds, 1e-9):.0f}", theta=f"{float(net.theta.mean()):.1f}",
                            pruned=f"{pruned_fraction(net.mask):.2f}")
            if seen < total:
                _save(resume, net, header, {"seen": seen, "train_seconds": train_seconds,
                                            "presentations": presentations, "history": json.dumps(history),
                                            "rng": gen.get_state()})
            if over:
                ctx.log(f"  [{stage.name}] training time budget reached after {seen} images")
                stopped_early = True
                break
    bar.close()
    train_seconds += time.time() - t_seg if not stopped_early and seen > 0 else 0.0
    # final constraint: the deployed weights are pruned, normalized and on the levels
    constrain(net, stage, stage.prune_fraction or None, stage.levels)
    # labeling: a fixed seeded subset of the *training* images, learning off
    lab = torch.randperm(M, generator=torch.Generator().manual_seed(seed * 31 + 5))
    lab = lab[:stage.label_images] if stage.label_images else lab
    x_lab, y_lab = x_train.index_select(0, lab), y_train.index_select(0, lab)
    ctx.log(f"  [{stage.name}] trained on {seen} images in {train_seconds:.0f} s "
            f"({seen / max(train_seconds, 1e-9):.1f} img/s); labeling on {len(lab)} training images")
    ev = evaluate(net, x_lab, y_lab, x_test, y_test, num_classes, stage.eval_batch_size, gen, ctx.progress,
                  stage.name)
    ctx.log(f"  [{stage.name}] test accuracy {ev['acc']:.4f} (pruned {pruned_fraction(net.mask):.3f}, "
            f"levels {stage.levels or 'full precision'})")
    # hardware cost against the dense, full-precision network with the same input spikes
    hw = CrossbarModel.from_dict(stage.hardware)
    in_spikes, steps_active = _input_activity(x_test[:1000], cfg)
    dense = crossbar_cost(torch.ones_like(net.mask), None, in_spikes, steps_active, hw)
    mine = crossbar_cost(net.mask, stage.levels, in_spikes, steps_active, hw)
    gain = compare(dense, mine)
    ctx.log(f"  [{stage.name}] crossbar estimate: {mine['crossbars']} vs {dense['crossbars']} crossbars, area "
            f"{gain['area_x']:.2f}x smaller ({gain['area_packed_x']:.2f}x with perfect packing), energy "
            f"{gain['energy_x']:.2f}x lower than the dense network (paper: 4x area, 3.1x energy)")
    metrics = {"stage": stage.name, "kind": "stdp", "timesteps": None, "test_acc": ev["acc"], "epochs": seen / per_pass,
               "seconds": time.time() - t_start, "train_seconds": train_seconds,
               "train_images_per_s": seen / max(train_seconds, 1e-9), "images_seen": seen,
               "presentations": presentations, "stopped_early": stopped_early,
               "label_images": int(len(lab)), "label_seconds": ev["label_seconds"], "test_seconds": ev["test_seconds"],
               "test_images": int(len(y_test)), "steps_per_image": cfg.steps, "n_neurons": cfg.n_neurons,
               "model": cfg.model, "rule": cfg.rule, "pruned_fraction": pruned_fraction(net.mask),
               "levels": stage.levels, "theta_mean": float(net.theta.mean()),
               "test_spikes_per_image": ev["test_counts_mean"],
               "class_counts": torch.bincount(ev["assignments"], minlength=num_classes).tolist(),
               "hardware": {"dense": dense, "this": mine, **gain}, "prune_history": history}
    if stage.compare:
        base = ctx.out_dir / stage.compare / METRICS_FILE
        if base.is_file():
            b = json.loads(base.read_text())
            metrics["compare"] = {"stage": stage.compare, "test_acc": b.get("test_acc"),
                                  "acc_drop_points": 100 * (b.get("test_acc", 0) - ev["acc"])}
            ctx.log(f"  [{stage.name}] vs {stage.compare}: {100 * b.get('test_acc', 0):.2f}% -> "
                    f"{100 * ev['acc']:.2f}% ({metrics['compare']['acc_drop_points']:+.2f} points drop)")
    sweep = _sweep(net, stage, x_lab, y_lab, x_test, y_test, num_classes, gen, ctx, in_spikes, steps_active, hw)
    if sweep:
        metrics["sweep"] = sweep
    _save(ctx.stage_dir / MODEL_FILE, net, {**header, "metrics": {k: v for k, v in metrics.items()
                                                                  if k not in ("hardware", "sweep")}})
    if stage.plots:
        try:
            from spikeforge.methods.stdp.plots import plot_receptive_fields, plot_sweep

            plot_receptive_fields(net.W, shape, ctx.stage_dir / "receptive_fields.png", ev["assignments"])
            if sweep:
                plot_sweep(sweep, ctx.stage_dir / "accuracy_vs_pruning.png")
        except ImportError:  # matplotlib missing
            pass
    atomic_write_json(ctx.stage_dir / METRICS_FILE, metrics)
    if resume.exists():
        resume.unlink()
    return metrics


def _input_activity(x: torch.Tensor, cfg: NetConfig) -> tuple[torch.Tensor, float]:
    """Expected input spikes per inference of each input (first presentation) and steps with any input spike."""
    p = (x * cfg.max_rate * cfg.dt / 1000.0).clamp(0, 1)
    per_input = p.mean(0) * cfg.steps
    p_none = torch.exp(torch.log1p(-p.clamp(max=1 - 1e-7)).sum(1))  # P(no input spike in a step), per image
    return per_input, float(((1 - p_none) * cfg.steps).mean())


def _sweep(net, stage, x_lab, y_lab, x_test, y_test, num_classes, gen, ctx, in_spikes, steps_active, hw) -> list:
    """Post-hoc accuracy of the final network pruned to each ``sweep_prune`` and quantized to each
    ``sweep_levels`` (relabeled on the labeling images each time)."""
    if not stage.sweep_prune and not stage.sweep_levels:
        return []
    fracs = sorted(set([pruned_fraction(net.mask)] + [float(f) for f in stage.sweep_prune]))
    levels = list(dict.fromkeys([None] + list(stage.sweep_levels)))
    W0, m0, t0 = net.W.clone(), net.mask.clone(), net.norm_target.clone()
    dense = crossbar_cost(torch.ones_like(m0), None, in_spikes, steps_active, hw)
    out = []
    for f in fracs:
        for q in levels:
            if f < pruned_fraction(m0) - 1e-9:
                continue
            net.W.copy_(W0)
            net.mask.copy_(m0)
            net.norm_target.copy_(t0)
            constrain(net, stage, f, q)
            ev = evaluate(net, x_lab, y_lab, x_test, y_test, num_classes, stage.eval_batch_size, gen, False)
            cost = compare(dense, crossbar_cost(net.mask, q, in_spikes, steps_active, hw))
            row = {"pruned": pruned_fraction(net.mask), "levels": q, "test_acc": ev["acc"],
                   "area_x": cost["area_x"], "area_packed_x": cost["area_packed_x"], "energy_x": cost["energy_x"]}
            out.append(row)
            ctx.log(f"  [{stage.name}] sweep: pruned {row['pruned']:.2f} levels {q or 'full'}: acc {ev['acc']:.4f}, "
                    f"area {row['area_x']:.2f}x (packed {row['area_packed_x']:.2f}x), energy {row['energy_x']:.2f}x")
    net.W.copy_(W0)
    net.mask.copy_(m0)
    net.norm_target.copy_(t0)
    return out


__all__ = ["StdpStage", "constrain", "evaluate", "load_stdp", "preprocess", "prune_target", "run_stdp"]
