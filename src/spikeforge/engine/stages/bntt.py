"""The ``bntt`` stage: Batch Normalization Through Time (Kim & Panda, "Revisiting batch normalization for training
low-latency deep spiking neural networks from scratch", Front. Neurosci. 15:773954, 2021): train an SNN from scratch
with one batch norm per timestep, then the early-exit analysis (exit time from the learned gammas, accuracy against
exit time)."""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from spikeforge.config import Fraction, NonNegFloat, PosFloat, PosInt, config
from spikeforge.engine.distributed import info as dist_info
from spikeforge.engine.stages.base import STAGES, Context, SnnOverrides, samples
from spikeforge.engine.stages.snn import SnnStage, SnnStageConfig, train_snn
from spikeforge.engine.train import Milestone, TrainGroups, accuracy_over_time
from spikeforge.errors import ConfigError
from spikeforge.methods.bntt_exit import exit_time, gamma_profile, plot_gammas


def bntt_snn() -> dict:
    """The reference code's SNN settings: Poisson input (p = |x|/2), leak 0.95, threshold 1, mean readout."""
    return {"encoding": "poisson", "poisson_convention": "half", "readout": "mean", "leak": 0.95, "threshold": 1.0,
            "surrogate": "linear", "order": "integrate-fire", "reset": "soft"}


@config
class BnttStageConfig(SnnStageConfig):
    """BNTT: train a ``model.bntt`` SNN from scratch with batch norm through time.

    Reference recipe: SGD lr 0.3, momentum 0.9, weight decay 1e-4, lr / 10 at 50/70/90% of the epochs; Poisson
    input (p = |x|/2), leak 0.95 (CIFAR-10) or 0.99, threshold 1.0 fixed, mean readout (``snn`` keys given here
    replace those defaults one by one). After training, the early-exit time is chosen from the learned gammas
    (:func:`spikeforge.methods.bntt_exit.exit_time` with ``exit_threshold``), and accuracy against exit time
    (1..T) is recorded on the first ``exit_curve_batches`` test batches (None: ``eval_batches``).
    """

    kind: Literal["bntt"]  # type: ignore[assignment]
    init: Literal["previous", "scratch"] = "scratch"
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: PosFloat = 0.3
    momentum: Fraction = 0.9
    weight_decay: NonNegFloat = 1e-4
    schedule: Literal["none", "step", "cosine"] = "step"
    milestones: list[Milestone] = field(default_factory=lambda: [0.5, 0.7, 0.9])
    train: TrainGroups = field(default_factory=lambda: ["weights"])
    snn: SnnOverrides = field(default_factory=bntt_snn)
    exit_threshold: NonNegFloat = 0.1
    exit_curve_batches: PosInt | None = None

    def __post_init__(self) -> None:
        self.snn = {**bntt_snn(), **self.snn}
        super().__post_init__()


@STAGES.register("bntt")
class BnttStage(SnnStage):
    Config = BnttStageConfig

    def run(self, ctx: Context) -> dict:
        cfg = self.cfg
        if cfg.init == "scratch" and not ctx.recipe.model.bntt:
            raise ConfigError(f"stage {cfg.name!r} (bntt) needs a BNTT model: set model.bntt: true or use "
                              "vgg9_bntt / vgg11_bntt")
        model, metrics = train_snn(self, ctx)
        metrics["kind"] = "bntt"
        profile = gamma_profile(model)
        exit_at = exit_time(profile, cfg.exit_threshold)
        curve_batches = cfg.exit_curve_batches or cfg.eval_batches
        accs = accuracy_over_time(model, ctx.data.test, ctx.device, list(range(1, model.timesteps + 1)),
                                  curve_batches, ctx.progress)
        metrics.update({"gamma_profile": profile.tolist(), "exit_threshold": cfg.exit_threshold,
                        "exit_time": exit_at, "exit_acc": accs[exit_at],
                        "acc_vs_exit_time": {str(t): a for t, a in accs.items()},
                        "exit_curve_samples": samples(ctx, curve_batches)})
        ctx.log(f"  [{cfg.name}] early exit at t={exit_at} of {model.timesteps} (layer-mean gamma < "
                f"{cfg.exit_threshold:g} afterwards): acc {accs[exit_at]:.4f} vs {accs[model.timesteps]:.4f} at "
                f"T={model.timesteps}")
        if dist_info().is_main:
            plot_gammas(profile, ctx.stage_dir / "bntt_gamma.png", cfg.exit_threshold, exit_at, accs)
        return self.finish(ctx, model, metrics)
