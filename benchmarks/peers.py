"""spikeforge against snnTorch and SpikingJelly on the same nets, with matched neuron dynamics (issue 9).

    pip install -e '.[bench]'            # snntorch, spikingjelly (benchmark-only extra)
    PYTHONPATH=src python benchmarks/peers.py --check                 # spike-train agreement only
    PYTHONPATH=src python benchmarks/peers.py [--nets issue9 quickstart vgg16] [--timesteps 1 5 25] [--repeats 10]
        [--batch N] [--threads N] [--peer-input once|repeat] [--out FILE.md] [--json FILE.json] [--no-memory]

Nets (built by ``benchmarks/step_time.py``; the peers' nets are translated layer by layer from the spikeforge twin and
get the same weights): ``issue9`` = conv64-pool-conv128-pool-conv256-pool-fc10, bias-free, 32x32x3, batch 32;
``vgg16`` at CIFAR size (batch ``--batch``, default 32); ``quickstart`` = MNIST VGG4 at half width with a
1024 hidden layer, batch 128 (dropout 0 here, so the three nets compute the same function).

Matched dynamics (every library): ``U'[t] = lambda U[t-1] + I[t]; s[t] = H(U'[t] - theta); U[t] = U'[t] - theta
s[t]`` (integrate-then-fire, soft reset, reset detached), spike when ``U' >= theta``, piecewise-linear surrogate
``max(0, 1 - |U' - theta|)`` (theta = 1), readout = sum over time of the last linear layer.

* spikeforge: ``SpikingNeuron`` (fused multi-step path), surrogate ``linear`` with gamma 1.
* SpikingJelly 2.0: ``neuron.LIFNode(tau=1/(1-lambda), decay_input=False, v_reset=None, detach_reset=True,
  surrogate_function=surrogate.PiecewiseQuadratic(alpha=1))`` in multi-step mode (``step_mode='m'``; convs, pools
  and linears fold time into the batch). Its charge is ``H = V - V/tau + X``; with the default leak 0.875
  (tau = 8, a power of two) ``V - V/tau`` rounds exactly like ``0.875 V``, so the membranes agree bit for bit. On CPU
  SpikingJelly picks its own LIF operator (``torch.ops.sj_lif``, a Torch loop with a hand-written backward) for
  built-in surrogates; there is no CuPy/Triton backend on CPU. ``lambda = 1`` uses ``IFNode``.
* snnTorch 1.0: ``snn.Leaky(beta=lambda, threshold=theta, reset_mechanism="subtract", reset_delay=False)`` called
  once per step (its usual time loop), with a piecewise-linear surrogate callable (same as the others, ``>=``).
  snnTorch's default ``reset_delay=True`` keeps the *pre-reset* membrane and subtracts ``theta`` at the next step
  *after* the leak (``V[t] = beta V[t-1] + I[t] - theta s[t-1]``), so it equals ours only for ``beta = 1``; with
  ``reset_delay=False`` the membrane is ours, but the spike decision at ``t`` also subtracts ``theta`` once more
  when the post-reset membrane ``U[t-1]`` was still above ``theta`` (pre-fire membrane above ``2 theta``), so the
  trains can differ in those (rare) neurons. Its reset term is also not detached from the spike's gradient.
  ``--check`` reports the mismatch counts of both settings.

``--peer-input once`` (default): like spikeforge's direct encoding, every library computes the first conv once and
feeds that current at every step (same work in all three). ``repeat``: the peers' tutorial style (snnTorch calls the
whole net, first conv included, at every step; SpikingJelly repeats the image T times).

Timing: all configurations of one net (ANN, then each library at each T) run interleaved in one process, round-robin
``--repeats`` times after ``--warmup`` calls, median reported; training step = forward + cross-entropy + backward +
SGD step. Inference: T=1, ``eval()``, ``torch.no_grad()``, images/s = batch / median call time.

Peak memory (CPU): each configuration runs in a fresh subprocess; after building the net, optimizer, input and
labels it resets the kernel's resident high-water mark (``echo 5 > /proc/self/clear_refs``) and takes the current
``VmRSS`` as the baseline, runs ``--mem-steps`` training steps and reports ``VmHWM - baseline`` (from
``/proc/self/status``): the extra resident memory of training (activations saved for backward, gradients, allocator
caching). Where clear_refs is unavailable it falls back to ``ru_maxrss - baseline`` (a lower bound: imports may set a
higher mark). Same method for every library and the ANN.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_time import build, input_shape, time_interleaved, train_step  # noqa: E402

from spikeforge.layers import Readout  # noqa: E402
from spikeforge.neuron import SpikingNeuron  # noqa: E402

NETS = ("issue9", "vgg16", "quickstart")
DEFAULT_BATCH = {"issue9": 32, "vgg16": 32, "quickstart": 128}
LIBS = ("spikeforge", "snntorch", "spikingjelly")
LEAK = 0.875  # 1 - 1/8: SpikingJelly's V - V/tau is then exactly lambda*V
THRESHOLD = 1.0


# --------------------------------------------------------------------------------------------------------------
# peers
def available_peers() -> list[str]:
    out = []
    for lib in ("snntorch", "spikingjelly"):
        try:
            __import__(lib)
            out.append(lib)
        except Exception:  # noqa: BLE001 - an unusable peer is simply skipped
            pass
    return out


class PiecewiseLinearSpike(torch.autograd.Function):
    """``H(x)`` decided as ``x >= 0`` forward, ``max(0, 1 - |x|)`` backward (spikeforge's ``linear`` with gamma 1)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (1.0 - x.abs()).clamp_min(0.0)


def pwl_spike(x: torch.Tensor) -> torch.Tensor:
    return PiecewiseLinearSpike.apply(x)


def plan_of(model: nn.Module) -> list[nn.Module]:
    """The spikeforge twin's layers in forward order (dropouts/identities dropped), neurons included."""
    layers = []
    for name in model.sequence_names:
        for m in getattr(model, name):
            if isinstance(m, nn.Identity):
                continue
            if type(m).__name__.endswith("Dropout"):
                raise ValueError("peer nets are built with dropout 0")
            layers.append(m)
    return layers


def _copy_stateless(m: nn.Module) -> nn.Module:
    if isinstance(m, nn.Conv2d):
        c = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, bias=m.bias is not None)
    elif isinstance(m, nn.Linear):
        c = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    elif isinstance(m, nn.AvgPool2d):
        return nn.AvgPool2d(m.kernel_size, m.stride)
    elif isinstance(m, nn.Flatten):
        return nn.Flatten()
    else:
        raise TypeError(f"no peer translation for {type(m).__name__}")
    c.load_state_dict(m.state_dict())
    return c


class SnnTorchNet(nn.Module):
    """The spikeforge twin rebuilt with ``snn.Leaky``, run step by step (snnTorch's usual loop)."""

    def __init__(self, model: nn.Module, timesteps: int, leak: float, threshold: float, reset_delay: bool = False,
                 first_once: bool = True):
        super().__init__()
        import snntorch as snn

        layers = []
        for m in plan_of(model):
            if isinstance(m, SpikingNeuron):
                layers.append(snn.Leaky(beta=leak, threshold=threshold, spike_grad=pwl_spike,
                                        reset_mechanism="subtract", reset_delay=reset_delay))
            elif isinstance(m, Readout):
                continue
            else:
                layers.append(_copy_stateless(m))
        self.layers = nn.ModuleList(layers)
        self.timesteps = timesteps
        self.first_once = first_once
        self.record: list | None = None  # set to [] to record every neuron layer's spikes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import snntorch as snn

        for m in self.layers:
            if isinstance(m, snn.Leaky):
                m.mem = torch.zeros(0)  # fresh state (re-created with the input's shape on the first step)
        first = self.layers[0]
        cur0 = first(x) if self.first_once else None
        out = None
        spikes = [[] for _ in self.layers] if self.record is not None else None
        for _ in range(self.timesteps):
            h = cur0 if self.first_once else first(x)
            for i, m in enumerate(self.layers[1:], 1):
                if isinstance(m, snn.Leaky):
                    h, _ = m(h)
                    if spikes is not None:
                        spikes[i].append(h.detach())
                else:
                    h = m(h)
            out = h if out is None else out + h
        if spikes is not None:
            self.record = [torch.stack(s) for s in spikes if s]
        return out


class SpikingJellyNet(nn.Module):
    """The spikeforge twin rebuilt with SpikingJelly 2.0 layers in multi-step mode."""

    def __init__(self, model: nn.Module, timesteps: int, leak: float, threshold: float, first_once: bool = True):
        super().__init__()
        from spikingjelly.activation_based import functional, layer, neuron, surrogate

        layers = []
        for m in plan_of(model):
            if isinstance(m, SpikingNeuron):
                kw = dict(v_threshold=threshold, v_reset=None, detach_reset=True, step_mode="m",
                          surrogate_function=surrogate.PiecewiseQuadratic(alpha=1.0))
                if leak >= 1.0:
                    layers.append(neuron.IFNode(**kw))
                else:
                    layers.append(neuron.LIFNode(tau=1.0 / (1.0 - leak), decay_input=False, **kw))
            elif isinstance(m, Readout):
                continue
            elif isinstance(m, nn.Conv2d):
                c = layer.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                 bias=m.bias is not None, step_mode="m")
                c.load_state_dict(m.state_dict())
                layers.append(c)
            elif isinstance(m, nn.Linear):
                c = layer.Linear(m.in_features, m.out_features, bias=m.bias is not None, step_mode="m")
                c.load_state_dict(m.state_dict())
                layers.append(c)
            elif isinstance(m, nn.AvgPool2d):
                layers.append(layer.AvgPool2d(m.kernel_size, m.stride, step_mode="m"))
            elif isinstance(m, nn.Flatten):
                layers.append(layer.Flatten(step_mode="m"))
            else:
                raise TypeError(f"no SpikingJelly translation for {type(m).__name__}")
        self.net = nn.Sequential(*layers)
        functional.set_step_mode(self.net, "m")
        self.timesteps = timesteps
        self.first_once = first_once
        self._reset = functional.reset_net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._reset(self.net)
        T = self.timesteps
        if self.first_once:  # first conv once (single step, folded), its current fed at every step
            cur = nn.functional.conv2d(x, self.net[0].weight, self.net[0].bias, self.net[0].stride,
                                       self.net[0].padding)
            h = cur.unsqueeze(0).expand(T, *cur.shape)
            rest = self.net[1:]
        else:
            h = x.unsqueeze(0).repeat(T, *([1] * x.dim()))
            rest = self.net
        return rest(h).sum(0)


def make_impl(lib: str, net: str, timesteps: int, *, leak: float = LEAK, threshold: float = THRESHOLD,
              first_once: bool = True, seed: int = 0, reset_delay: bool = False, weight_gain: float = 1.0,
              **overrides) -> nn.Module:
    """The SNN of ``net`` in ``lib`` (``ann`` = spikeforge's ANN twin); all built from the same seed -> same weights
    (every conv/linear weight times ``weight_gain``: the check uses it to make every layer spike)."""
    torch.manual_seed(seed)
    if lib == "ann":
        return build(net, False, 1, **overrides)
    kw = dict(leak=leak, threshold=threshold, surrogate={"name": "linear", "gamma": 1.0}, dropout=0.0, **overrides)
    sf = build(net, True, timesteps, **kw)
    if weight_gain != 1.0:
        with torch.no_grad():
            for m in sf.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.mul_(weight_gain)
    if lib == "spikeforge":
        return sf
    if lib == "snntorch":
        return SnnTorchNet(sf, timesteps, leak, threshold, reset_delay=reset_delay, first_once=first_once)
    if lib == "spikingjelly":
        return SpikingJellyNet(sf, timesteps, leak, threshold, first_once=first_once)
    raise ValueError(lib)


# --------------------------------------------------------------------------------------------------------------
# matched-dynamics check
def spike_trains(lib: str, model: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every neuron layer's spikes ``[T, B, ...]`` and the logits."""
    if lib == "snntorch":
        model.record = []
        out = model(x)
        rec, model.record = model.record, None
        return rec, out
    if lib == "spikeforge":
        kinds = (SpikingNeuron,)
    else:
        from spikingjelly.activation_based.neuron import BaseNode
        kinds = (BaseNode,)
    rec = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: rec.append(o.detach()))
             for m in model.modules() if isinstance(m, kinds)]
    try:
        out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return rec, out


def check_dynamics(net: str = "issue9", timesteps: int = 8, batch: int = 4, leak: float = LEAK,
                   threshold: float = THRESHOLD, peers: list[str] | None = None, seed: int = 0,
                   weight_gain: float = 4.0, **overrides) -> list[dict]:
    """Same weights and input in every library; per peer (and snnTorch setting): spikes compared with spikeforge's.

    Returns rows with the number of differing spikes (all layers), total spikes, the first layer that differs, the
    max |logit difference| and the max |weight-gradient difference| after one backward of ``logits.sum()``.
    """
    peers = available_peers() if peers is None else peers
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(input_shape(net, batch), generator=g)
    overrides["weight_gain"] = weight_gain
    ref = make_impl("spikeforge", net, timesteps, leak=leak, threshold=threshold, seed=seed, **overrides)
    ref_spk, ref_out = spike_trains("spikeforge", ref, x)
    ref_out.sum().backward()
    ref_grads = [p.grad for n, p in ref.named_parameters() if p.grad is not None]
    variants = []
    if "snntorch" in peers:
        variants += [("snntorch", "reset_delay=False", dict(reset_delay=False)),
                     ("snntorch", "reset_delay=True (default)", dict(reset_delay=True))]
    if "spikingjelly" in peers:
        variants.append(("spikingjelly", "LIFNode(decay_input=False, v_reset=None)" if leak < 1 else
                         "IFNode(v_reset=None)", {}))
    rows = []
    for lib, setting, kw in variants:
        for first_once in (True, False):
            model = make_impl(lib, net, timesteps, leak=leak, threshold=threshold, seed=seed, first_once=first_once,
                              **kw, **overrides)
            spk, out = spike_trains(lib, model, x)
            out.sum().backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            diff = [int((a != b).sum()) for a, b in zip(ref_spk, spk)]
            first_bad = next((i for i, d in enumerate(diff) if d), None)
            rows.append(dict(
                lib=lib, setting=setting, peer_input="once" if first_once else "repeat", net=net, T=timesteps,
                leak=leak, layers=len(ref_spk), layers_match=len(spk) == len(ref_spk),
                spikes=int(sum(int(s.sum()) for s in ref_spk)),
                layer_rates=[round(float(s.mean()), 3) for s in ref_spk], differing=int(sum(diff)), first_diff_layer=first_bad,
                max_logit_diff=float((out - ref_out).detach().abs().max()),
                max_grad_diff=max(float((a - b).abs().max()) for a, b in zip(ref_grads, grads)),
                max_grad=max(float(a.abs().max()) for a in ref_grads),
                post_reset_above_threshold=_post_reset_above(ref, x) if lib == "snntorch" else None,
            ))
    return rows


def _post_reset_above(model: nn.Module, x: torch.Tensor) -> int:
    """How many (neuron, step) pairs of the spikeforge run keep a membrane above threshold after their reset (where
    snnTorch's ``reset_delay=False`` decides differently)."""
    count = 0
    pre = []
    hooks = [m.register_forward_hook(lambda m, i, o: pre.append((m, i[0].detach())))
             for m in model.modules() if isinstance(m, SpikingNeuron)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    for m, cur in pre:
        if cur.shape[0] == 1 and m.timesteps > 1:
            cur = cur.expand(m.timesteps, *cur.shape[1:])
        u = torch.zeros_like(cur[0])
        lk, th = float(m.leak), float(m.threshold)
        for t in range(cur.shape[0] - 1):
            p = lk * u + cur[t]
            u = p - th * (p >= th).to(p.dtype)
            count += int((u > th).sum())
    return count


def check_table(rows: list[dict]) -> str:
    lines = ["| peer | setting | peer input | net | T | spikes (spikeforge; rate per layer) | differing spikes | "
             "first differing layer | max logit diff | max grad diff (max grad) | post-reset U > theta |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['lib']} | {r['setting']} | {r['peer_input']} | {r['net']} | {r['T']} | {r['spikes']} | "
                     f"{r['differing']} | {'-' if r['first_diff_layer'] is None else r['first_diff_layer']} | "
                     f"{r['max_logit_diff']:.2e} | {r['max_grad_diff']:.2e} ({r['max_grad']:.2e}) | "
                     f"{'-' if r['post_reset_above_threshold'] is None else r['post_reset_above_threshold']} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# timing and memory
def _batch(net: str, batch: int | None) -> int:
    return batch or DEFAULT_BATCH[net]


def bench_net(net: str, timesteps: list[int], libs: list[str], *, batch: int | None = None, repeats: int = 10,
              warmup: int = 2, first_once: bool = True, inference: bool = True, leak: float = LEAK) -> dict:
    """Median training-step time of the ANN and every ``lib`` at every ``T``, interleaved; T=1 inference."""
    b = _batch(net, batch)
    x = torch.rand(input_shape(net, b))
    y = torch.randint(0, 10, (b,))
    models = {("ann", 1): make_impl("ann", net, 1)}
    for t in timesteps:
        for lib in libs:
            models[(lib, t)] = make_impl(lib, net, t, first_once=first_once, leak=leak)
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3) for k, m in models.items()}
    fns = {k: (lambda k=k: train_step(models[k], opts[k], x, y)) for k in models}
    times = time_interleaved(fns, repeats, warmup)
    res = {"net": net, "batch": b, "train_ms": {f"{k[0]}@{k[1]}": 1000 * statistics.median(v)
                                                 for k, v in times.items()}}
    if inference:
        inf = {"ann": models[("ann", 1)]}
        for lib in libs:
            inf[lib] = models[(lib, 1)] if (lib, 1) in models else make_impl(lib, net, 1, first_once=first_once,
                                                                            leak=leak)
        for m in inf.values():
            m.eval()

        def infer(m):
            with torch.no_grad():
                m(x)

        itimes = time_interleaved({k: (lambda m=m: infer(m)) for k, m in inf.items()}, repeats, warmup)
        res["infer_ms"] = {k: 1000 * statistics.median(v) for k, v in itimes.items()}
        res["infer_img_s"] = {k: b / (v / 1000) for k, v in res["infer_ms"].items()}
        for m in inf.values():
            m.train()
    return res


def _proc_status_kb(field: str) -> int | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _mem_worker(cfg: dict) -> None:
    import resource

    torch.set_num_threads(cfg["threads"])
    net, lib, t = cfg["net"], cfg["lib"], cfg["T"]
    model = make_impl(lib, net, t, first_once=cfg["first_once"], leak=cfg["leak"])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.rand(input_shape(net, cfg["batch"]))
    y = torch.randint(0, 10, (cfg["batch"],))
    method = "VmHWM after clear_refs"
    try:  # Linux >= 4.0: reset the resident high-water mark to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _proc_status_kb("VmRSS")
    except OSError:
        base = None
    if base is None:  # ru_maxrss cannot be reset: imports/setup may already have set a higher mark
        method, base = "ru_maxrss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(cfg["steps"]):
        train_step(model, opt, x, y)
    peak = _proc_status_kb("VmHWM") if method != "ru_maxrss" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"baseline_kb": base, "peak_kb": peak, "delta_mb": (peak - base) / 1024, "method": method}))


def peak_memory(net: str, lib: str, t: int, *, batch: int | None = None, steps: int = 2, first_once: bool = True,
                leak: float = LEAK, threads: int | None = None) -> float:
    """Extra resident memory (MiB) of ``steps`` training steps, measured in a fresh subprocess (see module doc)."""
    cfg = dict(net=net, lib=lib, T=t, batch=_batch(net, batch), steps=steps, first_once=first_once, leak=leak,
               threads=threads or torch.get_num_threads())
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parent.parent / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, __file__, "--mem-worker", json.dumps(cfg)], capture_output=True, text=True,
                         env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["delta_mb"]


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}
    for lib in ("snntorch", "spikingjelly"):
        try:
            from importlib.metadata import version
            info[lib] = version(lib)
        except Exception:  # noqa: BLE001
            info[lib] = None
    return info


def run(nets: list[str], timesteps: list[int], *, libs: list[str] | None = None, batch: int | None = None,
        repeats: int = 10, warmup: int = 2, first_once: bool = True, memory: bool = True, mem_steps: int = 2,
        leak: float = LEAK, inference: bool = True) -> dict:
    libs = libs or ["spikeforge", *available_peers()]
    report = {"machine": machine_info(), "config": dict(nets=nets, timesteps=timesteps, libs=libs, batch=batch,
                                                        repeats=repeats, warmup=warmup, leak=leak,
                                                        peer_input="once" if first_once else "repeat",
                                                        mem_steps=mem_steps if memory else None),
              "nets": []}
    for net in nets:
        res = bench_net(net, timesteps, libs, batch=batch, repeats=repeats, warmup=warmup, first_once=first_once,
                        inference=inference, leak=leak)
        if memory:
            res["peak_mb"] = {"ann@1": peak_memory(net, "ann", 1, batch=batch, steps=mem_steps, leak=leak)}
            for t in timesteps:
                for lib in libs:
                    res["peak_mb"][f"{lib}@{t}"] = peak_memory(net, lib, t, batch=batch, steps=mem_steps,
                                                               first_once=first_once, leak=leak)
        report["nets"].append(res)
    return report


def _r(a, b):
    return f"{a / b:.2f}" if a is not None and b else "-"


def table(report: dict) -> str:
    """Markdown: machine, then per net the training-step table (ratios, memory) and the T=1 inference table."""
    m, c = report["machine"], report["config"]
    libs = c["libs"]
    peers = [p for p in libs if p != "spikeforge"]
    out = [f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, torch {m['torch']}, "
           f"snnTorch {m.get('snntorch')}, SpikingJelly {m.get('spikingjelly')}, Python {m['python']}.",
           f"Median of {c['repeats']} interleaved repeats ({c['warmup']} warm-up); leak {c['leak']}, threshold 1, soft "
           f"reset; peer input: {c['peer_input']}. Peak memory: VmHWM - VmRSS (high-water mark reset after setup) "
           f"over {c['mem_steps']} training steps in a fresh process." if c.get("mem_steps") else
           f"Median of {c['repeats']} interleaved repeats ({c['warmup']} warm-up); leak {c['leak']}; peer input: "
           f"{c['peer_input']}. Peak memory not measured.", ""]
    for res in report["nets"]:
        tr, mem = res["train_ms"], res.get("peak_mb", {})
        ann = tr["ann@1"]
        out.append(f"**{res['net']}** (batch {res['batch']}): ANN step {ann:.1f} ms"
                   + (f", ANN peak {mem['ann@1']:.0f} MiB" if "ann@1" in mem else ""))
        out.append("")
        hdr = ["T", "library", "step ms", "/ (T x ANN)"] + [f"spikeforge / {p}" for p in peers] + ["peak MiB"]
        if peers:
            hdr.append("spikeforge mem / lower peer")
        out += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
        ts = sorted({int(k.split("@")[1]) for k in tr if not k.startswith("ann")})
        for t in ts:
            lower = min((mem.get(f"{p}@{t}") for p in peers if mem.get(f"{p}@{t}") is not None), default=None)
            for lib in libs:
                v = tr.get(f"{lib}@{t}")
                row = [str(t), lib, f"{v:.1f}", f"{v / (t * ann):.2f}"]
                for p in peers:
                    row.append(_r(tr[f"spikeforge@{t}"], tr[f"{p}@{t}"]) if lib == "spikeforge" else "")
                pm = mem.get(f"{lib}@{t}")
                row.append(f"{pm:.0f}" if pm is not None else "-")
                if peers:
                    row.append(_r(pm, lower) if lib == "spikeforge" and pm is not None else "")
                out.append("| " + " | ".join(row) + " |")
        if "infer_ms" in res:
            out += ["", f"T=1 inference (eval, no_grad, batch {res['batch']}):", "",
                    "| model | ms | images/s | / ANN throughput |", "|---|---|---|---|"]
            a = res["infer_img_s"]["ann"]
            for k, v in res["infer_ms"].items():
                out.append(f"| {k} | {v:.1f} | {res['infer_img_s'][k]:.0f} | {res['infer_img_s'][k] / a:.2f} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=NETS)
    ap.add_argument("--timesteps", type=int, nargs="+", default=[1, 5, 25])
    ap.add_argument("--libs", nargs="+", default=None, choices=LIBS, help="default: spikeforge + installed peers")
    ap.add_argument("--batch", type=int, default=None, help="default: 32 (issue9, vgg16), 128 (quickstart)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--leak", type=float, default=LEAK)
    ap.add_argument("--peer-input", choices=["once", "repeat"], default="once")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-inference", action="store_true")
    ap.add_argument("--mem-steps", type=int, default=2)
    ap.add_argument("--check", action="store_true", help="only compare spike trains (issue9 net and a T=1 case)")
    ap.add_argument("--out", default=None, help="write the markdown table here")
    ap.add_argument("--json", default=None, help="write the raw results here")
    ap.add_argument("--mem-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.mem_worker:
        _mem_worker(json.loads(args.mem_worker))
        return
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    if args.check:
        rows = []
        for net in args.nets:
            for t in sorted(set(args.timesteps) | {8}):
                rows += check_dynamics(net, t, batch=2 if net == "vgg16" else 4, leak=args.leak)
        _emit(check_table(rows), rows, args)
        return
    report = run(args.nets, args.timesteps, libs=args.libs, batch=args.batch, repeats=args.repeats,
                 warmup=args.warmup, first_once=args.peer_input == "once", memory=not args.no_memory,
                 mem_steps=args.mem_steps, leak=args.leak, inference=not args.no_inference)
    _emit(table(report), report, args)


def _emit(text: str, data, args) -> None:
    """Print the markdown table; also write it (``--out``) and the raw results (``--json``)."""
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
