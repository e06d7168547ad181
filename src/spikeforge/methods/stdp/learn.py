"""Training step (with re-presentation of quiet images), batched responses, neuron labeling and prediction
(Diehl & Cook 2015: each neuron is labeled with the class it responds to most on training images; an image's class is
the one whose neurons spike most on average)."""

from __future__ import annotations

import math
import time

import torch
from tqdm.auto import tqdm

from spikeforge.methods.stdp.network import DiehlCook
from spikeforge.methods.stdp.rules import apply_update, weight_update
from spikeforge.utils import bars_disabled


@torch.no_grad()
def train_batch(net: DiehlCook, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
    """One training step on images ``x [B, n_input]`` in [0, 1].

    Normalizes the weights, presents the batch with learning on, applies the STDP update and the threshold rises
    (summed over images), and re-presents (also with learning on, as the reference code does) every image that made
    fewer than ``min_spikes`` excitatory spikes, at a higher rate, up to ``max_retries`` times.
    Returns ``{"counts": [B, N] spike counts of each image's last presentation, "presentations": int}``.
    """
    cfg = net.cfg
    B = x.shape[0]
    retry = torch.zeros(B, dtype=torch.long, device=x.device)
    counts = torch.zeros(B, cfg.n_neurons, device=x.device)
    todo = torch.arange(B, device=x.device)
    presentations = 0
    while todo.numel():
        net.normalize()
        res = net.present(x.index_select(0, todo), learn=True, generator=generator, retry=retry.index_select(0, todo))
        presentations += int(todo.numel())
        apply_update(net, weight_update(cfg, net.W, res["spikes_in"], res["spikes_out"]))
        # theta: the rises of all presented images, and the decay over the time they take one after the other
        # (with batch_reduce 'mean': the mean rise and one image's time)
        rise = res["theta_rise"].sum(0)
        images = todo.numel()
        if cfg.batch_reduce == "mean":
            rise, images = rise / todo.numel(), 1
        decay = math.exp(-images * (cfg.t_present + cfg.rest) / cfg.tau_theta)
        net.theta.mul_(decay).add_(rise)
        c = res["counts"]
        counts.index_copy_(0, todo, c)
        quiet = (c.sum(1) < cfg.min_spikes) & (retry.index_select(0, todo) < cfg.max_retries)
        todo = todo[quiet]
        retry.index_add_(0, todo, torch.ones_like(todo))
    net.normalize()
    return {"counts": counts, "presentations": presentations}


@torch.no_grad()
def respond(net: DiehlCook, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Spike counts ``[B, N]`` with learning off (thresholds frozen), re-presenting quiet images like training."""
    cfg = net.cfg
    B = x.shape[0]
    retry = torch.zeros(B, dtype=torch.long, device=x.device)
    counts = torch.zeros(B, cfg.n_neurons, device=x.device)
    todo = torch.arange(B, device=x.device)
    while todo.numel():
        c = net.present(x.index_select(0, todo), learn=False, generator=generator,
                        retry=retry.index_select(0, todo))["counts"]
        counts.index_copy_(0, todo, c)
        quiet = (c.sum(1) < cfg.min_spikes) & (retry.index_select(0, todo) < cfg.max_retries)
        todo = todo[quiet]
        retry.index_add_(0, todo, torch.ones_like(todo))
    return counts


def assign_labels(counts: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Each neuron's class: the one with the highest mean response over the (training) images of that class."""
    onehot = torch.nn.functional.one_hot(labels.long(), num_classes).float()  # [M, C]
    per_class = onehot.t() @ counts / onehot.sum(0).clamp_min(1)[:, None]    # [C, N]
    return per_class.argmax(0)


def predict(counts: torch.Tensor, assignments: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The class whose assigned neurons have the highest mean spike count (classes without neurons score 0)."""
    onehot = torch.nn.functional.one_hot(assignments.long(), num_classes).float()  # [N, C]
    return (counts @ onehot / onehot.sum(0).clamp_min(1)).argmax(1)


def responses(net: DiehlCook, x: torch.Tensor, batch: int, generator: torch.Generator | None = None,
              progress: bool = False, desc: str = "responses") -> torch.Tensor:
    """:func:`respond` over all images ``x`` in batches of at most ``batch`` (fewer for long presentations of many
    neurons: the ``[T, B, N]`` input buffer stays under 64 MB)."""
    T, N = net.cfg.steps, net.cfg.n_neurons
    sub = max(1, min(batch, (16 * 2 ** 20) // (T * N)))
    out = []
    for i in tqdm(range(0, x.shape[0], sub), desc=desc, disable=bars_disabled(progress), leave=False, mininterval=5):
        out.append(respond(net, x[i:i + sub], generator))
    return torch.cat(out)


def evaluate(net: DiehlCook, x_label, y_label, x_test, y_test, num_classes: int, batch: int,
             generator: torch.Generator | None = None, progress: bool = False, desc: str = "eval") -> dict:
    """Label the neurons from their responses to ``x_label``, then the test accuracy on ``x_test`` (learning off)."""
    t0 = time.time()
    cl = responses(net, x_label, batch, generator, progress, f"{desc}: labeling")
    assign = assign_labels(cl, y_label, num_classes)
    t1 = time.time()
    ct = responses(net, x_test, batch, generator, progress, f"{desc}: test")
    acc = float((predict(ct, assign, num_classes) == y_test).float().mean())
    return {"acc": acc, "assignments": assign, "label_seconds": t1 - t0, "test_seconds": time.time() - t1,
            "test_counts_mean": float(ct.sum(1).mean()), "test_counts": ct}


__all__ = ["assign_labels", "evaluate", "predict", "respond", "responses", "train_batch"]
