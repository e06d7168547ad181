"""Base class of every twin model: a plain ``nn.Module`` taking images in [0, 1] and returning logits ``[B, K]``.

The ANN twin runs its layers as usual. The SNN twin encodes the normalized image into ``[T, B, ...]`` (direct or
Poisson), runs the same layer list time-first (stateless layers folded into ``[T*B, ...]``, neurons looping over
time) and reduces the readout over time. Neuron state starts from zero at every call.

``T`` has one home: ``model.timesteps`` (``model.snn.timesteps``; set it, or evaluate temporarily at another ``T``
with ``with model.at_timesteps(T): ...``). No layer stores it: time-aware layers receive ``steps=`` at every call.

With ``snn.checkpoint_chunk`` a training forward runs in time chunks under activation checkpointing
(:meth:`TwinNet._forward_checkpointed`): the gradients are exact, only the chunk-boundary membranes are kept.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from spikeforge.errors import ConfigError, ShapeError
from spikeforge.models.constraints import auto_constrain
from spikeforge.models.health import SilentLayerWarning, count_spikes, silent_layer_message, silent_layers
from spikeforge.models.spec import ModelSpec, SNNConfig
from spikeforge.neuron import NEURONS, SpikingNeuron
from spikeforge.nn.bntt import BatchNormThroughTime, bntt_layers
from spikeforge.nn.encoders import make_encoder
from spikeforge.nn.layers import Normalize, Readout, SpikingDropout, run_sequence


def _check_encoding(spec: ModelSpec, snn: SNNConfig) -> None:
    """Event input goes with the ``events`` encoder and only with it (one :class:`ConfigError` line otherwise)."""
    if spec.input == "events" and snn.encoding != "events":
        raise ConfigError("this model reads event frames (model input: events), so its SNN needs snn.encoding: "
                          f"events, not {snn.encoding!r}")
    if spec.input != "events" and snn.encoding == "events":
        raise ConfigError("snn.encoding 'events' needs event-frame input (model input: events, from an event dataset "
                          f"such as nmnist); this model reads images: use 'direct' or 'poisson'")


def neuron_types() -> tuple[type, ...]:
    """The spiking neuron module classes: :class:`SpikingNeuron` and every class registered in ``NEURONS``."""
    return (SpikingNeuron, *(item for _, item in NEURONS.items() if isinstance(item, type)))


class TwinNet(nn.Module):
    """Common machinery of :class:`~spikeforge.models.vgg.VGG` and :class:`~spikeforge.models.resnet.ResNet`.

    Subclasses build ``nn.Sequential`` s (layers may be time-aware), name them in ``self.sequence_names`` (run in
    that order), and use the helpers :meth:`act`, :meth:`drop` and :meth:`readout`, which give the ANN or SNN
    version of a position.
    """

    def __init__(self, spec: ModelSpec, snn: SNNConfig | None = None):
        super().__init__()
        self.spec = spec
        self.snn = snn
        self.spiking = snn is not None
        self.normalize = Normalize(spec.mean * (spec.in_channels if len(spec.mean) == 1 else 1),
                                   spec.std * (spec.in_channels if len(spec.std) == 1 else 1))
        if self.spiking:
            _check_encoding(spec, snn)
            self.encoder = make_encoder(snn.encoding, convention=snn.poisson_convention, rate=snn.poisson_rate)
        self._silence_check_pending = self.spiking  # the first forward pass checks for silent layers

    def __setstate__(self, state):
        super().__setstate__(state)
        auto_constrain(self)  # a copy (copy.deepcopy, pickle) keeps its neurons in range too

    # -- building blocks -------------------------------------------------------------------------------------
    def act(self, channels: int | None = None) -> nn.Module:
        """ReLU in the ANN, a spiking neuron layer in the SNN (same position, so state-dict names line up): the
        neuron model ``snn.neuron`` from ``NEURONS``, with ``snn.neuron_params`` as its extra keywords."""
        if not self.spiking:
            return nn.ReLU(inplace=False)
        c = self.snn
        neuron = NEURONS.get(c.neuron)(c.threshold, c.leak, channels=channels if c.per_channel else None,
                                       learn_threshold=c.learn_threshold, learn_leak=c.learn_leak,
                                       surrogate=c.surrogate, order=c.order, reset=c.reset, fused=c.fused,
                                       **c.neuron_params)
        return auto_constrain(neuron)  # threshold > 0 and leak in [0, 1] after every optimizer step

    def bn(self, channels: int, dims: int = 2) -> nn.Module | None:
        """BatchNorm slot after a conv (``dims=2``) or hidden FC (``dims=1``, BNTT only): BN, an identity once BN
        was folded into the conv, BNTT in a BNTT SNN (plain BN in its ANN twin; one normalization for each of the
        ``snn.timesteps`` steps it is built for), or nothing."""
        if self.spec.bntt:
            if self.spiking:
                return BatchNormThroughTime(channels, self.snn.timesteps)
            return nn.BatchNorm2d(channels, eps=1e-4) if dims == 2 else nn.BatchNorm1d(channels, eps=1e-4)
        if not self.spec.batch_norm:
            return None
        return nn.Identity() if self.spec.bn_folded else nn.BatchNorm2d(channels)

    def drop(self, p: float) -> nn.Module:
        if p <= 0:
            return nn.Identity()
        return SpikingDropout(p) if self.spiking else nn.Dropout(p)

    def readout(self) -> nn.Module:
        return Readout(self.snn.readout) if self.spiking else nn.Identity()

    # -- running ---------------------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        """The model boundary: images ``[B, C, H, W]`` with the spec's channels and size, a floating dtype (cast to
        the model's parameter dtype), values finite. Integer images (``uint8`` 0-255) are refused, not rescaled:
        scale them to ``[0, 1]`` first (``x.float() / 255``). One :class:`ShapeError` naming what was expected."""
        s = self.spec
        if s.input == "events":
            return self._check_events(x)
        want = f"images [B, {s.in_channels}, {s.input_size}, {s.input_size}] in [0, 1]"
        if not isinstance(x, torch.Tensor):
            raise ShapeError(f"{s.arch} expects a tensor of {want}; got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != s.in_channels or tuple(x.shape[2:]) != (s.input_size, s.input_size):
            raise ShapeError(f"{s.arch} expects {want}; got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ShapeError(f"{s.arch} expects floating-point {want}; got dtype {x.dtype} (scale integer images "
                             "first, e.g. x.float() / 255)")
        return self._cast_finite(x, want)

    def _cast_finite(self, x: torch.Tensor, want: str) -> torch.Tensor:
        """``x`` in the parameters' float dtype (outside autocast), refused when it holds NaN or infinities."""
        param = next(self.parameters(), None)
        if param is not None and param.is_floating_point() and x.dtype != param.dtype \
                and not torch.is_autocast_enabled(x.device.type):
            x = x.to(param.dtype)
        if not torch.compiler.is_compiling() and not bool(torch.isfinite(x).all()):
            raise ShapeError(f"{self.spec.arch} input holds NaN or infinite values; expected {want}")
        return x

    def _check_events(self, x: torch.Tensor, exact: bool = True) -> torch.Tensor:
        """The model boundary of an ``input: events`` model: float event frames ``[B, T, C, H, W]`` (``[B, T, C]`` for
        ``input_size`` 1) with ``T`` = :attr:`timesteps` (``exact=False``: any ``T``; any ``T`` for the ANN twin,
        which sees the mean frame)."""
        s = self.spec
        frame = (s.in_channels,) if s.input_size == 1 else (s.in_channels, s.input_size, s.input_size)
        want = f"event frames [B, T, {', '.join(str(v) for v in frame)}] (event counts)"
        if not isinstance(x, torch.Tensor):
            raise ShapeError(f"{s.arch} expects a tensor of {want}; got {type(x).__name__}")
        if x.dim() != 2 + len(frame) or tuple(x.shape[2:]) != frame:
            raise ShapeError(f"{s.arch} (input: events) expects {want}; got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ShapeError(f"{s.arch} expects floating-point {want}; got dtype {x.dtype} (x.float())")
        if exact and self.spiking and x.shape[1] != self.timesteps:
            raise ShapeError(f"{s.arch} runs T={self.timesteps} steps but the input has {x.shape[1]} frames per "
                             f"sample: bin the data into {self.timesteps} frames (data.timesteps) or set "
                             f"model.timesteps = {x.shape[1]}")
        return self._cast_finite(x, want)

    def _normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        """The model's input normalization; event frames ``[B, T, C, ...]`` per channel (dimension 2)."""
        if self.spec.input != "events":
            return self.normalize(x)
        mean, std = self.normalize.mean.flatten(), self.normalize.std.flatten()
        shape = [1, 1, mean.numel()] + [1] * (x.dim() - 3)
        return (x - mean.view(shape)) / std.view(shape)

    def _frames(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Frames ``start:stop`` of normalized event input (the whole input for images, whose encoder draws anew)."""
        return x[:, start:stop] if self.spec.input == "events" else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, K]`` for images ``x`` ``[B, C, H, W]`` in ``[0, 1]`` (the SNN runs :attr:`timesteps` steps).

        The first forward pass of an SNN also counts each spiking layer's spikes and warns
        (:class:`~spikeforge.models.health.SilentLayerWarning`) when none reach the readout, naming the first silent
        layer and the usual fixes (:meth:`_forward_checked`)."""
        # is_compiling() first: under torch.compile the flag is never read, so it is not guarded (no recompile)
        if not torch.compiler.is_compiling() and getattr(self, "_silence_check_pending", False):
            return self._forward_checked(x)
        return self._forward(x)

    def _forward_checked(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`_forward` with every spiking layer's spikes counted, then a warning if the network is silent: in
        evaluation when no spikes reach the readout; in training only when the first spiking layer is silent too
        (an input-scale problem: deeper layers silent at initialisation usually wake up under the surrogate
        gradient, Neftci et al. 2019)."""
        types = neuron_types()
        layers = {name: m for name, m in self.named_modules() if isinstance(m, types)}
        with count_spikes(layers) as counts:
            out = self._forward(x)
        self._silence_check_pending = False
        names = list(layers)
        silent = silent_layers(counts, names)
        training = self.training and torch.is_grad_enabled()
        if silent and silent[-1] == names[-1] and (not training or silent[0] == names[0]):
            where = f"in this model's first forward pass ({'training' if training else 'evaluation'})"
            warnings.warn(silent_layer_message(self, silent, names, where), SilentLayerWarning, stacklevel=5)
        return out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check_input(x)
        x = self._normalize_input(x)
        if not self.spiking:
            if self.spec.input == "events":
                x = x.mean(1)  # the ANN twin sees the mean frame (the rate the SNN integrates)
            for name in self.sequence_names:
                x = getattr(self, name)(x)
            return x
        steps = self.timesteps
        ck = self.snn.checkpoint_chunk
        if ck is not None and ck < steps and self.training and torch.is_grad_enabled():
            return self._forward_checkpointed(x, steps, ck)
        chunk = self.snn.time_chunk
        if chunk is None or chunk >= steps or torch.is_grad_enabled():
            return self.run_time_first(self.encode(x, steps), steps)
        return self._forward_streaming(x, steps, chunk)

    def encode(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Encode normalized images ``[B, ...]`` into time-first input for ``steps`` steps (default
        :attr:`timesteps`): ``[steps, B, ...]``, or ``[1, B, ...]`` for direct encoding."""
        return self.encoder(x, self.timesteps if steps is None else int(steps))

    def run_time_first(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Run every layer of the SNN on encoded input ``x`` (:meth:`encode`) for ``steps`` steps (default
        :attr:`timesteps`) and return the readout. Inside :meth:`streaming`, neurons continue from the last call."""
        steps = self.timesteps if steps is None else int(steps)
        for name in self.sequence_names:
            x = run_sequence(getattr(self, name), x, steps)
        return x

    def _forward_checkpointed(self, x: torch.Tensor, steps: int, chunk: int) -> torch.Tensor:
        """Training forward over ``steps`` in chunks of ``chunk`` steps under activation checkpointing.

        Each chunk (encoder, all layers, readout partial sum) runs in ``torch.utils.checkpoint``; its inputs are the
        normalized images and every neuron's membrane at the chunk start, its outputs the readout partial and every
        neuron's final membrane (carried differentiably, :meth:`SpikingNeuron.start_carry`). Only these boundary
        states stay alive between forward and backward; each chunk's activations are recomputed in backward. The
        recomputation draws the same Poisson spikes (global RNG: ``preserve_rng_state``; a seeded encoder's
        generator is rewound) and reuses the dropout masks, which are drawn once per batch for all chunks.
        """
        self._check_checkpointable()
        neurons = self.neurons()
        readouts = [m for m in self.modules() if isinstance(m, Readout)]
        mean = bool(readouts) and readouts[-1].mode == "mean"
        gen = self._encoder_generator(x.device)
        masks: dict = {}  # SpikingDropout masks, shared by all chunks and their recomputation
        total, states, done = None, [None] * len(neurons), 0
        while done < steps:
            length = min(chunk, steps - done)
            last = done + length == steps  # the last chunk's final membranes are not needed
            record = {"gen": None if gen is None else gen.get_state(), "calls": 0}
            fn = functools.partial(self._checkpoint_chunk, length, last, record, masks, neurons, readouts)
            part, *states = checkpoint(fn, self._frames(x, done, done + length), *states, use_reentrant=False,
                                       preserve_rng_state=True)
            total = part if total is None else total + part
            done += length
        return total / steps if mean else total

    def _checkpoint_chunk(self, length, last, record, masks, neurons, readouts, x, *states):
        """One checkpointed chunk: sets up the chunk's running state, runs it, restores everything."""
        gen = self._encoder_generator(x.device) if record["gen"] is not None else None
        recompute = record["calls"] > 0
        record["calls"] += 1
        gen_now = gen.get_state() if gen is not None else None
        if gen is not None:
            gen.set_state(record["gen"])
        dropouts = [m for m in self.modules() if isinstance(m, SpikingDropout)]
        modes = [r.mode for r in readouts]
        try:
            for r in readouts:
                r.mode = "sum"
            for d in dropouts:
                d.hold_mask(masks)
            for n, u in zip(neurons, states):
                n.start_carry(u, keep_last=not last)
            part = self.run_time_first(self.encode(x, length), length)
            lasts = [] if last else [n.carried_membrane if n.carried_membrane is not None else u
                                     for n, u in zip(neurons, states)]
        finally:
            for r, m in zip(readouts, modes):
                r.mode = m
            for d in dropouts:
                d.release_mask()
            for n in neurons:
                n.stop_carry()
            if gen is not None and recompute:  # recomputation must not disturb the encoder's random stream
                gen.set_state(gen_now)
        return (part, *lasts)

    def _check_checkpointable(self) -> None:
        for m in self.modules():
            if isinstance(m, (BatchNormThroughTime, nn.modules.batchnorm._BatchNorm)) and m.training:
                raise ConfigError("checkpoint_chunk cannot be used with batch norm in training mode: statistics "
                                  "would be computed per chunk and running statistics updated twice; fold BN first "
                                  "or leave checkpoint_chunk null")
        for n in self.neurons():
            if n.order != "integrate-fire":
                raise ConfigError(f"checkpoint_chunk needs order 'integrate-fire', the model's neurons use "
                                  f"{n.order!r}; leave checkpoint_chunk null")

    def _forward_streaming(self, x: torch.Tensor, steps: int, chunk: int) -> torch.Tensor:
        """No-grad evaluation of long ``T`` in time chunks, carrying every neuron's state between chunks."""
        return self.forward_cumulative(x, [steps], chunk=chunk, normalized=True)[0]

    @torch.no_grad()
    def forward_cumulative(self, x: torch.Tensor, checkpoints: list[int], chunk: int | None = None,
                           normalized: bool = False) -> list[torch.Tensor]:
        """Logits after each of the timesteps in ``checkpoints`` from one simulation of ``max(checkpoints)`` steps.

        The result for ``T`` equals a separate run with ``timesteps = T`` (same draws for Poisson input), so one
        pass gives accuracy against timesteps. Runs in chunks of at most ``chunk`` steps (default
        ``snn.time_chunk``), carrying the neuron state.
        """
        if not self.spiking:
            raise AttributeError("forward_cumulative needs an SNN")
        points = sorted({int(c) for c in checkpoints})
        if not points or points[0] < 1:
            raise ValueError(f"checkpoints must be positive timesteps, got {checkpoints}")
        steps = points[-1]
        if not normalized:
            x = self._check_events(x, exact=False) if self.spec.input == "events" else self._check_input(x)
            x = self._normalize_input(x)
        if self.spec.input == "events" and steps > x.shape[1]:
            raise ShapeError(f"the event input has {x.shape[1]} frames per sample; accuracy can be read at T <= "
                             f"{x.shape[1]}, not {steps}")
        chunk = chunk or self.snn.time_chunk or steps
        bounds = sorted(set(points) | set(range(chunk, steps, chunk)))
        readouts = [m for m in self.modules() if isinstance(m, Readout)]
        modes = [r.mode for r in readouts]
        total, out, done = None, {}, 0
        try:
            for r in readouts:
                r.mode = "sum"
            with self.streaming():
                for b in bounds:
                    part = self.run_time_first(self.encode(self._frames(x, done, b), b - done), b - done)
                    total = part if total is None else total + part
                    done = b
                    if b in points:
                        out[b] = total / b if modes and modes[-1] == "mean" else total.clone()
        finally:
            for r, m in zip(readouts, modes):
                r.mode = m
        return [out[int(c)] for c in checkpoints]

    @contextlib.contextmanager
    def streaming(self):
        """Within this context every neuron keeps its state between calls (then it is dropped)."""
        neurons = self.neurons() + bntt_layers(self)
        for n in neurons:
            n.start_stream()
        try:
            yield self
        finally:
            for n in neurons:
                n.stop_stream()

    # -- SNN attributes --------------------------------------------------------------------------------------
    def neurons(self) -> list[nn.Module]:
        """Spiking neuron layers (every registered neuron model) in forward order."""
        types = neuron_types()
        return [m for m in self.modules() if isinstance(m, types)]

    @property
    def timesteps(self) -> int | None:
        """Simulation length ``T`` of the SNN (None for an ANN); its one home is ``snn.timesteps``."""
        return self.snn.timesteps if self.spiking else None

    @timesteps.setter
    def timesteps(self, steps: int) -> None:
        if not self.spiking:
            raise AttributeError("an ANN has no timesteps")
        steps = int(steps)
        limit = min((m.num_steps for m in bntt_layers(self)), default=None)
        if limit is not None and steps > limit:
            raise ConfigError(f"this BNTT model has batch norms for {limit} timesteps; it can run at T <= {limit}, "
                              f"not {steps}")
        self.snn.timesteps = steps

    @contextlib.contextmanager
    def at_timesteps(self, steps: int):
        """Run at ``steps`` timesteps inside the block, then restore the model's own ``timesteps``::

            with model.at_timesteps(1):
                logits = model(images)
        """
        old = self.timesteps
        self.timesteps = steps
        try:
            yield self
        finally:
            self.timesteps = old

    def set_encoding(self, encoding: str, **kw) -> None:
        """Switch the SNN's input encoding (``direct`` / ``poisson``)."""
        snn = self.snn.updated(encoding=encoding, **kw)
        _check_encoding(self.spec, snn)
        self.snn = snn
        c = self.snn
        self.encoder = make_encoder(c.encoding, convention=c.poisson_convention, rate=c.poisson_rate)

    def _encoder_generator(self, device) -> torch.Generator | None:
        """The encoder's private random stream (a seeded Poisson encoder), else None (global RNG or no draws)."""
        generator = getattr(self.encoder, "generator", None)
        return generator(device) if callable(generator) else None

    def constrain_(self) -> None:
        """Keep leaks in [0, 1] and thresholds positive (call after each optimizer step)."""
        for n in self.neurons():
            n.constrain_()

    def thresholds(self) -> list[float]:
        return [float(n.threshold.detach().mean()) for n in self.neurons()]

    def leaks(self) -> list[float]:
        return [float(n.leak.detach().mean()) for n in self.neurons()]
