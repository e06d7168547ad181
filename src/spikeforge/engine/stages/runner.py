"""The run: every stage of a recipe in order, each reading the previous stage's checkpoint and writing its own.

A run directory holds one directory per stage, ``recipe.json`` (the recipe of the latest run), ``summary.json`` and
the report. A ``spikeforge run`` into it:

1. takes the directory's lock (:class:`~spikeforge.engine.lock.RunLock`): a second run into it is refused;
2. plans: each stage is *reused* (finished and its record matches, see :mod:`~spikeforge.engine.stages.records`),
   *resumed* (interrupted, ``last.pt`` and a matching record) or *run* afresh. A finished or interrupted stage whose
   record does not match (other settings, or built on a stage that is re-run now) stops the run before anything is
   written, with one error naming the differing keys: ``--restart STAGE`` (``restart=``) redoes that stage and every
   later one, or use another ``--out``;
3. cleans up what killed runs leave (``.*.tmp`` files, a stale ``last.pt`` beside a finished stage), discards the
   results of the stages that run afresh, migrates records rebuilt from an old ``recipe.json`` into ``stage.json``
   files, and records the recipe;
4. runs the stages in order; each writes its record first, and is finished once ``model.pt`` then ``metrics.json``
   are written (:meth:`~spikeforge.engine.stages.base.Stage.finish`).

``summary.json`` is derived from the stage directories: the metrics (without history) of the recipe's finished
stages in recipe order, rewritten atomically after every stage, so a failing rerun never shrinks it. Its last entry,
the last finished stage, is the run's result (what ``spikeforge eval RUN_DIR`` evaluates).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from spikeforge.data import build_data
from spikeforge.engine.checkpoint import MODEL_FILE, RESUME_FILE, atomic_write_json, load_raw
from spikeforge.engine.distributed import barrier, local_batch_size
from spikeforge.engine.distributed import info as dist_info
from spikeforge.engine.lock import RunLock
from spikeforge.engine.tensorboard import make_logger
from spikeforge.engine.stages.base import METRICS_FILE, STAGES, Context, StageConfig, light
from spikeforge.engine.stages.records import (RECORD_FILE, LegacyRecords, Record, RecordError, differences,
                                              fingerprint, read_record, stage_config, stage_inputs, write_record)
from spikeforge.engine.train import seed_everything
from spikeforge.errors import CheckpointError, ConfigError, SpikeforgeError

SUMMARY_FILE = "summary.json"
RECIPE_FILE = "recipe.json"


class StageFailed(SpikeforgeError):
    """A stage stopped on a numerical failure (its loss diverged)."""


def stage_finished(stage_dir: Path) -> bool:
    return (stage_dir / METRICS_FILE).is_file() and (stage_dir / MODEL_FILE).is_file()


def read_metrics(stage_dir: Path) -> dict:
    """A finished stage's ``metrics.json``; an unreadable one is a :class:`RecordError`."""
    path = stage_dir / METRICS_FILE
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
        metrics = None
    if not isinstance(metrics, dict):
        raise RecordError(f"{path} is corrupt, so the result of stage {stage_dir.name!r} is unknown; rerun with "
                          f"--restart {stage_dir.name} to redo it (and every later stage)")
    return metrics


@dataclass
class Step:
    """One stage of a planned run: ``status`` is ``reuse``, ``resume`` or ``run``; ``record`` the record it has
    (reuse, resume) or will write (run); ``inputs`` the stages whose results it reads."""

    cfg: StageConfig
    index: int
    status: str
    record: Record
    inputs: list[str]

    @property
    def name(self) -> str:
        return self.cfg.name


def restart_index(recipe, restart: str | None) -> int | None:
    """The position of the stage ``--restart`` names (a stage, or an ``iir`` entry: its first sub-stage)."""
    if restart is None:
        return None
    for i, cfg in enumerate(recipe.stages):
        if restart in (cfg.name, getattr(cfg, "parent", None)):
            return i
    raise ConfigError(f"--restart {restart!r}: no such stage; the recipe's stages are "
                      f"{[s.name for s in recipe.stages]}")


def current_config(recipe, cfg: StageConfig, index: int) -> dict:
    """The effective configuration of stage ``cfg`` of ``recipe`` (see :func:`records.stage_config`)."""
    return stage_config(dataclasses.asdict(cfg), index, seed=recipe.seed, model=recipe.model.to_dict(),
                        snn=recipe.snn.to_dict(), data=dataclasses.asdict(recipe.data))


def plan_run(recipe, out_dir: str | Path, restart: str | None = None) -> list[Step]:
    """Decide, without writing anything, what each stage of ``recipe`` does in ``out_dir``; raises
    :class:`RecordError` (one line naming the stage, the differing keys and the choices) when a finished or
    interrupted stage does not match the recipe."""
    out_dir = Path(out_dir)
    first = restart_index(recipe, restart)
    legacy = LegacyRecords(out_dir)
    steps: dict[str, Step] = {}
    for index, cfg in enumerate(recipe.stages):
        previous = recipe.stages[index - 1].name if index else None
        deps = [d for d in stage_inputs(cfg, previous) if d in steps]
        inputs = {d: steps[d].record.fingerprint for d in deps}
        config = current_config(recipe, cfg, index)
        step = Step(cfg, index, "run", Record(fingerprint(config, inputs), config, inputs), deps)
        sdir = out_dir / cfg.name
        if (first is None or index < first) and (stage_finished(sdir) or (sdir / RESUME_FILE).exists()):
            _match(step, sdir, legacy, steps)
        steps[cfg.name] = step
    return list(steps.values())


def _match(step: Step, sdir: Path, legacy: LegacyRecords, steps: dict[str, Step]) -> None:
    """Reuse or resume ``step`` from ``sdir`` if its record matches (sets status and record), else raise."""
    name, finished = step.name, stage_finished(sdir)
    what = "finished" if finished else "interrupted (it would resume from last.pt)"
    choices = f"rerun with --restart {name} to redo it and every later stage, or use another --out directory"
    old = read_record(sdir) or legacy.get(name)
    if old is None:
        raise RecordError(f"{sdir.parent}: stage {name!r} is {what} but the settings it was run with were not "
                          f"recorded (no {name}/{RECORD_FILE}, no entry in {RECIPE_FILE}); {choices}")
    diffs = differences(old.config, step.record.config, type(step.cfg), name)
    if diffs:
        more = f"; and {len(diffs) - 4} more" if len(diffs) > 4 else ""
        raise RecordError(f"{sdir.parent}: stage {name!r} is {what} with other settings "
                          f"({'; '.join(diffs[:4])}{more}); {choices}")
    for dep in step.inputs:
        if steps[dep].status != "reuse":
            again = "resumed" if steps[dep].status == "resume" else "run again"
            raise RecordError(f"{sdir.parent}: stage {name!r} is {what}, but stage {dep!r}, whose result it was "
                              f"built on, has to be {again}; rerun with --restart {dep} to redo {dep!r} and every "
                              "later stage, or use another --out directory")
    if old.inputs != step.record.inputs:
        raise RecordError(f"{sdir.parent}: stage {name!r} is {what} but was built on other results of "
                          f"{sorted(old.inputs) or 'no stage'} (now {sorted(step.inputs) or 'no stage'}); {choices}")
    if finished:
        read_metrics(sdir)
    fp = None if old.legacy else old.fingerprint
    _check_checkpoint(sdir / (MODEL_FILE if finished else RESUME_FILE), name, fp)
    step.status, step.record = ("reuse" if finished else "resume"), old


def _check_checkpoint(path: Path, name: str, fp: str | None) -> None:
    """A checkpoint a rerun relies on (``model.pt`` of a reused stage, ``last.pt`` of a resumed one) must be readable
    and belong to the stage: its header's stage, and fingerprint ``fp`` when both are known. Its tensors are mapped,
    not read."""
    try:
        head = load_raw(path, mmap=True)["header"]
    except CheckpointError as exc:
        why = str(exc).split("; rerun the stage that wrote it")[0]
        raise RecordError(f"{why}; rerun with --restart {name} to redo stage {name!r} (and every later stage), or use "
                          "another --out directory") from None
    if head.get("stage", name) != name or (fp is not None and head.get("fingerprint", fp) != fp):
        raise RecordError(f"{path} does not belong to stage {name!r} as recorded (its header names stage "
                          f"{head.get('stage')!r} and other settings); rerun with --restart {name} to redo it, or use "
                          "another --out directory")


def _clean(out_dir: Path, steps: list[Step]) -> None:
    """Remove what killed runs leave behind, and the results of the stages that run afresh."""
    for folder in [out_dir] + [out_dir / s.name for s in steps]:
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
    for step in reversed(steps):  # later stages first: an interruption never leaves one built on a discarded one
        sdir = out_dir / step.name
        if step.status == "reuse":
            (sdir / RESUME_FILE).unlink(missing_ok=True)  # stale: killed after the stage finished
        elif step.status == "run" and sdir.is_dir():
            for name in (METRICS_FILE, MODEL_FILE, RESUME_FILE, RECORD_FILE):  # the finish marker first
                (sdir / name).unlink(missing_ok=True)


def prepare(recipe, out_dir: Path, steps: list[Step]) -> None:
    """After a successful plan: clean up, migrate rebuilt records, record the recipe, derive the summary."""
    _clean(out_dir, steps)
    for step in steps:
        if step.status != "run" and not step.record.stored:  # rebuilt from recipe.json: keep it with the stage
            write_record(out_dir / step.name, step.name, step.record)
    atomic_write_json(out_dir / RECIPE_FILE, recipe_record(recipe))
    write_summary(recipe, out_dir)


def derive_summary(recipe, out_dir: Path) -> dict:
    """The summary from the stage directories: the metrics (without history) of the recipe's finished stages, in
    recipe order."""
    stages = []
    for cfg in recipe.stages:
        if stage_finished(out_dir / cfg.name):
            metrics = light(read_metrics(out_dir / cfg.name))
            metrics.setdefault("stage", cfg.name)
            stages.append(metrics)
    return json.loads(json.dumps({"recipe": recipe.name, "stages": stages}))


def write_summary(recipe, out_dir: Path) -> dict:
    """Derive ``summary.json`` (:func:`derive_summary`) and write it atomically; returns it."""
    summary = derive_summary(recipe, out_dir)
    atomic_write_json(out_dir / SUMMARY_FILE, summary)
    return summary


def run(recipe, out_dir: Path, *, device: torch.device, data=None, progress: bool = True,
        on_stage_end: Callable[[dict], None] | None = None, restart: str | None = None,
        on_run_end: Callable[[Path, dict], None] | None = None) -> dict:
    """Run (or resume) every stage of ``recipe`` (a :class:`~spikeforge.engine.recipe.Recipe`) into ``out_dir``;
    ``restart``: redo this stage and every later one; ``on_run_end(out_dir, summary)``: called on rank 0 at the end,
    still holding the directory's lock (e.g. to write the report). Returns the summary."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file; the run directory must be a directory (new, or an earlier run's)")
    main = dist_info().is_main
    with RunLock(out_dir) if main else contextlib.nullcontext():
        if main:  # refuse a mismatching directory before loading any data
            plan_run(recipe, out_dir, restart)
        data = data if data is not None else _build_data(recipe, device)
        if recipe.data.dataset == "imagefolder" and "num_classes" not in (recipe.source.get("model") or {}):
            recipe.model.num_classes = data.num_classes  # discovered from the class folders
        if main:
            prepare(recipe, out_dir, plan_run(recipe, out_dir, restart))
        barrier()  # under torchrun the other ranks plan from the prepared directory
        steps = plan_run(recipe, out_dir, restart)
        barrier()
        logger = make_logger(getattr(recipe, "log", "none"), out_dir) if main else None
        try:
            summary = _run_steps(recipe, out_dir, steps, data, device, progress, on_stage_end, logger)
        finally:
            if logger is not None:
                logger.close()
        if on_run_end is not None and main:
            on_run_end(out_dir, summary)
        return summary


def _run_steps(recipe, out_dir: Path, steps: list[Step], data, device, progress: bool, on_stage_end,
               logger=None) -> dict:
    main = dist_info().is_main
    previous, previous_metrics = None, None
    done: dict[str, tuple[Path, dict]] = {}
    for step in steps:
        cfg = step.cfg
        if cfg.source is not None:
            previous, previous_metrics = done[cfg.source]
        sdir = out_dir / cfg.name
        if step.status == "reuse":
            metrics = read_metrics(sdir)
            if progress and main:
                acc = metrics.get("test_acc")
                tqdm.write(f"[{cfg.name}] already finished"
                           + (f" (test acc {acc:.4f})" if isinstance(acc, (int, float)) else "") + "; skipping")
        else:
            ctx = Context(recipe, out_dir, sdir, step.index, previous, previous_metrics, data, device,
                          progress and main, step.record.fingerprint, logger)
            metrics = _run_stage(step, ctx)
            if main:
                write_summary(recipe, out_dir)
        if on_stage_end:
            on_stage_end(metrics)
        previous, previous_metrics = sdir / MODEL_FILE, metrics
        done[cfg.name] = (previous, previous_metrics)
    return derive_summary(recipe, out_dir)


def _run_stage(step: Step, ctx: Context) -> dict:
    cfg = step.cfg
    ctx.stage_dir.mkdir(parents=True, exist_ok=True)
    if dist_info().is_main and step.status == "run":
        write_record(ctx.stage_dir, cfg.name, step.record)  # before any work: what this directory is computed from
    if ctx.progress:
        tqdm.write(f"[{cfg.name}] {cfg.kind} stage" + (" (resuming)" if step.status == "resume" else ""))
    seed_everything(ctx.recipe.seed, step.index, 10**6)  # model initialization is reproducible per stage
    try:
        return STAGES.get(cfg.kind)(cfg).run(ctx)
    except (FloatingPointError, OverflowError) as exc:
        what = str(exc).split(";")[0].strip() or type(exc).__name__
        key = f"stages.{getattr(cfg, 'parent', None) or cfg.name}.lr"
        raise StageFailed(f"stage {cfg.name!r} diverged ({what}); earlier stages are kept. Lower its learning rate "
                          f"and redo it: --set {key}=<smaller> --restart {cfg.name}") from None


def _build_data(recipe, device):
    """The recipe's data; under torchrun each rank trains on its shard with the per-rank batch size, and evaluates
    on the whole test set (split by batch)."""
    dinfo = dist_info()
    if not dinfo.enabled:
        return build_data(recipe.data, device=device, seed=recipe.seed)
    local = dataclasses.replace(recipe.data, batch_size=local_batch_size(recipe.data.batch_size, dinfo.world_size))
    data = build_data(local, device=device, seed=recipe.seed, rank=dinfo.rank, world_size=dinfo.world_size)
    data.test = build_data(recipe.data, device=device, seed=recipe.seed).test
    return data


def recipe_record(recipe) -> dict:
    """What ``recipe.json`` holds: the model, data, seed, SNN defaults and every stage's config (JSON-ready)."""
    return json.loads(json.dumps({"model": recipe.model.to_dict(), "data": dataclasses.asdict(recipe.data),
                                  "seed": recipe.seed, "snn": recipe.snn.to_dict(), "stages": recipe.stage_dicts()},
                                 default=repr))


def check_same_recipe(recipe, out_dir: Path) -> None:
    """Refuse a run directory whose finished or interrupted stages do not match ``recipe`` (see :func:`plan_run`),
    then record the recipe in its ``recipe.json``."""
    out_dir = Path(out_dir)
    plan_run(recipe, out_dir)
    atomic_write_json(out_dir / RECIPE_FILE, recipe_record(recipe))


__all__ = ["RECIPE_FILE", "SUMMARY_FILE", "StageFailed", "Step", "check_same_recipe", "derive_summary", "plan_run",
           "prepare",
           "read_metrics", "recipe_record", "restart_index", "run", "stage_finished", "write_summary"]
