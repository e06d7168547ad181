r"""NIR export and import of spikeforge SNNs (Neuromorphic Intermediate Representation, package ``nir``).

NIR describes a network as a graph of continuous-time nodes; spikeforge neurons are discrete-time. The mapping
(see also ``docs/export.md``):

**Time.** A spikeforge timestep lasts ``dt`` NIR time units (``to_nir(..., dt=1.0)`` by default: time is measured
in timesteps). A value ``x[t]`` that enters a neuron at step ``t`` is an input current held constant for the step
(zero-order hold), and each step is one forward-Euler step of the neuron's ODE.

**LIF** (``0 <= lambda < 1``). NIR: ``tau dv/dt = (v_leak - v) + R I``. Forward Euler over ``dt``::

    v[t] = v[t-1] + (dt / tau) (v_leak - v[t-1] + R x[t]) = (1 - dt/tau) v[t-1] + (R dt / tau) x[t] + (dt/tau) v_leak

spikeforge: ``U'[t] = lambda U[t-1] + I[t]``. Matching term by term: ``lambda = 1 - dt/tau`` so ``tau = dt / (1 -
lambda)``; the input coefficient ``R dt / tau = 1`` so ``R = tau / dt = 1 / (1 - lambda)``; ``v_leak = 0``. (``lambda
= 0`` gives ``tau = dt, R = 1``.) ``tau`` is written in float64, so ``float32(1 - dt/tau)`` gives back the exact
float32 leak.

**IF** (``lambda = 1``, the limit ``tau -> inf`` of the above with ``R / tau = 1 / dt`` fixed). NIR: ``dv/dt = R I``;
Euler: ``v[t] = v[t-1] + R dt x[t]``, so ``R = 1 / dt`` (``r = 1`` at the default ``dt = 1``).

**Threshold.** NIR fires on ``v > v_threshold``; spikeforge on ``U >= V_th``. ``v_threshold`` is written one float32
ulp below ``V_th`` (``nextafter(V_th, -inf)``), so that for float32 membranes ``v > v_threshold`` holds exactly when
``v >= V_th``; the importer takes the next float32 up.

**Reset.** NIR neurons reset to ``v_reset`` (written as 0): that is spikeforge's *hard* reset. spikeforge's *soft*
reset (``U -= V_th``) has no NIR form; it is only exact when a neuron cannot fire twice, i.e. at ``T = 1`` (the
state starts at zero and the reset never acts). At ``T > 1`` it is reported as inexact (see below).

**Ordering.** NIR neurons integrate, then fire, in the same instant: spikeforge's ``integrate-fire`` (ordering B).
``fire-integrate`` (ordering A: a layer fires from the previous step's membrane, one step of delay per layer) is
reported as inexact.

**Other nodes.** Conv2d and Linear/Affine (biases, including folded BatchNorm, as NIR biases; bias-free layers give
``Linear`` and zero conv biases); AvgPool2d; Flatten (``start_dim=0``: NIR shapes have no batch dimension); an
unfolded BatchNorm2d as a diagonal 1x1 Conv2d with the equivalent scale and bias; the input normalization
``(x - mean) / std`` as a 1x1 Conv2d (weight ``1/std``, bias ``-mean/std``; left out for Poisson input, whose encoder
runs outside the graph); ResNet shortcuts as a second edge into the block's second neuron (NIR sums the inputs of a
node); the readout (sum over time of the last layer) as an integrator ``nir.I`` with ``r = 1/dt`` (``mean``: ``r =
1/(T dt)``), whose output at the last step is the logits (``readout=False`` leaves it out: the graph then outputs
the last layer's per-step current, to be summed by the caller). Direct encoding presents the same image at each of
the ``T`` steps; spikeforge computes the first layer once and reuses it, which gives the same values.

**Inexact parts** (soft reset at ``T > 1``, ``fire-integrate``, a layer mixing ``lambda = 1`` and ``lambda < 1``
channels) make :func:`to_nir` refuse with a :class:`~spikeforge.errors.ConfigError` listing them, unless
``allow_inexact=True``: then it warns (:class:`InexactExportWarning`) with the same list and records it in the
graph's metadata. In every case the graph metadata holds what NIR cannot say (``spikeforge`` JSON: model spec, SNN
config, ``dt``, ``timesteps``, encoding, ordering, reset, readout, the inexact list and notes), and each neuron node
its own reset and ordering, so :func:`from_nir` rebuilds the spikeforge model exactly.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.nn.layers import Normalize
from spikeforge.neuron import functional as F
from spikeforge.neuron.surrogate import get_surrogate
from spikeforge.export.trace import Op, neuron_params, trace_model

FORMAT = "spikeforge-nir"
VERSION = 1
META_KEY = "spikeforge"
# Leak used for lambda == 1 channels of a layer whose other channels leak (NIR's LIF needs a finite tau).
_ALMOST_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))


class InexactExportWarning(UserWarning):
    """An export was written with ``allow_inexact=True`` although part of the model has no exact NIR form."""


def _require_nir():
    try:
        import nir
    except ImportError:
        raise ConfigError("NIR export/import needs the 'nir' package: pip install nir "
                          "(or pip install 'spikeforge[export]')") from None
    return nir


# --------------------------------------------------------------------------------------------------------------
# parameter mapping (pure numpy; also used by the tests)
# --------------------------------------------------------------------------------------------------------------
def threshold_to_nir(threshold: np.ndarray) -> np.ndarray:
    """``v_threshold`` for NIR's strict ``v > v_thr``: one float32 ulp below spikeforge's ``V_th`` (``U >= V_th``)."""
    th = np.asarray(threshold, dtype=np.float32)
    return np.nextafter(th, np.float32(-np.inf)).astype(np.float32)


def threshold_from_nir(v_threshold: np.ndarray) -> np.ndarray:
    """spikeforge ``V_th`` (float32) of a NIR ``v_threshold``: the next float32 up (inverse of threshold_to_nir)."""
    v = np.asarray(v_threshold, dtype=np.float32)
    return np.nextafter(v, np.float32(np.inf)).astype(np.float32)


def leak_to_nir(leak: np.ndarray, dt: float) -> dict[str, np.ndarray]:
    """LIF parameters for leaks ``0 <= lambda < 1``: ``tau = dt / (1 - lambda)``, ``r = tau / dt``, ``v_leak = 0``."""
    lam = np.asarray(leak, dtype=np.float32).astype(np.float64)
    if np.any(lam >= 1.0) or np.any(lam < 0.0):
        raise ValueError("leak_to_nir needs 0 <= leak < 1 (leak 1 is an IF neuron)")
    tau = dt / (1.0 - lam)
    return {"tau": tau, "r": tau / dt, "v_leak": np.zeros_like(tau)}


def leak_from_nir(tau: np.ndarray, dt: float) -> np.ndarray:
    """spikeforge leak ``float32(1 - dt / tau)`` of a NIR LIF integrated with forward Euler at step ``dt``."""
    lam = 1.0 - float(dt) / np.asarray(tau, dtype=np.float64)
    return np.clip(lam, 0.0, 1.0).astype(np.float32)


def input_gain(node, dt: float) -> np.ndarray:
    """Coefficient of the input in one Euler step of a NIR IF (``r dt``) or LIF (``r dt / tau``) node."""
    r = np.asarray(node.r, dtype=np.float64)
    if hasattr(node, "tau"):
        return r * float(dt) / np.asarray(node.tau, dtype=np.float64)
    return r * float(dt)


# --------------------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------------------
def _meta(data: dict) -> dict:
    """Node metadata: one JSON string (HDF5-safe: no None, no ragged lists)."""
    return {META_KEY: json.dumps(data)}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy().copy()


def _conv_node(nir, m: nn.Conv2d, in_shape, name):
    bias = _np(m.bias) if m.bias is not None else np.zeros(m.out_channels, dtype=np.float32)
    return nir.Conv2d(input_shape=tuple(int(s) for s in in_shape[1:]), weight=_np(m.weight),
                      stride=tuple(int(s) for s in m.stride), padding=tuple(int(p) for p in m.padding),
                      dilation=tuple(int(d) for d in m.dilation), groups=int(m.groups), bias=bias,
                      metadata=_meta({"role": "conv", "module": name, "bias": m.bias is not None}))


def _neuron_node(nir, op: Op, dt: float, steps: int, inexact: dict[str, list[str]]):
    n = op.module
    th, lk = neuron_params(n, op.shape)
    th, lk = th.numpy(), lk.numpy()
    v_thr = threshold_to_nir(th)
    info: dict[str, Any] = {"role": "neuron", "module": op.name, "order": n.order, "reset": n.reset,
                            "per_channel": n.threshold.dim() > 0}
    if n.reset == "soft" and steps > 1:
        inexact.setdefault(f"soft reset (U -= V_th) has no NIR form: NIR neurons reset to v_reset, written as 0 "
                           f"(hard reset), which differs once a neuron fires at T={steps} > 1", []).append(op.name)
    if n.order == "fire-integrate":
        inexact.setdefault("ordering 'fire-integrate' (fire from the previous step's membrane: one step of delay "
                           "per layer) has no NIR form; written as integrate-then-fire neurons", []).append(op.name)
    if np.all(lk == 1.0):
        node = nir.IF(r=np.full(op.shape, 1.0 / dt), v_threshold=v_thr, v_reset=np.zeros(op.shape, np.float32),
                      metadata=_meta(info))
        return node
    ones = lk >= 1.0
    if np.any(ones):
        inexact.setdefault(f"leak 1 (IF) in some channels and < 1 in others of one layer: NIR's LIF needs a finite "
                           f"tau, so leak 1 is written as {_ALMOST_ONE!r}", []).append(op.name)
        info["leak_exact"] = [float(v) for v in n.leak.detach().float().cpu().reshape(-1)]
        lk = np.where(ones, np.float32(_ALMOST_ONE), lk)
    p = leak_to_nir(lk, dt)
    return nir.LIF(tau=p["tau"], r=p["r"], v_leak=p["v_leak"], v_threshold=v_thr,
                   v_reset=np.zeros(op.shape, np.float32), metadata=_meta(info))


def to_nir(model: nn.Module, *, dt: float = 1.0, allow_inexact: bool = False, readout: bool = True,
           timesteps: int | None = None):
    """The spikeforge SNN ``model`` as a ``nir.NIRGraph`` (see the module docstring for the mapping).

    ``dt``: NIR time per spikeforge step (1.0: time in steps; snnTorch's NIR import assumes 1e-4 for LIF nodes).
    ``readout``: include the readout integrator (``nir.I``); without it the graph's output is the last layer's
    current at each step (some NIR tools have no ``I`` node). ``timesteps``: the ``T`` the graph is meant to run
    (default the model's). Raises :class:`ConfigError` for an ANN, an unsupported module, or inexact parts without
    ``allow_inexact``.
    """
    nir = _require_nir()
    if not getattr(model, "spiking", False):
        raise ConfigError("this is an ANN twin: NIR describes spiking networks (it has no ReLU node); export the SNN "
                          "(a convert/snn/iir stage) or use --format onnx")
    dt = float(dt)
    if not (dt > 0 and math.isfinite(dt)):
        raise ConfigError(f"dt must be a positive number, got {dt}")
    steps = int(timesteps or model.timesteps)
    snn = model.snn
    encoding = snn.encoding
    ops = trace_model(model, normalize=encoding == "direct")
    issues: dict[str, list[str]] = {}
    notes: list[str] = []
    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    last = None
    shapes = {op.name: op.shape for op in ops}
    for op in ops:
        in_shape = shapes[op.inputs[0]] if op.inputs else None
        m = op.module
        if op.kind == "input":
            node = nir.Input(input_type={"input": np.array(op.shape)},
                             metadata=_meta({"role": "input", "encoding": encoding}))
        elif op.kind == "normalize":
            c = op.shape[0]
            mean = m.mean.detach().float().cpu().reshape(-1).expand(c).numpy()
            std = m.std.detach().float().cpu().reshape(-1).expand(c).numpy()
            weight = np.zeros((c, c, 1, 1), dtype=np.float32)
            weight[np.arange(c), np.arange(c), 0, 0] = (1.0 / std.astype(np.float64)).astype(np.float32)
            bias = (-mean.astype(np.float64) / std.astype(np.float64)).astype(np.float32)
            node = nir.Conv2d(input_shape=tuple(op.shape[1:]), weight=weight, stride=1, padding=0, dilation=1,
                              groups=1, bias=bias,
                              metadata=_meta({"role": "normalize", "mean": [float(v) for v in mean],
                                              "std": [float(v) for v in std]}))
        elif op.kind == "conv":
            node = _conv_node(nir, m, in_shape, op.name)
        elif op.kind == "bn":
            var = m.running_var.detach().double().cpu()
            scale = (m.weight.detach().double().cpu() if m.weight is not None else torch.ones_like(var)) \
                / torch.sqrt(var + m.eps)
            shift = (m.bias.detach().double().cpu() if m.bias is not None else torch.zeros_like(var)) \
                - m.running_mean.detach().double().cpu() * scale
            c = op.shape[0]
            # a dense diagonal 1x1 conv (nir's Conv2d types ignore groups, so a depthwise conv does not read back)
            weight = np.zeros((c, c, 1, 1), dtype=np.float32)
            weight[np.arange(c), np.arange(c), 0, 0] = scale.float().numpy()
            node = nir.Conv2d(input_shape=tuple(op.shape[1:]), weight=weight,
                              stride=1, padding=0, dilation=1, groups=1, bias=shift.float().numpy(),
                              metadata=_meta({"role": "batchnorm", "module": op.name, "eps": float(m.eps),
                                              "running_mean": _np(m.running_mean).tolist(),
                                              "running_var": _np(m.running_var).tolist(),
                                              "weight": None if m.weight is None else _np(m.weight).tolist(),
                                              "bias": None if m.bias is None else _np(m.bias).tolist()}))
            notes.append(f"{op.name}: BatchNorm2d written as a diagonal 1x1 Conv2d (same function; another tool "
                         "rounds it differently)")
        elif op.kind == "neuron":
            node = _neuron_node(nir, op, dt, steps, issues)
        elif op.kind == "relu":
            raise ConfigError(f"{op.name}: ReLU in a spiking model cannot be written to NIR")
        elif op.kind in ("pool", "adaptive_pool"):
            if op.kind == "pool":
                k, s, p = (m.kernel_size, m.stride, m.padding)
                k, s, p = [(v, v) if isinstance(v, int) else tuple(v) for v in (k, s, p)]
            else:
                k = s = op.extra["kernel"]
                p = (0, 0)
            node = nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array(p),
                                 metadata=_meta({"role": op.kind, "module": op.name,
                                                 "output_size": list(op.shape[1:])}))
        elif op.kind == "flatten":
            node = nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=0, end_dim=-1,
                               metadata=_meta({"role": "flatten", "module": op.name}))
        elif op.kind == "linear":
            info = _meta({"role": "linear", "module": op.name, "bias": m.bias is not None})
            if m.bias is not None:
                node = nir.Affine(weight=_np(m.weight), bias=_np(m.bias), metadata=info)
            else:
                node = nir.Linear(weight=_np(m.weight), metadata=info)
        elif op.kind == "readout":
            if not readout:
                continue
            mode = op.extra["mode"]
            r = 1.0 / dt if mode == "sum" else 1.0 / (steps * dt)
            node = nir.I(r=np.full(op.shape, r), metadata=_meta({"role": "readout", "mode": mode,
                                                                 "module": op.name}))
            if mode == "mean":
                notes.append(f"readout 'mean' is an integrator with r = 1/(T dt): its last output is the mean over "
                             f"exactly T={steps} steps")
        else:  # pragma: no cover - trace_model only yields the kinds above
            raise ConfigError(f"{op.name}: unsupported operation {op.kind}")
        nodes[op.name] = node
        edges.extend((src, op.name) for src in op.inputs)
        last = op.name  # a skipped readout leaves its input as the graph's last node
    out_shape = ops[-1].shape
    nodes["output"] = nir.Output(output_type={"output": np.array(out_shape)}, metadata=_meta({"role": "output"}))
    edges.append((last, "output"))

    has_readout = readout and any(op.kind == "readout" for op in ops)
    notes.append("thresholds are written one float32 ulp below V_th so that NIR's 'v > v_threshold' fires exactly "
                 "when spikeforge's 'U >= V_th' does (float32 membranes)")
    if encoding == "direct":
        notes.append("input: the image in [0, 1], [C, H, W], presented unchanged at each of the T steps (the graph "
                     "normalizes it)")
    else:
        notes.append(f"input: Poisson spikes of the normalized image (convention {snn.poisson_convention!r}, rate "
                     f"{snn.poisson_rate}), one frame per step, drawn outside the graph; the normalization is not in "
                     "the graph")
    notes.append("output: the logits are the output at the last step (readout integrator)" if has_readout else
                 f"output: the last layer's current at each step; the logits are its {op_mode(ops)} over the T steps")
    notes.append("normalization (x - mean) / std is written as a 1x1 Conv2d x * (1/std) + (-mean/std): same "
                 "function, another tool's float rounding may differ by an ulp" if encoding == "direct" else
                 "no normalization node (Poisson input)")
    if steps == 1 and any(o.kind == "neuron" and o.module.reset == "soft" for o in ops):
        notes.append("soft reset is exact here: at T=1 no neuron can fire twice (another tool that runs the graph "
                     "longer resets to v_reset=0)")
    inexact = [f"{issue} (layers: {', '.join(layers)})" for issue, layers in issues.items()]
    if inexact and not allow_inexact:
        raise ConfigError("the model has parts NIR cannot express exactly:\n  - " + "\n  - ".join(inexact)
                          + "\npass allow_inexact=True (CLI: --allow-inexact) to write it anyway; spikeforge's "
                            "from_nir reproduces it exactly from the graph's metadata, other NIR tools will not")
    if inexact:
        warnings.warn("NIR export is inexact for other NIR tools (spikeforge's from_nir is exact):\n  - "
                      + "\n  - ".join(inexact), InexactExportWarning, stacklevel=2)
    from spikeforge import __version__

    info = {
        "format": FORMAT, "version": VERSION, "spikeforge_version": __version__,
        "model": model.spec.to_dict(), "snn": {**snn.to_dict(), "timesteps": steps}, "dt": dt, "timesteps": steps,
        "encoding": encoding, "order": snn.order, "reset": snn.reset,
        "readout": {"mode": snn.readout, "in_graph": has_readout},
        "exact": not inexact, "inexact": inexact, "notes": notes,
        "mapping": {"LIF": "tau = dt/(1-leak), r = tau/dt, v_leak = 0 (forward Euler, held input)",
                    "IF": "r = 1/dt", "threshold": "v_threshold = nextafter(V_th, -inf) in float32",
                    "reset": "v_reset = 0"},
    }
    metadata = {META_KEY: json.dumps(info), "source": "spikeforge", "dt": dt, "timesteps": steps,
                "encoding": encoding, "order": snn.order, "reset": snn.reset, "readout": snn.readout,
                "exact": not inexact}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def op_mode(ops: list[Op]) -> str:
    for op in ops:
        if op.kind == "readout":
            return op.extra["mode"]
    return "sum"


def write_nir(model: nn.Module, path: str | Path, *, card: bool = True, header: dict | None = None,
              metrics: dict | None = None, checkpoint: str | Path | None = None, **kw) -> Path:
    """Write ``to_nir(model, **kw)`` to ``path`` (HDF5, atomically) and, with ``card``, its model card beside it.

    ``header``/``metrics``/``checkpoint`` feed the card (dataset, accuracy, spike rate, energy ratio).
    Returns the path written.
    """
    nir = _require_nir()
    graph = to_nir(model, **kw)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same directory: os.replace is atomic
    try:
        nir.write(str(tmp), graph)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if card:
        from spikeforge.export.card import write_card

        info = graph_info(graph)
        write_card(path, model, fmt="nir", header=header, metrics=metrics, checkpoint=checkpoint,
                   export={"nir_version": _nir_version(), "dt": info["dt"], "timesteps": info["timesteps"],
                           "readout_in_graph": info["readout"]["in_graph"], "exact": info["exact"],
                           "inexact": info["inexact"], "notes": info["notes"]})
    return path


def _nir_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("nir")
    except Exception:  # pragma: no cover
        return None


def read_nir(path: str | Path):
    """Read a ``.nir`` file into a ``nir.NIRGraph``."""
    nir = _require_nir()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"NIR file {p} does not exist")
    try:
        try:
            return nir.read(str(p))
        except ValueError:  # a graph whose declared types do not check (e.g. grouped convs): read it unchecked
            return nir.read(str(p), type_check=False)
    except Exception as exc:
        raise ConfigError(f"cannot read NIR file {p}: {type(exc).__name__}: {str(exc)[:200]}") from None


def graph_info(graph) -> dict | None:
    """The spikeforge metadata of a graph written by :func:`to_nir` (None for a graph from another tool)."""
    raw = (getattr(graph, "metadata", None) or {}).get(META_KEY)
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode()
    info = json.loads(str(raw))
    return info if info.get("format") == FORMAT else None


def node_info(node) -> dict:
    raw = (getattr(node, "metadata", None) or {}).get(META_KEY)
    if raw is None:
        return {}
    if isinstance(raw, bytes):
        raw = raw.decode()
    return json.loads(str(raw))


# --------------------------------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------------------------------
def _neuron_from_node(nir, name: str, node, dt: float | None) -> dict:
    """threshold, leak (float32 arrays of the node's shape), input gain, order and reset of an IF/LIF node."""
    info = node_info(node)
    if not isinstance(node, (nir.IF, nir.LIF)):
        raise ConfigError(f"node {name!r}: {type(node).__name__} is not supported (IF, LIF)")
    if np.any(np.asarray(node.v_reset) != 0):
        raise ConfigError(f"node {name!r}: v_reset != 0 is not supported (spikeforge resets to 0 or subtracts V_th)")
    if dt is None:
        raise ConfigError(f"node {name!r}: the graph does not record its time step; pass dt= (the NIR time of one "
                          "step, e.g. 1e-4 for graphs from snnTorch)")
    if isinstance(node, nir.LIF):
        if np.any(np.asarray(node.v_leak) != 0):
            raise ConfigError(f"node {name!r}: v_leak != 0 is not supported")
        leak = leak_from_nir(node.tau, dt)
        if "leak_exact" in info:
            leak = np.asarray(info["leak_exact"], dtype=np.float32)
    else:
        leak = np.ones(np.shape(node.v_threshold), dtype=np.float32)
    gain = input_gain(node, dt)
    if np.allclose(gain, 1.0, rtol=1e-9, atol=0.0):
        gain = None
    return {"threshold": threshold_from_nir(node.v_threshold), "leak": leak, "gain": gain,
            "order": info.get("order", "integrate-fire"), "reset": info.get("reset", "hard"),
            "per_channel": info.get("per_channel")}


def _reduce(arr: np.ndarray, name: str, what: str, per_channel: bool | None) -> torch.Tensor:
    """A full-shape parameter ``[C, H, W]`` / ``[N]`` as spikeforge's scalar or per-channel ``[C]``."""
    a = np.asarray(arr, dtype=np.float32)
    if a.ndim == 0:
        return torch.tensor(float(a))
    flat = a.reshape(a.shape[0], -1)
    if per_channel is not True and np.all(a == a.reshape(-1)[0]):
        return torch.tensor(float(a.reshape(-1)[0]))
    if not np.all(flat == flat[:, :1]):
        if per_channel is None:
            return torch.from_numpy(a.copy())  # per neuron (generic executor only)
        raise ConfigError(f"node {name!r}: {what} varies within a channel; spikeforge has one per layer or channel")
    return torch.from_numpy(flat[:, 0].copy())


def from_nir(graph_or_path, *, generic: bool = False, dt: float | None = None, timesteps: int | None = None,
             surrogate: str | dict = "linear") -> nn.Module:
    """Import a NIR graph (or ``.nir`` file).

    A graph written by :func:`to_nir` becomes the spikeforge twin it came from (weights, thresholds and leaks read
    from the nodes; architecture, neuron ordering/reset and readout from the metadata): identical outputs and spikes.
    Any other graph of the supported node types (Input, Output, Conv2d, Linear, Affine, Scale, AvgPool2d, SumPool2d,
    Flatten, IF, LIF, I), or ``generic=True``, gives a :class:`NIRNetwork` that runs the graph with spikeforge's
    neuron. ``dt`` is the NIR time of one step (default: the graph's metadata).
    """
    graph = read_nir(graph_or_path) if isinstance(graph_or_path, (str, Path)) else graph_or_path
    info = graph_info(graph)
    if info is not None and not generic:
        model = _twin_from_graph(graph, info)
        if timesteps:
            model.timesteps = int(timesteps)
        return model
    return NIRNetwork(graph, dt=dt, timesteps=timesteps, surrogate=surrogate)


def _twin_from_graph(graph, info: dict) -> nn.Module:
    nir = _require_nir()
    from spikeforge.models import ModelSpec, SNNConfig, build_model

    if info.get("version", 0) > VERSION:
        raise ConfigError(f"the graph was written by a newer spikeforge (format version {info['version']})")
    spec = ModelSpec.from_dict(info["model"])
    snn = SNNConfig.from_dict(info["snn"])
    try:
        model = build_model(spec, snn)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; register the architecture first, or run the graph as it is with "
                          "from_nir(graph, generic=True)") from None
    model.eval()
    dt = float(info["dt"])
    ops = trace_model(model, normalize=snn.encoding == "direct")
    expected = {op.name for op in ops if op.kind != "readout" or info["readout"]["in_graph"]} | {"output"}
    have = set(graph.nodes)
    if expected != have:
        raise ConfigError(f"the graph's nodes do not match its spikeforge metadata ({spec.arch}): missing "
                          f"{sorted(expected - have)[:5]}, unexpected {sorted(have - expected)[:5]}")
    with torch.no_grad():
        for op in ops:
            if op.name not in graph.nodes:
                continue
            node, m = graph.nodes[op.name], op.module
            if op.kind in ("conv", "linear"):
                w = torch.from_numpy(np.asarray(node.weight, dtype=np.float32).copy())
                if tuple(w.shape) != tuple(m.weight.shape):
                    raise ConfigError(f"node {op.name!r}: weight shape {tuple(w.shape)}, model expects "
                                      f"{tuple(m.weight.shape)}")
                m.weight.copy_(w)
                bias = getattr(node, "bias", None)
                if m.bias is not None:
                    if bias is None:
                        raise ConfigError(f"node {op.name!r} has no bias but the model's layer has one")
                    m.bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float32).copy()))
                elif bias is not None and np.any(np.asarray(bias) != 0):
                    raise ConfigError(f"node {op.name!r} has a nonzero bias but the model's layer has none")
            elif op.kind == "bn":
                meta = node_info(node)
                m.running_mean.copy_(torch.tensor(meta["running_mean"]))
                m.running_var.copy_(torch.tensor(meta["running_var"]))
                m.eps = meta["eps"]
                if m.weight is not None:
                    m.weight.copy_(torch.tensor(meta["weight"]))
                    m.bias.copy_(torch.tensor(meta["bias"]))
            elif op.kind == "neuron":
                p = _neuron_from_node(nir, op.name, node, dt)
                if (p["order"], p["reset"]) != (m.order, m.reset):
                    raise ConfigError(f"node {op.name!r}: ordering/reset {p['order']}/{p['reset']} differ from the "
                                      f"metadata's {m.order}/{m.reset}")
                if p["gain"] is not None:
                    raise ConfigError(f"node {op.name!r}: input gain {np.mean(p['gain']):.6g} != 1 for dt={dt}")
                per_channel = m.threshold.dim() > 0
                m.threshold.copy_(_reduce(p["threshold"], op.name, "v_threshold", per_channel)
                                  .reshape(m.threshold.shape))
                m.leak.copy_(_reduce(p["leak"], op.name, "tau", per_channel).reshape(m.leak.shape))
            elif op.kind == "readout":
                if node_info(node).get("mode") != m.mode:
                    raise ConfigError(f"node {op.name!r}: readout mode differs from the metadata")
    return model


# --------------------------------------------------------------------------------------------------------------
# generic executor
# --------------------------------------------------------------------------------------------------------------
class _Flatten(nn.Module):
    def __init__(self, start_dim: int, end_dim: int):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):  # NIR dims exclude the batch dimension
        end = self.end_dim + 1 if self.end_dim >= 0 else self.end_dim
        return x.flatten(self.start_dim + 1, end)


class _Scale(nn.Module):
    def __init__(self, scale: np.ndarray):
        super().__init__()
        self.register_buffer("scale", torch.from_numpy(np.asarray(scale, dtype=np.float32).copy()))

    def forward(self, x):
        return x * self.scale


class _SumPool(nn.Module):
    def __init__(self, kernel, stride, padding):
        super().__init__()
        self.kernel, self.stride, self.padding = tuple(kernel), tuple(stride), tuple(padding)

    def forward(self, x):
        return nn.functional.avg_pool2d(x, self.kernel, self.stride, self.padding, divisor_override=1)


class NIRNeuron(nn.Module):
    """A NIR IF/LIF node run with spikeforge's neuron core on time-first ``[T, B, ...]`` input."""

    time_aware = True

    def __init__(self, threshold, leak, gain=None, order="integrate-fire", reset="hard", surrogate="linear"):
        super().__init__()
        self.register_buffer("threshold", threshold)
        self.register_buffer("leak", leak)
        self.register_buffer("gain", None if gain is None else torch.from_numpy(np.asarray(gain, np.float32).copy()))
        self.order, self.reset = order, reset
        self.surrogate = get_surrogate(surrogate)
        self.timesteps = 1

    def forward(self, x):
        if x.shape[0] == 1 and self.timesteps > 1:
            x = x.expand(self.timesteps, *x.shape[1:])
        if self.gain is not None:
            x = x * self.gain
        th, lk = self.threshold, self.leak
        step_dims = x.dim() - 1
        if th.dim() == 1 and step_dims > 2:  # per channel [C] -> [C, 1, ..., 1] like SpikingNeuron
            th = th.view(-1, *([1] * (step_dims - 2)))
        if lk.dim() == 1 and step_dims > 2:
            lk = lk.view(-1, *([1] * (step_dims - 2)))
        return F.multistep(x, th, lk, surrogate=self.surrogate, order=self.order, reset=self.reset)


class _Integrator(nn.Module):
    """NIR ``I`` (``dv/dt = r I``, Euler: ``v += r dt x``): output ``v`` after each step, time-first."""

    time_aware = True

    def __init__(self, coeff: np.ndarray):
        super().__init__()
        self.register_buffer("coeff", torch.from_numpy(np.asarray(coeff, dtype=np.float32).copy()))
        self.timesteps = 1

    def forward(self, x):
        if x.shape[0] == 1 and self.timesteps > 1:
            x = x.expand(self.timesteps, *x.shape[1:])
        return torch.cumsum(x * self.coeff, dim=0)


class _ReadoutNode(nn.Module):
    """spikeforge's readout written as ``nir.I``: sum (or mean) over time, ``[T, B, K] -> [B, K]``."""

    time_aware = True

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode
        self.timesteps = 1

    def forward(self, x):
        if x.shape[0] == 1 and self.timesteps > 1:
            x = x.expand(self.timesteps, *x.shape[1:])
        return x.sum(0) if self.mode == "sum" else x.mean(0)


def _topo_order(names: list[str], edges: list[tuple[str, str]]) -> list[str]:
    indeg = {n: 0 for n in names}
    for a, b in edges:
        indeg[b] += 1
    order, ready = [], [n for n in names if indeg[n] == 0]
    while ready:
        n = ready.pop(0)
        order.append(n)
        for a, b in edges:
            if a == n:
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(b)
    if len(order) != len(names):
        raise ConfigError("the NIR graph has a cycle (recurrent connections); only feed-forward graphs are supported")
    return order


class NIRNetwork(nn.Module):
    """Runs a feed-forward NIR graph with spikeforge's neuron (the generic importer).

    ``forward(x, timesteps=None)``: ``x`` is time-first ``[T, B, ...]``, or ``[B, ...]`` for an input held constant
    over ``T`` steps (``timesteps``, default the graph's metadata or 1; like spikeforge's direct input, the layers
    before the first neuron then run once). Stateless nodes run folded over ``[T*B, ...]``. Returns the output node's
    value: ``[B, K]`` after a spikeforge readout node, else time-first ``[T, B, ...]``. The spikes of each neuron
    node are those of the modules in :attr:`neurons` (forward hooks see them).
    """

    def __init__(self, graph, *, dt: float | None = None, timesteps: int | None = None,
                 surrogate: str | dict = "linear"):
        super().__init__()
        nir = _require_nir()
        info = graph_info(graph) or {}
        meta = getattr(graph, "metadata", None) or {}
        if dt is None:
            dt = info.get("dt", meta.get("dt"))
        self.dt = None if dt is None else float(dt)
        self.default_timesteps = int(timesteps or info.get("timesteps") or meta.get("timesteps") or 1)
        names = list(graph.nodes)
        self.edges = [(str(a), str(b)) for a, b in graph.edges]
        self.order = _topo_order(names, self.edges)
        self.inputs = {n: [a for a, b in self.edges if b == n] for n in names}
        ins = [n for n, v in graph.nodes.items() if isinstance(v, nir.Input)]
        outs = [n for n, v in graph.nodes.items() if isinstance(v, nir.Output)]
        if len(ins) != 1 or len(outs) != 1:
            raise ConfigError(f"the NIR graph needs one Input and one Output node, has {len(ins)} and {len(outs)}")
        self.input_name, self.output_name = ins[0], outs[0]
        self.input_shape = tuple(int(s) for s in np.asarray(graph.nodes[ins[0]].input_type["input"]).reshape(-1))
        self.layers = nn.ModuleDict()
        self._keys: dict[str, str] = {}
        for name in names:
            node = graph.nodes[name]
            if isinstance(node, (nir.Input, nir.Output)):
                continue
            key = f"n{len(self._keys)}"
            self._keys[name] = key
            self.layers[key] = self._module(nir, name, node, surrogate)

    @property
    def neurons(self) -> dict[str, NIRNeuron]:
        """Neuron modules by node name, in graph order."""
        return {n: self.layers[k] for n, k in self._keys.items() if isinstance(self.layers[k], NIRNeuron)}

    def _module(self, nir, name: str, node, surrogate) -> nn.Module:
        info = node_info(node)
        role = info.get("role")
        if isinstance(node, nir.Conv2d):
            if role == "normalize":
                return Normalize(info["mean"], info["std"])
            if role == "batchnorm":
                c = len(info["running_mean"])
                bn = nn.BatchNorm2d(c, eps=info["eps"], affine=info["weight"] is not None)
                with torch.no_grad():
                    bn.running_mean.copy_(torch.tensor(info["running_mean"]))
                    bn.running_var.copy_(torch.tensor(info["running_var"]))
                    if info["weight"] is not None:
                        bn.weight.copy_(torch.tensor(info["weight"]))
                        bn.bias.copy_(torch.tensor(info["bias"]))
                return bn.eval()
            w = np.asarray(node.weight, dtype=np.float32)
            bias = None if node.bias is None else np.asarray(node.bias, dtype=np.float32)
            use_bias = bias is not None and (info.get("bias", True) or np.any(bias != 0))
            pad = node.padding if isinstance(node.padding, str) else tuple(int(p) for p in np.ravel(node.padding))
            conv = nn.Conv2d(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]),
                             stride=tuple(int(s) for s in np.ravel(node.stride)), padding=pad,
                             dilation=tuple(int(d) for d in np.ravel(node.dilation)), groups=int(node.groups),
                             bias=use_bias)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(w.copy()))
                if use_bias:
                    conv.bias.copy_(torch.from_numpy(bias.copy()))
            return conv
        if isinstance(node, (nir.Linear, nir.Affine)):
            w = np.asarray(node.weight, dtype=np.float32)
            bias = np.asarray(node.bias, dtype=np.float32) if isinstance(node, nir.Affine) else None
            lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w.copy()))
                if bias is not None:
                    lin.bias.copy_(torch.from_numpy(bias.copy()))
            return lin
        if isinstance(node, nir.Scale):
            return _Scale(node.scale)
        if isinstance(node, nir.AvgPool2d):
            if role == "adaptive_pool":
                return nn.AdaptiveAvgPool2d(tuple(info["output_size"]))
            return nn.AvgPool2d(tuple(int(v) for v in np.ravel(node.kernel_size)),
                                tuple(int(v) for v in np.ravel(node.stride)),
                                tuple(int(v) for v in np.ravel(node.padding)))
        if isinstance(node, nir.SumPool2d):
            return _SumPool(np.ravel(node.kernel_size), np.ravel(node.stride), np.ravel(node.padding))
        if isinstance(node, nir.Flatten):
            return _Flatten(int(node.start_dim), int(node.end_dim))
        if isinstance(node, (nir.IF, nir.LIF)):
            p = _neuron_from_node(nir, name, node, self.dt)
            th = _reduce(p["threshold"], name, "v_threshold", None)
            lk = _reduce(p["leak"], name, "tau", None)
            return NIRNeuron(th, lk, p["gain"], p["order"], p["reset"], surrogate)
        if isinstance(node, nir.I):
            if role == "readout":
                return _ReadoutNode(info["mode"])
            if self.dt is None:
                raise ConfigError(f"node {name!r}: the graph does not record its time step; pass dt=")
            return _Integrator(np.asarray(node.r, dtype=np.float64) * self.dt)
        raise ConfigError(f"node {name!r}: NIR {type(node).__name__} is not supported by spikeforge's importer "
                          "(supported: Input, Output, Conv2d, Linear, Affine, Scale, AvgPool2d, SumPool2d, Flatten, "
                          "IF, LIF, I)")

    def forward(self, x: torch.Tensor, timesteps: int | None = None) -> torch.Tensor:
        steps = int(timesteps or self.default_timesteps)
        nd = len(self.input_shape)
        if x.dim() == nd + 1:
            x = x.unsqueeze(0)
        elif x.dim() != nd + 2:
            raise ConfigError(f"input must be [B, {', '.join(map(str, self.input_shape))}] or time-first "
                              f"[T, B, ...]; got shape {tuple(x.shape)}")
        else:
            steps = x.shape[0]
        for m in self.layers.values():
            if hasattr(m, "timesteps"):
                m.timesteps = steps
        values = {self.input_name: x}
        for name in self.order:
            if name == self.input_name:
                continue
            srcs = [values[s] for s in self.inputs[name]]
            if not srcs:
                raise ConfigError(f"node {name!r} has no input")
            h = srcs[0]
            for other in srcs[1:]:
                if other.shape[0] != h.shape[0]:
                    h, other = torch.broadcast_tensors(h, other)
                h = h + other
            if name == self.output_name:
                values[name] = h
                continue
            m = self.layers[self._keys[name]]
            if getattr(m, "time_aware", False):
                values[name] = m(h)
            else:
                t, b = h.shape[:2]
                y = m(h.reshape(t * b, *h.shape[2:]))
                values[name] = y.reshape(t, b, *y.shape[1:])
        return values[self.output_name]
