"""The weight average (``ema`` of every training stage): the update by hand, swapping in and out, and in a run
(the tested and saved model is the average; a run cut after an epoch resumes to the same average)."""

import json

import pytest
import torch
from torch import nn

from spikeforge.engine.averaging import WeightAverage
from spikeforge.engine.checkpoint import load_checkpoint, load_raw
from spikeforge.engine.recipe import parse_recipe
from spikeforge.engine.stages import run
from spikeforge.engine.train import evaluate
from spikeforge.errors import ConfigError


def _scalar_model(value: float) -> nn.Module:
    m = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(value)
    return m


def test_update_by_hand():
    """w0 = 0, then w = 1, 2 with decay 0.5: d_0 = min(0.5, 1/10) = 0.1, d_1 = min(0.5, 2/11);
    avg_1 = 0.1 * 0 + 0.9 * 1 = 0.9, avg_2 = (2/11) * 0.9 + (9/11) * 2 = 1.8."""
    m = _scalar_model(0.0)
    avg = WeightAverage(m, 0.5)
    for w in (1.0, 2.0):
        with torch.no_grad():
            m.weight.fill_(w)
        avg.update(m)
    assert avg.shadow["weight"].item() == pytest.approx(1.8, abs=1e-6)
    # far into training the ramp no longer binds: d = 0.5 exactly
    avg.updates = 1000
    assert avg.current_decay() == 0.5


def test_applied_swaps_back_and_copy_to_keeps():
    m = _scalar_model(3.0)
    avg = WeightAverage(m, 0.9)
    with torch.no_grad():
        m.weight.fill_(5.0)
    with avg.applied(m):
        assert m.weight.item() == 3.0
    assert m.weight.item() == 5.0 and avg.shadow["weight"].item() == 3.0
    avg.copy_to(m)
    assert m.weight.item() == 3.0


def test_batch_norm_statistics_are_averaged_counters_are_not():
    m = nn.BatchNorm1d(2)
    avg = WeightAverage(m, 0.5)
    assert set(avg.shadow) == {"weight", "bias", "running_mean", "running_var"}
    m.train()
    m(torch.randn(8, 2) + 4.0)
    avg.update(m)
    assert 0.0 < avg.shadow["running_mean"].mean().item() < m.running_mean.mean().item()


def test_state_dict_round_trip():
    m = _scalar_model(1.0)
    a = WeightAverage(m, 0.99)
    with torch.no_grad():
        m.weight.fill_(4.0)
    a.update(m)
    b = WeightAverage(_scalar_model(0.0), 0.5)
    b.load_state_dict(a.state_dict())
    assert b.updates == 1 and b.decay == 0.99 and torch.equal(b.shadow["weight"], a.shadow["weight"])


def test_decay_bounds_are_config_errors():
    with pytest.raises(ValueError):
        WeightAverage(_scalar_model(0.0), 1.0)
    with pytest.raises(ConfigError, match="ema"):
        parse_recipe(_recipe(ema=1.0))


def _recipe(ema=0.9, epochs=2):
    return {
        "name": "avg", "seed": 1, "device": "cpu",
        "data": {"dataset": "mnist", "batch_size": 64, "test_batch_size": 256, "train_subset": 512,
                 "test_subset": 256},
        "model": {"arch": "vgg4", "width": 0.25, "hidden": [32]},
        "stages": [{"name": "ann", "kind": "ann", "epochs": epochs, "lr": 3e-3, "ema": ema}],
    }


def test_run_tests_and_keeps_the_average_and_resumes_exactly(tmp_path, monkeypatch):
    raw = _recipe()
    run(parse_recipe(raw), tmp_path / "full", device=torch.device("cpu"), progress=False)
    model, _ = load_checkpoint(tmp_path / "full" / "ann")
    metrics = json.loads((tmp_path / "full" / "ann" / "metrics.json").read_text())
    data_cfg = parse_recipe(raw).data
    from spikeforge.data import build_data

    data = build_data(data_cfg)
    assert evaluate(model, data.test, torch.device("cpu"))["acc"] == pytest.approx(metrics["test_acc"])

    # the same run without the average ends elsewhere
    run(parse_recipe(_recipe(ema=None)), tmp_path / "plain", device=torch.device("cpu"), progress=False)
    plain, _ = load_checkpoint(tmp_path / "plain" / "ann")
    assert any(not torch.equal(v, plain.state_dict()[k]) for k, v in model.state_dict().items()
               if v.is_floating_point())

    # cut after the first epoch's checkpoint, then resume: the same average as the uninterrupted run
    import spikeforge.engine.train as train

    original = train.save_checkpoint

    def crash_after_first_epoch(*a, **k):
        original(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_checkpoint", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(parse_recipe(raw), tmp_path / "cut", device=torch.device("cpu"), progress=False)
    monkeypatch.setattr(train, "save_checkpoint", original)
    state = load_raw(tmp_path / "cut" / "ann" / "last.pt")["train_state"]
    assert state["epoch"] == 1 and state["ema"]["updates"] == 8  # 512 images / 64 per batch
    run(parse_recipe(raw), tmp_path / "cut", device=torch.device("cpu"), progress=False)
    resumed, _ = load_checkpoint(tmp_path / "cut" / "ann")
    for k, v in model.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_damaged_average_in_last_pt_is_one_clear_error(tmp_path, monkeypatch):
    """A ``last.pt`` whose saved average lacks a tensor ends in a CheckpointError naming the file, not a KeyError."""
    import spikeforge.engine.train as train
    from spikeforge.engine.checkpoint import save_checkpoint
    from spikeforge.errors import CheckpointError

    raw = _recipe(epochs=2)
    original = train.save_checkpoint

    def crash_after_first_epoch(*a, **k):
        original(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_checkpoint", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(parse_recipe(raw), tmp_path / "cut", device=torch.device("cpu"), progress=False)
    monkeypatch.setattr(train, "save_checkpoint", original)
    path = tmp_path / "cut" / "ann" / "last.pt"
    blob = load_raw(path)
    blob["train_state"]["ema"]["shadow"].pop(next(iter(blob["train_state"]["ema"]["shadow"])))
    model, header = load_checkpoint(path)
    save_checkpoint(path, model, header, blob["train_state"])
    with pytest.raises(CheckpointError, match="weight average"):
        run(parse_recipe(raw), tmp_path / "cut", device=torch.device("cpu"), progress=False)
