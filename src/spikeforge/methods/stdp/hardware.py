"""Crossbar (in-memory computing) cost estimate of the input->excitatory synapses: area and energy.

A first-order model, so a pruned/quantized network can be compared with the dense one (Rathi, Panda & Roy, "STDP-based
pruning of connections and weight quantization in spiking neural networks for energy-efficient recognition", IEEE
TCAD 38(4), 2019, report 3.1x lower energy and 4x lower area; their exact model is not reproduced here). Assumptions (all configurable):

* Synapses are mapped onto ``tile x tile`` crossbars (default 64 x 64). A synapse with ``bits`` of precision takes
  ``ceil(bits / bits_per_cell)`` cells in adjacent columns (bit slicing); ``bits = ceil(log2(levels))`` for a
  quantized network and ``baseline_bits`` (default 8) for an unquantized one; ``bits_per_cell`` (default 4: a
  16-level device) is what one device stores.
* Inputs with no surviving synapse are dropped (no crossbar row). The surviving rows are sorted by how many
  synapses they keep, and the [rows x (neurons * cells)] matrix is cut into tiles; a tile holding no surviving
  synapse is not built. ``crossbars`` counts the tiles built (``crossbars_ideal`` = the lower bound
  ceil(cells / tile^2), perfect packing). Area = crossbars * (tile^2 * cell_area + periphery_area); the periphery
  (drivers, ADC/sense amplifiers) is ``periphery_cells`` cell-equivalents per crossbar (default 1024).
* Energy per inference = input spikes * (cells read per spike * e_cell + crossbars the spike's row drives *
  e_row) + crossbar column reads (one per active crossbar and time step with any input spike, ``e_column`` per
  column): defaults e_cell 0.1 pJ, e_row 1 pJ, e_column 0.5 pJ (orders of magnitude only; the ratios matter).
"""

from __future__ import annotations

import math
from dataclasses import asdict

import torch

from spikeforge.config import NonNegFloat, PosFloat, PosInt, config, from_dict


@config
class CrossbarModel:
    """Crossbar geometry, cell precision, area and energy constants (see the module docstring)."""

    tile: PosInt = 64
    bits_per_cell: PosInt = 4
    baseline_bits: PosInt = 8
    cell_area: PosFloat = 1.0
    periphery_cells: NonNegFloat = 1024.0
    e_cell_pj: NonNegFloat = 0.1
    e_row_pj: NonNegFloat = 1.0
    e_column_pj: NonNegFloat = 0.5

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "hardware") -> "CrossbarModel":
        return from_dict(cls, d, where)


def _bits(levels: int | None, model: CrossbarModel) -> int:
    return model.baseline_bits if not levels else max(1, math.ceil(math.log2(levels)))


def _layout(mask: torch.Tensor, cells: int, tile: int) -> tuple[int, torch.Tensor]:
    """Crossbars built and, for each input row, how many crossbars its row drives (after dropping empty rows)."""
    m = mask.bool()
    per_row = m.sum(1)
    order = torch.argsort(per_row, descending=True, stable=True)
    keep = order[per_row[order] > 0]
    sub = m[keep]  # [R, N]
    R, N = sub.shape
    if R == 0:
        return 0, torch.zeros(mask.shape[0])
    cols = sub.repeat_interleave(cells, dim=1)  # bit slices in adjacent columns
    rt, ct = math.ceil(R / tile), math.ceil(cols.shape[1] / tile)
    pad = torch.zeros(rt * tile, ct * tile, dtype=torch.bool)
    pad[:R, :cols.shape[1]] = cols
    blocks = pad.view(rt, tile, ct, tile).any(3).any(1)  # [rt, ct]: tile has a synapse
    built = int(blocks.sum())
    row_xbars = torch.zeros(mask.shape[0])
    row_block = torch.arange(R) // tile
    row_xbars[keep] = blocks[row_block].sum(1).float()
    return built, row_xbars


def crossbar_cost(mask: torch.Tensor, levels: int | None, input_spikes: torch.Tensor, steps_active: float,
                  model: CrossbarModel | None = None) -> dict:
    """Area and energy of the synapses ``mask [n_input, N]`` (True = present).

    ``input_spikes [n_input]``: mean input spikes per inference of each input; ``steps_active``: mean number of
    time steps per inference with at least one input spike (for the column reads).
    """
    model = model or CrossbarModel()
    bits = _bits(levels, model)
    cells = math.ceil(bits / model.bits_per_cell)
    built, row_xbars = _layout(mask, cells, model.tile)
    synapses = int(mask.sum())
    ideal = math.ceil(synapses * cells / model.tile ** 2)
    area = built * (model.tile ** 2 * model.cell_area + model.periphery_cells * model.cell_area)
    per_row_cells = mask.sum(1).float() * cells
    spikes = input_spikes.float()
    e_cells = float((spikes * per_row_cells).sum()) * model.e_cell_pj
    e_rows = float((spikes * row_xbars).sum()) * model.e_row_pj
    e_cols = steps_active * built * model.tile * model.e_column_pj
    energy_pj = e_cells + e_rows + e_cols
    return {"synapses": synapses, "bits": bits, "cells_per_synapse": cells, "crossbars": built,
            "crossbars_ideal": ideal, "area_cells": area, "energy_pj": energy_pj,
            "energy_parts_pj": {"cells": e_cells, "rows": e_rows, "columns": e_cols}, "model": asdict(model)}


def input_activity(x: torch.Tensor, max_rate: float, dt: float, steps: int) -> tuple[torch.Tensor, float]:
    """Expected input spikes per inference of each input (Poisson rates of images ``x [M, n_input]``, first
    presentation) and the mean number of steps with any input spike (for :func:`crossbar_cost`)."""
    p = (x * max_rate * dt / 1000.0).clamp(0, 1)
    per_input = p.mean(0) * steps
    p_none = torch.exp(torch.log1p(-p.clamp(max=1 - 1e-7)).sum(1))  # P(no input spike in a step), per image
    return per_input, float(((1 - p_none) * steps).mean())


def compare(dense: dict, sparse: dict) -> dict:
    """Improvement factors of ``sparse`` over ``dense`` (>1 = better)."""
    return {"area_x": dense["area_cells"] / max(sparse["area_cells"], 1e-12),
            "area_packed_x": dense["crossbars_ideal"] / max(sparse["crossbars_ideal"], 1e-12),
            "energy_x": dense["energy_pj"] / max(sparse["energy_pj"], 1e-12),
            "crossbars": [dense["crossbars"], sparse["crossbars"]]}


__all__ = ["CrossbarModel", "compare", "crossbar_cost", "input_activity"]
