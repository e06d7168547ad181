"""What the commands share: the device choice, option checks and loading a checkpoint with its test set.

``spikeforge eval | energy | attack | explain`` all go checkpoint -> model -> dataset -> test loader through
:func:`load_for_eval` (or its two halves, :func:`load_model` and :func:`load_test_data`, when a command checks the
model before the data is read).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import NamedTuple

import torch

from spikeforge.data import DATASETS, Data, DataConfig, build_data
from spikeforge.engine.checkpoint import load_checkpoint, resolve_checkpoint
from spikeforge.errors import ConfigError
from spikeforge.models import TwinNet

DATA_HELP = "dataset directory (default: $SPIKEFORGE_DATA, else ~/.cache/spikeforge/data)"
DEVICE_HELP = "auto, cpu or cuda[:N]"


def pick_device(name: str | None) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda[:N]``; CUDA asked for but absent is an error."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available; use --device cpu")
    return torch.device(name)


def check_min(flag: str, value: int | None, minimum: int = 1) -> None:
    """An integer option given on the command line is at least ``minimum`` (``None``: not given, fine)."""
    if value is not None and value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{flag} must be {what}, got {value}")


def check_float(flag: str, value: float | None, *, gt: float | None = None, ge: float | None = None) -> None:
    """A number given on the command line is finite (no nan/inf) and above its bound (``None``: not given, fine)."""
    if value is None:
        return
    if not math.isfinite(value):
        raise ConfigError(f"{flag} must be a finite number, got {value}")
    if gt is not None and not value > gt:
        raise ConfigError(f"{flag} must be greater than {gt:g}, got {value:g}")
    if ge is not None and not value >= ge:
        raise ConfigError(f"{flag} must be at least {ge:g}, got {value:g}")


def check_output_file(flag: str, path: str | Path | None) -> None:
    """An output file named on the command line can be written: it is not a directory, and its parent is not a
    file (checked before any work is done)."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{flag} {p} is a directory; give a file name, e.g. {p / 'result.json'}")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{flag} {p}: {parent} is a file, not a directory")
            break


def add_data_options(p: argparse.ArgumentParser) -> None:
    """``--data-dir`` and ``--dataset`` (for a checkpoint that does not record its dataset)."""
    p.add_argument("--data-dir", help=DATA_HELP)
    p.add_argument("--dataset", help="dataset name if the checkpoint does not record it")


class Evaluation(NamedTuple):
    """What :func:`load_for_eval` returns."""

    path: Path  # the resolved checkpoint file
    model: TwinNet  # on ``device``
    header: dict  # the checkpoint's header (dataset, stage, kind, metrics, ...)
    dataset: str
    data: Data  # ``data.test`` is the test loader
    device: torch.device


def load_model(checkpoint: str | Path, *, timesteps: int | None = None) -> tuple[Path, TwinNet, dict]:
    """Resolve ``checkpoint`` (file, stage or run directory) and load it: ``(path, model, header)``; an SNN is set to
    ``timesteps`` when given (an ANN with ``timesteps`` is an error)."""
    path = resolve_checkpoint(checkpoint)
    model, header = load_checkpoint(path)
    if timesteps:
        if not model.spiking:
            raise ConfigError(f"{path} holds an ANN; --timesteps applies to SNN checkpoints")
        model.timesteps = timesteps
    return path, model, header


def load_test_data(path: Path, model: TwinNet, header: dict, *, dataset: str | None = None,
                   data_dir: str | None = None, batch_size: int = 500,
                   device: str | torch.device | None = "auto") -> tuple[str, Data, torch.device]:
    """The test data of a loaded checkpoint: ``(dataset, data, device)``. ``dataset`` overrides the one the header
    records; ``imagefolder`` images are resized to the model's input size."""
    dataset = dataset or header.get("dataset")
    if not dataset:
        raise ConfigError(f"{path} does not record its dataset; pass --dataset NAME")
    device = device if isinstance(device, torch.device) else pick_device(device)
    raw = {"dataset": dataset, "data_dir": data_dir, "test_batch_size": batch_size,
           "image_size": model.spec.input_size if dataset == "imagefolder" else None}
    if DATASETS[DataConfig(dataset=dataset).dataset].kind == "events":  # the frames the model was trained on
        recorded = header.get("data") or {}
        raw["timesteps"] = recorded.get("timesteps") or model.timesteps
        if recorded.get("events"):
            raw["events"] = recorded["events"]
    cfg = DataConfig.from_dict(raw, "checkpoint data")
    return dataset, build_data(cfg, device=device), device


def load_for_eval(checkpoint: str | Path, *, dataset: str | None = None, data_dir: str | None = None,
                  batch_size: int = 500, device: str | None = "auto", timesteps: int | None = None) -> Evaluation:
    """Checkpoint -> model (at ``timesteps``, moved to the device) -> its dataset's test loader."""
    path, model, header = load_model(checkpoint, timesteps=timesteps)
    dataset, data, dev = load_test_data(path, model, header, dataset=dataset, data_dir=data_dir,
                                        batch_size=batch_size, device=device)
    return Evaluation(path, model.to(dev), header, dataset, data, dev)
