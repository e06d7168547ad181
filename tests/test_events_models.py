"""Models on event frames: the ``events`` input kind (frames enter the first layer step by step), the MLP for SHD,
the ANN twin, energy (first layer as ACs on input events), conversion's encode path, SAM, and the clear refusals
(attacks, mismatching T, wrong encoding, recipe keys)."""

from __future__ import annotations

import pytest
import torch

from spikeforge import create_model
from spikeforge.analysis.attacks import FGSM
from spikeforge.analysis.energy import count_ops, energy_report
from spikeforge.analysis.explain import SAM
from spikeforge.engine.recipe import parse_recipe
from spikeforge.errors import ConfigError, ShapeError
from spikeforge.methods.convert import ann_to_snn, balance_thresholds
from spikeforge.models import SilentLayerWarning

pytestmark = pytest.mark.filterwarnings("ignore", category=SilentLayerWarning)  # random weights, random events


def _frames(b=3, t=4, c=2, s=34, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, t, c, s, s, generator=g) < 0.1).float() * 2


def test_frames_enter_every_step():
    m = create_model("vgg4", dataset="nmnist", spiking=True, timesteps=4, width=0.25, hidden=[32]).eval()
    assert m.spec.input == "events" and m.snn.encoding == "events" and m.spec.mean == [0.0]
    x = _frames()
    seen = []
    first = m.features[0]
    h = first.register_forward_hook(lambda mod, i, o: seen.append(i[0].detach().clone()))
    with torch.no_grad():
        out = m(x)
    h.remove()
    assert out.shape == (3, 10)
    # the first conv ran once on all T frames folded, frame t of sample b at position t * B + b (no reuse)
    assert seen[0].shape == (4 * 3, 2, 34, 34)
    assert torch.equal(seen[0].view(4, 3, 2, 34, 34), x.transpose(0, 1))
    # cumulative accuracy reads prefixes of the recording; T = 4 equals a plain forward
    outs = m.forward_cumulative(x, [2, 4])
    assert torch.allclose(outs[1], out, atol=1e-5)
    with m.at_timesteps(2), torch.no_grad():
        assert torch.allclose(m(x[:, :2]), outs[0], atol=1e-5)
    with pytest.raises(ShapeError, match="4 frames"):
        m.forward_cumulative(x, [5])


def test_event_model_refusals():
    m = create_model("vgg4", dataset="nmnist", spiking=True, timesteps=4, width=0.25, hidden=[32])
    with pytest.raises(ShapeError, match="bin the data into 4 frames"):
        m(_frames(t=5))
    with pytest.raises(ShapeError, match=r"event frames \[B, T, 2, 34, 34\]"):
        m(torch.rand(2, 2, 34, 34))
    with pytest.raises(ConfigError, match="snn.encoding: events"):
        create_model("vgg4", dataset="nmnist", spiking=True, encoding="poisson")
    with pytest.raises(ConfigError, match="needs event-frame input"):
        create_model("vgg4", dataset="mnist", spiking=True, encoding="events")
    with pytest.raises(ConfigError, match="event frames"):
        FGSM(m, eps=0.1)(_frames(t=4), torch.zeros(3, dtype=torch.long))


def test_shd_mlp_and_ann_twin():
    snn = create_model("mlp", dataset="shd", spiking=True, hidden=[64, 32])
    assert snn.timesteps == 20 and snn.spec.in_channels == 700 and snn.spec.input_size == 1
    x = torch.poisson(torch.full((5, 20, 700), 0.05))
    out = snn(x)
    out.sum().backward()
    assert out.shape == (5, 20) and snn.classifier[1].weight.grad is not None
    ann = create_model("mlp", dataset="shd", hidden=[64, 32])
    assert ann(x).shape == (5, 20) and ann(x[:, :7]).shape == (5, 20)  # the ANN sees the mean frame, any T
    a = create_model("vgg4", dataset="nmnist", width=0.25, hidden=[32])
    assert a(_frames()).shape == (3, 10)


def test_energy_counts_first_layer_as_acs_on_events():
    m = create_model("vgg4", dataset="nmnist", spiking=True, timesteps=4, width=0.25, hidden=[32]).eval()
    x = _frames(b=2)
    counts = count_ops(m, x)
    first = counts.layers[0]
    assert first.input == "spikes" and first.role == "input"
    events_per_sample = float(x.sum()) / 2
    conv = m.features[0]
    # one accumulate per input event and outgoing synapse: k*k*C_out (the zero padding is neglected, as for spikes)
    assert first.acs == pytest.approx(events_per_sample * conv.out_channels * 9, rel=1e-5)
    rep = energy_report(m, x)
    assert rep["layers"][0]["snn_macs"] == 0 and rep["layers"][0]["e_snn"] > 0 and rep["encoding"] == "events"
    assert rep["energy_ratio"] > 1


def test_conversion_and_sam_on_event_models():
    ann = create_model("vgg4", dataset="nmnist", width=0.25, hidden=[32]).eval()
    snn = ann_to_snn(ann, create_model("vgg4", dataset="nmnist", spiking=True, timesteps=4).snn)
    x = _frames(b=4)
    th = balance_thresholds(snn, x, timesteps=4, percentile=99.0, progress=False)
    assert len(th) == 3 and all(t > 0 for t in th)
    with pytest.raises(ConfigError, match="cannot run 8 steps"):
        balance_thresholds(snn, x, timesteps=8, progress=False)
    with SAM(snn, target_layers=["features.4"]) as sam:
        maps = sam(x)
    assert maps.shape == (4, 4, 34, 34) and sam.summed.shape == (4, 34, 34)


def test_recipe_derives_events_model():
    r = parse_recipe({"data": {"dataset": "nmnist", "timesteps": 6}, "model": {"arch": "vgg4"},
                      "stages": [{"kind": "ann"}, {"kind": "convert"}, {"kind": "bntt"}]})
    assert r.model.input == "events" and r.model.in_channels == 2 and r.model.input_size == 34
    assert r.snn.timesteps == 6 and r.snn.encoding == "events"
    assert r.stages[1].sim_timesteps == 6 and r.stages[1].eval_timesteps == [6]
    assert r.stages[2].snn["encoding"] == "events"  # the BNTT stage's Poisson default gives way to the frames
    small = parse_recipe({"data": {"dataset": "dvs-gesture", "events": {"downsample": 4, "merge_polarity": True}},
                          "model": {"arch": "vgg4"}, "stages": [{"kind": "snn", "init": "scratch"}]})
    assert small.model.input_size == 32 and small.model.in_channels == 1 and small.snn.timesteps == 20
    bad = [({"snn": {"encoding": "direct"}}, "snn.encoding"),
           ({"stages": [{"kind": "convert", "eval_timesteps": [6, 12]}]}, "T <= 6"),
           ({"stages": [{"kind": "attack", "source": None}]}, "works on images"),
           ({"model": {"arch": "vgg4", "input": "image"}}, "event dataset")]
    for change, match in bad:
        raw = {"data": {"dataset": "nmnist", "timesteps": 6}, "model": {"arch": "vgg4"}, "stages": [{"kind": "ann"}]}
        raw.update(change)
        with pytest.raises(ConfigError, match=match):
            parse_recipe(raw)
