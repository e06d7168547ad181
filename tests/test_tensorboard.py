"""``log: tensorboard``: a run writes real TensorBoard event files (read back with TensorBoard's EventAccumulator):
per-epoch loss, accuracy, learning rate, spike rate per layer, thresholds and leaks, and each stage's final accuracy
and energy ratio; logging does not change the run's fingerprints."""

import json
import os

import pytest
import torch

from spikeforge.engine.recipe import parse_recipe
from spikeforge.engine.stages import run
from spikeforge.errors import ConfigError

HAS_MNIST = os.path.isdir(os.path.join(os.environ.get("SPIKEFORGE_DATA", ""), "mnist"))
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

RAW = {"name": "tb", "seed": 0, "device": "cpu", "log": "tensorboard",
       "data": {"dataset": "mnist", "batch_size": 32, "test_batch_size": 256, "train_subset": 256, "test_subset": 256},
       "model": {"arch": "vgg4", "width": 0.125, "hidden": [32]},
       "snn": {"threshold": 0.5},
       "stages": [{"name": "ann", "kind": "ann", "epochs": 2, "max_batches": 2, "schedule": "none"},
                  {"name": "diet", "kind": "snn", "timesteps": 2, "epochs": 1, "max_batches": 2, "lr": 1e-3}]}


@pytest.mark.skipif(not HAS_MNIST, reason="needs MNIST under $SPIKEFORGE_DATA")
def test_run_writes_tensorboard_scalars(tmp_path):
    out = tmp_path / "run"
    run(parse_recipe(RAW), out, device=torch.device("cpu"), progress=False)
    acc = event_accumulator.EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("ann/train_loss", "ann/train_acc", "ann/test_acc", "ann/lr", "ann/final/test_acc",
                "diet/train_loss", "diet/train_spike_rate", "diet/threshold/0", "diet/leak/0", "diet/energy_ratio",
                "diet/final/test_acc", "diet/final/energy_ratio"):
        assert tag in tags, (tag, sorted(tags))
    assert any(t.startswith("diet/spike_rate/") for t in tags)  # one series per spiking layer
    assert [e.step for e in acc.Scalars("ann/train_loss")] == [1, 2]  # one point per epoch
    assert all(e.value > 0 for e in acc.Scalars("diet/energy_ratio"))
    final = acc.Scalars("diet/final/test_acc")[0].value
    assert final == pytest.approx(json.loads((out / "diet" / "metrics.json").read_text())["test_acc"], abs=1e-6)


def test_log_key_is_validated_and_optional():
    with pytest.raises(ConfigError, match="log"):
        parse_recipe({**RAW, "log": "wandb"})
    assert parse_recipe({k: v for k, v in RAW.items() if k != "log"}).log == "none"
