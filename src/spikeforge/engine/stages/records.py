"""Stage records and fingerprints: what a stage of a run directory was computed from.

Every stage directory holds ``stage.json``, written before the stage starts work::

    {"format": 1, "stage": "diet", "fingerprint": "9f3c...", "inputs": {"convert": "51ab..."}, "config": {...}}

``config`` is the stage's full effective configuration: its own keys (defaults included), its position in the
recipe (which seeds it), the seed, the data identity (the ``data`` section without ``data_dir``, ``workers`` and
``download``, which do not change results) and the recipe sections its kind reads (``model``, ``snn``; an ``ann``
stage does not read ``snn``). ``inputs`` are the fingerprints of the stages it reads (its parent: ``source`` or the
stage before it, plus e.g. an attack's ``black_box``). The fingerprint hashes both, so it chains as in make or DVC:
changing a stage changes the fingerprint of every stage built on it.

A rerun reuses a finished stage, or resumes an interrupted one, only when its record matches: same configuration
(keys added to spikeforge since the record was written count as their defaults) and same inputs. Run directories
written before records existed have none; their record is rebuilt from the run's ``recipe.json`` (the recipe they
were run with), so they keep resuming and skipping when the recipe is the same.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from spikeforge.data import DataConfig
from spikeforge.engine.stages.base import STAGES
from spikeforge.errors import ConfigError
from spikeforge.models import ModelSpec, SNNConfig
from spikeforge.utils import atomic_write_json

RECORD_FILE = "stage.json"
RECORD_FORMAT = 1
#: ``data`` keys that do not change what a stage computes.
DATA_KEYS_IGNORED = ("data_dir", "workers", "download")
SECTION_CLASSES = {"model": ModelSpec, "snn": SNNConfig, "data": DataConfig}


class RecordError(ConfigError):
    """A run directory's records do not allow a safe reuse or resume (mismatch, corrupt or missing record)."""


@dataclass
class Record:
    """A stage's record: its fingerprint, configuration and inputs. ``legacy``: rebuilt from ``recipe.json`` (for a
    run directory written before records existed; kept in ``stage.json`` as ``"rebuilt": true``); ``stored``: read
    from ``stage.json``."""

    fingerprint: str
    config: dict
    inputs: dict[str, str] = field(default_factory=dict)
    legacy: bool = False
    stored: bool = False

    def to_json(self, name: str) -> dict:
        out = {"format": RECORD_FORMAT, "stage": name, "fingerprint": self.fingerprint, "inputs": self.inputs,
               "config": self.config}
        if self.legacy:
            out["rebuilt"] = True
        return out


def jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, keys strings, tensors lists)."""

    def fallback(o):
        if hasattr(o, "tolist"):
            return o.tolist()
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return dataclasses.asdict(o)
        return repr(o)

    return json.loads(json.dumps(obj, sort_keys=True, default=fallback))


def data_identity(data: dict) -> dict:
    return {k: v for k, v in data.items() if k not in DATA_KEYS_IGNORED}


def stage_config(stage: dict, index: int, *, seed: Any, model: Any, snn: Any, data: Any) -> dict:
    """The effective configuration of stage ``stage`` (a stage-config mapping) at position ``index``."""
    kind = stage.get("kind")
    cls = STAGES.get(kind) if isinstance(kind, str) and kind in STAGES else None
    sections = cls.recipe_sections if cls is not None else ("model", "snn", "data", "seed")
    out: dict[str, Any] = {"stage": stage, "index": index}
    values = {"seed": seed, "model": model, "snn": snn, "data": data_identity(data) if isinstance(data, dict) else data}
    out.update({k: values[k] for k in sections})
    return jsonable(out)


def fingerprint(config: dict, inputs: dict[str, str]) -> str:
    """SHA-256 of a stage's configuration and its inputs' fingerprints (canonical JSON)."""
    text = json.dumps({"config": config, "inputs": dict(sorted(inputs.items()))}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def stage_inputs(cfg: Any, previous: str | None) -> list[str]:
    """The stages whose results stage ``cfg`` reads: its parent (``source``, else the stage before it) and what its
    kind names (:meth:`Stage.inputs <spikeforge.engine.stages.base.Stage.inputs>`)."""
    parent = getattr(cfg, "source", None) or previous
    kind = getattr(cfg, "kind", None)
    cls = STAGES.get(kind) if isinstance(kind, str) and kind in STAGES else None
    extra = cls.inputs(cfg) if cls is not None else []
    return list(dict.fromkeys(n for n in [parent, *extra] if isinstance(n, str) and n))


def read_record(stage_dir: Path) -> Record | None:
    """The record in ``stage_dir/stage.json`` (None if absent); a corrupt one is a :class:`RecordError`."""
    path = stage_dir / RECORD_FILE
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        ok = isinstance(raw, dict) and isinstance(raw.get("fingerprint"), str) and isinstance(raw.get("config"), dict) \
            and isinstance(raw.get("inputs"), dict) and isinstance(raw["config"].get("stage"), dict)
    except (OSError, ValueError) as exc:
        raise RecordError(f"{path} cannot be read ({type(exc).__name__}); {_cannot_tell(stage_dir)}") from None
    if not ok:
        raise RecordError(f"{path} is not a stage record; {_cannot_tell(stage_dir)}")
    return Record(raw["fingerprint"], raw["config"], {str(k): str(v) for k, v in raw["inputs"].items()},
                  legacy=raw.get("rebuilt") is True, stored=True)


def _cannot_tell(stage_dir: Path) -> str:
    return (f"the settings stage {stage_dir.name!r} was run with are unknown. Rerun with --restart {stage_dir.name} "
            "to redo it (and every later stage), or use another --out directory")


def write_record(stage_dir: Path, name: str, record: Record) -> None:
    atomic_write_json(stage_dir / RECORD_FILE, record.to_json(name))


class LegacyRecords:
    """Records rebuilt from a run's ``recipe.json`` (run directories written before ``stage.json`` existed)."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.path = out_dir / "recipe.json"
        self._old: dict | None = None
        self._cache: dict[str, Record | None] = {}

    def _recipe(self) -> dict:
        if self._old is None:
            self._old = self._load()
        return self._old

    def _load(self) -> dict:
        if not self.path.exists():
            return {}
        try:
            old = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RecordError(f"{self.path} is corrupt ({type(exc).__name__}), so the settings the finished stages "
                              "were run with are unknown; restore it, rerun with --restart STAGE, or use another "
                              "--out directory") from None
        if not isinstance(old, dict) or not isinstance(old.get("stages"), list):
            raise RecordError(f"{self.path} is not a spikeforge recipe record; restore it, rerun with --restart "
                              "STAGE, or use another --out directory")
        return old

    def get(self, name: str) -> Record | None:
        if name not in self._cache:
            self._cache[name] = None  # guards against a cycle in a hand-edited file
            self._cache[name] = self._build(name)
        return self._cache[name]

    def _build(self, name: str) -> Record | None:
        old = self._recipe()
        stages = [s for s in old.get("stages", []) if isinstance(s, dict)]
        names = [s.get("name") for s in stages]
        if name not in names:
            return None
        i = names.index(name)
        st = stages[i]
        config = stage_config(st, i, seed=old.get("seed"), model=old.get("model"), snn=old.get("snn"),
                              data=old.get("data") if isinstance(old.get("data"), dict) else {})
        inputs = {}
        for dep in stage_inputs(SimpleNamespace(**{"source": None, **st}), names[i - 1] if i else None):
            rec = read_record(self.out_dir / dep) or self.get(dep)
            inputs[dep] = rec.fingerprint if rec is not None else "unknown"
        return Record(fingerprint(config, inputs), config, inputs, legacy=True)


def field_defaults(cls) -> dict:
    """JSON-ready defaults of a config dataclass's fields that have one."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return jsonable(out)


def _short(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def differences(recorded: dict, current: dict, stage_cls: type, name: str) -> list[str]:
    """What differs between a recorded and the current configuration, as ``key: old -> new`` items. Keys absent
    from the record (added to spikeforge since) count as their defaults."""
    out = []
    for part in sorted(set(recorded) | set(current)):
        old, new = recorded.get(part, "(not recorded)"), current.get(part, "(not used)")
        if part == "index":
            if old != new:
                out.append(f"position in the recipe: {old} -> {new}")
            continue
        cls = stage_cls if part == "stage" else SECTION_CLASSES.get(part)
        prefix = f"stages.{name}" if part == "stage" else part
        if isinstance(old, dict) and isinstance(new, dict) and cls is not None:
            old = {**field_defaults(cls), **old}
            for key in sorted(set(old) | set(new)):
                if key not in DATA_KEYS_IGNORED and old.get(key, "(absent)") != new.get(key, "(absent)"):
                    out.append(f"{prefix}.{key}: {_short(old.get(key, '(absent)'))} -> "
                               f"{_short(new.get(key, '(absent)'))}")
        elif old != new:
            out.append(f"{prefix}: {_short(old)} -> {_short(new)}")
    return out


__all__ = ["DATA_KEYS_IGNORED", "RECORD_FILE", "LegacyRecords", "Record", "RecordError", "data_identity",
           "differences", "field_defaults", "fingerprint", "read_record", "stage_config", "stage_inputs",
           "write_record"]
