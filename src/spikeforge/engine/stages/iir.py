"""The ``iir`` stage: IIR-SNN (Chowdhury, Rathi & Roy, "One timestep is all you need: training spiking neural networks
with ultra low latency", arXiv:2110.05929, 2021): iterative initialization and retraining, lowering ``T`` one
sub-stage at a time (e.g. 5 -> 4 -> 3 -> 2 -> 1), each starting from the previous one's weights, thresholds and
leaks. The entry expands into one ``snn`` sub-stage per timestep (``iir-T4``, ``iir-T3`` ...).
"""

from __future__ import annotations

import copy
from dataclasses import field, fields
from typing import Annotated, Literal, Union

from pydantic import Discriminator, Tag

from spikeforge.config import PosFloat, PosInt, config, from_dict
from spikeforge.engine.stages.base import STAGES, StageConfig
from spikeforge.engine.stages.snn import SnnStage, SnnStageConfig
from spikeforge.errors import ConfigError


def _one_or_list(v) -> str:
    return "lax-list" if isinstance(v, list) else "lax-one"


def per_substage(t):
    """One value for every sub-stage, or a list with one value per timestep (validated element by element). The
    tags are named so that error messages show only the key and index."""
    return Annotated[Union[Annotated[list[t], Tag("lax-list")], Annotated[t, Tag("lax-one")]],
                     Discriminator(_one_or_list)]


#: ``epochs``, ``lr`` and ``max_batches`` of an ``iir`` stage: one value, or one per timestep.
Epochs = per_substage(PosInt)
LearningRate = per_substage(PosFloat)
MaxBatches = per_substage(PosInt | None)


@config
class IirStageConfig(SnnStageConfig):
    """IIR-SNN: one ``snn`` sub-stage per entry of ``timesteps`` (strictly decreasing, default [5, 4, 3, 2, 1]),
    each initialized from the previous one's weights, thresholds and leaks. ``epochs``, ``lr`` and ``max_batches``
    may be lists (one value per sub-stage); every other key applies to every sub-stage."""

    kind: Literal["iir"]  # type: ignore[assignment]
    timesteps: list[PosInt] = field(default_factory=lambda: [5, 4, 3, 2, 1])  # type: ignore[assignment]
    epochs: Epochs = 1  # type: ignore[assignment]
    lr: LearningRate = 1e-4  # type: ignore[assignment]
    max_batches: MaxBatches = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        super().__post_init__()
        steps = self.timesteps
        if not steps or any(a <= b for a, b in zip(steps, steps[1:])):
            raise ConfigError(f"{self.where}.timesteps must be a non-empty, strictly decreasing list such as "
                              f"[5, 4, 3, 2, 1], got {steps!r}")
        for key in ("epochs", "lr", "max_batches"):
            v = getattr(self, key)
            if isinstance(v, list) and len(v) != len(steps):
                raise ConfigError(f"{self.where}.{key} has {len(v)} values for {len(steps)} timesteps; give one "
                                  "value, or one per timestep")

    def per_stage(self, key: str) -> list:
        v = getattr(self, key)
        return v if isinstance(v, list) else [v] * len(self.timesteps)


@STAGES.register("iir")
class IirStage(SnnStage):
    """Never runs itself: :meth:`expand` turns it into ``snn`` sub-stages (run by :class:`SnnStage`)."""

    Config = IirStageConfig

    @classmethod
    def expand(cls, cfg: IirStageConfig) -> list[StageConfig]:
        base = {f.name: getattr(cfg, f.name) for f in fields(SnnStageConfig)}
        subs = []
        for i, (t, ep, lr, cap) in enumerate(zip(cfg.timesteps, cfg.per_stage("epochs"), cfg.per_stage("lr"),
                                                 cfg.per_stage("max_batches"))):
            raw = {**copy.deepcopy(base), "name": f"{cfg.name}-T{t}", "kind": "snn", "timesteps": t, "epochs": ep,
                   "lr": lr, "max_batches": cap, "parent": cfg.name, "source": cfg.source if i == 0 else None}
            subs.append(from_dict(SnnStageConfig, raw, f"{cfg.where} (T={t})"))
        return subs
