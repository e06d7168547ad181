"""ONNX export of ANN twins and single-timestep SNNs (built directly with ``onnx.helper``; opset 17).

A spikeforge SNN at ``T = 1`` with ``integrate-fire`` ordering is exactly a feed-forward network: the membrane starts
at zero, so ``U' = lambda * 0 + I = I``, the spike is ``s = H(I - V_th)`` decided as ``I >= V_th``, the reset never
acts and the readout over one step is the identity. Each neuron layer is therefore written as
``Cast(GreaterOrEqual(I, V_th), FLOAT)`` (per-layer ``V_th`` as a scalar, per-channel as ``[C, 1, 1]`` / ``[N]``).
With ``fire-integrate`` ordering a layer fires from the previous step's (zero) membrane, so at ``T = 1`` its spikes are
all zero; the export writes exactly that (``ConstantOfShape``). SNNs with ``T > 1`` carry state across steps and are
refused (:class:`~spikeforge.errors.ConfigError`; use NIR), as is Poisson input (random).

Other operators: the input normalization as ``Sub`` + ``Div`` (the same arithmetic as PyTorch), ``Conv``,
``BatchNormalization`` (unfolded BN), ``Relu``, ``AveragePool``, ``Flatten``, ``Gemm``; a ResNet block's two branches
are summed with ``Add`` before the activation. Input ``input`` ``[batch, C, H, W]`` in ``[0, 1]``, output ``logits``
``[batch, K]``; ``expose_spikes=True`` adds each neuron layer's spikes as outputs ``spikes:<layer>``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.export.card import write_card
from spikeforge.export.trace import Op, trace_model
from spikeforge.neuron import SpikingNeuron
from spikeforge.utils import atomic_write_bytes
from spikeforge.version import __version__

OPSET = 17
IR_VERSION = 8


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs the 'onnx' package: pip install onnx onnxruntime "
                          "(or pip install 'spikeforge[export]')") from None
    return onnx


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy().copy()


class _Graph:
    """The ONNX nodes, initializers and extra outputs written so far (``onnx.helper`` builds each)."""

    def __init__(self, onnx, expose_spikes: bool):
        self.helper, self.numpy_helper, self.float = onnx.helper, onnx.numpy_helper, onnx.TensorProto.FLOAT
        self.expose_spikes = expose_spikes
        self.nodes: list = []
        self.inits: list = []
        self.outputs: list = []
        self.counter = 0

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def tmp(self, base: str) -> str:
        self.counter += 1
        return f"{base}/{self.counter}"

    def node(self, op_type: str, inputs: list[str], output: str, name: str | None = None, **attrs) -> str:
        self.nodes.append(self.helper.make_node(op_type, inputs, [output], name=name or output, **attrs))
        return output

    def summed(self, op: Op) -> str:
        """The op's input, or the ``Add`` of its inputs (a residual block's two branches)."""
        acc = op.inputs[0]
        for other in op.inputs[1:]:
            out = self.tmp(f"{op.name}/add")
            acc = self.node("Add", [acc, other], out)
        return acc


# ---- one writer per traced operation kind: (graph, op, source tensor name) --------------------------------------
def _normalize(g: _Graph, op: Op, src: str) -> None:
    m, c = op.module, op.shape[0]
    mean = m.mean.detach().float().cpu().reshape(-1).expand(c).numpy().reshape(1, c, 1, 1)
    std = m.std.detach().float().cpu().reshape(-1).expand(c).numpy().reshape(1, c, 1, 1)
    centered = g.node("Sub", [src, g.init("normalize.mean", mean.copy())], g.tmp("normalize/sub"))
    g.node("Div", [centered, g.init("normalize.std", std.copy())], op.name)


def _weights(g: _Graph, op: Op, src: str) -> list[str]:
    m = op.module
    ins = [src, g.init(f"{op.name}.weight", _np(m.weight))]
    if m.bias is not None:
        ins.append(g.init(f"{op.name}.bias", _np(m.bias)))
    return ins


def _conv(g: _Graph, op: Op, src: str) -> None:
    m = op.module
    ph, pw = m.padding
    g.node("Conv", _weights(g, op, src), op.name, kernel_shape=list(m.kernel_size), strides=list(m.stride),
           pads=[ph, pw, ph, pw], dilations=list(m.dilation), group=m.groups)


def _batchnorm(g: _Graph, op: Op, src: str) -> None:
    m, c, name = op.module, op.shape[0], op.name
    scale = _np(m.weight) if m.weight is not None else np.ones(c, np.float32)
    shift = _np(m.bias) if m.bias is not None else np.zeros(c, np.float32)
    g.node("BatchNormalization",
           [src, g.init(f"{name}.weight", scale), g.init(f"{name}.bias", shift),
            g.init(f"{name}.running_mean", _np(m.running_mean)), g.init(f"{name}.running_var", _np(m.running_var))],
           name, epsilon=float(m.eps))


def _relu(g: _Graph, op: Op, src: str) -> None:
    g.node("Relu", [src], op.name)


def _neuron(g: _Graph, op: Op, src: str) -> None:
    """Spikes of a T=1 layer: ``I >= V_th`` (integrate-fire), or zeros (fire-integrate fires from U = 0)."""
    m, name = op.module, op.name
    if m.order == "fire-integrate":
        shape = g.node("Shape", [src], g.tmp(f"{name}/shape"))
        g.node("ConstantOfShape", [shape], name, value=g.helper.make_tensor("zero", g.float, [1], [0.0]))
    else:
        th = m.threshold.detach().float().cpu()
        th = th.numpy().copy() if th.dim() == 0 else th.reshape(-1, *([1] * (len(op.shape) - 1))).numpy()
        fired = g.node("GreaterOrEqual", [src, g.init(f"{name}.threshold", th)], g.tmp(f"{name}/ge"))
        g.node("Cast", [fired], name, name=f"{name}/cast", to=g.float)
    if g.expose_spikes:
        out = g.node("Identity", [name], f"spikes:{name}")
        g.outputs.append(g.helper.make_tensor_value_info(out, g.float, ["batch", *op.shape]))


def _pool(g: _Graph, op: Op, src: str) -> None:
    m = op.module
    if op.kind == "pool":
        k, s, p = [(v, v) if isinstance(v, int) else tuple(v) for v in (m.kernel_size, m.stride, m.padding)]
        attrs = {"count_include_pad": int(bool(m.count_include_pad))}
    else:
        k = s = op.extra["kernel"]
        p = (0, 0)
        attrs = {}
    g.node("AveragePool", [src], op.name, kernel_shape=list(k), strides=list(s), pads=[p[0], p[1], p[0], p[1]],
           **attrs)


def _flatten(g: _Graph, op: Op, src: str) -> None:
    g.node("Flatten", [src], op.name, axis=1)


def _linear(g: _Graph, op: Op, src: str) -> None:
    g.node("Gemm", _weights(g, op, src), op.name, transB=1)


def _readout(g: _Graph, op: Op, src: str) -> None:
    g.node("Identity", [src], op.name)  # one step: the sum (or mean) over time of a single step is that step's value


_WRITERS = {"normalize": _normalize, "conv": _conv, "bn": _batchnorm, "relu": _relu, "neuron": _neuron,
            "pool": _pool, "adaptive_pool": _pool, "flatten": _flatten, "linear": _linear, "readout": _readout}


def _check_exportable(model: nn.Module) -> bool:
    """Whether ``model`` is spiking; refuses SNNs with state across steps or random input."""
    spiking = bool(getattr(model, "spiking", False))
    if spiking:
        if model.timesteps != 1:
            raise ConfigError(f"this SNN runs T={model.timesteps} timesteps; ONNX export supports ANN twins and "
                              "single-timestep SNNs only (a T=1 SNN is a feed-forward network with threshold "
                              "activations). Use --format nir, or export a T=1 model (an iir stage down to T=1)")
        if model.snn.encoding != "direct":
            raise ConfigError(f"this SNN uses {model.snn.encoding!r} input encoding (random spikes); ONNX export "
                              "needs direct input")
    return spiking


def _metadata(model: nn.Module, spiking: bool, expose_spikes: bool) -> str:
    meta = {"format": "spikeforge-onnx", "version": 1, "spikeforge_version": __version__,
            "model": model.spec.to_dict(), "snn": model.snn.to_dict() if spiking else None,
            "kind": "snn-t1" if spiking else "ann",
            "input": "image in [0, 1], [batch, C, H, W] (normalized inside the graph)",
            "output": "logits [batch, K]" + (" (spikes of each neuron layer as spikes:<layer>)" if expose_spikes
                                             else "")}
    return json.dumps(meta)


def build_onnx(model: nn.Module, input_shape: tuple[int, ...] | None = None, *, expose_spikes: bool = False,
               opset: int = OPSET):
    """The ``onnx.ModelProto`` of ``model`` (see the module docstring)."""
    onnx = _require_onnx()
    helper = onnx.helper
    spiking = _check_exportable(model)
    ops = trace_model(model, input_shape)
    g = _Graph(onnx, expose_spikes)
    for op in ops[1:]:  # ops[0] is the input
        writer = _WRITERS.get(op.kind)
        if writer is None:  # pragma: no cover - trace_model only yields the kinds above
            raise ConfigError(f"{op.name}: unsupported operation {op.kind}")
        writer(g, op, g.summed(op))
    g.node("Identity", [ops[-1].name], "logits")
    c, h, w = ops[0].shape
    graph = helper.make_graph(
        g.nodes, f"spikeforge-{model.spec.arch}",
        [helper.make_tensor_value_info("input", g.float, ["batch", c, h, w])],
        [helper.make_tensor_value_info("logits", g.float, ["batch", ops[-1].shape[0]])] + g.outputs,
        initializer=g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="spikeforge")
    proto.ir_version = IR_VERSION
    entry = proto.metadata_props.add()
    entry.key, entry.value = "spikeforge", _metadata(model, spiking, expose_spikes)
    onnx.checker.check_model(proto)
    return proto


def to_onnx(model: nn.Module, path: str | Path, example: torch.Tensor | None = None, *, expose_spikes: bool = False,
            opset: int = OPSET, card: bool = True, check: bool = True, header: dict | None = None,
            metrics: dict | None = None, checkpoint: str | Path | None = None) -> Path:
    """Write ``model`` (an ANN twin or a ``T = 1`` SNN) as ONNX to ``path`` and its model card beside it.

    ``example``: a batch ``[B, C, H, W]`` in ``[0, 1]``; it fixes ``C, H, W`` (default the spec's) and, with
    ``check`` and onnxruntime installed, the file is run on it and compared with PyTorch (see :func:`check_onnx`;
    the result goes into the card). Returns ``path``.
    """
    input_shape = tuple(example.shape[1:]) if example is not None else None
    proto = build_onnx(model, input_shape, expose_spikes=expose_spikes, opset=opset)
    path = Path(path)
    atomic_write_bytes(path, lambda f: f.write(proto.SerializeToString()))
    checks = None
    if check and example is not None and importlib.util.find_spec("onnxruntime") is not None:
        checks = check_onnx(path, model, example)
    if card:
        write_card(path, model, fmt="onnx", header=header, metrics=metrics, checkpoint=checkpoint,
                   export={"opset": opset, "kind": "snn-t1" if getattr(model, "spiking", False) else "ann",
                           "expose_spikes": expose_spikes, "checks": checks})
    return path


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session for ``path``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("running ONNX files needs onnxruntime: pip install onnxruntime") from None
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


@torch.no_grad()
def torch_outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(logits, {neuron layer name: spikes [B, ...]})`` of a PyTorch twin on ``x`` (spikes of a T=1 SNN)."""
    spikes: dict[str, torch.Tensor] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, SpikingNeuron):
            hooks.append(mod.register_forward_hook(
                lambda _m, _i, out, name=name: spikes.__setitem__(name, out.detach().reshape(-1, *out.shape[2:]))))
    was_training = model.training
    model.eval()
    try:
        logits = model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return logits, spikes


def check_onnx(path: str | Path, model: nn.Module, x: torch.Tensor, session=None) -> dict:
    """Run the ONNX file in onnxruntime on ``x`` and compare with the PyTorch ``model``.

    Returns ``max_abs_logit_diff``, ``argmax_agree`` (fraction of samples), ``spikes_equal`` (all spike tensors
    identical; None if the file has no spike outputs) and ``spike_mismatches``.
    """
    sess = session or onnx_session(path)
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(None, {"input": x.detach().cpu().float().numpy()})))
    logits, spikes = torch_outputs(model, x)
    ref = logits.cpu().numpy()
    got = outs["logits"]
    result = {"samples": int(x.shape[0]), "max_abs_logit_diff": float(np.max(np.abs(ref - got))) if ref.size else 0.0,
              "argmax_agree": float(np.mean(ref.argmax(1) == got.argmax(1))), "spikes_equal": None,
              "spike_mismatches": None}
    spike_names = [n for n in names if n.startswith("spikes:")]
    if spike_names:
        mismatches = 0
        for n in spike_names:
            mismatches += int(np.sum(outs[n] != spikes[n[len("spikes:"):]].cpu().numpy()))
        result["spikes_equal"] = mismatches == 0
        result["spike_mismatches"] = mismatches
    return result
