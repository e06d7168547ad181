"""Plots of recorded spikes (matplotlib): a spike raster, a layer-by-time rate heat map and per-neuron rate
histograms.

Each function draws into ``ax`` (a matplotlib ``Axes``) or, without one, into a new figure made with matplotlib's
object API (no pyplot state, any backend), and returns the ``Axes``; ``ax.figure.savefig(path)`` writes it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["plot_rate_heatmap", "plot_rate_histogram", "plot_raster"]


def _axes(ax, size=(6.0, 3.5)):
    if ax is not None:
        return ax
    from matplotlib.figure import Figure  # matplotlib is imported only when a plot is drawn

    return Figure(figsize=size, dpi=100, layout="constrained").add_subplot()


def _integer_ticks(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _layers(records) -> dict[str, torch.Tensor]:
    """``{layer: bool [T, N, ...]}`` from a :class:`SpikeRecorder` or such a mapping."""
    spikes = records if isinstance(records, Mapping) else records.spikes
    if not spikes:
        raise ValueError("no spikes recorded (record with SpikeRecorder(model, spikes=True) and run the model)")
    return dict(spikes)


def plot_raster(spikes: torch.Tensor, sample: int = 0, *, max_neurons: int = 2000, ax=None, title: str | None = None):
    """Spike raster of one sample: a dot at (timestep, neuron) for every spike of ``spikes`` ``[T, N, ...]`` (one
    layer of :attr:`SpikeRecorder.spikes`). At most ``max_neurons`` neurons, evenly spaced, are drawn."""
    s = spikes[:, sample].reshape(spikes.shape[0], -1).bool().cpu()
    n = s.shape[1]
    keep = torch.linspace(0, n - 1, min(n, max_neurons)).round().long() if n > max_neurons else torch.arange(n)
    t, i = torch.nonzero(s[:, keep], as_tuple=True)
    ax = _axes(ax)
    ax.scatter(t.numpy(), keep[i].numpy(), s=4, marker="|", color="k", linewidths=0.8)
    ax.set_xlim(-0.5, s.shape[0] - 0.5)
    _integer_ticks(ax.xaxis)
    ax.set_ylim(-0.5, n - 0.5)
    ax.set_xlabel("timestep")
    ax.set_ylabel("neuron")
    ax.set_title(title or f"spike raster (sample {sample}, {int(s.sum())} spikes)")
    return ax


def plot_rate_heatmap(records, *, ax=None, title: str | None = None):
    """Heat map of the firing rate (fraction of a layer's neurons spiking, averaged over the recorded samples) for
    every layer (rows) and timestep (columns); ``records`` is a :class:`SpikeRecorder` or ``{layer: spikes}``."""
    layers = _layers(records)
    steps = max(s.shape[0] for s in layers.values())
    grid = torch.full((len(layers), steps), float("nan"))
    for row, s in enumerate(layers.values()):
        grid[row, : s.shape[0]] = s.flatten(1).float().mean(1).cpu()
    ax = _axes(ax, (max(4.0, 0.5 * steps + 3), 0.45 * len(layers) + 1.5))
    im = ax.imshow(grid.numpy(), aspect="auto", cmap="viridis", interpolation="nearest", vmin=0)
    ax.set_yticks(range(len(layers)), list(layers))
    _integer_ticks(ax.xaxis)
    ax.set_xlabel("timestep")
    ax.set_title(title or "firing rate per layer and timestep")
    ax.figure.colorbar(im, ax=ax, label="fraction of neurons spiking")
    return ax


def plot_rate_histogram(records, *, bins: int = 20, ax=None, title: str | None = None):
    """Histogram, one outline per layer, of the per-neuron firing rate (spikes per timestep averaged over time and
    the recorded samples); a spike at 0 shows silent neurons."""
    layers = _layers(records)
    ax = _axes(ax)
    for name, s in layers.items():
        rate = s.float().mean(dim=(0, 1)).flatten().cpu()
        ax.hist(rate.numpy(), bins=bins, range=(0.0, 1.0), histtype="step", label=name)
    ax.set_xlabel("spikes per neuron per timestep")
    ax.set_ylabel("neurons")
    ax.set_yscale("log")
    ax.legend(fontsize="small")
    ax.set_title(title or "per-neuron firing rates")
    return ax
