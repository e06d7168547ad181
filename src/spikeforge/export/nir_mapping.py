r"""How spikeforge neurons map onto NIR nodes, shared by the NIR writer, reader and runtime.

NIR (the Neuromorphic Intermediate Representation; Pedersen et al. 2024, "Neuromorphic intermediate representation:
a unified instruction set for interoperable brain-inspired computing", Nature Communications 15:8122) describes a
network as a graph of continuous-time nodes; spikeforge neurons are discrete-time. The mapping (see also
``docs/export.md``):

**Time.** A spikeforge timestep lasts ``dt`` NIR time units (``to_nir(..., dt=1.0)`` by default: time is measured
in timesteps). A value ``x[t]`` that enters a neuron at step ``t`` is an input current held constant for the step
(zero-order hold), and each step is one forward-Euler step of the neuron's ODE.

**LIF** (``0 <= lambda < 1``). NIR's LIF node (Pedersen et al. 2024): ``tau dv/dt = (v_leak - v) + R I``. Forward
Euler over ``dt``::

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
reset (``U -= V_th``) has no NIR form; it is only exact when a neuron cannot fire twice, i.e. at ``T = 1``.

**Ordering.** NIR neurons integrate, then fire, in the same instant: spikeforge's ``integrate-fire``.
``fire-integrate`` (a layer fires from the previous step's membrane) has no NIR form.

Each node carries what NIR cannot say as one JSON string under the ``spikeforge`` metadata key (:func:`node_meta`,
:func:`node_info`); the graph's own metadata holds the model spec, SNN config, ``dt`` and ``timesteps``
(:func:`graph_info`) and a copy of every node's, since some nir versions' node types have no metadata field
(:func:`make_node`, :func:`restore_node_info`).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch

from spikeforge.errors import ConfigError

FORMAT = "spikeforge-nir"
VERSION = 1
META_KEY = "spikeforge"
# Leak used for lambda == 1 channels of a layer whose other channels leak (NIR's LIF needs a finite tau).
ALMOST_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))


class InexactExportWarning(UserWarning):
    """An export was written with ``allow_inexact=True`` although part of the model has no exact NIR form."""


def require_nir():
    """The ``nir`` package, or a :class:`ConfigError` saying how to install it."""
    try:
        import nir
    except ImportError:
        raise ConfigError("NIR export/import needs the 'nir' package: pip install nir "
                          "(or pip install 'spikeforge[export]')") from None
    return nir


# ---- parameter mapping (pure numpy) ---------------------------------------------------------------------------
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


# ---- metadata -------------------------------------------------------------------------------------------------
def node_meta(data: dict) -> dict:
    """Node metadata: one JSON string (HDF5-safe: no None, no ragged lists)."""
    return {META_KEY: json.dumps(data)}


def make_node(cls, info: dict, **kw):
    """``cls(**kw)`` carrying ``info`` as its spikeforge metadata.

    Arguments the installed nir's node lacks are left out (nir 1.0.4's IF/LIF have no ``v_reset``: it is 0 there);
    nodes without a ``metadata`` field (nir 1.0.4's Input, Output, Conv2d, Linear, AvgPool2d) get it as an attribute,
    and :func:`~spikeforge.export.nir_export.to_nir` also keeps every node's metadata in the graph's, from where
    :func:`restore_node_info` puts it back after reading a file.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    node = cls(**{k: v for k, v in kw.items() if k in fields}, **({"metadata": node_meta(info)}
                                                                   if "metadata" in fields else {}))
    if "metadata" not in fields:
        node.metadata = node_meta(info)
    return node


def node_name(module: str, target: str) -> str:
    """A traced module's node name: the module path (``features.0``), with ``_`` for ``.`` in graphs for other tools
    (nirtorch 2.0, which snnTorch's importer uses, refuses dots in module names)."""
    return module if target == "generic" else module.replace(".", "_")


def restore_node_info(graph) -> None:
    """Give each node of a spikeforge graph its metadata back from the graph's (for nodes whose nir type has no
    ``metadata`` field, the file does not keep it on the node)."""
    info = graph_info(graph) or {}
    for name, data in (info.get("nodes") or {}).items():
        node = graph.nodes.get(name)
        if node is not None and META_KEY not in (getattr(node, "metadata", None) or {}):
            meta = dict(getattr(node, "metadata", None) or {})
            meta[META_KEY] = json.dumps(data)
            node.metadata = meta


def _decode(raw) -> dict:
    if isinstance(raw, bytes):
        raw = raw.decode()
    return json.loads(str(raw))


def node_info(node) -> dict:
    """The spikeforge metadata of a node (``{}`` for a node from another tool)."""
    raw = (getattr(node, "metadata", None) or {}).get(META_KEY)
    return {} if raw is None else _decode(raw)


def graph_info(graph) -> dict | None:
    """The spikeforge metadata of a graph written by :func:`to_nir` (None for a graph from another tool)."""
    raw = (getattr(graph, "metadata", None) or {}).get(META_KEY)
    if raw is None:
        return None
    info = _decode(raw)
    return info if info.get("format") == FORMAT else None


# ---- neuron nodes back to spikeforge parameters ---------------------------------------------------------------
def _check_neuron_node(nir, name: str, node, dt: float | None) -> None:
    if not isinstance(node, (nir.IF, nir.LIF)):
        raise ConfigError(f"node {name!r}: {type(node).__name__} is not supported (IF, LIF)")
    if np.any(np.asarray(getattr(node, "v_reset", 0.0)) != 0):
        raise ConfigError(f"node {name!r}: v_reset != 0 is not supported (spikeforge resets to 0 or subtracts V_th)")
    if dt is None:
        raise ConfigError(f"node {name!r}: the graph does not record its time step; pass dt= (the NIR time of one "
                          "step, e.g. 1e-4 for graphs from snnTorch)")
    if isinstance(node, nir.LIF) and np.any(np.asarray(node.v_leak) != 0):
        raise ConfigError(f"node {name!r}: v_leak != 0 is not supported")


def neuron_from_node(nir, name: str, node, dt: float | None) -> dict:
    """threshold, leak (float32 arrays of the node's shape), input gain, order and reset of an IF/LIF node."""
    info = node_info(node)
    _check_neuron_node(nir, name, node, dt)
    if "leak_exact" in info:  # a T=1 export writes every neuron as IF; a mixed layer writes 1 - 2^-24 for 1
        leak = np.asarray(info["leak_exact"], dtype=np.float32)
    elif isinstance(node, nir.LIF):
        leak = leak_from_nir(node.tau, dt)
    else:
        leak = np.ones(np.shape(node.v_threshold), dtype=np.float32)
    gain = input_gain(node, dt)
    if np.allclose(gain, 1.0, rtol=1e-9, atol=0.0):
        gain = None
    v_thr = np.asarray(node.v_threshold, dtype=np.float32)
    threshold = v_thr.copy() if info.get("threshold_rule") == ">=" else threshold_from_nir(v_thr)
    return {"threshold": threshold, "leak": leak, "gain": gain,
            "order": info.get("order", "integrate-fire"), "reset": info.get("reset", "hard"),
            "per_channel": info.get("per_channel")}


def reduce_param(arr: np.ndarray, name: str, what: str, per_channel: bool | None) -> torch.Tensor:
    """A full-shape parameter ``[C, H, W]`` / ``[N]`` as spikeforge's scalar or per-channel ``[C]``.

    ``per_channel=None`` (the generic runtime) keeps a parameter that varies within a channel per neuron.
    """
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
