r"""NIR export of spikeforge SNNs: :func:`to_nir` (a ``nir.NIRGraph``) and :func:`write_nir` (a ``.nir`` file + card).

The neuron mapping (forward-Euler LIF/IF nodes of Pedersen et al. 2024, thresholds one float32 ulp down, reset to 0)
is described in :mod:`spikeforge.export.nir_mapping`. The other nodes:

Conv2d and Linear/Affine (biases, including folded BatchNorm, as NIR biases; bias-free layers give ``Linear`` and zero
conv biases); AvgPool2d; Flatten (``start_dim=0``: NIR shapes have no batch dimension); an unfolded BatchNorm2d as a
diagonal 1x1 Conv2d with the equivalent scale and bias; the input normalization ``(x - mean) / std`` as a 1x1 Conv2d
(weight ``1/std``, bias ``-mean/std``; left out for Poisson input, whose encoder runs outside the graph); ResNet
shortcuts as a second edge into the block's second neuron (NIR sums the inputs of a node); the readout (sum over time
of the last layer) as an integrator ``nir.I`` with ``r = 1/dt`` (``mean``: ``r = 1/(T dt)``), whose output at the last
step is the logits (``readout=False`` leaves it out: the graph then outputs the last layer's per-step current, to be
summed by the caller). Direct encoding presents the same image at each of the ``T`` steps; spikeforge computes the
first layer once and reuses it, which gives the same values.

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
                                           leak_to_nir, node_meta, require_nir, threshold_to_nir)
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
    return nir.Conv2d(input_shape=tuple(shape[1:]), weight=weight, stride=1, padding=0, dilation=1, groups=1,
                      bias=bias, metadata=node_meta(info))


# ---- one writer per traced operation kind ---------------------------------------------------------------------
def _input_node(nir, op: Op, ctx: _Export):
    return nir.Input(input_type={"input": np.array(op.shape)},
                     metadata=node_meta({"role": "input", "encoding": ctx.encoding}))


def _normalize_node(nir, op: Op, ctx: _Export):
    m, c = op.module, op.shape[0]
    mean = m.mean.detach().float().cpu().reshape(-1).expand(c).numpy()
    std = m.std.detach().float().cpu().reshape(-1).expand(c).numpy()
    diag = (1.0 / std.astype(np.float64)).astype(np.float32)
    bias = (-mean.astype(np.float64) / std.astype(np.float64)).astype(np.float32)
    return _diagonal_conv(nir, op.shape, diag, bias, {"role": "normalize", "mean": [float(v) for v in mean],
                                                      "std": [float(v) for v in std]})


def _conv_node(nir, op: Op, ctx: _Export):
    m, in_shape = op.module, ctx.in_shape(op)
    bias = _np(m.bias) if m.bias is not None else np.zeros(m.out_channels, dtype=np.float32)
    return nir.Conv2d(input_shape=tuple(int(s) for s in in_shape[1:]), weight=_np(m.weight),
                      stride=tuple(int(s) for s in m.stride), padding=tuple(int(p) for p in m.padding),
                      dilation=tuple(int(d) for d in m.dilation), groups=int(m.groups), bias=bias,
                      metadata=node_meta({"role": "conv", "module": op.name, "bias": m.bias is not None}))


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
    return _diagonal_conv(nir, op.shape, scale.float().numpy(), shift.float().numpy(), info)


def _neuron_issues(n, name: str, ctx: _Export) -> None:
    if n.reset == "soft" and ctx.steps > 1:
        ctx.issues.setdefault(f"soft reset (U -= V_th) has no NIR form: NIR neurons reset to v_reset, written as 0 "
                              f"(hard reset), which differs once a neuron fires at T={ctx.steps} > 1", []).append(name)
    if n.order == "fire-integrate":
        ctx.issues.setdefault("ordering 'fire-integrate' (fire from the previous step's membrane: one step of delay "
                              "per layer) has no NIR form; written as integrate-then-fire neurons", []).append(name)


def _neuron_node(nir, op: Op, ctx: _Export):
    n = op.module
    th, lk = (p.numpy() for p in neuron_params(n, op.shape))
    v_thr = threshold_to_nir(th)
    v_reset = np.zeros(op.shape, np.float32)
    info: dict[str, Any] = {"role": "neuron", "module": op.name, "order": n.order, "reset": n.reset,
                            "per_channel": n.threshold.dim() > 0}
    _neuron_issues(n, op.name, ctx)
    if np.all(lk == 1.0):
        return nir.IF(r=np.full(op.shape, 1.0 / ctx.dt), v_threshold=v_thr, v_reset=v_reset, metadata=node_meta(info))
    ones = lk >= 1.0
    if np.any(ones):
        ctx.issues.setdefault(f"leak 1 (IF) in some channels and < 1 in others of one layer: NIR's LIF needs a "
                              f"finite tau, so leak 1 is written as {ALMOST_ONE!r}", []).append(op.name)
        info["leak_exact"] = [float(v) for v in n.leak.detach().float().cpu().reshape(-1)]
        lk = np.where(ones, np.float32(ALMOST_ONE), lk)
    p = leak_to_nir(lk, ctx.dt)
    return nir.LIF(tau=p["tau"], r=p["r"], v_leak=p["v_leak"], v_threshold=v_thr, v_reset=v_reset,
                   metadata=node_meta(info))


def _relu_node(nir, op: Op, ctx: _Export):
    raise ConfigError(f"{op.name}: ReLU in a spiking model cannot be written to NIR")


def _pool_node(nir, op: Op, ctx: _Export):
    if op.kind == "pool":
        m = op.module
        k, s, p = [(v, v) if isinstance(v, int) else tuple(v) for v in (m.kernel_size, m.stride, m.padding)]
    else:
        k = s = op.extra["kernel"]
        p = (0, 0)
    return nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array(p),
                         metadata=node_meta({"role": op.kind, "module": op.name, "output_size": list(op.shape[1:])}))


def _flatten_node(nir, op: Op, ctx: _Export):
    return nir.Flatten(input_type={"input": np.array(ctx.in_shape(op))}, start_dim=0, end_dim=-1,
                       metadata=node_meta({"role": "flatten", "module": op.name}))


def _linear_node(nir, op: Op, ctx: _Export):
    m = op.module
    info = node_meta({"role": "linear", "module": op.name, "bias": m.bias is not None})
    if m.bias is not None:
        return nir.Affine(weight=_np(m.weight), bias=_np(m.bias), metadata=info)
    return nir.Linear(weight=_np(m.weight), metadata=info)


def _readout_node(nir, op: Op, ctx: _Export):
    if not ctx.readout:
        return None
    mode = op.extra["mode"]
    r = 1.0 / ctx.dt if mode == "sum" else 1.0 / (ctx.steps * ctx.dt)
    node = nir.I(r=np.full(op.shape, r), metadata=node_meta({"role": "readout", "mode": mode, "module": op.name}))
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
        nodes[op.name] = node
        edges.extend((src, op.name) for src in op.inputs)
        last = op.name  # a skipped readout leaves its input as the graph's last node
    nodes["output"] = nir.Output(output_type={"output": np.array(ops[-1].shape)},
                                 metadata=node_meta({"role": "output"}))
    edges.append((last, "output"))
    return nodes, edges


def _readout_mode(ops: list[Op]) -> str:
    return next((op.extra["mode"] for op in ops if op.kind == "readout"), "sum")


def _graph_notes(snn, ops: list[Op], ctx: _Export, has_readout: bool) -> list[str]:
    direct = ctx.encoding == "direct"
    notes = ["thresholds are written one float32 ulp below V_th so that NIR's 'v > v_threshold' fires exactly "
             "when spikeforge's 'U >= V_th' does (float32 membranes)"]
    notes.append("input: the image in [0, 1], [C, H, W], presented unchanged at each of the T steps (the graph "
                 "normalizes it)" if direct else
                 f"input: Poisson spikes of the normalized image (convention {snn.poisson_convention!r}, rate "
                 f"{snn.poisson_rate}), one frame per step, drawn outside the graph; the normalization is not in "
                 "the graph")
    notes.append("output: the logits are the output at the last step (readout integrator)" if has_readout else
                 f"output: the last layer's current at each step; the logits are its {_readout_mode(ops)} over the "
                 "T steps")
    notes.append("normalization (x - mean) / std is written as a 1x1 Conv2d x * (1/std) + (-mean/std): same "
                 "function, another tool's float rounding may differ by an ulp" if direct else
                 "no normalization node (Poisson input)")
    if ctx.steps == 1 and any(o.kind == "neuron" and o.module.reset == "soft" for o in ops):
        notes.append("soft reset is exact here: at T=1 no neuron can fire twice (another tool that runs the graph "
                     "longer resets to v_reset=0)")
    return notes


def _inexact(issues: dict[str, list[str]], allow_inexact: bool) -> list[str]:
    """The inexact parts as lines; refuses them (ConfigError) unless allowed, then warns."""
    inexact = [f"{issue} (layers: {', '.join(layers)})" for issue, layers in issues.items()]
    if inexact and not allow_inexact:
        raise ConfigError("the model has parts NIR cannot express exactly:\n  - " + "\n  - ".join(inexact)
                          + "\npass allow_inexact=True (CLI: --allow-inexact) to write it anyway; spikeforge's "
                            "from_nir reproduces it exactly from the graph's metadata, other NIR tools will not")
    if inexact:
        warnings.warn("NIR export is inexact for other NIR tools (spikeforge's from_nir is exact):\n  - "
                      + "\n  - ".join(inexact), InexactExportWarning, stacklevel=3)
    return inexact


def _graph_metadata(model: nn.Module, ctx: _Export, has_readout: bool, inexact: list[str],
                    notes: list[str]) -> dict:
    snn = model.snn
    info = {
        "format": FORMAT, "version": VERSION, "spikeforge_version": __version__,
        "model": model.spec.to_dict(), "snn": {**snn.to_dict(), "timesteps": ctx.steps}, "dt": ctx.dt,
        "timesteps": ctx.steps, "encoding": ctx.encoding, "order": snn.order, "reset": snn.reset,
        "readout": {"mode": snn.readout, "in_graph": has_readout},
        "exact": not inexact, "inexact": inexact, "notes": notes,
        "mapping": {"LIF": "tau = dt/(1-leak), r = tau/dt, v_leak = 0 (forward Euler, held input)",
                    "IF": "r = 1/dt", "threshold": "v_threshold = nextafter(V_th, -inf) in float32",
                    "reset": "v_reset = 0"},
    }
    return {META_KEY: json.dumps(info), "source": "spikeforge", "dt": ctx.dt, "timesteps": ctx.steps,
            "encoding": ctx.encoding, "order": snn.order, "reset": snn.reset, "readout": snn.readout,
            "exact": not inexact}


def _check_exportable(model: nn.Module, dt: float) -> float:
    if not getattr(model, "spiking", False):
        raise ConfigError("this is an ANN twin: NIR describes spiking networks (it has no ReLU node); export the SNN "
                          "(a convert/snn/iir stage) or use --format onnx")
    dt = float(dt)
    if not (dt > 0 and math.isfinite(dt)):
        raise ConfigError(f"dt must be a positive number, got {dt}")
    return dt


def to_nir(model: nn.Module, *, dt: float = 1.0, allow_inexact: bool = False, readout: bool = True,
           timesteps: int | None = None):
    """The spikeforge SNN ``model`` as a ``nir.NIRGraph`` (see the module docstring for the mapping).

    ``dt``: NIR time per spikeforge step (1.0: time in steps; snnTorch's NIR import assumes 1e-4 for LIF nodes).
    ``readout``: include the readout integrator (``nir.I``); without it the graph's output is the last layer's
    current at each step (some NIR tools have no ``I`` node). ``timesteps``: the ``T`` the graph is meant to run
    (default the model's). Raises :class:`ConfigError` for an ANN, an unsupported module, or inexact parts without
    ``allow_inexact``.
    """
    nir = require_nir()
    dt = _check_exportable(model, dt)
    encoding = model.snn.encoding
    ops = trace_model(model, normalize=encoding == "direct")
    ctx = _Export(dt=dt, steps=int(timesteps or model.timesteps), encoding=encoding, readout=readout,
                  shapes={op.name: op.shape for op in ops})
    nodes, edges = _graph_nodes(nir, ops, ctx)
    has_readout = readout and any(op.kind == "readout" for op in ops)
    notes = ctx.notes + _graph_notes(model.snn, ops, ctx, has_readout)
    inexact = _inexact(ctx.issues, allow_inexact)
    metadata = _graph_metadata(model, ctx, has_readout, inexact, notes)
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
                           "inexact": info["inexact"], "notes": info["notes"]})
    return path
