"""BNTT: per-timestep batch norm (equivalence with T separate BatchNorms), early exit, models and the bntt stage."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from spikeforge.nn.bntt import BatchNormThroughTime
from spikeforge.methods.bntt_exit import exit_time, gamma_profile
from spikeforge.methods.convert import ann_to_snn
from spikeforge.errors import ConfigError, ConversionError, ShapeError
from spikeforge.models import ModelSpec, SNNConfig, create_model

REPO = Path(__file__).resolve().parents[1]
HAS_MNIST = os.path.isdir(os.path.join(os.environ.get("SPIKEFORGE_DATA", ""), "mnist"))


def _separate(bntt: BatchNormThroughTime, dims: int) -> list[nn.Module]:
    """T ordinary BatchNorm layers holding the same gamma/beta/statistics as ``bntt``."""
    cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    layers = []
    for t in range(bntt.num_steps):
        bn = cls(bntt.num_features, eps=bntt.eps, momentum=bntt.momentum)
        with torch.no_grad():
            bn.weight.copy_(bntt.weight[t])
            bn.bias.copy_(bntt.bias[t] if bntt.bias is not None else torch.zeros(bntt.num_features))
            bn.running_mean.copy_(bntt.running_mean[t])
            bn.running_var.copy_(bntt.running_var[t])
        bn.bias.requires_grad_(bntt.bias is not None)
        layers.append(bn)
    return layers


@pytest.mark.parametrize("dims,bias", [(2, False), (1, False), (2, True)])
def test_vectorized_equals_separate_batchnorms(dims, bias):
    torch.manual_seed(0)
    steps, batch, c = 4, 6, 3
    bntt = BatchNormThroughTime(c, steps, bias=bias)
    with torch.no_grad():
        bntt.weight.uniform_(0.5, 1.5)
        if bias:
            bntt.bias.uniform_(-0.5, 0.5)
    ref = _separate(bntt, dims)
    shape = (steps, batch, c, 5, 5) if dims == 2 else (steps, batch, c)
    x = (torch.randn(shape) * torch.arange(1, steps + 1).view(-1, *[1] * (len(shape) - 1))).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    g = torch.randn(shape)
    for mode in ("train", "eval"):
        bntt.train(mode == "train")
        for bn in ref:
            bn.train(mode == "train")
        y = bntt(x)
        y_ref = torch.stack([ref[t](x_ref[t]) for t in range(steps)])
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        (y * g).sum().backward()
        (y_ref * g).sum().backward()
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
        for t in range(steps):
            torch.testing.assert_close(bntt.weight.grad[t], ref[t].weight.grad, rtol=1e-4, atol=1e-5)
            if bias:
                torch.testing.assert_close(bntt.bias.grad[t], ref[t].bias.grad, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(bntt.running_mean[t], ref[t].running_mean)
            torch.testing.assert_close(bntt.running_var[t], ref[t].running_var)
        x.grad = x_ref.grad = None
        bntt.zero_grad()
        for bn in ref:
            bn.zero_grad()


def test_per_timestep_statistics_are_independent():
    torch.manual_seed(1)
    bntt = BatchNormThroughTime(2, 3, momentum=1.0)  # running stats = the last batch's
    means = torch.tensor([0.0, 5.0, -3.0])
    scales = torch.tensor([1.0, 2.0, 0.5])
    x = torch.randn(3, 4000, 2) * scales.view(3, 1, 1) + means.view(3, 1, 1)
    bntt.train()(x)
    torch.testing.assert_close(bntt.running_mean, means.view(3, 1).expand(3, 2), atol=0.1, rtol=0)
    torch.testing.assert_close(bntt.running_var.sqrt(), scales.view(3, 1).expand(3, 2), atol=0.05, rtol=0)
    # eval: each step normalized with its own statistics -> every step standard normal again
    y = bntt.eval()(x)
    assert y.mean(dim=(1, 2)).abs().max() < 0.1 and (y.std(dim=(1, 2)) - 1).abs().max() < 0.05


def test_fewer_steps_use_the_first_sets_and_streaming_continues():
    torch.manual_seed(2)
    bntt = BatchNormThroughTime(3, 5).eval()
    with torch.no_grad():
        bntt.weight.copy_(torch.arange(1, 16, dtype=torch.float32).view(5, 3))
        bntt.running_mean.uniform_(-1, 1)
        bntt.running_var.uniform_(0.5, 2)
    x = torch.randn(5, 4, 3, 2, 2)
    full = bntt(x)
    torch.testing.assert_close(bntt(x[:2]), full[:2])  # early exit at t=2: BN sets 1 and 2
    bntt.start_stream()
    parts = []
    for chunk in (x[:2], x[2:3], x[3:]):
        parts.append(bntt(chunk, steps=len(chunk)))  # the model passes each chunk's length
    bntt.stop_stream()
    torch.testing.assert_close(torch.cat(parts), full)
    with pytest.raises(ShapeError, match="5 timesteps"):
        bntt(torch.randn(6, 4, 3, 2, 2))
    with pytest.raises(ShapeError, match="time-first"):
        bntt(torch.randn(4, 3, 2))


def test_broadcast_input_gets_every_steps_normalization():
    """Direct encoding feeds [1, B, ...] (first conv once); BNTT still applies each step's own gamma."""
    bntt = BatchNormThroughTime(2, 3).eval()
    with torch.no_grad():
        bntt.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    x = torch.randn(1, 5, 2)
    y = bntt(x, steps=3)
    assert y.shape == (3, 5, 2)
    assert bntt(x).shape == (1, 5, 2)  # without steps a one-step input is one step
    torch.testing.assert_close(y, bntt(x.expand(3, 5, 2).contiguous()))
    torch.testing.assert_close(y[2] / y[0], torch.tensor([5.0, 3.0]).expand(5, 2))


def test_exit_time_rule():
    prof = torch.tensor([[1.0, 0.8, 0.3, 0.05, 0.02], [1.0, 0.6, 0.2, 0.05, 0.0]])
    # layer means: 1.0, 0.7, 0.25, 0.05, 0.01
    assert exit_time(prof, 0.1) == 3
    assert exit_time(prof, 0.3) == 2
    assert exit_time(prof, 0.001) == 5
    assert exit_time(prof, 2.0) == 1
    bumpy = torch.tensor([[1.0, 0.05, 0.5, 0.05]])  # a late rise keeps the exit after it
    assert exit_time(bumpy, 0.1) == 3


@pytest.mark.parametrize("arch,size,fc_in", [("vgg9_bntt", 28, 256 * 3 * 3), ("vgg9_bntt", 32, 256 * 4 * 4),
                                             ("vgg11_bntt", 32, 512), ("vgg11_bntt", 64, 512)])
def test_bntt_models_from_one_spec(arch, size, fc_in):
    in_ch = 1 if size == 28 else 3
    ann = create_model(arch, in_channels=in_ch, input_size=size, num_classes=10)
    snn = create_model(arch, spiking=True, in_channels=in_ch, input_size=size, num_classes=10, timesteps=3,
                       encoding="poisson", poisson_convention="half", readout="mean", leak=0.95)
    assert ann.spec.bntt and snn.spec.bntt
    fcs = [m for m in snn.modules() if isinstance(m, nn.Linear)]
    assert fcs[0].in_features == fc_in and len(fcs) == 2 and all(m.bias is None for m in fcs)
    convs = [m for m in snn.modules() if isinstance(m, nn.Conv2d)]
    bntts = [m for m in snn.modules() if isinstance(m, BatchNormThroughTime)]
    assert len(bntts) == len(convs) + 1 and all(b.num_steps == 3 for b in bntts)  # every conv + hidden FC
    assert len([m for m in ann.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]) == len(bntts)
    # same weight names in both twins (BN statistics differ in shape)
    weights = {k for k in ann.state_dict() if k.endswith(".weight") and ".features." not in k}
    assert weights <= set(snn.state_dict())
    x = torch.rand(2, in_ch, size, size)
    assert ann(x).shape == (2, 10) and snn(x).shape == (2, 10)


def test_model_early_exit_equals_shorter_run():
    torch.manual_seed(3)
    snn = create_model("vgg9_bntt", spiking=True, in_channels=1, input_size=28, width=0.125, timesteps=6,
                       readout="mean", leak=0.95)
    assert gamma_profile(snn).shape == (8, 6)
    with torch.no_grad():
        for m in snn.modules():
            if isinstance(m, BatchNormThroughTime):
                m.running_mean.uniform_(-0.2, 0.2)
                m.weight.uniform_(0.5, 2.0)
    snn.eval()
    x = torch.rand(4, 1, 28, 28)
    at3, at6 = snn.forward_cumulative(x, [3, 6], chunk=2)
    torch.testing.assert_close(at6, snn(x), rtol=1e-5, atol=1e-5)
    with snn.at_timesteps(3):
        torch.testing.assert_close(at3, snn(x), rtol=1e-5, atol=1e-5)
    assert snn.timesteps == 6
    with pytest.raises(ConfigError, match="T <= 6"):  # one batch norm per step: it cannot run longer
        snn.timesteps = 7
    assert snn.timesteps == 6


def test_bad_bntt_configurations():
    with pytest.raises(ConfigError, match="exclude"):
        ModelSpec(arch="vgg9_bntt", batch_norm=True)
    with pytest.raises(ConfigError, match="VGG"):
        create_model("resnet20", spiking=True, bntt=True, timesteps=2)
    ann = create_model("vgg9_bntt", in_channels=1, input_size=28, width=0.125)
    with pytest.raises(ConversionError, match="from scratch"):
        ann_to_snn(ann, SNNConfig(timesteps=2))
    from spikeforge.engine.recipe import parse_recipe

    base = {"name": "x", "data": {"dataset": "mnist"}, "model": {"arch": "vgg9_bntt"},
            "stages": [{"name": "b", "kind": "bntt", "exit_threshold": -1}]}
    with pytest.raises(ConfigError, match="exit_threshold"):
        parse_recipe(base)


@pytest.mark.skipif(not HAS_MNIST, reason="needs MNIST under $SPIKEFORGE_DATA")
def test_bntt_stage_end_to_end_and_eval_early_exit(tmp_path):
    recipe = yaml.safe_load((REPO / "recipes" / "mnist-bntt.yaml").read_text())
    recipe["model"]["width"] = 0.125
    recipe["stages"][0].update({"timesteps": 4, "epochs": 1, "max_batches": 6, "eval_batches": 1,
                                "exit_threshold": 0.9})
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "spikeforge", "run", str(path), "--out", str(tmp_path / "run"),
                          "--quiet"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    sdir = tmp_path / "run" / "bntt"
    m = json.loads((sdir / "metrics.json").read_text())
    assert m["kind"] == "bntt" and m["timesteps"] == 4
    assert len(m["gamma_profile"]) == 3 and len(m["gamma_profile"][0]) == 4  # vgg4: 2 convs + hidden FC
    assert set(m["acc_vs_exit_time"]) == {"1", "2", "3", "4"}
    assert 1 <= m["exit_time"] <= 4 and m["exit_acc"] == m["acc_vs_exit_time"][str(m["exit_time"])]
    assert exit_time(torch.tensor(m["gamma_profile"]), 0.9) == m["exit_time"]
    assert (sdir / "bntt_gamma.png").stat().st_size > 1000
    # gammas learned (SGD moved them off their initial 1.0)
    assert any(abs(v - 1.0) > 1e-4 for row in m["gamma_profile"] for v in row)
    res = subprocess.run([sys.executable, "-m", "spikeforge", "eval", str(sdir), "--early-exit", "--batches", "1",
                          "--json", str(tmp_path / "e.json")], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["exit_time"] == m["exit_time"] and str(m["exit_time"]) in ev["acc_vs_timesteps"]
