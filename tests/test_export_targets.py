"""Exports that other tools run: a quickstart-style SNN in snnTorch, sinabs and Norse, spike for spike.

The network has the quickstart's layer kinds at a small width: conv (batch norm folded into its bias by the
conversion), IF / LIF neurons, 2x2 average pooling, flatten, linear layers with biases and the summed readout, on
12x12 one-channel images. Each test exports it for one target (through a ``.nir`` file), loads it with the tool's own
NIR importer, runs a couple of hundred random images and asserts identical spikes in every neuron layer and
identical predictions. Tools that are not installed are skipped (Norse is source-only on PyPI).
"""

from __future__ import annotations

import argparse
import json
import warnings

import pytest
import torch
from torch import nn

from spikeforge.app.commands import export as export_cmd
from spikeforge.engine.checkpoint import save_checkpoint
from spikeforge.errors import ConfigError
from spikeforge.methods.convert import ann_to_snn
from spikeforge.models import SNNConfig, create_model
from spikeforge.neuron import SpikingNeuron

pytest.importorskip("nir")

KW = dict(num_classes=10, in_channels=1, input_size=12, width=0.125, hidden=[64], mean=[0.5], std=[0.5], dropout=0.2)
TOOL = {"snntorch": "snntorch", "sinabs": "sinabs", "norse": "norse"}


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def images(n, seed=0):
    """Pixels on a 1/16 grid: with mean = std = 0.5 and weights on a 1/64 grid every current is an exact float32 sum,
    so the comparison does not depend on how a tool's convolution orders its sums (PyTorch's CPU convolution rounds
    a batch of 5 differently from 5 batches of 1; see docs/export.md)."""
    return torch.round(torch.rand(n, 1, 12, 12, generator=torch.Generator().manual_seed(seed)) * 16) / 16


@torch.no_grad()
def quickstart_style(steps: int, reset: str, leak: str, per_channel: bool = False, seed: int = 0):
    """ANN with batch norm -> conversion (BN folded into conv biases) -> SNN, weights and biases rounded to a 1/64
    grid; thresholds at the median of each layer's positive input current, so every layer spikes; ``leak="lif"``: leaks 0.95, 0.9, 0.85 after the first layer
    (the quickstart's IF first layer, LIF after), ``"if"``: all 1."""
    torch.manual_seed(seed)
    ann = create_model("vgg4", batch_norm=True, **KW)
    for m in ann.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.uniform_(0.8, 1.2)
            m.bias.uniform_(0.0, 0.2)
    snn = ann_to_snn(ann.eval(), SNNConfig(timesteps=steps, reset=reset, per_channel=per_channel))
    for name, p in snn.named_parameters():
        if not name.endswith(("threshold", "leak")):
            p.copy_(torch.round(p * 64) / 64)
    x = images(64, seed=99)
    for i, n in enumerate(snn.neurons()):
        seen = {}
        h = n.register_forward_hook(lambda _m, inp, _o: seen.__setitem__("x", inp[0]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # later layers are silent until their thresholds are set
            snn(x)
        h.remove()
        pos = seen["x"][seen["x"] > 0]
        n.threshold.fill_(float(pos.quantile(0.5)) / (1 if steps == 1 else 2))
        if per_channel:
            n.threshold.mul_(torch.linspace(0.8, 1.2, n.threshold.numel()))
        if leak == "lif" and i > 0:
            n.leak.fill_(1.0 - 0.05 * i)
    return snn.eval()


@torch.no_grad()
def reference(model, x):
    spikes = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=name: spikes.__setitem__(n.replace(".", "_"), o.clone()))
             for name, m in model.named_modules() if isinstance(m, SpikingNeuron)]
    logits = model(x)
    for h in hooks:
        h.remove()
    return logits, spikes


CASES = [("snntorch", 1, "soft", "lif"), ("snntorch", 4, "hard", "lif"), ("sinabs", 1, "soft", "lif"),
         ("sinabs", 4, "hard", "if"), ("sinabs", 3, "soft", "if"), ("norse", 1, "soft", "lif"),
         ("norse", 4, "hard", "if")]


@pytest.mark.parametrize("target,steps,reset,leak", CASES)
def test_target_runs_exactly(tmp_path, target, steps, reset, leak, capsys):
    pytest.importorskip(TOOL[target])
    from spikeforge.export import from_nir, read_nir, run_exported, write_nir
    from spikeforge.export.consumers import load_norse, load_sinabs, load_snntorch

    model = quickstart_style(steps, reset, leak)
    path = tmp_path / f"{target}.nir"
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=UserWarning)  # exact: no InexactExportWarning
        write_nir(model, path, target=target, card=False)
    loader = {"snntorch": load_snntorch, "sinabs": load_sinabs, "norse": load_norse}[target]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = loader(path)
    x = images(200 if steps == 1 else 96, seed=1)
    logits, spikes = reference(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, theirs = run_exported(net, target, model.normalize(x), steps)
    assert set(theirs) == set(spikes)
    for name, s in spikes.items():
        assert s.sum() > 0, f"{name} never spikes: the test would be vacuous"
        assert torch.equal(theirs[name].reshape(s.shape), s), f"{name}: spikes differ in {target}"
    assert torch.equal(out.sum(0).argmax(1), logits.argmax(1))
    assert torch.allclose(out.sum(0), logits, atol=1e-5, rtol=1e-5)
    twin = from_nir(read_nir(path))  # spikeforge's own import of the target's forms is exact too
    with torch.no_grad():
        assert torch.equal(twin(x), logits)
    capsys.readouterr()  # snnTorch prints progress lines


def test_target_forms_are_what_the_tools_read():
    nir = pytest.importorskip("nir")
    from spikeforge.export import graph_info, to_nir
    from spikeforge.export.targets import IF_AS_LIF_TAU

    model = quickstart_style(4, "hard", "lif")
    g = to_nir(model, target="snntorch")
    assert isinstance(g.nodes["features_3"], nir.AvgPool2d) and "normalize" not in g.nodes
    first = g.nodes["features_2"]  # IF layer: a LIF with beta = 1 - dt/tau == 1 exactly, 0-d parameters
    assert isinstance(first, nir.LIF) and first.tau.shape == () and float(first.tau) == IF_AS_LIF_TAU
    assert 1 - 1e-4 / first.tau == 1.0 and graph_info(g)["dt"] == 1e-4
    assert isinstance(g.nodes["features_6"], nir.LIF) and "classifier_5" not in g.nodes  # no nir.I at T > 1
    s = to_nir(quickstart_style(4, "hard", "if"), target="sinabs")
    assert isinstance(s.nodes["features_3"], nir.SumPool2d) and isinstance(s.nodes["classifier_1"], nir.Affine)
    ref = quickstart_style(4, "hard", "if")
    # sinabs fires on v >= V_th: the threshold itself; 1/4 of the pool folded into the next conv's weights
    assert float(s.nodes["features_2"].v_threshold.reshape(-1)[0]) == float(ref.neurons()[0].threshold)
    assert torch.equal(torch.from_numpy(s.nodes["features_4"].weight), ref.features[4].weight.detach() / 4)
    info = graph_info(s)
    assert info["target"] == "sinabs" and not info["normalize_in_graph"] and info["readout"]["by_caller"]
    assert info["normalize"] == {"mean": [0.5], "std": [0.5]}


def test_targets_refuse_what_they_lack():
    pytest.importorskip("nir")
    from spikeforge.export import to_nir

    with pytest.raises(ConfigError, match="snnTorch's NIR import needs one v_threshold per layer"):
        to_nir(quickstart_style(1, "soft", "if", per_channel=True), target="snntorch")
    with pytest.raises(ConfigError, match="reset_mechanism='zero'"):
        to_nir(quickstart_style(4, "soft", "if"), target="snntorch")
    with pytest.raises(ConfigError, match="exp\\(-1/tau_mem\\)"):
        to_nir(quickstart_style(4, "hard", "lif"), target="sinabs")
    with pytest.raises(ConfigError, match="Norse's LIF ignores NIR's r"):
        to_nir(quickstart_style(4, "hard", "lif"), target="norse")
    with pytest.raises(ConfigError, match="no integrator node"):
        to_nir(quickstart_style(4, "hard", "if"), target="sinabs", readout=True)
    with pytest.raises(ConfigError, match="dt = 0.0001"):
        to_nir(quickstart_style(1, "soft", "if"), target="snntorch", dt=1.0)
    with pytest.raises(ConfigError, match="unknown export target"):
        to_nir(quickstart_style(1, "soft", "if"), target="lava")
    with pytest.raises(ConfigError, match="soft reset"):  # generic NIR: as before, the default soft reset at T > 1
        to_nir(quickstart_style(4, "soft", "if"))
    res = create_model("resnet12", spiking=True, timesteps=1, num_classes=10, in_channels=3, input_size=32,
                       width=0.0625, mean=[0.5], std=[0.5])
    with pytest.raises(ConfigError, match="separate arguments"):
        to_nir(res, target="snntorch")
    with pytest.raises(ConfigError, match="has no AvgPool2d"):
        to_nir(res, target="sinabs")


def test_plain_sinabs_import_fires_several_spikes():
    """sinabs' importer alone builds MultiSpike neurons: at T=1 a current of 2 V_th gives 2 spikes, which is what
    load_sinabs(plain=False) corrects."""
    pytest.importorskip("sinabs")
    from spikeforge.export import load_sinabs, run_exported, to_nir

    model = quickstart_style(1, "soft", "if")
    with torch.no_grad():
        model.neurons()[0].threshold.mul_(0.25)
    g = to_nir(model, target="sinabs")
    x = model.normalize(images(16, seed=2))
    _, plain = run_exported(load_sinabs(g, plain=True), "sinabs", x)
    _, fixed = run_exported(load_sinabs(g), "sinabs", x)
    assert plain["features_2"].max() > 1 and fixed["features_2"].max() == 1
    _, spikes = reference(model, images(16, seed=2))
    assert torch.equal(fixed["features_2"], spikes["features_2"])


# ---- DYNAP-CNN / Speck mapping ------------------------------------------------------------------------------------
def test_dynapcnn_check_of_quickstart_sized_networks():
    pytest.importorskip("sinabs")
    from spikeforge.export import check_dynapcnn

    sizes = dict(num_classes=10, in_channels=1, input_size=28, mean=[0.1307], std=[0.3081])
    quick = create_model("vgg4", spiking=True, timesteps=2, width=0.5, hidden=[1024], bias=True, **sizes)
    with torch.no_grad():
        quick.neurons()[1].leak.fill_(0.9)
    r = check_dynapcnn(quick)
    assert not r.fits and r.cores is None
    assert [ly.name for ly in r.layers] == ["features.0", "features.3", "classifier.1", "classifier.4"]
    fc = r.layers[2]  # the 3136 -> 512 layer as a 7x7 convolution over 64 channels
    assert (fc.c_in, fc.c_out, fc.kernel) == (64, 512, (7, 7)) and fc.kernel_memory == 64 * 64 * 512
    text = "\n".join(r.problems)
    assert "Kernel memory is 2048Ki" in text and "analog pixel values" in text and "leaky" in text
    assert "no spiking neurons" in text
    assert any("at most 16 output channels" in f and "model.hidden: [32]" in f for f in r.fixes)
    assert any("snn.encoding: poisson" in f for f in r.fixes)
    # the fix applied (16 hidden channels, Poisson input, IF neurons): only the non-spiking output layer remains
    small = create_model("vgg4", spiking=True, timesteps=4, width=0.5, hidden=[32], bias=True, encoding="poisson",
                         reset="hard", **sizes)
    r2 = check_dynapcnn(small)
    assert r2.cores is not None and len(set(r2.cores.values())) == 4
    assert len(r2.problems) == 1 and "no spiking neurons" in r2.problems[0]
    assert all(f"core {c}" in r2.table() for c in r2.cores.values())
    assert r2.layers[2].kernel_memory <= 64 * 1024


# ---- command line -------------------------------------------------------------------------------------------------
def _cli(argv):
    parser = argparse.ArgumentParser(prog="spikeforge")
    export_cmd.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_target_and_hardware_check(tmp_path, capsys):
    pytest.importorskip("sinabs")
    from spikeforge.export import graph_info, read_nir

    stage = tmp_path / "run" / "diet"
    stage.mkdir(parents=True)
    save_checkpoint(stage / "model.pt", quickstart_style(4, "hard", "if"), {"stage": "diet", "kind": "snn"})
    out = tmp_path / "m.nir"
    assert _cli(["export", str(stage), "--target", "sinabs", "--out", str(out)]) == 0
    assert graph_info(read_nir(out))["target"] == "sinabs"
    card = json.loads((tmp_path / "m.nir.card.json").read_text())
    assert card["export"]["target"] == "sinabs" and card["export"]["exact"]
    assert _cli(["export", str(stage), "--check-dynapcnn"]) == 0
    text = capsys.readouterr().out
    assert "load_sinabs" in text and "DYNAP-CNN / Speck mapping" in text and "analog pixel values" in text
    with pytest.raises(ConfigError, match="dt = 0.0001"):
        _cli(["export", str(stage), "--target", "snntorch", "--dt", "1", "--out", str(tmp_path / "x.nir")])
