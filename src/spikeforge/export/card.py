"""Model card written beside every export: ``FILE.card.json`` and ``FILE.card.md``.

Architecture, dataset, timesteps, encoding, accuracy, mean spike rate and ANN/SNN energy ratio of the run the model
came from. Metrics are taken from (first that exists) the ``metrics`` argument, the ``metrics.json`` of the stage
directory holding the checkpoint, or the checkpoint header's ``metrics``; the energy ratio, if the metrics lack it,
from an ``energy.json`` (written by ``spikeforge energy``) in the stage directory at the same timesteps. Anything
missing is ``null``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path

from torch import nn

from spikeforge.utils import atomic_write_text
from spikeforge.version import __version__

CARD_VERSION = 1


def card_paths(path: str | Path) -> tuple[Path, Path]:
    """``(FILE.card.json, FILE.card.md)`` for an exported ``FILE``."""
    p = Path(path)
    return p.with_name(p.name + ".card.json"), p.with_name(p.name + ".card.md")


def _read_json(p: Path) -> dict | None:
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_metrics(checkpoint: str | Path | None, header: dict | None = None) -> tuple[dict, dict]:
    """``(metrics, sources)`` for a checkpoint file or stage directory: its stage's ``metrics.json`` if there is
    one, else the header's ``metrics``; plus ``energy.json`` of the stage directory. ``sources`` says where each
    part came from."""
    metrics: dict = {}
    sources: dict = {}
    stage_dir = None
    if checkpoint is not None:
        p = Path(checkpoint)
        stage_dir = p if p.is_dir() else p.parent
        m = _read_json(stage_dir / "metrics.json")
        if m is not None:
            metrics = m
            sources["metrics"] = str(stage_dir / "metrics.json")
    if not metrics and header and isinstance(header.get("metrics"), dict):
        metrics = dict(header["metrics"])
        sources["metrics"] = "checkpoint header"
    if stage_dir is not None and metrics.get("energy_ratio") is None:
        e = _read_json(stage_dir / "energy.json")
        if e is not None and e.get("energy_ratio") is not None and \
                (metrics.get("timesteps") is None or e.get("timesteps") in (None, metrics.get("timesteps"))):
            metrics = {**metrics, "energy_ratio": e["energy_ratio"],
                       "energy_ratio_with_memory": e.get("energy_ratio_with_memory")}
            sources["energy_ratio"] = str(stage_dir / "energy.json")
    return metrics, sources


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card_data(path: str | Path, model: nn.Module, *, fmt: str, header: dict | None = None,
              metrics: dict | None = None, checkpoint: str | Path | None = None, export: dict | None = None) -> dict:
    """The card as a dict (see the module docstring)."""
    path = Path(path)
    header = header or {}
    sources: dict = {}
    if metrics is None:
        metrics, sources = run_metrics(checkpoint, header)
    else:
        sources["metrics"] = "given"
    spec = model.spec
    spiking = bool(getattr(model, "spiking", False))
    snn = model.snn if spiking else None
    rate = metrics.get("spike_rate")
    rate_mean = rate.get("mean") if isinstance(rate, dict) else rate if isinstance(rate, (int, float)) else None
    return {
        "card_version": CARD_VERSION,
        "file": path.name,
        "format": fmt,
        "bytes": path.stat().st_size if path.exists() else None,
        "sha256": _sha256(path) if path.exists() else None,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "spikeforge_version": __version__,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "architecture": {
            "arch": spec.arch, "num_classes": spec.num_classes, "in_channels": spec.in_channels,
            "input_size": spec.input_size, "width": spec.width, "hidden": spec.hidden,
            "batch_norm": spec.batch_norm, "bn_folded": spec.bn_folded,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "neuron_layers": len(model.neurons()) if spiking else 0,
        },
        "dataset": header.get("dataset"),
        "stage": header.get("stage", metrics.get("stage")),
        "kind": header.get("kind", metrics.get("kind")),
        "spiking": spiking,
        "timesteps": model.timesteps if spiking else None,
        "encoding": snn.encoding if spiking else None,
        "neuron": {"order": snn.order, "reset": snn.reset, "readout": snn.readout, "per_channel": snn.per_channel,
                   "thresholds": model.thresholds(), "leaks": model.leaks()} if spiking else None,
        "test_acc": metrics.get("test_acc"),
        "spike_rate_mean": rate_mean,
        "energy_ratio": metrics.get("energy_ratio"),
        "energy_ratio_with_memory": metrics.get("energy_ratio_with_memory"),
        "metrics_timesteps": metrics.get("timesteps"),
        "sources": sources or None,
        "export": export,
    }


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def card_markdown(card: dict) -> str:
    a = card["architecture"]
    acc = card["test_acc"]
    rows = [
        ("file", f"`{card['file']}` ({card['format']}, {_fmt(card['bytes'])} bytes)"),
        ("sha256", f"`{card['sha256']}`" if card["sha256"] else "—"),
        ("architecture", f"{a['arch']} (width {a['width']}, hidden {a['hidden']}, {a['parameters']:,} parameters, "
                         f"{a['neuron_layers']} neuron layers)"),
        ("input", f"{a['in_channels']} x {a['input_size']} x {a['input_size']}, {a['num_classes']} classes"),
        ("dataset", _fmt(card["dataset"])),
        ("stage", f"{_fmt(card['stage'])} ({_fmt(card['kind'])})"),
        ("model", "SNN" if card["spiking"] else "ANN"),
        ("timesteps", _fmt(card["timesteps"])),
        ("encoding", _fmt(card["encoding"])),
        ("test accuracy", "—" if acc is None else f"{100 * acc:.2f}%"),
        ("mean spike rate", _fmt(card["spike_rate_mean"])),
        ("energy ratio ANN/SNN", "—" if card["energy_ratio"] is None else f"{card['energy_ratio']:.2f}x"),
        ("checkpoint", _fmt(card["checkpoint"])),
        ("exported", f"{card['exported_at']} by spikeforge {card['spikeforge_version']}"),
    ]
    if card["neuron"]:
        n = card["neuron"]
        rows.insert(9, ("neuron", f"ordering {n['order']}, {n['reset']} reset, readout {n['readout']}, "
                                  f"{'per-channel' if n['per_channel'] else 'per-layer'} thresholds/leaks"))
    lines = [f"# Model card: {card['file']}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    exp = card.get("export") or {}
    if exp:
        lines += ["", "## Export", ""]
        for k, v in exp.items():
            if k in ("inexact", "notes", "checks") or isinstance(v, (list, dict)):
                continue
            lines.append(f"- {k}: {_fmt(v)}")
        if exp.get("checks"):
            lines.append(f"- checks: `{json.dumps(exp['checks'])}`")
        if exp.get("inexact"):
            lines += ["", "**Inexact for other tools** (spikeforge's importer is exact):", ""]
            lines += [f"- {x}" for x in exp["inexact"]]
        if exp.get("notes"):
            lines += ["", "Notes:", ""] + [f"- {x}" for x in exp["notes"]]
    lines += ["", "Missing values (—) were not recorded by the run.", ""]
    return "\n".join(lines)


def write_card(path: str | Path, model: nn.Module, *, fmt: str, header: dict | None = None,
               metrics: dict | None = None, checkpoint: str | Path | None = None,
               export: dict | None = None) -> tuple[Path, Path]:
    """Write ``FILE.card.json`` and ``FILE.card.md`` beside the exported ``path``; returns both paths."""
    card = card_data(path, model, fmt=fmt, header=header, metrics=metrics, checkpoint=checkpoint, export=export)
    pj, pm = card_paths(path)
    atomic_write_text(pj, json.dumps(card, indent=2) + "\n")
    atomic_write_text(pm, card_markdown(card))
    return pj, pm
