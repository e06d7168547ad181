r"""NIR export of spikeforge SNNs: :func:`to_nir` (a ``nir.NIRGraph``) and :func:`write_nir` (a ``.nir`` file + card).

The neuron mapping (forward-Euler LIF/IF nodes of Pedersen et al. 2024, thresholds one float32 ulp down, reset to 0)
is described in :mod:`spikeforge.export.nir_mapping`. The other nodes:

Conv2d and Linear/Affine (biases, including folded BatchNorm, as NIR biases; bias-free layers give ``Linear`` and zero
conv biases); AvgPool2d; Flatten (``start_dim=0``: NIR shapes have no batch dimension); an unfolded BatchNorm2d as a
diagonal 1x1 Conv2d with the equivalent scale and bias; the input normalization ``(x - mean) / std`` as a 1x1 Conv2d
(weight ``1/std``, bias ``-mean/std``; left out for Poisson input, whose encoder runs outside the graph); ResNet
shortcuts as a second edge into the block's second neuron (NIR sums the inputs of a node); the readout (sum over time
of the last layer) at ``T > 1`` as an integrator ``nir.I`` with ``r = 1/dt`` (``mean``: ``r = 1/(T dt)``), whose output
at the last step is the logits (``readout=False``, and targets without ``nir.I``, leave it out: the graph then outputs
the last layer's per-step current, to be summed by the caller); at ``T = 1`` the last layer's output is the logits.

``target`` (:mod:`spikeforge.export.targets`) picks the forms one consumer reads exactly (snnTorch, sinabs, Norse:
IF written as a beta-1 LIF for snnTorch, average pooling as ``SumPool2d`` with ``1/k^2`` folded into the next weights
for sinabs and Norse, thresholds at ``V_th`` for sinabs' ``v >= V_th``, the input normalization outside the graph)
and refuses what that consumer lacks. Direct encoding presents the same image at each of the ``T`` steps; spikeforge
computes the first layer once and reuses it, which gives the same values.

**Inexact parts** (soft reset at ``T > 1``, ``fire-integrate``, a layer mixing ``lambda = 1`` and ``lambda < 1``
channels) make :func:`to_nir` refuse with a :class:`~spikeforge.errors.ConfigError` listing them, unless
``allow_inexact=True``: then it warns (:class:`~spikeforge.export.nir_mapping.InexactExportWarning`) with the same
list and records it in the graph's metadata. In every case the graph metadata holds what NIR cannot say
(``spikeforge`` JSON: model spec, SNN config, ``dt``, ``timesteps``, encoding, ordering, reset, readout, the inexact
list and notes), and each neuron node its own reset and ordering, so
:func:`~spikeforge.export.nir_import.from_nir` rebuilds the spikeforge model exactly.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.export.card import write_card
from spikeforge.export.nir_mapping import (ALMOST_ONE, FORMAT, META_KEY, VERSION, InexactExportWarning, graph_info,
                                           leak_to_nir, make_node, node_info, node_name, require_nir,
                                           threshold_to_nir)
from spikeforge.export.targets import IF_AS_LIF_TAU, Target, get_target, lacks
from spikeforge.export.trace import Op, neuron_params, trace_model
from spikeforge.utils import atomic_write_bytes
from spikeforge.version import __version__


@dataclass
class _Export:
    """What the node writers share: time step, ``T``, encoding, readout flag, and the issues/notes they collect."""

    dt: float
    steps: int
    encoding: str
    readout: bool
    shapes: dict[str, tuple[int, ...]]
    target: Target
    readout_by_caller: bool = False
    folds: dict[str, float] = field(default_factory=dict)
    issues: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def in_shape(self, op: Op) -> tuple[int, ...] | None:
        return self.shapes[op.inputs[0]] if op.inputs else None


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy().copy()


def _diagonal_conv(nir, shape, diag: np.ndarray, bias: np.ndarray, info: dict):
    """A dense diagonal 1x1 Conv2d (nir's Conv2d types ignore groups, so a depthwise conv does not read back)."""
    c = shape[0]
    weight = np.zeros((c, c, 1, 1), dtype=np.float32)
    weight[np.arange(c), np.arange(c), 0, 0] = diag
    return make_node(nir.Conv2d, info, input_shape=tuple(shape[1:]), weight=weight, stride=1, padding=0, dilation=1,
                     groups=1, bias=bias)


# ---- one writer per traced operation kind ---------------------------------------------------------------------
def _input_node(nir, op: Op, ctx: _Export):
    return make_node(nir.Input, {"role": "input", "encoding": ctx.encoding}, input_type={"input": np.array(op.shape)})


def _normalize_node(nir, op: Op, ctx: _Export):
    m, c = op.module, op.shape[0]
    mean = m.mean.detach().float().cpu().reshape(-1).expand(c).numpy()
    std = m.std.detach().float().cpu().reshape(-1).expand(c).numpy()
    diag = (1.0 / std.astype(np.float64)).astype(np.float32)
    bias = (-mean.astype(np.float64) / std.astype(np.float64)).astype(np.float32)
    return _diagonal_conv(nir, op.shape, diag, bias, {"role": "normalize", "mean": [float(v) for v in mean],
                                                      "std": [float(v) for v in std]})


def _weight(op: Op, ctx: _Export, info: dict) -> np.ndarray:
    """The layer's weight, times the 1/k^2 of a sum pool in front of it (a power of two: exact)."""
    w = _np(op.module.weight)
    scale = ctx.folds.get(op.name)
    if scale is not None:
        info["scale_folded"] = scale
        w = (w * np.float32(scale)).astype(np.float32)
    return w


def _conv_node(nir, op: Op, ctx: _Export):
    m, in_shape = op.module, ctx.in_shape(op)
    bias = _np(m.bias) if m.bias is not None else np.zeros(m.out_channels, dtype=np.float32)
    info = {"role": "conv", "module": op.name, "bias": m.bias is not None}
    weight = _weight(op, ctx, info)
    return make_node(nir.Conv2d, info, input_shape=tuple(int(s) for s in in_shape[1:]), weight=weight,
                     stride=tuple(int(s) for s in m.stride), padding=tuple(int(p) for p in m.padding),
                     dilation=tuple(int(d) for d in m.dilation), groups=int(m.groups), bias=bias)


def _bn_node(nir, op: Op, ctx: _Export):
    m = op.module
    var = m.running_var.detach().double().cpu()
    scale = (m.weight.detach().double().cpu() if m.weight is not None else torch.ones_like(var)) \
        / torch.sqrt(var + m.eps)
    shift = (m.bias.detach().double().cpu() if m.bias is not None else torch.zeros_like(var)) \
        - m.running_mean.detach().double().cpu() * scale
    info = {"role": "batchnorm", "module": op.name, "eps": float(m.eps),
            "running_mean": _np(m.running_mean).tolist(), "running_var": _np(m.running_var).tolist(),
            "weight": None if m.weight is None else _np(m.weight).tolist(),
            "bias": None if m.bias is None else _np(m.bias).tolist()}
    ctx.notes.append(f"{op.name}: BatchNorm2d written as a diagonal 1x1 Conv2d (same function; another tool "
                     "rounds it differently)")
    if ctx.target.name != "generic":
        _issue(ctx, "an unfolded BatchNorm2d is a 1x1 Conv2d in NIR, which rounds differently from batch norm; fold it "
                    "into the conv (the convert stage does)", op.name)
    return _diagonal_conv(nir, op.shape, scale.float().numpy(), shift.float().numpy(), info)


def _issue(ctx: _Export, text: str, name: str) -> None:
    ctx.issues.setdefault(text, []).append(name)


def _neuron_issues(n, name: str, th: np.ndarray, lk: np.ndarray, ctx: _Export) -> None:
    t = ctx.target
    if n.reset == "soft" and ctx.steps > 1 and not t.soft_reset:
        _issue(ctx, f"{lacks(t, 'soft_reset')}; a soft-reset model differs once a neuron fires at T={ctx.steps} > 1 "
                    "(train with snn.reset: hard, the deployable preset)", name)
    if n.order == "fire-integrate":
        _issue(ctx, "ordering 'fire-integrate' (fire from the previous step's membrane: one step of delay per layer) "
                    "has no NIR form; written as integrate-then-fire neurons", name)
    if not t.per_channel and np.unique(th).size > 1:
        _issue(ctx, f"{lacks(t, 'per_channel')}; train with one threshold per layer (per_channel: false)", name)
    if ctx.steps > 1 and np.any(lk < 1.0) and not t.lif_exact:
        _issue(ctx, f"{lacks(t, 'lif_exact')} (a leak < 1 acts at T={ctx.steps} > 1)", name)


def _scalar_or_full(values: np.ndarray, ctx: _Export) -> np.ndarray:
    """0-d for targets whose importer must see one value per layer (keeps their membranes float32)."""
    if ctx.target.scalar_params and np.unique(values).size == 1:
        return np.asarray(values.reshape(-1)[0])
    return values


def _if_node(nir, shape, v_thr: np.ndarray, ctx: _Export, info: dict):
    v_thr = _scalar_or_full(v_thr, ctx)
    zeros = np.zeros(np.shape(v_thr), np.float32)
    if ctx.target.if_node == "LIF":  # snnTorch maps nir.IF to Leaky(beta=0.9): write beta = 1 as a LIF
        info["if_as_lif"] = True
        tau = np.full(np.shape(v_thr), IF_AS_LIF_TAU)
        return make_node(nir.LIF, info, tau=tau, r=tau / ctx.dt, v_leak=zeros.astype(np.float64), v_threshold=v_thr,
                         v_reset=zeros)
    return make_node(nir.IF, info, r=np.full(np.shape(v_thr), 1.0 / ctx.dt), v_threshold=v_thr, v_reset=zeros)


def _neuron_node(nir, op: Op, ctx: _Export):
    n = op.module
    th, lk = (p.numpy() for p in neuron_params(n, op.shape))
    _neuron_issues(n, op.name, th, lk, ctx)
    geq = ctx.target.geq
    v_thr = th.astype(np.float32) if geq else threshold_to_nir(th)
    info: dict[str, Any] = {"role": "neuron", "module": op.name, "order": n.order, "reset": n.reset,
                            "per_channel": n.threshold.dim() > 0, "threshold_rule": ">=" if geq else ">"}
    generic = ctx.target.name == "generic"
    if np.all(lk == 1.0) or (ctx.steps == 1 and not generic):  # at T=1 the leak never acts (U starts at 0)
        if not np.all(lk == 1.0):
            info["leak_exact"] = [float(v) for v in n.leak.detach().float().cpu().reshape(-1)]
        return _if_node(nir, op.shape, v_thr, ctx, info)
    ones = lk >= 1.0
    if np.any(ones):
        _issue(ctx, f"leak 1 (IF) in some channels and < 1 in others of one layer: NIR's LIF needs a finite tau, so "
                    f"leak 1 is written as {ALMOST_ONE!r}", op.name)
        info["leak_exact"] = [float(v) for v in n.leak.detach().float().cpu().reshape(-1)]
        lk = np.where(ones, np.float32(ALMOST_ONE), lk)
    p = {k: _scalar_or_full(v, ctx) for k, v in leak_to_nir(lk, ctx.dt).items()}
    v_thr = _scalar_or_full(v_thr, ctx)
    return make_node(nir.LIF, info, tau=p["tau"], r=p["r"], v_leak=p["v_leak"], v_threshold=v_thr,
                     v_reset=np.zeros(np.shape(v_thr), np.float32))


def _relu_node(nir, op: Op, ctx: _Export):
    raise ConfigError(f"{op.name}: ReLU in a spiking model cannot be written to NIR")


def _pool_geometry(op: Op) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    if op.kind == "pool":
        m = op.module
        k, s, p = [(v, v) if isinstance(v, int) else tuple(v) for v in (m.kernel_size, m.stride, m.padding)]
        return k, s, p
    k = tuple(op.extra["kernel"])
    return k, k, (0, 0)


def _pool_node(nir, op: Op, ctx: _Export):
    k, s, p = _pool_geometry(op)
    info = {"role": op.kind, "module": op.name, "output_size": list(op.shape[1:])}
    if ctx.target.pool == "sum":
        info["sum_of"] = "avg"
        return make_node(nir.SumPool2d, info, kernel_size=np.array(k), stride=np.array(s), padding=np.array(p))
    return make_node(nir.AvgPool2d, info, kernel_size=np.array(k), stride=np.array(s), padding=np.array(p))


def _flatten_node(nir, op: Op, ctx: _Export):
    return make_node(nir.Flatten, {"role": "flatten", "module": op.name},
                     input_type={"input": np.array(ctx.in_shape(op))}, start_dim=0, end_dim=-1)


def _linear_node(nir, op: Op, ctx: _Export):
    m = op.module
    info = {"role": "linear", "module": op.name, "bias": m.bias is not None}
    weight = _weight(op, ctx, info)
    if m.bias is not None or not ctx.target.linear:
        bias = _np(m.bias) if m.bias is not None else np.zeros(m.out_features, dtype=np.float32)
        return make_node(nir.Affine, info, weight=weight, bias=bias)
    return make_node(nir.Linear, info, weight=weight)


def _readout_node(nir, op: Op, ctx: _Export):
    if not ctx.readout:
        return None
    mode = op.extra["mode"]
    r = 1.0 / ctx.dt if mode == "sum" else 1.0 / (ctx.steps * ctx.dt)
    node = make_node(nir.I, {"role": "readout", "mode": mode, "module": op.name}, r=np.full(op.shape, r))
    if mode == "mean":
        ctx.notes.append(f"readout 'mean' is an integrator with r = 1/(T dt): its last output is the mean over "
                         f"exactly T={ctx.steps} steps")
    return node


_WRITERS = {"input": _input_node, "normalize": _normalize_node, "conv": _conv_node, "bn": _bn_node,
            "neuron": _neuron_node, "relu": _relu_node, "pool": _pool_node, "adaptive_pool": _pool_node,
            "flatten": _flatten_node, "linear": _linear_node, "readout": _readout_node}


# ---- the graph ------------------------------------------------------------------------------------------------
def _graph_nodes(nir, ops: list[Op], ctx: _Export) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    last = None
    for op in ops:
        writer = _WRITERS.get(op.kind)
        if writer is None:  # pragma: no cover - trace_model only yields the kinds above
            raise ConfigError(f"{op.name}: unsupported operation {op.kind}")
        node = writer(nir, op, ctx)
        if node is None:
            continue
        if len(op.inputs) > 1 and not ctx.target.residual:
            _issue(ctx, lacks(ctx.target, "residual"), op.name)
        name = node_name(op.name, ctx.target.name)
        nodes[name] = node
        edges.extend((node_name(src, ctx.target.name), name) for src in op.inputs)
        last = name  # a skipped readout leaves its input as the graph's last node
    nodes["output"] = make_node(nir.Output, {"role": "output"}, output_type={"output": np.array(ops[-1].shape)})
    edges.append((last, "output"))
    return nodes, edges


def _readout_mode(ops: list[Op]) -> str:
    return next((op.extra["mode"] for op in ops if op.kind == "readout"), "sum")


def _graph_notes(snn, ops: list[Op], ctx: _Export, has_readout: bool, normalized: bool) -> list[str]:
    direct = ctx.encoding == "direct"
    t = ctx.target
    notes = [f"target: {t.label}; load with {t.loader}",
             "thresholds are V_th itself: the target fires on v >= v_threshold like spikeforge" if t.geq else
             "thresholds are written one float32 ulp below V_th so that NIR's 'v > v_threshold' fires exactly when "
             "spikeforge's 'U >= V_th' does (float32 membranes)"]
    if not direct:
        notes.append(f"input: Poisson spikes of the normalized image (convention {snn.poisson_convention!r}, rate "
                     f"{snn.poisson_rate}), one frame per step, drawn outside the graph; no normalization node")
    elif normalized:
        notes.append("input: the image in [0, 1], [C, H, W], presented unchanged at each of the T steps; the graph "
                     "normalizes it with a 1x1 Conv2d x * (1/std) + (-mean/std): same function, another tool's float "
                     "rounding may differ by an ulp")
    else:
        notes.append("input: the normalized image (x - mean) / std (mean and std in this metadata, computed by the "
                     "caller in float32 exactly so), [C, H, W], presented unchanged at each of the T steps")
    notes.append("output: the logits are the output at the last step (readout integrator)" if has_readout else
                 "output: the last layer's output is the logits (T=1: the readout over one step is that step)"
                 if ctx.steps == 1 else
                 f"output: the last layer's current at each step; the logits are its {_readout_mode(ops)} over the "
                 "T steps")
    if ctx.folds:
        notes.append("average pooling is written as SumPool2d and its 1/k^2 is folded into the next layer's weights "
                     f"(layers: {', '.join(ctx.folds)}): exact for spike inputs")
    if ctx.steps == 1 and any(o.kind == "neuron" and (o.module.reset == "soft" or t.name != "generic") for o in ops):
        notes.append("leak and reset are exact here: at T=1 the membrane starts at 0 and no neuron can fire twice "
                     "(neurons are written as integrate-and-fire; a tool that runs the graph longer differs)")
    return notes


def _inexact(issues: dict[str, list[str]], allow_inexact: bool, target: Target) -> list[str]:
    """The inexact parts as lines; refuses them (ConfigError) unless allowed, then warns."""
    inexact = [f"{issue} (layers: {', '.join(layers)})" for issue, layers in issues.items()]
    who = "NIR" if target.name == "generic" else f"{target.label}"
    if inexact and not allow_inexact:
        raise ConfigError(f"the model has parts {who} cannot run exactly:\n  - " + "\n  - ".join(inexact)
                          + "\npass allow_inexact=True (CLI: --allow-inexact) to write it anyway; spikeforge's "
                            "from_nir reproduces it exactly from the graph's metadata, other NIR tools will not")
    if inexact:
        warnings.warn(f"NIR export is inexact for {who} (spikeforge's from_nir is exact):\n  - "
                      + "\n  - ".join(inexact), InexactExportWarning, stacklevel=3)
    return inexact


def _graph_metadata(model: nn.Module, ctx: _Export, has_readout: bool, inexact: list[str],
                    notes: list[str], normalized: bool, nodes: dict) -> dict:
    snn, norm = model.snn, model.normalize
    info = {"nodes": {name: node_info(node) for name, node in nodes.items()},
        "format": FORMAT, "version": VERSION, "spikeforge_version": __version__, "target": ctx.target.name,
        "model": model.spec.to_dict(), "snn": {**snn.to_dict(), "timesteps": ctx.steps}, "dt": ctx.dt,
        "timesteps": ctx.steps, "encoding": ctx.encoding, "order": snn.order, "reset": snn.reset,
        "readout": {"mode": snn.readout, "in_graph": has_readout, "by_caller": ctx.readout_by_caller},
        "normalize_in_graph": normalized,
        "normalize": {"mean": [float(v) for v in norm.mean.reshape(-1)],
                      "std": [float(v) for v in norm.std.reshape(-1)]},
        "exact": not inexact, "inexact": inexact, "notes": notes,
        "mapping": {"LIF": "tau = dt/(1-leak), r = tau/dt, v_leak = 0 (forward Euler, held input)",
                    "IF": "r = 1/dt" + (f" (written as LIF tau={IF_AS_LIF_TAU:g}, beta = 1)"
                                        if ctx.target.if_node == "LIF" else ""),
                    "threshold": "v_threshold = V_th (consumer fires on v >= v_threshold)" if ctx.target.geq else
                                 "v_threshold = nextafter(V_th, -inf) in float32",
                    "reset": "v_reset = 0", "pool": "AvgPool2d" if ctx.target.pool == "avg" else
                    "SumPool2d, 1/k^2 folded into the next weights"},
    }
    return {META_KEY: json.dumps(info), "source": "spikeforge", "dt": ctx.dt, "timesteps": ctx.steps,
            "encoding": ctx.encoding, "order": snn.order, "reset": snn.reset, "readout": snn.readout,
            "exact": not inexact, "target": ctx.target.name}


def _check_exportable(model: nn.Module, dt: float | None, target: Target) -> float:
    if not getattr(model, "spiking", False):
        raise ConfigError("this is an ANN twin: NIR describes spiking networks (it has no ReLU node); export the SNN "
                          "(a convert/snn/iir stage) or use --format onnx")
    if dt is None:
        dt = target.dt or 1.0
    dt = float(dt)
    if not (dt > 0 and math.isfinite(dt)):
        raise ConfigError(f"dt must be a positive number, got {dt}")
    if target.dt is not None and dt != target.dt:
        raise ConfigError(f"{target.label} assumes dt = {target.dt:g} for its neurons; leave dt unset (got {dt:g})")
    return dt


def _pool_folds(ops: list[Op], target: Target) -> dict[str, float]:
    """For sum-pool targets: the weight layer after each average pool and the 1/k^2 to fold into it."""
    if target.pool != "sum":
        return {}
    readers: dict[str, list[Op]] = {}
    for op in ops:
        for src in op.inputs:
            readers.setdefault(src, []).append(op)
    folds: dict[str, float] = {}
    for op in ops:
        if op.kind not in ("pool", "adaptive_pool"):
            continue
        k, _, p = _pool_geometry(op)
        nxt = readers.get(op.name, [])
        while len(nxt) == 1 and nxt[0].kind == "flatten":
            nxt = readers.get(nxt[0].name, [])
        if len(nxt) != 1 or nxt[0].kind not in ("conv", "linear") or any(p) or nxt[0].name in folds:
            raise ConfigError(f"{op.name}: {target.label} has no AvgPool2d, and this pool does not feed one Conv2d or "
                              "Linear layer its 1/k^2 could be folded into (unpadded pools only)")
        folds[nxt[0].name] = 1.0 / (k[0] * k[1])
    return folds


def _readout_flag(readout: bool | None, ops: list[Op], steps: int, target: Target) -> bool:
    has = any(op.kind == "readout" for op in ops)
    if readout is None:
        return has and steps > 1 and target.integrator
    if readout and has and not target.integrator:
        raise ConfigError(f"{lacks(target, 'integrator')}: export without the readout (readout=False, the default "
                          "for this target); the logits are then the sum of the output over the T steps")
    return bool(readout) and has


def to_nir(model: nn.Module, *, target: str = "generic", dt: float | None = None, allow_inexact: bool = False,
           readout: bool | None = None, timesteps: int | None = None, normalize_in_graph: bool | None = None):
    """The spikeforge SNN ``model`` as a ``nir.NIRGraph`` (see the module docstring for the mapping).

    ``target``: the consumer the graph is written for (``generic``, ``snntorch``, ``sinabs``, ``norse``;
    :mod:`spikeforge.export.targets`): its forms for pooling, IF neurons, thresholds and readout, and a refusal
    naming what it lacks. ``dt``: NIR time per step (default 1.0, snnTorch: 1e-4, its fixed step). ``readout``:
    include the readout integrator ``nir.I`` (default: only at T > 1 and for targets that read it; at T = 1 the
    last layer's output is the logits). ``normalize_in_graph``: write the input normalization as a 1x1 Conv2d
    (default: only for ``generic``; other targets take the normalized image, which is exact). ``timesteps``: the
    ``T`` the graph is meant to run (default the model's). Raises :class:`ConfigError` for an ANN, an unsupported
    module, or parts the target cannot run exactly without ``allow_inexact``.
    """
    nir = require_nir()
    tgt = get_target(target)
    dt = _check_exportable(model, dt, tgt)
    encoding = model.snn.encoding
    steps = int(timesteps or model.timesteps)
    normalized = encoding == "direct" and (tgt.normalize_in_graph if normalize_in_graph is None
                                           else bool(normalize_in_graph))
    ops = trace_model(model, normalize=normalized)
    in_graph = _readout_flag(readout, ops, steps, tgt)
    ctx = _Export(dt=dt, steps=steps, encoding=encoding, readout=in_graph, shapes={op.name: op.shape for op in ops},
                  target=tgt, readout_by_caller=readout is None and not in_graph, folds=_pool_folds(ops, tgt))
    nodes, edges = _graph_nodes(nir, ops, ctx)
    notes = ctx.notes + _graph_notes(model.snn, ops, ctx, ctx.readout, normalized)
    inexact = _inexact(ctx.issues, allow_inexact, tgt)
    metadata = _graph_metadata(model, ctx, ctx.readout, inexact, notes, normalized, nodes)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def _nir_version() -> str | None:
    try:
        return version("nir")
    except PackageNotFoundError:  # pragma: no cover
        return None


def write_nir(model: nn.Module, path: str | Path, *, card: bool = True, header: dict | None = None,
              metrics: dict | None = None, checkpoint: str | Path | None = None, **kw) -> Path:
    """Write ``to_nir(model, **kw)`` to ``path`` (HDF5, atomically) and, with ``card``, its model card beside it.

    ``header``/``metrics``/``checkpoint`` feed the card (dataset, accuracy, spike rate, energy ratio).
    Returns the path written.
    """
    nir = require_nir()
    graph = to_nir(model, **kw)
    path = Path(path)
    buf = io.BytesIO()
    nir.write(buf, graph)
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))
    if card:
        info = graph_info(graph)
        write_card(path, model, fmt="nir", header=header, metrics=metrics, checkpoint=checkpoint,
                   export={"nir_version": _nir_version(), "dt": info["dt"], "timesteps": info["timesteps"],
                           "readout_in_graph": info["readout"]["in_graph"], "exact": info["exact"],
                           "target": info.get("target", "generic"),
                           "normalize_in_graph": info.get("normalize_in_graph", True),
                           "inexact": info["inexact"], "notes": info["notes"]})
    return path
