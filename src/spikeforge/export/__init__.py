"""Export spikeforge models: NIR (SNNs, with import back), ONNX (ANN twins and T=1 SNNs), model cards.

* :func:`to_nir` / :func:`write_nir` / :func:`from_nir` / :func:`read_nir` / :class:`NIRNetwork`
  (:mod:`.nir_format`; needs the ``nir`` package),
* :func:`to_onnx` / :func:`build_onnx` / :func:`check_onnx` (:mod:`.onnx_format`; needs ``onnx``, and
  ``onnxruntime`` to run the files),
* :func:`write_card` (:mod:`.card`), and the command ``spikeforge export`` (:func:`add_export_parser`).

The optional packages are imported when used; a missing one raises a :class:`~spikeforge.errors.ConfigError` that
names it. See ``docs/export.md``.
"""

from .card import card_data, card_paths, write_card
from .command import add_export_parser, export_cli
from .nir_format import (InexactExportWarning, NIRNetwork, NIRNeuron, from_nir, graph_info, read_nir, to_nir,
                         write_nir)
from .onnx_format import build_onnx, check_onnx, onnx_session, to_onnx
from .trace import Op, trace_model

__all__ = ["InexactExportWarning", "NIRNetwork", "NIRNeuron", "Op", "add_export_parser", "build_onnx", "card_data",
           "card_paths", "check_onnx", "export_cli", "from_nir", "graph_info", "onnx_session", "read_nir",
           "to_nir", "to_onnx", "trace_model", "write_card", "write_nir"]
