"""Energy per inference from operation counts, the ANN twin against the SNN, as a JSON-ready report and a table.

``E_ANN = E_MAC * sum MACs``. ``E_SNN = sum`` over layers of ``E_AC * ACs``, except the first layer under **direct**
input encoding, which sees the analog image and is counted as ``E_MAC * MACs`` (once: the model computes its current
once and reuses it at every step; or ``T`` times with ``first_layer_per_step=True``). Under **Poisson** input the
first layer is AC with the input spike rate, and under **events** input (binned event-camera frames,
:mod:`spikeforge.data.events`) it is AC on the input events: each event costs one accumulate per outgoing synapse,
``ACs = events per input position x MACs``; the ANN twin, which sees the mean frame, pays MACs as on an image. The
readout layer is AC on its input spikes. Neuron updates (leak,
compare, reset) are ignored, as in Rathi & Roy (DIET-SNN, IEEE TNNLS 2021). The optional membrane term (the
argument of Chowdhury, Rathi & Roy, "One timestep is all you need" (IIR-SNN), 2021, that multi-step SNNs also pay
for reading and writing their membrane potentials) is ``2 * T * N_neurons * E_mem`` (one read and one write of
every membrane potential per step), zero at ``T = 1``, and is reported separately from the compute energy. Per-operation costs: :mod:`spikeforge.analysis.energy.costs`
(Horowitz, ISSCC 2014).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from spikeforge.analysis.energy.costs import PJ, EnergyCosts, get_costs
from spikeforge.analysis.energy.counting import LayerOps, OpCounts, count_ops
from spikeforge.utils import text_table

__all__ = ["energy_from_counts", "energy_report", "energy_table", "stage_energy_metrics"]


def _ratio(num: float, den: float | None) -> float | None:
    if den is None or den <= 0:
        return None
    return float(num / den)


def _layer_energy(r: LayerOps, costs: EnergyCosts, snn: bool, steps: int, mem_factor: float,
                  first_layer_per_step: bool, membrane: bool) -> dict:
    """The report record of one layer: its counts and ``e_ann``, ``e_snn``, ``e_mem`` in joules."""
    rec = {"name": r.name, "type": r.type, "role": r.role, "input": r.input, "macs": r.macs,
           "input_rate": r.input_rate, "acs": r.acs, "snn_macs": None, "e_ann": r.macs * costs.e_mac, "e_snn": None,
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
    return rec


def _totals(counts: OpCounts, layers: list[dict], mem_factor: float, membrane: bool) -> dict[str, Any]:
    tot = counts.totals
    totals: dict[str, Any] = {"macs": tot["macs"], "acs": tot["acs"], "snn_macs": None,
                              "e_ann": sum(rec["e_ann"] for rec in layers), "e_snn": None, "e_mem": None,
                              "e_snn_with_memory": None, "neurons": tot["neurons"],
                              "membrane_elems": tot["membrane_elems"], "membrane_bytes": tot["membrane_bytes"]}
    if counts.spiking:
        totals["snn_macs"] = sum(rec["snn_macs"] for rec in layers)
        totals["e_snn"] = sum(rec["e_snn"] for rec in layers)
        if membrane:
            # every spiking neuron of the model (not only those mapped to a layer) keeps a membrane potential
            totals["e_mem"] = tot["membrane_elems"] * mem_factor
            totals["e_snn_with_memory"] = totals["e_snn"] + totals["e_mem"]
    return totals


def energy_from_counts(counts: OpCounts, *, preset: str | dict | EnergyCosts = "45nm-fp32",
                       first_layer_per_step: bool = False, membrane: bool = True,
                       e_mem: float | None = None) -> dict:
    """The energy report of :func:`energy_report` from counts already taken (see the module doc for the model)."""
    costs = get_costs(preset, e_mem)
    snn = counts.spiking
    steps = counts.timesteps or 1
    mem_factor = 2 * steps * costs.e_mem if (snn and membrane and steps > 1) else 0.0
    layers = [_layer_energy(r, costs, snn, steps, mem_factor, first_layer_per_step, membrane) for r in counts.layers]
    totals = _totals(counts, layers, mem_factor, membrane)
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
        "energy_ratio": _ratio(totals["e_ann"], totals["e_snn"]) if snn else None,
        "energy_ratio_with_memory": _ratio(totals["e_ann"], totals["e_snn_with_memory"]) if snn and membrane
        else None,
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


def _count(v: float | int | None) -> str:
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


def _layer_table(report: dict, snn: bool) -> str:
    """One row per layer and a total row under a rule."""
    tot = report["totals"]
    if snn:
        head = ["layer", "type", "MACs", "in rate", "ACs", "E_ANN uJ", "E_SNN uJ", "E_mem uJ", "neurons"]
        rows = [[r["name"], r["type"], _count(r["macs"]), "analog" if r["input_rate"] is None
                 else f"{r['input_rate']:.4g}", _count(r["acs"]), _uj(r["e_ann"]), _uj(r["e_snn"]),
                 _uj(r.get("e_mem")), _count(r["neurons"])] for r in report["layers"]]
        total = ["total", "", _count(tot["macs"]), "", _count(tot["acs"]), _uj(tot["e_ann"]), _uj(tot["e_snn"]),
                 _uj(tot.get("e_mem")), _count(tot["neurons"])]
    else:
        head = ["layer", "type", "MACs", "E_ANN uJ", "neurons"]
        rows = [[r["name"], r["type"], _count(r["macs"]), _uj(r["e_ann"]), _count(r["neurons"])]
                for r in report["layers"]]
        total = ["total", "", _count(tot["macs"]), _uj(tot["e_ann"]), _count(tot["neurons"])]
    lines = text_table(head, rows + [total], left=2).split("\n")
    return "\n".join(lines[:-1] + [lines[1], lines[-1]])  # the head's rule again above the total


def _snn_lines(report: dict) -> list[str]:
    tot = report["totals"]
    steps = report.get("timesteps")
    first = ("per step" if report.get("first_layer_per_step") else "once") if report.get("encoding") == "direct" \
        else None
    enc = f"{report.get('encoding')} input" + (f", first layer MACs counted {first}" if first else "")
    if report.get("encoding") == "events":
        enc += ", first layer ACs on the input events"
    out = [f"SNN  compute energy:       {_joules(tot['e_snn'])}  ({_count(tot['acs'])} ACs + "
           f"{_count(tot['snn_macs'])} MACs; T={steps}, {enc})"]
    if tot.get("e_mem") is not None:
        out.append(f"SNN  membrane read/write:  {_joules(tot['e_mem'])}  (2 x T x {_count(tot['neurons'])} neurons"
                   f"{'; none at T=1' if steps == 1 else ''})")
        out.append(f"SNN  total with memory:    {_joules(tot['e_snn_with_memory'])}")
    rate = (report.get("spike_rate") or {}).get("mean")
    if rate is not None:
        out.append(f"mean spike rate: {rate:.4f} spikes per neuron per inference")
    r1, r2 = report.get("energy_ratio"), report.get("energy_ratio_with_memory")
    out.append("energy ratio ANN/SNN: " + ("-" if r1 is None else f"{r1:.2f}x") + " (compute)"
               + ("" if r2 is None else f", {r2:.2f}x with membrane memory"))
    return out


def energy_table(report: dict) -> str:
    """A text table of the report: one row per layer (energies in microjoules per inference) and the totals."""
    snn = report.get("spiking", report.get("totals", {}).get("e_snn") is not None)
    tot = report["totals"]
    out = [_layer_table(report, snn), ""]
    preset = report.get("preset") or {}
    if isinstance(preset, dict) and preset:
        out.append(f"preset {preset.get('name')}: MAC {preset['e_mac'] / PJ:.3g} pJ, AC {preset['e_ac'] / PJ:.3g} pJ, "
                   f"membrane access {preset['e_mem'] / PJ:.3g} pJ ({preset.get('source', '')})")
    out.append(f"ANN  energy per inference: {_joules(tot['e_ann'])}  ({_count(tot['macs'])} MACs)")
    if snn:
        out += _snn_lines(report)
    return "\n".join(out)
