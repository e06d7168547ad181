"""Recipes: a YAML file naming the data, the model and the stages of a run, validated on load.

Format (every key is checked; an unknown key or a bad value is one :class:`ConfigError` naming it)::

    name: mnist-quickstart            # free text
    seed: 0
    device: auto                      # auto | cpu | cuda | cuda:1
    data:  {dataset: mnist, batch_size: 128, ...}        # spikeforge.data.DataConfig
    model: {arch: vgg4, width: 0.5, hidden: [512]}       # spikeforge.models.ModelSpec (dataset fills the rest)
    snn:   {order: integrate-fire, reset: soft, ...}     # spikeforge.models.SNNConfig defaults for SNN stages
    stages:
      - {name: ann, kind: ann, epochs: 2, optimizer: adam, lr: 1.0e-3}
      - {name: convert, kind: convert, percentile: 99.7, scaling: 0.7, eval_timesteps: [8, 16, 32]}
      - {name: diet, kind: snn, timesteps: 5, train: [weights, threshold, leak], lr: 1.0e-4, epochs: 1}
      - {name: iir, kind: iir, timesteps: [4, 3, 2, 1], epochs: 1, lr: 1.0e-4}

Each stage's keys are the ``Config`` of its kind (:data:`spikeforge.engine.stages.STAGES`); an ``iir`` stage expands
into one ``snn`` sub-stage per timestep (``iir-T4``, ``iir-T3`` ...), each initialized from the previous one.
``--set key.path=value`` edits the recipe before validation (``stages.ann.epochs=1``: stages are addressed by name
or index). :func:`recipe_schema` is the JSON Schema of the format (``spikeforge schema``), for editors.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_type_hints

import yaml
from pydantic import ConfigDict, Field, create_model

from spikeforge.config import config, from_dict
from spikeforge.data import DataConfig, dataset_info
from spikeforge.engine.stages import STAGES, StageConfig
from spikeforge.errors import ConfigError
from spikeforge.models import MODELS, ModelSpec, SNNConfig

#: ``auto`` (CUDA if available), ``cpu``, ``cuda`` or ``cuda:N``.
Device = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$")]
#: The run's seed: 0 <= seed < 2**32 (every random source of the run derives from it).
Seed = Annotated[int, Field(ge=0, lt=2**32)]


@config
class RecipeKeys:
    """The top-level scalar keys of a recipe: ``name`` (free text; the default run directory), ``description``,
    ``seed`` (every random source of the run derives from it) and ``device``."""

    name: str = "run"
    description: str | None = None
    seed: Seed = 0
    device: Device = "auto"
    log: Literal["none", "tensorboard"] = "none"


def parse_stage(raw: Any, index: int) -> list[StageConfig]:
    """Validate one stage mapping against its kind's ``Config``; returns the configs it runs as (an ``iir`` stage
    expands into its ``snn`` sub-stages)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"stages[{index}] must be a mapping with 'name' and 'kind', got {raw!r}")
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in STAGES:
        raise ConfigError(f"stages[{index}].kind must be one of {STAGES.names()}, got {kind!r}")
    name = raw.get("name", kind)
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise ConfigError(f"stages[{index}].name must be a plain directory name, got {name!r}")
    stage = STAGES.get(kind)
    known = {f.name for f in fields(stage.Config)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in stage {name!r} (kind {kind}); allowed: {sorted(known)}")
    return stage.expand(from_dict(stage.Config, {**raw, "name": name}, f"stages.{name}"))


@dataclass
class Recipe:
    name: str
    seed: int
    device: str
    data: DataConfig
    model: ModelSpec
    snn: SNNConfig
    stages: list[StageConfig]
    source: dict
    log: str = "none"  # experiment logging (spikeforge.engine.tensorboard); not part of any fingerprint

    def stage_dicts(self) -> list[dict]:
        return [dataclasses.asdict(s) for s in self.stages]


TOP_KEYS = {"name", "description", "seed", "device", "log", "data", "model", "snn", "stages"}


def apply_overrides(raw: dict, sets: list[str]) -> dict:
    """Apply ``key.path=value`` edits (values parsed as YAML) to a raw recipe mapping."""
    raw = copy.deepcopy(raw)
    for item in sets or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key.path=value, got {item!r}")
        path, value = item.split("=", 1)
        try:
            val = yaml.safe_load(value)
        except yaml.YAMLError:
            val = value
        keys = path.strip().split(".")
        if not all(keys):
            raise ConfigError(f"--set {path}: empty key in the path; write key.path=value, e.g. stages.ann.epochs=2")
        node: Any = raw
        for i, k in enumerate(keys[:-1]):
            if isinstance(node, list):
                node = _find_stage(node, k, path)
            elif isinstance(node, dict):
                if k not in node or node[k] is None:
                    node[k] = {}
                node = node[k]
            else:
                raise ConfigError(f"--set {path}: {'.'.join(keys[:i])} is a value ({node!r}), not a section with "
                                  "keys")
        last = keys[-1]
        if isinstance(node, list):
            raise ConfigError(f"--set {path}: name a key inside the stage, e.g. stages.<name>.epochs")
        if not isinstance(node, dict):
            raise ConfigError(f"--set {path}: {'.'.join(keys[:-1])} is a value ({node!r}), not a section with keys")
        node[last] = val
    return raw


def _find_stage(stages: list, key: str, path: str) -> dict:
    for i, st in enumerate(stages):
        if isinstance(st, dict) and (st.get("name", st.get("kind")) == key or str(i) == key):
            return st
    names = [s.get("name", s.get("kind")) for s in stages if isinstance(s, dict)]
    raise ConfigError(f"--set {path}: no stage named {key!r}; stages are {names}")


def parse_recipe(raw: Any, where: str = "recipe") -> Recipe:
    """Validate a raw recipe mapping (from YAML) into a :class:`Recipe`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a YAML mapping with data, model and stages")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {unknown} in {where}; allowed: {sorted(TOP_KEYS)}")
    for key in ("data", "model", "stages"):
        if key not in raw:
            raise ConfigError(f"{where} has no '{key}' section")
    head = {k: raw[k] for k in ("name", "description", "seed", "device", "log") if k in raw}
    if "name" in head:
        head["name"] = str(head["name"])
    keys = from_dict(RecipeKeys, head, "recipe")
    if not isinstance(raw["data"], dict):
        raise ConfigError("data must be a mapping, e.g. {dataset: mnist}")
    data = from_dict(DataConfig, raw["data"], "data")
    info = dataset_info(data)
    frames = info.timesteps if info.kind == "events" else None
    model = _model_section(raw["model"], data)
    snn = _snn_section(raw.get("snn") or {}, frames)
    if not isinstance(raw["stages"], list) or not raw["stages"]:
        raise ConfigError("stages must be a non-empty list")
    stages: list[StageConfig] = []
    for i, st in enumerate(raw["stages"]):
        for cfg in parse_stage(st, i):
            if frames is not None:
                _event_stage(cfg, st, frames)
            stages.append(cfg)
    _check_stage_links(stages)
    return Recipe(keys.name, keys.seed, keys.device, data, model, snn, stages, raw, keys.log)


def _model_section(raw: Any, data: DataConfig) -> ModelSpec:
    """``model``: at least ``arch``; input channels, size, classes and normalization default to the dataset's."""
    if not isinstance(raw, dict) or "arch" not in raw:
        raise ConfigError("model must be a mapping with at least 'arch' (e.g. {arch: vgg5})")
    info = dataset_info(data)
    defaults = {"in_channels": info.in_channels, "input_size": info.image_size,
                "mean": list(info.mean), "std": list(info.std)}
    if info.num_classes:
        defaults["num_classes"] = info.num_classes
    if info.kind == "events":
        if raw.get("input", "events") != "events":
            raise ConfigError(f"model.input is {raw['input']!r}, but {data.dataset!r} is an event dataset: its model "
                              "reads event frames; remove model.input")
        defaults["input"] = "events"
    model = from_dict(ModelSpec, {**defaults, **raw}, "model")
    if model.arch not in MODELS:
        raise ConfigError(f"model.arch {model.arch!r} is unknown; available: {sorted(MODELS)}")
    return model


def _snn_section(raw: Any, frames: int | None) -> SNNConfig:
    """``snn``; with event data (``frames`` per sample) ``timesteps`` is the number of frames and ``encoding`` is
    ``events`` (set here; other values are refused with one line)."""
    if frames is None or not isinstance(raw, dict):
        return from_dict(SNNConfig, raw, "snn")
    if raw.get("timesteps", frames) != frames:
        raise ConfigError(f"snn.timesteps is {raw['timesteps']}, but the event data has {frames} frames per sample "
                          f"(data.timesteps): the model's T is the number of frames; set data.timesteps: "
                          f"{raw['timesteps']} or remove snn.timesteps")
    if raw.get("encoding", "events") != "events":
        raise ConfigError(f"snn.encoding is {raw['encoding']!r}, but event data enters the network as frames: use "
                          "snn.encoding: events (or leave it out)")
    return from_dict(SNNConfig, {**raw, "timesteps": frames, "encoding": "events"}, "snn")


def _event_stage(cfg: StageConfig, raw: dict, frames: int) -> None:
    """A stage on event data runs at the data's ``frames`` timesteps: its ``timesteps`` (and ``snn.timesteps``) must
    equal them, its ``sim_timesteps``/``eval_timesteps`` default to them and may not exceed them, and a kind's default
    input encoding (BNTT: Poisson) becomes ``events``. Image-only kinds are refused."""
    where = f"stages.{cfg.name}"
    if cfg.kind in ("attack", "stdp"):
        raise ConfigError(f"{where}: a {cfg.kind} stage works on images; it is not available for event data")
    overrides = getattr(cfg, "snn", None)
    overrides = overrides if isinstance(overrides, dict) else {}
    for key, value in (("timesteps", getattr(cfg, "timesteps", None)), ("snn.timesteps", overrides.get("timesteps"))):
        if isinstance(value, int) and value != frames:
            raise ConfigError(f"{where}.{key} is {value}, but the event data has {frames} frames per sample "
                              f"(data.timesteps): a model on event data runs T = {frames}")
    encoding = (raw.get("snn") or {}).get("encoding") if isinstance(raw.get("snn"), dict) else None
    if encoding not in (None, "events"):
        raise ConfigError(f"{where}.snn.encoding is {encoding!r}, but event data enters the network as frames: use "
                          "'events' (or leave it out)")
    if overrides.get("encoding", "events") != "events":
        cfg.snn = {**overrides, "encoding": "events"}
    if hasattr(cfg, "sim_timesteps"):
        if "sim_timesteps" not in raw:
            cfg.sim_timesteps = frames
        elif cfg.sim_timesteps > frames:
            raise ConfigError(f"{where}.sim_timesteps is {cfg.sim_timesteps}, more than the {frames} frames per "
                              "sample of the event data")
    points = getattr(cfg, "eval_timesteps", None)
    if points is not None and "eval_timesteps" not in raw:
        cfg.eval_timesteps = [frames]
    elif points is not None and max(points) > frames:
        raise ConfigError(f"{where}.eval_timesteps {points}: the event data has {frames} frames per sample; accuracy "
                          f"can be read at T <= {frames}")


def _check_stage_links(stages: list[StageConfig]) -> None:
    """Stage names are unique; ``source`` and the stages a stage reads (``black_box``, ``compare``) are earlier
    stages."""
    names = [s.name for s in stages]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"stage names must be unique; repeated: {dup}")
    for i, st in enumerate(stages):
        bb = getattr(st, "black_box", None)
        if bb is not None and bb not in names[:i]:
            raise ConfigError(f"stages.{st.name}.black_box must name an earlier stage; got {bb!r}")
        if st.source is not None and st.source not in names[:i]:
            raise ConfigError(f"stages.{st.name}.source must name an earlier stage; got {st.source!r} "
                              f"(earlier stages: {names[:i]})")
        for other in STAGES.get(st.kind).inputs(st):
            if other not in names[:i]:
                raise ConfigError(f"stages.{st.name} reads stage {other!r}, which must be an earlier stage "
                                  f"(earlier stages: {names[:i]})")


def recipe_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a recipe file: top-level keys, ``data``, ``model``, ``snn`` and every
    registered stage kind (a ``stages`` entry is chosen by its ``kind``), with the physical bounds of each key."""
    kinds = tuple(dict.fromkeys(STAGES.get(k).Config for k in STAGES.names()))
    try:
        stage = Annotated[Union[kinds], Field(discriminator="kind")]  # type: ignore[valid-type]
        create_model("Probe", stages=(list[stage], ...))
    except Exception:  # a user kind whose ``kind`` is not a Literal: no discriminator, plain union
        stage = Union[kinds]  # type: ignore[valid-type,assignment]
    hints = get_type_hints(RecipeKeys, include_extras=True)
    top = {f.name: (hints[f.name], f.default) for f in fields(RecipeKeys)}
    model = create_model("Recipe", __config__=ConfigDict(extra="forbid"), **top, data=(DataConfig, ...),
                         model=(ModelSpec, ...), snn=(SNNConfig | None, None),
                         stages=(Annotated[list[stage], Field(min_length=1)], ...))  # type: ignore[valid-type]
    schema = model.model_json_schema()
    spec = schema["properties"]["model"]
    spec = schema["$defs"][spec["$ref"].rsplit("/", 1)[1]] if "$ref" in spec else spec
    spec["required"] = ["arch"]  # the rest defaults from the dataset
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "spikeforge recipe", **schema}


def load_recipe(path: str | Path, sets: list[str] | None = None) -> Recipe:
    """Read a YAML recipe file, apply ``--set`` edits and validate it."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"recipe {path} is a directory; give a recipe YAML file, e.g. recipes/mnist-quickstart.yaml")
    if not p.is_file():
        bundled = Path(__file__).resolve().parents[3] / "recipes" / p.name
        if bundled.is_file():
            p = bundled
        else:
            raise ConfigError(f"recipe {path} not found (give a path to a YAML file, e.g. recipes/mnist-quickstart.yaml)")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"recipe {p} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          "save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"recipe {p} cannot be read: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {p} is not valid YAML: {' '.join(str(exc).split())}") from None
    return parse_recipe(apply_overrides(raw or {}, sets or []), where=f"recipe {p.name}")
