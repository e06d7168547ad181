"""GPU checks beyond the unit tests: a whole network on the fast path against the reference, and training throughput.

    PYTHONPATH=src python benchmarks/gpu_train.py [--device cuda] [--net vgg16] [--batch 64] [--timesteps 5]
        [--images 5120] [--epochs 2] [--json FILE] [--no-compile] [--selfcheck-only]

1. **Whole-network agreement**: the same SNN (same weights, same input) run once on the default neuron path (Triton
   on CUDA, the compiled kernel on CPU) and once on the pure-PyTorch fused path: logits, every parameter gradient and
   the per-layer spike counts are compared (max absolute difference; spike-count mismatches).
2. **Training throughput**: ``--epochs`` epochs over ``--images`` synthetic CIFAR-sized images (random pixels in
   [0, 1], random labels; the data live on the device, so only the network is timed), SGD with momentum, BPTT
   through all ``T`` steps. Reports images/s per epoch, the time per step and the peak memory.
3. ``torch.compile`` of the same SNN for inference at ``T = 1``: whether it compiles without a graph break, its output
   against eager, and eager vs compiled time per batch (the step fails on a compile error or a graph break).

``--selfcheck-only``: instead, the kernel self-check (``spikeforge.kernels.selfcheck``) of every configuration the
device's compiled kernel takes (surrogates x orderings x resets x scalar/per-channel parameters in float32; the linear
surrogate in the other dtypes), each with its cost; exit status 1 if any check fails.

``--dry-run`` sizes: ``--net issue9 --batch 4 --images 16 --epochs 1 --timesteps 2`` on the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_time import build, input_shape  # noqa: E402

from spikeforge.kernels import compiled_kernels, selfcheck  # noqa: E402
from spikeforge.neuron import functional as F  # noqa: E402
from spikeforge.neuron.surrogate import ATan, Exponential, FastSigmoid, PiecewiseLinear, STDB  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def agreement(net: str, timesteps: int, batch: int, device: torch.device) -> dict:
    """Default neuron path against the PyTorch fused path on one forward + backward of the whole net."""
    torch.manual_seed(0)
    model = build(net, True, timesteps, leak=0.9, threshold=0.5).to(device).train()
    x = torch.rand(input_shape(net, batch), device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    results = []
    for enabled in (True, False):
        model.zero_grad(set_to_none=True)
        counts: dict[str, float] = {}
        hooks = [m.register_forward_hook(lambda m, i, o, n=n: counts.__setitem__(n, float(o.detach().sum())))
                 for n, m in model.named_modules() if type(m).__name__ == "SpikingNeuron"]
        with compiled_kernels(enabled):
            out = model(x)
            nn.functional.cross_entropy(out, y).backward()
        for h in hooks:
            h.remove()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out.detach().clone(), grads, counts))
    (o1, g1, c1), (o2, g2, c2) = results
    grad_err = max(((g1[k] - g2[k]).abs().max() / (g2[k].abs().max() + 1e-12)).item() for k in g2)
    return {"logits_max_abs_diff": (o1 - o2).abs().max().item(), "grad_max_rel_diff": grad_err,
            "spike_count_mismatch_layers": [k for k in c1 if abs(c1[k] - c2[k]) > 0.5],
            "layers": len(c1), "params_compared": len(g2)}


def throughput(net: str, timesteps: int, batch: int, images: int, epochs: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = build(net, True, timesteps, leak=0.9, threshold=1.0).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    data = torch.rand((images, *input_shape(net, 1)[1:]), device=device)
    labels = torch.randint(0, 10, (images,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    per_epoch = []
    steps = 0
    for _ in range(epochs):
        _sync(device)
        t0 = time.perf_counter()
        for i in range(0, images - batch + 1, batch):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(data[i:i + batch]), labels[i:i + batch]).backward()
            opt.step()
            steps += 1
        _sync(device)
        per_epoch.append(time.perf_counter() - t0)
    done = (images // batch) * batch
    out = {"epoch_seconds": per_epoch, "images_per_s": [done / s for s in per_epoch],
           "step_ms": 1000 * per_epoch[-1] / max(1, images // batch)}
    if device.type == "cuda":
        out["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _median_ms(fn, device: torch.device, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 1000 * sorted(times)[len(times) // 2]


def compiled(net: str, timesteps: int, batch: int, device: torch.device, repeats: int = 10) -> dict:
    """``torch.compile`` of the SNN for inference: graph breaks (``torch._dynamo.explain``; 0 expected, the neuron
    kernels are custom ops), compile time, output against eager, eager vs compiled time per batch."""
    torch.manual_seed(0)
    model = build(net, True, timesteps, leak=0.9, threshold=0.5).to(device).eval()
    x = torch.rand(input_shape(net, batch), device=device)
    with torch.no_grad():
        ref = model(x)
        try:
            explanation = torch._dynamo.explain(model)(x)
            torch._dynamo.reset()
            fn = torch.compile(model)
            _sync(device)
            t0 = time.perf_counter()
            out = fn(x)
            _sync(device)
            compile_s = time.perf_counter() - t0
        except Exception as exc:  # report it; main() fails the step
            return {"compiles": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
        eager_ms = _median_ms(lambda: model(x), device, repeats)
        compiled_ms = _median_ms(lambda: fn(x), device, repeats)
    return {"compiles": True, "graph_breaks": explanation.graph_break_count,
            "break_reasons": [r.reason.splitlines()[0][:200] for r in explanation.break_reasons],
            "compile_s": compile_s, "max_abs_diff": (out - ref).abs().max().item(), "eager_ms": eager_ms,
            "compiled_ms": compiled_ms, "timesteps": timesteps, "batch": batch}


def selfcheck_all(device: torch.device) -> bool:
    """Print every self-check of ``device``'s compiled kernel with its cost; True if all pass (and there were any)."""
    dtypes = [torch.float64] if device.type == "cpu" else [torch.float16, torch.bfloat16, torch.float64]
    t0 = time.perf_counter()
    for surrogate in (PiecewiseLinear(), STDB(), FastSigmoid(), ATan(), Exponential()):
        F.check_kernels(device, surrogate=surrogate)
    for dtype in dtypes:
        F.check_kernels(device, dtype=dtype)
    results = selfcheck.results()
    for config, outcome in results.items():
        print(f"{'ok  ' if outcome.ok else 'FAIL'} {outcome.seconds * 1e3:8.1f} ms  {config.describe()}"
              + ("" if outcome.ok else f": {outcome.detail}"))
    secs = sorted(o.seconds for o in results.values())
    if not secs:
        print(f"no compiled kernel applies on {device}: nothing to check")
        return False
    print(f"{len(secs)} configurations in {time.perf_counter() - t0:.2f} s; per check: median "
          f"{secs[len(secs) // 2] * 1e3:.1f} ms, max {secs[-1] * 1e3:.1f} ms (the first ones include kernel builds)")
    return all(o.ok for o in results.values())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--net", default="vgg16", choices=("vgg16", "issue9", "quickstart"))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--timesteps", type=int, default=5)
    ap.add_argument("--images", type=int, default=5120)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--selfcheck-only", action="store_true", help="only the kernel self-check of every configuration")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    if a.selfcheck_only:
        return 0 if selfcheck_all(device) else 1
    res = {"device": str(device), "net": a.net, "batch": a.batch, "timesteps": a.timesteps,
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    res["agreement"] = agreement(a.net, a.timesteps, min(a.batch, 16), device)
    print("whole-net agreement (default path vs PyTorch fused path):", json.dumps(res["agreement"]))
    res["throughput"] = throughput(a.net, a.timesteps, a.batch, a.images, a.epochs, device)
    print("training throughput:", json.dumps(res["throughput"]))
    if not a.no_compile:
        res["compile"] = compiled(a.net, 1, a.batch, device, repeats=3 if device.type == "cpu" else 20)
        print("torch.compile (T=1 inference):", json.dumps(res["compile"]))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    ok = res["agreement"]["grad_max_rel_diff"] < 1e-3 and not res["agreement"]["spike_count_mismatch_layers"]
    if "compile" in res:
        ok = ok and res["compile"]["compiles"] and res["compile"]["graph_breaks"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
