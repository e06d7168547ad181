"""BNTT early exit (Kim & Panda 2021): choose the inference exit time from the learned per-timestep gammas.

The learned ``gamma_{l,t}`` of :class:`~spikeforge.nn.bntt.BatchNormThroughTime` shrink at late steps (they contribute
little to the readout), so inference can stop at the first step after which the layer-averaged ``gamma`` stays
below a threshold (:func:`exit_time`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.nn.bntt import bntt_layers


def gamma_profile(model: nn.Module) -> torch.Tensor:
    """``[L, T]``: each BNTT layer's mean ``|gamma|`` at every timestep."""
    layers = bntt_layers(model)
    if not layers:
        raise ConfigError("the model has no BatchNormThroughTime layers (build it with model.bntt: true)")
    return torch.stack([m.gammas().cpu() for m in layers])


def exit_time(profile: torch.Tensor, threshold: float) -> int:
    """Early-exit timestep: the smallest ``t`` such that the layer-averaged gamma at every later step
    ``s > t`` is below ``threshold`` (so steps ``t+1..T`` are skipped). Returns ``T`` if none qualifies."""
    mean = profile.mean(0)
    steps = mean.numel()
    t = steps
    while t > 1 and float(mean[t - 1]) < threshold:
        t -= 1
    return t


def plot_gammas(profile: torch.Tensor, path: Path, threshold: float | None = None, exit_at: int | None = None,
                acc_vs_t: dict[int, float] | None = None) -> None:
    """The BNTT paper's figure: mean ``|gamma|`` over time per layer (and the layer mean), with the exit time;
    beside it, accuracy against the exit time when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2 if acc_vs_t else 1
    fig, axes = plt.subplots(1, cols, figsize=(6 * cols, 4), squeeze=False)
    ax = axes[0][0]
    steps = torch.arange(1, profile.shape[1] + 1)
    for i, row in enumerate(profile):
        ax.plot(steps, row, lw=1, alpha=0.8, label=f"BNTT layer {i + 1}")
    ax.plot(steps, profile.mean(0), "k-", lw=2.5, label="layer mean")
    if threshold is not None:
        ax.axhline(threshold, color="r", ls="--", lw=1, label=f"exit threshold {threshold:g}")
    if exit_at is not None:
        ax.axvline(exit_at, color="g", ls=":", lw=1.5, label=f"exit at t={exit_at}")
    ax.set_xlabel("timestep t")
    ax.set_ylabel("mean |gamma| over channels")
    ax.set_title("BNTT gamma through time")
    ax.legend(fontsize=7, ncol=2)
    if acc_vs_t:
        ax2 = axes[0][1]
        ts = sorted(acc_vs_t)
        ax2.plot(ts, [100 * acc_vs_t[t] for t in ts], "o-")
        if exit_at is not None:
            ax2.axvline(exit_at, color="g", ls=":", lw=1.5)
        ax2.set_xlabel("exit timestep")
        ax2.set_ylabel("test accuracy (%)")
        ax2.set_title("accuracy against exit time")
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
