"""The Python API a new user meets: dataset-aware create_model, bounds that hold by themselves, param_groups, the
silent-network warning, and a plain PyTorch training loop that reaches the paper-level MNIST accuracy."""

from __future__ import annotations

import copy
import gzip
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikeforge as sf
from spikeforge.errors import ConfigError
from spikeforge.models import SilentLayerWarning, auto_constrain, param_groups
from spikeforge.neuron import SpikingNeuron

TINY = dict(width=0.125, hidden=[32])


def test_create_model_takes_sizes_and_normalisation_from_the_dataset():
    m = sf.create_model("vgg9", dataset="cifar10", spiking=True, timesteps=3, **TINY)
    info = sf.DATASETS["cifar10"]
    assert (m.spec.in_channels, m.spec.input_size, m.spec.num_classes) == (3, 32, 10)
    assert m.spec.mean == list(info.mean) and m.spec.std == list(info.std) and m.timesteps == 3
    assert torch.allclose(m.normalize.mean.flatten(), torch.tensor(info.mean))
    m = sf.create_model("vgg4", dataset="MNIST", **TINY)  # spelling forgiven, ANN twin
    assert (m.spec.in_channels, m.spec.input_size, m.spec.mean, m.spec.std) == (1, 28, [0.1307], [0.3081])
    m = sf.create_model("vgg4", dataset="cifar100", input_size=64, num_classes=7, **TINY)  # explicit values win
    assert (m.spec.input_size, m.spec.num_classes, m.spec.in_channels) == (64, 7, 3)
    assert sf.model_defaults("fashion_mnist")["num_classes"] == 10
    with pytest.raises(ConfigError, match="num_classes"):
        sf.create_model("vgg4", dataset="imagefolder")
    assert sf.create_model("vgg4", dataset="imagefolder", num_classes=5, **TINY).spec.input_size == 224
    with pytest.raises(ConfigError, match="dataset must be one of"):
        sf.create_model("vgg4", dataset="mnsit")


def test_snn_options_need_spiking_true():
    for kwargs in ({"timesteps": 4}, {"learn_threshold": True}, {"snn": {"timesteps": 2}}):
        with pytest.raises(ConfigError, match="spiking is False; pass spiking=True"):
            sf.create_model("vgg4", dataset="mnist", **kwargs)
    with pytest.raises(ConfigError, match="spikeforge.create_model"):
        sf.models.create_model("vgg4", dataset="mnist")


def _push_out_of_range(model, optimizer):
    """One optimizer step with gradients that drive every threshold below 0 and every leak above 1."""
    for n in model.neurons():
        n.threshold.grad = torch.full_like(n.threshold, 100.0)
        n.leak.grad = torch.full_like(n.leak, -100.0)
    optimizer.step()


def _in_range(model) -> bool:
    return all(float(n.threshold.detach().min()) > 0 and 0 <= float(n.leak.detach().min())
               and float(n.leak.detach().max()) <= 1 for n in model.neurons())


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_thresholds_and_leaks_stay_in_range_without_constrain(opt):
    m = sf.create_model("vgg4", dataset="mnist", spiking=True, timesteps=2, learn_threshold=True, learn_leak=True,
                        per_channel=True, **TINY)
    make = (lambda ps: torch.optim.SGD(ps, lr=1.0)) if opt == "sgd" else (lambda ps: torch.optim.Adam(ps, lr=10.0))
    _push_out_of_range(m, make(m.parameters()))
    assert _in_range(m)
    assert all(float(n.threshold.detach().min()) == pytest.approx(1e-3) and float(n.leak.detach().max()) == 1.0
               for n in m.neurons())
    twin = copy.deepcopy(m)  # a copy keeps the guarantee
    _push_out_of_range(twin, make(twin.parameters()))
    assert _in_range(twin)


def test_own_module_with_spikeforge_neurons_and_param_groups():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.lif = SpikingNeuron(1.0, 0.9, learn_threshold=True, learn_leak=True)

        def forward(self, x):  # x: [T, B, 4]
            return self.lif(self.fc(x), steps=x.shape[0]).sum(0)

    net = Net()
    groups = param_groups(net, 1e-3, threshold_lr=1e-2)
    assert [(g["name"], g["lr"], len(g["params"])) for g in groups] == [
        ("weights", 1e-3, 2), ("threshold", 1e-2, 1), ("leak", 1e-3, 1)]
    opt = torch.optim.SGD(groups, lr=1e-3)
    net.lif.threshold.grad, net.lif.leak.grad = torch.tensor(1e4), torch.tensor(-1e4)
    opt.step()
    assert net.lif.threshold.item() == pytest.approx(1e-3) and net.lif.leak.item() == 1.0
    other = SpikingNeuron(1.0, 0.5, learn_leak=True)  # not registered: left alone ...
    other.leak.grad = torch.tensor(-10.0)
    torch.optim.SGD([other.leak], lr=1.0).step()
    assert other.leak.item() > 1
    auto_constrain(other)  # ... until registered
    other.leak.grad = torch.tensor(-10.0)
    torch.optim.SGD([other.leak], lr=1.0).step()
    assert other.leak.item() == 1.0


def test_param_groups_match_the_engine_and_set_requires_grad():
    from spikeforge.engine.train import OptimConfig, build_optimizer

    m = sf.create_model("vgg4", dataset="mnist", spiking=True, **TINY)
    cfg = OptimConfig(lr=1e-3, threshold_lr=5e-3, weight_decay=1e-4, train=["weights", "threshold"])
    theirs = build_optimizer(m, cfg).param_groups
    ours = param_groups(m, 1e-3, threshold_lr=5e-3, weight_decay=1e-4, train=["weights", "threshold"])
    assert [(g["name"], g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in theirs] == \
        [(g["name"], g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in ours]
    assert all(not n.leak.requires_grad and n.threshold.requires_grad for n in m.neurons())
    with pytest.raises(ConfigError, match="no parameters to train"):
        param_groups(sf.create_model("vgg4", dataset="mnist", **TINY), 1e-3, train=["threshold"])
    with pytest.raises(ConfigError, match="train must name groups"):
        param_groups(m, 1e-3, train=["bias"])


def test_engine_constrain_after_the_hook_changes_nothing():
    """The engine still calls model.constrain_() after each step: a no-op once the hook has clamped."""
    m = sf.create_model("vgg4", dataset="mnist", spiking=True, learn_threshold=True, learn_leak=True, **TINY)
    _push_out_of_range(m, torch.optim.SGD(m.parameters(), lr=1.0))
    before = [t.clone() for t in m.state_dict().values()]
    m.constrain_()
    assert all(torch.equal(a, b) for a, b in zip(before, m.state_dict().values()))


def test_a_silent_network_says_so_once():
    x = torch.rand(4, 1, 28, 28)
    raw = sf.create_model("vgg4", num_classes=10, in_channels=1, input_size=28, spiking=True, **TINY).eval()
    with pytest.warns(SilentLayerWarning, match=r"spiking layer '\S+' .*emitted no spikes in this model's first "
                      r"forward pass \(evaluation\).*normalisation is off: mean 0, std 1") as rec:
        out = raw(x)
    assert len(rec) == 1 and torch.count_nonzero(out) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        raw(x)  # only the first pass is checked
        sf.create_model("vgg4", dataset="mnist", spiking=True, **TINY)(x)  # training: deep layers may wake up
        ann = sf.create_model("vgg4", dataset="mnist", **TINY)
        ann(x)  # an ANN is never checked
        ok = sf.create_model("vgg4", dataset="mnist", spiking=True, threshold=0.05, **TINY).eval()
        ok(x)
    dark = torch.zeros(4, 1, 28, 28)  # training, but even the first layer is silent: an input-scale problem
    with pytest.warns(SilentLayerWarning, match=r"'features.1' \(threshold 1\) and the 2 spiking layers after it .*"
                      r"\(training\)"):
        sf.create_model("vgg4", num_classes=10, in_channels=1, input_size=28, spiking=True, **TINY)(dark)


def test_every_public_name_resolves():
    for name in sf.__all__:
        assert getattr(sf, name) is not None, name
    code = "import sys, spikeforge as sf; sf.__version__; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ------------------------------------------------------------------------------------------------------------------
# the acceptance test: a DIET-SNN (learned thresholds and leaks, direct input; Rathi & Roy 2020) trained on MNIST by
# a plain PyTorch loop that uses nothing of spikeforge but create_model and the model itself
# ------------------------------------------------------------------------------------------------------------------
def _read_idx(path: Path) -> torch.Tensor:
    with gzip.open(path) as f:
        raw = f.read()
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(raw[3])]
    return torch.from_numpy(np.frombuffer(raw, np.uint8, offset=4 + 4 * len(dims)).reshape(dims).copy())


def _mnist(split: str):
    root = Path(os.environ.get("SPIKEFORGE_DATA", "")) / "mnist"
    images, labels = root / f"{split}-images-idx3-ubyte.gz", root / f"{split}-labels-idx1-ubyte.gz"
    if not (images.is_file() and labels.is_file()):
        pytest.skip("MNIST not found under $SPIKEFORGE_DATA/mnist")
    return _read_idx(images)[:, None].float() / 255, _read_idx(labels).long()


def test_plain_loop_trains_a_diet_snn_to_97_percent_at_t2():
    x_train, y_train = _mnist("train")
    x_test, y_test = _mnist("t10k")
    x_test, y_test = x_test[:2000], y_test[:2000]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread is the fastest on two busy cores
    try:
        start = time.time()
        torch.manual_seed(0)
        model = sf.create_model("vgg4", dataset="mnist", width=0.25, hidden=[256], spiking=True, timesteps=2,
                                learn_threshold=True, learn_leak=True)
        batch = 64
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=math.ceil(len(x_train) / batch))
        order = torch.randperm(len(x_train))
        model.train()
        for i in range(0, len(x_train), batch):
            idx = order[i: i + batch]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            assert _in_range(model), f"bounds broken after step {i // batch}"
        model.eval()
        with torch.no_grad():
            acc = float((model(x_test).argmax(1) == y_test).float().mean())
        seconds = time.time() - start
    finally:
        torch.set_num_threads(threads)
    print(f"plain-loop DIET-SNN, T=2: {acc:.4f} on 2000 test images in {seconds:.1f} s")
    assert acc >= 0.97
    assert seconds < 120
