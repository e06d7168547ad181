"""``torch.compile`` of spikeforge SNNs: the neuron traces into the graph (the compiled CPU kernel and the Triton kernel
are torch custom ops with fake implementations), training and inference match eager, and the batch size may change
without a recompile (``torch._dynamo.mark_dynamic(x, 0)``, or automatically on the second size).

``torch.compile(model, dynamic=True)`` (every dimension symbolic, image sizes too) currently fails inside Inductor for
any convolution fed by a reshaped activation ("cannot determine truth value of Relational" while sorting symbolic
strides, pytorch/pytorch#185510, also without spikeforge); dynamic batch sizes work as above.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import spikeforge

from spikeforge.kernels import cpu_kernel
from spikeforge.models import create_model


def _model(timesteps, device="cpu"):
    torch.manual_seed(0)
    return create_model("vgg4", num_classes=10, in_channels=1, input_size=28, width=0.125, hidden=[32], spiking=True,
                        timesteps=timesteps, mean=[0.1307], std=[0.3081], dropout=0.0).to(device)


def _step(fn, model, x, y):
    model.zero_grad(set_to_none=True)
    out = fn(x)
    nn.functional.cross_entropy(out, y).backward()
    return out.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(a, b):
    (out_a, grads_a), (out_b, grads_b) = a, b
    assert torch.allclose(out_a, out_b, rtol=1e-5, atol=1e-5), (out_a - out_b).abs().max()
    assert grads_a.keys() == grads_b.keys() and len(grads_a) >= 4
    for k in grads_b:
        assert torch.allclose(grads_a[k], grads_b[k], rtol=1e-4, atol=1e-6), k


def _neuron_ops(explanation):
    names = set()
    for graph in explanation.graphs:
        for mod in graph.modules():
            if hasattr(mod, "graph"):
                names |= {str(n.target) for n in mod.graph.nodes if n.op == "call_function"}
    return {n for n in names if n.startswith("spikeforge.")}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_no_graph_break_and_the_kernel_is_in_the_graph():
    if cpu_kernel() is None:
        pytest.skip("no C++ compiler: the compiled kernel is unavailable")
    model = _model(2).train()
    explanation = torch._dynamo.explain(model)(torch.rand(4, 1, 28, 28))
    assert explanation.graph_break_count == 0, [r.reason[:300] for r in explanation.break_reasons]
    assert explanation.graph_count == 1
    assert {"spikeforge.neuron_cpu_fwd", "spikeforge.neuron_cpu_bwd"} <= _neuron_ops(explanation)


def test_compiled_training_matches_eager_with_dynamic_batch():
    model = _model(2).train()
    compiled = torch.compile(model)
    for batch in (4, 6):
        x = torch.rand(batch, 1, 28, 28)
        y = torch.randint(0, 10, (batch,))
        torch._dynamo.mark_dynamic(x, 0)
        if batch == 6:  # a new batch size reuses the graph compiled for a symbolic one
            torch._dynamo.config.error_on_recompile = True
        try:
            got = _step(compiled, model, x, y)
        finally:
            torch._dynamo.config.error_on_recompile = False
        _assert_same(got, _step(model, model, x, y))


def test_compiled_t1_inference_matches_eager():
    model = _model(1).eval()
    compiled = torch.compile(model)
    with torch.no_grad():
        for batch in (3, 5):
            x = torch.rand(batch, 1, 28, 28)
            torch._dynamo.mark_dynamic(x, 0)  # one graph for every batch size
            assert torch.allclose(compiled(x), model(x), rtol=1e-5, atol=1e-5)


def test_cpu_custom_ops_pass_opcheck():
    if cpu_kernel() is None:
        pytest.skip("no C++ compiler: the compiled kernel is unavailable")
    fwd, bwd = torch.ops.spikeforge.neuron_cpu_fwd.default, torch.ops.spikeforge.neuron_cpu_bwd.default
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 3, 4, generator=g) * 0.8 + 0.5
    th, lk = torch.rand(3, generator=g) + 0.5, torch.rand(3, generator=g) * 0.5 + 0.5
    torch.library.opcheck(fwd, (x, th, lk, 4, True, True, True, None))
    torch.library.opcheck(fwd, (x, th, lk, 4, False, False, False, torch.rand(2, 3, 4)))
    _, pre, _ = fwd(x, th, lk, 4, True, True, True, None)
    gout = torch.randn(3, 2, 3, 4, generator=g)
    torch.library.opcheck(bwd, (gout, pre, th, lk, 4, True, True, 1, 0.3, 0.01, True, True))
    torch.library.opcheck(bwd, (gout, pre, th, lk, 4, False, False, 3, 2.0, 0.0, False, True))


_TRITON_SCRIPT = r"""
import json, torch
from spikeforge.kernels import triton_neuron
from spikeforge.models import create_model
if not triton_neuron.triton_available("cpu"):
    print(json.dumps({"skip": triton_neuron.unavailable_reason() or "Triton interpreter unusable"})); raise SystemExit
torch.manual_seed(0)
model = create_model("vgg4", num_classes=10, in_channels=1, input_size=28, width=0.125, hidden=[32], spiking=True,
                     timesteps=2, mean=[0.1307], std=[0.3081], dropout=0.0).train()
x = torch.rand(2, 1, 28, 28)
explanation = torch._dynamo.explain(model)(x)
ops = set()
for graph in explanation.graphs:
    for mod in graph.modules():
        if hasattr(mod, "graph"):
            ops |= {str(n.target) for n in mod.graph.nodes if str(n.target).startswith("spikeforge.")}
torch._dynamo.reset()
def step(fn):
    model.zero_grad(set_to_none=True)
    out = fn(x)
    out.sum().backward()
    return [out.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None]
got, want = step(torch.compile(model, backend="aot_eager")), step(model)
print(json.dumps({"breaks": explanation.graph_break_count, "ops": sorted(ops),
                  "equal": len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))}))
"""


def test_triton_path_traces_without_graph_break_in_the_interpreter():
    """The Triton custom ops trace too (Triton's CPU interpreter stands in for the GPU; Dynamo + AOTAutograd)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TRITON_INTERPRET="1", SPIKEFORGE_TRITON_INTERPRET="1")
    pkg_root = str(Path(spikeforge.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([pkg_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.run([sys.executable, "-c", _TRITON_SCRIPT], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(out["skip"])
    assert out["breaks"] == 0 and out["equal"]
    assert {"spikeforge.neuron_multistep_fwd", "spikeforge.neuron_multistep_bwd"} <= set(out["ops"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_compiled_training_matches_eager_without_graph_break():
    model = _model(4, "cuda").train()
    x = torch.rand(8, 1, 28, 28, device="cuda")
    y = torch.randint(0, 10, (8,), device="cuda")
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, [r.reason[:300] for r in explanation.break_reasons]
    torch._dynamo.reset()
    _assert_same(_step(torch.compile(model), model, x, y), _step(model, model, x, y))
