"""Triton neuron kernel (kernels/triton_neuron.py) against the per-step reference: spikes identical, gradients w.r.t.
input, threshold and leak allclose, for every ordering x reset x surrogate x scalar/per-channel parameters.

Without a GPU the kernels run in Triton's CPU interpreter, which has to be switched on before triton is imported, so
those checks run once in a subprocess (this file run as a script) and each test reads its result. The CUDA tests run
in-process and skip without CUDA. Shapes are small so the interpreter stays fast.
"""

import itertools
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

import spikeforge
from spikeforge.neuron import functional as F
from spikeforge.neuron.surrogate import ATan, Exponential, FastSigmoid, PiecewiseLinear, STDB

SURROGATES = {"linear": PiecewiseLinear(), "stdb": STDB(), "fast_sigmoid": FastSigmoid(), "atan": ATan(),
              "exp": Exponential()}
CASES = list(itertools.product(F.ORDERS, F.RESETS, SURROGATES, ["scalar", "channel"]))
CASE_IDS = ["-".join(c) for c in CASES]
EXTRAS = ["float64", "float16_currents", "bfloat16_all", "run_steps_stream_and_expand", "cpu_needs_opt_in",
          "no_triton_env", "opcheck", "t1_takes_pytorch_path"]
SHAPE = (4, 3, 5, 6, 6)  # T, B, C, H, W: 540 elements per step = two programs of 512 (one partly masked)


# ----------------------------------------------------------------------------------------------------------- checks

def _inputs(per_channel, device, dtype=torch.float32, param_dtype=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=g, dtype=torch.float64) * 0.8 + 0.5
    if per_channel:
        th = torch.rand(SHAPE[2], 1, 1, generator=g, dtype=torch.float64) + 0.5
        lk = torch.rand(SHAPE[2], 1, 1, generator=g, dtype=torch.float64) * 0.5 + 0.5
    else:
        th, lk = torch.tensor(0.9, dtype=torch.float64), torch.tensor(0.8, dtype=torch.float64)
    gout = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    param_dtype = param_dtype or dtype
    return (x.to(device, dtype), th.to(device, param_dtype), lk.to(device, param_dtype),
            gout.to(device, torch.promote_types(dtype, param_dtype)))


def _spikes_and_grads(x, th, lk, gout, surrogate, order, reset, fused):
    x, th, lk = (t.detach().requires_grad_() for t in (x, th, lk))
    s = F.multistep(x, th, lk, surrogate=surrogate, order=order, reset=reset, fused=fused)
    return s.detach(), torch.autograd.grad((s * gout).sum(), [x, th, lk])


def compare(order, reset, surrogate_name, per_channel, device, dtype=torch.float32, param_dtype=None,
            ref_dtype=None, rtol=1e-5, atol=1e-6):
    """Triton through ``FusedMultiStep`` vs ``multistep_reference`` (run in ``ref_dtype``, default the same dtypes)."""
    surrogate = SURROGATES[surrogate_name]
    x, th, lk, gout = _inputs(per_channel == "channel", device, dtype, param_dtype)
    in_dtypes = (x.dtype, th.dtype, lk.dtype)
    assert F._kernel_layout(x, th, lk, surrogate)[0] == "triton", "the Triton path was not selected"
    s1, g1 = _spikes_and_grads(x, th, lk, gout, surrogate, order, reset, fused=True)
    if ref_dtype is not None:
        x, th, lk, gout = (t.to(ref_dtype) for t in (x, th, lk, gout))
    s2, g2 = _spikes_and_grads(x, th, lk, gout, surrogate, order, reset, fused=False)
    assert s1.dtype == torch.promote_types(dtype, param_dtype or dtype)
    assert torch.equal(s1.to(s2.dtype), s2), f"spikes differ in {(s1.to(s2.dtype) != s2).sum().item()} places"
    assert 0 < s1.sum() < s1.numel()
    for a, b, name, in_dtype in zip(g1, g2, ("input", "threshold", "leak"), in_dtypes):
        assert a.dtype == in_dtype, name
        # float32 sums over time and elements: absolute error relative to the largest gradient entry
        assert torch.allclose(a.to(b.dtype), b, rtol=rtol, atol=max(atol, rtol * b.abs().max().item())), \
            f"grad {name}: max abs diff {(a.to(b.dtype) - b).abs().max().item():.3g}"
        assert a.abs().sum() > 0, f"grad {name} is zero"


def check_run_steps(device):
    """Inference path: chunked (streaming) evaluation with u0, and a current repeated over time (stride 0)."""
    x, th, lk, _ = _inputs(True, device)
    assert F._kernel_layout(x, th, lk, LIN)[0] == "triton"
    for order, reset in itertools.product(F.ORDERS, F.RESETS):
        kw = dict(surrogate=LIN, order=order, reset=reset)
        full, u = F.run_steps(x, th, lk, **kw)
        ref, _, u_ref = F.forward_loop(x, th, lk, order, reset, keep_pre=False)
        assert torch.equal(full, ref) and torch.allclose(u, u_ref, rtol=1e-6, atol=1e-6)
        a, ua = F.run_steps(x[:1], th, lk, **kw)
        b, ub = F.run_steps(x[1:], th, lk, u0=ua, **kw)
        assert torch.equal(torch.cat([a, b]), full) and torch.allclose(ub, u, rtol=1e-6, atol=1e-6)
        rep = x[:1].expand(x.shape[0], *x.shape[1:])
        assert rep.stride(0) == 0
        assert torch.equal(F.run_steps(rep, th, lk, **kw)[0], F.forward_loop(rep, th, lk, order, reset)[0])


def check_opcheck(device):
    from spikeforge.kernels import triton_neuron  # noqa: F401  (registers the ops)

    assert hasattr(torch.ops.spikeforge, "neuron_multistep_fwd") and hasattr(torch.ops.spikeforge,
                                                                             "neuron_multistep_bwd")
    fwd, bwd = torch.ops.spikeforge.neuron_multistep_fwd.default, torch.ops.spikeforge.neuron_multistep_bwd.default
    x, th, lk, gout = _inputs(True, device)
    th, lk = th.reshape(-1), lk.reshape(-1)
    inner = SHAPE[3] * SHAPE[4]
    torch.library.opcheck(fwd, (x, th, lk, inner, True, True, True, None))
    torch.library.opcheck(fwd, (x, th, lk, inner, False, False, False, torch.rand(SHAPE[1:], device=device)))
    _, pre, _ = fwd(x, th, lk, inner, True, True, True, None)
    torch.library.opcheck(bwd, (gout, pre, th, lk, inner, True, True, 1, 0.3, 0.01, True, True))
    torch.library.opcheck(bwd, (gout, pre, th, lk, inner, False, False, 3, 2.0, 0.0, False, True))


def check_t1_takes_pytorch_path(device):
    """At T = 1 the dispatcher picks the PyTorch fused path (faster on the GPU); results equal the reference, and the
    kernel itself still handles T = 1 when called directly."""
    x, th, lk, gout = _inputs(True, device)
    assert F._kernel_layout(x[:2], th, lk, LIN)[0] == "triton"
    assert F._kernel_layout(x[:1], th, lk, LIN)[0] != "triton"
    s1, g1 = _spikes_and_grads(x[:1], th, lk, gout[:1], LIN, "integrate-fire", "soft", fused=True)
    s2, g2 = _spikes_and_grads(x[:1], th, lk, gout[:1], LIN, "integrate-fire", "soft", fused=False)
    assert torch.equal(s1, s2) and all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(g1, g2))
    spikes, _, u = torch.ops.spikeforge.neuron_multistep_fwd(x[:1], th.reshape(-1), lk.reshape(-1),
                                                             SHAPE[3] * SHAPE[4], True, True, False, None)
    ref, _, u_ref = F.forward_loop(x[:1], th, lk, keep_pre=False)
    assert torch.equal(spikes, ref) and torch.allclose(u, u_ref)


LIN = PiecewiseLinear()


# ------------------------------------------------------------------------------- CPU, in Triton's interpreter

def _interpreter_suite() -> dict:
    """Run every check on CPU with the interpreter (this process must have TRITON_INTERPRET=1 set)."""
    try:
        import triton  # noqa: F401
    except Exception as exc:
        return {"__skip__": f"import triton failed: {type(exc).__name__}: {exc}"}
    from spikeforge.kernels import triton_neuron

    if not triton_neuron.triton_available("cpu"):
        return {"__skip__": f"Triton interpreter unusable: {triton_neuron.unavailable_reason() or 'smoke test failed'}"}
    results = {}

    def record(key, fn, *args, **kwargs):
        try:
            fn(*args, **kwargs)
            results[key] = "ok"
        except Exception:
            results[key] = traceback.format_exc(limit=4)

    for case, case_id in zip(CASES, CASE_IDS):
        record(case_id, compare, *case, device="cpu")
    record("float64", compare, "integrate-fire", "soft", "stdb", "channel", "cpu", dtype=torch.float64,
           rtol=1e-10, atol=1e-12)
    record("float16_currents", compare, "fire-integrate", "hard", "atan", "channel", "cpu", dtype=torch.float16,
           param_dtype=torch.float32, ref_dtype=torch.float32, rtol=1e-3, atol=1e-3)
    record("bfloat16_all", compare, "integrate-fire", "soft", "linear", "scalar", "cpu", dtype=torch.bfloat16,
           ref_dtype=torch.float32, rtol=2e-2, atol=2e-2)
    record("run_steps_stream_and_expand", check_run_steps, "cpu")

    def cpu_needs_opt_in():
        x, th, lk, _ = _inputs(False, "cpu")
        os.environ.pop("SPIKEFORGE_TRITON_INTERPRET")
        try:
            assert F._kernel_layout(x, th, lk, LIN)[0] != "triton"
        finally:
            os.environ["SPIKEFORGE_TRITON_INTERPRET"] = "1"
        assert F._kernel_layout(x, th, lk, LIN)[0] == "triton"

    def no_triton_env():
        x, th, lk, _ = _inputs(False, "cpu")
        os.environ["SPIKEFORGE_NO_TRITON"] = "1"
        try:
            assert F._kernel_layout(x, th, lk, LIN)[0] != "triton"
            assert torch.equal(F.multistep(x, th.requires_grad_(), lk, surrogate=LIN),
                               F.multistep(x, th, lk, surrogate=LIN, fused=False))
        finally:
            del os.environ["SPIKEFORGE_NO_TRITON"]

    record("cpu_needs_opt_in", cpu_needs_opt_in)
    record("no_triton_env", no_triton_env)
    record("opcheck", check_opcheck, "cpu")
    record("t1_takes_pytorch_path", check_t1_takes_pytorch_path, "cpu")
    return results


def _subprocess_env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", **extra)
    pkg_root = str(Path(spikeforge.__file__).resolve().parents[1])  # the same spikeforge as this process
    env["PYTHONPATH"] = os.pathsep.join([pkg_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


@pytest.fixture(scope="module")
def interpreter_results():
    proc = subprocess.run([sys.executable, __file__, "--interpreter-suite"], capture_output=True, text=True,
                          timeout=600, env=_subprocess_env(TRITON_INTERPRET="1", SPIKEFORGE_TRITON_INTERPRET="1"))
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        pytest.fail(f"interpreter suite crashed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    results = json.loads(lines[-1])
    if "__skip__" in results:
        pytest.skip(results["__skip__"])
    return results


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_interpreter_matches_reference(interpreter_results, case_id):
    assert interpreter_results[case_id] == "ok", interpreter_results[case_id]


@pytest.mark.parametrize("check", EXTRAS)
def test_interpreter_extras(interpreter_results, check):
    """float64 / half inputs, the inference path, the CPU opt-in, SPIKEFORGE_NO_TRITON and opcheck."""
    assert interpreter_results[check] == "ok", interpreter_results[check]


def test_missing_triton_falls_back():
    """With triton unimportable, triton_available() is False and the fused neuron still works (C++/PyTorch path)."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from spikeforge.kernels import triton_neuron as T\n"
        "from spikeforge.neuron import functional as F\n"
        "from spikeforge.neuron.surrogate import PiecewiseLinear\n"
        "assert not T.triton_available() and not T.triton_available('cpu') and T.unavailable_reason()\n"
        "x = torch.rand(3, 2, 4, requires_grad=True)\n"
        "th = torch.tensor(0.5)\n"
        "assert F._kernel_layout(x, th, th, PiecewiseLinear())[0] != 'triton'\n"
        "F.multistep(x, th, th, surrogate=PiecewiseLinear()).sum().backward()\n"
        "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=_subprocess_env(SPIKEFORGE_TRITON_INTERPRET="1"))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_cpu_tensors_never_touch_triton_by_default(monkeypatch):
    monkeypatch.delenv("SPIKEFORGE_TRITON_INTERPRET", raising=False)
    x = torch.rand(3, 2, 4)
    assert F._triton_layout(x, torch.tensor(0.5), torch.tensor(1.0), LIN) is None


# ------------------------------------------------------------------------------------------------------ CUDA

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _need_cuda_triton():
    from spikeforge.kernels import triton_neuron

    if not triton_neuron.triton_available("cuda"):
        pytest.skip(f"Triton unusable on CUDA: {triton_neuron.unavailable_reason() or 'smoke test failed'}")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("order,reset,surrogate,params", CASES, ids=CASE_IDS)
def test_cuda_matches_reference(order, reset, surrogate, params):
    _need_cuda_triton()
    compare(order, reset, surrogate, params, "cuda")


@pytest.mark.gpu
@cuda
def test_cuda_other_dtypes_and_inference_path():
    _need_cuda_triton()
    compare("integrate-fire", "soft", "stdb", "channel", "cuda", dtype=torch.float64, rtol=1e-10, atol=1e-12)
    compare("fire-integrate", "hard", "atan", "channel", "cuda", dtype=torch.float16, param_dtype=torch.float32,
            ref_dtype=torch.float32, rtol=1e-3, atol=1e-3)
    compare("integrate-fire", "soft", "linear", "scalar", "cuda", dtype=torch.bfloat16, ref_dtype=torch.float32,
            rtol=2e-2, atol=2e-2)
    check_run_steps("cuda")
    check_t1_takes_pytorch_path("cuda")


@pytest.mark.gpu
@cuda
def test_cuda_custom_op_registered_and_opcheck():
    _need_cuda_triton()
    check_opcheck("cuda")


if __name__ == "__main__" and sys.argv[1:] == ["--interpreter-suite"]:
    torch.set_num_threads(1)
    print(json.dumps(_interpreter_suite()))
