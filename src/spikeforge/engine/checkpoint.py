"""One checkpoint format: ``{"format", "version", "header", "state_dict", "train_state"}``.

``header`` is JSON-like (model spec, SNN config, stage, kind, metrics); ``state_dict`` the model's tensors;
``train_state`` (optional) the optimizer/scheduler state and epoch for resuming. Files are written atomically
(temporary file + ``os.replace``) and read with ``torch.load(..., weights_only=True)``: no pickled code is run.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from spikeforge.errors import CheckpointError
from spikeforge.models import ModelSpec, SNNConfig, TwinNet, build_model
from spikeforge.utils import atomic_write_bytes, atomic_write_json, json_default  # noqa: F401  (re-exported)

FORMAT = "spikeforge-checkpoint"
VERSION = 1
MODEL_FILE = "model.pt"
RESUME_FILE = "last.pt"


def save_checkpoint(path: Path, model: torch.nn.Module, header: dict | None = None,
                    train_state: dict | None = None) -> None:
    """Save ``model``'s weights with an extra ``header`` and optional ``train_state``. For a :class:`TwinNet` the
    header also gets its spec and SNN config (what :func:`load_checkpoint` rebuilds it from); any other module (the
    STDP network) is described by its stage's header alone."""
    head = dict(header or {})
    if isinstance(model, TwinNet):
        head["model"] = model.spec.to_dict()
        head["snn"] = model.snn.to_dict() if model.spiking else None
    json.dumps(head, default=json_default)  # the header must stay JSON-like (weights_only loading)
    payload = {"format": FORMAT, "version": VERSION, "header": head, "state_dict": model.state_dict()}
    if train_state is not None:
        payload["train_state"] = train_state
    atomic_write_bytes(Path(path), lambda f: torch.save(payload, f))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a stage directory (its ``model.pt``), or a run directory (its last finished stage)."""
    p = Path(path)
    if p.is_dir():
        if (p / MODEL_FILE).is_file():
            return p / MODEL_FILE
        summary = p / "summary.json"
        if summary.is_file():
            stages = json.loads(summary.read_text()).get("stages", [])
            for st in reversed(stages):
                cand = p / st["stage"] / MODEL_FILE
                if cand.is_file():
                    return cand
        raise CheckpointError(f"{p} holds no {MODEL_FILE} (nor a summary.json naming a finished stage); "
                              "pass a checkpoint file or a finished stage directory")
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist; pass a checkpoint file or a stage directory")
    return p


def load_raw(path: str | Path, map_location="cpu") -> dict:
    """Load and validate a checkpoint dict (safe: ``weights_only=True``)."""
    p = resolve_checkpoint(path)
    try:
        data = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated file, not a torch file, or pickled code
        raise CheckpointError(f"cannot read checkpoint {p}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}. "
                              "The file is corrupt or not a spikeforge checkpoint; rerun the stage that wrote it "
                              "(delete its directory) or pass another file") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not a spikeforge checkpoint (no '{FORMAT}' marker)")
    if data.get("version", 0) > VERSION:
        raise CheckpointError(f"{p} was written by a newer spikeforge (format version {data['version']})")
    return data


def load_checkpoint(path: str | Path, map_location="cpu") -> tuple[TwinNet, dict]:
    """Rebuild the model stored in a checkpoint; returns ``(model, header)``."""
    data = load_raw(path, map_location)
    head = data["header"]
    try:
        spec = ModelSpec.from_dict(head["model"])
        snn = SNNConfig.from_dict(head["snn"]) if head.get("snn") else None
        model = build_model(spec, snn)
        model.load_state_dict(data["state_dict"])
    except Exception as exc:
        raise CheckpointError(f"checkpoint {resolve_checkpoint(path)} does not match its model description: {exc}") from None
    return model, head
