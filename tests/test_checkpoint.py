"""Activation checkpointing over time chunks (``snn.checkpoint_chunk``): exact BPTT, fewer saved activations."""

import pytest
import torch
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.nn.layers import SpikingDropout
from spikeforge.models import SNNConfig, create_model
from spikeforge.models import base as base_mod
from spikeforge.neuron import SpikingNeuron

SMALL = dict(num_classes=10, in_channels=1, input_size=28, width=0.25, hidden=[64], dropout=0.0)


def _snn(chunk, steps=6, arch="vgg4", scale=3.0, dtype=torch.float64, **kw):
    """Small SNN with trainable threshold and leak; weights scaled up so every layer spikes."""
    torch.manual_seed(0)
    args = dict(SMALL, threshold=0.5, learn_threshold=True, learn_leak=True)
    args.update(kw)
    model = create_model(arch, spiking=True, timesteps=steps, checkpoint_chunk=chunk, **args).to(dtype).train()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(scale)
    return model


def _run(model, x, seed=5):
    torch.manual_seed(seed)
    out = model(x)
    (out.square().sum() + out.sum()).backward()
    return out.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _assert_same(ref, got):
    (o0, g0), (o1, g1) = ref, got
    assert torch.allclose(o1, o0, rtol=1e-10, atol=1e-12)
    assert g0.keys() == g1.keys()
    for k in g0:
        scale = g0[k].abs().max().clamp(min=1e-30)
        assert ((g1[k] - g0[k]).abs().max() / scale) < 1e-9, k


def _x(batch=3, dtype=torch.float64):
    return torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(1), dtype=dtype)


def _rates(model, x):
    rates = []
    hooks = [n.register_forward_hook(lambda m, i, o: rates.append(float(o.mean()))) for n in model.neurons()]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return rates


@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("leak", [1.0, 0.9])
def test_chunked_logits_and_gradients_equal_unchunked(reset, leak):
    x = _x()
    ref_model = _snn(None, reset=reset, leak=leak)
    assert all(0.02 < r < 0.9 for r in _rates(ref_model, x))  # every layer spikes, none saturates
    ref = _run(ref_model, x)
    assert {k.rsplit(".", 1)[1] for k in ref[1]} == {"weight", "threshold", "leak"}
    assert all(g.abs().sum() > 0 for g in ref[1].values())
    for chunk in (2, 4):  # 4 does not divide 6
        _assert_same(ref, _run(_snn(chunk, reset=reset, leak=leak), x))


@pytest.mark.parametrize("arch", ["vgg4", "resnet12"])
def test_per_channel_mean_readout_and_resnet(arch):
    x = _x(2)
    kw = dict(reset="soft", leak=0.9, per_channel=True, readout="mean", arch=arch, steps=5)
    if arch == "resnet12":
        kw.update(width=0.125, hidden=None, scale=1.5)
    ref = _run(_snn(None, **kw), x)
    assert all(g.abs().sum() > 0 for g in ref[1].values())
    _assert_same(ref, _run(_snn(2, **kw), x))


@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("channels", [3, None])
def test_neuron_carry_equals_one_call(reset, fused, channels):
    """Two calls in carry mode (membrane handed over) give the spikes and gradients of one call."""
    torch.manual_seed(0)
    n = SpikingNeuron(0.7, 0.8, channels=channels, learn_threshold=True, learn_leak=True, reset=reset,
                      fused=fused).double()
    x = (torch.rand(7, 2, 3, 4, dtype=torch.float64) * 0.8).requires_grad_()
    w = torch.randn(7, 2, 3, 4, dtype=torch.float64)
    s = n(x)
    assert 0.1 < s.mean() < 0.9
    (s * w).sum().backward()
    ref = [t.grad.clone() for t in (x, n.threshold, n.leak)]
    for t in (x, n.threshold, n.leak):
        t.grad = None
    n.start_carry(None)
    s1 = n(x[:3])
    n.start_carry(n.carried_membrane)
    s2 = n(x[3:])
    n.stop_carry()
    assert n.carried_membrane is None
    assert torch.equal(torch.cat([s1, s2]), s)
    (torch.cat([s1, s2]) * w).sum().backward()
    for a, b in zip(ref, (x.grad, n.threshold.grad, n.leak.grad)):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_dropout_mask_shared_across_chunks_and_recomputation():
    x = _x()
    kw = dict(dropout=0.5, hidden=[64, 32])
    ref_model = _snn(None, **kw)
    assert sum(isinstance(m, SpikingDropout) for m in ref_model.modules()) == 2
    ref = _run(ref_model, x, seed=7)
    model = _snn(2, **kw)
    masks = []
    drop = next(m for m in model.modules() if isinstance(m, SpikingDropout))
    hook = drop.register_forward_hook(lambda m, i, o: masks.append((i[0], o, m._held[id(m)])))
    got = _run(model, x, seed=7)  # the same seed draws the same masks as the unchunked run (direct encoding)
    hook.remove()
    _assert_same(ref, got)
    assert len(masks) == 6  # 3 chunks + 3 recomputations, all with one mask
    keep = masks[0][2]
    assert keep.shape == (1, 3, 16) and 0 < keep.mean() < 1  # hidden 64 at width 0.25
    assert all(held is keep and torch.equal(o, i * keep / 0.5) for i, o, held in masks)
    assert all(m._held is None for m in model.modules() if isinstance(m, SpikingDropout))


@pytest.mark.parametrize("seed", [None, 11])
def test_poisson_recomputation_draws_the_same_spikes(seed):
    """Chunked Poisson input: the recomputation replays each chunk's draws; gradients equal an unchunked run
    fed the same spikes; the encoder's random stream (global or seeded) is left as after the forward."""
    x = _x(2, torch.float32)
    model = _snn(2, encoding="poisson", dtype=torch.float32, scale=2.0)
    model.encoder.reseed(seed)
    drawn = []
    hook = model.encoder.register_forward_hook(lambda m, i, o: drawn.append(o.clone()))
    torch.manual_seed(3)
    out = model(x)
    state = torch.get_rng_state() if seed is None else model.encoder.generator(x.device).get_state()
    (out.square().sum() + out.sum()).backward()
    after = torch.get_rng_state() if seed is None else model.encoder.generator(x.device).get_state()
    hook.remove()
    assert torch.equal(state, after)
    assert len(drawn) == 6 and [d.shape[0] for d in drawn[:3]] == [2, 2, 2]
    for orig, again in zip(drawn[:3], reversed(drawn[3:])):  # backward recomputes the last chunk first
        assert torch.equal(orig, again)
    grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert grads and all(g.isfinite().all() for g in grads.values())

    class Replay(nn.Module):
        def forward(self, images, steps=None):
            return torch.cat(drawn[:3])

    ref_model = _snn(None, encoding="poisson", dtype=torch.float32, scale=2.0)
    ref_model.encoder = Replay()
    ref = _run(ref_model, x)
    assert torch.allclose(out.detach(), ref[0], rtol=1e-5, atol=1e-5)
    for k, g in ref[1].items():
        assert torch.allclose(grads[k], g, rtol=1e-4, atol=1e-6 * float(g.abs().max())), k


def test_saves_far_fewer_bytes_for_backward():
    """Bytes saved for backward (saved-tensors hook; inside checkpointed regions nothing is saved, the chunk
    inputs kept by the checkpoints are counted) at T=16, chunk 4."""

    def saved(chunk):
        model = _snn(chunk, steps=16, dtype=torch.float32, learn_threshold=False, learn_leak=False)
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(_x(4, torch.float32))
        out.sum().backward()
        return total[0]

    whole, chunked = saved(None), saved(4)
    assert chunked < 0.2 * whole, (chunked, whole)


def test_eval_no_grad_and_short_runs_do_not_checkpoint(monkeypatch):
    x = _x(2)
    model = _snn(2)
    plain = _snn(None)
    calls = []
    real = base_mod.checkpoint
    monkeypatch.setattr(base_mod, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    model.eval()
    plain.eval()
    assert torch.allclose(model(x), plain(x), rtol=1e-12)  # eval mode with gradients: option ignored
    model.train()
    plain.train()
    with torch.no_grad():
        assert torch.allclose(model(x), plain(x), rtol=1e-12)
    model.timesteps = 2  # chunk >= T
    model(x).sum().backward()
    assert not calls
    model.timesteps = 3
    model(x).sum().backward()
    assert len(calls) == 2
    assert model.timesteps == 3 and all(n._carry is None for n in model.neurons())


def test_clear_errors():
    with pytest.raises(ConfigError, match="integrate-fire"):
        create_model("vgg4", spiking=True, timesteps=4, checkpoint_chunk=2, order="fire-integrate", **SMALL)
    with pytest.raises(ConfigError, match="spike-time"):
        SNNConfig(checkpoint_chunk=2, surrogate="stdb")
    for bad in (0, -1, 2.5, True, "2"):
        with pytest.raises(ConfigError, match="checkpoint_chunk"):
            SNNConfig(checkpoint_chunk=bad)
    assert SNNConfig.from_dict(SNNConfig(checkpoint_chunk=3).to_dict()).checkpoint_chunk == 3
    with pytest.raises(ConfigError, match="integrate-fire"):
        SpikingNeuron(order="fire-integrate").start_carry()
    # a model whose neurons were switched after building
    model = _snn(2)
    model.neurons()[1].order = "fire-integrate"
    with pytest.raises(ConfigError, match="integrate-fire"):
        model(_x(1))

    x = torch.rand(2, 1, 28, 28)
    bn = create_model("vgg4", spiking=True, timesteps=4, checkpoint_chunk=2, batch_norm=True, **SMALL).train()
    bntt = create_model("vgg9_bntt", spiking=True, timesteps=4, checkpoint_chunk=2, **dict(SMALL, width=0.125))
    for model in (bn, bntt.train()):
        with pytest.raises(ConfigError, match="batch norm in training mode"):
            model(x)
        model.eval()
        model(x).sum().backward()  # eval mode: no checkpointing, no error
        with torch.no_grad():
            model(x)
