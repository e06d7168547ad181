"""Walk a spikeforge twin into a flat list of operations that the NIR and ONNX writers share.

The trace is a small DAG: every :class:`Op` names the modules it came from (``features.0``, ``layers.1.conv2`` ...),
the ops whose outputs it reads (several inputs are *summed*: the residual add in front of a block's second neuron)
and its output shape without the batch (and time) dimension. Identities, dropout (an identity at inference) and the
encoder are left out; anything the writers do not know raises a :class:`~spikeforge.errors.ConfigError` that names
the module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.models.resnet import BasicBlock
from spikeforge.nn.layers import Normalize, Readout, SpikingDropout
from spikeforge.neuron import SpikingNeuron

KINDS = ("input", "normalize", "conv", "bn", "neuron", "relu", "pool", "adaptive_pool", "flatten", "linear",
         "readout")


@dataclass
class Op:
    """One operation of a traced model: ``kind`` (see :data:`KINDS`), the module it runs, its inputs and shape."""

    name: str
    kind: str
    inputs: list[str]
    module: nn.Module | None
    shape: tuple[int, ...]
    extra: dict = field(default_factory=dict)


def _check_neuron(name: str, m: nn.Module) -> None:
    """Only the IF/LIF neuron (registered ``lif``) has an exact NIR/ONNX form; a subclass with other dynamics (ALIF's
    adaptive threshold) would be exported as a plain LIF, silently wrong."""
    if isinstance(m, SpikingNeuron) and type(m) is not SpikingNeuron:
        raise ConfigError(f"{name}: {type(m).__name__} neurons cannot be exported (NIR and ONNX have no node for "
                          "their dynamics); export models built with snn.neuron: lif")


def _check_module(name: str, m: nn.Module) -> None:
    _check_neuron(name, m)
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros":
            raise ConfigError(f"{name}: Conv2d with padding_mode={m.padding_mode!r} cannot be exported "
                              "(only zero padding)")
        if isinstance(m.padding, str):
            raise ConfigError(f"{name}: Conv2d with padding={m.padding!r} cannot be exported; use integer padding")
    elif isinstance(m, nn.AvgPool2d):
        if m.ceil_mode or m.divisor_override is not None:
            raise ConfigError(f"{name}: AvgPool2d with ceil_mode or divisor_override cannot be exported")
        pad = m.padding if isinstance(m.padding, tuple) else (m.padding, m.padding)
        if any(pad) and not m.count_include_pad:
            raise ConfigError(f"{name}: padded AvgPool2d with count_include_pad=False cannot be exported")
    elif isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise ConfigError(f"{name}: only Flatten(start_dim=1, end_dim=-1) can be exported")


class _Tracer:
    def __init__(self, model: nn.Module):
        self.model = model
        self.ops: list[Op] = []
        self.by_name: dict[str, Op] = {}

    def add(self, name: str, kind: str, inputs: list[str], module: nn.Module | None, shape, **extra) -> str:
        if name in self.by_name:
            raise ConfigError(f"duplicate operation name {name!r} while tracing the model")
        op = Op(name, kind, list(inputs), module, tuple(int(s) for s in shape), dict(extra))
        self.ops.append(op)
        self.by_name[name] = op
        return name

    def shape_of(self, name: str) -> tuple[int, ...]:
        return self.by_name[name].shape

    @torch.no_grad()
    def _out_shape(self, module: nn.Module, in_shape) -> tuple[int, ...]:
        x = torch.zeros((1, *in_shape))
        return tuple(module(x).shape[1:])

    def module(self, m: nn.Module, name: str, prev: str) -> str:
        """Trace ``m`` (named ``name``) reading ``prev``; returns the name of the op holding its output."""
        shape = self.shape_of(prev)
        if isinstance(m, (nn.Identity, nn.Dropout, SpikingDropout)):
            return prev
        if isinstance(m, nn.Sequential):
            for i, sub in enumerate(m):
                prev = self.module(sub, f"{name}.{i}", prev)
            return prev
        if isinstance(m, BasicBlock):
            return self.block(m, name, prev)
        _check_module(name, m)
        if isinstance(m, nn.Conv2d):
            return self.add(name, "conv", [prev], m, self._out_shape(m, shape))
        if isinstance(m, nn.BatchNorm2d):
            return self.add(name, "bn", [prev], m, shape)
        if isinstance(m, SpikingNeuron):
            return self.add(name, "neuron", [prev], m, shape)
        if isinstance(m, nn.ReLU):
            return self.add(name, "relu", [prev], m, shape)
        if isinstance(m, nn.AvgPool2d):
            return self.add(name, "pool", [prev], m, self._out_shape(m, shape))
        if isinstance(m, nn.AdaptiveAvgPool2d):
            out = self._out_shape(m, shape)
            kernel = []
            for size_in, size_out in zip(shape[1:], out[1:]):
                if size_in % size_out:
                    raise ConfigError(f"{name}: AdaptiveAvgPool2d from {tuple(shape[1:])} to {tuple(out[1:])} is not "
                                      "a plain average pool (sizes not divisible) and cannot be exported")
                kernel.append(size_in // size_out)
            return self.add(name, "adaptive_pool", [prev], m, out, kernel=tuple(kernel))
        if isinstance(m, nn.Flatten):
            return self.add(name, "flatten", [prev], m, self._out_shape(m, shape))
        if isinstance(m, nn.Linear):
            return self.add(name, "linear", [prev], m, self._out_shape(m, shape))
        if isinstance(m, Readout):
            return self.add(name, "readout", [prev], m, shape, mode=m.mode)
        raise ConfigError(f"cannot export module {name!r} of type {type(m).__name__}; supported: Conv2d, "
                          "BatchNorm2d, SpikingNeuron, ReLU, AvgPool2d, AdaptiveAvgPool2d, Flatten, Linear, "
                          "Dropout, Identity, Readout and ResNet BasicBlocks")

    def block(self, b: nn.Module, name: str, prev: str) -> str:
        """``act2(bn2(conv2(act1(bn1(conv1(x))))) + shortcut(x))``: act2 gets two inputs, summed."""
        h = self.module(b.conv1, f"{name}.conv1", prev)
        h = self.module(b.bn1, f"{name}.bn1", h)
        h = self.module(b.act1, f"{name}.act1", h)
        h = self.module(b.drop, f"{name}.drop", h)
        h = self.module(b.conv2, f"{name}.conv2", h)
        h = self.module(b.bn2, f"{name}.bn2", h)
        short = prev
        for i, sub in enumerate(b.shortcut):
            short = self.module(sub, f"{name}.shortcut.{i}", short)
        if self.shape_of(h) != self.shape_of(short):
            raise ConfigError(f"{name}: residual branches have shapes {self.shape_of(h)} and {self.shape_of(short)}")
        act = b.act2
        _check_neuron(f"{name}.act2", act)
        kind = "neuron" if isinstance(act, SpikingNeuron) else "relu" if isinstance(act, nn.ReLU) else None
        if kind is None:
            raise ConfigError(f"{name}.act2: unsupported activation {type(act).__name__}")
        return self.add(f"{name}.act2", kind, [h, short], act, self.shape_of(h))


def trace_model(model: nn.Module, input_shape: tuple[int, ...] | None = None, *, normalize: bool = True) -> list[Op]:
    """The operations of a spikeforge twin in forward order (see the module docstring).

    ``input_shape`` is ``(C, H, W)`` (default: the model spec's). ``normalize=False`` leaves the input
    normalization out (Poisson input: the graph receives the encoded spikes of the normalized image).
    """
    spec = getattr(model, "spec", None)
    names = getattr(model, "sequence_names", None)
    if spec is None or names is None or not isinstance(getattr(model, "normalize", None), Normalize):
        raise ConfigError(f"{type(model).__name__} is not a spikeforge twin (needs .spec, .normalize and "
                          ".sequence_names); build it with spikeforge.models.create_model")
    if input_shape is None:
        input_shape = (spec.in_channels, spec.input_size, spec.input_size)
    t = _Tracer(model)
    prev = t.add("input", "input", [], None, input_shape)
    if normalize:
        prev = t.add("normalize", "normalize", [prev], model.normalize, input_shape)
    for seq in names:
        prev = t.module(getattr(model, seq), seq, prev)
    return t.ops


def neuron_params(neuron: SpikingNeuron, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Threshold and leak of ``neuron`` broadcast to one sample's ``shape`` (``[C, H, W]`` or ``[N]``), float32."""
    out = []
    for p in (neuron.threshold, neuron.leak):
        p = p.detach().float().cpu()
        if p.dim() == 0:
            out.append(p.expand(shape).clone())
        else:
            out.append(p.view(-1, *([1] * (len(shape) - 1))).expand(shape).clone())
    return out[0], out[1]
