"""NIR import: :func:`read_nir` (a ``.nir`` file) and :func:`from_nir` (a graph back to a runnable model).

A graph written by :func:`~spikeforge.export.nir_export.to_nir` becomes the spikeforge twin it came from: the
architecture, neuron ordering/reset and readout come from the graph's ``spikeforge`` metadata, the weights from the
nodes, thresholds and leaks by inverting the forward-Euler mapping of :mod:`spikeforge.export.nir_mapping`
(Pedersen et al. 2024's LIF/IF nodes). Any other graph runs as a :class:`~spikeforge.export.nir_runtime.NIRNetwork`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.export.nir_mapping import (VERSION, graph_info, neuron_from_node, node_info, node_name, reduce_param,
                                           require_nir, restore_node_info)
from spikeforge.export.nir_runtime import NIRNetwork
from spikeforge.export.trace import Op, trace_model
from spikeforge.models import ModelSpec, SNNConfig, build_model


def read_nir(path: str | Path):
    """Read a ``.nir`` file into a ``nir.NIRGraph``."""
    nir = require_nir()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"NIR file {p} does not exist")
    try:
        try:
            graph = nir.read(str(p))
        except ValueError:  # a graph whose declared types do not check (e.g. grouped convs): read it unchecked
            graph = nir.read(str(p), type_check=False)
    except Exception as exc:
        raise ConfigError(f"cannot read NIR file {p}: {type(exc).__name__}: {str(exc)[:200]}") from None
    restore_node_info(graph)
    return graph


def from_nir(graph_or_path, *, generic: bool = False, dt: float | None = None, timesteps: int | None = None,
             surrogate: str | dict = "linear") -> nn.Module:
    """Import a NIR graph (or ``.nir`` file).

    A graph written by :func:`~spikeforge.export.nir_export.to_nir` becomes the spikeforge twin it came from (weights,
    thresholds and leaks read from the nodes; architecture, neuron ordering/reset and readout from the metadata):
    identical outputs and spikes. Any other graph of the supported node types (Input, Output, Conv2d, Linear, Affine,
    Scale, AvgPool2d, SumPool2d, Flatten, IF, LIF, I), or ``generic=True``, gives a :class:`NIRNetwork` that runs the
    graph with spikeforge's neuron. ``dt`` is the NIR time of one step (default: the graph's metadata).
    """
    graph = read_nir(graph_or_path) if isinstance(graph_or_path, (str, Path)) else graph_or_path
    restore_node_info(graph)
    info = graph_info(graph)
    if info is not None and not generic:
        model = _twin_from_graph(graph, info)
        if timesteps:
            model.timesteps = int(timesteps)
        return model
    return NIRNetwork(graph, dt=dt, timesteps=timesteps, surrogate=surrogate)


def _build_twin(info: dict) -> nn.Module:
    if info.get("version", 0) > VERSION:
        raise ConfigError(f"the graph was written by a newer spikeforge (format version {info['version']})")
    spec = ModelSpec.from_dict(info["model"])
    snn = SNNConfig.from_dict(info["snn"])
    try:
        model = build_model(spec, snn)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; register the architecture first, or run the graph as it is with "
                          "from_nir(graph, generic=True)") from None
    return model.eval()


def _load_weights(op: Op, node) -> None:
    m = op.module
    w = torch.from_numpy(np.asarray(node.weight, dtype=np.float32).copy())
    if tuple(w.shape) != tuple(m.weight.shape):
        raise ConfigError(f"node {op.name!r}: weight shape {tuple(w.shape)}, model expects {tuple(m.weight.shape)}")
    scale = node_info(node).get("scale_folded")
    if scale is not None:  # a sum pool's 1/k^2 was folded into the weights (a power of two: exact to undo)
        w = w / float(scale)
    m.weight.copy_(w)
    bias = getattr(node, "bias", None)
    if m.bias is not None:
        if bias is None:
            raise ConfigError(f"node {op.name!r} has no bias but the model's layer has one")
        m.bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float32).copy()))
    elif bias is not None and np.any(np.asarray(bias) != 0):
        raise ConfigError(f"node {op.name!r} has a nonzero bias but the model's layer has none")


def _load_batchnorm(op: Op, node) -> None:
    m, meta = op.module, node_info(node)
    m.running_mean.copy_(torch.tensor(meta["running_mean"]))
    m.running_var.copy_(torch.tensor(meta["running_var"]))
    m.eps = meta["eps"]
    if m.weight is not None:
        m.weight.copy_(torch.tensor(meta["weight"]))
        m.bias.copy_(torch.tensor(meta["bias"]))


def _load_neuron(nir, op: Op, node, dt: float) -> None:
    m = op.module
    p = neuron_from_node(nir, op.name, node, dt)
    if (p["order"], p["reset"]) != (m.order, m.reset):
        raise ConfigError(f"node {op.name!r}: ordering/reset {p['order']}/{p['reset']} differ from the "
                          f"metadata's {m.order}/{m.reset}")
    if p["gain"] is not None:
        raise ConfigError(f"node {op.name!r}: input gain {np.mean(p['gain']):.6g} != 1 for dt={dt}")
    per_channel = m.threshold.dim() > 0
    m.threshold.copy_(reduce_param(p["threshold"], op.name, "v_threshold", per_channel).reshape(m.threshold.shape))
    m.leak.copy_(reduce_param(p["leak"], op.name, "tau", per_channel).reshape(m.leak.shape))


def _check_readout(op: Op, node) -> None:
    if node_info(node).get("mode") != op.module.mode:
        raise ConfigError(f"node {op.name!r}: readout mode differs from the metadata")


def _check_nodes(graph, ops: list[Op], info: dict, arch: str) -> None:
    target = info.get("target", "generic")
    expected = {node_name(op.name, target) for op in ops if op.kind != "readout" or info["readout"]["in_graph"]}
    expected.add("output")
    have = set(graph.nodes)
    if expected != have:
        raise ConfigError(f"the graph's nodes do not match its spikeforge metadata ({arch}): missing "
                          f"{sorted(expected - have)[:5]}, unexpected {sorted(have - expected)[:5]}")


def _load_op(nir, op: Op, node, dt: float) -> None:
    if op.kind in ("conv", "linear"):
        _load_weights(op, node)
    elif op.kind == "bn":
        _load_batchnorm(op, node)
    elif op.kind == "neuron":
        _load_neuron(nir, op, node, dt)
    elif op.kind == "readout":
        _check_readout(op, node)


def _twin_from_graph(graph, info: dict) -> nn.Module:
    nir = require_nir()
    model = _build_twin(info)
    dt = float(info["dt"])
    ops = trace_model(model, normalize=model.snn.encoding == "direct" and info.get("normalize_in_graph", True))
    _check_nodes(graph, ops, info, model.spec.arch)
    with torch.no_grad():
        for op in ops:
            name = node_name(op.name, info.get("target", "generic"))
            if name in graph.nodes:
                _load_op(nir, op, graph.nodes[name], dt)
    return model
