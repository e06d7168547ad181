"""The ``ann`` stage: train the ANN twin (weights only), the starting point of ANN-to-SNN conversion."""

from __future__ import annotations

from typing import Literal

from spikeforge.config import config
from spikeforge.engine.stages.base import STAGES, Context, Stage, TrainStageConfig
from spikeforge.engine.train import fit
from spikeforge.models import build_model


@config
class AnnStageConfig(TrainStageConfig):
    """Train the ANN twin of the recipe's model (weights only)."""

    kind: Literal["ann"]


@STAGES.register("ann")
class AnnStage(Stage):
    Config = AnnStageConfig
    recipe_sections = ("model", "data", "seed")  # the recipe's snn section does not touch the ANN

    def run(self, ctx: Context) -> dict:
        cfg, r = self.cfg, ctx.recipe
        model = build_model(r.model)
        res = fit(model, ctx.data, cfg.optim(), epochs=cfg.epochs, stage_dir=ctx.stage_dir, device=ctx.device,
                  seed=r.seed, stage_index=ctx.index, header=self.header(ctx), max_batches=cfg.max_batches,
                  eval_batches=cfg.eval_batches, eval_every=cfg.eval_every, amp=cfg.amp, progress=ctx.progress,
                  desc=cfg.name, on_epoch_end=ctx.epoch_hook(cfg.name, model))
        return self.finish(ctx, model, {"test_acc": res.final_eval["acc"], "epochs": cfg.epochs,
                                        "seconds": res.seconds, "history": res.history})
