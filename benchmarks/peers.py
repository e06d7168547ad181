"""spikeforge against snnTorch and SpikingJelly on the same nets, with matched neuron dynamics (issue 9).

    pip install -e '.[bench]'            # snntorch, spikingjelly (benchmark-only extra)
    PYTHONPATH=src python benchmarks/peers.py --check                 # spike-train agreement only
    PYTHONPATH=src python benchmarks/peers.py [--nets issue9 quickstart vgg16] [--timesteps 1 5 25] [--repeats 10]
        [--batch N] [--threads N] [--peer-input once|repeat] [--out FILE.md] [--json FILE.json] [--no-memory]
        [--device cpu|cuda] [--sj-backends cuda triton torch]

GPU comparison (the Triton neuron against SpikingJelly's GPU backends, VGG16, batch 64, T=5):

    PYTHONPATH=src python benchmarks/peers.py --device cuda --nets vgg16 --batch 64 --timesteps 5 --repeats 20 --out peers_gpu.md

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

GPU (``--device cuda``; the CPU report above is unchanged): nets, inputs and labels live on the GPU; every timed call
(training step or T=1 inference) is bracketed by ``torch.cuda.synchronize()``, so the time is the step's wall time
including its kernels. Peak memory is measured in-process per configuration (training and T=1 inference):
``torch.cuda.max_memory_allocated()`` after ``torch.cuda.reset_peak_memory_stats()`` over ``--mem-steps`` calls, minus
``torch.cuda.memory_allocated()`` before them (gradients freed and neuron state dropped first), i.e. the tensors the
step itself allocates (activations saved for backward, gradients, temporaries), not the allocator's cache. Rows:

* ``spikeforge (triton)``: the fused neuron as it runs by default; the label names the path ``FusedMultiStep``
  picks for the net's tensors (``triton`` on CUDA when Triton works; see :func:`neuron_path`).
* ``spikeforge (torch, Triton off)``: the same net under ``spikeforge.kernels.compiled_kernels(False)`` (on CUDA
  the same as ``SPIKEFORGE_NO_TRITON=1``): the PyTorch fused path, to show the Triton speedup. Left out (with a
  note) when the Triton path is not active anyway.
* ``SpikingJelly (<backend>)``: one row per backend of ``--sj-backends`` that passes a tiny forward/backward probe on
  the GPU (default: all of them); a failing one is skipped with the reason printed. SpikingJelly 2.0 has no
  ``backend=`` argument on ``LIFNode``/``IFNode``: its ``sj_lif``/``sj_if`` operators pick a CUDA implementation
  among ``cuda`` (native CUDA extension, only when built from source with ``SJ_BUILD_NATIVE_CUDA=1``), ``triton``
  and ``torch`` (Torch reference ops), the first available in that order unless ``SJ_LIF_CUDA_IMPLEMENTATION`` /
  ``SJ_IF_CUDA_IMPLEMENTATION`` (read once at import) force one. :class:`sj_backend` switches that choice per
  call, around the whole training step (forward and backward). Older SpikingJelly (``backend=`` argument:
  ``torch``, ``cupy``) gets the name as its ``backend``.
* ``snnTorch`` (its per-step loop; no backend choice) when installed.

Below each training table: spikeforge (triton) against the fastest SpikingJelly backend at each T, and the Triton
speedup over the Triton-off row. ``--check`` compares spike trains on CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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

from spikeforge.nn.layers import Readout  # noqa: E402
from spikeforge.neuron import SpikingNeuron  # noqa: E402

NETS = ("issue9", "vgg16", "quickstart")
DEFAULT_BATCH = {"issue9": 32, "vgg16": 32, "quickstart": 128}
LIBS = ("spikeforge", "snntorch", "spikingjelly")
LEAK = 0.875  # 1 - 1/8: SpikingJelly's V - V/tau is then exactly lambda*V
THRESHOLD = 1.0
DEVICES = ("cpu", "cuda")
SJ_BACKENDS = ("cuda", "triton", "torch")  # SpikingJelly 2.0's CUDA implementations of sj_lif / sj_if
SJ_LEGACY_BACKENDS = ("torch", "cupy")  # SpikingJelly <= 0.0.0.0.15: LIFNode(backend=...)
NO_TRITON = "spikeforge[no-triton]"


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


def split_lib(key: str) -> tuple[str, str | None]:
    """``"spikingjelly[triton]"`` -> ``("spikingjelly", "triton")``; ``"snntorch"`` -> ``("snntorch", None)``."""
    base, _, rest = key.partition("[")
    return base, (rest.rstrip("]") or None)


def lib_context(key: str):
    """The context a configuration runs in: SpikingJelly's CUDA backend forced (``spikingjelly[<backend>]``), the
    compiled neuron kernels off (``spikeforge[no-triton]``), else nothing. Wraps forward *and* backward."""
    base, variant = split_lib(key)
    if base == "spikingjelly" and variant is not None and not _sj_legacy():
        return sj_backend(variant)
    if base == "spikeforge" and variant == "no-triton":
        from spikeforge.kernels import compiled_kernels

        return compiled_kernels(False)
    return contextlib.nullcontext()


def neuron_path(model: nn.Module, like: torch.Tensor | None = None) -> str:
    """The path spikeforge's fused neuron (``FusedMultiStep``) takes for ``model``'s first ``SpikingNeuron`` on
    tensors like ``like`` (default: the neuron's own device and dtype): ``"triton"``, ``"cpp"`` or ``"torch"``.

    Asks ``spikeforge.neuron.functional._kernel_layout`` (the function ``FusedMultiStep.forward`` and inference
    consult) with a tiny current of that device/dtype, under the settings in force now (``compiled_kernels``,
    ``SPIKEFORGE_NO_TRITON``, ``SPIKEFORGE_NO_CPP``). An unfused neuron (``fused=False``) is ``"torch"``.
    """
    from spikeforge.neuron import functional as F

    neuron = model if isinstance(model, SpikingNeuron) else next(
        (m for m in model.modules() if isinstance(m, SpikingNeuron)), None)
    if neuron is None:
        raise ValueError("model has no SpikingNeuron")
    if not neuron.fused:
        return "torch"
    device = like.device if like is not None else neuron.threshold.device
    dtype = like.dtype if like is not None and like.is_floating_point() else neuron.threshold.dtype
    currents = torch.zeros(2, 1, neuron.channels or 1, 1, device=device, dtype=dtype)  # [T, B, C, 1]
    th = neuron._per_step(neuron.threshold.detach().to(device), currents.dim() - 1)
    lk = neuron._per_step(neuron.leak.detach().to(device), currents.dim() - 1)
    backend, _ = F._kernel_layout(currents, th, lk, neuron.surrogate)
    return backend or "torch"


@functools.cache
def _sj_legacy() -> bool:
    """True for SpikingJelly with a ``backend=`` argument on its nodes (<= 0.0.0.0.15)."""
    try:
        import inspect

        from spikingjelly.activation_based import neuron
    except Exception:  # noqa: BLE001
        return False
    return "backend" in inspect.signature(neuron.LIFNode).parameters


def _sj_selections() -> list:
    """SpikingJelly 2.0's CUDA implementation selectors of the operators used here (``sj_lif``, ``sj_if``)."""
    import importlib

    sels = []
    for mod in ("spikingjelly._ops.lif", "spikingjelly._ops.if_"):
        sel = getattr(importlib.import_module(mod), "_selection", None)
        if sel is None or not hasattr(sel, "_requested") or not isinstance(getattr(sel, "_selections", None), dict):
            raise RuntimeError(f"this SpikingJelly has no selectable CUDA implementation in {mod}")
        sels.append(sel)
    return sels


class sj_backend:
    """Force SpikingJelly 2.0's CUDA implementation of its LIF/IF operators (``cuda``, ``triton``, ``torch`` or
    ``auto``) while active.

    SpikingJelly reads ``SJ_LIF_CUDA_IMPLEMENTATION`` / ``SJ_IF_CUDA_IMPLEMENTATION`` once at import and caches the
    implementation it selects per device (first available of cuda, triton, torch, or the forced one, which raises if
    unavailable). This sets the requested name and swaps in a selection cache of that name (kept across uses, so
    switching costs nothing after the first call); both are restored on exit. Private SpikingJelly internals: if they
    are missing, entering raises ``RuntimeError`` (the backend probe then skips the backend).
    """

    _caches: dict = {}

    def __init__(self, name: str):
        if name not in ("auto", *SJ_BACKENDS):
            raise ValueError(f"SpikingJelly 2.0 CUDA implementations are auto, {', '.join(SJ_BACKENDS)}; got {name!r}")
        self.name = name

    def __enter__(self):
        self._saved = []
        for sel in _sj_selections():
            self._saved.append((sel, sel._requested, sel._selections))
            sel._requested = self.name
            sel._selections = sj_backend._caches.setdefault((sel._namespace, self.name), {})
        return self

    def __exit__(self, *exc):
        for sel, requested, cache in reversed(self._saved):
            sel._requested, sel._selections = requested, cache


def _sj_node(leak: float, threshold: float, backend: str | None = None) -> nn.Module:
    """SpikingJelly's neuron with the matched dynamics (``IFNode`` for ``leak = 1``), multi-step."""
    from spikingjelly.activation_based import neuron, surrogate

    kw = dict(v_threshold=threshold, v_reset=None, detach_reset=True, step_mode="m",
              surrogate_function=surrogate.PiecewiseQuadratic(alpha=1.0))
    if backend is not None and _sj_legacy():
        kw["backend"] = backend
    if leak >= 1.0:
        return neuron.IFNode(**kw)
    return neuron.LIFNode(tau=1.0 / (1.0 - leak), decay_input=False, **kw)


def sj_backend_names() -> tuple[str, ...]:
    """The backends ``--sj-backends`` can pick in the installed SpikingJelly."""
    return SJ_LEGACY_BACKENDS if _sj_legacy() else SJ_BACKENDS


def probe_sj_backend(name: str, device: str | torch.device, leak: float = LEAK) -> str:
    """Run a tiny multi-step forward/backward of the matched neuron with SpikingJelly backend ``name`` on ``device``;
    raises if it fails. Returns the implementation that ran (for ``auto``: the one SpikingJelly picked)."""
    names = sj_backend_names() + (() if _sj_legacy() else ("auto",))
    if name not in names:
        raise ValueError(f"not a backend of SpikingJelly {_version('spikingjelly')} "
                         f"(it has: {', '.join(names)})")
    device = torch.device(device)
    with lib_context(f"spikingjelly[{name}]"):
        node = _sj_node(leak, THRESHOLD, name).to(device)
        x = (2 * torch.rand(3, 2, 4, 5, device=device)).requires_grad_()
        out = node(x)
        out.sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if x.grad is None or not bool(torch.isfinite(x.grad).all()) or out.shape != x.shape:
            raise RuntimeError("probe gave no finite gradient")
        if device.type == "cuda" and not _sj_legacy():
            from spikingjelly.activation_based.functional import neuron_implementation

            return str(neuron_implementation("if" if leak >= 1.0 else "lif", device)["implementation"])
    return name


def probe_sj_backends(names, device, leak: float = LEAK) -> tuple[list[str], dict[str, str]]:
    """``(working, {name: reason})`` over ``names``; each failure is printed (stderr) and skipped."""
    ok, skipped = [], {}
    for name in names:
        try:
            ran = probe_sj_backend(name, device, leak)
            if name != "auto" and ran != name:
                raise RuntimeError(f"SpikingJelly ran {ran!r} instead")
            ok.append(name)
        except Exception as exc:  # noqa: BLE001 - a backend that does not run here is skipped, with the reason
            msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            skipped[name] = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
            print(f"peers.py: skipping SpikingJelly backend {name!r} ({skipped[name]})", file=sys.stderr)
    return ok, skipped


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
                m.mem = torch.zeros(0, device=x.device)  # fresh state (re-created like the input on the first step)
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

    def __init__(self, model: nn.Module, timesteps: int, leak: float, threshold: float, first_once: bool = True,
                 backend: str | None = None):
        super().__init__()
        from spikingjelly.activation_based import functional, layer

        layers = []
        for m in plan_of(model):
            if isinstance(m, SpikingNeuron):
                layers.append(_sj_node(leak, threshold, backend))  # backend: only as legacy ``backend=`` argument
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
    (every conv/linear weight times ``weight_gain``: the check uses it to make every layer spike). ``lib`` may carry a
    variant (``spikingjelly[triton]``, ``spikeforge[no-triton]``): same net, run under :func:`lib_context`."""
    lib, variant = split_lib(lib)
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
        return SpikingJellyNet(sf, timesteps, leak, threshold, first_once=first_once, backend=variant)
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
        if cur.shape[0] == 1 and model.timesteps > 1:  # direct input: the first current repeats every step
            cur = cur.expand(model.timesteps, *cur.shape[1:])
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
              warmup: int = 2, first_once: bool = True, inference: bool = True, leak: float = LEAK,
              device: str = "cpu", memory: bool = False, mem_steps: int = 2) -> dict:
    """Median training-step time of the ANN and every ``lib`` at every ``T``, interleaved; T=1 inference.

    On CUDA (``device="cuda"``): everything on the GPU, each call synchronized, every ``lib`` key run under
    :func:`lib_context`; also the path spikeforge's neuron took (``neuron_path``) and, with ``memory``, the in-process
    peak memory of training (``peak_mb``) and of T=1 inference (``infer_peak_mb``). On CPU ``memory`` is ignored (see
    :func:`peak_memory`).
    """
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    b = _batch(net, batch)
    x = torch.rand(input_shape(net, b))
    y = torch.randint(0, 10, (b,))
    models = {("ann", 1): make_impl("ann", net, 1)}
    for t in timesteps:
        for lib in libs:
            models[(lib, t)] = make_impl(lib, net, t, first_once=first_once, leak=leak)
    if cuda:
        x, y = x.to(dev), y.to(dev)
        for m in models.values():
            m.to(dev)
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3) for k, m in models.items()}
    if cuda:
        fns = {k: _gpu_call(lambda k=k: train_step(models[k], opts[k], x, y), k[0], dev) for k in models}
        torch.cuda.synchronize(dev)
    else:
        fns = {k: (lambda k=k: train_step(models[k], opts[k], x, y)) for k in models}
    times = time_interleaved(fns, repeats, warmup)
    res = {"net": net, "batch": b, "train_ms": {f"{k[0]}@{k[1]}": 1000 * statistics.median(v)
                                                 for k, v in times.items()}}
    if cuda:
        res["neuron_path"] = {}
        for lib in libs:
            if split_lib(lib)[0] == "spikeforge":
                with lib_context(lib):
                    res["neuron_path"][lib] = neuron_path(models[(lib, timesteps[0])], like=x)
        if memory:
            res["peak_mb"] = {f"{k[0]}@{k[1]}": _gpu_peak_mb(fns[k], dev, mem_steps, models[k], opts[k])
                              for k in models}
    if inference:
        inf = {"ann": models[("ann", 1)]}
        for lib in libs:
            inf[lib] = models[(lib, 1)] if (lib, 1) in models else make_impl(lib, net, 1, first_once=first_once,
                                                                            leak=leak)
        for m in inf.values():
            if cuda:
                m.to(dev)
            m.eval()

        def infer(m):
            with torch.no_grad():
                m(x)

        if cuda:
            ifns = {k: _gpu_call(lambda m=m: infer(m), k, dev) for k, m in inf.items()}
            torch.cuda.synchronize(dev)
        else:
            ifns = {k: (lambda m=m: infer(m)) for k, m in inf.items()}
        itimes = time_interleaved(ifns, repeats, warmup)
        res["infer_ms"] = {k: 1000 * statistics.median(v) for k, v in itimes.items()}
        res["infer_img_s"] = {k: b / (v / 1000) for k, v in res["infer_ms"].items()}
        if cuda and memory:
            res["infer_peak_mb"] = {k: _gpu_peak_mb(ifns[k], dev, mem_steps, m) for k, m in inf.items()}
        for m in inf.values():
            m.train()
    return res


def _gpu_call(fn, key: str, device: torch.device):
    """``fn`` run under ``lib_context(key)`` and bracketed by ``torch.cuda.synchronize`` (so a timed call covers the
    kernels it launched, and only those)."""
    def call():
        with lib_context(key):
            torch.cuda.synchronize(device)
            fn()
            torch.cuda.synchronize(device)
    return call


def _drop_state(model: nn.Module, opt: torch.optim.Optimizer | None = None) -> None:
    """Free what a previous call left behind: gradients and the peers' neuron state (snnTorch ``mem``, SpikingJelly
    memories), so the memory baseline holds only weights, inputs and the other configurations' leftovers."""
    if opt is not None:
        opt.zero_grad(set_to_none=True)
    if isinstance(model, SnnTorchNet):
        for m in model.layers:
            if hasattr(m, "mem"):
                m.mem = torch.zeros(0, device=m.mem.device)
    elif isinstance(model, SpikingJellyNet):
        model._reset(model.net)


def _gpu_peak_mb(call, device: torch.device, steps: int, model: nn.Module,
                 opt: torch.optim.Optimizer | None = None) -> float:
    """MiB the calls allocate at their peak: ``max_memory_allocated`` over ``steps`` calls (after
    ``reset_peak_memory_stats``) minus ``memory_allocated`` before them."""
    _drop_state(model, opt)
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(steps):
        call()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


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


def _version(dist: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # noqa: BLE001
        return None


def machine_info(device: str | None = None) -> dict:
    """Host (and with ``device="cuda"``: GPU, CUDA, cuDNN, Triton) and library versions."""
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
        info[lib] = _version(lib)
    if device is not None and torch.device(device).type == "cuda":
        dev = torch.device(device)
        info.update(gpu=torch.cuda.get_device_name(dev), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), triton=_version("triton"))
    return info


def _triton_off_reason() -> str:
    """Why spikeforge's Triton path is not active (for the report's note)."""
    from spikeforge.neuron.functional import _env_flag

    if _env_flag("SPIKEFORGE_NO_TRITON"):
        return "SPIKEFORGE_NO_TRITON is set"
    try:
        from spikeforge.kernels.triton_neuron import unavailable_reason
        reason = unavailable_reason()
    except Exception as exc:  # noqa: BLE001
        reason = f"{type(exc).__name__}: {exc}"
    return f"triton unavailable: {reason}" if reason else "the Triton kernel does not run on this device"


def gpu_libs(libs: list[str], device: str, sj_backends: list[str] | None = None,
             leak: float = LEAK) -> tuple[list[str], list[str], dict[str, str]]:
    """The GPU rows for ``libs``: ``spikeforge`` plus ``spikeforge[no-triton]`` (when the Triton path is active),
    ``spikingjelly[<backend>]`` for every backend of ``sj_backends`` (default: all) that passes the probe.
    Returns ``(rows, notes, skipped SpikingJelly backends with reasons)``."""
    out, notes, skipped = [], [], {}
    for lib in libs:
        base, variant = split_lib(lib)
        if variant is not None:  # explicit row
            out.append(lib)
        elif lib == "spikeforge":
            out.append(lib)
            probe = SpikingNeuron(THRESHOLD, leak, surrogate={"name": "linear", "gamma": 1.0}).to(device)
            path = neuron_path(probe)
            if path == "triton":
                out.append(NO_TRITON)
            else:
                notes.append(f"spikeforge runs its {path} neuron path on {device} ({_triton_off_reason()}); "
                             "no Triton-off row.")
        elif lib == "spikingjelly":
            ok, sk = probe_sj_backends(list(sj_backends or sj_backend_names()), device, leak)
            skipped.update(sk)
            out += [f"spikingjelly[{n}]" for n in ok]
            if not ok:
                notes.append("no SpikingJelly backend ran here (see skipped).")
        else:
            out.append(lib)
    if sj_backends and "spikingjelly" not in libs:
        notes.append("--sj-backends given, but SpikingJelly is not installed or not among the libraries.")
    return out, notes, skipped


def run(nets: list[str], timesteps: list[int], *, libs: list[str] | None = None, batch: int | None = None,
        repeats: int = 10, warmup: int = 2, first_once: bool = True, memory: bool = True, mem_steps: int = 2,
        leak: float = LEAK, inference: bool = True, device: str = "cpu",
        sj_backends: list[str] | None = None) -> dict:
    """The benchmark report (see module doc). ``device="cuda"``: GPU rows from :func:`gpu_libs`, in-process
    memory; ``sj_backends`` (CUDA only): SpikingJelly backends to try (default: all)."""
    cuda = torch.device(device).type == "cuda"
    libs = libs or ["spikeforge", *available_peers()]
    notes, skipped = [], {}
    if cuda:
        libs, notes, skipped = gpu_libs(libs, device, sj_backends, leak)
    report = {"machine": machine_info(device if cuda else None),
              "config": dict(nets=nets, timesteps=timesteps, libs=libs, batch=batch,
                             repeats=repeats, warmup=warmup, leak=leak,
                             peer_input="once" if first_once else "repeat",
                             mem_steps=mem_steps if memory else None),
              "nets": []}
    if cuda:
        report["config"].update(device=str(device), sj_backends=sj_backends, sj_skipped=skipped, notes=notes)
    for net in nets:
        res = bench_net(net, timesteps, libs, batch=batch, repeats=repeats, warmup=warmup, first_once=first_once,
                        inference=inference, leak=leak, device=device, memory=memory, mem_steps=mem_steps)
        if memory and not cuda:
            res["peak_mb"] = {"ann@1": peak_memory(net, "ann", 1, batch=batch, steps=mem_steps, leak=leak)}
            for t in timesteps:
                for lib in libs:
                    res["peak_mb"][f"{lib}@{t}"] = peak_memory(net, lib, t, batch=batch, steps=mem_steps,
                                                               first_once=first_once, leak=leak)
        report["nets"].append(res)
    return report


def _r(a, b):
    return f"{a / b:.2f}" if a is not None and b else "-"



def _net_header(out: list[str], res: dict, digits: int) -> tuple[dict, dict, float]:
    """Append a net's header line (ANN step and peak) to ``out``; returns (train times, peaks, ANN step ms)."""
    tr, mem = res["train_ms"], res.get("peak_mb", {})
    ann = tr["ann@1"]
    out.append(f"**{res['net']}** (batch {res['batch']}): ANN step {ann:.{digits}f} ms"
               + (f", ANN peak {mem['ann@1']:.0f} MiB" if "ann@1" in mem else ""))
    out.append("")
    return tr, mem, ann

def table(report: dict) -> str:
    """Markdown: machine, then per net the training-step table (ratios, memory) and the T=1 inference table."""
    m, c = report["machine"], report["config"]
    if torch.device(c.get("device", "cpu")).type == "cuda":
        return gpu_table(report)
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
        tr, mem, ann = _net_header(out, res, 1)
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


def row_label(key: str, res: dict) -> str:
    """Display name of a GPU row: ``ANN``, ``spikeforge (triton)``, ``spikeforge (torch, Triton off)``,
    ``snnTorch``, ``SpikingJelly (triton)``."""
    base, variant = split_lib(key)
    if base == "ann":
        return "ANN"
    if base == "spikeforge":
        path = res.get("neuron_path", {}).get(key, "?")
        return f"spikeforge ({path}, Triton off)" if variant == "no-triton" else f"spikeforge ({path})"
    if base == "snntorch":
        return "snnTorch"
    if base == "spikingjelly":
        return f"SpikingJelly ({variant})" if variant else "SpikingJelly"
    return key


def gpu_table(report: dict) -> str:
    """The ``--device cuda`` report: one row per configuration (spikeforge paths, each SpikingJelly backend,
    snnTorch), ratios to ``spikeforge`` (its default path), the fastest SpikingJelly backend per T and the Triton
    speedup, then T=1 inference."""
    m, c = report["machine"], report["config"]
    libs = c["libs"]
    mem_note = (f"Peak memory: torch.cuda.max_memory_allocated() - memory_allocated() before, over {c['mem_steps']} "
                "calls, in-process." if c.get("mem_steps") else "Peak memory not measured.")
    out = [f"Machine: {m.get('gpu')} (CUDA {m.get('cuda')}, cuDNN {m.get('cudnn')}), host {m['cpu']}, torch "
           f"{m['torch']}, Triton {m.get('triton')}, snnTorch {m.get('snntorch')}, SpikingJelly "
           f"{m.get('spikingjelly')}, Python {m['python']}.",
           f"Median of {c['repeats']} interleaved repeats ({c['warmup']} warm-up), each call bracketed by "
           f"torch.cuda.synchronize(); leak {c['leak']}, threshold 1, soft reset; peer input: {c['peer_input']}. "
           + mem_note]
    for name, why in (c.get("sj_skipped") or {}).items():
        out.append(f"SpikingJelly backend {name} skipped: {why.rstrip('.')}.")
    out += list(c.get("notes") or [])
    out.append("")
    for res in report["nets"]:
        tr, mem, ann = _net_header(out, res, 2)
        hdr = ["T", "library", "step ms", "/ (T x ANN)", "spikeforge / this", "peak MiB", "spikeforge mem / this"]
        out += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
        ts = sorted({int(k.split("@")[1]) for k in tr if not k.startswith("ann")})
        summary = []
        for t in ts:
            sf, sf_mem = tr.get(f"spikeforge@{t}"), mem.get(f"spikeforge@{t}")
            for lib in libs:
                v, pm = tr[f"{lib}@{t}"], mem.get(f"{lib}@{t}")
                out.append("| " + " | ".join([
                    str(t), row_label(lib, res), f"{v:.2f}", f"{v / (t * ann):.2f}",
                    _r(sf, v) if lib != "spikeforge" else "",
                    f"{pm:.0f}" if pm is not None else "-",
                    _r(sf_mem, pm) if lib != "spikeforge" and pm is not None else ""]) + " |")
            sj = {lib: tr[f"{lib}@{t}"] for lib in libs if split_lib(lib)[0] == "spikingjelly"}
            parts = []
            if sf is not None and sj:
                best = min(sj, key=sj.get)
                parts.append(f"{row_label('spikeforge', res)} {sf:.2f} ms vs fastest {row_label(best, res)} "
                             f"{sj[best]:.2f} ms -> spikeforge speedup {sj[best] / sf:.2f}x")
            if sf is not None and f"{NO_TRITON}@{t}" in tr:
                parts.append(f"Triton speedup over the PyTorch fused path {tr[f'{NO_TRITON}@{t}'] / sf:.2f}x")
            if parts:
                summary.append(f"T={t}: " + "; ".join(parts) + ".")
        if summary:
            out += [""] + summary
        if "infer_ms" in res:
            imem = res.get("infer_peak_mb", {})
            out += ["", f"T=1 inference (eval, no_grad, batch {res['batch']}):", "",
                    "| model | ms | images/s | / ANN throughput | peak MiB |", "|---|---|---|---|---|"]
            a = res["infer_img_s"]["ann"]
            for k, v in res["infer_ms"].items():
                pm = imem.get(k)
                out.append(f"| {row_label(k, res)} | {v:.2f} | {res['infer_img_s'][k]:.0f} | "
                           f"{res['infer_img_s'][k] / a:.2f} | {f'{pm:.0f}' if pm is not None else '-'} |")
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
    ap.add_argument("--device", choices=DEVICES, default="cpu",
                    help="cuda: the GPU comparison (synchronized timing, in-process torch.cuda peak memory)")
    ap.add_argument("--sj-backends", nargs="+", default=None, choices=("auto", *SJ_BACKENDS, "cupy"),
                    help="(cuda) SpikingJelly backends to compare, one row each; default: every one that runs here")
    ap.add_argument("--mem-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.mem_worker:
        _mem_worker(json.loads(args.mem_worker))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"peers.py: --device cuda needs a CUDA GPU, but torch.cuda.is_available() is False here (torch "
                 f"{torch.__version__}, CUDA build: {torch.version.cuda or 'none'}). Run without --device cuda "
                 "for the CPU benchmark.")
    if args.sj_backends and args.device != "cuda":
        sys.exit("peers.py: --sj-backends applies to --device cuda only (on CPU SpikingJelly has one operator).")
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
                 mem_steps=args.mem_steps, leak=args.leak, inference=not args.no_inference, device=args.device,
                 sj_backends=args.sj_backends)
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
