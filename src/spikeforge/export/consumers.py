r"""Load and run a NIR file in the tool it was exported for: snnTorch, sinabs or Norse.

Each loader calls the tool's own NIR importer (snnTorch 1.0 ``import_from_nir``, sinabs 3.1 ``from_nir``, Norse 1.1
``from_nir``) on a graph written by :func:`~spikeforge.export.nir_export.to_nir` with the matching ``target``;
:func:`run_exported` feeds it images the way the tool expects and records every neuron layer's spikes, so that a
caller can compare them with spikeforge's (the NIR node semantics are those of Pedersen et al. 2024, Nature
Communications 15:8122).

* snnTorch and Norse map NIR's ``Flatten(start_dim=0)`` to ``torch.nn.Flatten(0)``, which in PyTorch also flattens
  the batch: their networks run one unbatched sample at a time, ``T`` calls each (snnTorch keeps the membrane in
  its modules, reset between samples; Norse passes a state).
* sinabs runs a batch at once on ``[B*T, ...]`` (its ``Squeeze`` layers fold time into the batch). Its importer
  builds every IF layer with the sinabs defaults: several spikes per step (``MultiSpike``, ``floor(v / V_th)``),
  subtractive reset and a membrane floor at ``-V_th``. :func:`load_sinabs` then gives each layer the neuron the
  graph describes: one spike per step (``SingleSpike``), the reset recorded in the node (``MembraneReset`` for
  hard, ``MembraneSubtract`` for soft) and no floor; ``plain=True`` keeps sinabs' defaults.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.export.nir_import import read_nir
from spikeforge.export.nir_mapping import graph_info, node_info, restore_node_info


def _graph(graph_or_path):
    graph = read_nir(graph_or_path) if isinstance(graph_or_path, (str, Path)) else graph_or_path
    restore_node_info(graph)
    return graph


def _require(module: str, extra: str = "test"):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ConfigError(f"this needs the '{module.split('.')[0]}' package: pip install {module.split('.')[0]} "
                          f"(or pip install 'spikeforge[{extra}]')") from None


def _check_target(graph, target: str) -> None:
    info = graph_info(graph) or {}
    written = info.get("target", "generic")
    if info and written != target:
        raise ConfigError(f"this graph was exported for {written!r}, not {target!r}: export it with "
                          f"--target {target}")


def load_snntorch(graph_or_path) -> nn.Module:
    """snnTorch's network for a graph exported with ``target="snntorch"`` (``snntorch.import_nir``)."""
    graph = _graph(graph_or_path)
    _check_target(graph, "snntorch")
    import_nir = _require("snntorch.import_nir")
    return import_nir.import_from_nir(graph)


def load_norse(graph_or_path) -> nn.Module:
    """Norse's network for a graph exported with ``target="norse"`` (``norse.torch.from_nir``)."""
    graph = _graph(graph_or_path)
    _check_target(graph, "norse")
    norse = _require("norse.torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # nirtorch.load and torch.jit deprecations
        return norse.from_nir(graph, ignore_warnings=True)


def load_sinabs(graph_or_path, *, timesteps: int | None = None, plain: bool = False) -> nn.Module:
    """sinabs' network for a graph exported with ``target="sinabs"`` (``sinabs.from_nir``), its neurons set to the
    graph's (see the module docstring); ``timesteps`` defaults to the graph's ``T``."""
    graph = _graph(graph_or_path)
    _check_target(graph, "sinabs")
    sinabs_nir = _require("sinabs.nir")
    act = _require("sinabs.activation")
    steps = int(timesteps or (graph_info(graph) or {}).get("timesteps") or 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # sinabs 3.1 uses the deprecated nirtorch.load
        net = sinabs_nir.from_nir(graph, num_timesteps=steps)
    if plain:
        return net
    modules = dict(net.named_modules())
    for name, node in graph.nodes.items():
        info = node_info(node)
        if info.get("role") != "neuron":
            continue
        layer = modules[name]
        layer.spike_fn = act.SingleSpike
        layer.reset_fn = act.MembraneReset() if info.get("reset", "hard") == "hard" else act.MembraneSubtract()
        layer.min_v_mem = None
    return net


def _neuron_types(target: str) -> tuple[type, ...]:
    if target == "snntorch":
        return (_require("snntorch").Leaky,)
    if target == "norse":
        mods = _require("norse.torch")
        return (mods.IAFCell, mods.LIFBoxCell)
    return (_require("sinabs.layers").LIF,)


def _hooks(net: nn.Module, target: str, store: dict[str, list]) -> list:
    types = _neuron_types(target)
    return [m.register_forward_hook(lambda _m, _i, o, name=name: store.setdefault(name, []).append(
        (o[0] if isinstance(o, tuple) else o).detach().clone()))
        for name, m in net.named_modules() if isinstance(m, types)]


def _per_sample(net: nn.Module, target: str, x: torch.Tensor, steps: int, store: dict) -> torch.Tensor:
    """Unbatched runs, ``steps`` calls per sample; returns ``[T, B, K]`` and fills ``store`` with ``[T, B, ...]``."""
    reset = _require("snntorch.utils").reset if target == "snntorch" else None
    outs, spikes = [], []
    for b in range(x.shape[0]):
        if reset is not None:
            reset(net)
        store.clear()
        state, seq = None, []
        for _ in range(steps):
            out, state = net(x[b]) if target == "snntorch" else net(x[b], state)
            seq.append(out)
        outs.append(torch.stack(seq))
        spikes.append({k: torch.stack(v) for k, v in store.items()})
    store.clear()
    store.update({k: torch.stack([s[k] for s in spikes], 1) for k in spikes[0]})
    return torch.stack(outs, 1)


def _sinabs_run(net: nn.Module, x: torch.Tensor, steps: int, store: dict) -> torch.Tensor:
    for m in net.modules():
        if hasattr(m, "reset_states"):
            m.reset_states()
    b = x.shape[0]
    folded = x.unsqueeze(1).expand(b, steps, *x.shape[1:]).reshape(b * steps, *x.shape[1:])
    out = net(folded)
    out = out[0] if isinstance(out, tuple) else out
    for k, v in list(store.items()):
        s = v[0]
        store[k] = s.reshape(b, steps, *s.shape[1:]).transpose(0, 1)
    return out.reshape(b, steps, *out.shape[1:]).transpose(0, 1)


@torch.no_grad()
def run_exported(net: nn.Module, target: str, x: torch.Tensor, steps: int = 1
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run a loaded network on ``x`` (``[B, C, H, W]``, already as the graph's input: normalized for direct
    input), the same input at each of ``steps`` steps.

    Returns the graph's output at each step ``[T, B, K]`` (sum it over ``T`` for the summed readout) and each neuron
    layer's spikes ``[T, B, ...]`` keyed by module name (the graph's node names: spikeforge's module paths with
    ``_`` for ``.``).
    """
    if target not in ("snntorch", "sinabs", "norse"):
        raise ConfigError(f"run_exported runs snntorch, sinabs or norse networks, not {target!r}")
    store: dict = {}
    hooks = _hooks(net, target, store)
    try:
        if target == "sinabs":
            return _sinabs_run(net, x, steps, store), store
        return _per_sample(net, target, x, steps, store), store
    finally:
        for h in hooks:
            h.remove()
