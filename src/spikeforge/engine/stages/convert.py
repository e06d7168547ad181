"""The ``convert`` stage: ANN-to-SNN conversion by threshold balancing (Sengupta et al., "Going deeper in spiking
neural networks: VGG and residual architectures", Front. Neurosci. 13:95, 2019; the percentile variant of Rueckauer
et al. 2017 as used by Rathi & Roy 2020, DIET-SNN, and Chowdhury et al. 2021, IIR-SNN), then accuracy against ``T``.
"""

from __future__ import annotations

import time
from dataclasses import field
from typing import Annotated, Literal

from pydantic import Field

from spikeforge.analysis.energy import stage_energy_metrics
from spikeforge.analysis.monitor import SpikeMonitor
from spikeforge.config import PosFloat, PosInt, config
from spikeforge.engine.stages.base import (STAGES, Context, SnnOverrides, Stage, StageConfig, check_snn_overrides,
                                           energy_batches, samples, snn_overrides, snn_summary, stage_timesteps)
from spikeforge.engine.train import accuracy_over_time, evaluate
from spikeforge.errors import ConfigError
from spikeforge.methods.convert import ann_to_snn, balance_thresholds

#: Percentile of the activations a threshold is set to: 100 = the maximum (Sengupta et al. 2019), 99.7 (DIET-SNN),
#: 90 (IIR-SNN).
Percentile = Annotated[float, Field(gt=0, le=100)]


@config
class ConvertStageConfig(StageConfig):
    """Threshold balancing of the SNN twin of the previous stage's ANN.

    ``sim_timesteps``: steps simulated per layer during balancing; ``percentile`` in (0, 100]: 100 = max (hybrid),
    99.7 (DIET), 90 (IIR); ``scaling``: multiplies every threshold at the end; ``calib_batch_size``: training images
    used; ``timesteps``: T of the saved SNN (else ``snn.timesteps``, else the recipe's); ``eval_timesteps``:
    accuracy against T (one simulation) on the first ``curve_batches`` test batches (None: the same images as
    ``test_acc``); ``snn``: SNNConfig overrides (e.g. ``{leak: 0.99, order: fire-integrate}``).

    The metrics say how many images each number is measured on (``test_samples`` for ``test_acc``,
    ``curve_samples`` for ``acc_vs_timesteps``): with ``curve_batches`` set, the curve's point at the stage's own T
    is measured on fewer images than ``test_acc`` and can differ from it by several points at small T, where a
    converted SNN's accuracy is far from settled and not even monotone in T (a neuron's first spikes arrive only once
    its membrane has integrated up to threshold, layer after layer; the accumulated quantization of the rate code,
    the "unevenness" error of Bu et al., ICLR 2022, changes sign from one T to the next).
    """

    kind: Literal["convert"]
    sim_timesteps: PosInt = 100
    percentile: Percentile = 99.7
    scaling: PosFloat = 1.0
    calib_batch_size: PosInt = 512
    timesteps: PosInt | None = None
    eval_timesteps: list[PosInt] = field(default_factory=lambda: [16, 32, 64])
    curve_batches: PosInt | None = None
    snn: SnnOverrides = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_snn_overrides(self)


@STAGES.register("convert")
class ConvertStage(Stage):
    Config = ConvertStageConfig

    def run(self, ctx: Context) -> dict:
        cfg, t0 = self.cfg, time.time()
        ann, head = self.load_previous(ctx)
        if ann.spiking:
            raise ConfigError(f"stage {cfg.name!r} converts an ANN, but the previous stage ({head.get('stage')}) "
                              "holds an SNN; put the convert stage right after an 'ann' stage")
        steps = stage_timesteps(cfg, ctx.recipe.snn)
        snn = self._balanced(ctx, ann, steps)
        ann_acc = (ctx.previous_metrics or {}).get("test_acc")
        if ann_acc is None:
            ann_acc = evaluate(ann, ctx.data.test, ctx.device, max_batches=cfg.eval_batches)["acc"]
        eval_steps = sorted(set(cfg.eval_timesteps) | {steps})
        curve_batches = cfg.curve_batches or cfg.eval_batches
        same = curve_batches == cfg.eval_batches
        # One simulation of max(T) steps gives the accuracy at every T (and the spike counts at the stage's T).
        with SpikeMonitor(snn) as mon:
            first = accuracy_over_time(snn, ctx.data.test, ctx.device, eval_steps if same else [steps],
                                       cfg.eval_batches, ctx.progress)
        accs = first if same else accuracy_over_time(snn, ctx.data.test, ctx.device, eval_steps, curve_batches,
                                                     ctx.progress)
        for t in eval_steps:
            ctx.log(f"  [{cfg.name}] T={t:5d}: test acc {accs[t]:.4f}  (ANN {ann_acc:.4f})")
        return self.finish(ctx, snn, {
            "test_acc": first[steps], "ann_acc": ann_acc, "epochs": 0, "seconds": time.time() - t0,
            "acc_vs_timesteps": {str(t): a for t, a in accs.items()}, "curve_samples": samples(ctx, curve_batches),
            "test_samples": samples(ctx, cfg.eval_batches),
            "spike_rate": _spike_rate(mon, steps), "percentile": cfg.percentile, "scaling": cfg.scaling,
            **snn_summary(snn),
            **stage_energy_metrics(snn, ctx.data.test, ctx.device, max_batches=energy_batches(cfg, steps))})

    def _balanced(self, ctx: Context, ann, steps: int):
        """The SNN twin of ``ann`` at ``steps`` timesteps with balanced thresholds."""
        cfg = self.cfg
        snn_cfg = ctx.recipe.snn.updated(**snn_overrides(cfg), timesteps=steps)
        calib = ctx.data.calibration_batch(cfg.calib_batch_size).to(ctx.device)
        ann.to(ctx.device)
        snn = ann_to_snn(ann, snn_cfg, example=calib[:2]).to(ctx.device)
        ctx.log(f"  [{cfg.name}] balancing thresholds on {len(calib)} images, {cfg.sim_timesteps} steps, "
                f"percentile {cfg.percentile}, scaling {cfg.scaling}")
        balance_thresholds(snn, calib, timesteps=cfg.sim_timesteps, percentile=cfg.percentile,
                           scaling=cfg.scaling, progress=ctx.progress)
        return snn


def _spike_rate(mon: SpikeMonitor, steps: int) -> dict:
    """Spikes per neuron over the stage's ``T`` steps, per layer and their neuron-weighted mean."""
    rates = {k: v * steps for k, v in mon.rates(per_step=True).items()}
    tot = sum(mon.neurons[k] for k in rates)
    return {**rates, "mean": sum(rates[k] * mon.neurons[k] for k in rates) / tot if tot else 0.0}
