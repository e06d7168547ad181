"""Export spikeforge models: NIR (SNNs, with import back), ONNX (ANN twins and T=1 SNNs), model cards.

* :func:`to_nir` / :func:`write_nir` (:mod:`.nir_export`), :func:`from_nir` / :func:`read_nir`
  (:mod:`.nir_import`), :class:`NIRNetwork` / :class:`NIRNeuron` (:mod:`.nir_runtime`, runs any feed-forward NIR
  graph); the neuron mapping (Pedersen et al. 2024, NIR) in :mod:`.nir_mapping`; all need the ``nir`` package,
* :func:`to_onnx` / :func:`build_onnx` / :func:`check_onnx` (:mod:`.onnx_format`; needs ``onnx``, and
  ``onnxruntime`` to run the files),
* export targets (:mod:`.targets`: ``generic``, ``snntorch``, ``sinabs``, ``norse``; ``to_nir(model, target=...)``)
  and their loaders :func:`load_snntorch` / :func:`load_sinabs` / :func:`load_norse` + :func:`run_exported`
  (:mod:`.consumers`; need the tool),
* :func:`check_dynapcnn` (:mod:`.dynapcnn`): does the network fit SynSense's DYNAP-CNN / Speck chips,
* :func:`write_card` (:mod:`.card`).

The optional packages are imported when used; a missing one raises a :class:`~spikeforge.errors.ConfigError` that
names it. See ``docs/export.md``.
"""

from spikeforge.export.card import card_data, card_paths, write_card
from spikeforge.export.consumers import load_norse, load_sinabs, load_snntorch, run_exported
from spikeforge.export.dynapcnn import DynapcnnReport, check_dynapcnn
from spikeforge.export.nir_export import to_nir, write_nir
from spikeforge.export.nir_import import from_nir, read_nir
from spikeforge.export.nir_mapping import InexactExportWarning, graph_info
from spikeforge.export.nir_runtime import NIRNetwork, NIRNeuron
from spikeforge.export.onnx_format import build_onnx, check_onnx, onnx_session, to_onnx
from spikeforge.export.targets import TARGETS, Target, get_target
from spikeforge.export.trace import Op, trace_model

__all__ = ["DynapcnnReport", "InexactExportWarning", "NIRNetwork", "NIRNeuron", "Op", "TARGETS", "Target",
           "build_onnx", "card_data", "card_paths", "check_dynapcnn", "check_onnx", "from_nir", "get_target",
           "graph_info", "load_norse", "load_sinabs", "load_snntorch", "onnx_session", "read_nir", "run_exported",
           "to_nir", "to_onnx", "trace_model", "write_card", "write_nir"]
