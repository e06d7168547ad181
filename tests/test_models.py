"""Model twins: shapes, shared state-dict names, encoders, readout, dropout in time, chunked evaluation."""

import pytest
import torch

from spikeforge.nn.encoders import PoissonEncoder
from spikeforge.errors import ConfigError, ShapeError
from spikeforge.nn.layers import SpikingDropout
from spikeforge.models import SNNConfig, create_model, list_models
from spikeforge.analysis.monitor import SpikeMonitor

SMALL = dict(num_classes=10, in_channels=1, input_size=28, width=0.125, hidden=[32])


@pytest.mark.parametrize("arch", ["vgg4", "vgg5", "vgg9", "vgg11", "vgg16", "resnet12", "resnet20"])
def test_twins_share_weight_names_and_shapes(arch):
    ann = create_model(arch, **SMALL)
    snn = create_model(arch, spiking=True, timesteps=2, **SMALL)
    missing, unexpected = snn.load_state_dict(ann.state_dict(), strict=False)
    assert not unexpected
    assert missing and all(k.endswith((".threshold", ".leak")) for k in missing)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert ann(x).shape == (2, 10)
        assert snn(x).shape == (2, 10)
    assert len(snn.neurons()) == sum(isinstance(m, torch.nn.ReLU) for m in ann.modules())


def test_full_size_variants_build():
    """CIFAR-, Tiny-ImageNet- and ImageNet-size VGG16 classifiers get the right input size."""
    m = create_model("vgg16", num_classes=10, in_channels=3, input_size=32)
    assert m.classifier[1].in_features == 2048
    m = create_model("vgg16", num_classes=1000, in_channels=3, input_size=224)
    assert m.classifier[1].in_features == 512 * 7 * 7
    m = create_model("vgg11", num_classes=200, in_channels=3, input_size=64, spiking=True)
    assert m.classifier[1].in_features == 512 * 4 * 4  # four pools: 64 -> 4
    r = create_model("resnet34", num_classes=10, in_channels=3, input_size=32)
    assert r.classifier[-2].in_features == 512 * 4
    assert "resnet34" in list_models() and "vgg5" in list_models()


def test_bad_inputs_give_clear_errors():
    m = create_model("vgg5", **SMALL)
    with pytest.raises(ShapeError, match=r"\[B, 1, H, W\]"):
        m(torch.rand(2, 3, 28, 28))
    with pytest.raises(ConfigError, match="unknown architecture"):
        create_model("vgg99")
    with pytest.raises(ConfigError, match="unknown key"):
        create_model("vgg5", depth=3)
    with pytest.raises(ConfigError, match="encoding"):
        create_model("vgg5", spiking=True, encoding="morse", **SMALL)


def test_direct_encoding_runs_first_conv_once():
    snn = create_model("vgg5", spiking=True, timesteps=6, **SMALL)
    calls = []
    snn.features[0].register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    with torch.no_grad():
        snn(torch.rand(3, 1, 28, 28))
    assert calls == [3]  # [1*B, ...], not [T*B, ...]
    snn.set_encoding("poisson")
    calls.clear()
    with torch.no_grad():
        snn(torch.rand(3, 1, 28, 28))
    assert calls == [18]


def test_poisson_encoder_conventions_and_seed():
    x = torch.tensor([[-1.0, -0.4, 0.0, 0.3, 0.9, 3.0]])
    enc = PoissonEncoder(timesteps=4000, convention="rate", rate=1.0, seed=1)
    s = enc(x)
    assert set(s.unique().tolist()) <= {-1.0, 0.0, 1.0}
    rate = s.mean(0)[0]
    assert torch.allclose(rate, torch.tensor([-1.0, -0.4, 0.0, 0.3, 0.9, 1.0]), atol=0.03)
    half = PoissonEncoder(timesteps=4000, convention="half", seed=1)(x).mean(0)[0]
    assert torch.allclose(half, torch.tensor([-0.5, -0.2, 0.0, 0.15, 0.45, 1.0]), atol=0.03)
    a = PoissonEncoder(timesteps=5, seed=7)(x)
    b = PoissonEncoder(timesteps=5, seed=7)(x)
    assert torch.equal(a, b)
    # straight-through gradient: d E[s] / dx = rate where p < 1
    xg = x.clone().requires_grad_()
    PoissonEncoder(timesteps=3, rate=0.9, seed=0)(xg).sum().backward()
    assert torch.allclose(xg.grad, torch.tensor([[2.7, 2.7, 2.7, 2.7, 2.7, 0.0]]))  # p = min(|x| * 0.9, 1)


def test_spiking_dropout_same_mask_every_timestep():
    torch.manual_seed(0)
    d = SpikingDropout(0.5).train()
    out = d(torch.ones(5, 4, 10))
    assert torch.equal(out, out[:1].expand_as(out))
    assert 0 < (out[0] == 0).float().mean() < 1
    assert torch.equal(d.eval()(torch.ones(5, 4, 10)), torch.ones(5, 4, 10))


def test_readout_sum_and_mean():
    snn = create_model("vgg4", spiking=True, timesteps=4, readout="sum", **SMALL)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        s = snn(x)
        snn2 = create_model("vgg4", spiking=True, timesteps=4, readout="mean", **SMALL)
        snn2.load_state_dict(snn.state_dict())
        m = snn2(x)
    assert torch.allclose(s / 4, m, atol=1e-6)


def test_chunked_evaluation_equals_one_shot_and_cumulative():
    torch.manual_seed(0)
    snn = create_model("resnet12", spiking=True, timesteps=12, time_chunk=5, threshold=0.3, **SMALL)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        chunked = snn(x)
        snn.snn.time_chunk = None
        whole = snn(x)
        five = snn.forward_cumulative(x, [5, 12])
        snn.timesteps = 5
        direct5 = snn(x)
    # spikes are identical; the readout sums chunk by chunk, so only the summation order differs
    assert torch.allclose(chunked, whole, atol=1e-5)
    assert torch.allclose(five[1], whole, atol=1e-5) and torch.allclose(five[0], direct5, atol=1e-5)


def test_spike_monitor_counts_per_inference():
    snn = create_model("vgg4", spiking=True, timesteps=3, threshold=0.05, **SMALL)
    with SpikeMonitor(snn) as mon, torch.no_grad():
        snn(torch.rand(4, 1, 28, 28))
    rates = mon.rates()
    assert list(rates) == [n for n, m in snn.named_modules() if m in snn.neurons()]
    assert all(0 <= r <= 3 for r in rates.values())
    assert mon.rates(per_step=True)[list(rates)[0]] == pytest.approx(rates[list(rates)[0]] / 3)


def test_snn_config_validation():
    with pytest.raises(ConfigError, match="snn.reset"):
        SNNConfig(reset="never")
    with pytest.raises(ConfigError, match="leak"):
        SNNConfig(leak=2.0)
    with pytest.raises(ConfigError, match="unknown key"):
        SNNConfig.from_dict({"timestep": 3})
