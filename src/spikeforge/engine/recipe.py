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

An ``iir`` stage expands into one ``snn`` sub-stage per timestep (``iir-T4``, ``iir-T3`` ...), each initialized from
the previous one. ``--set key.path=value`` edits the recipe before validation (``stages.ann.epochs=1``: stages are
addressed by name or index).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from spikeforge.data import DATASETS, DataConfig
from spikeforge.engine.train import OptimConfig
from spikeforge.errors import ConfigError
from spikeforge.models import ModelSpec, SNNConfig

_OPTIM_FIELDS = {f.name for f in fields(OptimConfig)}


@dataclass
class StageConfig:
    """Keys shared by every stage. ``source``: the earlier stage whose model this one starts from (default: the
    stage right before it), so one ANN can feed several conversions."""

    name: str
    kind: str
    eval_batches: int | None = None
    source: str | None = None

    def optim(self) -> OptimConfig:
        return OptimConfig(**{k: getattr(self, k) for k in _OPTIM_FIELDS if hasattr(self, k)})


@dataclass
class TrainKeys:
    """Optimizer keys a training stage accepts (see :class:`~spikeforge.engine.train.OptimConfig`)."""

    epochs: int = 1
    max_batches: int | None = None
    eval_every: int = 1
    amp: bool = False
    optimizer: str = "adam"
    lr: float = 1e-3
    threshold_lr: float | None = None
    leak_lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = False
    amsgrad: bool = False
    weight_decay: float = 0.0
    schedule: str = "cosine"
    milestones: list[float] = field(default_factory=lambda: [0.6, 0.8, 0.9])
    gamma: float = 0.1
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    train: list[str] = field(default_factory=lambda: ["weights"])


@dataclass
class AnnStage(TrainKeys, StageConfig):
    """Train the ANN twin (weights only)."""


@dataclass
class ConvertStage(StageConfig):
    """Threshold balancing of the SNN twin of the previous stage's ANN (methods.md §1.8).

    ``sim_timesteps``: steps simulated per layer during balancing; ``percentile``: 100 = max (hybrid), 99.7 (DIET),
    90 (IIR); ``scaling``: multiplies every threshold at the end; ``calib_batch_size``: training images used;
    ``timesteps``: T of the saved SNN; ``eval_timesteps``: accuracy against T (one simulation) on the first
    ``curve_batches`` test batches (None: all); ``snn``: SNNConfig
    overrides (e.g. ``{leak: 0.99, order: fire-integrate}``).
    """

    sim_timesteps: int = 100
    percentile: float = 99.7
    scaling: float = 1.0
    calib_batch_size: int = 512
    timesteps: int | None = None
    eval_timesteps: list[int] = field(default_factory=lambda: [16, 32, 64])
    curve_batches: int | None = None
    snn: dict = field(default_factory=dict)


@dataclass
class SnnStage(TrainKeys, StageConfig):
    """BPTT training of the SNN at ``timesteps`` (hybrid/STDB, DIET-SNN, IIR sub-stages, BNTT).

    ``init``: ``previous`` (the previous stage's model: SNN, or ANN weights with default thresholds) or ``scratch``.
    ``snn``: SNNConfig overrides (encoding, surrogate, leak, order ...). ``rebalance``: ABLATION, not in the
    reference code: re-run threshold balancing at this stage's T before training (a mapping with ``percentile``,
    ``sim_timesteps``, ``scaling``). ``eval_timesteps``: also report accuracy at these T after training.
    """

    timesteps: int | None = None
    init: str = "previous"
    snn: dict = field(default_factory=dict)
    rebalance: dict | None = None
    eval_timesteps: list[int] | None = None
    lr: float = 1e-4
    train: list[str] = field(default_factory=lambda: ["weights", "threshold", "leak"])
    parent: str | None = None


@dataclass
class IirStage(SnnStage):
    """IIR-SNN (Chowdhury et al.): one ``snn`` sub-stage per entry of ``timesteps`` (default [5, 4, 3, 2, 1]),
    each initialized from the previous one's weights, thresholds and leaks. ``epochs``, ``lr`` and ``max_batches``
    may be lists (one value per sub-stage)."""

    timesteps: list[int] = field(default_factory=lambda: [5, 4, 3, 2, 1])  # type: ignore[assignment]
    epochs: Any = 1
    lr: Any = 1e-4
    max_batches: Any = None


def _bntt_snn() -> dict:
    return {"encoding": "poisson", "poisson_convention": "half", "readout": "mean", "leak": 0.95, "threshold": 1.0,
            "surrogate": "linear", "order": "integrate-fire", "reset": "soft"}


@dataclass
class BnttStage(SnnStage):
    """BNTT (Kim & Panda, methods.md §7.3): train a ``model.bntt`` SNN from scratch with batch norm through time.

    Reference recipe: SGD lr 0.3, momentum 0.9, weight decay 1e-4, lr / 10 at 50/70/90% of the epochs; Poisson
    input (p = |x|/2), leak 0.95 (CIFAR-10) or 0.99, threshold 1.0 fixed, mean readout. After training, the
    early-exit time is chosen from the learned gammas (:func:`spikeforge.nn.bntt.exit_time` with
    ``exit_threshold``), and accuracy against exit time (1..T) is recorded.
    """

    init: str = "scratch"
    optimizer: str = "sgd"
    lr: float = 0.3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.7, 0.9])
    train: list[str] = field(default_factory=lambda: ["weights"])
    snn: dict = field(default_factory=_bntt_snn)
    exit_threshold: float = 0.1
    exit_curve_batches: int | None = None


@dataclass
class AttackStage(StageConfig):
    """Robustness of the previous (or ``source``) stage's model (Sharmin et al.; see :mod:`spikeforge.analysis.attacks`).

    ``attack``: fgsm, pgd or eotpgd; ``eps``: list of values (numbers or "8/255" strings); ``black_box``: name of an
    earlier stage whose model crafts transfer attacks; ``noise``: Gaussian sigmas; ``snn``: evaluate a variant of an
    SNN without retraining (``timesteps``, ``encoding``, ``poisson_convention``, ``poisson_rate``, ``leak``: every
    layer's leak set to this value); ``batches``: test batches used (None: the whole test set).
    """

    attack: str = "pgd"
    eps: list = field(default_factory=lambda: ["2/255", "4/255", "8/255"])
    steps: int = 7
    alpha: float | None = None
    eot_iter: int = 4
    noise: list = field(default_factory=list)
    black_box: str | None = None
    grad_estimator: str = "auto"
    surrogate: Any = None
    snn: dict = field(default_factory=dict)
    batches: int | None = None


ATTACK_SNN_KEYS = {"timesteps", "encoding", "poisson_convention", "poisson_rate", "leak"}

REBALANCE_KEYS = {"percentile", "sim_timesteps", "scaling", "calib_batch_size"}

STAGE_KINDS: dict[str, type[StageConfig]] = {"ann": AnnStage, "convert": ConvertStage, "snn": SnnStage,
                                             "iir": IirStage, "attack": AttackStage, "bntt": BnttStage}


def register_stage_kind(kind: str, config_cls: type[StageConfig]) -> None:
    """Add a stage kind (its config dataclass); pair it with :func:`spikeforge.engine.stages.register_runner`."""
    STAGE_KINDS[kind] = config_cls


def _typecheck(obj, where: str) -> None:
    for f in fields(obj):
        v = getattr(obj, f.name)
        t = str(f.type)
        if v is None:
            if "None" not in t and f.default is not None and t not in ("Any",):
                raise ConfigError(f"{where}.{f.name} must not be null")
            continue
        if t.startswith("int") and not (isinstance(v, int) and not isinstance(v, bool)):
            raise ConfigError(f"{where}.{f.name} must be an integer, got {v!r}")
        if t.startswith("float") and isinstance(v, str):
            try:  # YAML 1.1 reads 1e-3 (no dot) as a string
                v = float(v)
                setattr(obj, f.name, v)
            except ValueError:
                pass
        if t.startswith("float") and not (isinstance(v, (int, float)) and not isinstance(v, bool)):
            raise ConfigError(f"{where}.{f.name} must be a number, got {v!r}")
        if t.startswith("bool") and not isinstance(v, bool):
            raise ConfigError(f"{where}.{f.name} must be true or false, got {v!r}")
        if t.startswith("str") and not isinstance(v, str):
            raise ConfigError(f"{where}.{f.name} must be a string, got {v!r}")
        if t.startswith("list") and not isinstance(v, list):
            raise ConfigError(f"{where}.{f.name} must be a list, got {v!r}")
        if t.startswith("dict") and not isinstance(v, dict):
            raise ConfigError(f"{where}.{f.name} must be a mapping, got {v!r}")


def config_from_dict(cls, d: dict | None, where: str):
    """Build config dataclass ``cls`` from a mapping: unknown keys and wrongly typed values are one ConfigError
    naming them (``where`` says which part of the recipe)."""
    if d is not None and not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping, got {d!r}")
    d = dict(d or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(known)}")
    try:
        obj = cls(**d)
    except (TypeError, ValueError) as exc:  # e.g. a string where __post_init__ compares or converts a number
        raise ConfigError(f"{where}: bad value ({exc}); check the types of {sorted(d)}") from None
    _typecheck(obj, where)
    return obj


def _positive(where: str, v, allow_none=True, minimum: int = 1, hint: str = ""):
    """An integer >= ``minimum`` (None allowed when ``allow_none``), else one ConfigError naming the key."""
    if v is None and allow_none:
        return
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{where} must be {what}{hint}, got {v!r}")


def parse_stage(raw: Any, index: int) -> list[StageConfig]:
    """Validate one stage mapping; an ``iir`` stage expands into its ``snn`` sub-stages."""
    if not isinstance(raw, dict):
        raise ConfigError(f"stages[{index}] must be a mapping with 'name' and 'kind', got {raw!r}")
    kind = raw.get("kind")
    if kind not in STAGE_KINDS:
        raise ConfigError(f"stages[{index}].kind must be one of {sorted(STAGE_KINDS)}, got {kind!r}")
    name = raw.get("name", kind)
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ConfigError(f"stages[{index}].name must be a plain directory name, got {name!r}")
    cls = STAGE_KINDS[kind]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in stage {name!r} (kind {kind}); allowed: {sorted(known)}")
    where = f"stages.{name}"
    try:
        st = cls(**{**raw, "name": name})
    except ConfigError:
        raise
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if kind != "iir":
        _typecheck(st, where)
    for key in ("epochs", "max_batches", "eval_batches", "sim_timesteps", "calib_batch_size", "curve_batches"):
        if hasattr(st, key) and kind != "iir":
            _positive(f"{where}.{key}", getattr(st, key),
                      allow_none=key in ("max_batches", "eval_batches", "curve_batches"))
    if hasattr(st, "eval_every"):
        _positive(f"{where}.eval_every", st.eval_every, allow_none=False, minimum=0,
                  hint=" (0: test only after the last epoch)")
    if hasattr(st, "timesteps") and kind != "iir":
        _positive(f"{where}.timesteps", st.timesteps)
    if isinstance(st, ConvertStage):
        if not 0 < st.percentile <= 100:
            raise ConfigError(f"{where}.percentile must be in (0, 100], got {st.percentile!r}")
        if st.scaling <= 0:
            raise ConfigError(f"{where}.scaling must be positive, got {st.scaling!r}")
        for t in st.eval_timesteps:
            _positive(f"{where}.eval_timesteps[]", t)
    if isinstance(st, BnttStage):
        if st.exit_threshold < 0:
            raise ConfigError(f"{where}.exit_threshold must be >= 0, got {st.exit_threshold!r}")
        _positive(f"{where}.exit_curve_batches", st.exit_curve_batches)
        st.snn = {**_bntt_snn(), **st.snn}
    if isinstance(st, SnnStage) and st.init not in ("previous", "scratch"):
        raise ConfigError(f"{where}.init must be 'previous' or 'scratch', got {st.init!r}")
    if isinstance(st, AttackStage):
        _check_attack_stage(st, where)
    if isinstance(st, SnnStage) and st.rebalance is not None:
        unknown = sorted(set(st.rebalance) - REBALANCE_KEYS)
        if unknown:
            raise ConfigError(f"{where}.rebalance: unknown key(s) {unknown}; allowed: {sorted(REBALANCE_KEYS)}")
    if isinstance(st, (SnnStage, ConvertStage)) and st.snn:
        try:
            SNNConfig().updated(**{k: v for k, v in st.snn.items() if k != "timesteps"})
        except ConfigError as exc:
            raise ConfigError(f"{where}.snn: {exc}") from None
    if isinstance(st, (AnnStage, SnnStage)) and kind != "iir":
        try:
            st.optim()
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if kind != "iir":
        return [st]
    return _expand_iir(st, where)


def _check_attack_stage(st: AttackStage, where: str) -> None:
    from spikeforge.analysis.attacks import parse_values

    if st.attack not in ("fgsm", "pgd", "eotpgd"):
        raise ConfigError(f"{where}.attack must be fgsm, pgd or eotpgd, got {st.attack!r}")
    if st.grad_estimator not in ("auto", "bptt", "sharmin"):
        raise ConfigError(f"{where}.grad_estimator must be auto, bptt or sharmin, got {st.grad_estimator!r}")
    try:
        st.eps = parse_values(",".join(str(e) for e in st.eps), f"{where}.eps") if st.eps else []
        st.noise = parse_values(",".join(str(e) for e in st.noise), f"{where}.noise", high=10.0) if st.noise else []
    except ConfigError:
        raise
    unknown = sorted(set(st.snn) - ATTACK_SNN_KEYS)
    if unknown:
        raise ConfigError(f"{where}.snn: unknown key(s) {unknown}; allowed: {sorted(ATTACK_SNN_KEYS)}")
    for key in ("steps", "eot_iter"):
        _positive(f"{where}.{key}", getattr(st, key), allow_none=False)
    _positive(f"{where}.batches", st.batches)


def _expand_iir(st: IirStage, where: str) -> list[StageConfig]:
    steps = st.timesteps
    if not isinstance(steps, list) or not steps:
        raise ConfigError(f"{where}.timesteps must be a non-empty list such as [5, 4, 3, 2, 1], got {steps!r}")
    for t in steps:
        _positive(f"{where}.timesteps[]", t)

    def per_stage(key):
        v = getattr(st, key)
        if isinstance(v, list):
            if len(v) != len(steps):
                raise ConfigError(f"{where}.{key} has {len(v)} values for {len(steps)} timesteps")
            return v
        return [v] * len(steps)

    epochs, lrs, caps = per_stage("epochs"), per_stage("lr"), per_stage("max_batches")
    subs = []
    base = {f.name: getattr(st, f.name) for f in fields(SnnStage)}
    for i, (t, ep, lr, cap) in enumerate(zip(steps, epochs, lrs, caps)):
        raw = {**copy.deepcopy(base), "name": f"{st.name}-T{t}", "kind": "snn", "timesteps": t, "epochs": ep,
               "lr": lr, "max_batches": cap, "parent": st.name, "source": st.source if i == 0 else None}
        sub = SnnStage(**raw)
        _typecheck(sub, f"{where} (T={t})")
        _positive(f"{where}.epochs", sub.epochs)
        _positive(f"{where}.max_batches", sub.max_batches)
        try:
            sub.optim()
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        subs.append(sub)
    return subs


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

    def stage_dicts(self) -> list[dict]:
        return [dataclasses.asdict(s) for s in self.stages]


TOP_KEYS = {"name", "description", "seed", "device", "data", "model", "snn", "stages"}


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
        node: Any = raw
        for i, k in enumerate(keys[:-1]):
            if isinstance(node, list):
                node = _find_stage(node, k, path)
            else:
                if k not in node or node[k] is None:
                    node[k] = {}
                node = node[k]
        last = keys[-1]
        if isinstance(node, list):
            raise ConfigError(f"--set {path}: name a key inside the stage, e.g. stages.<name>.epochs")
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
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    device = raw.get("device", "auto")
    if not isinstance(device, str) or not (device in ("auto", "cpu") or device.startswith("cuda")):
        raise ConfigError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    if not isinstance(raw["data"], dict):
        raise ConfigError("data must be a mapping, e.g. {dataset: mnist}")
    data = DataConfig.from_dict(raw["data"])
    info = DATASETS[data.dataset]
    if not isinstance(raw["model"], dict) or "arch" not in raw["model"]:
        raise ConfigError("model must be a mapping with at least 'arch' (e.g. {arch: vgg5})")
    mraw = dict(raw["model"])
    defaults = {"in_channels": info.in_channels, "input_size": data.image_size or info.image_size,
                "mean": list(info.mean), "std": list(info.std)}
    if info.num_classes:
        defaults["num_classes"] = info.num_classes
    for k, v in defaults.items():
        mraw.setdefault(k, v)
    model = ModelSpec.from_dict(mraw, where="model")
    from spikeforge.models import MODELS

    if model.arch not in MODELS:
        raise ConfigError(f"model.arch {model.arch!r} is unknown; available: {sorted(MODELS)}")
    snn_raw = raw.get("snn") or {}
    if not isinstance(snn_raw, dict):
        raise ConfigError("snn must be a mapping of SNNConfig keys")
    snn = SNNConfig.from_dict(snn_raw, where="snn")
    if not isinstance(raw["stages"], list) or not raw["stages"]:
        raise ConfigError("stages must be a non-empty list")
    stages: list[StageConfig] = []
    for i, st in enumerate(raw["stages"]):
        stages.extend(parse_stage(st, i))
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
    return Recipe(str(raw.get("name", "run")), seed, device, data, model, snn, stages, raw)


def load_recipe(path: str | Path, sets: list[str] | None = None) -> Recipe:
    """Read a YAML recipe file, apply ``--set`` edits and validate it."""
    p = Path(path)
    if not p.is_file():
        bundled = Path(__file__).resolve().parents[3] / "recipes" / p.name
        if bundled.is_file():
            p = bundled
        else:
            raise ConfigError(f"recipe {path} not found (give a path to a YAML file, e.g. recipes/mnist-quickstart.yaml)")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {p} is not valid YAML: {exc}") from None
    return parse_recipe(apply_overrides(raw or {}, sets or []), where=f"recipe {p.name}")
