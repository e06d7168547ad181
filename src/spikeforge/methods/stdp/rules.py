"""STDP rules for the input->excitatory weights, computed from the spike trains of one presentation.

Both rules use spike traces; within one time step presynaptic spikes come before postsynaptic ones (so a pre and a
post spike in the same step count as causal, pre-before-post).

``trace`` -- the rule of Diehl & Cook's code (Diehl & Cook 2015, Front. Comput. Neurosci. 9:99; "nearest-spike"
traces that are *set* to 1 by a spike and decay exponentially: pre trace ``x_pre`` (tau_pre = 20 ms), post traces
``post1`` (tau_post1 = 20 ms) and ``post2`` (tau_post2 = 40 ms)):

* on a presynaptic spike:   ``w -= nu_pre * post1``              (post1 before any post spike of that step)
* on a postsynaptic spike:  ``w += nu_post * x_pre * post2_before`` (post2 *before* this post spike: a triplet term)

``powerlaw`` -- the power-law weight-dependent rule of the Diehl & Cook paper that Rathi, Panda & Roy (IEEE TCAD 2019)
build on:

* on a postsynaptic spike:  ``w += eta * (x_pre - x_tar) * (w_max - w) ** mu``

  with ``x_pre`` incremented by 1 at each presynaptic spike (``powerlaw_trace: additive``, the paper's description)
  or set to 1 (``nearest``). ``x_tar`` depresses synapses whose input was rarely active before the post spike; the
  paper gives no values for ``eta``, ``x_tar``, ``mu`` that we could find: the defaults (0.01, 0.4, 0.2) are ours.

Weights stay fixed during one presentation (``DiehlCook.present``); the update of every spike of the presentation is
computed from those weights and applied afterwards (summed over the batch's images, or averaged with
``batch_reduce: mean``), then clipped to ``[0, w_max]`` and multiplied by the pruning mask.
"""

from __future__ import annotations

import math

import torch

from spikeforge.methods.stdp.network import DiehlCook, NetConfig, csr


def trace_after(spikes: torch.Tensor, tau: float, dt: float, mode: str = "nearest") -> torch.Tensor:
    """Trace value at each step *including* that step's spikes. ``spikes [T, ...]`` (bool or 0/1)."""
    d = math.exp(-dt / tau)
    out = torch.empty(spikes.shape, dtype=torch.float32, device=spikes.device)
    s = spikes.bool()
    sf = None if mode == "nearest" else s.to(out.dtype)
    outs = out.unbind(0)
    for t, o in enumerate(outs):
        if t == 0:
            o.zero_()
        else:
            torch.mul(outs[t - 1], d, out=o)
        if mode == "nearest":
            o.masked_fill_(s[t], 1.0)
        else:
            o.add_(sf[t])
    return out


def trace_before(spikes: torch.Tensor, tau: float, dt: float, mode: str = "nearest") -> torch.Tensor:
    """Trace value at each step just *before* that step's spikes (decayed from the previous step)."""
    after = trace_after(spikes, tau, dt, mode)
    out = torch.zeros_like(after)
    out[1:] = after[:-1] * math.exp(-dt / tau)
    return out


def _sparse_t(s: torch.Tensor) -> torch.Tensor:
    """The transpose of a 0/1 matrix ``s [R, C]`` as a sparse CSR ``[C, R]`` float matrix."""
    r, c = s.nonzero(as_tuple=True)
    order = torch.argsort(c * s.shape[0] + r)
    r, c = r[order], c[order]
    crow = torch.zeros(s.shape[1] + 1, dtype=torch.int64, device=s.device)
    crow[1:] = torch.bincount(c, minlength=s.shape[1]).cumsum(0)
    return csr(crow, r, torch.ones(r.numel(), device=s.device), (s.shape[1], s.shape[0]))


@torch.no_grad()
def weight_update(cfg: NetConfig, W: torch.Tensor, spikes_in: torch.Tensor, spikes_out: torch.Tensor):
    """The STDP change of one presentation: ``(columns, dW[:, columns])`` for the neurons that spiked, or None.

    ``spikes_in [T, B, n_input]`` (bool), ``spikes_out [T, B, N]`` (0/1), ``W [n_input, N]`` the weights used.
    """
    T, B, n_in = spikes_in.shape
    fired = spikes_out.sum((0, 1)) > 0
    if not bool(fired.any()):
        return None
    cols = fired.nonzero().squeeze(1)
    post = spikes_out.index_select(2, cols)  # [T, B, Na]
    na = cols.numel()
    post2d = post.reshape(T * B, na)
    rows = post2d.sum(1).nonzero().squeeze(1)  # the (step, image) rows with a post spike
    if cfg.rule == "trace":
        x_pre = trace_after(spikes_in, cfg.tau_pre, cfg.dt, "nearest").view(T * B, n_in).index_select(0, rows)
        p1 = trace_before(post, cfg.tau_post1, cfg.dt, "nearest").view(T * B, na)
        p2 = trace_before(post, cfg.tau_post2, cfg.dt, "nearest").view(T * B, na).index_select(0, rows)
        pot = x_pre.t() @ (post2d.index_select(0, rows) * p2)
        dep = _sparse_t(spikes_in.view(T * B, n_in)) @ p1  # sum of post1 at each pre spike
        d = pot.mul_(cfg.nu_post).sub_(dep, alpha=cfg.nu_pre)
    else:
        x_pre = trace_after(spikes_in, cfg.tau_pre, cfg.dt, cfg.powerlaw_trace).view(T * B, n_in).index_select(0, rows)
        pr = post2d.index_select(0, rows)
        pot = x_pre.t() @ pr - cfg.x_tar * pr.sum(0, keepdim=True)
        dep = (cfg.w_max - W.index_select(1, cols)).clamp_min_(0).pow_(cfg.mu)
        d = pot.mul_(dep).mul_(cfg.eta)
    if cfg.batch_reduce == "mean":
        d.div_(B)
    return cols, d


@torch.no_grad()
def apply_update(net: DiehlCook, update) -> None:
    """Add an update from :func:`weight_update`, clip to ``[0, w_max]`` and keep pruned synapses at zero."""
    if update is None:
        return
    cols, d = update
    w = net.W.index_select(1, cols).add_(d).clamp_(0, net.cfg.w_max)
    w.mul_(net.mask.index_select(1, cols))
    net.W.index_copy_(1, cols, w)


__all__ = ["apply_update", "trace_after", "trace_before", "weight_update"]
