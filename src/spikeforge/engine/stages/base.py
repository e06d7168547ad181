"""The stage abstraction: one kind of step of a run (train an ANN, convert it, train an SNN, attack it ...).

A kind is a :class:`Stage` subclass registered in :data:`STAGES` from its own module, with

* ``Config``: its recipe keys, a :func:`~spikeforge.config.config` class (types and physical bounds checked when the
  recipe is loaded, one error line naming the key), derived from :class:`StageConfig` (keys every stage has) or
  :class:`TrainStageConfig` (plus the optimizer keys of :class:`~spikeforge.engine.train.OptimConfig`);
* ``expand(cfg)``: the configs the recipe entry runs as (one, or several such as IIR's per-timestep sub-stages);
* ``run(ctx)``: do the work and return :meth:`Stage.finish`'s metrics.

:meth:`Stage.finish` is the one way a stage ends: ``model.pt`` (the :mod:`~spikeforge.engine.checkpoint` format), then
``metrics.json`` (which marks the stage finished), then the resume file ``last.pt`` is removed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, ClassVar

import torch
from pydantic.json_schema import WithJsonSchema
from tqdm.auto import tqdm

from spikeforge.config import NonNegInt, PosInt, config, from_dict, json_schema
from spikeforge.data import DATASETS
from spikeforge.engine.checkpoint import (METRICS_FILE, MODEL_FILE, RESUME_FILE, atomic_write_json, load_checkpoint,
                                         save_checkpoint)
from spikeforge.engine.distributed import barrier
from spikeforge.engine.distributed import info as dist_info
from spikeforge.engine.train import OptimConfig
from spikeforge.errors import ConfigError
from spikeforge.models import SNNConfig, TwinNet
from spikeforge.registry import Registry


def keys_of(cls, *, drop: tuple[str, ...] = ()) -> Any:
    """The type of a recipe mapping holding some keys of config ``cls`` (kept as a plain mapping, checked by the
    stage), whose JSON Schema lists ``cls``'s keys so editors can complete them."""
    schema = json_schema(cls)
    if "$defs" in schema:  # nested definitions cannot be inlined; describe it as any mapping
        return dict[str, Any]
    props = {k: v for k, v in schema.get("properties", {}).items() if k not in drop}
    return Annotated[dict[str, Any], WithJsonSchema({"type": "object", "properties": props,
                                                      "additionalProperties": False})]


#: SNNConfig overrides of a stage (``snn:``), e.g. ``{leak: 0.99, order: fire-integrate, timesteps: 5}``.
SnnOverrides = keys_of(SNNConfig)


@config
class StageConfig:
    """Keys shared by every stage. ``kind``: the registered stage kind; ``name``: its directory in the run (default:
    the kind); ``source``: the earlier stage whose model this one starts from (default: the stage right before it),
    so one ANN can feed several conversions; ``eval_batches``: test batches evaluated (None: all)."""

    kind: str
    name: str | None = None
    eval_batches: PosInt | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        if self.name is None:
            self.name = self.kind

    @property
    def where(self) -> str:
        """The key prefix of this stage in error messages: ``stages.<name>``."""
        return f"stages.{self.name}"


@config
class TrainStageConfig(OptimConfig, StageConfig):
    """A training stage: the optimizer keys (:class:`~spikeforge.engine.train.OptimConfig`), ``epochs``,
    ``max_batches`` (training batches per epoch, None: all), ``eval_every`` (test after every n-th epoch; 0: only
    after the last) and ``amp`` (bfloat16 autocast on CUDA)."""

    epochs: PosInt = 1
    max_batches: PosInt | None = None
    eval_every: NonNegInt = 1
    amp: bool = False

    def optim(self) -> OptimConfig:
        """The optimizer keys of this stage as an :class:`OptimConfig`."""
        return OptimConfig(**{f.name: getattr(self, f.name) for f in fields(OptimConfig)})


def stage_timesteps(cfg, recipe_snn: SNNConfig) -> int:
    """A stage's ``T``, the same rule for every kind: its ``timesteps`` key, else its ``snn.timesteps``, else the
    recipe's ``snn.timesteps``."""
    return getattr(cfg, "timesteps", None) or (getattr(cfg, "snn", None) or {}).get("timesteps") \
        or recipe_snn.timesteps


def snn_overrides(cfg) -> dict:
    """A stage's ``snn`` overrides without ``timesteps`` (see :func:`stage_timesteps`)."""
    return {k: v for k, v in (getattr(cfg, "snn", None) or {}).items() if k != "timesteps"}


def check_section(cls, data: dict | None, where: str):
    """Build config ``cls`` from a mapping nested in a stage (e.g. ``stages.<name>.net``): the checks of its keys
    and values, with every error starting with the full key path ``where``."""
    try:
        return from_dict(cls, data, where)
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def check_snn_overrides(cfg) -> None:
    """``snn`` overrides must be valid SNNConfig keys and values (one error naming ``stages.<name>.snn...``)."""
    if cfg.snn:
        check_section(SNNConfig, {**SNNConfig().to_dict(), **cfg.snn}, f"{cfg.where}.snn")


@dataclass
class Context:
    """What a stage gets: the recipe, where to write, the previous checkpoint, the data and the device."""

    recipe: Any
    out_dir: Path
    stage_dir: Path
    index: int
    previous: Path | None
    previous_metrics: dict | None
    data: Any
    device: torch.device
    progress: bool = True
    fingerprint: str | None = None  # the stage's fingerprint (spikeforge.engine.stages.records)
    logger: Any = None  # the run's experiment logger (spikeforge.engine.tensorboard), or None

    def epoch_hook(self, stage: str, model: Any):
        """``fit``'s ``on_epoch_end`` for the run's logger (None when the recipe logs nothing)."""
        if self.logger is None:
            return None
        return self.logger.epoch_hook(stage, model, self.data.test, self.device)

    def log(self, msg: str) -> None:
        if self.progress:
            tqdm.write(msg)


STAGES: Registry[type["Stage"]] = Registry("stage kind")


class Stage:
    """One kind of stage (see the module docstring). Subclasses set ``Config`` and implement :meth:`run`."""

    Config: ClassVar[type[StageConfig]] = StageConfig
    #: The recipe sections whose values this kind's results depend on (part of its fingerprint, besides its own
    #: keys, its position and its inputs).
    recipe_sections: ClassVar[tuple[str, ...]] = ("model", "snn", "data", "seed")

    def __init__(self, cfg: StageConfig):
        self.cfg = cfg

    @classmethod
    def expand(cls, cfg: StageConfig) -> list[StageConfig]:
        """The stage configs this recipe entry runs as (default: itself)."""
        return [cfg]

    @classmethod
    def inputs(cls, cfg) -> list[str]:
        """Earlier stages whose results this stage reads besides its parent (``source``, else the stage before it);
        a change to any of them invalidates this stage's result."""
        return []

    def run(self, ctx: Context) -> dict:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared machinery
    def header(self, ctx: Context, extra: dict | None = None) -> dict:
        """The checkpoint header: stage, kind, recipe, dataset, the stage's config and fingerprint."""
        cfg = self.cfg
        head = {"stage": cfg.name, "kind": cfg.kind, "recipe": ctx.recipe.name, "dataset": ctx.recipe.data.dataset,
                "stage_config": dataclasses.asdict(cfg)}
        if ctx.fingerprint:
            head["fingerprint"] = ctx.fingerprint
        data = ctx.recipe.data
        if DATASETS[data.dataset].kind == "events":  # what rebuilds the same frames for `eval`, `energy`, `explain`
            head["data"] = {"timesteps": data.timesteps, "events": dataclasses.asdict(data.events)}
        return {**head, **(extra or {})}

    def load_previous(self, ctx: Context) -> tuple[TwinNet, dict]:
        if ctx.previous is None:
            raise ConfigError(f"stage {self.cfg.name!r} ({self.cfg.kind}) needs a previous stage's model; "
                              "put a training stage before it in the recipe")
        return load_checkpoint(ctx.previous)

    def header_metrics(self, metrics: dict) -> dict:
        """The metrics copied into the checkpoint header (without the per-epoch history)."""
        return light(metrics)

    def finish(self, ctx: Context, model: torch.nn.Module, metrics: dict, header: dict | None = None) -> dict:
        """Write the stage's ``model.pt`` then ``metrics.json`` (which marks the stage finished) and remove the
        resume file; rank 0 only. Returns the metrics with ``stage``, ``kind`` and ``timesteps`` first."""
        cfg = self.cfg
        metrics = {"stage": cfg.name, "kind": metrics.pop("kind", cfg.kind),
                   "timesteps": model.timesteps if getattr(model, "spiking", False) else None, **metrics}
        if dist_info().is_main:
            head = {**(header if header is not None else self.header(ctx)), "metrics": self.header_metrics(metrics)}
            save_checkpoint(ctx.stage_dir / MODEL_FILE, model, head)
            atomic_write_json(ctx.stage_dir / METRICS_FILE, metrics)
            if ctx.logger is not None:
                ctx.logger.stage_end(cfg.name, metrics)
            resume = ctx.stage_dir / RESUME_FILE
            if resume.exists():
                resume.unlink()
        barrier()
        return metrics


def light(metrics: dict) -> dict:
    """Metrics without the per-epoch ``history`` (what ``summary.json`` and checkpoint headers hold)."""
    return {k: v for k, v in metrics.items() if k not in ("history",)}


def snn_summary(model: TwinNet) -> dict:
    return {"thresholds": model.thresholds(), "leaks": model.leaks()}


def samples(ctx: Context, batches: int | None) -> int:
    """Test samples in the first ``batches`` test batches (None: all)."""
    size = ctx.data.test.dataset_size
    return size if batches is None else min(size, batches * ctx.data.test.batch_size)


def energy_batches(cfg, steps: int = 1) -> int:
    """Spike rates for the energy estimate come from a few test batches (they vary little between batches)."""
    return min(cfg.eval_batches or 2, 2 if steps <= 32 else 1)


__all__ = ["METRICS_FILE", "STAGES", "Context", "SnnOverrides", "Stage", "StageConfig", "TrainStageConfig",
           "check_section", "check_snn_overrides", "energy_batches", "keys_of", "light", "samples", "snn_overrides", "snn_summary",
           "stage_timesteps"]
