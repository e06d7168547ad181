"""Plots: learned receptive fields (a grid of the input weight images) and accuracy against pruning/levels."""

from __future__ import annotations

import math
from pathlib import Path

import torch


def weight_grid(W: torch.Tensor, shape) -> torch.Tensor:
    """The columns of ``W [C*H*W, N]`` as one image ``[rows*H, cols*W]`` (first channel), each scaled to [0, 1]."""
    c, h, w = shape
    n = W.shape[1]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    img = torch.zeros(rows * h, cols * w)
    for k in range(n):
        r, q = divmod(k, cols)
        patch = W[:, k].reshape(c, h, w)[0].float()
        patch = patch / patch.max().clamp_min(1e-12)
        img[r * h:(r + 1) * h, q * w:(q + 1) * w] = patch
    return img


def plot_receptive_fields(W: torch.Tensor, shape, path: Path, labels: torch.Tensor | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = weight_grid(W.cpu(), shape)
    fig, ax = plt.subplots(figsize=(8, 8 * img.shape[0] / img.shape[1]))
    ax.imshow(img.numpy(), cmap="hot_r", interpolation="nearest")
    ax.set_axis_off()
    n = W.shape[1]
    ax.set_title(f"input weights of the {n} excitatory neurons" + ("" if labels is None else " (label in corner)"))
    if labels is not None and n <= 400:
        c, h, w = shape
        cols = math.ceil(math.sqrt(n))
        for k in range(n):
            r, q = divmod(k, cols)
            ax.text(q * w + 1, r * h + 5, str(int(labels[k])), color="blue", fontsize=5)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return Path(path)


def plot_sweep(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    levels = list(dict.fromkeys(r["levels"] for r in rows))
    for q in levels:
        pts = sorted((r["pruned"], r["test_acc"]) for r in rows if r["levels"] == q)
        ax.plot([100 * p for p, _ in pts], [100 * a for _, a in pts], "o-", label=f"{q or 'full precision'} levels"
                if q else "full precision")
    ax.set_xlabel("input synapses pruned (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return Path(path)


__all__ = ["plot_receptive_fields", "plot_sweep", "weight_grid"]
