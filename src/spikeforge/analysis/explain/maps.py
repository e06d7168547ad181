"""Visual explanations of spiking (and twin ANN) classifiers: SAM (Kim & Panda, Sci. Rep.
2021) and Grad-CAM (Selvaraju et al., ICCV 2017).

Two explainers with the interface of ``pytorch-grad-cam`` (``Explainer(model, target_layers=[...])(input)``, usable
as a context manager), returning maps **per timestep** ``[T, B, H, W]`` on the input's pixel grid plus their
reduction over time in ``.summed`` ``[B, H, W]``:

* :class:`SAM` -- Spike Activation Map (Kim & Panda, Sci. Rep. 2021): forward only, no gradient, no class label.
* :class:`GradCAM` -- Grad-CAM on an SNN (gradients accumulated over all timesteps by BPTT through the surrogate,
  the SAM paper's "SNN-crafted Grad-CAM" baseline) or on the ANN twin (``T = 1``; numerically the same as
  ``pytorch_grad_cam.GradCAM`` on the same layer, which the tests check).

**Target layers.** A target is a module name (or the module) of a *spatial* activation: a spiking neuron layer of
the SNN (``features.4``, ``layers.0.act2``) or the ``nn.ReLU`` at the same position of the ANN twin (the twins share
module names). A ``Conv2d`` name stands for the activation that follows it (``features.3`` -> ``features.4``;
in a residual block ``conv1`` -> ``act1`` and ``conv2`` / ``shortcut.0`` -> ``act2``): SAM needs spikes, and the
conv itself runs folded on ``[T*B, ...]`` (and only once under direct encoding), so its output is not a
per-timestep activation. The default target is the middle spatial activation layer (:func:`default_layer`).
Unknown names raise :class:`~spikeforge.errors.ConfigError` listing the valid conv and neuron layer names.

**Event input.** On a model reading binned event frames ``[B, T, C, H, W]`` (model input ``events``) both
explainers work unchanged: frame ``t`` drives step ``t``, and the maps lie on the sensor's pixel grid. (The FGSM
helper :func:`fgsm` refuses event input: the attacks perturb images in [0, 1].)

**Post-processing** (both methods, as in ``pytorch-grad-cam``): each raw map at layer resolution is min-max
normalized, ``(m - min) / (max - min + eps)``, upsampled bilinearly (``align_corners=False``) to the input size,
averaged over the target layers and min-max normalized again. ``normalize="step"`` normalizes every timestep on its
own (as the SAM reference code does), ``"sequence"`` over all timesteps of a sample together (keeps the growth of
the map over time visible), ``"none"`` skips normalization (raw values, still upsampled and averaged over layers).
``.summed`` is always min-max normalized per sample (unless ``"none"``). The raw maps at layer resolution are kept
in ``.raw[layer]`` (``[T, B, h, w]``) and ``.raw_summed[layer]`` (``[B, h, w]``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spikeforge.analysis.attacks.fgsm import FGSM
from spikeforge.analysis.common import eval_mode, is_spiking
from spikeforge.errors import ConfigError
from spikeforge.neuron import SpikingNeuron

VARIANTS = ("paper", "reference")
NORMALIZE = ("step", "sequence", "none")
ACTIVATIONS = (SpikingNeuron, nn.ReLU)


# ---------------------------------------------------------------------------------------------------------------
# Target layers


def _activation_layers(model: nn.Module) -> tuple[list[str], dict[str, str]]:
    """Spatial activation layers in forward order and the conv -> following-activation map.

    Walks ``named_modules`` (definition order): an activation (``SpikingNeuron`` / ``nn.ReLU``) is *spatial* if the
    weight layer last seen before it is a ``Conv2d`` (classifier neurons follow a ``Linear`` and are left out); a
    conv maps to the first activation defined after it.
    """
    acts: list[str] = []
    conv_to_act: dict[str, str] = {}
    pending: list[str] = []
    last_weight: type | None = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            last_weight = nn.Conv2d
            pending.append(name)
        elif isinstance(m, nn.Linear):
            last_weight = nn.Linear
            pending.clear()
        elif isinstance(m, ACTIVATIONS):
            if last_weight is nn.Conv2d:
                acts.append(name)
                for conv in pending:
                    conv_to_act[conv] = name
            pending.clear()
    return acts, conv_to_act


def layer_names(model: nn.Module) -> dict[str, list[str]]:
    """Valid target names: ``{"conv": [...], "neuron": [...]}`` (``neuron`` holds ReLUs in an ANN twin)."""
    acts, conv_to_act = _activation_layers(model)
    return {"conv": list(conv_to_act), "neuron": acts}


def default_layer(model: nn.Module) -> str:
    """The middle spatial activation layer (index ``n // 2`` of ``n``): e.g. ``features.4`` (the second of two
    conv layers) in vgg4, the 5th conv's neuron in vgg11."""
    acts, _ = _activation_layers(model)
    if not acts:
        raise ConfigError(f"{type(model).__name__} has no convolution followed by a spiking neuron or ReLU; "
                          "SAM and Grad-CAM need a spatial activation layer")
    return acts[len(acts) // 2]


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> str:
    """Name of the activation module a target (name or module; conv or activation) stands for."""
    acts, conv_to_act = _activation_layers(model)
    if isinstance(layer, nn.Module):
        found = [n for n, m in model.named_modules() if m is layer]
        if not found:
            raise ConfigError(f"the target module {type(layer).__name__} is not part of the model")
        layer = found[0]
    if not isinstance(layer, str):
        raise ConfigError(f"a target layer is a module name or a module, got {type(layer).__name__}")
    if layer in acts:
        return layer
    if layer in conv_to_act:
        return conv_to_act[layer]
    kind = "neuron" if getattr(model, "spiking", True) else "ReLU"
    raise ConfigError(f"unknown target layer {layer!r}; valid conv layers: {', '.join(conv_to_act) or '-'}; "
                      f"{kind} layers: {', '.join(acts) or '-'}")


def _resolve_targets(model: nn.Module, target_layers) -> list[str]:
    if target_layers is None:
        return [default_layer(model)]
    if isinstance(target_layers, (str, nn.Module)):
        target_layers = [target_layers]
    names = [resolve_layer(model, t) for t in target_layers]
    if not names:
        raise ConfigError("target_layers is empty; pass at least one layer name (or None for the default)")
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------------------------------
# Neuronal contribution score (SAM)


def decay_matrix(steps: int, gamma: float, *, include_current: bool, device=None,
                 dtype=torch.float32) -> torch.Tensor:
    """``K[t, p] = exp(-gamma * (t - p))`` for ``p < t`` (``p <= t`` with ``include_current``), else 0."""
    t = torch.arange(steps, device=device, dtype=torch.float64)
    diff = t[:, None] - t[None, :]
    keep = diff >= 0 if include_current else diff > 0
    return (torch.exp(-gamma * diff) * keep).to(dtype)


def neuronal_contribution(spikes: torch.Tensor, gamma: float = 0.5, variant: str = "paper") -> torch.Tensor:
    """Neuronal Contribution Score ``NCS[t]`` of every neuron from its spike train ``spikes`` ``[T, ...]`` (0/1).

    ``variant="paper"`` (Kim & Panda's definition; strict past)::

        NCS[t] = sum_{p < t, s[p] = 1} exp(-gamma * (t - p))
               = exp(-gamma) * (NCS[t-1] + s[t-1]),   NCS[0] = 0

    so a neuron spiking at every step has ``NCS[t] = sum_{k=1..t} exp(-gamma k) -> exp(-gamma) / (1 - exp(-gamma))``
    (1.5415 for gamma = 0.5), and one that spikes only at ``t`` has ``NCS[t] = 0``.

    ``variant="reference"`` (the official SAM code, time indexed from 0): every step ``p <= t`` contributes
    ``exp(-gamma * (t - p * s[p]))``, i.e. a past (or current) spike at ``p`` gives ``exp(-gamma (t - p))`` and a
    step *without* a spike gives ``exp(-gamma t)`` (as if it had spiked at time 0)::

        NCS_ref[t] = sum_{p <= t, s[p] = 1} exp(-gamma (t - p)) + (t + 1 - sum_{p <= t} s[p]) * exp(-gamma t)

    so the current spike counts 1 and a neuron spiking only at ``t`` gets ``1 + t * exp(-gamma t)``.

    Computed for all ``t`` at once as a ``[T, T]`` decay matrix times the spike trains (no Python loop over
    neurons or steps).
    """
    if variant not in VARIANTS:
        raise ConfigError(f"SAM variant must be one of {VARIANTS}, got {variant!r}")
    if not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma < 0:
        raise ConfigError(f"SAM gamma must be a finite number >= 0, got {gamma!r}")
    steps = spikes.shape[0]
    s = spikes.reshape(steps, -1).to(torch.float32)
    kern = decay_matrix(steps, float(gamma), include_current=variant == "reference", device=s.device)
    ncs = kern @ s
    if variant == "reference":
        t = torch.arange(steps, device=s.device, dtype=torch.float32)
        silent = (t + 1)[:, None] - torch.cumsum(s, 0)
        ncs = ncs + torch.exp(-float(gamma) * t)[:, None] * silent
    return ncs.reshape(spikes.shape).to(spikes.dtype if spikes.is_floating_point() else torch.float32)


def sam_maps(spikes: torch.Tensor, gamma: float = 0.5, variant: str = "paper") -> torch.Tensor:
    """Raw SAM of one layer: ``SAM[t, b, i, j] = sum_k NCS_k,ij[t] * s_k,ij[t]`` for spikes ``[T, B, C, H, W]``."""
    if spikes.dim() != 5:
        raise ConfigError(f"SAM needs spikes [T, B, C, H, W] of a convolutional layer; got shape {tuple(spikes.shape)}")
    ncs = neuronal_contribution(spikes, gamma, variant)
    return (ncs * spikes).sum(2)


# ---------------------------------------------------------------------------------------------------------------
# Normalization, upsampling, comparison


def minmax(x: torch.Tensor, dims: Sequence[int], eps: float = 1e-7) -> torch.Tensor:
    """``(x - min) / (max - min + eps)`` with min and max taken over ``dims``."""
    lo = x.amin(dim=tuple(dims), keepdim=True)
    y = x - lo
    return y / (y.amax(dim=tuple(dims), keepdim=True) + eps)


def _post(maps: list[torch.Tensor], size: tuple[int, int], mode: str, eps: float) -> torch.Tensor:
    """Per-layer normalize -> upsample -> mean over layers -> normalize. ``maps``: list of ``[T, B, h, w]``."""
    if mode not in NORMALIZE:
        raise ConfigError(f"normalize must be one of {NORMALIZE}, got {mode!r}")
    dims = (2, 3) if mode == "step" else (0, 2, 3)
    out = []
    for m in maps:
        if mode != "none":
            m = minmax(m, dims, eps)
        steps, batch = m.shape[:2]
        up = F.interpolate(m.reshape(steps * batch, 1, *m.shape[2:]), size=size, mode="bilinear",
                           align_corners=False)
        out.append(up.reshape(steps, batch, *size))
    res = torch.stack(out).mean(0)
    return res if mode == "none" else minmax(res, dims, eps)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per sample of two map batches ``[B, ...]``; NaN where a map is constant."""
    a = a.reshape(a.shape[0], -1).double()
    b = b.reshape(b.shape[0], -1).double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = (a.square().sum(1) * b.square().sum(1)).sqrt()
    r = (a * b).sum(1) / den
    return torch.where(den > 0, r, torch.full_like(r, float("nan"))).float()


def fgsm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """One-step FGSM (Goodfellow et al., ICLR 2015): ``clip(x + eps * sign(d CE(model(x), y) / dx), 0, 1)``, crafted
    in eval mode by :class:`~spikeforge.analysis.attacks.FGSM`.

    On an SNN the gradient is taken by BPTT through the surrogate (and straight through a Poisson encoder), i.e. an
    SNN-crafted white-box attack, whose effect on SAM the SAM paper studies (Kim & Panda, Sci. Rep. 2021).
    """
    return FGSM(model, eps=eps)(images, labels)


# ---------------------------------------------------------------------------------------------------------------
# Explainers


class _Explainer:
    """Hook bookkeeping shared by SAM and Grad-CAM. Hooks live only for the duration of one call."""

    def __init__(self, model: nn.Module, target_layers=None, normalize: str = "step", eps: float = 1e-7):
        if normalize not in NORMALIZE:
            raise ConfigError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
        self.model = model
        self.layers = _resolve_targets(model, target_layers)
        self.modules = dict(model.named_modules())
        self.normalize = normalize
        self.eps = float(eps)
        self._handles: list = []
        self.activations: dict[str, torch.Tensor] = {}
        self.raw: dict[str, torch.Tensor] = {}
        self.raw_summed: dict[str, torch.Tensor] = {}
        self.summed: torch.Tensor | None = None
        self.outputs: torch.Tensor | None = None

    # hooks
    def _attach(self, detach: bool) -> None:
        self.release()
        self._records: dict[str, list[torch.Tensor]] = {n: [] for n in self.layers}
        for name in self.layers:
            module = self.modules[name]
            timed = isinstance(module, SpikingNeuron)

            def hook(mod, inputs, output, name=name, timed=timed):
                rec = self._records[name]
                if rec and not timed:
                    raise ConfigError(f"layer {name!r} runs more than once per forward pass; pick another layer")
                rec.append(output.detach() if detach else output)

            self._handles.append(module.register_forward_hook(hook))

    def release(self) -> None:
        """Remove the forward hooks (done after every call anyway)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def _collect(self) -> dict[str, list[torch.Tensor]]:
        """The recorded outputs per layer (several for a neuron layer run in time chunks)."""
        recs, self._records = self._records, {}
        for name, rec in recs.items():
            if not rec:
                raise ConfigError(f"layer {name!r} did not run during the forward pass")
        return recs

    def _timed(self, name: str, out: torch.Tensor) -> torch.Tensor:
        """A layer output as ``[T, B, ...]`` (the ANN twin's ``[B, ...]`` becomes ``T = 1``)."""
        return out if isinstance(self.modules[name], SpikingNeuron) else out.unsqueeze(0)

    def _finish(self, raw: dict[str, torch.Tensor], raw_summed: dict[str, torch.Tensor],
                size: tuple[int, int]) -> torch.Tensor:
        self.raw, self.raw_summed = raw, raw_summed
        maps = _post([raw[n] for n in self.layers], size, self.normalize, self.eps)
        summed_mode = "none" if self.normalize == "none" else "step"
        self.summed = _post([raw_summed[n].unsqueeze(0) for n in self.layers], size, summed_mode, self.eps)[0]
        return maps

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.release()
        return False

    def __del__(self):
        try:
            self.release()
        except Exception:
            pass


class SAM(_Explainer):
    """Spike Activation Map (Kim & Panda, "Visual explanations from spiking neural networks using inter-spike
    intervals", Sci. Rep. 2021): a forward-only, label-free heatmap per timestep.

    For the target layer's spikes ``s_k,ij[t]`` (neuron ``k`` = channel, at location ``(i, j)``), the Neuronal
    Contribution Score weighs each earlier spike by how recent it is (short inter-spike intervals count more)::

        NCS_k,ij[t] = sum_{t_p in P_k,ij(t)} exp(-gamma * (t - t_p))          P = earlier spike times, t_p < t
        SAM_ij[t]   = sum_k NCS_k,ij[t] * s_k,ij[t]

    ``variant="paper"`` (default) is this definition (strict past: the current spike itself does not count, so the
    map at the first timestep is empty). ``variant="reference"`` reproduces the official code, where every step
    ``p <= t`` adds ``exp(-gamma * (t - p * s[p]))``: the current spike adds 1 and each silent step adds the
    baseline ``exp(-gamma * t)`` (see :func:`neuronal_contribution` for both formulas). ``gamma`` = 0.5 (the code's
    default). The map is then normalized and upsampled onto the image (module docstring); ``.summed`` holds the
    normalized ``sum_t SAM[t]``.

    Usage (like ``pytorch-grad-cam``)::

        with SAM(snn, target_layers=["features.4"]) as sam:
            maps = sam(images)          # [T, B, H, W] in [0, 1]
            total = sam.summed          # [B, H, W]

    Runs the model under ``torch.no_grad()`` in eval mode (restored afterwards); long ``T`` evaluated in time chunks
    is stitched back together. After a call: ``.outputs`` (logits), ``.spikes[layer]`` ``[T, B, C, h, w]``,
    ``.raw[layer]`` ``[T, B, h, w]``. A conv target stands for the neuron layer that follows it.
    """

    def __init__(self, model: nn.Module, target_layers=None, gamma: float = 0.5, variant: str = "paper",
                 normalize: str = "step", eps: float = 1e-7):
        if not is_spiking(model):
            raise ConfigError("SAM needs a spiking network (an SNN checkpoint or create_model(..., spiking=True)); "
                              "for an ANN use GradCAM")
        super().__init__(model, target_layers, normalize, eps)
        for name in self.layers:
            if not isinstance(self.modules[name], SpikingNeuron):
                raise ConfigError(f"SAM target {name!r} is not a spiking neuron layer")
        if variant not in VARIANTS:
            raise ConfigError(f"SAM variant must be one of {VARIANTS}, got {variant!r}")
        if not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma < 0:
            raise ConfigError(f"SAM gamma must be a finite number >= 0, got {gamma!r}")
        self.gamma = float(gamma)
        self.variant = variant
        self.spikes: dict[str, torch.Tensor] = {}

    def __call__(self, input_tensor: torch.Tensor, targets=None) -> torch.Tensor:
        if targets is not None:
            raise ConfigError("SAM is label-free: call it without targets")
        self._attach(detach=True)
        try:
            with eval_mode(self.model), torch.no_grad():
                self.outputs = self.model(input_tensor)
            self.spikes = {n: torch.cat(rec, 0) for n, rec in self._collect().items()}  # chunks of long T
        finally:
            self.release()
        raw = {n: sam_maps(s, self.gamma, self.variant) for n, s in self.spikes.items()}
        return self._finish(raw, {n: r.sum(0) for n, r in raw.items()}, tuple(input_tensor.shape[-2:]))


class GradCAM(_Explainer):
    """Grad-CAM (Selvaraju et al., "Grad-CAM: visual explanations from deep networks via gradient-based
    localization", ICCV 2017) on an SNN or its ANN twin, per timestep.

    With ``A^k_ij[t]`` the target layer's output (spikes of an SNN neuron layer; the ReLU output of the ANN twin,
    ``T = 1``) and ``y^c`` the logit of class ``c`` (the SNN readout accumulated over time)::

        alpha_k    = (1 / N) sum_{i,j} sum_t d y^c / d A^k_ij[t]        (gradients summed over T by BPTT)
        G_ij[t]    = ReLU(sum_k alpha_k A^k_ij[t])                       per-timestep map
        G_ij(sum)  = ReLU(sum_k alpha_k sum_t A^k_ij[t])                 ``.summed``: activations summed over T

    (the SAM paper's "SNN-crafted Grad-CAM" baseline). For an ANN this is exactly ``pytorch_grad_cam.GradCAM`` on the
    same layer (same normalization, bilinear upsampling, multi-layer mean).

    ``targets``: ``None`` (the predicted class, as pytorch-grad-cam), class indices (ints, a list or a tensor
    ``[B]``) or callables applied to each sample's logits (e.g. ``pytorch_grad_cam``'s ``ClassifierOutputTarget``).
    Gradients are taken with ``torch.autograd.grad`` w.r.t. the activations only (no ``.grad`` of parameters is
    touched); the model runs in eval mode (restored afterwards). After a call: ``.outputs``, ``.weights[layer]``
    (``alpha``, ``[B, C]``), ``.activations[layer]`` ``[T, B, C, h, w]``, ``.raw[layer]`` ``[T, B, h, w]`` (after
    the ReLU, before normalization).
    """

    def __init__(self, model: nn.Module, target_layers=None, normalize: str = "step", eps: float = 1e-7):
        super().__init__(model, target_layers, normalize, eps)
        self.weights: dict[str, torch.Tensor] = {}

    def _scores(self, outputs: torch.Tensor, targets) -> tuple[torch.Tensor, list[int] | None]:
        if targets is None:
            targets = outputs.argmax(-1)
        if isinstance(targets, numbers.Integral):
            targets = [int(targets)] * outputs.shape[0]
        if isinstance(targets, torch.Tensor):
            targets = targets.reshape(-1).tolist()
        targets = list(targets)
        if len(targets) != outputs.shape[0]:
            raise ConfigError(f"got {len(targets)} targets for a batch of {outputs.shape[0]} images")
        if all(isinstance(t, numbers.Integral) for t in targets):
            targets = [int(t) for t in targets]
            idx = torch.tensor(targets, device=outputs.device)
            if idx.min() < 0 or idx.max() >= outputs.shape[-1]:
                raise ConfigError(f"target classes must lie in [0, {outputs.shape[-1] - 1}], got {targets}")
            return outputs.gather(1, idx[:, None]).sum(), targets
        if all(callable(t) for t in targets):
            return sum(t(o) for t, o in zip(targets, outputs)), None
        raise ConfigError("targets must be None, class indices or callables on one sample's output")

    def __call__(self, input_tensor: torch.Tensor, targets: int | Sequence[int] | torch.Tensor |
                 Sequence[Callable] | None = None) -> torch.Tensor:
        self._attach(detach=False)
        try:
            with eval_mode(self.model), torch.enable_grad():
                x = input_tensor.detach().clone().requires_grad_(True)  # so the target layer is on the graph
                outputs = self.model(x)
                acts = {n: rec[0] for n, rec in self._collect().items()}  # one call each with gradients on
                score, self.classes = self._scores(outputs, targets)
                grads = torch.autograd.grad(score, [acts[n] for n in self.layers], allow_unused=True)
        finally:
            self.release()
        self.outputs = outputs.detach()
        raw, raw_summed = {}, {}
        for name, g in zip(self.layers, grads):
            if g is None:
                raise ConfigError(f"the class score does not depend on layer {name!r}; pick a layer before the output")
            a, g = self._timed(name, acts[name].detach()), self._timed(name, g.detach())
            if a.dim() != 5:
                raise ConfigError(f"Grad-CAM target {name!r} is not a convolutional layer (output {tuple(a.shape)})")
            alpha = g.sum(0).mean((2, 3))  # [B, C]
            self.weights[name] = alpha
            self.activations[name] = a
            raw[name] = torch.einsum("bc,tbchw->tbhw", alpha, a)
            raw_summed[name] = torch.einsum("bc,bchw->bhw", alpha, a.sum(0))
        return self._finish({n: r.clamp(min=0) for n, r in raw.items()},
                            {n: r.clamp(min=0) for n, r in raw_summed.items()}, tuple(input_tensor.shape[-2:]))
