"""Export spikeforge models: NIR (SNNs, with import back), ONNX (ANN twins and T=1 SNNs), model cards.

* :func:`to_nir` / :func:`write_nir` / :func:`from_nir` / :func:`read_nir` / :class:`NIRNetwork`
  (:mod:`.nir_format`; needs the ``nir`` package),
* :func:`to_onnx` / :func:`build_onnx` / :func:`check_onnx` (:mod:`.onnx_format`; needs ``onnx``, and
  ``onnxruntime`` to run the files),
* :func:`write_card` (:mod:`.card`).

The optional packages are imported when used; a missing one raises a :class:`~spikeforge.errors.ConfigError` that
names it. See ``docs/export.md``.
"""

from spikeforge.export.card import card_data, card_paths, write_card
from spikeforge.export.nir_format import (InexactExportWarning, NIRNetwork, NIRNeuron, from_nir, graph_info, read_nir, to_nir,
                         write_nir)
from spikeforge.export.onnx_format import build_onnx, check_onnx, onnx_session, to_onnx
from spikeforge.export.trace import Op, trace_model

__all__ = ["InexactExportWarning", "NIRNetwork", "NIRNeuron", "Op", "build_onnx", "card_data",
           "card_paths", "check_onnx", "from_nir", "graph_info", "onnx_session", "read_nir",
           "to_nir", "to_onnx", "trace_model", "write_card", "write_nir"]
