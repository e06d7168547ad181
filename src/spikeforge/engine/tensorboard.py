"""Experiment logging: ``log: tensorboard`` in a recipe writes TensorBoard event files under ``RUN_DIR/tensorboard``.

Per training epoch of every ``ann``/``snn``/``iir``/``bntt`` stage (tags ``<stage>/...``, step = epoch): training
loss and accuracy, test accuracy and loss (epochs that were tested), learning rate, the mean spike rate and each
layer's spike rate (spikes per neuron per inference), each layer's mean threshold and leak and, for SNNs, the
ANN/SNN energy ratio (from one test batch: :func:`~spikeforge.analysis.energy.stage_energy_metrics`, which leaves the
model's mode and the random streams untouched). At the end of every stage: its test accuracy and the energy ratio
(``<stage>/final/...``). View with
``tensorboard --logdir RUN_DIR/tensorboard``. TensorBoard is an optional extra (``pip install 'spikeforge[tensorboard]'``).
Logging never changes what is computed: it is not part of a stage's fingerprint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from spikeforge.analysis.energy import stage_energy_metrics
from spikeforge.errors import ConfigError

LOG_DIR = "tensorboard"
LOGGERS = ("none", "tensorboard")


def _writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
    except ImportError:
        raise ConfigError("log: tensorboard needs the tensorboard package: pip install 'spikeforge[tensorboard]' "
                          "(or set log: none)") from None
    return SummaryWriter


class TensorBoardLogger:
    """Writes the scalars of a run (see the module docstring); one per run, rank 0 only."""

    def __init__(self, run_dir: str | Path):
        self.log_dir = Path(run_dir) / LOG_DIR
        self.writer = _writer_class()(log_dir=str(self.log_dir))

    def _scalars(self, prefix: str, values: dict, step: int) -> None:
        for key, v in values.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            self.writer.add_scalar(f"{prefix}/{key}", float(v), step)

    def epoch_hook(self, stage: str, model: Any, loader=None, device=None) -> Callable[[int, dict, dict], None]:
        """The ``on_epoch_end(epoch, record, layer_rates)`` callback of :func:`spikeforge.engine.train.fit`;
        ``loader``/``device``: the test set the per-epoch energy ratio is estimated on (None: not logged)."""

        def hook(epoch: int, record: dict, layer_rates: dict) -> None:
            step = epoch + 1
            self._scalars(stage, {k: v for k, v in record.items() if k not in ("epoch", "seconds")}, step)
            self._scalars(f"{stage}/spike_rate", layer_rates, step)
            if getattr(model, "spiking", False):
                self._scalars(f"{stage}/threshold", dict(enumerate(model.thresholds())), step)
                self._scalars(f"{stage}/leak", dict(enumerate(model.leaks())), step)
                if loader is not None:
                    energy = stage_energy_metrics(model, loader, device, max_batches=1)
                    self._scalars(stage, {"energy_ratio": energy["energy_ratio"]}, step)
            self.writer.flush()

        return hook

    def stage_end(self, stage: str, metrics: dict) -> None:
        keys = ("test_acc", "energy_ratio", "energy_ratio_with_memory", "exit_acc")
        self._scalars(f"{stage}/final", {k: metrics.get(k) for k in keys}, 0)
        rate = (metrics.get("spike_rate") or {}).get("mean") if isinstance(metrics.get("spike_rate"), dict) else None
        self._scalars(f"{stage}/final", {"spike_rate": rate}, 0)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def make_logger(kind: str, run_dir: str | Path) -> TensorBoardLogger | None:
    """The run's logger for recipe key ``log`` (``none``: None)."""
    if kind == "none":
        return None
    if kind == "tensorboard":
        return TensorBoardLogger(run_dir)
    raise ConfigError(f"log must be one of {list(LOGGERS)}, got {kind!r}")
