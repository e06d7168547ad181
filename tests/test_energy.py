"""Energy model: MAC counts against hand counts, spike rates / ACs on known spikes, membrane term, presets,
JSON schema, and the ``spikeforge energy`` command on a tiny checkpoint."""

import argparse
import json
import math
import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from spikeforge.analysis.energy import (PRESETS, EnergyCosts, count_ops, energy_from_counts, energy_report,
                                       energy_table, get_costs, stage_energy_metrics)
from spikeforge.app.commands.energy import add_parser as add_energy_parser
from spikeforge.errors import ConfigError
from spikeforge.nn.layers import fold
from spikeforge.models import create_model
from spikeforge.neuron import SpikingNeuron

PJ = 1e-12
TINY = dict(num_classes=10, in_channels=1, input_size=28, width=0.125, hidden=[32])
# tiny vgg4 at width 0.125: conv 1->8 @28, pool, conv 8->16 @14, pool, FC 16*7*7 -> 4 (hidden 32 * 0.125), FC 4 -> 10
TINY_NEURONS = 8 * 28 * 28 + 16 * 14 * 14 + 4  # = 9412 spiking neurons
TINY_MACS = [9 * 1 * 8 * 28 * 28, 9 * 8 * 16 * 14 * 14, 784 * 4, 4 * 10]


def conv(k, c_in, c_out, hw):
    """MACs of a k x k conv producing c_out x hw x hw (stride folded into hw)."""
    return k * k * c_in * c_out * hw * hw


# Hand counts (3x3 convs, padding 1, 2x2 average pools), written out layer by layer from the Purdue cfgs.
HAND = {
    "vgg5-cifar10": [conv(3, 3, 64, 32), conv(3, 64, 128, 16), conv(3, 128, 128, 16),
                     128 * 8 * 8 * 4096, 4096 * 4096, 4096 * 10],
    "vgg9-cifar10": [conv(3, 3, 64, 32), conv(3, 64, 128, 16), conv(3, 128, 256, 16), conv(3, 256, 256, 8),
                     conv(3, 256, 512, 8), conv(3, 512, 512, 4), conv(3, 512, 512, 2),
                     512 * 2 * 2 * 4096, 4096 * 4096, 4096 * 10],
    "vgg11-cifar100": [conv(3, 3, 64, 32), conv(3, 64, 128, 16), conv(3, 128, 256, 16), conv(3, 256, 512, 8),
                       conv(3, 512, 512, 8), conv(3, 512, 512, 4), conv(3, 512, 512, 2), conv(3, 512, 512, 2),
                       512 * 2 * 2 * 4096, 4096 * 4096, 4096 * 100],
    "vgg16-cifar10": [conv(3, 3, 64, 32), conv(3, 64, 64, 32), conv(3, 64, 128, 16), conv(3, 128, 128, 16),
                      conv(3, 128, 256, 8), conv(3, 256, 256, 8), conv(3, 256, 256, 8),
                      conv(3, 256, 512, 4), conv(3, 512, 512, 4), conv(3, 512, 512, 4),
                      conv(3, 512, 512, 2), conv(3, 512, 512, 2), conv(3, 512, 512, 2),
                      2048 * 4096, 4096 * 4096, 4096 * 10],
    "vgg16-imagenet": [conv(3, 3, 64, 224), conv(3, 64, 64, 224), conv(3, 64, 128, 112), conv(3, 128, 128, 112),
                       conv(3, 128, 256, 56), conv(3, 256, 256, 56), conv(3, 256, 256, 56),
                       conv(3, 256, 512, 28), conv(3, 512, 512, 28), conv(3, 512, 512, 28),
                       conv(3, 512, 512, 14), conv(3, 512, 512, 14), conv(3, 512, 512, 14),
                       25088 * 4096, 4096 * 4096, 4096 * 1000],
}
# (arch, build kwargs, published total MACs, tolerance, first conv, tolerance)
REFERENCE = {
    "vgg5-cifar10": ("vgg5", dict(num_classes=10, input_size=32), 108.8e6, 0.1e6, 1.77e6, 0.01e6),
    "vgg9-cifar10": ("vgg9", dict(num_classes=10, input_size=32), 281.8e6, 0.1e6, 1.77e6, 0.01e6),
    "vgg11-cifar100": ("vgg11", dict(num_classes=100, input_size=32), 404.8e6, 0.1e6, 1.77e6, 0.01e6),
    "vgg16-cifar10": ("vgg16", dict(num_classes=10, input_size=32), 338.4e6, 0.1e6, 1.77e6, 0.01e6),
    # quoted as 15.47 G (two decimals of G) and first conv 86.7 M
    "vgg16-imagenet": ("vgg16", dict(num_classes=1000, input_size=224), 15.47e9, 5e6, 86.7e6, 0.05e6),
}


@pytest.mark.parametrize("key", list(REFERENCE))
def test_reference_mac_counts(key):
    arch, kw, total, tol, first, tol1 = REFERENCE[key]
    hand = HAND[key]
    assert abs(sum(hand) - total) <= tol, f"hand count {sum(hand)} disagrees with the published {total}"
    assert abs(hand[0] - first) <= tol1
    model = create_model(arch, in_channels=3, **kw)
    size = kw["input_size"]
    counts = count_ops(model, torch.rand(1, 3, size, size), "cpu")
    assert [r.macs for r in counts.layers] == hand
    assert counts.totals["macs"] == sum(hand)
    assert counts.layers[0].role == "input" and counts.layers[-1].role == "readout"
    assert all(r.input == "analog" and r.acs is None and r.membrane_elems == 0 for r in counts.layers)
    assert not counts.spiking and counts.spike_rate == {}


def test_resnet20_counts_and_neuron_mapping():
    hand = [conv(3, 3, 64, 32), conv(3, 64, 64, 32), conv(3, 64, 64, 32)]  # stem, then pool to 16
    hand += [conv(3, 64, 64, 16)] * 4  # stage 1: two blocks, identity shortcuts
    for c_in, c, hw in ((64, 128, 8), (128, 256, 4), (256, 512, 2)):  # first block strided, 1x1 shortcut
        hand += [conv(3, c_in, c, hw), conv(3, c, c, hw), conv(1, c_in, c, hw), conv(3, c, c, hw), conv(3, c, c, hw)]
    hand += [512 * 2 * 2 * 10]
    ann = create_model("resnet20", num_classes=10, in_channels=3, input_size=32)
    counts = count_ops(ann, torch.rand(1, 3, 32, 32), "cpu")
    assert [r.macs for r in counts.layers] == hand
    assert counts.totals["macs"] == sum(hand)
    # SNN twin, narrow: same layer order; conv2 owns the block's output neurons, the shortcut none
    snn = create_model("resnet20", num_classes=10, in_channels=3, input_size=32, width=0.125, spiking=True,
                       timesteps=2)
    c = count_ops(snn, torch.rand(2, 3, 32, 32), "cpu")
    names = [r.name for r in c.layers]
    assert names.index("layers.2.conv1") < names.index("layers.2.conv2") < names.index("layers.2.shortcut.0")
    assert c.layer("layers.2.conv2").neuron == "layers.2.act2"
    assert c.layer("layers.2.shortcut.0").neurons == 0
    assert c.layer("classifier.1").role == "readout" and c.layer("classifier.1").neurons == 0
    assert sum(r.neurons for r in c.layers) == c.totals["neurons"] == sum(c.neuron_layers.values())
    assert len(c.neuron_layers) == len(snn.neurons())


class ToySNN(nn.Module):
    """Input: hand-made spike trains ``[B, T, 4]``; fc1 (4->3) -> IF neurons -> readout fc2 (3->2)."""

    spiking = True

    def __init__(self, steps):
        super().__init__()
        self.timesteps = steps
        self.snn = SimpleNamespace(encoding="poisson")
        self.fc1 = nn.Linear(4, 3, bias=False)
        self.act = SpikingNeuron(threshold=1.0)
        self.fc2 = nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0.5, 0.5]]))

    def forward(self, x):
        s = x.transpose(0, 1)
        return fold(self.fc2, self.act(fold(self.fc1, s))).sum(0)


def test_acs_on_hand_made_spikes():
    spikes = torch.tensor([[[1, 0, 1, 0], [0, 0, 1, 0], [1, 1, 1, 1]],  # sample 0: 7 spikes in 3 steps
                           [[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]]],  # sample 1: 2 spikes
                          dtype=torch.float32)
    toy = ToySNN(3)
    c = count_ops(toy, spikes, "cpu")
    fc1, fc2 = c.layer("fc1"), c.layer("fc2")
    assert fc1.macs == 12 and fc2.macs == 6
    assert fc1.input == "spikes" and fc1.input_rate == pytest.approx(9 / (2 * 4))
    # every input spike reaches 3 synapses: 9 spikes * 3 / 2 samples accumulates per inference
    assert fc1.acs == pytest.approx(9 * 3 / 2)
    # hidden spikes by hand: neuron 0 copies input 0 (sample 0: t0, t2; sample 1: t1) -> 3; neuron 1 copies
    # input 1 -> 1; neuron 2 integrates 0.5 * (in2 + in3): sample 0 0.5, 1.0 (fire), 1.0 (fire); sample 1 0, 0, 0.5
    hidden = 3 + 1 + 2
    assert fc2.input_rate == pytest.approx(hidden / (2 * 3))
    assert fc2.acs == pytest.approx(hidden * 2 / 2)
    assert fc1.neurons == 3 and fc1.neuron == "act" and fc2.role == "readout" and fc2.neurons == 0
    assert c.spike_rate["act"] == pytest.approx(hidden / (2 * 3))
    rep = energy_from_counts(c)
    assert rep["totals"]["acs"] == pytest.approx(13.5 + 6)
    assert rep["totals"]["e_snn"] == pytest.approx(19.5 * 0.9 * PJ)  # Poisson input: first layer is AC
    assert rep["totals"]["e_ann"] == pytest.approx(18 * 4.6 * PJ)
    assert rep["totals"]["e_mem"] == pytest.approx(2 * 3 * 3 * 10 * PJ)


class FixedSpikes(nn.Module):
    """Stands in for the Poisson encoder: always returns the given spikes ``[T, B, C, H, W]``."""

    time_aware = True

    def __init__(self, spikes):
        super().__init__()
        self.spikes = spikes

    def forward(self, x, steps=None):
        return self.spikes


def test_rates_and_acs_through_a_real_snn():
    steps, batch = 3, 2
    model = create_model("vgg4", spiking=True, timesteps=steps, encoding="poisson", threshold=0.05, **TINY)
    spikes = torch.zeros(steps, batch, 1, 28, 28)
    spikes[0, 0, 0, :10, :10] = 1  # 100 spikes
    spikes[1, 0, 0, 5:8, :] = 1  # 84
    spikes[2, 1, 0, :, 3] = 1  # 28
    model.encoder = FixedSpikes(spikes)
    c = count_ops(model, torch.rand(batch, 1, 28, 28), "cpu")
    first = c.layer("features.0")
    assert first.input == "spikes" and first.input_rate == pytest.approx(212 / (batch * 784))
    assert first.acs == pytest.approx(212 / (batch * 784) * TINY_MACS[0])
    assert [r.macs for r in c.layers] == TINY_MACS
    # behind a 2x2 average pool the input activity equals the rate of the neuron layer before it
    assert c.layer("features.3").input_rate == pytest.approx(c.spike_rate["features.1"], rel=1e-5)
    assert c.layer("classifier.1").input_rate == pytest.approx(c.spike_rate["features.4"], rel=1e-5)
    assert c.layer("classifier.4").input_rate == pytest.approx(c.spike_rate["classifier.2"], rel=1e-5)
    assert c.spike_rate["features.1"] > 0
    for r in c.layers:
        assert r.acs == pytest.approx(r.input_rate * r.macs)
    assert [r.neurons for r in c.layers] == [8 * 28 * 28, 16 * 14 * 14, 4, 0]
    assert c.totals["neurons"] == TINY_NEURONS and c.totals["membrane_bytes"] == 4 * TINY_NEURONS


def test_chunked_evaluation_counts_the_whole_inference():
    model = create_model("vgg4", spiking=True, timesteps=5, threshold=0.3, **TINY)
    x = torch.rand(3, 1, 28, 28)
    model.snn.time_chunk = None
    full = count_ops(model, x, "cpu")
    model.snn.time_chunk = 2  # no-grad streaming in chunks of 2 steps
    chunked = count_ops(model, x, "cpu")
    assert chunked.samples == full.samples == 3
    for a, b in zip(full.layers, chunked.layers):
        assert a.macs == b.macs
        assert (a.input_rate is None and b.input_rate is None) or a.input_rate == pytest.approx(b.input_rate)
    assert full.layers[1].input_rate > 0


def test_membrane_term_zero_at_t1_and_2tne_otherwise():
    x = torch.rand(2, 1, 28, 28)
    model = create_model("vgg4", spiking=True, timesteps=1, threshold=0.3, **TINY)
    r1 = energy_report(model, x, "cpu")
    assert r1["timesteps"] == 1
    assert r1["totals"]["e_mem"] == 0.0 and all(layer["e_mem"] == 0.0 for layer in r1["layers"])
    assert r1["energy_ratio_with_memory"] == pytest.approx(r1["energy_ratio"])
    model.timesteps = 5
    r5 = energy_report(model, x, "cpu")
    assert r5["totals"]["neurons"] == TINY_NEURONS
    assert r5["totals"]["e_mem"] == pytest.approx(2 * 5 * TINY_NEURONS * 10 * PJ)
    assert r5["totals"]["e_snn_with_memory"] == pytest.approx(r5["totals"]["e_snn"] + r5["totals"]["e_mem"])
    assert r5["energy_ratio_with_memory"] == pytest.approx(r5["totals"]["e_ann"] / r5["totals"]["e_snn_with_memory"])
    assert sum(layer["e_mem"] for layer in r5["layers"]) == pytest.approx(r5["totals"]["e_mem"])
    r5b = energy_report(model, x, "cpu", e_mem=20 * PJ)
    assert r5b["totals"]["e_mem"] == pytest.approx(2 * r5["totals"]["e_mem"])
    off = energy_report(model, x, "cpu", membrane=False)
    assert off["totals"]["e_mem"] is None and off["energy_ratio_with_memory"] is None
    assert off["energy_ratio"] == pytest.approx(r5["energy_ratio"])


def test_direct_first_layer_once_or_per_step():
    steps = 4
    model = create_model("vgg4", spiking=True, timesteps=steps, threshold=0.3, **TINY)
    x = torch.rand(2, 1, 28, 28)
    once = energy_report(model, x, "cpu")
    per_step = energy_report(model, x, "cpu", first_layer_per_step=True)
    f1, f2 = once["layers"][0], per_step["layers"][0]
    assert f1["input"] == "analog" and f1["input_rate"] is None and f1["acs"] is None
    assert f1["snn_macs"] == TINY_MACS[0] and f1["e_snn"] == pytest.approx(TINY_MACS[0] * 4.6 * PJ)
    assert f2["snn_macs"] == steps * TINY_MACS[0] and f2["e_snn"] == pytest.approx(steps * f1["e_snn"])
    assert per_step["totals"]["e_snn"] - once["totals"]["e_snn"] == pytest.approx((steps - 1) * TINY_MACS[0] * 4.6 * PJ)
    rest = once["layers"][1:]
    assert once["totals"]["e_snn"] == pytest.approx(f1["e_snn"] + sum(r["acs"] for r in rest) * 0.9 * PJ)
    assert once["totals"]["e_ann"] == pytest.approx(sum(TINY_MACS) * 4.6 * PJ)
    # Poisson input: the first layer is AC with the input spike rate
    model.set_encoding("poisson")
    pois = energy_report(model, x, "cpu")
    p1 = pois["layers"][0]
    assert p1["input"] == "spikes" and p1["snn_macs"] == 0 and p1["input_rate"] > 0
    assert p1["e_snn"] == pytest.approx(p1["acs"] * 0.9 * PJ)
    assert pois["totals"]["snn_macs"] == 0


def test_presets_and_custom_costs():
    expected = {"45nm-fp32": (4.6, 0.9), "45nm-fp16": (1.5, 0.4), "45nm-int8": (0.23, 0.03), "45nm-int32": (3.2, 0.1)}
    for name, (mac, ac) in expected.items():
        assert PRESETS[name].e_mac == pytest.approx(mac * PJ) and PRESETS[name].e_ac == pytest.approx(ac * PJ)
    assert all(p.e_mem == pytest.approx(10 * PJ) for p in PRESETS.values())
    c = get_costs("custom:2,0.5")
    assert c.e_mac == pytest.approx(2 * PJ) and c.e_ac == pytest.approx(0.5 * PJ)
    assert get_costs({"e_mac": 1e-12, "e_ac": 1e-13}).e_ac == pytest.approx(1e-13)
    assert get_costs("45nm-int8", e_mem=5 * PJ).e_mem == pytest.approx(5 * PJ)
    for bad in ("45nm-fp64", "custom:abc", {"mac": 1}):
        with pytest.raises(ConfigError):
            get_costs(bad)
    with pytest.raises(ConfigError, match="joules"):
        EnergyCosts("x", 4.6, 0.9)  # picojoule numbers passed as joules
    toy = ToySNN(3)
    counts = count_ops(toy, torch.ones(1, 3, 4), "cpu")
    fp32 = energy_from_counts(counts)
    int8 = energy_from_counts(counts, preset="45nm-int8")
    assert int8["totals"]["e_ann"] / fp32["totals"]["e_ann"] == pytest.approx(0.23 / 4.6)
    assert int8["preset"]["name"] == "45nm-int8"


def _check_layer_schema(layer, spiking):
    keys = {"name", "type", "macs", "input_rate", "acs", "e_ann", "e_snn", "neurons", "membrane_elems"}
    assert keys <= set(layer)
    assert isinstance(layer["name"], str) and isinstance(layer["type"], str)
    assert isinstance(layer["macs"], int) and isinstance(layer["e_ann"], float)
    assert isinstance(layer["neurons"], int) and isinstance(layer["membrane_elems"], int)
    if spiking:
        assert isinstance(layer["e_snn"], float)
        assert layer["input_rate"] is None or isinstance(layer["input_rate"], float)
    else:
        assert layer["e_snn"] is None and layer["acs"] is None


def test_report_json_schema_snn_and_ann():
    x = torch.rand(2, 1, 28, 28)
    snn = create_model("vgg4", spiking=True, timesteps=2, threshold=0.3, **TINY)
    rep = energy_report(snn, [(x, torch.zeros(2)), (x, torch.zeros(2))], "cpu", max_batches=1)
    assert rep["samples"] == 2
    for key in ("layers", "totals", "energy_ratio", "energy_ratio_with_memory", "timesteps", "encoding", "preset",
                "spike_rate"):
        assert key in rep
    assert isinstance(rep["energy_ratio"], float) and isinstance(rep["energy_ratio_with_memory"], float)
    assert rep["timesteps"] == 2 and rep["encoding"] == "direct" and rep["preset"]["name"] == "45nm-fp32"
    assert set(rep["spike_rate"]) == {"features.1", "features.4", "classifier.2", "mean"}
    for key in ("macs", "acs", "e_ann", "e_snn", "e_mem", "e_snn_with_memory", "neurons", "membrane_elems"):
        assert key in rep["totals"]
    for layer in rep["layers"]:
        _check_layer_schema(layer, True)
    assert json.loads(json.dumps(rep)) == rep
    table = energy_table(rep)
    assert "features.0" in table and "total" in table and "energy ratio" in table
    ann = create_model("vgg4", **TINY)
    arep = energy_report(ann, x, "cpu")
    assert arep["energy_ratio"] is None and arep["totals"]["e_snn"] is None and arep["spike_rate"] == {}
    assert arep["totals"]["macs"] == sum(TINY_MACS)
    for layer in arep["layers"]:
        _check_layer_schema(layer, False)
    json.dumps(arep)
    assert "E_SNN" not in energy_table(arep) and "ANN  energy" in energy_table(arep)


def test_stage_energy_metrics_and_side_effects():
    model = create_model("vgg4", spiking=True, timesteps=2, encoding="poisson", threshold=0.3, **TINY)
    model.train()
    x = torch.rand(2, 1, 28, 28)
    rng = torch.get_rng_state()
    m = stage_energy_metrics(model, [x], "cpu")
    assert torch.equal(rng, torch.get_rng_state())  # Poisson draws did not move the caller's RNG
    assert model.training
    assert set(m) == {"energy_ratio", "energy_ratio_with_memory", "energy"}
    assert isinstance(m["energy_ratio"], float) and isinstance(m["energy_ratio_with_memory"], float)
    assert {"layers", "totals"} <= set(m["energy"])
    json.dumps(m)


def test_count_ops_errors():
    model = create_model("vgg4", **TINY)
    with pytest.raises(ConfigError, match="no input batches"):
        count_ops(model, [], "cpu")
    with pytest.raises(ConfigError):
        count_ops(model, [torch.rand(1, 1, 28, 28)], "cpu", max_batches=0)


def _energy_args(argv):
    parser = argparse.ArgumentParser(prog="spikeforge")
    sub = parser.add_subparsers(dest="command", required=True)
    add_energy_parser(sub)
    return parser.parse_args(["energy", *argv])


@pytest.mark.skipif(not os.path.isdir(os.path.join(os.environ.get("SPIKEFORGE_DATA", ""), "mnist")),
                    reason="needs MNIST under $SPIKEFORGE_DATA")
def test_energy_cli_on_tiny_checkpoints(tmp_path, capsys):
    from spikeforge.engine.checkpoint import save_checkpoint

    snn = create_model("vgg4", spiking=True, timesteps=2, **TINY)
    stage = tmp_path / "snn"
    save_checkpoint(stage / "model.pt", snn, {"dataset": "mnist", "stage": "x", "kind": "snn"})
    args = _energy_args([str(stage), "--batches", "1", "--batch-size", "50", "--device", "cpu"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "features.0" in out and "energy ratio ANN/SNN" in out and "T=2" in out
    rep = json.loads((stage / "energy.json").read_text())
    assert rep["samples"] == 50 and rep["timesteps"] == 2 and rep["dataset"] == "mnist"
    assert rep["totals"]["macs"] == sum(TINY_MACS) and rep["energy_ratio"] > 0

    dest = tmp_path / "e5.json"
    args = _energy_args([str(stage / "model.pt"), "--batches", "1", "--batch-size", "20", "--timesteps", "5",
                         "--preset", "45nm-int8", "--json", str(dest), "--device", "cpu"])
    assert args.func(args) == 0
    rep5 = json.loads(dest.read_text())
    assert rep5["timesteps"] == 5 and rep5["preset"]["name"] == "45nm-int8"
    assert rep5["totals"]["e_mem"] == pytest.approx(2 * 5 * TINY_NEURONS * 10 * PJ)
    capsys.readouterr()

    ann = create_model("vgg4", **TINY)
    save_checkpoint(tmp_path / "ann" / "model.pt", ann, {"dataset": "mnist", "stage": "ann", "kind": "ann"})
    args = _energy_args([str(tmp_path / "ann"), "--batches", "1", "--batch-size", "10", "--device", "cpu"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "ANN  energy" in out and "E_SNN" not in out and "ratio" not in out
    assert json.loads((tmp_path / "ann" / "energy.json").read_text())["energy_ratio"] is None
    with pytest.raises(ConfigError, match="ANN"):
        a = _energy_args([str(tmp_path / "ann"), "--timesteps", "3", "--device", "cpu"])
        a.func(a)
    with pytest.raises(ConfigError, match="preset"):
        a = _energy_args([str(stage), "--preset", "7nm", "--device", "cpu"])
        a.func(a)
    assert not math.isnan(rep["totals"]["e_snn"])
