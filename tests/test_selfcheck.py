"""Kernel self-check (kernels/selfcheck.py, wired into neuron/functional.py): a compiled kernel is used for a
configuration only after it agreed with the PyTorch fused path once in the process; a mismatch or a launch error
warns once and sends that configuration to the PyTorch path for the rest of the process.

CPU: the compiled C++ kernel (its check passes; injected mismatches are caught). The Triton variant runs in Triton's
CPU interpreter in a subprocess (the interpreter must be switched on before triton is imported), skipped when the
interpreter is unusable. The CUDA test checks every configuration on the GPU and its cost.
"""

import itertools
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import spikeforge
from spikeforge import kernels
from spikeforge.kernels import compiled_kernels, selfcheck
from spikeforge.neuron import functional as F
from spikeforge.neuron.surrogate import ATan, Exponential, FastSigmoid, PiecewiseLinear, STDB

LIN = PiecewiseLinear()


@pytest.fixture
def fresh(monkeypatch):
    """An empty self-check cache for the test (the process-wide one is restored afterwards)."""
    monkeypatch.delenv(selfcheck.ENV, raising=False)
    monkeypatch.setattr(selfcheck, "_RESULTS", {})


@pytest.fixture
def cpp():
    if kernels.cpu_kernel() is None:
        pytest.skip("no C++ compiler: the compiled kernel is unavailable")
    return kernels.cpu_kernel()


class _Broken:
    """The real C++ module with one output corrupted."""

    def __init__(self, real, flip_spike=False, grad_scale=1.0, fail=False):
        self.real, self.flip_spike, self.grad_scale, self.fail = real, flip_spike, grad_scale, fail

    def neuron_forward(self, *args):
        if self.fail:
            raise RuntimeError("illegal instruction in kernel launch\nsecond line")
        spikes, pre, u = self.real.neuron_forward(*args)
        if self.flip_spike:
            spikes = spikes.clone()
            spikes.view(-1)[3] = 1.0 - spikes.view(-1)[3]
        return spikes, pre, u

    def neuron_backward(self, *args):
        gin, gth, glk = self.real.neuron_backward(*args)
        return gin * self.grad_scale, gth, glk


def _inputs(per_channel=True, dtype=torch.float32, steps=4):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(steps, 2, 3, 4, 4, generator=g, dtype=dtype) * 0.8 + 0.5
    shape = (3, 1, 1) if per_channel else ()
    th = torch.rand(shape, generator=g, dtype=dtype) + 0.5
    lk = torch.rand(shape, generator=g, dtype=dtype) * 0.5 + 0.5
    return x, th, lk


def _run(x, th, lk, surrogate=LIN, order="integrate-fire", reset="soft"):
    xx, tt, ll = (t.clone().requires_grad_() for t in (x, th, lk))
    s = F.multistep(xx, tt, ll, surrogate=surrogate, order=order, reset=reset)
    gout = torch.linspace(-1, 1, s.numel(), dtype=s.dtype).view_as(s)
    return (s.detach(), *torch.autograd.grad((s * gout).sum(), [xx, tt, ll]))


def _equal(a, b):
    return all(torch.equal(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize("order,reset", list(itertools.product(F.ORDERS, F.RESETS)))
@pytest.mark.parametrize("surrogate", [LIN, STDB(), FastSigmoid(), ATan(), Exponential()],
                         ids=lambda s: type(s).__name__)
def test_cpp_kernel_passes_its_self_check(fresh, cpp, order, reset, surrogate):
    x, th, lk = _inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert F._kernel_layout(x, th, lk, surrogate, order, reset)[0] == "cpp"
    [(config, outcome)] = selfcheck.results().items()
    assert outcome.ok and outcome.detail == "ok", outcome
    assert (config.backend, config.device, config.order, config.reset) == ("cpp", "cpu", order, reset)
    assert config.surrogate == surrogate.kernel_spec() and config.per_channel and config.dtype == torch.float32
    assert outcome.seconds < 1.0, f"the self-check took {outcome.seconds:.3f} s"


def test_check_kernels_covers_orderings_resets_and_layouts(fresh, cpp):
    results = F.check_kernels("cpu")
    assert len(results) == 8 and all(o.ok for o in results.values())
    assert {(c.order, c.reset, c.per_channel) for c in results} == set(
        itertools.product(F.ORDERS, F.RESETS, (False, True)))
    assert F.check_kernels("cpu", torch.float64).keys() >= results.keys()  # cached, plus the float64 ones


@pytest.mark.parametrize("fault", ["flip_spike", "grad_scale", "fail"])
def test_injected_mismatch_falls_back_with_one_warning(fresh, cpp, monkeypatch, fault):
    x, th, lk = _inputs()
    with compiled_kernels(False):
        expected = _run(x, th, lk)
    broken = _Broken(cpp, **{fault: 2.0 if fault == "grad_scale" else True})
    monkeypatch.setattr(kernels, "cpu_kernel", lambda: broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = _run(x, th, lk)
        second = _run(x, th, lk)
        inference = F.multistep(x, th, lk, surrogate=LIN)
    messages = [str(w.message) for w in caught if "self-check" in str(w.message)]
    assert len(messages) == 1, messages
    msg = messages[0]
    assert "\n" not in msg and "cpp on cpu (integrate-fire, soft reset, surrogate kernel 0" in msg
    assert "float32, per-channel threshold/leak" in msg and "PyTorch path" in msg
    what = {"flip_spike": "forward spikes differ in 1 of", "grad_scale": "input gradient differs",
            "fail": "RuntimeError: illegal instruction in kernel launch"}[fault]
    assert what in msg
    assert _equal(first, expected) and _equal(second, expected) and torch.equal(inference, expected[0])
    assert F._kernel_layout(x, th, lk, LIN) == (None, None)
    [outcome] = selfcheck.results().values()
    assert not outcome.ok


def test_failure_is_per_configuration(fresh, cpp, monkeypatch):
    """A failed configuration does not condemn the others: each is checked on its own."""
    x, th, lk = _inputs()
    monkeypatch.setattr(kernels, "cpu_kernel", lambda: _Broken(cpp, flip_spike=True))
    with pytest.warns(RuntimeWarning, match="self-check failed"):
        assert F._kernel_layout(x, th, lk, LIN)[0] is None
    monkeypatch.setattr(kernels, "cpu_kernel", lambda: cpp)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert F._kernel_layout(x, th, lk, LIN, "fire-integrate", "hard")[0] == "cpp"
        assert F._kernel_layout(x.double(), th.double(), lk.double(), LIN)[0] == "cpp"
        assert F._kernel_layout(x, th, lk, LIN)[0] is None  # still off, no second warning
    assert sorted(o.ok for o in selfcheck.results().values()) == [False, True, True]


def test_env_var_skips_the_check(fresh, cpp, monkeypatch):
    monkeypatch.setenv(selfcheck.ENV, "1")
    monkeypatch.setattr(kernels, "cpu_kernel", lambda: _Broken(cpp, flip_spike=True))
    x, th, lk = _inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert F._kernel_layout(x, th, lk, LIN)[0] == "cpp"  # trusted unchecked
    assert selfcheck.results() == {}


def test_compare_and_describe():
    config = selfcheck.KernelConfig("triton", "cuda:0", "fire-integrate", "hard", (3, 2.0, 0.0), torch.float16,
                                    torch.float32, False)
    assert config.describe() == ("triton on cuda:0 (fire-integrate, hard reset, surrogate kernel 3 (2, 0), "
                                 "float16/float32 parameters, scalar threshold/leak)")
    assert selfcheck.compute_dtype(config) == torch.float32
    x, th, lk, gout = selfcheck.inputs(config._replace(device="cpu"))
    assert x.dtype == torch.float16 and th.dtype == torch.float32 and th.dim() == 0 and gout.dtype == torch.float32
    s = torch.tensor([0.0, 1.0, 1.0])
    g = torch.tensor([1.0, -2.0, 0.5])
    ok = (s, g, g.sum(), g.sum())
    assert selfcheck.compare(ok, ok, config) is None
    assert "spikes differ in 1 of 3" in selfcheck.compare((torch.tensor([1.0, 1.0, 1.0]), *ok[1:]), ok, config)
    assert "threshold gradient" in selfcheck.compare((s, g, g.sum() * 1.5, g.sum()), ok, config)
    assert "leak gradient" in selfcheck.compare((s, g, g.sum(), torch.tensor(float("nan"))), ok, config)


# ------------------------------------------------------------------------ Triton, in the CPU interpreter

_TRITON_SCRIPT = r"""
import json, warnings, torch
from spikeforge.kernels import compiled_kernels, selfcheck, triton_neuron
from spikeforge.neuron import functional as F
from spikeforge.neuron.surrogate import PiecewiseLinear
if not triton_neuron.triton_available("cpu"):
    print(json.dumps({"skip": triton_neuron.unavailable_reason() or "Triton interpreter unusable"})); raise SystemExit
LIN = PiecewiseLinear()
g = torch.Generator().manual_seed(3)
x = torch.randn(3, 2, 3, 4, generator=g) * 0.8 + 0.5
th = torch.rand(3, 1, generator=g) + 0.5
lk = torch.rand(3, 1, generator=g) * 0.5 + 0.5
out = {"clean": F._kernel_layout(x, th, lk, LIN)[0]}
out["clean_ok"] = [o.ok for o in selfcheck.results().values()]
real = F._triton_forward
def flipped(*args, **kwargs):
    spikes, pre, u = real(*args, **kwargs)
    spikes = spikes.clone(); spikes.view(-1)[5] = 1.0 - spikes.view(-1)[5]
    return spikes, pre, u
F._triton_forward = flipped
def run():
    xx, tt, ll = (t.clone().requires_grad_() for t in (x, th, lk))
    s = F.multistep(xx, tt, ll, surrogate=LIN, order="fire-integrate", reset="hard")
    return [s.detach(), *torch.autograd.grad(s.sum(), [xx, tt, ll])]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    got = [run(), run()]
with compiled_kernels(False):
    want = run()
out["warnings"] = [str(w.message) for w in caught if "self-check" in str(w.message)]
out["equal"] = all(torch.equal(a, b) for r in got for a, b in zip(r, want))
out["after"] = F._kernel_layout(x, th, lk, LIN, "fire-integrate", "hard")[0]
print(json.dumps(out))
"""


def _subprocess_env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", **extra)
    env.pop(selfcheck.ENV, None)
    pkg_root = str(Path(spikeforge.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([pkg_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def test_triton_interpreter_self_check_and_injected_mismatch():
    proc = subprocess.run([sys.executable, "-c", _TRITON_SCRIPT], capture_output=True, text=True, timeout=600,
                          env=_subprocess_env(TRITON_INTERPRET="1", SPIKEFORGE_TRITON_INTERPRET="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(out["skip"])
    assert out["clean"] == "triton" and out["clean_ok"] == [True]
    assert len(out["warnings"]) == 1, out["warnings"]
    assert "triton on cpu (fire-integrate, hard reset" in out["warnings"][0]
    assert "forward spikes differ in 1 of" in out["warnings"][0]
    assert out["equal"] and out["after"] is None


# ------------------------------------------------------------------------------------------------- CUDA

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_self_check_passes_everywhere_and_is_cheap(fresh):
    if not kernels.triton_available("cuda"):
        pytest.skip(f"Triton unusable on CUDA: {kernels.unavailable_reason() or 'smoke test failed'}")
    surrogates = [LIN, STDB(), FastSigmoid(), ATan(), Exponential()]
    for surrogate in surrogates:
        F.check_kernels("cuda", surrogate=surrogate)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        F.check_kernels("cuda", dtype=dtype)
    results = selfcheck.results()
    assert len(results) == 8 * (len(surrogates) + 3)
    bad = {c.describe(): o.detail for c, o in results.items() if not o.ok}
    assert not bad, bad
    secs = sorted(o.seconds for o in results.values())
    print(f"CUDA self-check: {len(secs)} configurations, median {secs[len(secs) // 2] * 1e3:.1f} ms, "
          f"max {secs[-1] * 1e3:.1f} ms (includes Triton JIT compiles), total {sum(secs):.2f} s")
    assert secs[len(secs) // 2] < 1.0
