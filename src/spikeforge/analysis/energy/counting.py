"""Operation counts per inference by forward hooks on a real forward pass: every spikeforge ANN or SNN twin (and any
``nn.Module`` built from ``Conv*d`` / ``Linear`` layers and :class:`~spikeforge.neuron.SpikingNeuron` s).

* **MACs** of each ``Conv1d/2d/3d`` / ``Linear`` layer (in forward order, by module name) are those of the ANN twin
  for one sample: ``out_elems * fan_in``, i.e. ``k_h * k_w * C_in/groups * C_out * H_out * W_out`` for a conv and
  ``n_in * n_out`` for a fully connected layer. Bias additions are ignored. The SNN twin runs the same layers, so
  the count is the same for both twins.
* **Input spike rate** ``zeta`` of a layer (SNN): spikes per input neuron over the *whole* inference (all ``T``
  steps), averaged over samples, measured on the tensor the layer actually receives::

      zeta = sum |input| / (input positions * samples)

  Summed over all timesteps (stateless layers see the folded ``[T*B, ...]`` input; chunked evaluation of long ``T``
  is covered too). Spikes are 0/1 (signed +-1 for Poisson input), so ``sum |input|`` is the spike count; for event
  input (``encoding: events``) the first layer's input is the binned event counts, so its rate is input events per
  position and its ACs are one accumulate per event and outgoing synapse. Behind an
  average pool the input is fractional: the sum of ``|input|`` counts each spike once, spread over the pooled
  positions, which equals the rate of the neuron layer before a non-overlapping pool (counting nonzeros instead
  would over-count). Can exceed 1 when ``T > 1``.
* **ACs** (synaptic operations) of an SNN layer: ``zeta * MACs``, each input spike triggering one accumulate per
  outgoing synapse (the padding border of convs is neglected), the count of Rathi & Roy (DIET-SNN, IEEE TNNLS 2021)
  and Kim & Panda (BNTT, Frontiers in Neuroscience 2021).
* **Neurons** of a layer: the output neurons of the spiking neuron layer fed by it (for a residual block's second
  conv plus shortcut, the neurons go to the conv, the shortcut gets 0); its membrane state has as many elements
  (4 bytes each at fp32). The readout layer has no spiking neuron (its accumulators over time are not counted).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from spikeforge.analysis.common import batches, forked_rng, is_spiking
from spikeforge.analysis.monitor import SpikeMonitor
from spikeforge.errors import ConfigError
from spikeforge.neuron import SpikingNeuron

__all__ = ["COUNTED_LAYERS", "LayerOps", "OpCounts", "count_ops"]

COUNTED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class LayerOps:
    """Counts of one ``Conv``/``Linear`` layer, per inference (one sample)."""

    name: str
    type: str
    role: str  # "input" (first layer), "hidden", "readout" (last layer, no spiking neuron after it)
    input: str  # "analog" (ANN, or the first layer of a direct-input SNN) or "spikes"
    macs: int
    input_rate: float | None  # spikes per input neuron over all T steps (None for analog input)
    acs: float | None  # input_rate * macs (SNN layers with spike input), else None
    neurons: int  # output neurons of the spiking neuron (ANN: ReLU units) fed by this layer
    neuron: str | None  # name of that neuron layer
    membrane_elems: int  # membrane-state elements (SNN; 0 in an ANN)
    membrane_bytes: int  # at fp32
    in_shape: list[int] = field(default_factory=list)  # per sample (per step in an SNN)
    out_shape: list[int] = field(default_factory=list)


@dataclass
class OpCounts:
    """Result of :func:`count_ops`: per-layer records (forward order) and model-level facts."""

    layers: list[LayerOps]
    spiking: bool
    timesteps: int | None
    encoding: str | None
    samples: int
    spike_rate: dict[str, float]  # SNN: output spikes per neuron per inference by neuron layer, and "mean"
    neuron_layers: dict[str, int]  # spiking-neuron layer -> neurons per sample

    def layer(self, name: str) -> LayerOps:
        for rec in self.layers:
            if rec.name == name:
                return rec
        raise KeyError(name)

    @property
    def totals(self) -> dict[str, Any]:
        acs = [r.acs for r in self.layers if r.acs is not None]
        neurons = sum(self.neuron_layers.values())
        mem = neurons if self.spiking else 0
        return {"layers": len(self.layers), "macs": sum(r.macs for r in self.layers),
                "acs": float(sum(acs)) if self.spiking else None, "neurons": neurons,
                "membrane_elems": mem, "membrane_bytes": 4 * mem}

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [asdict(r) for r in self.layers], "totals": self.totals, "spiking": self.spiking,
                "timesteps": self.timesteps, "encoding": self.encoding, "samples": self.samples,
                "spike_rate": dict(self.spike_rate), "neuron_layers": dict(self.neuron_layers)}


def _encoding(model: nn.Module) -> str | None:
    snn = getattr(model, "snn", None)
    enc = getattr(snn, "encoding", None) if snn is not None else None
    return enc or "direct"


def _fan_in(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return int(module.in_features)
    w = module.weight  # conv: [C_out, C_in / groups, *kernel]
    return int(w[0].numel())


class _Hooks:
    """Forward hooks collecting shapes, MACs, input activity and the layer -> neuron mapping."""

    def __init__(self, model: nn.Module, spiking: bool):
        self.model = model
        self.spiking = spiking
        self.layers = [(n, m) for n, m in model.named_modules() if isinstance(m, COUNTED_LAYERS)]
        act_type = SpikingNeuron if spiking else nn.ReLU
        self.acts = [(n, m) for n, m in model.named_modules() if isinstance(m, act_type)]
        self.order: list[str] = []
        self.info: dict[str, dict] = {}
        self.abs_sum: dict[str, torch.Tensor] = {}
        self.neuron_size: dict[str, int] = {}
        self.neuron_of: dict[str, str] = {}
        self.samples = 0
        self.mapped = False  # the layer -> neuron mapping is taken from the first forward call only
        self._pending: list[str] = []
        self._handles: list = []

    def __enter__(self):
        self._handles.append(self.model.register_forward_pre_hook(self._model_pre))
        self._handles.append(self.model.register_forward_hook(self._model_post))
        for name, m in self.layers:
            self._handles.append(m.register_forward_hook(self._layer_hook(name)))
        for name, m in self.acts:
            self._handles.append(m.register_forward_hook(self._act_hook(name)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _model_pre(self, module, args):
        if not args or not isinstance(args[0], torch.Tensor) or args[0].dim() < 1:
            raise ConfigError("count_ops needs the model's input batch as a tensor [B, ...] (first argument)")
        self.samples += int(args[0].shape[0])

    def _model_post(self, module, args, output):
        self.mapped = True

    def _layer_hook(self, name: str):
        def hook(module, inputs, output):
            x = inputs[0].detach()
            if name not in self.info:
                self.order.append(name)
                per_item = output[0].numel() if output.dim() > 1 else output.numel()
                self.info[name] = {"type": type(module).__name__, "macs": int(per_item) * _fan_in(module),
                                   "in_shape": list(x.shape[1:]), "out_shape": list(output.shape[1:])}
            if not self.mapped:
                self._pending.append(name)
            if self.spiking:
                s = x.abs().sum(dtype=torch.float32)
                prev = self.abs_sum.get(name)
                self.abs_sum[name] = s if prev is None else prev + s

        return hook

    def _act_hook(self, name: str):
        def hook(module, inputs, output):
            if name not in self.neuron_size:
                item = output[0, 0] if self.spiking else output[0]
                self.neuron_size[name] = int(item.numel())
            if not self.mapped and self._pending:
                self.neuron_of.setdefault(self._pending[0], name)
                self._pending.clear()

        return hook

    def records(self, encoding: str | None) -> list[LayerOps]:
        """One :class:`LayerOps` per counted layer, in forward order."""
        records = []
        last = self.order[-1]
        for idx, name in enumerate(self.order):
            info = self.info[name]
            neuron = self.neuron_of.get(name)
            n_out = self.neuron_size.get(neuron, 0) if neuron else 0
            role = "input" if idx == 0 else ("readout" if name == last and neuron is None else "hidden")
            analog = (not self.spiking) or (idx == 0 and encoding == "direct")
            rate = acs = None
            if not analog:
                positions = math.prod(info["in_shape"]) if info["in_shape"] else 1
                rate = float(self.abs_sum[name]) / (positions * self.samples)
                acs = rate * info["macs"]
            mem = n_out if self.spiking else 0
            records.append(LayerOps(name=name, type=info["type"], role=role, input="analog" if analog else "spikes",
                                    macs=info["macs"], input_rate=rate, acs=acs, neurons=n_out, neuron=neuron,
                                    membrane_elems=mem, membrane_bytes=4 * mem, in_shape=info["in_shape"],
                                    out_shape=info["out_shape"]))
        return records


def _images(loader_or_batches) -> Iterator[torch.Tensor]:
    """The image tensors of a loader yielding ``(x, y)``, dicts with ``x``/``image``, or tensors; or one tensor."""
    if isinstance(loader_or_batches, torch.Tensor):
        yield loader_or_batches
        return
    for item in loader_or_batches:
        if isinstance(item, torch.Tensor):
            yield item
        elif isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
            yield item[0]
        elif isinstance(item, dict) and isinstance(item.get("x", item.get("image")), torch.Tensor):
            yield item.get("x", item.get("image"))
        else:
            raise ConfigError(f"count_ops: cannot find an image tensor in a batch of type {type(item).__name__}; "
                              "pass a loader yielding (x, y) or tensors [B, C, H, W]")


def _run(model: nn.Module, hooks: _Hooks, mon: SpikeMonitor, images: Iterable[torch.Tensor],
         device: torch.device) -> None:
    """The forward passes, in eval mode (the training flag restored), on a fork of the random streams (Poisson
    input draws from the global generator; the caller's streams stay untouched)."""
    was_training = model.training
    model.to(device).eval()
    try:
        with forked_rng(device), hooks, mon:
            for x in images:
                model(x.to(device))
    finally:
        model.train(was_training)


@torch.no_grad()
def count_ops(model: nn.Module, loader_or_batches, device=None, max_batches: int | None = None) -> OpCounts:
    """Count MACs (and for an SNN input spike rates, ACs, neurons) per layer over the batches given.

    ``loader_or_batches``: a loader yielding ``(x, y)``, an iterable of image tensors, or one tensor
    ``[B, C, H, W]`` (values in ``[0, 1]``). ``device``: where to run (default: where the model is). The model is
    put in eval mode for the count and its training flag restored; random streams are left untouched.
    """
    if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
        raise ConfigError(f"max_batches must be a positive integer or None, got {max_batches!r}")
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    spiking = is_spiking(model)
    hooks = _Hooks(model, spiking)
    if not hooks.layers:
        raise ConfigError(f"{type(model).__name__} has no Conv/Linear layers to count")
    mon = SpikeMonitor(model)
    _run(model, hooks, mon, batches(_images(loader_or_batches), max_batches), device)
    if hooks.samples == 0:
        raise ConfigError("count_ops got no input batches; pass a non-empty test loader or a tensor [B, C, H, W]")
    encoding = _encoding(model) if spiking else None
    steps = int(getattr(model, "timesteps", None) or 1) if spiking else None
    rates = {**mon.rates(), "mean": mon.mean_rate()} if spiking and mon.layers else {}
    neuron_layers = {n: hooks.neuron_size[n] for n, _ in hooks.acts if n in hooks.neuron_size} if spiking else {}
    return OpCounts(hooks.records(encoding), spiking, steps, encoding, hooks.samples, rates, neuron_layers)
