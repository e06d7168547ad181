"""Operation counts and energy estimates per inference: ANN MACs against SNN accumulates (methods.md §8).

Counting is done by forward hooks on a real forward pass, so it works for every spikeforge ANN or SNN twin (and any
``nn.Module`` built from ``Conv*d`` / ``Linear`` layers and :class:`~spikeforge.neuron.SpikingNeuron` s):

* **MACs** of each ``Conv1d/2d/3d`` / ``Linear`` layer (in forward order, by module name) are those of the ANN twin
  for one sample: ``out_elems * fan_in``, i.e. ``k_h * k_w * C_in/groups * C_out * H_out * W_out`` for a conv and
  ``n_in * n_out`` for a fully connected layer. Bias additions are ignored. The SNN twin runs the same layers, so
  the count is the same for both twins.
* **Input spike rate** ``zeta`` of a layer (SNN): spikes per input neuron over the *whole* inference (all ``T``
  steps), averaged over samples, measured on the tensor the layer actually receives::

      zeta = sum |input| / (input positions * samples)

  Summed over all timesteps (stateless layers see the folded ``[T*B, ...]`` input; chunked evaluation of long ``T``
  is covered too). Spikes are 0/1 (signed +-1 for Poisson input), so ``sum |input|`` is the spike count. Behind an
  average pool the input is fractional: the sum of ``|input|`` counts each spike once, spread over the pooled
  positions, which is the standard convention and equals the rate of the neuron layer before a non-overlapping pool
  (counting nonzeros instead would over-count). Can exceed 1 when ``T > 1``.
* **ACs** (synaptic operations) of an SNN layer: ``zeta * MACs`` (each input spike triggers one accumulate per
  outgoing synapse; the padding border of convs is neglected, the usual approximation).
* **Neurons** of a layer: the output neurons of the spiking neuron layer fed by it (for a residual block's second
  conv plus shortcut, the neurons go to the conv, the shortcut gets 0); its membrane state has as many elements
  (4 bytes each at fp32). The readout layer has no spiking neuron (its accumulators over time are not counted).

Energy (per inference, in joules; :func:`energy_report`): ``E_ANN = E_MAC * sum MACs``. ``E_SNN = sum`` over layers
of ``E_AC * ACs``, except the first layer under **direct** input encoding, which sees the analog image and is
counted as ``E_MAC * MACs`` (once: the model computes its current once and reuses it at every step; or ``T`` times
with ``first_layer_per_step=True``). Under **Poisson** input the first layer is AC with the input spike rate. The
readout layer is AC on its input spikes. Neuron updates (leak, compare, reset) are ignored, as in DIET/IIR. The
optional membrane term (IIR-SNN argument, methods.md §8.4) is ``2 * T * N_neurons * E_mem`` (one read and one write
of every membrane potential per step), zero at ``T = 1``, and is reported separately from the compute energy.

Per-operation energies (Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm CMOS):

============  =====================  =================  ====================
preset        MAC = mult + add       AC = add           source
============  =====================  =================  ====================
45nm-fp32     3.7 + 0.9 = 4.6 pJ     0.9 pJ             fp32 (DIET/IIR/BNTT)
45nm-fp16     1.1 + 0.4 = 1.5 pJ     0.4 pJ             fp16
45nm-int32    3.1 + 0.1 = 3.2 pJ     0.1 pJ             int32
45nm-int8     0.2 + 0.03 = 0.23 pJ   0.03 pJ            int8
============  =====================  =================  ====================

``E_mem`` defaults to 10 pJ, the 8 KB SRAM access of the same table (methods.md §8.1; Horowitz quotes it for a
64-bit cache access, so for a 32-bit membrane potential it is an upper estimate). Custom values: pass an
:class:`EnergyCosts`, a dict ``{"e_mac": J, "e_ac": J[, "e_mem": J]}``, or on the command line
``--preset custom:MAC_PJ,AC_PJ``.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.analysis.monitor import SpikeMonitor
from spikeforge.neuron import SpikingNeuron

PJ = 1e-12
DEFAULT_E_MEM = 10 * PJ
COUNTED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
JSON_FILE = "energy.json"


# ---------------------------------------------------------------------------------------------------------------
# energy costs


@dataclass(frozen=True)
class EnergyCosts:
    """Energy per operation in joules: ``e_mac`` (multiply-accumulate), ``e_ac`` (accumulate), ``e_mem`` (one
    membrane-potential read or write)."""

    name: str
    e_mac: float
    e_ac: float
    e_mem: float = DEFAULT_E_MEM
    source: str = "custom"

    def __post_init__(self):
        for key in ("e_mac", "e_ac", "e_mem"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"energy cost {key} must be a non-negative number of joules, got {v!r}")
            if v > 1e-6:
                raise ConfigError(f"energy cost {key}={v!r} J per operation is implausibly large; costs are in "
                                  f"joules (4.6 pJ is 4.6e-12)")

    @classmethod
    def from_pj(cls, mac: float, ac: float, mem: float = 10.0, name: str = "custom", source: str = "custom"):
        return cls(name, float(mac) * PJ, float(ac) * PJ, float(mem) * PJ, source)

    def to_dict(self) -> dict:
        return asdict(self)


_HZ = "Horowitz, ISSCC 2014, 45 nm"
PRESETS: dict[str, EnergyCosts] = {
    "45nm-fp32": EnergyCosts.from_pj(3.7 + 0.9, 0.9, name="45nm-fp32", source=f"{_HZ}: fp32 mult 3.7 pJ, add 0.9 pJ"),
    "45nm-fp16": EnergyCosts.from_pj(1.1 + 0.4, 0.4, name="45nm-fp16", source=f"{_HZ}: fp16 mult 1.1 pJ, add 0.4 pJ"),
    "45nm-int32": EnergyCosts.from_pj(3.1 + 0.1, 0.1, name="45nm-int32",
                                      source=f"{_HZ}: int32 mult 3.1 pJ, add 0.1 pJ"),
    "45nm-int8": EnergyCosts.from_pj(0.2 + 0.03, 0.03, name="45nm-int8",
                                     source=f"{_HZ}: int8 mult 0.2 pJ, add 0.03 pJ"),
}


def get_costs(preset: str | dict | EnergyCosts = "45nm-fp32", e_mem: float | None = None) -> EnergyCosts:
    """Resolve a preset name (``45nm-fp32``, ``45nm-fp16``, ``45nm-int32``, ``45nm-int8``), ``custom:MAC,AC[,MEM]``
    (picojoules), a dict ``{"e_mac", "e_ac"[, "e_mem"]}`` (joules) or an :class:`EnergyCosts`; ``e_mem`` (joules)
    overrides the membrane access energy."""
    if isinstance(preset, EnergyCosts):
        costs = preset
    elif isinstance(preset, dict):
        unknown = set(preset) - {"e_mac", "e_ac", "e_mem", "name", "source"}
        if unknown or not {"e_mac", "e_ac"} <= set(preset):
            raise ConfigError(f"a custom energy preset needs keys 'e_mac' and 'e_ac' (joules; optional 'e_mem', "
                              f"'name'), got {sorted(preset)}")
        costs = EnergyCosts(**{"name": "custom", **preset})
    elif isinstance(preset, str) and preset.startswith("custom:"):
        try:
            vals = [float(v) for v in preset[len("custom:"):].split(",")]
        except ValueError:
            vals = []
        if len(vals) not in (2, 3):
            raise ConfigError(f"bad preset {preset!r}; write custom:MAC_PJ,AC_PJ[,MEM_PJ] in picojoules, "
                              "e.g. custom:4.6,0.9")
        costs = EnergyCosts.from_pj(*vals, name=preset)
    elif isinstance(preset, str) and preset in PRESETS:
        costs = PRESETS[preset]
    else:
        raise ConfigError(f"unknown energy preset {preset!r}; use one of {sorted(PRESETS)} or "
                          "custom:MAC_PJ,AC_PJ (picojoules)")
    if e_mem is not None:
        costs = EnergyCosts(costs.name, costs.e_mac, costs.e_ac, float(e_mem), costs.source)
    return costs


# ---------------------------------------------------------------------------------------------------------------
# counting


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


def _is_spiking(model: nn.Module) -> bool:
    flag = getattr(model, "spiking", None)
    if flag is not None:
        return bool(flag)
    return any(isinstance(m, SpikingNeuron) for m in model.modules())


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
        self.names = {m: n for n, m in model.named_modules()}
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


def _batches(loader_or_batches) -> Iterable[torch.Tensor]:
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


def _rng_guard(device: torch.device):
    """Counting must not disturb the caller's random streams (Poisson input draws from the global RNG)."""
    devices = [device.index or 0] if device.type == "cuda" and torch.cuda.is_available() else []
    return torch.random.fork_rng(devices=devices)


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
    spiking = _is_spiking(model)
    was_training = model.training
    model.to(device).eval()
    hooks = _Hooks(model, spiking)
    if not hooks.layers:
        raise ConfigError(f"{type(model).__name__} has no Conv/Linear layers to count")
    mon = SpikeMonitor(model)
    try:
        with _rng_guard(device), hooks, mon:
            for i, x in enumerate(_batches(loader_or_batches)):
                if max_batches is not None and i >= max_batches:
                    break
                model(x.to(device))
    finally:
        model.train(was_training)
    if hooks.samples == 0:
        raise ConfigError("count_ops got no input batches; pass a non-empty test loader or a tensor [B, C, H, W]")
    encoding = _encoding(model) if spiking else None
    steps = int(getattr(model, "timesteps", None) or 1) if spiking else None
    records = []
    last = hooks.order[-1]
    for idx, name in enumerate(hooks.order):
        info = hooks.info[name]
        neuron = hooks.neuron_of.get(name)
        n_out = hooks.neuron_size.get(neuron, 0) if neuron else 0
        role = "input" if idx == 0 else ("readout" if name == last and neuron is None else "hidden")
        analog = (not spiking) or (idx == 0 and encoding == "direct")
        rate = acs = None
        if not analog:
            positions = math.prod(info["in_shape"]) if info["in_shape"] else 1
            rate = float(hooks.abs_sum[name]) / (positions * hooks.samples)
            acs = rate * info["macs"]
        mem = n_out if spiking else 0
        records.append(LayerOps(name=name, type=info["type"], role=role, input="analog" if analog else "spikes",
                                macs=info["macs"], input_rate=rate, acs=acs, neurons=n_out, neuron=neuron,
                                membrane_elems=mem, membrane_bytes=4 * mem, in_shape=info["in_shape"],
                                out_shape=info["out_shape"]))
    rates = {}
    if spiking and mon.layers:
        rates = {**mon.rates(), "mean": mon.mean_rate()}
    neuron_layers = {n: hooks.neuron_size[n] for n, _ in hooks.acts if n in hooks.neuron_size} if spiking else {}
    return OpCounts(records, spiking, steps, encoding, hooks.samples, rates, neuron_layers)


# ---------------------------------------------------------------------------------------------------------------
# energy


def _ratio(num: float, den: float | None) -> float | None:
    if den is None or den <= 0:
        return None
    return float(num / den)


def energy_from_counts(counts: OpCounts, *, preset: str | dict | EnergyCosts = "45nm-fp32",
                       first_layer_per_step: bool = False, membrane: bool = True,
                       e_mem: float | None = None) -> dict:
    """The energy report of :func:`energy_report` from counts already taken (see the module doc for the model)."""
    costs = get_costs(preset, e_mem)
    snn = counts.spiking
    steps = counts.timesteps or 1
    mem_factor = 2 * steps * costs.e_mem if (snn and membrane and steps > 1) else 0.0
    layers = []
    for r in counts.layers:
        e_ann = r.macs * costs.e_mac
        rec = {"name": r.name, "type": r.type, "role": r.role, "input": r.input, "macs": r.macs,
               "input_rate": r.input_rate, "acs": r.acs, "snn_macs": None, "e_ann": e_ann, "e_snn": None,
               "e_mem": None, "neurons": r.neurons, "membrane_elems": r.membrane_elems,
               "membrane_bytes": r.membrane_bytes, "in_shape": r.in_shape, "out_shape": r.out_shape}
        if snn:
            if r.input == "analog":  # direct-input first layer: MACs, once (current reused) or at every step
                rec["snn_macs"] = r.macs * (steps if first_layer_per_step else 1)
                rec["e_snn"] = rec["snn_macs"] * costs.e_mac
            else:
                rec["snn_macs"] = 0
                rec["e_snn"] = (r.acs or 0.0) * costs.e_ac
            rec["e_mem"] = r.membrane_elems * mem_factor if membrane else None
        layers.append(rec)
    tot = counts.totals
    e_ann = sum(rec["e_ann"] for rec in layers)
    totals: dict[str, Any] = {"macs": tot["macs"], "acs": tot["acs"], "snn_macs": None, "e_ann": e_ann,
                              "e_snn": None, "e_mem": None, "e_snn_with_memory": None, "neurons": tot["neurons"],
                              "membrane_elems": tot["membrane_elems"], "membrane_bytes": tot["membrane_bytes"]}
    ratio = ratio_mem = None
    if snn:
        e_snn = sum(rec["e_snn"] for rec in layers)
        totals["snn_macs"] = sum(rec["snn_macs"] for rec in layers)
        totals["e_snn"] = e_snn
        ratio = _ratio(e_ann, e_snn)
        if membrane:
            # every spiking neuron of the model (not only those mapped to a layer) keeps a membrane potential
            totals["e_mem"] = tot["membrane_elems"] * mem_factor
            totals["e_snn_with_memory"] = e_snn + totals["e_mem"]
            ratio_mem = _ratio(e_ann, totals["e_snn_with_memory"])
    return {
        "spiking": snn,
        "timesteps": counts.timesteps,
        "encoding": counts.encoding,
        "preset": costs.to_dict(),
        "first_layer_per_step": bool(first_layer_per_step),
        "membrane": bool(membrane and snn),
        "samples": counts.samples,
        "units": "joules per inference; macs/acs per inference; input_rate in spikes per input neuron over all T",
        "layers": layers,
        "totals": totals,
        "energy_ratio": ratio,
        "energy_ratio_with_memory": ratio_mem,
        "spike_rate": dict(counts.spike_rate),
    }


def energy_report(snn_model: nn.Module, loader, device=None, *, preset: str | dict | EnergyCosts = "45nm-fp32",
                  max_batches: int | None = None, first_layer_per_step: bool = False, membrane: bool = True,
                  e_mem: float | None = None) -> dict:
    """Energy per inference of ``snn_model`` (and of its ANN twin) measured on ``loader``; a JSON-serializable dict.

    Keys: ``layers`` (per layer: ``name, type, role, input, macs, input_rate, acs, snn_macs, e_ann, e_snn, e_mem,
    neurons, membrane_elems, membrane_bytes, in_shape, out_shape``), ``totals`` (``macs, acs, snn_macs, e_ann,
    e_snn, e_mem, e_snn_with_memory, neurons, membrane_elems, membrane_bytes``), ``energy_ratio`` (``E_ANN /
    E_SNN``, compute only), ``energy_ratio_with_memory`` (membrane term included), ``timesteps``, ``encoding``,
    ``preset`` (the costs used), ``spike_rate`` (``{neuron layer: rate, ..., "mean": x}``), ``samples``.
    ``e_mem`` is in joules (default 10 pJ). An ANN gives MACs and ``e_ann`` only (SNN fields ``None``).
    """
    costs = get_costs(preset, e_mem)  # validate before the (possibly long) count
    counts = count_ops(snn_model, loader, device, max_batches=max_batches)
    return energy_from_counts(counts, preset=costs, first_layer_per_step=first_layer_per_step, membrane=membrane)


def stage_energy_metrics(model: nn.Module, loader, device=None, max_batches: int | None = None) -> dict:
    """Energy entries for a stage's ``metrics.json``: ``energy_ratio``, ``energy_ratio_with_memory`` and
    ``energy`` (the report's ``layers`` and ``totals``, plus ``preset``, ``timesteps``, ``encoding``)."""
    rep = energy_report(model, loader, device, max_batches=max_batches)
    return {"energy_ratio": rep["energy_ratio"], "energy_ratio_with_memory": rep["energy_ratio_with_memory"],
            "energy": {"layers": rep["layers"], "totals": rep["totals"], "preset": rep["preset"]["name"],
                       "timesteps": rep["timesteps"], "encoding": rep["encoding"], "samples": rep["samples"]}}


# ---------------------------------------------------------------------------------------------------------------
# text output


def _num(v: float | int | None) -> str:
    """Compact count: 1.77M, 15.47G, 812."""
    if v is None:
        return "-"
    v = float(v)
    for div, suf in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.2f}{suf}"
    return f"{v:.0f}" if v == int(v) else f"{v:.2f}"


def _joules(v: float | None) -> str:
    if v is None:
        return "-"
    for div, suf in ((1.0, "J"), (1e-3, "mJ"), (1e-6, "uJ"), (1e-9, "nJ")):
        if abs(v) >= div:
            return f"{v / div:.3f} {suf}"
    return f"{v / 1e-12:.3f} pJ"


def _uj(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e6:.4g}"


def _text_table(rows: list[list[str]], head: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]

    def line(r):
        return "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(head), sep] + [line(r) for r in rows[:-1]] + ([sep, line(rows[-1])] if rows else []))


def energy_table(report: dict) -> str:
    """A text table of the report: one row per layer (energies in microjoules per inference) and the totals."""
    snn = report.get("spiking", report.get("totals", {}).get("e_snn") is not None)
    tot = report["totals"]
    rows = []
    for r in report["layers"]:
        if snn:
            rate = "analog" if r["input_rate"] is None else f"{r['input_rate']:.4g}"
            rows.append([r["name"], r["type"], _num(r["macs"]), rate, _num(r["acs"]), _uj(r["e_ann"]),
                         _uj(r["e_snn"]), _uj(r.get("e_mem")), _num(r["neurons"])])
        else:
            rows.append([r["name"], r["type"], _num(r["macs"]), _uj(r["e_ann"]), _num(r["neurons"])])
    if snn:
        head = ["layer", "type", "MACs", "in rate", "ACs", "E_ANN uJ", "E_SNN uJ", "E_mem uJ", "neurons"]
        rows.append(["total", "", _num(tot["macs"]), "", _num(tot["acs"]), _uj(tot["e_ann"]), _uj(tot["e_snn"]),
                     _uj(tot.get("e_mem")), _num(tot["neurons"])])
    else:
        head = ["layer", "type", "MACs", "E_ANN uJ", "neurons"]
        rows.append(["total", "", _num(tot["macs"]), _uj(tot["e_ann"]), _num(tot["neurons"])])
    out = [_text_table(rows, head), ""]
    preset = report.get("preset") or {}
    if isinstance(preset, dict) and preset:
        out.append(f"preset {preset.get('name')}: MAC {preset['e_mac'] / PJ:.3g} pJ, AC {preset['e_ac'] / PJ:.3g} pJ, "
                   f"membrane access {preset['e_mem'] / PJ:.3g} pJ ({preset.get('source', '')})")
    out.append(f"ANN  energy per inference: {_joules(tot['e_ann'])}  ({_num(tot['macs'])} MACs)")
    if snn:
        steps = report.get("timesteps")
        first = ("per step" if report.get("first_layer_per_step") else "once") if report.get("encoding") == "direct" \
            else None
        enc = f"{report.get('encoding')} input" + (f", first layer MACs counted {first}" if first else "")
        out.append(f"SNN  compute energy:       {_joules(tot['e_snn'])}  ({_num(tot['acs'])} ACs + "
                   f"{_num(tot['snn_macs'])} MACs; T={steps}, {enc})")
        if tot.get("e_mem") is not None:
            out.append(f"SNN  membrane read/write:  {_joules(tot['e_mem'])}  (2 x T x {_num(tot['neurons'])} neurons"
                       f"{'; none at T=1' if steps == 1 else ''})")
            out.append(f"SNN  total with memory:    {_joules(tot['e_snn_with_memory'])}")
        rate = (report.get("spike_rate") or {}).get("mean")
        if rate is not None:
            out.append(f"mean spike rate: {rate:.4f} spikes per neuron per inference")
        r1, r2 = report.get("energy_ratio"), report.get("energy_ratio_with_memory")
        out.append("energy ratio ANN/SNN: " + ("-" if r1 is None else f"{r1:.2f}x") + " (compute)"
                   + ("" if r2 is None else f", {r2:.2f}x with membrane memory"))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------------
# command line


def add_energy_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``spikeforge energy CHECKPOINT ...`` on an ``argparse`` subparsers object."""
    data_help = "dataset directory (default: $SPIKEFORGE_DATA, else ~/.cache/spikeforge/data)"
    p = subparsers.add_parser(
        "energy", help="estimate energy per inference of a checkpoint (ANN MACs vs SNN accumulates)",
        description="Count MACs, spike rates and ACs per layer on the test set and estimate the energy per "
                    "inference of the ANN twin and the SNN (methods.md §8). Prints a table and writes JSON.")
    p.add_argument("checkpoint", help="checkpoint file, stage directory or run directory")
    p.add_argument("--timesteps", type=int, help="SNN: count at this T (default: the checkpoint's)")
    p.add_argument("--preset", default="45nm-fp32",
                   help=f"energy per operation: {', '.join(PRESETS)} or custom:MAC_PJ,AC_PJ (default 45nm-fp32)")
    p.add_argument("--batches", type=int, help="use only this many test batches (default: the whole test set)")
    p.add_argument("--batch-size", type=int, default=500, help="test batch size (default 500)")
    p.add_argument("--data-dir", help=data_help)
    p.add_argument("--dataset", help="dataset name if the checkpoint does not record it")
    p.add_argument("--json", help="write the report here (default: energy.json beside the checkpoint)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--first-layer-per-step", action="store_true",
                   help="direct input: count the first layer's MACs at every timestep (default: once)")
    p.add_argument("--no-membrane", action="store_true", help="leave out the membrane read/write term")
    p.add_argument("--e-mem", type=float, metavar="PJ",
                   help="energy of one membrane read or write in picojoules (default 10, 8 KB SRAM)")
    p.set_defaults(func=energy_cli)
    return p


def energy_cli(args) -> int:
    """``spikeforge energy``: load a checkpoint, count on its test set, print the table, write the JSON."""
    from spikeforge.app.common import pick_device
    from spikeforge.data import DataConfig, build_data
    from spikeforge.engine.checkpoint import load_checkpoint, resolve_checkpoint

    if args.batches is not None and args.batches < 1:
        raise ConfigError(f"--batches must be a positive integer, got {args.batches}")
    if args.timesteps is not None and args.timesteps < 1:
        raise ConfigError(f"--timesteps must be a positive integer, got {args.timesteps}")
    e_mem = None if args.e_mem is None else args.e_mem * PJ
    costs = get_costs(args.preset, e_mem)
    path = resolve_checkpoint(args.checkpoint)
    model, head = load_checkpoint(path)
    if model.spiking and args.timesteps:
        model.timesteps = args.timesteps
    elif args.timesteps:
        raise ConfigError(f"{path} holds an ANN; --timesteps applies to SNN checkpoints")
    device = pick_device(args.device)
    dataset = args.dataset or head.get("dataset")
    if not dataset:
        raise ConfigError(f"{path} does not record its dataset; pass --dataset NAME")
    data = build_data(DataConfig(dataset=dataset, data_dir=args.data_dir, test_batch_size=args.batch_size,
                                 image_size=model.spec.input_size if dataset == "imagefolder" else None),
                      device=device)
    counts = count_ops(model, data.test, device, max_batches=args.batches)
    report = energy_from_counts(counts, preset=costs, first_layer_per_step=args.first_layer_per_step,
                                membrane=not args.no_membrane)
    report = {"checkpoint": str(path), "dataset": dataset, "stage": head.get("stage"), "kind": head.get("kind"),
              "arch": model.spec.arch, **report}
    kind = f"SNN T={model.timesteps}, {model.snn.encoding} input" if model.spiking else "ANN"
    print(f"energy per inference of {path} ({model.spec.arch}, {kind}) on {counts.samples} {dataset} test images")
    print(energy_table(report))
    out = Path(args.json) if args.json else path.parent / JSON_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


__all__ = ["PRESETS", "EnergyCosts", "LayerOps", "OpCounts", "add_energy_parser", "count_ops", "energy_cli",
           "energy_from_counts", "energy_report", "energy_table", "get_costs", "stage_energy_metrics"]
