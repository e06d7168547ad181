"""One checkpoint format: ``{"format", "version", "header", "state_dict", "train_state"}``.

``header`` is JSON-like (model spec, SNN config, stage, kind, metrics); ``state_dict`` the model's tensors;
``train_state`` (optional) the optimizer/scheduler state and epoch for resuming. Files are written atomically
(temporary file + ``os.replace``) and read with ``torch.load(..., weights_only=True)``: no pickled code is run, and a
file that holds code is refused as such. Before a model is allocated, the sizes its header describes are checked
against the tensors the file really holds (the model is first built on PyTorch's ``meta`` device, which allocates
nothing), so a forged header cannot make the loader allocate an arbitrary amount of memory.

A run directory resolves to its last finished stage (:func:`resolve_checkpoint`): the last stage, in the order of the
run's ``recipe.json`` (else its ``summary.json``), whose ``model.pt`` and ``metrics.json`` both exist.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
from pathlib import Path

import torch

from spikeforge import utils
from spikeforge.errors import CheckpointError, SpikeforgeError
from spikeforge.models import ModelSpec, SNNConfig, TwinNet, build_model
from spikeforge.utils import atomic_write_bytes, atomic_write_json, json_default  # noqa: F401  (re-exported)

FORMAT = "spikeforge-checkpoint"
VERSION = 1
MODEL_FILE = "model.pt"
RESUME_FILE = "last.pt"
METRICS_FILE = "metrics.json"


def save_checkpoint(path: Path, model: torch.nn.Module, header: dict | None = None,
                    train_state: dict | None = None) -> None:
    """Save ``model``'s weights with an extra ``header`` and optional ``train_state``. For a :class:`TwinNet` the
    header also gets its spec and SNN config (what :func:`load_checkpoint` rebuilds it from); any other module (the
    STDP network) is described by its stage's header alone. A failed write (full disk) is an :class:`OSError` and
    leaves the previous file in place."""
    head = dict(header or {})
    if isinstance(model, TwinNet):
        head["model"] = model.spec.to_dict()
        head["snn"] = model.snn.to_dict() if model.spiking else None
    json.dumps(head, default=json_default)  # the header must stay JSON-like (weights_only loading)
    payload = {"format": FORMAT, "version": VERSION, "header": head, "state_dict": model.state_dict()}
    if train_state is not None:
        payload["train_state"] = train_state
    path = Path(path)

    def write(f):
        try:
            torch.save(payload, f)
        except RuntimeError as exc:  # torch reports a failed write of its zip stream ("unexpected pos ...") so
            raise _write_error(path, exc) from None

    utils.atomic_write_bytes(path, write)


def _write_error(path: Path, exc: Exception) -> OSError:
    """The :class:`OSError` behind a failed ``torch.save``: the disk is full (or nearly), else an I/O error."""
    try:
        full = shutil.disk_usage(path.parent).free < 256 * 2**20
    except OSError:
        full = True
    code = errno.ENOSPC if full else errno.EIO
    detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
    return OSError(code, f"{os.strerror(code)} (torch.save: {detail})", str(path))


def _plain_name(name) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def _stage_order(run_dir: Path) -> list[str]:
    """Stage names of a run directory in recipe order: from ``recipe.json``, else ``summary.json`` (unreadable or
    malformed files are skipped)."""
    for name, key in (("recipe.json", "name"), ("summary.json", "stage")):
        try:
            data = json.loads((run_dir / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        stages = data.get("stages") if isinstance(data, dict) else None
        if isinstance(stages, list):
            names = [st.get(key) for st in stages if isinstance(st, dict)]
            names = [n for n in names if _plain_name(n)]
            if names:
                return names
    return []


def last_finished_stage(run_dir: str | Path) -> Path | None:
    """The ``model.pt`` of a run directory's last finished stage (``model.pt`` and ``metrics.json`` written), in
    recipe order; for a hand-made directory without metrics, the last stage with a ``model.pt``. None if none."""
    run_dir = Path(run_dir)
    names = _stage_order(run_dir)
    for need_metrics in (True, False):
        for name in reversed(names):
            sdir = run_dir / name
            if (sdir / MODEL_FILE).is_file() and (not need_metrics or (sdir / METRICS_FILE).is_file()):
                return sdir / MODEL_FILE
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a stage directory (its ``model.pt``), or a run directory (its last finished stage:
    :func:`last_finished_stage`)."""
    p = Path(path)
    if p.is_dir():
        if (p / MODEL_FILE).is_file():
            return p / MODEL_FILE
        found = last_finished_stage(p)
        if found is not None:
            return found
        raise CheckpointError(f"{p} holds no {MODEL_FILE} and no finished stage (a stage directory with "
                              f"{MODEL_FILE}, listed in its recipe.json or summary.json); pass a checkpoint file or "
                              "a finished stage directory")
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist; pass a checkpoint file or a stage directory")
    if not p.is_file():
        raise CheckpointError(f"{p} is not a regular file; pass a checkpoint file or a stage directory")
    return p


def _refusal(p: Path, exc: Exception) -> CheckpointError:
    """The error for a file ``torch.load(weights_only=True)`` cannot read: code inside, or corrupt."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "global" in text.lower():
        what = next((ln.strip() for ln in text.splitlines() if "global" in ln.lower() and "weights_only" not in ln),
                    "")
        what = f" ({what[:120]})" if what else ""
        return CheckpointError(f"refused to load {p}: it holds pickled Python code, not only tensors and plain "
                               f"data{what}, and loading it could run that code. spikeforge never loads such files; "
                               "use a checkpoint written by spikeforge from a source you trust")
    if isinstance(exc, OSError):
        return CheckpointError(f"cannot read checkpoint {p}: {exc.strerror or exc}")
    first = text.splitlines()[0][:120] if text.strip() else ""
    detail = f" ({type(exc).__name__}: {first})" if first and not isinstance(exc, pickle.UnpicklingError) else ""
    return CheckpointError(f"cannot read checkpoint {p}: the file is corrupt or not a spikeforge checkpoint{detail}; "
                           "rerun the stage that wrote it (spikeforge run ... --restart STAGE) or pass another file")


def load_raw(path: str | Path, map_location="cpu", *, mmap: bool = False) -> dict:
    """Load and validate a checkpoint dict (safe: ``weights_only=True``; ``mmap``: map the tensors instead of reading
    them, for a look at the header)."""
    p = resolve_checkpoint(path)
    try:
        data = torch.load(p, map_location=map_location, weights_only=True, mmap=mmap)
    except MemoryError:
        raise
    except Exception as exc:  # truncated file, not a torch file, pickled code, unreadable
        raise _refusal(p, exc) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not a spikeforge checkpoint (no '{FORMAT}' marker)")
    if not isinstance(data.get("version", 0), int) or data.get("version", 0) > VERSION:
        raise CheckpointError(f"{p} was written by a newer spikeforge (format version {data.get('version')!r})")
    if not isinstance(data.get("header"), dict) or not isinstance(data.get("state_dict"), dict):
        raise CheckpointError(f"{p} is not a complete spikeforge checkpoint (header or weights missing)")
    return data


def _check_shapes(spec: ModelSpec, snn: SNNConfig | None, state: dict, p: Path) -> None:
    """The tensors the header's model would have must be the ones the file holds; checked on the ``meta`` device
    (no memory allocated), so a forged header cannot trigger a huge allocation."""
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build_model(spec, snn).state_dict().items()}
    except (NotImplementedError, RuntimeError):  # a model that cannot be built on the meta device: no pre-check
        return
    except SpikeforgeError as exc:
        raise CheckpointError(f"checkpoint {p} has an invalid model description: {exc}") from None
    got = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    if expected != got:
        bad = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
        k = bad[0]
        raise CheckpointError(f"checkpoint {p} does not match its model description: {len(bad)} tensor(s) differ, "
                              f"e.g. {k!r}: the header's model needs {expected.get(k, 'nothing')}, the file holds "
                              f"{got.get(k, 'nothing')}")


def load_checkpoint(path: str | Path, map_location="cpu") -> tuple[TwinNet, dict]:
    """Rebuild the model stored in a checkpoint; returns ``(model, header)``."""
    p = resolve_checkpoint(path)
    data = load_raw(p, map_location)
    head = data["header"]
    try:
        spec = ModelSpec.from_dict(head.get("model"), "header model")
        snn = SNNConfig.from_dict(head["snn"], "header snn") if head.get("snn") else None
    except Exception as exc:
        raise CheckpointError(f"checkpoint {p} has an invalid model description: {exc}") from None
    _check_shapes(spec, snn, data["state_dict"], p)
    try:
        model = build_model(spec, snn)
        model.load_state_dict(data["state_dict"])
    except MemoryError:
        raise
    except Exception as exc:
        raise CheckpointError(f"checkpoint {p} does not match its model description: {exc}") from None
    return model, head
