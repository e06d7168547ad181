"""Operation counts and energy estimates per inference: ANN MACs against SNN accumulates.

:mod:`~spikeforge.analysis.energy.counting` counts MACs, input spike rates, ACs and neurons per layer by forward
hooks (:func:`count_ops`); :mod:`~spikeforge.analysis.energy.costs` holds the energy per operation (Horowitz, ISSCC
2014; :class:`EnergyCosts`, :data:`PRESETS`); :mod:`~spikeforge.analysis.energy.report` turns counts into joules per
inference for the ANN twin and the SNN (:func:`energy_report`, :func:`energy_table`), following the comparisons of
Rathi & Roy (DIET-SNN, 2021) and Kim & Panda (BNTT, 2021). ``spikeforge energy``
(:mod:`spikeforge.app.commands.energy`) prints the table and writes JSON.
"""

from spikeforge.analysis.energy.costs import DEFAULT_E_MEM, PJ, PRESETS, EnergyCosts, get_costs
from spikeforge.analysis.energy.counting import COUNTED_LAYERS, LayerOps, OpCounts, count_ops
from spikeforge.analysis.energy.report import energy_from_counts, energy_report, energy_table, stage_energy_metrics

__all__ = ["COUNTED_LAYERS", "DEFAULT_E_MEM", "PJ", "PRESETS", "EnergyCosts", "LayerOps", "OpCounts", "count_ops",
           "energy_from_counts", "energy_report", "energy_table", "get_costs", "stage_energy_metrics"]
