"""The run: every stage of a recipe in order, each reading the previous stage's checkpoint and writing its own.

A stage directory with both ``model.pt`` and ``metrics.json`` is finished and is skipped on a rerun; an interrupted
stage resumes from its ``last.pt``. ``summary.json`` lists the finished stages' metrics in order; ``recipe.json``
records the recipe so that a rerun into the same directory with a different recipe is refused.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from spikeforge.data import build_data
from spikeforge.engine.checkpoint import MODEL_FILE, RESUME_FILE, atomic_write_json
from spikeforge.engine.distributed import barrier, local_batch_size
from spikeforge.engine.distributed import info as dist_info
from spikeforge.engine.stages.base import METRICS_FILE, STAGES, Context, light
from spikeforge.engine.train import seed_everything
from spikeforge.errors import ConfigError


def stage_finished(stage_dir: Path) -> bool:
    return (stage_dir / METRICS_FILE).is_file() and (stage_dir / MODEL_FILE).is_file()


def run(recipe, out_dir: Path, *, device: torch.device, data=None, progress: bool = True,
        on_stage_end: Callable[[dict], None] | None = None) -> dict:
    """Run (or resume) every stage of ``recipe`` (a :class:`~spikeforge.engine.recipe.Recipe`) into ``out_dir``;
    returns the summary."""
    out_dir = Path(out_dir)
    dinfo = dist_info()
    if dinfo.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        check_same_recipe(recipe, out_dir)
    barrier()
    data = data if data is not None else _build_data(recipe, device)
    if recipe.data.dataset == "imagefolder" and "num_classes" not in (recipe.source.get("model") or {}):
        recipe.model.num_classes = data.num_classes  # discovered from the class folders
    summary = {"recipe": recipe.name, "stages": []}
    previous, previous_metrics = None, None
    done: dict[str, tuple[Path, dict]] = {}
    for index, cfg in enumerate(recipe.stages):
        if cfg.source is not None:
            previous, previous_metrics = done[cfg.source]
        stage = STAGES.get(cfg.kind)(cfg)
        sdir = out_dir / cfg.name
        if stage_finished(sdir):
            metrics = json.loads((sdir / METRICS_FILE).read_text())
            if progress and dinfo.is_main:
                tqdm.write(f"[{cfg.name}] already finished (test acc {metrics.get('test_acc', float('nan')):.4f}); "
                           "skipping")
        else:
            if progress and dinfo.is_main:
                tqdm.write(f"[{cfg.name}] {cfg.kind} stage" + (" (resuming)" if (sdir / RESUME_FILE).exists() else ""))
            sdir.mkdir(parents=True, exist_ok=True)
            ctx = Context(recipe, out_dir, sdir, index, previous, previous_metrics, data, device,
                          progress and dinfo.is_main)
            seed_everything(recipe.seed, index, 10**6)  # model initialization is reproducible per stage
            metrics = stage.run(ctx)
        summary["stages"].append(light(metrics))
        if dinfo.is_main:
            atomic_write_json(out_dir / "summary.json", summary)
        if on_stage_end:
            on_stage_end(metrics)
        previous, previous_metrics = sdir / MODEL_FILE, metrics
        done[cfg.name] = (previous, previous_metrics)
    return summary


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


def _field_defaults(cls) -> dict:
    """JSON-ready defaults of a config dataclass's fields that have one."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return json.loads(json.dumps(out))


def recipe_record(recipe) -> dict:
    """What ``recipe.json`` holds: the model, data, seed, SNN defaults and every stage's config (JSON-ready)."""
    return json.loads(json.dumps({"model": recipe.model.to_dict(), "data": dataclasses.asdict(recipe.data),
                                  "seed": recipe.seed, "snn": recipe.snn.to_dict(), "stages": recipe.stage_dicts()}))


def check_same_recipe(recipe, out_dir: Path) -> None:
    """Refuse to resume into a directory written by a different recipe (finished stages would not match). Keys
    added since a run directory was written count as their defaults."""
    path = out_dir / "recipe.json"
    current = recipe_record(recipe)
    try:
        old = json.loads(path.read_text()) if path.exists() else None
    except json.JSONDecodeError:
        old = None
    if old is not None:
        for part, cls in (("model", type(recipe.model)), ("snn", type(recipe.snn))):
            if isinstance(old.get(part), dict):  # keys added in later versions: absent means their default
                old[part] = {**_field_defaults(cls), **old[part]}
        for part in ("model", "seed", "snn"):
            if old.get(part) != current[part]:
                raise ConfigError(f"{out_dir} holds a run of a different recipe ({part} differs); "
                                  "use another --out directory or delete this one")
        for i, (a, b) in enumerate(zip(old.get("stages", []), current["stages"])):
            if isinstance(a, dict):
                a = {**_field_defaults(type(recipe.stages[i])), **a}
            if a != b and stage_finished(out_dir / b["name"]):
                raise ConfigError(f"{out_dir}: finished stage {b['name']!r} was run with other settings; "
                                  "use another --out directory or delete that stage's directory")
        ignore = ("data_dir", "workers")
        if {k: v for k, v in old.get("data", {}).items() if k not in ignore} != \
                {k: v for k, v in current["data"].items() if k not in ignore}:
            raise ConfigError(f"{out_dir} holds a run with other data settings; use another --out directory")
    atomic_write_json(path, current)
