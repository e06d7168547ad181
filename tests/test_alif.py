"""Adaptive-threshold LIF (neuron/alif.py, Bellec et al. 2018): a hand-computed golden trajectory, fused == per-step
reference (spikes and gradients w.r.t. input, threshold and leak), the module through the neuron registry
(per-channel, learnable, streaming) and inside a model."""

import dataclasses
import os
import itertools

import pytest
import torch

from spikeforge.engine.checkpoint import load_checkpoint
from spikeforge.engine.recipe import parse_recipe
from spikeforge.engine.stages import run
from spikeforge.errors import ConfigError
from spikeforge.export.trace import trace_model
from spikeforge.models import create_model
from spikeforge.neuron import NEURONS
from spikeforge.neuron.alif import ALIFNeuron, alif_initial_state, alif_multistep, alif_step
from spikeforge.neuron.surrogate import ATan, PiecewiseLinear, STDB

# Two neurons (channels), threshold 1, beta 0.5, adaptation decay 0.5; neuron 0: leak 1, current 0.75; neuron 1:
# leak 0.5, current 1.25. Binary fractions, so every number is exact. With a = adaptation, A = 1 + 0.5 a:
#
# soft reset, neuron 0: t  a     A       P                   s  U
#                       0  0     1       .75                 0  .75
#                       1  0     1       1.5                 1  .5
#                       2  1     1.5     1.25                0  1.25
#                       3  .5    1.25    2.0                 1  .75
#                       4  1.25  1.625   1.5                 0  1.5
#                       5  .625  1.3125  2.25                1  .9375
# (the plain LIF would fire at t = 1, 2, 3, 5)
# soft reset, neuron 1: 0  0     1       1.25                1  .25
#                       1  1     1.5     .125 + 1.25 = 1.375 0  1.375
#                       2  .5    1.25    1.9375              1  .6875
#                       3  1.25  1.625   1.59375             0  1.59375
#                       4  .625  1.3125  2.046875            1  .734375
#                       5  1.3125 1.65625 1.6171875          0  1.6171875
# hard reset, neuron 1: 0  0     1       1.25                1  0
#                       1  1     1.5     1.25                0  1.25
#                       2  .5    1.25    1.875               1  0
#                       3  1.25  1.625   1.25                0  1.25
#                       4  .625  1.3125  1.875               1  0
#                       5  1.3125 1.65625 1.25               0  1.25
# (the plain LIF with hard reset would fire at every step); hard reset, neuron 0 fires at t = 1, 3, 5.
GOLDEN = {
    "soft": {"spikes": [[0, 1], [1, 0], [0, 1], [1, 0], [0, 1], [1, 0]],
             "threshold": [[1, 1], [1, 1.5], [1.5, 1.25], [1.25, 1.625], [1.625, 1.3125], [1.3125, 1.65625]],
             "membrane": [[.75, .25], [.5, 1.375], [1.25, .6875], [.75, 1.59375], [1.5, .734375],
                          [.9375, 1.6171875]]},
    "hard": {"spikes": [[0, 1], [1, 0], [0, 1], [1, 0], [0, 1], [1, 0]],
             "threshold": [[1, 1], [1, 1.5], [1.5, 1.25], [1.25, 1.625], [1.625, 1.3125], [1.3125, 1.65625]],
             "membrane": [[.75, 0], [0, 1.25], [.75, 0], [0, 1.25], [.75, 0], [0, 1.25]]},
}
CURRENTS = torch.tensor([[0.75, 1.25]] * 6, dtype=torch.float64).view(6, 1, 2)  # [T, B, C]


def _golden_neuron(reset, fused=True):
    n = ALIFNeuron(1.0, 1.0, channels=2, beta=0.5, adapt_decay=0.5, reset=reset, fused=fused).double()
    with torch.no_grad():
        n.leak.copy_(torch.tensor([1.0, 0.5]))
    return n


@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("fused", [True, False])
def test_golden_trajectory(reset, fused):
    n = _golden_neuron(reset, fused)
    assert n(CURRENTS).view(6, 2).tolist() == GOLDEN[reset]["spikes"]
    # the per-step reference exposes the effective threshold A[t] and the membrane after the reset
    state = alif_initial_state(CURRENTS[0], n.threshold)
    for t in range(6):
        eff = n.threshold + 0.5 * state.a
        s, state = alif_step(CURRENTS[t], state, n.threshold, n.leak, t, beta=0.5, adapt_decay=0.5,
                             surrogate=n.surrogate, reset=reset)
        assert eff.view(-1).tolist() == GOLDEN[reset]["threshold"][t], t
        assert state.u.view(-1).tolist() == GOLDEN[reset]["membrane"][t], t
        assert s.view(-1).tolist() == GOLDEN[reset]["spikes"][t], t


def test_beta_zero_is_the_lif():
    x = torch.rand(9, 3, 4, 5, dtype=torch.float64)
    alif = ALIFNeuron(0.4, 0.8, beta=0.0).double()
    lif = NEURONS.get("lif")(0.4, 0.8).double()
    assert torch.equal(alif(x), lif(x))


CASES = list(itertools.product(["soft", "hard"], [PiecewiseLinear(), STDB(), ATan()], [False, True]))


@pytest.mark.parametrize("reset,surrogate,per_channel", CASES, ids=lambda v: getattr(type(v), "__name__", str(v)))
def test_fused_equals_reference_with_gradients(reset, surrogate, per_channel):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(8, 3, 4, 5, 5, generator=g, dtype=torch.float64) * 0.8 + 0.6).requires_grad_()
    if per_channel:
        th = (torch.rand(4, 1, 1, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
        lk = (torch.rand(4, 1, 1, generator=g, dtype=torch.float64) * 0.5 + 0.5).requires_grad_()
    else:
        th = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
        lk = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    gout = torch.randn(x.shape, generator=g, dtype=torch.float64)
    results = []
    for fused in (True, False):
        s = alif_multistep(x, th, lk, beta=0.3, adapt_decay=0.7, surrogate=surrogate, reset=reset, fused=fused)
        results.append((s, torch.autograd.grad((s * gout).sum(), [x, th, lk])))
    (s1, g1), (s2, g2) = results
    assert torch.equal(s1, s2) and 0 < s1.sum() < s1.numel()
    lif = alif_multistep(x, th, lk, beta=0.0, adapt_decay=0.7, surrogate=surrogate, reset=reset)
    assert s1.sum() < lif.sum()  # adaptation removes spikes
    for a, b, name in zip(g1, g2, ("input", "threshold", "leak")):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), name
        assert a.abs().sum() > 0, name
    with torch.no_grad():  # the inference path (no autograd node) gives the same spikes
        assert torch.equal(alif_multistep(x, th, lk, beta=0.3, adapt_decay=0.7, surrogate=surrogate, reset=reset), s1)


def test_module_float32_fused_matches_reference_and_streams():
    torch.manual_seed(0)
    x = torch.rand(10, 2, 3, 4, 4)
    outs = []
    for fused in (True, False):
        n = NEURONS.get("alif")(0.6, 0.9, channels=3, learn_threshold=True, learn_leak=True, fused=fused,
                                beta=0.2, adapt_decay=0.8)
        xr = x.clone().requires_grad_()
        out = n(xr)
        (out * torch.arange(out.numel()).view_as(out).float().sin()).sum().backward()
        outs.append((out.detach(), xr.grad, n.threshold.grad, n.leak.grad))
    for a, b in zip(*outs):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    n.start_stream()
    with torch.no_grad():
        parts = torch.cat([n(x[:3]), n(x[3:4]), n(x[4:])])
    n.stop_stream()
    assert torch.equal(parts, outs[0][0])


def test_direct_input_and_checks():
    n = ALIFNeuron(1.0, 1.0, beta=0.5, adapt_decay=0.5)
    out = n(torch.full((1, 1, 1), 0.75), steps=6)
    assert out.view(-1).tolist() == [0, 1, 0, 1, 0, 1]
    assert "beta=0.5" in repr(n)
    for bad in ({"beta": -0.1}, {"adapt_decay": 1.5}, {"beta": float("nan")}, {"beta": "x"},
                {"order": "fire-integrate"}, {"tau": 3.0}):
        with pytest.raises(ConfigError):
            ALIFNeuron(**bad)
    with pytest.raises(ConfigError, match="alif"):
        n.start_carry()


def test_alif_inside_a_model():
    """``create_model(..., neuron="alif", neuron_params=...)``: every spiking layer is an ALIF neuron."""
    from spikeforge.models import create_model
    from spikeforge.models.spec import SNNConfig

    if "neuron" not in {f.name for f in dataclasses.fields(SNNConfig)}:
        pytest.skip("SNNConfig has no 'neuron' field yet (wired by the models refactor)")
    model = create_model("vgg4", num_classes=10, in_channels=3, input_size=32, spiking=True, timesteps=3,
                         neuron="alif", neuron_params={"beta": 0.2, "adapt_decay": 0.9})
    neurons = [m for m in model.modules() if isinstance(m, NEURONS.get("lif"))]
    assert neurons and all(isinstance(m, ALIFNeuron) and m.beta == 0.2 for m in neurons)
    x = torch.rand(2, 3, 32, 32)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p.dim() > 1)


HAS_MNIST = os.path.isdir(os.path.join(os.environ.get("SPIKEFORGE_DATA", ""), "mnist"))


@pytest.mark.skipif(not HAS_MNIST, reason="needs MNIST under $SPIKEFORGE_DATA")
def test_alif_from_a_recipe(tmp_path):
    """``snn: {neuron: alif, neuron_params: {...}}`` in a recipe: the engine builds, trains, checkpoints and reloads
    an ALIF SNN (and the checkpoint remembers the neuron model)."""
    raw = {"name": "alif", "seed": 0, "device": "cpu",
           "data": {"dataset": "mnist", "batch_size": 32, "test_batch_size": 256, "train_subset": 256,
                    "test_subset": 256},
           "model": {"arch": "vgg4", "width": 0.125, "hidden": [32]},
           "snn": {"neuron": "alif", "neuron_params": {"beta": 0.2, "adapt_decay": 0.9}, "threshold": 0.5},
           "stages": [{"name": "snn", "kind": "snn", "init": "scratch", "timesteps": 3, "epochs": 1,
                       "max_batches": 3, "lr": 1e-3}]}
    recipe = parse_recipe(raw)
    summary = run(recipe, tmp_path / "run", device=torch.device("cpu"), progress=False)
    assert summary["stages"][0]["stage"] == "snn" and 0.0 <= summary["stages"][0]["test_acc"] <= 1.0
    model, head = load_checkpoint(tmp_path / "run" / "snn" / "model.pt")
    neurons = model.neurons()
    assert neurons and all(isinstance(n, ALIFNeuron) for n in neurons)
    assert model.snn.neuron == "alif" and model.snn.neuron_params == {"beta": 0.2, "adapt_decay": 0.9}
    assert model.timesteps == 3


def test_unknown_neuron_in_a_recipe_is_one_clear_error():
    raw = {"data": {"dataset": "mnist"}, "model": {"arch": "vgg4"}, "snn": {"neuron": "hodgkin"},
           "stages": [{"name": "a", "kind": "ann"}]}
    with pytest.raises(ConfigError, match=r"snn.*neuron.*hodgkin.*alif.*lif"):
        parse_recipe(raw)


def test_alif_models_are_refused_by_export():
    model = create_model("vgg4", num_classes=10, in_channels=1, input_size=28, width=0.125, hidden=[16],
                         spiking=True, timesteps=2, neuron="alif")
    with pytest.raises(ConfigError, match="ALIFNeuron neurons cannot be exported"):
        trace_model(model)
