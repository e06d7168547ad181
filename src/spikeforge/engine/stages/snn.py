"""The ``snn`` stage: BPTT training of the SNN with surrogate gradients at ``T`` timesteps, from the previous stage's
model: spike-based fine-tuning of a converted SNN (hybrid training, Rathi et al., "Enabling deep spiking neural
networks with hybrid conversion and spike timing dependent backpropagation", ICLR 2020) with trainable thresholds and
leaks (DIET-SNN, Rathi & Roy, IEEE TNNLS 2021 / arXiv 2020), and the sub-stages of IIR-SNN (Chowdhury et al. 2021).
"""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Literal

from pydantic import Field

from spikeforge.analysis.energy import stage_energy_metrics
from spikeforge.config import Fraction, PosFloat, PosInt, config
from spikeforge.engine.checkpoint import MODEL_FILE, RESUME_FILE, load_checkpoint
from spikeforge.engine.stages.base import (STAGES, Context, SnnOverrides, Stage, TrainStageConfig,
                                           check_section, check_snn_overrides, energy_batches, keys_of, snn_overrides, snn_summary,
                                           stage_timesteps)
from spikeforge.engine.train import Criterion, TrainGroups, accuracy_over_time, distillation, fit
from spikeforge.errors import CheckpointError
from spikeforge.methods.convert import ann_to_snn, balance_thresholds
from spikeforge.models import TwinNet, build_model


@config
class RebalanceConfig:
    """Keys of an SNN stage's ``rebalance`` (ABLATION): balancing at the stage's ``T`` before training."""

    percentile: Annotated[float, Field(gt=0, le=100)] = 99.7
    sim_timesteps: PosInt | None = None
    scaling: PosFloat = 1.0
    calib_batch_size: PosInt | None = None


RebalanceKeys = keys_of(RebalanceConfig)


@config
class DistillConfig:
    """Keys of an SNN stage's ``distill``: knowledge distillation (:func:`spikeforge.engine.train.distillation`).

    ``teacher``: ``previous`` (the model this stage starts from: the ANN of a hybrid/DIET stage, the higher-T SNN of
    an IIR sub-stage) or the name of an earlier stage (e.g. the recipe's ``ann``); ``weight``: the soft term's weight
    ``w`` in [0, 1]; ``temperature``: ``tau`` > 0.
    """

    teacher: str = "previous"
    weight: Fraction = 0.5
    temperature: PosFloat = 4.0


DistillKeys = keys_of(DistillConfig)


@config
class SnnStageConfig(TrainStageConfig):
    """BPTT training of the SNN at ``timesteps`` (hybrid/STDB, DIET-SNN, IIR sub-stages, BNTT).

    ``timesteps``: T (else ``snn.timesteps``, else the recipe's ``snn.timesteps``). ``init``: ``previous`` (the
    previous stage's model: SNN, or ANN weights with default thresholds) or ``scratch``. ``snn``: SNNConfig
    overrides (encoding, surrogate, leak, order ...). ``rebalance``: ABLATION, not in the reference code: re-run
    threshold balancing at this stage's T before training (a mapping with ``percentile``, ``sim_timesteps``,
    ``scaling``, ``calib_batch_size``). ``distill``: knowledge distillation from a teacher (:class:`DistillConfig`:
    ``teacher``, ``weight``, ``temperature``). ``eval_timesteps``: also report accuracy at these T after training.
    ``parent``: set on IIR sub-stages (the ``iir`` stage they come from).
    """

    kind: Literal["snn"]
    timesteps: PosInt | None = None
    init: Literal["previous", "scratch"] = "previous"
    snn: SnnOverrides = field(default_factory=dict)
    rebalance: RebalanceKeys | None = None
    distill: DistillKeys | None = None
    eval_timesteps: list[PosInt] | None = None
    lr: PosFloat = 1e-4
    train: TrainGroups = field(default_factory=lambda: ["weights", "threshold", "leak"])
    parent: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_snn_overrides(self)
        if self.rebalance is not None:
            check_section(RebalanceConfig, self.rebalance, f"{self.where}.rebalance")
        if self.distill is not None:
            check_section(DistillConfig, self.distill, f"{self.where}.distill")


def distill_teacher(cfg: SnnStageConfig) -> str | None:
    """The earlier stage a distilling stage reads besides its parent (None: no distillation, or the parent)."""
    if cfg.distill is None:
        return None
    teacher = DistillConfig(**cfg.distill).teacher
    return None if teacher == "previous" else teacher


def stage_criterion(stage: Stage, ctx: Context) -> Criterion | None:
    """The training loss of an SNN stage: knowledge distillation from its teacher, else None (cross-entropy)."""
    cfg = stage.cfg
    if cfg.distill is None:
        return None
    kd = DistillConfig(**cfg.distill)
    other = distill_teacher(cfg)
    teacher, _ = stage.load_previous(ctx) if other is None else load_checkpoint(ctx.out_dir / other / MODEL_FILE)
    return distillation(teacher.to(ctx.device), weight=kd.weight, temperature=kd.temperature,
                        label_smoothing=cfg.label_smoothing)


def snn_for_stage(stage: Stage, ctx: Context) -> TwinNet:
    """The model an SNN stage starts from, at the stage's timesteps (:func:`stage_timesteps`) and SNN settings."""
    cfg = stage.cfg
    train = cfg.optim().train
    changes = {**snn_overrides(cfg), "learn_threshold": "threshold" in train, "learn_leak": "leak" in train,
               "timesteps": stage_timesteps(cfg, ctx.recipe.snn)}
    if cfg.init == "scratch":
        return build_model(ctx.recipe.model, ctx.recipe.snn.updated(**changes))
    prev, _ = stage.load_previous(ctx)
    if not prev.spiking:  # ANN weights with the configured (not balanced) thresholds: spike-based training from an ANN
        return ann_to_snn(prev, ctx.recipe.snn.updated(**changes))
    model = build_model(prev.spec, prev.snn.updated(**changes))
    missing, unexpected = model.load_state_dict(prev.state_dict(), strict=False)
    if unexpected or missing:
        raise CheckpointError(f"stage {cfg.name!r}: previous SNN does not fit the new settings "
                              f"(missing {missing}, unexpected {unexpected}); per_channel must not change")
    return model


def train_snn(stage: Stage, ctx: Context) -> tuple[TwinNet, dict]:
    """BPTT training of an SNN stage (resumable); returns the model and its metrics (not yet written)."""
    cfg = stage.cfg
    model = snn_for_stage(stage, ctx).to(ctx.device)
    extra = {}
    if cfg.rebalance is not None and not (ctx.stage_dir / RESUME_FILE).exists():
        extra["rebalanced"] = _rebalance(cfg, ctx, model)
    start = snn_summary(model)  # what training starts from
    res = fit(model, ctx.data, cfg.optim(), epochs=cfg.epochs, stage_dir=ctx.stage_dir, device=ctx.device,
              seed=ctx.recipe.seed, stage_index=ctx.index, header=stage.header(ctx), max_batches=cfg.max_batches,
              eval_batches=cfg.eval_batches, eval_every=cfg.eval_every, amp=cfg.amp, progress=ctx.progress,
              desc=f"{cfg.name} T={model.timesteps}", on_epoch_end=ctx.epoch_hook(cfg.name, model),
              criterion=stage_criterion(stage, ctx))
    ev = res.final_eval
    metrics = {"kind": "iir" if cfg.parent else "snn", "test_acc": ev["acc"], "epochs": cfg.epochs,
               "seconds": res.seconds, "spike_rate": ev.get("spike_rate"), "encoding": model.snn.encoding,
               "surrogate": model.snn.surrogate, "initial": start, **snn_summary(model), "history": res.history,
               **extra}
    if cfg.parent:
        metrics["parent"] = cfg.parent
    if cfg.eval_timesteps:
        accs = accuracy_over_time(model, ctx.data.test, ctx.device, cfg.eval_timesteps, cfg.eval_batches)
        metrics["acc_vs_timesteps"] = {str(t): a for t, a in accs.items()}
    metrics.update(stage_energy_metrics(model, ctx.data.test, ctx.device, max_batches=energy_batches(cfg)))
    return model, metrics


def _rebalance(cfg: SnnStageConfig, ctx: Context, model: TwinNet) -> dict:
    """ABLATION, not in the reference code: threshold balancing at the stage's ``T`` before training."""
    rb = {"percentile": 99.7, "sim_timesteps": model.timesteps, "scaling": 1.0, **cfg.rebalance}
    calib = ctx.data.calibration_batch(rb.get("calib_batch_size")).to(ctx.device)
    ctx.log(f"  [{cfg.name}] ABLATION: re-balancing thresholds at T={model.timesteps} (not in the reference code)")
    balance_thresholds(model, calib, timesteps=rb["sim_timesteps"], percentile=rb["percentile"],
                       scaling=rb["scaling"], progress=ctx.progress, rescale_bias=False)
    return rb


@STAGES.register("snn")
class SnnStage(Stage):
    Config = SnnStageConfig

    @classmethod
    def inputs(cls, cfg) -> list[str]:
        teacher = distill_teacher(cfg)
        return [teacher] if teacher else []

    def run(self, ctx: Context) -> dict:
        model, metrics = train_snn(self, ctx)
        return self.finish(ctx, model, metrics)
