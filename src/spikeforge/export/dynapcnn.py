r"""Does a spikeforge SNN fit SynSense's DYNAP-CNN / Speck chips? A layer-constraint check without the chip.

The chips (Liu et al. 2019, "Live demonstration: face recognition on an ultra-low power event-driven convolutional
neural network ASIC", CVPR Workshops; sinabs' ``backend.dynapcnn``) run a feed-forward network of up to 9 *chip
layers*, each one convolution (a ``Linear`` layer is a convolution whose kernel covers its whole input), one
integrate-and-fire neuron array and an optional sum pooling, on 9 cores with fixed memories (kernel / neuron
entries, in Ki = 1024):

    cores 0-2: 16 / 64    cores 3-4: 32 / 32    cores 5-6: 64 / 16    cores 7-8: 16 / 16    (bias: 1 Ki each)

A layer's kernel memory is ``c_in * 2^(ceil(log2(k_h k_w)) + ceil(log2(c_out)))`` and its neuron memory
``c_out * 2^(ceil(log2(h_out)) + ceil(log2(w_out)))`` (the chip addresses powers of two). :func:`check_dynapcnn`
groups the traced model into chip layers and checks each with sinabs' own validator
(``sinabs.validate_memory_speck.ValidateMapping``: kernel <= 16x16, at most 1024 output channels, strides 1/2/4/8,
pooling 1/2/4, the memory formulas above), then assigns layers to cores (a bipartite matching on the table above),
and checks what the validator does not: inputs are events (spikes), every layer ends in spiking neurons, neurons are
integrate-and-fire, batch norm is folded. sinabs' full backend (``DynapcnnNetwork.is_compatible_with``) also builds the
chip configuration and needs SynSense's samna driver; this check needs only sinabs.

On the chip, weights are 8-bit and thresholds 16-bit integers (sinabs' ``discretize``), so a mapped network is an
approximation of the float32 model, not an exact copy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.export.trace import Op, trace_model

# (kernel memory, neuron memory) per core, in entries; sinabs' chip table for DYNAP-CNN / Speck
CORES = [(16 * 1024, 64 * 1024)] * 3 + [(32 * 1024, 32 * 1024)] * 2 + [(64 * 1024, 16 * 1024)] * 2 \
    + [(16 * 1024, 16 * 1024)] * 2
BIAS_MEMORY = 1024
MAX_INPUT = 128


@dataclass
class ChipLayer:
    """One chip layer: a convolution (or a Linear as one) + its neurons + an optional sum pooling."""

    name: str
    c_in: int
    c_out: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    in_size: tuple[int, int]
    pool: int = 1
    kernel_memory: int = 0
    neuron_memory: int = 0
    bias_memory: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class DynapcnnReport:
    """The result of :func:`check_dynapcnn`: ``fits``, the chip layers, the core of each, problems and fixes."""

    fits: bool
    layers: list[ChipLayer]
    cores: dict[str, int] | None
    problems: list[str]
    fixes: list[str]

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        """A plain-text summary: one line per chip layer, then problems and fixes."""
        lines = [f"DYNAP-CNN / Speck mapping: {'fits' if self.fits else 'does NOT fit'}"]
        for ly in self.layers:
            core = self.cores.get(ly.name) if self.cores else None
            lines.append(f"  {ly.name}: {ly.c_in}->{ly.c_out} ch, kernel {ly.kernel[0]}x{ly.kernel[1]}, in "
                         f"{ly.in_size[0]}x{ly.in_size[1]}, pool {ly.pool}; kernel memory "
                         f"{ly.kernel_memory / 1024:g}Ki, neuron memory {ly.neuron_memory / 1024:g}Ki, bias "
                         f"{ly.bias_memory}; core {core if core is not None else '-'}")
        lines += [f"  problem: {p}" for p in self.problems] + [f"  fix: {f}" for f in self.fixes]
        return "\n".join(lines)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _weight_layer(op: Op, in_shape: tuple[int, ...], flat_from: tuple[int, ...] | None) -> ChipLayer:
    m = op.module
    if isinstance(m, nn.Conv2d):
        return ChipLayer(op.name, m.in_channels, m.out_channels, _pair(m.kernel_size), _pair(m.stride),
                         _pair(m.padding), (in_shape[1], in_shape[2]))
    c, h, w = flat_from if flat_from is not None and len(flat_from) == 3 else (m.in_features, 1, 1)
    return ChipLayer(op.name, c, m.out_features, (h, w), (1, 1), (0, 0), (h, w))


def _group(ops: list[Op], t1: bool) -> tuple[list[ChipLayer], list[str]]:
    """Chip layers in order, and structural problems (non-spiking output, leaks, unfolded batch norm); ``t1``: the
    model runs one step, where a leak never acts (the membrane starts at 0)."""
    shapes = {op.name: op.shape for op in ops}
    layers: list[ChipLayer] = []
    problems: list[str] = []
    flat_from, open_layer = None, None
    for op in ops:
        if op.kind == "flatten":
            flat_from = shapes[op.inputs[0]]
        elif op.kind in ("conv", "linear"):
            if open_layer is not None:
                problems.append(f"{open_layer.name}: followed by another weight layer without neurons in between "
                                "(a chip layer is convolution -> neurons -> pooling)")
            open_layer = _weight_layer(op, shapes[op.inputs[0]], flat_from if op.kind == "linear" else None)
            layers.append(open_layer)
            flat_from = None
        elif op.kind == "neuron":
            if float(op.module.leak.detach().min()) < 1.0 and not t1:
                problems.append(f"{op.name}: leaky neurons (leak < 1); the chip's neurons are integrate-and-fire")
            open_layer = None
        elif op.kind in ("pool", "adaptive_pool") and layers:
            k = op.extra["kernel"] if op.kind == "adaptive_pool" else _pair(op.module.kernel_size)
            layers[-1].pool = int(k[0]) if k[0] == k[1] else -1
        elif op.kind == "bn":
            problems.append(f"{op.name}: unfolded BatchNorm2d; fold it into the convolution (the convert stage does)")
        elif op.kind == "readout" and open_layer is not None:
            problems.append(f"{open_layer.name}: the output layer has no spiking neurons (spikeforge's readout sums "
                            "its currents); every chip layer emits spikes, so the class scores would have to be spike "
                            "counts of an integrate-and-fire output layer (not a recipe option today)")
    return layers, problems


def _validate(layer: ChipLayer) -> None:
    """sinabs' Speck validator on one layer: memory sizes and the kernel/stride/pool/channel limits."""
    try:
        from sinabs.validate_memory_speck import ValidateMapping
    except ImportError:
        raise ConfigError("the DYNAP-CNN check needs the 'sinabs' package: pip install sinabs "
                          "(or pip install 'spikeforge[test]')") from None
    try:
        v = ValidateMapping(layer.c_in, layer.c_out, layer.kernel, layer.stride, layer.padding,
                            input_dimension=list(layer.in_size))
        kernel_ki, neuron_ki, kernel_err, neuron_err = v.calculate_total_memory()
        layer.kernel_memory, layer.neuron_memory = int(kernel_ki * 1024), int(neuron_ki * 1024)
        layer.problems += [f"{layer.name}: {e}" for e in (kernel_err, neuron_err) if e]
        if layer.pool != 1:
            ValidateMapping(layer.c_out, layer.c_out, (layer.pool, layer.pool), (layer.pool, layer.pool), (0, 0),
                            conv_2d=False)
    except Exception as exc:  # the validator raises Exception / Warning with its message
        layer.problems.append(f"{layer.name}: {exc}")
    layer.bias_memory = layer.c_out
    if layer.c_out > BIAS_MEMORY:
        layer.problems.append(f"{layer.name}: {layer.c_out} biases > {BIAS_MEMORY} bias entries per core")


def _assign(layers: list[ChipLayer]) -> dict[str, int] | None:
    """Each layer on its own core whose memories hold it (augmenting-path matching), or None."""
    owner: dict[int, int] = {}

    def place(i: int, seen: set[int]) -> bool:
        for core, (km, nm) in enumerate(CORES):
            if core in seen or layers[i].kernel_memory > km or layers[i].neuron_memory > nm:
                continue
            seen.add(core)
            if core not in owner or place(owner[core], seen):
                owner[core] = i
                return True
        return False

    if len(layers) > len(CORES) or not all(place(i, set()) for i in range(len(layers))):
        return None
    return {layers[i].name: core for core, i in sorted(owner.items())}


def _largest_fitting_width(layer: ChipLayer) -> int:
    """The most output channels (a power of two) a layer of this input and kernel can have on any core."""
    per_out = layer.c_in * 2 ** math.ceil(math.log2(layer.kernel[0] * layer.kernel[1]))
    per_neuron = max(layer.neuron_memory // max(layer.c_out, 1), 1)
    room = max(min(km // per_out, nm // per_neuron) for km, nm in CORES)
    return 2 ** int(math.floor(math.log2(room))) if room >= 1 else 0


def _fixes(model: nn.Module, layers: list[ChipLayer], problems: list[str]) -> list[str]:
    fixes = []
    if model.snn.encoding == "direct":
        fixes.append("snn.encoding: poisson (the chip takes events; direct input feeds analog pixel values to the "
                     "first layer)")
    if any("leaky" in p for p in problems):
        fixes.append("train: [weights, threshold] in the snn/iir stages (leaks stay 1: integrate-and-fire), as in "
                     "recipes/mnist-deploy.yaml")
    for ly in layers:
        if any("memory" in p for p in ly.problems) or not any(ly.kernel_memory <= km and ly.neuron_memory <= nm
                                                              for km, nm in CORES):
            most = _largest_fitting_width(ly)
            hint = (f"model.hidden: [{int(most / model.spec.width)}] at width {model.spec.width:g} gives {most}"
                    if ly.kernel == ly.in_size and ly.name.startswith("classifier") else
                    "fewer channels (model.width)")
            fixes.append(f"{ly.name}: at most {most} output channels fit with its input ({ly.c_in} channels, kernel "
                         f"{ly.kernel[0]}x{ly.kernel[1]}; it has {ly.c_out}): {hint}; fewer input channels or more "
                         "pooling before it leave room for more")
    return fixes


def check_dynapcnn(model: nn.Module) -> DynapcnnReport:
    """Check ``model`` (a spikeforge SNN) against the DYNAP-CNN / Speck layer constraints (module docstring)."""
    if not getattr(model, "spiking", False):
        raise ConfigError("the DYNAP-CNN check takes an SNN (a convert/snn/iir stage), not an ANN twin")
    ops = trace_model(model, normalize=False)
    layers, problems = _group(ops, int(model.timesteps) == 1)
    size = ops[0].shape
    if model.snn.encoding == "direct":
        problems.insert(0, "input: direct encoding feeds analog pixel values; the chip's inputs are events (spikes)")
    if max(size[1:]) > MAX_INPUT:
        problems.append(f"input: {size[1]}x{size[2]} is larger than the chip's {MAX_INPUT}x{MAX_INPUT}")
    for ly in layers:
        _validate(ly)
        problems += ly.problems
    if len(layers) > len(CORES):
        problems.append(f"{len(layers)} chip layers > {len(CORES)} cores")
    cores = _assign(layers)
    if cores is None and not any("memory" in p for p in problems):
        problems.append("no assignment of layers to cores satisfies every core's kernel and neuron memory")
    fits = not problems and cores is not None
    return DynapcnnReport(fits, layers, cores, problems, _fixes(model, layers, problems))
