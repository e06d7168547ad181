"""Monitors: spike/membrane recording (exact, memory-bounded, streaming-aware), dead-layer warnings, plots."""

from __future__ import annotations

import warnings

import pytest
import torch

import spikeforge as sf
from spikeforge.analysis.monitor import (DeadLayerWatch, SpikeMonitor, SpikeRecorder, plot_rate_heatmap,
                                         plot_rate_histogram, plot_raster)
from spikeforge.errors import ConfigError
from spikeforge.models import SilentLayerWarning
from spikeforge.neuron import NEURONS, SpikingNeuron

TINY = dict(width=0.125, hidden=[32])


def _snn(**kw):
    torch.manual_seed(0)
    return sf.create_model("vgg4", dataset="mnist", spiking=True, **{**TINY, **kw}).eval()


def _manual_lif(x, th, lk, soft=True):
    """Integrate-then-fire LIF (Rathi & Roy 2020): P = lk*U + I; s = P >= th; U = P - th*s (soft) or P*(1-s)."""
    u, spikes, mem = torch.zeros_like(x[0]), [], []
    for t in range(x.shape[0]):
        p = lk * u + x[t]
        s = (p >= th).float()
        u = p - th * s if soft else p * (1 - s)
        spikes.append(s)
        mem.append(u)
    return torch.stack(spikes), torch.stack(mem)


@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_membrane_and_spikes_are_exact(reset):
    neuron = SpikingNeuron(0.7, 0.8, reset=reset)
    x = torch.randn(6, 3, 5)
    with SpikeRecorder(neuron, membrane=True, membrane_dtype=torch.float32) as rec, torch.no_grad():
        out = neuron(x, steps=6)
    spikes, mem = _manual_lif(x, 0.7, 0.8, soft=reset == "soft")
    assert torch.equal(rec.spikes[""], out.bool()) and torch.equal(out, spikes)
    assert torch.allclose(rec.membrane[""], mem, atol=1e-6)


def test_recorder_layers_samples_dtypes_and_offload():
    m = _snn(timesteps=3, threshold=0.2)
    x = torch.rand(5, 1, 28, 28)
    with SpikeRecorder(m, layers=["features.4", "classifier.2"], samples=[1, 3], membrane=True) as rec:
        with torch.no_grad():
            m(x)
            m(x[:2])  # a smaller batch: only sample 1 exists
    assert list(rec.spikes) == ["features.4", "classifier.2"]
    s, u = rec.spikes["features.4"], rec.membrane["features.4"]
    assert s.dtype == torch.bool and u.dtype == torch.float16 and s.device.type == "cpu"
    assert s.shape == (3, 3, 16, 14, 14) and u.shape == s.shape  # T=3; samples 1, 3 of the first batch, 1 of the second
    assert rec.rates()["classifier.2"].shape == (3,)
    with SpikeRecorder(m, samples=2, device=None) as first2, torch.no_grad():
        m(x)
    assert first2.spikes["features.1"].shape[1] == 2
    assert torch.equal(first2.spikes["features.4"][:, 1], rec.spikes["features.4"][:, 0])
    with pytest.raises(ConfigError, match="no spiking layer.*'features.99'.*its spiking layers are"):
        SpikeRecorder(m, layers=["features.99"])
    with pytest.raises(ConfigError, match="no spiking layers"):
        SpikeRecorder(sf.create_model("vgg4", dataset="mnist", **TINY))


def test_streaming_evaluation_is_joined_along_time():
    m = _snn(timesteps=12, threshold=0.3, leak=0.9)
    x = torch.rand(3, 1, 28, 28)
    with SpikeRecorder(m, membrane=True, membrane_dtype=torch.float32) as whole, torch.no_grad():
        m.snn.time_chunk = None
        m(x)
    with SpikeRecorder(m, membrane=True, membrane_dtype=torch.float32) as chunked, torch.no_grad():
        m.snn.time_chunk = 5  # three chunks carrying the state: 5 + 5 + 2 steps
        m(x)
    for name in whole.spikes:
        assert len(chunked.segments[name]) == 1
        assert torch.equal(whole.spikes[name], chunked.spikes[name])
        assert torch.allclose(whole.membrane[name], chunked.membrane[name], atol=1e-5)


def test_alif_membranes_are_recorded():
    m = _snn(timesteps=4, neuron="alif", threshold=0.1)
    x = torch.rand(2, 1, 28, 28)
    with SpikeRecorder(m, membrane=True) as rec, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        m(x)
    assert isinstance(m.neurons()[0], NEURONS.get("alif"))
    assert rec.membrane["features.1"].shape == rec.spikes["features.1"].shape == (4, 2, 8, 28, 28)
    assert rec.spikes["classifier.2"].any()


def test_records_stay_within_the_byte_budget():
    m = _snn(timesteps=2)
    x = torch.rand(4, 1, 28, 28)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with SpikeRecorder(m, max_bytes=60_000) as rec, torch.no_grad():  # room for one [2, 4, 8, 28, 28] record
            for _ in range(3):
                m(x)
    budget = [w for w in caught if "max_bytes" in str(w.message)]
    assert rec.truncated and len(budget) == 1 and rec.bytes <= rec.max_bytes
    assert len(rec.segments["features.1"]) == 1 and not rec.segments["features.4"] and rec.bytes == 2 * 4 * 8 * 28 * 28


def test_dead_layer_watch_names_the_silent_layer_once():
    m = _snn(timesteps=2, threshold=0.2)
    with torch.no_grad():
        m.neurons()[1].threshold.fill_(1e9)  # features.4 can never fire; classifier.2 gets no input
    x = torch.rand(4, 1, 28, 28)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with DeadLayerWatch(m, window=3) as watch, torch.no_grad():
            for _ in range(8):
                m(x)
    silent = [w for w in caught if issubclass(w.category, SilentLayerWarning)]
    assert len(silent) == 1, [str(w.message) for w in silent]
    text = str(silent[0].message)
    assert "'features.4' (threshold 1e+09) and the 1 spiking layer after it" in text
    assert "over the last 3 batches (evaluation)" in text and "balance the thresholds" in text
    assert watch.silent == ["features.4", "classifier.2"] and watch.warned == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with watch, torch.no_grad():  # attached again (e.g. the next epoch): the same layers are not named again
            m(x)
        healthy = _snn(timesteps=2, threshold=0.05)
        with DeadLayerWatch(healthy, window=2), torch.no_grad():
            for _ in range(3):
                healthy(x)
        ann = sf.create_model("vgg4", dataset="mnist", **TINY)
        with DeadLayerWatch(ann, window=1) as nothing, torch.no_grad():  # an ANN: nothing to watch, no error
            ann(x)
        assert nothing.silent == []


def test_spike_monitor_still_counts_rates():
    m = _snn(timesteps=4, threshold=0.2)
    x = torch.rand(3, 1, 28, 28)
    with SpikeMonitor(m) as mon, SpikeRecorder(m) as rec, torch.no_grad():
        m(x)
    for name, rate in mon.rates().items():
        s = rec.spikes[name]
        assert rate == pytest.approx(float(s.sum()) / (s[0, 0].numel() * s.shape[1]), rel=1e-6)


def test_plots(tmp_path):
    m = _snn(timesteps=4, threshold=0.2)
    with SpikeRecorder(m, samples=2) as rec, torch.no_grad():
        m(torch.rand(3, 1, 28, 28))
    for i, ax in enumerate([plot_raster(rec.spikes["features.4"], sample=1, max_neurons=300),
                            plot_rate_heatmap(rec), plot_rate_histogram(rec.spikes)]):
        path = tmp_path / f"p{i}.png"
        ax.figure.savefig(path)
        assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="no spikes recorded"):
        plot_rate_heatmap({})
