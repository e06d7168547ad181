r"""Per-consumer NIR forms: what snnTorch, sinabs and Norse read, and what each of them lacks.

NIR (Pedersen et al. 2024, "Neuromorphic intermediate representation", Nature Communications 15:8122) fixes node
semantics, but each tool's importer maps only some nodes, and some differently from the specification. A
:class:`Target` records, for one consumer, the forms :func:`~spikeforge.export.nir_export.to_nir` must write so that
the consumer computes *exactly* what spikeforge computes (float32, bit for bit), and the features it lacks (which make
the export refuse with a one-line reason). The facts below were read from the importers' sources (snnTorch 1.0
``snntorch.import_nir``, sinabs 3.1 ``sinabs.nir``, Norse 1.1 ``norse.torch.utils.import_nir``) and are checked by the
tests, which run the exported graphs in each tool.

Forms that every target shares:

* **T = 1.** The membrane starts at zero, so ``U' = lambda * 0 + I = I`` exactly: leak and reset never act, every
  neuron is a threshold unit and is written in the target's integrate-and-fire form; the readout (the sum over one
  step) is the last affine layer's output itself, so no integrator node is needed.
* **Input normalization** ``(x - mean) / std`` is done by the caller (the mean and std are in the graph metadata):
  as a 1x1 convolution ``x / std - mean / std`` it would round differently from spikeforge's subtraction then
  division, and a current within an ulp of a threshold could flip a spike.
* **Average pooling** reads spikes (0/1 integers), so ``SumPool2d`` followed by the next layer's weights times
  ``1/k^2`` (a power of two for 2x2 pooling: an exact scaling) computes the same products as ``AvgPool2d`` then the
  original weights (``round(s w / 4)`` either way).
"""

from __future__ import annotations

from dataclasses import dataclass

from spikeforge.errors import ConfigError

# tau of an integrate-and-fire neuron written as a LIF node for snnTorch: 1 - dt/tau rounds to exactly 1.0 in
# float64 for any dt <= 1 (dt/tau < 2**-53), so snnTorch's beta is exactly 1.
IF_AS_LIF_TAU = 2.0 ** 100


@dataclass(frozen=True)
class Target:
    """How one consumer reads NIR (see the module docstring)."""

    name: str
    label: str
    pool: str               # "avg": AvgPool2d; "sum": SumPool2d with 1/k^2 folded into the next weights
    if_node: str            # "IF": nir.IF; "LIF": IF written as a LIF with beta = 1 (tau = IF_AS_LIF_TAU)
    lif_exact: bool         # a trained leak < 1 runs exactly at T > 1
    integrator: bool        # reads nir.I (the readout at T > 1)
    linear: bool            # reads nir.Linear (else a bias-free layer is written as Affine with zero bias)
    per_channel: bool       # reads thresholds that differ between neurons of a layer
    hard_reset: bool        # its neurons reset to zero (spikeforge's hard reset) at T > 1
    soft_reset: bool        # its neurons subtract the threshold exactly like spikeforge at T > 1
    geq: bool               # fires on v >= v_threshold (write V_th), else v > v_threshold (write V_th - 1 ulp)
    scalar_params: bool     # neuron parameters as 0-d arrays (keeps the consumer's membrane in float32)
    dt: float | None        # the step the importer assumes (None: any)
    residual: bool          # runs a node with several inputs as their sum
    normalize_in_graph: bool
    loader: str             # how to load the file in that tool


TARGETS: dict[str, Target] = {
    "generic": Target("generic", "NIR (any reader; spikeforge's from_nir)", pool="avg", if_node="IF",
                      lif_exact=True, integrator=True, linear=True, per_channel=True, hard_reset=True,
                      soft_reset=False, geq=False, scalar_params=False, dt=None, residual=True,
                      normalize_in_graph=True, loader="spikeforge.export.from_nir(path)"),
    "snntorch": Target("snntorch", "snnTorch (snntorch.import_nir.import_from_nir)", pool="avg", if_node="LIF",
                       lif_exact=True, integrator=False, linear=True, per_channel=False, hard_reset=True,
                       soft_reset=False, geq=False, scalar_params=True, dt=1e-4, residual=False,
                       normalize_in_graph=False, loader="spikeforge.export.load_snntorch(path)"),
    "sinabs": Target("sinabs", "sinabs (sinabs.from_nir)", pool="sum", if_node="IF", lif_exact=False,
                     integrator=False, linear=False, per_channel=True, hard_reset=True, soft_reset=True, geq=True,
                     scalar_params=False, dt=None, residual=True, normalize_in_graph=False,
                     loader="spikeforge.export.load_sinabs(path)"),
    "norse": Target("norse", "Norse (norse.torch.from_nir)", pool="sum", if_node="IF", lif_exact=False,
                    integrator=False, linear=True, per_channel=True, hard_reset=True, soft_reset=False, geq=False,
                    scalar_params=False, dt=None, residual=True, normalize_in_graph=False,
                    loader="spikeforge.export.load_norse(path)"),
}

# Why a target refuses a feature: one line each, naming what the consumer's importer does instead.
LACKS = {
    ("snntorch", "per_channel"): "snnTorch's NIR import needs one v_threshold per layer (it asserts a single value)",
    ("snntorch", "soft_reset"): "snnTorch's NIR import builds Leaky(reset_mechanism='zero'): no subtractive reset",
    ("snntorch", "integrator"): "snnTorch's NIR import has no integrator node (nir.I)",
    ("snntorch", "residual"): "snnTorch's NIR import (nirtorch.nir_to_torch) passes a node's inputs as separate "
                              "arguments instead of summing them (ResNet shortcuts)",
    ("sinabs", "lif_exact"): "sinabs' LIF decays by exp(-1/tau_mem) computed in float32, which does not reproduce "
                             "a trained leak bit for bit (and sinabs 3.1's LIF import fails on [C, H, W] parameters); "
                             "train with leaks fixed at 1 (IF)",
    ("sinabs", "integrator"): "sinabs' NIR import has no integrator node (nir.I)",
    ("norse", "soft_reset"): "Norse's IAF/LIF reset to v_reset: no subtractive reset",
    ("norse", "lif_exact"): "Norse's LIF ignores NIR's r and integrates dt/tau (x - v): the input is scaled by "
                            "(1 - leak) and rounded differently; train with leaks fixed at 1 (IF)",
    ("norse", "integrator"): "Norse's NIR import has no integrator node (nir.I)",
    ("generic", "soft_reset"): "soft reset (U -= V_th) has no NIR form: NIR neurons reset to v_reset, written as 0 "
                               "(hard reset)",
}


def get_target(name: str) -> Target:
    """The :class:`Target` called ``name`` (``generic``, ``snntorch``, ``sinabs``, ``norse``)."""
    try:
        return TARGETS[name]
    except KeyError:
        raise ConfigError(f"unknown export target {name!r}; choose one of {', '.join(TARGETS)}") from None


def lacks(target: Target, feature: str) -> str:
    """The one-line reason ``target`` cannot run ``feature`` exactly."""
    return LACKS.get((target.name, feature)) or f"{target.label} does not support {feature}"
