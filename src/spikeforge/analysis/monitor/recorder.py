"""Recording spikes and membrane potentials per layer and per timestep, within a memory budget.

:class:`SpikeRecorder` hooks the spiking layers of a model (forward hooks; nothing in the model changes) and keeps,
for the chosen layers and the chosen samples of every batch, the spike trains ``s[t]`` (``bool``) and optionally the
membrane potentials ``U[t]`` after each step's reset (``float16`` by default). The membrane is not an output of the
fused neuron, so it is recomputed from the layer's input currents with the neuron's own no-grad step
(LIF: Rathi & Roy 2020, DIET-SNN; ALIF: Bellec et al. 2018), only for the recorded samples.
Chunked (streaming) evaluation is followed: chunks of one pass are joined along time.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.models.base import neuron_types

__all__ = ["SpikeRecorder", "neuron_layers"]


def neuron_layers(model: nn.Module, layers: Sequence[str] | None = None) -> dict[str, nn.Module]:
    """The spiking layers of ``model`` by name in forward order (all, or those named in ``layers``)."""
    types = neuron_types()
    found = {name: m for name, m in model.named_modules() if isinstance(m, types)}
    if layers is None:
        return found
    unknown = [n for n in layers if n not in found]
    if unknown:
        raise ConfigError(f"no spiking layer(s) {unknown} in this model; its spiking layers are {list(found)}")
    return {n: found[n] for n in found if n in set(layers)}


def _take(x, index):
    """Select samples (dim 0) of a neuron state: a tensor or a named tuple of tensors (ALIF)."""
    if x is None or index is None:
        return x
    if isinstance(x, torch.Tensor):
        return x[index]
    return type(x)(*(_take(v, index) if isinstance(v, torch.Tensor) else v for v in x))


def membrane_trace(neuron: nn.Module, currents: torch.Tensor, steps: int | None, state=None) -> torch.Tensor:
    """Membrane ``U[t]`` after each step's reset ``[T, B, ...]`` of ``neuron`` for input ``currents`` ``[T or 1, B,
    ...]``, from ``state`` (None: the zero state), computed step by step without autograd by the neuron's own
    streaming step (so any registered neuron model that supports chunked evaluation is covered)."""
    if not hasattr(neuron, "_stream_run"):
        raise ConfigError(f"membrane recording needs a neuron with a streaming step; {type(neuron).__name__} has none")
    with torch.no_grad():
        x = neuron._over_time(currents, steps)
        th = neuron._per_step(neuron.threshold, x.dim() - 1)
        lk = neuron._per_step(neuron.leak, x.dim() - 1)
        out = []
        for t in range(x.shape[0]):
            _, state = neuron._stream_run(x[t:t + 1], th, lk, state)
            out.append(state if isinstance(state, torch.Tensor) else state[0])  # LIF: u; ALIF: (u, a)
    return torch.stack(out)


class SpikeRecorder:
    """Context manager: record spikes (and membranes) of chosen layers and samples, per timestep::

        with SpikeRecorder(model, layers=["features.1"], samples=[0, 1], membrane=True) as rec:
            model(images)
        rec.spikes["features.1"]     # bool [T, 2, C, H, W]: layer output s[t]
        rec.membrane["features.1"]   # float16 [T, 2, C, H, W]: U[t] after the reset

    ``layers``: names of spiking layers (None: all; see :func:`neuron_layers`). ``samples``: indices within every
    batch (an int ``n``: the first ``n``; None: all). ``spikes``/``membrane``: what to keep. ``membrane_dtype``:
    ``torch.float16`` (default) or ``torch.float32``. ``device``: where records go (``"cpu"``: offloaded; None: stay
    on the model's device). ``max_bytes``: budget for all records; once full, later records are dropped,
    :attr:`truncated` is set and one ``RuntimeWarning`` says so.

    Every forward pass adds one segment per layer (chunks of a streaming pass are joined along time);
    :attr:`spikes` and :attr:`membrane` join the segments along the sample axis (their ``T`` must agree;
    :attr:`segments` has them one by one).
    """

    def __init__(self, model: nn.Module, layers: Sequence[str] | None = None, samples: int | Sequence[int] | None = None,
                 *, spikes: bool = True, membrane: bool = False, membrane_dtype: torch.dtype = torch.float16,
                 device: str | torch.device | None = "cpu", max_bytes: int = 256 * 2**20):
        if not (spikes or membrane):
            raise ConfigError("SpikeRecorder: record spikes, membrane or both")
        self.model = model
        self.layers = neuron_layers(model, layers)
        if not self.layers:
            raise ConfigError("SpikeRecorder: this model has no spiking layers (an ANN twin?)")
        self.samples = samples
        self.keep_spikes, self.keep_membrane = bool(spikes), bool(membrane)
        self.membrane_dtype = membrane_dtype
        self.device = None if device is None else torch.device(device)
        self.max_bytes = int(max_bytes)
        self._handles: list = []
        self.reset()

    def reset(self) -> None:
        """Forget every record."""
        self.segments: dict[str, list[dict[str, torch.Tensor]]] = {n: [] for n in self.layers}
        self.bytes = 0
        self.truncated = False
        self._start_state: dict[str, object] = {}

    # -- hooks -------------------------------------------------------------------------------------------------
    def _index(self, batch: int):
        if self.samples is None:
            return None
        if isinstance(self.samples, int):
            return slice(0, min(self.samples, batch))
        return [i for i in self.samples if 0 <= i < batch]

    def _pre_hook(self, name: str):
        def pre(module, args, kwargs):
            stream = getattr(module, "_stream", None)  # chunked evaluation: the state before this chunk
            self._start_state[name] = stream.get("state") if isinstance(stream, dict) else None
        return pre

    def _hook(self, name: str):
        def post(module, args, kwargs, output):
            self._record(name, module, args[0], kwargs.get("steps", args[1] if len(args) > 1 else None), output)
        return post

    def _fits(self, entry: dict[str, torch.Tensor]) -> bool:
        size = sum(t.numel() * t.element_size() for t in entry.values())
        if self.bytes + size > self.max_bytes:
            if not self.truncated:
                warnings.warn(f"SpikeRecorder: the record budget max_bytes={self.max_bytes} is full; later records "
                              "are dropped (record fewer layers or samples, or raise max_bytes)", RuntimeWarning,
                              stacklevel=4)
            self.truncated = True
            return False
        self.bytes += size
        return True

    def _record(self, name, module, currents, steps, output) -> None:
        if self.truncated:
            return
        index = self._index(output.shape[1])
        state = self._start_state.pop(name, None)
        entry = {}
        if self.keep_spikes:
            s = output.detach()
            entry["spikes"] = (s if index is None else s[:, index]) != 0
        if self.keep_membrane:
            x = currents.detach() if index is None else currents.detach()[:, index]
            u = membrane_trace(module, x, steps, _take(state, index))
            entry["membrane"] = u.to(self.membrane_dtype)
        if not self._fits(entry):
            return
        stored = entry if self.device is None else {k: v.to(self.device) for k, v in entry.items()}
        segs = self.segments[name]
        if state is not None and segs:  # a later chunk of the same streaming pass: continue along time
            segs[-1] = {k: torch.cat([segs[-1][k], v]) for k, v in stored.items()}
        else:
            segs.append(stored)

    def __enter__(self) -> SpikeRecorder:
        for name, m in self.layers.items():
            self._handles.append(m.register_forward_pre_hook(self._pre_hook(name), with_kwargs=True))
            self._handles.append(m.register_forward_hook(self._hook(name), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Detach the hooks (records stay)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # -- results -----------------------------------------------------------------------------------------------
    def _joined(self, key: str) -> dict[str, torch.Tensor]:
        out = {}
        for name, segs in self.segments.items():
            parts = [s[key] for s in segs if key in s]
            if not parts:
                continue
            if len({p.shape[0] for p in parts}) > 1:
                raise ValueError(f"layer {name!r} was recorded at different numbers of timesteps "
                                 f"{sorted({p.shape[0] for p in parts})}; read rec.segments[{name!r}] one by one")
            out[name] = torch.cat(parts, dim=1)
        return out

    @property
    def spikes(self) -> dict[str, torch.Tensor]:
        """``{layer: bool [T, N, ...]}``: the recorded samples of every pass, joined along dim 1."""
        return self._joined("spikes")

    @property
    def membrane(self) -> dict[str, torch.Tensor]:
        """``{layer: [T, N, ...]}``: membrane after each step's reset (``membrane=True``)."""
        return self._joined("membrane")

    def rates(self) -> dict[str, torch.Tensor]:
        """``{layer: [T]}``: the fraction of the layer's recorded neurons that spiked at each step."""
        return {name: s.flatten(1).float().mean(1) for name, s in self.spikes.items()}
