"""Stages and the run: :class:`~spikeforge.engine.stages.base.Stage` (one kind of step), the kinds (each registers
itself in :data:`STAGES` from its own module: ``ann``, ``convert``, ``snn``, ``iir``, ``bntt``, ``attack``,
``stdp``) and :func:`run`."""

from spikeforge.engine.stages import ann, attack, bntt, convert, iir, snn, stdp  # noqa: F401  (register the kinds)
from spikeforge.engine.stages.base import (METRICS_FILE, STAGES, Context, Stage, StageConfig, TrainStageConfig,
                                           stage_timesteps)
from spikeforge.engine.stages.records import RecordError
from spikeforge.engine.stages.runner import StageFailed, check_same_recipe, plan_run, run, stage_finished
from spikeforge.engine.train import accuracy_over_time

__all__ = ["METRICS_FILE", "STAGES", "Context", "RecordError", "Stage", "StageConfig", "StageFailed",
           "TrainStageConfig", "accuracy_over_time", "check_same_recipe", "plan_run", "run", "stage_finished",
           "stage_timesteps"]
