"""Neuron dynamics: hand-computed golden trajectories, the conversion identity, fused == reference (with gradients),
surrogate values, T=1 as a binary-step network, per-channel parameters and the module shell."""

import itertools
import math
import warnings
from dataclasses import dataclass

import pytest
import torch
from torch.utils import cpp_extension

from spikeforge.errors import ConfigError, ShapeError
from spikeforge.kernels import (SURROGATE_KERNELS, compiled_enabled, compiled_kernels, cpu_kernel, load_extension,
                                native_arch)
from spikeforge.neuron import NEURONS, SpikingNeuron
from spikeforge.neuron import functional as F
from spikeforge.neuron import surrogate as surrogates
from spikeforge.neuron.surrogate import ATan, FastSigmoid, PiecewiseLinear, STDB, Surrogate, get_surrogate

LIN = PiecewiseLinear()


def run(currents, threshold, leak, order, reset, fused=True, surrogate=LIN):
    x = torch.tensor(currents, dtype=torch.float64).view(-1, 1)
    return F.multistep(x, torch.tensor(threshold, dtype=torch.float64), torch.tensor(leak, dtype=torch.float64),
                       surrogate=surrogate, order=order, reset=reset, fused=fused).view(-1).tolist()


# Golden trajectories worked out by hand (threshold 1.0 unless noted; currents are binary fractions so the
# arithmetic is exact).
GOLDEN = [
    # IF, soft reset, integrate-then-fire: U' = .625, 1.25 -> spike (U=.25), .875, 1.5 -> spike (.5), 1.125 -> spike
    ("integrate-fire", "soft", 1.0, 1.0, [0.625] * 5, [0, 1, 0, 1, 1]),
    # IF, hard reset: .625, 1.25 -> spike (U=0), .625, 1.25 -> spike, .625
    ("integrate-fire", "hard", 1.0, 1.0, [0.625] * 5, [0, 1, 0, 1, 0]),
    # LIF leak .5, soft: .75; .375+.75=1.125 -> spike (.125); .0625+.75=.8125; .40625+.75=1.15625 -> spike
    ("integrate-fire", "soft", 1.0, 0.5, [0.75] * 4, [0, 1, 0, 1]),
    # LIF leak .5, hard: .75; 1.125 -> spike (0); .75; 1.125 -> spike
    ("integrate-fire", "hard", 1.0, 0.5, [0.75] * 4, [0, 1, 0, 1]),
    # fire-then-integrate: s[t] from U[t-1]; U = .625, 1.25, (spike) .875, 1.5, (spike) 1.125, (spike)
    ("fire-integrate", "soft", 1.0, 1.0, [0.625] * 6, [0, 0, 1, 0, 1, 1]),
    # fire-then-integrate, hard: U = .625, 1.25, spike -> 0 + .625, 1.25, spike -> .625
    ("fire-integrate", "hard", 1.0, 1.0, [0.625] * 6, [0, 0, 1, 0, 1, 0]),
    # fire-then-integrate LIF .5, soft: U=.75; .375+.75=1.125; spike: .5625+.75-1=.3125; .15625+.75=.90625
    ("fire-integrate", "soft", 1.0, 0.5, [0.75] * 4, [0, 0, 1, 0]),
    # threshold 2, soft, IF: 1.5, 3.0 -> spike (1.0), 2.5 -> spike (0.5), 2.0 -> spike (0)
    ("integrate-fire", "soft", 2.0, 1.0, [1.5] * 4, [0, 1, 1, 1]),
    # large input: soft reset subtracts only one threshold per step: 2.5 -> spike (1.5), 4.0 -> spike (3.0)
    ("integrate-fire", "soft", 1.0, 1.0, [2.5, 2.5], [1, 1]),
    # negative input never fires
    ("integrate-fire", "soft", 1.0, 1.0, [-0.5, 0.75, 0.5], [0, 0, 0]),
]


@pytest.mark.parametrize("order,reset,th,leak,currents,expected", GOLDEN)
@pytest.mark.parametrize("fused", [True, False])
def test_golden_trajectories(order, reset, th, leak, currents, expected, fused):
    assert run(currents, th, leak, order, reset, fused) == expected


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("current,threshold,steps", [(0.25, 1.0, 16), (0.375, 1.0, 40), (0.7, 0.5, 12),
                                                     (1.5, 1.0, 8), (0.0, 1.0, 10), (0.125, 0.25, 33)])
def test_conversion_identity(current, threshold, steps, fused):
    """IF + soft reset + constant current I: spike count = floor(T I / V_th) clipped to [0, T]."""
    s = run([current] * steps, threshold, 1.0, "integrate-fire", "soft", fused)
    assert sum(s) == min(max(math.floor(steps * current / threshold), 0), steps)


def test_ordering_a_delays_each_layer_by_one_step():
    """Ordering A: with L stacked layers the L-th layer's output is zero for the first L steps."""
    x = torch.full((6, 1), 1.5, dtype=torch.float64)
    th, lk = torch.tensor(1.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    s = x
    for _ in range(3):
        s = F.multistep(s * 1.5, th, lk, surrogate=LIN, order="fire-integrate", reset="soft")
    assert s[:3].sum() == 0 and s[3:].sum() > 0
    s = x
    for _ in range(3):
        s = F.multistep(s * 1.5, th, lk, surrogate=LIN, order="integrate-fire", reset="soft")
    assert s[0].item() == 1.0


SURROGATES = [PiecewiseLinear(), STDB(), FastSigmoid(), ATan()]


@pytest.mark.parametrize("order,reset", list(itertools.product(F.ORDERS, F.RESETS)))
@pytest.mark.parametrize("surrogate", SURROGATES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("compiled", [True, False], ids=["cpp", "torch"])
def test_fused_equals_reference_with_gradients(order, reset, surrogate, per_channel, compiled):
    """The fused path (compiled C++ kernel, or its pure-PyTorch twin) equals the per-step reference."""
    if compiled and cpu_kernel() is None:
        pytest.skip("no C++ compiler: the compiled kernel is unavailable")
    with compiled_kernels(compiled):
        _check_fused_equals_reference(order, reset, surrogate, per_channel)


def _check_fused_equals_reference(order, reset, surrogate, per_channel):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(7, 3, 4, 5, 5, generator=g, dtype=torch.float64) * 0.8 + 0.5).requires_grad_()
    if per_channel:
        th = (torch.rand(4, 1, 1, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
        lk = (torch.rand(4, 1, 1, generator=g, dtype=torch.float64) * 0.5 + 0.5).requires_grad_()
    else:
        th = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
        lk = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    gout = torch.randn(7, 3, 4, 5, 5, generator=g, dtype=torch.float64)
    results = []
    for fused in (True, False):
        s = F.multistep(x, th, lk, surrogate=surrogate, order=order, reset=reset, fused=fused)
        grads = torch.autograd.grad((s * gout).sum(), [x, th, lk])
        results.append((s, grads))
    (s1, g1), (s2, g2) = results
    assert torch.equal(s1, s2)
    assert s1.sum() > 0
    for a, b, name in zip(g1, g2, ("input", "threshold", "leak")):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), name
        assert a.abs().sum() > 0, name


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("order,reset", list(itertools.product(F.ORDERS, F.RESETS)))
@pytest.mark.parametrize("per_channel", [False, True])
def test_compiled_kernel_across_blocks_threads_and_channel_runs(steps, order, reset, per_channel):
    """More elements than one kernel block (1024), channel runs (11*13) that straddle block edges, two threads, and
    T = 1 (where the input itself is saved for backward): spikes and all gradients equal the reference."""
    if cpu_kernel() is None:
        pytest.skip("no C++ compiler: the compiled kernel is unavailable")
    g = torch.Generator().manual_seed(1)
    shape = (steps, 5, 7, 11, 13)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 0.8 + 0.5
    th = torch.rand(7, 1, 1, generator=g, dtype=torch.float64) + 0.5 if per_channel else torch.tensor(0.9, dtype=torch.float64)
    lk = torch.rand(7, 1, 1, generator=g, dtype=torch.float64) * 0.5 + 0.5 if per_channel else torch.tensor(0.8, dtype=torch.float64)
    gout = torch.randn(shape, generator=g, dtype=torch.float64)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        results = []
        for fused in (True, False):
            xx, tt, ll = (t.clone().requires_grad_() for t in (x, th, lk))
            s = F.multistep(xx, tt, ll, surrogate=LIN, order=order, reset=reset, fused=fused)
            grads = torch.autograd.grad((s * gout).sum(), [xx, tt, ll], allow_unused=True, materialize_grads=True)
            results.append((s, grads))
    finally:
        torch.set_num_threads(threads)
    (s1, g1), (s2, g2) = results
    assert torch.equal(s1, s2)
    for a, b, name in zip(g1, g2, ("input", "threshold", "leak")):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), name


def test_fused_float32_module_matches_reference_through_a_conv():
    """Gradients w.r.t. weights, threshold and leak agree when the neuron sits in a real layer stack."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    x = torch.rand(4, 2, 2, 6, 6)
    grads = []
    for fused in (True, False):
        neuron = SpikingNeuron(0.3, 0.9, learn_threshold=True, learn_leak=True, fused=fused)
        conv.zero_grad()
        cur = conv(x.flatten(0, 1)).view(4, 2, 3, 6, 6)
        out = neuron(cur, steps=4)
        (out * torch.arange(out.numel()).view_as(out).float().sin()).sum().backward()
        grads.append((out.detach(), conv.weight.grad.clone(), neuron.threshold.grad.clone(), neuron.leak.grad.clone()))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_gradient_matches_finite_differences_of_smooth_part():
    """Leak gradient through the recurrence: with a linear 'surrogate' path only (no spikes), dL/dlambda is exact."""
    x = torch.tensor([[0.1], [0.2], [0.15]], dtype=torch.float64)
    lk = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    th = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    s = F.multistep(x, th, lk, surrogate=PiecewiseLinear(1.0), order="integrate-fire", reset="soft")
    assert s.sum() == 0
    (gl,) = torch.autograd.grad(s.sum(), [lk])
    # s has surrogate slope g(z)/th wrt U' with g = 1 - |z| (z in (-1, 0)): dU'_t/dlambda computed by hand
    u1 = 0.1
    u2 = 0.7 * u1 + 0.2
    u3 = 0.7 * u2 + 0.15
    d1, d2 = 0.0, u1
    d3 = u2 + 0.7 * d2
    g = [1 - abs(u - 1) for u in (u1, u2, u3)]
    expected = g[0] * d1 + g[1] * d2 + g[2] * d3
    assert gl.item() == pytest.approx(expected, rel=1e-12)


def test_t1_is_binary_step_network_and_leak_gets_no_gradient():
    torch.manual_seed(1)
    x = torch.randn(1, 8, 16) * 2
    neuron = SpikingNeuron(0.7, 0.5, learn_threshold=True, learn_leak=True)
    x.requires_grad_()
    s = neuron(x)
    assert torch.equal(s[0], (x[0] >= 0.7).float())
    s.sum().backward()
    assert neuron.leak.grad.abs().item() == 0.0
    assert neuron.threshold.grad.abs().item() > 0


def test_linear_surrogate_values():
    lin = PiecewiseLinear()
    z = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    assert torch.allclose(lin.grad(z), torch.tensor([0, 0, 0.15, 0.3, 0.15, 0, 0]))


def test_stdb_surrogate_values():
    """Never-spiked neuron: dt = t + 999 as in the hybrid reference code (0.3 e^-0.01 (t+999) ~ 0); spiked the step
    before -> 0.3 e^-0.01."""
    stdb = STDB()
    spikes = torch.tensor([[1.0], [0.0], [0.0], [1.0], [0.0]])
    dt = F.time_since_last_spike(spikes)
    assert dt.view(-1).tolist() == [999.0, 1.0, 2.0, 3.0, 1.0]
    assert F.time_since_last_spike(torch.zeros(3, 1)).view(-1).tolist() == [999.0, 1000.0, 1001.0]
    g = stdb.grad(torch.zeros(5, 1), dt).view(-1)
    assert g[0].item() == pytest.approx(0.3 * math.exp(-9.99), rel=1e-5) and g[0] < 2e-5
    assert g[1].item() == pytest.approx(0.3 * math.exp(-0.01), rel=1e-6)
    assert g[3].item() == pytest.approx(0.3 * math.exp(-0.03), rel=1e-6)


def test_stdb_gradient_in_the_loop_uses_last_spike_time():
    """Through the neuron: an input current's gradient at step t is scaled by alpha e^{-beta dt}."""
    x = torch.tensor([[2.0], [0.1], [0.1]], dtype=torch.float64, requires_grad=True)
    th = torch.tensor(1.0, dtype=torch.float64)
    lk = torch.tensor(1.0, dtype=torch.float64)
    for fused in (True, False):
        s = F.multistep(x, th, lk, surrogate=STDB(), fused=fused)
        (gx,) = torch.autograd.grad(s[1].sum(), [x])
        # ds1/dI1 = g(dt=1) / th; ds1/dI0 = same (U'[1] = U[0] + I[1], reset path detached)
        assert gx[1].item() == pytest.approx(0.3 * math.exp(-0.01))
        assert gx[0].item() == pytest.approx(0.3 * math.exp(-0.01))
        assert gx[2].item() == 0.0


def test_surrogate_factory():
    assert get_surrogate("stdb") == STDB()
    assert get_surrogate({"name": "linear", "gamma": 0.5}) == PiecewiseLinear(0.5)
    with pytest.raises(ConfigError, match="unknown surrogate"):
        get_surrogate("nope")
    with pytest.raises(ConfigError, match="bad parameters"):
        get_surrogate({"name": "linear", "slope": 1})


def test_module_checks_and_constraints():
    with pytest.raises(ConfigError, match="leak"):
        SpikingNeuron(1.0, 1.5)
    with pytest.raises(ConfigError, match="order"):
        SpikingNeuron(order="sideways")
    n = SpikingNeuron(1.0, 0.9, channels=3, learn_leak=True)
    with pytest.raises(ShapeError, match="time-first"):
        n(torch.zeros(4, 3))
    with pytest.raises(ShapeError, match="channels"):
        n(torch.zeros(2, 4, 5, 8, 8))
    with torch.no_grad():
        n.leak.copy_(torch.tensor([1.3, -0.2, 0.5]))
        n.threshold.fill_(-1.0)
    n.constrain_()
    assert n.leak.tolist() == pytest.approx([1.0, 0.0, 0.5])
    assert (n.threshold > 0).all()


def test_direct_input_current_is_reused_each_step():
    n = SpikingNeuron(1.0, 1.0)
    out = n(torch.full((1, 1, 1), 0.25), steps=8)
    assert out.shape == (8, 1, 1) and out.sum() == 2
    assert n(torch.full((1, 1, 1), 0.25)).shape == (1, 1, 1)  # steps=None: as many steps as the input has
    assert torch.equal(n(torch.full((8, 1, 1), 0.25), steps=8), out)
    with pytest.raises(ShapeError, match="steps=3"):
        n(torch.zeros(2, 1, 1), steps=3)
    assert not hasattr(n, "timesteps")


def test_per_channel_threshold_broadcasts_over_channels():
    n = SpikingNeuron(1.0, 1.0, channels=2)
    with torch.no_grad():
        n.threshold.copy_(torch.tensor([0.5, 2.0]))
    out = n(torch.ones(1, 1, 2, 3, 3), steps=4)
    assert out[:, 0, 0].sum(0).unique().tolist() == [4.0]
    assert out[:, 0, 1].sum(0).unique().tolist() == [2.0]


def test_streaming_state_matches_one_shot():
    torch.manual_seed(0)
    x = torch.rand(10, 3, 4) * 0.6
    n = SpikingNeuron(0.5, 0.9)
    full = n(x)
    n.start_stream()
    with torch.no_grad():
        parts = torch.cat([n(x[:3]), n(x[3:7]), n(x[7:])])
    n.stop_stream()
    assert torch.equal(full, parts)


# ------------------------------------------------------------------------------------ registries and kernel loader

def test_surrogate_registry_round_trips_configs():
    assert set(surrogates.SURROGATES.names()) >= {"linear", "stdb", "fast_sigmoid", "atan", "exp"}
    for name in surrogates.SURROGATES:
        s = get_surrogate(name)
        assert s.to_config()["name"] == name and get_surrogate(s.to_config()) == s
    with pytest.raises(ConfigError, match="fast_sigmoid"):  # the error lists the known names
        get_surrogate("sigmoid")


def test_kernel_eligibility_is_declared_by_the_surrogate_not_its_class_name():
    """A subclass that changes grad() does not inherit the parent's kernel; a class is never matched by its name."""
    x, th = torch.rand(3, 2, 4), torch.tensor(0.5)
    assert F._param_layout(x, th, th, PiecewiseLinear()) == (1, 1)
    assert PiecewiseLinear(0.5).kernel_spec() == (SURROGATE_KERNELS["piecewise_linear"], 0.5, 0.0)

    @dataclass(frozen=True)
    class Steeper(PiecewiseLinear):
        def grad(self, z, dt=None):
            return 2 * super().grad(z, dt)

    @dataclass(frozen=True)
    class PiecewiseLinear2(Surrogate):  # a look-alike that does not declare a kernel
        gamma: float = 0.3

        def grad(self, z, dt=None):
            return self.gamma * (1.0 - z.abs()).clamp_min(0.0)

    PiecewiseLinear2.__name__ = "PiecewiseLinear"
    for s in (Steeper(), PiecewiseLinear2()):
        assert s.kernel_spec() is None and F._param_layout(x, th, th, s) is None
        assert F._kernel_layout(x, th, th, s) == (None, None)
    xr = x.clone().requires_grad_()
    assert torch.allclose(torch.autograd.grad(F.multistep(xr, th, th, surrogate=Steeper()).sum(), xr)[0],
                          torch.autograd.grad(F.multistep(xr, th, th, surrogate=Steeper(), fused=False).sum(), xr)[0])


def test_neuron_registry_and_common_constructor():
    assert NEURONS.get("lif") is SpikingNeuron and {"lif", "alif"} <= set(NEURONS.names())
    with pytest.raises(ConfigError, match="unknown neuron model"):
        NEURONS.get("izhikevich")
    with pytest.raises(ConfigError, match="no parameter"):
        SpikingNeuron(1.0, 0.9, beta=0.1)
    x = torch.rand(1, 2, 3, 4, 4)
    for name in NEURONS:
        n = NEURONS.get(name)(0.5, 0.9, channels=3, learn_threshold=True, learn_leak=True, surrogate="atan",
                              order="integrate-fire", reset="hard", fused=True)
        out = n(x, steps=4)
        assert out.shape == (4, 2, 3, 4, 4) and 0 < out.sum() < out.numel(), name
        out.sum().backward()
        assert n.threshold.grad.shape == (3,) and n.leak.grad.shape == (3,), name


def test_compiled_enabled_switch():
    assert compiled_enabled()
    with compiled_kernels(False):
        assert not compiled_enabled() and cpu_kernel() is None
    assert compiled_enabled()


def test_load_extension_warns_once_and_falls_back(monkeypatch, tmp_path):
    calls = []

    def broken(**kwargs):
        calls.append(kwargs)
        raise OSError("no compiler here")

    monkeypatch.setattr(cpp_extension, "load_inline", broken)
    src = tmp_path / "x.cpp"
    src.write_text("int f() { return 1; }\n")
    with pytest.warns(RuntimeWarning, match="test kernel unavailable .*no compiler here"):
        assert load_extension("spikeforge_test_broken", src, ["f"], what="test kernel") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_extension("spikeforge_test_broken", src, ["f"], what="test kernel") is None  # no retry/warning
    assert len(calls) == 1
    assert "-march=native" in calls[0]["extra_cflags"] or not native_arch()[1]
    assert calls[0]["name"] == "spikeforge_test_broken" + native_arch()[0]
    monkeypatch.setenv("SPIKEFORGE_NO_CPP", "1")
    assert load_extension("spikeforge_test_other", src, ["f"], native=False) is None and len(calls) == 1


def test_double_keeps_exact_initial_parameters():
    """``.double()`` gives theta = 0.8 exactly (not the float32 0.800000011920929); trained values convert as usual."""
    n = SpikingNeuron(0.8, 0.9, channels=3).double()
    assert n.threshold.dtype == torch.float64 and n.threshold.tolist() == [0.8, 0.8, 0.8]
    assert n.leak.tolist() == [0.9, 0.9, 0.9]
    m = SpikingNeuron(0.8, 0.9)
    with torch.no_grad():
        m.threshold.fill_(0.7)
    assert m.double().threshold.item() == torch.tensor(0.7, dtype=torch.float32).double().item()


@pytest.mark.parametrize("fused", [True, False])
def test_unused_gradients_are_zero_on_both_paths(fused):
    """T = 1 with fire-then-integrate: the spike does not depend on the input; both paths give zero gradients
    (the per-step reference used to raise autograd's "not used in the graph")."""
    x = torch.rand(1, 4, requires_grad=True)
    th = torch.tensor(0.5, requires_grad=True)
    lk = torch.tensor(0.9, requires_grad=True)
    n = SpikingNeuron(0.5, 0.9, order="fire-integrate", fused=fused)
    s = (F.multistep if fused else F.multistep_reference)(x, th, lk, surrogate=n.surrogate, order="fire-integrate")
    grads = torch.autograd.grad(s.sum(), [x, th, lk])
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)
