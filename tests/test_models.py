"""Model twins: shapes, shared state-dict names, encoders, readout, dropout in time, chunked evaluation."""

import pytest
import torch

from spikeforge.nn.encoders import PoissonEncoder
from spikeforge.errors import ConfigError, ShapeError
from spikeforge.nn.layers import SpikingDropout
from spikeforge.models import SNNConfig, create_model, list_models
from spikeforge.analysis.attacks import FGSM
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
    with pytest.raises(ShapeError, match=r"\[B, 1, 28, 28\]"):
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
    enc = PoissonEncoder(convention="rate", rate=1.0, seed=1)
    s = enc(x, 4000)
    assert set(s.unique().tolist()) <= {-1.0, 0.0, 1.0}
    rate = s.mean(0)[0]
    assert torch.allclose(rate, torch.tensor([-1.0, -0.4, 0.0, 0.3, 0.9, 1.0]), atol=0.03)
    half = PoissonEncoder(convention="half", seed=1)(x, 4000).mean(0)[0]
    assert torch.allclose(half, torch.tensor([-0.5, -0.2, 0.0, 0.15, 0.45, 1.0]), atol=0.03)
    a = PoissonEncoder(seed=7)(x, 5)
    b = PoissonEncoder(seed=7)(x, 5)
    assert torch.equal(a, b)
    # straight-through gradient: d E[s] / dx = rate where p < 1
    xg = x.clone().requires_grad_()
    PoissonEncoder(rate=0.9, seed=0)(xg, 3).sum().backward()
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
        with snn.at_timesteps(5):
            direct5 = snn(x)
    assert snn.timesteps == 12
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
    with pytest.raises(ConfigError, match="reset"):
        SNNConfig(reset="never")
    with pytest.raises(ConfigError, match="leak"):
        SNNConfig(leak=2.0)
    with pytest.raises(ConfigError, match="unknown key"):
        SNNConfig.from_dict({"timestep": 3})


def test_config_bounds_are_one_clear_error():
    with pytest.raises(ConfigError, match=r"width.*less than or equal to 16"):
        create_model("vgg5", width=100000.0)
    for bad, key in [(dict(num_classes=0), "num_classes"), (dict(dropout=1.0), "dropout"),
                     (dict(hidden=[0]), "hidden"), (dict(std=[0.0]), "std")]:
        with pytest.raises(ConfigError, match=key):
            create_model("vgg5", **bad)
    for bad, key in [(dict(timesteps=0), "timesteps"), (dict(threshold=0.0), "threshold"),
                     (dict(poisson_rate=-1.0), "poisson_rate"), (dict(time_chunk=0), "time_chunk"),
                     (dict(neuron="hh"), "neuron"), (dict(encoding="morse"), "encoding")]:
        with pytest.raises(ConfigError, match=key):
            SNNConfig(**bad)
    assert SNNConfig.from_dict({"time_chunk": None}).time_chunk is None
    with pytest.raises(ConfigError, match=r"^stages\.s\.snn\.leak"):  # where= names the recipe section
        SNNConfig.from_dict({"leak": 1.5}, where="stages.s.snn")
    cfg = SNNConfig()
    with pytest.raises(ConfigError, match="timesteps"):
        cfg.timesteps = 0  # assignment is validated too
    assert cfg.updated(timesteps=7).timesteps == 7 and cfg.timesteps == 5
    assert "timesteps" in SNNConfig.__dataclass_fields__


def test_snn_options_need_spiking_true():
    with pytest.raises(ConfigError, match=r"timesteps.*spiking=True"):
        create_model("vgg5", timesteps=4, **SMALL)
    with pytest.raises(ConfigError, match=r"snn.*spiking=True"):
        create_model("vgg5", snn=SNNConfig(), **SMALL)
    assert create_model("vgg5", spiking=True, snn={"timesteps": 3}, **SMALL).timesteps == 3


def test_neuron_model_from_the_registry():
    from spikeforge.neuron import NEURONS

    snn = create_model("vgg4", spiking=True, timesteps=3, neuron="alif", neuron_params={"beta": 0.2}, **SMALL)
    neurons = snn.neurons()
    assert neurons and all(type(n) is NEURONS.get("alif") and n.beta == 0.2 for n in neurons)
    with torch.no_grad():
        assert snn(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ConfigError, match="neuron_params"):
        SNNConfig(neuron="lif", neuron_params={"beta": 0.2})
    with pytest.raises(ConfigError, match="neuron_params"):
        SNNConfig(neuron="alif", neuron_params={"threshold": 2.0})


def test_timesteps_have_one_home():
    """No layer stores T: the model passes it at every call, so changing model.timesteps is all it takes."""
    snn = create_model("vgg4", spiking=True, timesteps=4, encoding="poisson", **SMALL)
    assert snn.snn.timesteps == 4
    for m in snn.modules():
        assert "timesteps" not in vars(m), type(m).__name__
    sizes = []
    snn.neurons()[0].register_forward_pre_hook(lambda m, i: sizes.append(i[0].shape[0]))
    with torch.no_grad():
        snn(torch.rand(2, 1, 28, 28))
        with snn.at_timesteps(2):
            assert snn.timesteps == 2
            snn(torch.rand(2, 1, 28, 28))
        snn.timesteps = 3
        snn(torch.rand(2, 1, 28, 28))
    assert sizes == [4, 2, 3] and snn.snn.timesteps == 3
    with pytest.raises(AttributeError):
        create_model("vgg4", **SMALL).timesteps = 3


def test_registries_and_lazy_root_package():
    import subprocess
    import sys

    from spikeforge.models import MODELS, build_model, register_model
    from spikeforge.models.vgg import VGG
    from spikeforge.nn.encoders import ENCODERS, DirectEncoder

    assert {"vgg5", "vgg9_bntt", "resnet20"} <= set(MODELS.names()) and {"direct", "poisson"} <= set(ENCODERS)
    assert isinstance(create_model("vgg4", spiking=True, **SMALL).encoder, DirectEncoder)
    for _ in range(2):  # re-registering a name replaces it
        register_model("test-vgg-tiny", lambda spec, snn=None: VGG(spec, snn, cfg=[8, "A"]))
    assert build_model(create_model("vgg4", **SMALL).spec).spec.arch == "vgg4"
    assert create_model("test-vgg-tiny", **SMALL).features[0].out_channels == 1
    code = ("import sys, spikeforge as sf; assert 'spikeforge.models' not in sys.modules and 'torch' not in "
            "sys.modules; assert {'create_model', 'PGD', 'load_checkpoint', 'NEURONS'} <= set(dir(sf)); "
            "assert sf.create_model is sf.presets.create_model and sf.__version__ and 'workflow' in sf.__doc__")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


# -- the model boundary (bad input gets one clear error, or the documented right thing) ---------------------------
def _boundary_model():
    return create_model("vgg4", num_classes=10, in_channels=1, input_size=28, width=0.125, hidden=[16],
                        spiking=True, timesteps=2)


@pytest.mark.parametrize("bad, match", [
    (lambda: torch.zeros(2, 1, 28, 28, dtype=torch.uint8), r"floating-point .* x.float\(\) / 255"),
    (lambda: torch.full((2, 1, 28, 28), float("nan")), "NaN or infinite"),
    (lambda: torch.full((2, 1, 28, 28), float("inf")), "NaN or infinite"),
    (lambda: torch.zeros(2, 1, 32, 32), r"expects images \[B, 1, 28, 28\]"),
    (lambda: torch.zeros(2, 3, 28, 28), r"expects images \[B, 1, 28, 28\]"),
    (lambda: torch.zeros(1, 28, 28), r"got shape \(1, 28, 28\)"),
])
def test_model_boundary_refuses_bad_images(bad, match):
    for model in (_boundary_model(), create_model("vgg4", num_classes=10, in_channels=1, input_size=28, width=0.125,
                                                  hidden=[16])):
        with pytest.raises(ShapeError, match=match):
            model(bad())


def test_model_boundary_casts_float64_to_the_model_dtype():
    model = _boundary_model().eval()
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(model(x.double()), model(x))


def test_attack_refuses_labels_out_of_range():
    with pytest.raises(ConfigError, match=r"labels must lie in \[0, 9\]"):
        FGSM(_boundary_model(), eps=0.1)(torch.rand(2, 1, 28, 28), torch.tensor([3, 12]))
