"""The ``stdp`` stage: unsupervised STDP training of a Diehl & Cook (2015) network, optionally with gradual pruning
and weight quantization (Rathi, Panda & Roy, IEEE TCAD 2019), neuron labeling on training images, test accuracy,
crossbar cost and plots, on the same run machinery as every other stage: ``model.pt`` and ``metrics.json`` through
:meth:`Stage.finish`, resumable from ``last.pt`` (written every ``checkpoint_every`` images).

Recipe keys (see :class:`StdpStageConfig`)::

    - {name: stdp, kind: stdp, n_neurons: 400, passes: 1, batch_size: 16,
       net: {model: conductance, rule: trace, t_present: 250, dt: 1.0},
       prune_fraction: 0.5, prune_every: 5000, levels: 16}
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Literal

import torch
from pydantic import Field
from tqdm.auto import tqdm

from spikeforge.config import Fraction, NonNegInt, PosFloat, PosInt, config
from spikeforge.engine.checkpoint import RESUME_FILE, load_raw, save_checkpoint
from spikeforge.engine.stages.base import METRICS_FILE, STAGES, Context, Stage, StageConfig, check_section, keys_of
from spikeforge.errors import CheckpointError, ConfigError
from spikeforge.methods.stdp.hardware import CrossbarModel, compare, crossbar_cost, input_activity
from spikeforge.methods.stdp.learn import evaluate, train_batch
from spikeforge.methods.stdp.network import DiehlCook, NetConfig
from spikeforge.methods.stdp.plots import plot_receptive_fields, plot_sweep
from spikeforge.methods.stdp.preprocess import all_images
from spikeforge.methods.stdp.prune import constrain, prune_target, pruned_fraction
from spikeforge.methods.stdp.sweep import sweep
from spikeforge.models import register_model
from spikeforge.utils import bars_disabled

#: A pruned fraction: in [0, 1).
PrunedFraction = Annotated[float, Field(ge=0, lt=1)]
#: Quantization levels: at least 2.
Levels = Annotated[int, Field(ge=2)]


@config
class Preprocess:
    """Image preparation (:func:`~spikeforge.methods.stdp.preprocess.preprocess`): ``grayscale`` (default: for
    3-channel images), ``size`` (resize), ``dog`` ([sigma1, sigma2] difference of Gaussians), ``invert``."""

    grayscale: bool | None = None
    size: PosInt | None = None
    dog: Annotated[list[PosFloat], Field(min_length=2, max_length=2)] | None = None
    invert: bool = False


NetKeys = keys_of(NetConfig, drop=("n_input", "n_neurons"))
PreprocessKeys = keys_of(Preprocess)
HardwareKeys = keys_of(CrossbarModel)


@config
class StdpStageConfig(StageConfig):
    """Unsupervised STDP training of a Diehl & Cook network.

    ``n_neurons``: excitatory neurons. ``passes``: passes over the training images (``train_images`` of them per
    pass, None: all); ``max_train_minutes``: stop training early (after the batch that reaches it; the result then
    depends on the machine's speed) when this much time has been spent training.
    ``batch_size``: images simulated in parallel while learning (their STDP updates are summed: a deviation,
    docs/stdp.md); ``eval_batch_size``: images per batch with learning off. ``label_images``: training images used to
    label the neurons (None: all; the first of a fixed seeded permutation); ``test_images``: test images evaluated
    (None: all). ``net``: :class:`~spikeforge.methods.stdp.network.NetConfig` overrides.
    Pruning: every ``prune_every`` images from ``prune_start`` on, each neuron's lowest weights are pruned so that the
    pruned fraction rises linearly to ``prune_fraction`` (in [0, 1)), reached at ``prune_end`` (a fraction of all
    training images); ``levels``: quantize the surviving weights to this many levels (range ``quant_range``: wmax or
    neuron; ``quant_rounding``: ``nearest``, or ``sum`` = largest-remainder rounding that keeps each neuron's total
    weight, see :func:`~spikeforge.methods.stdp.prune.quantize`) at the same times and at the end.
    ``sweep_prune`` / ``sweep_levels``: after training, also evaluate the final network pruned/quantized further
    (post-hoc, relabeled on the labeling images). ``preprocess``: image preparation (:class:`Preprocess`) for
    non-MNIST data. ``hardware``: :class:`~spikeforge.methods.stdp.hardware.CrossbarModel` overrides. ``compare``:
    an earlier ``stdp`` stage whose accuracy this one is compared with.
    """

    kind: Literal["stdp"]
    n_neurons: PosInt = 100
    passes: PosInt = 1
    train_images: PosInt | None = None
    max_train_minutes: PosFloat | None = None
    batch_size: PosInt = 16
    eval_batch_size: PosInt = 256
    label_images: PosInt | None = None
    test_images: PosInt | None = None
    checkpoint_every: PosInt = 5000
    net: NetKeys = field(default_factory=dict)
    prune_fraction: PrunedFraction = 0.0
    prune_every: PosInt = 5000
    prune_start: NonNegInt = 0
    prune_end: Fraction = 0.5
    levels: Levels | None = None
    quant_range: Literal["wmax", "neuron"] = "wmax"
    quant_rounding: Literal["nearest", "sum"] = "nearest"
    sweep_prune: list[PrunedFraction] = field(default_factory=list)
    sweep_levels: list[Levels | None] = field(default_factory=list)
    preprocess: PreprocessKeys = field(default_factory=dict)
    hardware: HardwareKeys = field(default_factory=dict)
    plots: bool = True
    compare: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_section(Preprocess, self.preprocess, f"{self.where}.preprocess")
        check_section(NetConfig, {**self.net, "n_neurons": self.n_neurons}, f"{self.where}.net")
        check_section(CrossbarModel, self.hardware, f"{self.where}.hardware")


def _placeholder_model(spec, snn=None):
    raise ConfigError("model.arch 'diehl-cook' is built by the 'stdp' stage only (it has no ANN/SNN twin)")


register_model("diehl-cook", _placeholder_model)  # recipes need a model section; this names the network there


def load_stdp(path: str | Path) -> tuple[DiehlCook, dict]:
    """Load an ``stdp`` stage's ``model.pt`` (or ``last.pt``): ``(network, header)``; safe (weights_only)."""
    data = load_raw(path)  # clear errors for missing / corrupt / foreign files
    if not isinstance(data.get("header"), dict) or data["header"].get("kind") != "stdp":
        raise CheckpointError(f"{path} is a spikeforge checkpoint but not of an stdp stage")
    try:
        cfg = NetConfig.from_dict(data["header"].get("net"))
    except ConfigError as exc:
        raise CheckpointError(f"{path} has an invalid network description: {exc}") from None
    state = dict(data["state_dict"])
    with torch.device("meta"):  # the sizes the header describes, checked before anything is allocated
        expected = {k: tuple(v.shape) for k, v in DiehlCook(cfg).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    if any(got.get(k, v) != v for k, v in expected.items()) or "W" not in got:
        raise CheckpointError(f"{path} does not match its network description (n_input {cfg.n_input}, n_neurons "
                              f"{cfg.n_neurons}; the file holds W of shape {got.get('W')})")
    net = DiehlCook(cfg)
    state.setdefault("norm_target", net.norm_target.clone())  # files written before pruning kept the mass
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match its network description: {exc}") from None
    return net, data["header"]


@dataclass
class _Progress:
    """Training progress (what ``last.pt`` keeps besides the network and the random state)."""

    per_pass: int
    total: int
    seen: int = 0
    train_seconds: float = 0.0
    presentations: int = 0
    history: list = field(default_factory=list)
    stopped_early: bool = False


@STAGES.register("stdp")
class StdpStage(Stage):
    Config = StdpStageConfig

    @classmethod
    def inputs(cls, cfg) -> list[str]:
        other = getattr(cfg, "compare", None)
        return [other] if other else []

    def header_metrics(self, metrics: dict) -> dict:
        return {k: v for k, v in metrics.items() if k not in ("hardware", "sweep")}

    def run(self, ctx: Context) -> dict:
        cfg, t_start = self.cfg, time.time()
        d = self._data(ctx)
        net_cfg = NetConfig.from_dict({**cfg.net, "n_neurons": cfg.n_neurons, "n_input": d.x_train.shape[1]})
        gen = torch.Generator().manual_seed(ctx.recipe.seed * 1000 + ctx.index + 17)
        net = DiehlCook(net_cfg, generator=gen)
        net.normalize()
        header = self.header(ctx, {"net": net_cfg.to_dict(), "input_shape": list(d.shape)})
        prog = self._train(ctx, net, gen, d.x_train, header)
        # final constraint: the deployed weights are pruned, normalized and on the levels
        constrain(net, cfg.prune_fraction or None, cfg.levels, cfg.quant_range, cfg.quant_rounding)
        labeling = self._labeling(ctx, d)
        ctx.log(f"  [{cfg.name}] trained on {prog.seen} images in {prog.train_seconds:.0f} s "
                f"({prog.seen / max(prog.train_seconds, 1e-9):.1f} img/s); labeling on {len(labeling[1])} "
                "training images")
        ev = evaluate(net, *labeling, d.x_test, d.y_test, d.num_classes, cfg.eval_batch_size, gen, ctx.progress,
                      cfg.name)
        ctx.log(f"  [{cfg.name}] test accuracy {ev['acc']:.4f} (pruned {pruned_fraction(net.mask):.3f}, "
                f"levels {cfg.levels or 'full precision'})")
        hw = CrossbarModel.from_dict(cfg.hardware)
        activity = input_activity(d.x_test[:1000], net_cfg.max_rate, net_cfg.dt, net_cfg.steps)
        metrics = self._metrics(net, prog, ev, d, len(labeling[1]), self._cost(ctx, net, hw, activity),
                                seconds=time.time() - t_start)
        metrics.update(self._compare(ctx, ev["acc"]))
        rows = sweep(net, labeling, (d.x_test, d.y_test), d.num_classes, gen, prune=cfg.sweep_prune,
                     levels=cfg.sweep_levels, batch=cfg.eval_batch_size, quant_range=cfg.quant_range,
                     rounding=cfg.quant_rounding, activity=activity, hardware=hw,
                     log=lambda msg: ctx.log(f"  [{cfg.name}] {msg}"))
        if rows:
            metrics["sweep"] = rows
        self._plots(ctx, net, d.shape, ev["assignments"], rows)
        return self.finish(ctx, net, metrics, header)

    # ------------------------------------------------------------------ data
    def _data(self, ctx: Context) -> SimpleNamespace:
        cfg = self.cfg
        pre = dict(cfg.preprocess)
        x_train, y_train, shape = all_images(ctx.data.train, pre)
        x_test, y_test, _ = all_images(ctx.data.test, pre)
        if cfg.test_images:
            x_test, y_test = x_test[:cfg.test_images], y_test[:cfg.test_images]
        return SimpleNamespace(x_train=x_train, y_train=y_train, shape=shape, x_test=x_test, y_test=y_test,
                               num_classes=int(ctx.data.num_classes))

    def _labeling(self, ctx: Context, d: SimpleNamespace) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed seeded subset of the *training* images, to label the neurons with (learning off)."""
        lab = torch.randperm(d.x_train.shape[0], generator=torch.Generator().manual_seed(ctx.recipe.seed * 31 + 5))
        lab = lab[:self.cfg.label_images] if self.cfg.label_images else lab
        return d.x_train.index_select(0, lab), d.y_train.index_select(0, lab)

    # ------------------------------------------------------------------ training
    def _train(self, ctx: Context, net: DiehlCook, gen, x_train: torch.Tensor, header: dict) -> _Progress:
        """STDP over ``passes`` x ``train_images`` images in batches, with gradual pruning / quantization, a resume
        checkpoint every ``checkpoint_every`` images and the optional time budget."""
        cfg = self.cfg
        per_pass = min(x_train.shape[0], cfg.train_images or x_train.shape[0])
        prog = _Progress(per_pass, per_pass * cfg.passes)
        resume = ctx.stage_dir / RESUME_FILE
        if resume.exists():
            self._resume(ctx, resume, net, gen, prog, header)
        budget = None if cfg.max_train_minutes is None else 60.0 * cfg.max_train_minutes
        bar = tqdm(total=prog.total, initial=prog.seen, desc=f"{cfg.name} STDP N={net.cfg.n_neurons}",
                   disable=bars_disabled(ctx.progress), unit="img", mininterval=5)
        next_prune = (prog.seen // cfg.prune_every + 1) * cfg.prune_every
        t_seg = time.time()
        while prog.seen < prog.total:
            n = self._train_step(ctx, net, gen, x_train, prog)
            bar.update(n)
            if (cfg.prune_fraction > 0 or cfg.levels) and next_prune <= prog.seen < prog.total:
                next_prune = (prog.seen // cfg.prune_every + 1) * cfg.prune_every
                if prog.seen >= cfg.prune_start:
                    frac = prune_target(prog.seen, prog.total, cfg.prune_fraction, cfg.prune_start, cfg.prune_end)
                    constrain(net, frac, cfg.levels, cfg.quant_range, cfg.quant_rounding)
                    prog.history.append({"seen": prog.seen, "pruned": pruned_fraction(net.mask)})
            over = budget is not None and prog.train_seconds + (time.time() - t_seg) >= budget \
                and prog.seen < prog.total
            if prog.seen % cfg.checkpoint_every < n or prog.seen == prog.total or over:
                prog.train_seconds += time.time() - t_seg
                t_seg = time.time()
                bar.set_postfix(img_s=f"{prog.seen / max(prog.train_seconds, 1e-9):.0f}",
                                theta=f"{float(net.theta.mean()):.1f}", pruned=f"{pruned_fraction(net.mask):.2f}")
                if prog.seen < prog.total:
                    self._save_resume(resume, net, header, prog, gen)
                if over:
                    ctx.log(f"  [{cfg.name}] training time budget reached after {prog.seen} images")
                    prog.stopped_early = True
                    break
        bar.close()
        prog.train_seconds += time.time() - t_seg if not prog.stopped_early and prog.seen > 0 else 0.0
        return prog

    def _train_step(self, ctx: Context, net: DiehlCook, gen, x_train: torch.Tensor, prog: _Progress) -> int:
        """One batch of the current pass (its images in a seeded order per pass); returns the images trained on."""
        p, start = divmod(prog.seen, prog.per_pass)
        order = torch.randperm(x_train.shape[0], generator=torch.Generator().manual_seed(ctx.recipe.seed * 7919 + p))
        order = order[:prog.per_pass]
        stop = min(prog.per_pass, start + self.cfg.batch_size)
        r = train_batch(net, x_train.index_select(0, order[start:stop]), gen)
        prog.presentations += r["presentations"]
        prog.seen += stop - start
        return stop - start

    def _save_resume(self, resume: Path, net: DiehlCook, header: dict, prog: _Progress, gen) -> None:
        save_checkpoint(resume, net, header, {"seen": prog.seen, "train_seconds": prog.train_seconds,
                                              "presentations": prog.presentations,
                                              "history": json.dumps(prog.history), "rng": gen.get_state()})

    def _resume(self, ctx: Context, resume: Path, net: DiehlCook, gen, prog: _Progress, header: dict) -> None:
        data = load_raw(resume)
        if data.get("header", {}).get("net") != json.loads(json.dumps(header["net"])):
            raise CheckpointError(f"{resume} was written with other network settings; delete it to start over")
        net.load_state_dict(data["state_dict"])
        st = data["train_state"]
        prog.seen, prog.train_seconds = int(st["seen"]), float(st["train_seconds"])
        prog.presentations, prog.history = int(st["presentations"]), json.loads(st["history"])
        gen.set_state(st["rng"])
        ctx.log(f"  [{self.cfg.name}] resuming after {prog.seen} of {prog.total} training images")

    # ------------------------------------------------------------------ results
    def _cost(self, ctx: Context, net: DiehlCook, hw: CrossbarModel, activity) -> dict:
        """Crossbar cost against the dense, full-precision network with the same input spikes."""
        dense = crossbar_cost(torch.ones_like(net.mask), None, *activity, hw)
        mine = crossbar_cost(net.mask, self.cfg.levels, *activity, hw)
        gain = compare(dense, mine)
        ctx.log(f"  [{self.cfg.name}] crossbar estimate: {mine['crossbars']} vs {dense['crossbars']} crossbars, area "
                f"{gain['area_x']:.2f}x smaller ({gain['area_packed_x']:.2f}x with perfect packing), energy "
                f"{gain['energy_x']:.2f}x lower than the dense network (paper: 4x area, 3.1x energy)")
        return {"dense": dense, "this": mine, **gain}

    def _metrics(self, net: DiehlCook, prog: _Progress, ev: dict, d, n_label: int, hw: dict, seconds: float) -> dict:
        cfg = self.cfg
        return {"kind": "stdp", "test_acc": ev["acc"], "epochs": prog.seen / prog.per_pass, "seconds": seconds,
                "train_seconds": prog.train_seconds, "train_images_per_s": prog.seen / max(prog.train_seconds, 1e-9),
                "images_seen": prog.seen, "presentations": prog.presentations, "stopped_early": prog.stopped_early,
                "label_images": int(n_label), "label_seconds": ev["label_seconds"],
                "test_seconds": ev["test_seconds"], "test_images": int(len(d.y_test)),
                "steps_per_image": net.cfg.steps, "n_neurons": net.cfg.n_neurons, "model": net.cfg.model,
                "rule": net.cfg.rule, "pruned_fraction": pruned_fraction(net.mask), "levels": cfg.levels,
                "theta_mean": float(net.theta.mean()), "test_spikes_per_image": ev["test_counts_mean"],
                "class_counts": torch.bincount(ev["assignments"], minlength=d.num_classes).tolist(),
                "hardware": hw, "prune_history": prog.history}

    def _compare(self, ctx: Context, acc: float) -> dict:
        """Accuracy drop against the ``compare`` stage, if it has finished."""
        base = ctx.out_dir / self.cfg.compare / METRICS_FILE if self.cfg.compare else None
        if base is None or not base.is_file():
            return {}
        b = json.loads(base.read_text())
        drop = 100 * (b.get("test_acc", 0) - acc)
        ctx.log(f"  [{self.cfg.name}] vs {self.cfg.compare}: {100 * b.get('test_acc', 0):.2f}% -> {100 * acc:.2f}% "
                f"({drop:+.2f} points drop)")
        return {"compare": {"stage": self.cfg.compare, "test_acc": b.get("test_acc"), "acc_drop_points": drop}}

    def _plots(self, ctx: Context, net: DiehlCook, shape, assignments, rows: list) -> None:
        if not self.cfg.plots:
            return
        try:
            plot_receptive_fields(net.W, shape, ctx.stage_dir / "receptive_fields.png", assignments)
            if rows:
                plot_sweep(rows, ctx.stage_dir / "accuracy_vs_pruning.png")
        except ImportError:  # matplotlib missing
            pass


__all__ = ["Preprocess", "StdpStage", "StdpStageConfig", "load_stdp"]
