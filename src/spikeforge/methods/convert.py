"""ANN -> SNN conversion: BatchNorm folding and layer-wise threshold balancing.

BatchNorm folding (Rueckauer et al. 2017): every BN is absorbed into the conv before it.

Threshold balancing (Sengupta et al. 2019, Algorithm 1; the percentile rule of Rueckauer et al. 2017): layers are
processed in order. For neuron layer ``l`` the partly converted SNN (thresholds of layers ``< l`` already set, every
leak 1.0) is simulated for ``timesteps`` steps on one calibration batch; at every step a statistic of the *input
current* of layer ``l`` (``W_l * s_{l-1}[t]``) is taken -- the maximum (Sengupta et al. 2019; Rathi et al. 2020,
hybrid conversion) or the ``q``-th percentile (Rathi & Roy 2020, DIET-SNN: 99.7; Chowdhury et al. 2021, IIR-SNN:
90), ``k = 1 + round(q/100 * (n-1))``-th smallest of the ``n`` values -- and the largest value over the steps
becomes ``V_th,l`` (0 becomes 0.1). Finally every threshold is multiplied by ``scaling``. Residual-block neurons are
balanced too.

With per-channel thresholds (``snn.per_channel``: one statistic per channel) each channel fires at its own rate
scale, so the layers reading it get their weights rescaled per input channel and their biases per output channel
(:func:`_compensate`); the same rule makes residual sums exact (an identity shortcut's spikes and the main path's
current are brought to one scale). Either way every neuron's input current is the ANN's pre-activation divided by
one known scale, which is what makes the rate code track the ANN as ``T`` grows (Rueckauer et al. 2017).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from tqdm.auto import tqdm

from spikeforge.errors import ConversionError
from spikeforge.models import ModelSpec, SNNConfig, TwinNet, build_model
from spikeforge.utils import bars_disabled

_ALLOWED_ACT = (nn.ReLU,)
_BAD_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.LPPool2d, nn.FractionalMaxPool2d,
)
_ACTIVATION_FUNCS = {
    "relu", "relu_", "relu6", "gelu", "sigmoid", "sigmoid_", "tanh", "tanh_", "silu", "elu", "selu", "celu",
    "leaky_relu", "leaky_relu_", "hardtanh", "hardtanh_", "softplus", "mish", "hardswish", "hardsigmoid", "prelu",
    "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool2d", "max_pool2d_with_indices", "threshold",
    "softsign", "logsigmoid", "clamp", "clip", "maximum",
}


class _CallRecorder(TorchFunctionMode):
    """Record activation/max-pool function calls and the module that was running when they happened."""

    def __init__(self, stack):
        super().__init__()
        self.stack = stack
        self.bad: list[tuple[str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in _ACTIVATION_FUNCS:
            owner_name, owner = self.stack[-1] if self.stack else ("<model>", None)
            if not isinstance(owner, _ALLOWED_ACT):
                self.bad.append((owner_name or "<model>", name))
        return func(*args, **(kwargs or {}))


def check_convertible(model: nn.Module, example: torch.Tensor) -> None:
    """Refuse what rate conversion cannot reproduce: max pooling, non-ReLU activations, and activations applied as
    functions (``F.relu`` in ``forward``), which the converter cannot see or replace.

    Runs one forward pass on ``example`` while recording function calls. Raises :class:`ConversionError` naming the
    first offending layer and what to change.
    """
    for name, m in model.named_modules():
        if isinstance(m, _BAD_MODULES):
            raise ConversionError(
                f"layer {name!r} is {type(m).__name__}: max pooling has no rate-coded equivalent; "
                "use nn.AvgPool2d (average pooling) and retrain the ANN")
        mod = type(m).__module__
        if mod == "torch.nn.modules.activation" and not isinstance(m, _ALLOWED_ACT):
            raise ConversionError(
                f"layer {name!r} is {type(m).__name__}: only ReLU activations convert to IF/LIF neurons; "
                "replace it with nn.ReLU and retrain the ANN")
    stack: list[tuple[str, nn.Module]] = []
    handles = []

    def enter(mod, inp, name):
        stack.append((name, mod))

    def leave(mod, inp, out):
        stack.pop()

    for name, m in model.named_modules():
        handles.append(m.register_forward_pre_hook(lambda mod, inp, n=name: enter(mod, inp, n)))
        handles.append(m.register_forward_hook(leave))
    recorder = _CallRecorder(stack)
    try:
        with torch.no_grad(), recorder:
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()
    if recorder.bad:
        where, func = recorder.bad[0]
        raise ConversionError(
            f"{func!r} is called as a function inside {where!r}; the converter can only replace nn.ReLU modules. "
            "Use an nn.ReLU (or nn.AvgPool2d) module for it and retrain the ANN")


def fold_batchnorm(ann: TwinNet) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """Fold every BatchNorm into the conv before it (Rueckauer et al. 2017):
    ``w' = w * g / sqrt(var + eps)``, ``b' = (b - mean) * g / sqrt(var + eps) + beta``.

    Returns the spec of the folded network (BN slots become identities, convs get biases) and its state dict.
    """
    spec = copy.deepcopy(ann.spec)
    state = {k: v.detach().clone() for k, v in ann.state_dict().items()}
    if not spec.batch_norm:
        return spec, state
    spec.bn_folded = True
    last_conv: tuple[str, nn.Conv2d] | None = None
    for name, m in ann.named_modules():
        if isinstance(m, nn.Conv2d):
            last_conv = (name, m)
        elif isinstance(m, nn.BatchNorm2d):
            if last_conv is None or last_conv[1].out_channels != m.num_features:
                raise ConversionError(f"BatchNorm {name!r} does not follow a conv with {m.num_features} channels")
            cname, conv = last_conv
            scale = m.weight.detach() / torch.sqrt(m.running_var + m.eps)
            bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(m.running_mean)
            state[f"{cname}.weight"] = conv.weight.detach() * scale.view(-1, 1, 1, 1)
            state[f"{cname}.bias"] = (bias - m.running_mean) * scale + m.bias.detach()
            for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                state.pop(f"{name}.{key}", None)
            last_conv = None
    return spec, state


def ann_to_snn(ann: TwinNet, snn_config: SNNConfig, example: torch.Tensor | None = None) -> TwinNet:
    """Build the SNN twin of ``ann`` (BN folded) with ANN weights copied; thresholds are still the defaults."""
    if ann.spec.bntt:
        raise ConversionError(f"{ann.spec.arch} uses batch norm through time, which has no ANN counterpart to "
                              "convert from; train it from scratch with a 'bntt' stage")
    if example is not None:
        check_convertible(ann, example)
    spec, state = fold_batchnorm(ann)
    snn = build_model(spec, snn_config)
    missing, unexpected = snn.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith((".threshold", ".leak"))]
    if missing or unexpected:
        raise ConversionError(f"ANN and SNN twins do not line up: missing {missing}, unexpected {unexpected}")
    return snn


class _Stop(Exception):
    pass


@dataclass
class _Wire:
    """One conv/linear layer in the converted SNN: the neuron layer whose spikes it reads (``src``, None: the encoded
    input) and the neuron layer its current drives (``dst``, None: the readout)."""

    layer: nn.Module
    src: int | None
    dst: int | None
    weight: torch.Tensor
    bias: torch.Tensor | None


def _wiring(snn: TwinNet) -> tuple[list[_Wire], list[int | None], list[int | None]]:
    """The SNN's wires, plus for each neuron layer its main-path source and its identity-shortcut source (a residual
    block without a shortcut conv adds its input spikes straight into its second neuron's membrane; -1: none).
    Forward order is module order, except that a residual block's shortcut reads the block's input."""
    neurons = snn.neurons()
    index = {id(n): i for i, n in enumerate(neurons)}
    wires: list[_Wire] = []
    feeding: list[int | None] = []
    identity: list[int | None] = [-1] * len(neurons)
    shortcut_of: dict[int, int | None] = {}
    last: int | None = None
    pending: list[_Wire] = []
    for m in snn.modules():
        if hasattr(m, "shortcut") and hasattr(m, "act2"):
            for mm in m.shortcut.modules():
                shortcut_of[id(mm)] = last
            if not any(isinstance(mm, (nn.Conv2d, nn.Linear)) for mm in m.shortcut.modules()):
                identity[index[id(m.act2)]] = last
        if id(m) in index:
            feeding.append(last)
            last = index[id(m)]
            for w in pending:
                w.dst = last
            pending = []
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            src = shortcut_of.get(id(m), last)
            bias = None if m.bias is None else m.bias.detach().clone()
            pending.append(_Wire(m, src, None, m.weight.detach().clone(), bias))
            wires.append(pending[-1])
    return wires, feeding, identity


Scale = float | torch.Tensor


def _mean(x: Scale) -> float:
    return float(x.mean()) if isinstance(x, torch.Tensor) else x


def _input_scales(lam: list[Scale | None], feeding, identity) -> list[Scale | None]:
    """``mu_l``: the scale of neuron layer ``l``'s input current (current = ANN pre-activation / ``mu_l``).

    A layer fed by one path takes the mean rate scale of its source (one number); a residual neuron with an identity
    shortcut must take the shortcut's own scale (per channel), because the added spikes cannot be rescaled."""
    mu: list[Scale | None] = []
    for src, ident in zip(feeding, identity):
        if ident != -1:
            mu.append(1.0 if ident is None else lam[ident])
        else:
            mu.append(1.0 if src is None else (None if lam[src] is None else _mean(lam[src])))
    return mu


def _channel_ratio(w: torch.Tensor, lam_src: Scale, mu_dst: Scale) -> Scale:
    """``Lambda_src[c] / mu_dst[o]`` broadcast to the weight ``w`` ``[O, C(*HW), ...]`` (a linear layer after a
    flatten reads ``H*W`` features per channel)."""
    if not isinstance(lam_src, torch.Tensor) and not isinstance(mu_dst, torch.Tensor):
        return lam_src / mu_dst
    src = lam_src if isinstance(lam_src, torch.Tensor) else torch.tensor(lam_src, dtype=torch.float64)
    if src.dim() == 1 and src.numel() != w.shape[1]:
        src = src.repeat_interleave(w.shape[1] // src.numel())
    dst = mu_dst if isinstance(mu_dst, torch.Tensor) else torch.tensor(mu_dst, dtype=torch.float64)
    ratio = src.reshape(1, -1) if src.dim() else src.reshape(1, 1)
    ratio = ratio / (dst.reshape(-1, 1) if dst.dim() else dst)
    return ratio.reshape(*ratio.shape, *([1] * (w.dim() - 2)))


def _compensate(wires: list[_Wire], lam: list[Scale | None], mu: list[Scale | None]) -> None:
    """Exact rate conversion with per-layer or per-channel thresholds (Rueckauer et al. 2017, Eq. 6-7, here with
    one scale per channel): neuron channel ``c`` of layer ``l`` fires at ``a_c / Lambda_l[c]`` with
    ``Lambda_l[c] = mu_l[c] * V_th,l[c]``, so a layer reading it gets ``w'[o, c] = w[o, c] Lambda_src[c] / mu_dst[o]``
    and ``b'[o] = b[o] / mu_dst[o]``: its current is the ANN's pre-activation divided by ``mu_dst``. With per-layer
    thresholds and one path the ratio is exactly 1 (threshold balancing's unchanged weights). Wires whose scales
    are not known yet keep the ANN's values."""
    for w in wires:
        lam_src = 1.0 if w.src is None else lam[w.src]
        mu_dst = (None if lam_src is None else _mean(lam_src)) if w.dst is None else mu[w.dst]
        if lam_src is None or mu_dst is None:
            w.layer.weight.copy_(w.weight)
            if w.bias is not None:
                w.layer.bias.copy_(w.bias)
            continue
        ratio = _channel_ratio(w.weight, lam_src, mu_dst)
        if isinstance(ratio, torch.Tensor):
            w.layer.weight.copy_((w.weight.double() * ratio).to(w.weight.dtype))
        else:
            w.layer.weight.copy_(w.weight if ratio == 1.0 else w.weight * ratio)
        if w.bias is not None:
            mu_b = mu_dst.reshape(-1) if isinstance(mu_dst, torch.Tensor) else mu_dst
            w.layer.bias.copy_(w.bias / mu_b if not isinstance(mu_b, torch.Tensor) else (w.bias.double() / mu_b).to(w.bias.dtype))


def _rate_scale(mu: Scale, threshold: torch.Tensor) -> Scale:
    """``Lambda_l = mu_l * V_th,l``: one number for a per-layer threshold on a one-number input scale, else per
    channel (float64)."""
    th = threshold.detach()
    if th.dim() == 0 and not isinstance(mu, torch.Tensor):
        return mu * float(th)
    return torch.as_tensor(mu, dtype=torch.float64) * th.double().reshape(-1)


def percentile_value(x: torch.Tensor, q: float, dim: int | None = None) -> torch.Tensor:
    """``q``-th percentile as the ``k``-th smallest value, ``k = 1 + round(q/100 * (n-1))`` (q = 100: the max)."""
    if dim is None:
        x, dim = x.reshape(-1), 0
    n = x.shape[dim]
    if q >= 100.0:
        return x.amax(dim)
    k = 1 + int(round(q / 100.0 * (n - 1)))
    return x.float().kthvalue(k, dim).values


def _input_statistic(cur: torch.Tensor, per_channel: bool, percentile: float) -> torch.Tensor:
    """Largest over the steps of the per-step ``percentile`` of the input current ``cur`` ``[T, B, C, ...]`` (one
    value per channel with ``per_channel``)."""
    best: torch.Tensor | None = None
    for t in range(cur.shape[0]):
        step = cur[t]
        if per_channel:
            v = percentile_value(step.transpose(0, 1).reshape(step.shape[1], -1), percentile, dim=1)
        else:
            v = percentile_value(step, percentile)
        best = v if best is None else torch.maximum(best, v)
    return best


def _layer_threshold(snn: TwinNet, x: torch.Tensor, layer: nn.Module, timesteps: int, chunk: int,
                     percentile: float) -> torch.Tensor:
    """Simulate ``snn`` on normalized images ``x`` for ``timesteps`` steps (in chunks, carrying the state) up to
    ``layer`` and return its balanced threshold: the statistic of its input current (0 becomes 0.1)."""
    found: list[torch.Tensor] = []

    def hook(module, inputs):
        found.append(_input_statistic(inputs[0], layer.threshold.dim() == 1, percentile))
        raise _Stop

    handle = layer.register_forward_pre_hook(hook)
    try:
        with snn.streaming():
            for start in range(0, timesteps, chunk):
                steps = min(chunk, timesteps - start)
                try:
                    snn.run_time_first(snn.encode(x, steps), steps)
                except _Stop:
                    pass
    finally:
        handle.remove()
    best = functools.reduce(torch.maximum, found)
    return torch.where(best > 0, best, torch.full_like(best, 0.1))


def _scales(neurons: list[nn.Module], feeding, identity, upto: int) -> tuple[list, list]:
    """Rate scales ``Lambda`` of neuron layers ``< upto`` and input scales ``mu`` of layers ``<= upto`` (None where not
    known yet), from the thresholds currently set."""
    lam: list[Scale | None] = [None] * len(neurons)
    for i in range(min(upto, len(neurons))):
        mu_i = _input_scales(lam, feeding, identity)[i]
        lam[i] = _rate_scale(mu_i, neurons[i].threshold)
    return lam, _input_scales(lam, feeding, identity)


@torch.no_grad()
def balance_thresholds(
    snn: TwinNet,
    calib: torch.Tensor,
    *,
    timesteps: int = 100,
    percentile: float = 100.0,
    scaling: float = 1.0,
    chunk: int = 16,
    progress: bool = True,
    rescale_bias: bool = True,
) -> list[float]:
    """Set every neuron layer's threshold by layer-wise balancing (Sengupta et al. 2019) on the calibration images
    ``calib`` (in [0, 1]), simulating ``timesteps`` steps in chunks of ``chunk``; the model's own ``timesteps`` is
    left alone.

    Returns the thresholds (layer means). Leaks are held at 1.0 during the search and restored afterwards.
    With ``rescale_bias`` (for a network fresh from :func:`ann_to_snn`), weights and biases are taken as the ANN's
    and compensated for the rate scale of their input (:func:`_compensate`: biases divided by ``Lambda``; with
    per-channel thresholds or residual paths, weights rescaled per input channel too), so every neuron's current
    stays proportional to the ANN's pre-activation (e.g. BatchNorm folded into the convs) -- with per-layer and
    per-channel thresholds alike; pass False for a network whose weights and biases were already trained as an SNN.
    """
    if not snn.spiking:
        raise ConversionError("balance_thresholds needs an SNN twin (create_model(..., spiking=True))")
    if not 0 < percentile <= 100:
        raise ConversionError(f"percentile must be in (0, 100], got {percentile}")
    was_training = snn.training
    snn.eval()
    neurons = snn.neurons()
    old_leaks = [n.leak.detach().clone() for n in neurons]
    for n in neurons:
        n.leak.fill_(1.0)
    x = snn.normalize(calib)
    wires, feeding, identity = _wiring(snn)
    bar = tqdm(neurons, desc="threshold balancing", disable=bars_disabled(progress), leave=False)
    try:
        for li, layer in enumerate(bar):
            if rescale_bias:
                _compensate(wires, *_scales(neurons, feeding, identity, li))
            value = _layer_threshold(snn, x, layer, timesteps, chunk, percentile)
            layer.threshold.copy_(value.to(layer.threshold.dtype).view_as(layer.threshold))
            bar.set_postfix(threshold=f"{float(value.mean()):.4g}")
        for layer in neurons:
            layer.threshold.mul_(scaling)
        if rescale_bias:
            _compensate(wires, *_scales(neurons, feeding, identity, len(neurons)))
    finally:
        for n, lk in zip(neurons, old_leaks):
            n.leak.copy_(lk)
        snn.train(was_training)
    return snn.thresholds()
