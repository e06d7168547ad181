"""Run any feed-forward NIR graph with spikeforge's neuron: :class:`NIRNetwork` and its :class:`NIRNeuron`.

Each node becomes a PyTorch module: Conv2d, Linear/Affine, Scale, AvgPool2d, SumPool2d, Flatten, IF/LIF (forward-Euler
steps of the node equations of Pedersen et al. 2024, Nature Communications 15:8122, run by
:func:`spikeforge.neuron.functional.multistep`; see :mod:`spikeforge.export.nir_mapping`) and I (an integrator, or
spikeforge's readout). Nodes are run in topological order; a node with several inputs gets their sum.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.export.nir_mapping import (graph_info, neuron_from_node, node_info, reduce_param, require_nir,
                                           restore_node_info)
from spikeforge.neuron import functional as F
from spikeforge.neuron.surrogate import get_surrogate
from spikeforge.nn.layers import Normalize, apply_time_first


def _buffer(values) -> torch.Tensor:
    return torch.from_numpy(np.asarray(values, dtype=np.float32).copy())


def _over_time(x: torch.Tensor, steps: int | None) -> torch.Tensor:
    """A one-step input ``[1, B, ...]`` (an input held constant) stands for ``steps`` identical steps."""
    if steps is not None and x.shape[0] == 1 and steps > 1:
        return x.expand(steps, *x.shape[1:])
    return x


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
        self.register_buffer("scale", _buffer(scale))

    def forward(self, x):
        return x * self.scale


class _SumPool(nn.Module):
    def __init__(self, kernel, stride, padding):
        super().__init__()
        self.kernel, self.stride, self.padding = tuple(kernel), tuple(stride), tuple(padding)

    def forward(self, x):
        return nn.functional.avg_pool2d(x, self.kernel, self.stride, self.padding, divisor_override=1)


class NIRNeuron(nn.Module):
    """A NIR IF/LIF node run with spikeforge's neuron core on time-first ``[T, B, ...]`` input (``[1, B, ...]``: the
    same current at each of ``steps`` steps)."""

    time_aware = True

    def __init__(self, threshold, leak, gain=None, order="integrate-fire", reset="hard", surrogate="linear"):
        super().__init__()
        self.register_buffer("threshold", threshold)
        self.register_buffer("leak", leak)
        self.register_buffer("gain", None if gain is None else _buffer(gain))
        self.order, self.reset = order, reset
        self.surrogate = get_surrogate(surrogate)

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        x = _over_time(x, steps)
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
        self.register_buffer("coeff", _buffer(coeff))

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        return torch.cumsum(_over_time(x, steps) * self.coeff, dim=0)


class _ReadoutNode(nn.Module):
    """spikeforge's readout written as ``nir.I``: sum (or mean) over time, ``[T, B, K] -> [B, K]``."""

    time_aware = True

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        x = _over_time(x, steps)
        return x.sum(0) if self.mode == "sum" else x.mean(0)


# ---- node -> module -------------------------------------------------------------------------------------------
def _ints(v) -> tuple[int, ...]:
    return tuple(int(s) for s in np.ravel(v))


def _batchnorm(info: dict) -> nn.Module:
    bn = nn.BatchNorm2d(len(info["running_mean"]), eps=info["eps"], affine=info["weight"] is not None)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor(info["running_mean"]))
        bn.running_var.copy_(torch.tensor(info["running_var"]))
        if info["weight"] is not None:
            bn.weight.copy_(torch.tensor(info["weight"]))
            bn.bias.copy_(torch.tensor(info["bias"]))
    return bn.eval()


def _conv(node, info: dict) -> nn.Module:
    role = info.get("role")
    if role == "normalize":
        return Normalize(info["mean"], info["std"])
    if role == "batchnorm":
        return _batchnorm(info)
    w = np.asarray(node.weight, dtype=np.float32)
    bias = None if node.bias is None else np.asarray(node.bias, dtype=np.float32)
    use_bias = bias is not None and (info.get("bias", True) or np.any(bias != 0))
    pad = node.padding if isinstance(node.padding, str) else _ints(node.padding)
    conv = nn.Conv2d(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]), stride=_ints(node.stride),
                     padding=pad, dilation=_ints(node.dilation), groups=int(node.groups), bias=use_bias)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w.copy()))
        if use_bias:
            conv.bias.copy_(torch.from_numpy(bias.copy()))
    return conv


def _linear(nir, node) -> nn.Module:
    w = np.asarray(node.weight, dtype=np.float32)
    bias = np.asarray(node.bias, dtype=np.float32) if isinstance(node, nir.Affine) else None
    lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w.copy()))
        if bias is not None:
            lin.bias.copy_(torch.from_numpy(bias.copy()))
    return lin


def _avg_pool(node, info: dict) -> nn.Module:
    if info.get("role") == "adaptive_pool":
        return nn.AdaptiveAvgPool2d(tuple(info["output_size"]))
    return nn.AvgPool2d(_ints(node.kernel_size), _ints(node.stride), _ints(node.padding))


def _integrator(name: str, node, info: dict, dt: float | None) -> nn.Module:
    if info.get("role") == "readout":
        return _ReadoutNode(info["mode"])
    if dt is None:
        raise ConfigError(f"node {name!r}: the graph does not record its time step; pass dt=")
    return _Integrator(np.asarray(node.r, dtype=np.float64) * dt)


def _neuron(nir, name: str, node, dt: float | None, surrogate) -> NIRNeuron:
    p = neuron_from_node(nir, name, node, dt)
    th = reduce_param(p["threshold"], name, "v_threshold", None)
    lk = reduce_param(p["leak"], name, "tau", None)
    return NIRNeuron(th, lk, p["gain"], p["order"], p["reset"], surrogate)


def node_module(nir, name: str, node, dt: float | None, surrogate) -> nn.Module:
    """The PyTorch module that runs NIR ``node`` (named ``name``) at time step ``dt``."""
    info = node_info(node)
    if isinstance(node, nir.Conv2d):
        return _conv(node, info)
    if isinstance(node, (nir.Linear, nir.Affine)):
        return _linear(nir, node)
    if isinstance(node, nir.Scale):
        return _Scale(node.scale)
    if isinstance(node, nir.AvgPool2d):
        return _avg_pool(node, info)
    if isinstance(node, nir.SumPool2d):
        return _SumPool(np.ravel(node.kernel_size), np.ravel(node.stride), np.ravel(node.padding))
    if isinstance(node, nir.Flatten):
        return _Flatten(int(node.start_dim), int(node.end_dim))
    if isinstance(node, (nir.IF, nir.LIF)):
        return _neuron(nir, name, node, dt, surrogate)
    if isinstance(node, nir.I):
        return _integrator(name, node, info, dt)
    raise ConfigError(f"node {name!r}: NIR {type(node).__name__} is not supported by spikeforge's importer "
                      "(supported: Input, Output, Conv2d, Linear, Affine, Scale, AvgPool2d, SumPool2d, Flatten, "
                      "IF, LIF, I)")


# ---- the network ----------------------------------------------------------------------------------------------
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


def _ends(nir, graph) -> tuple[str, str]:
    ins = [n for n, v in graph.nodes.items() if isinstance(v, nir.Input)]
    outs = [n for n, v in graph.nodes.items() if isinstance(v, nir.Output)]
    if len(ins) != 1 or len(outs) != 1:
        raise ConfigError(f"the NIR graph needs one Input and one Output node, has {len(ins)} and {len(outs)}")
    return ins[0], outs[0]


def _summed(srcs: list[torch.Tensor]) -> torch.Tensor:
    h = srcs[0]
    for other in srcs[1:]:
        if other.shape[0] != h.shape[0]:
            h, other = torch.broadcast_tensors(h, other)
        h = h + other
    return h


class NIRNetwork(nn.Module):
    """Runs a feed-forward NIR graph with spikeforge's neuron (the generic importer).

    ``forward(x, timesteps=None)``: ``x`` is time-first ``[T, B, ...]``, or ``[B, ...]`` for an input held constant
    over ``T`` steps (``timesteps``, default the graph's metadata or 1; like spikeforge's direct input, the layers
    before the first neuron then run once). Stateless nodes run folded over ``[T*B, ...]``. Returns the output node's
    value: ``[B, K]`` after a spikeforge readout node, or when spikeforge left the readout to the caller (T=1, or a
    target without ``nir.I``: the readout is then applied here), else time-first ``[T, B, ...]``. The spikes of each
    neuron node are those of the modules in :attr:`neurons` (forward hooks see them).
    """

    def __init__(self, graph, *, dt: float | None = None, timesteps: int | None = None,
                 surrogate: str | dict = "linear"):
        super().__init__()
        nir = require_nir()
        restore_node_info(graph)
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
        self.input_name, self.output_name = _ends(nir, graph)
        readout = info.get("readout") or {}
        # a spikeforge graph whose readout was left out by default (T=1, or a target without nir.I): apply it here
        self.readout = _ReadoutNode(readout["mode"]) if readout.get("by_caller") else None
        self.input_shape = _ints(graph.nodes[self.input_name].input_type["input"])
        self.layers = nn.ModuleDict()
        self._keys: dict[str, str] = {}
        for name in names:
            node = graph.nodes[name]
            if not isinstance(node, (nir.Input, nir.Output)):
                self._keys[name] = key = f"n{len(self._keys)}"
                self.layers[key] = node_module(nir, name, node, self.dt, surrogate)

    @property
    def neurons(self) -> dict[str, NIRNeuron]:
        """Neuron modules by node name, in graph order."""
        return {n: self.layers[k] for n, k in self._keys.items() if isinstance(self.layers[k], NIRNeuron)}

    def _time_first(self, x: torch.Tensor, timesteps: int | None) -> tuple[torch.Tensor, int]:
        nd = len(self.input_shape)
        if x.dim() == nd + 1:
            return x.unsqueeze(0), int(timesteps or self.default_timesteps)
        if x.dim() != nd + 2:
            raise ConfigError(f"input must be [B, {', '.join(map(str, self.input_shape))}] or time-first "
                              f"[T, B, ...]; got shape {tuple(x.shape)}")
        return x, x.shape[0]

    def forward(self, x: torch.Tensor, timesteps: int | None = None) -> torch.Tensor:
        x, steps = self._time_first(x, timesteps)
        values = {self.input_name: x}
        for name in self.order:
            if name == self.input_name:
                continue
            srcs = [values[s] for s in self.inputs[name]]
            if not srcs:
                raise ConfigError(f"node {name!r} has no input")
            h = _summed(srcs)
            if name != self.output_name:
                h = apply_time_first(self.layers[self._keys[name]], h, steps)
            values[name] = h
        out = values[self.output_name]
        return self.readout(out, steps) if self.readout is not None else out
