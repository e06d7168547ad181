"""Export: NIR (round trip, metadata, inexact parts, foreign graphs), ONNX (onnxruntime), cards, CLI.

Optional packages: the NIR tests need ``nir``, the ONNX tests ``onnx`` and ``onnxruntime``; each group is skipped
cleanly when its package is missing. Exports for snnTorch, sinabs and Norse: tests/test_export_targets.py.
"""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from spikeforge.app.commands import export as export_cmd
from spikeforge.engine.checkpoint import save_checkpoint
from spikeforge.errors import ConfigError
from spikeforge.models import create_model
from spikeforge.neuron import SpikingNeuron

VGG = dict(num_classes=10, in_channels=1, input_size=12, width=0.125, hidden=[64], mean=[0.1307], std=[0.3081])
RESNET = dict(num_classes=10, in_channels=3, input_size=32, width=0.0625, mean=[0.49, 0.48, 0.45],
              std=[0.25, 0.24, 0.26])


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one intra-op thread is faster, and far faster on a busy machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def images(kw, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, kw["in_channels"], kw["input_size"], kw["input_size"], generator=g)


@torch.no_grad()
def calibrate(model, x, q=0.7, per_channel_jitter=False, leak=None, seed=0):
    """Thresholds at the q-quantile of each layer's positive input current, so every layer spikes."""
    g = torch.Generator().manual_seed(seed)
    for n in model.neurons():
        seen = {}
        h = n.register_forward_hook(lambda _m, i, _o: seen.__setitem__("x", i[0]))
        model(x)
        h.remove()
        pos = seen["x"][seen["x"] > 0]
        n.threshold.fill_(float(pos.quantile(q)) if pos.numel() else 1.0)
        if per_channel_jitter and n.threshold.dim():
            n.threshold.mul_(torch.empty(n.threshold.shape).uniform_(0.7, 1.3, generator=g))
        if leak == "lif":
            n.leak.copy_(torch.empty(n.leak.shape).uniform_(0.6, 0.98, generator=g))
    model.eval()
    return model


@torch.no_grad()
def run_with_spikes(model, x):
    """``(logits, {neuron name: spikes [T, B, ...]}, last layer current [T, B, K])`` of a spikeforge model."""
    spikes, last = {}, {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, name=name: spikes.__setitem__(name, o.clone()))
             for name, m in model.named_modules() if isinstance(m, SpikingNeuron)]
    lin = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    hooks.append(lin.register_forward_hook(lambda _m, _i, o: last.__setitem__("x", o.clone())))
    logits = model(x)
    for h in hooks:
        h.remove()
    steps = getattr(model, "timesteps", None) or 1
    return logits, spikes, last["x"].reshape(steps, x.shape[0], -1)


# ------------------------------------------------------------------------------------------------------------------
# NIR
# ------------------------------------------------------------------------------------------------------------------
def test_parameter_mapping_is_exact():
    pytest.importorskip("nir")
    from spikeforge.export.nir_mapping import (input_gain, leak_from_nir, leak_to_nir, threshold_from_nir,
                                               threshold_to_nir)

    rng = np.random.default_rng(0)
    th = np.concatenate([rng.uniform(1e-3, 10, 5000), [1.0, 0.5, 2.0, 1e-3]]).astype(np.float32)
    v = threshold_to_nir(th)
    assert np.all(v < th) and np.array_equal(threshold_from_nir(v), th)
    # NIR's strict v > v_thr is spikeforge's v >= V_th for float32 membranes, including v == V_th exactly
    below = np.nextafter(th, np.float32(0))
    assert np.all(th > v) and not np.any(below > v)
    leaks = np.concatenate([rng.uniform(0, 1, 20000), [0.0, 0.5, 0.9, 0.999, 1 - 2 ** -24]]).astype(np.float32)
    for dt in (1.0, 1e-4, 0.37):
        p = leak_to_nir(leaks, dt)
        assert np.array_equal(leak_from_nir(p["tau"], dt), leaks)
        assert np.allclose(p["r"] * dt / p["tau"], 1.0, rtol=1e-12)  # Euler input coefficient R dt / tau = 1
        assert np.allclose(1 - dt / p["tau"], leaks.astype(np.float64), rtol=0, atol=1e-12)
    node = type("IFNode", (), {"r": np.array([1 / 0.25])})()
    assert np.allclose(input_gain(node, 0.25), 1.0)


CASES = [(arch, steps, neuron, pc) for arch in ("vgg4", "resnet12") for steps in (1, 4)
         for neuron in ("if", "lif") for pc in (False, True)]


@pytest.mark.parametrize("arch,steps,neuron,per_channel", CASES)
def test_nir_round_trip_is_exact(tmp_path, arch, steps, neuron, per_channel):
    pytest.importorskip("nir")
    from spikeforge.export import NIRNetwork, from_nir, read_nir, write_nir

    kw = VGG if arch == "vgg4" else RESNET
    # T=1: the default soft reset (exact at T=1); T=4: hard reset (NIR's reset)
    reset = "soft" if steps == 1 else "hard"
    model = create_model(arch, spiking=True, timesteps=steps, per_channel=per_channel, reset=reset, **kw)
    x = images(kw, n=3)
    calibrate(model, x, per_channel_jitter=per_channel, leak=neuron)
    path = tmp_path / "m.nir"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # exact: no InexactExportWarning
        write_nir(model, path)
    graph = read_nir(path)
    twin = from_nir(graph)
    assert type(twin) is type(model) and twin.timesteps == steps
    y = images(kw, n=3, seed=1)
    logits, spikes, _ = run_with_spikes(model, y)
    logits2, spikes2, _ = run_with_spikes(twin, y)
    assert torch.equal(logits, logits2)
    assert spikes.keys() == spikes2.keys()
    assert all(torch.equal(spikes[k], spikes2[k]) for k in spikes)
    assert sum(float(s.sum()) for s in spikes.values()) > 0
    for a, b in zip(model.neurons(), twin.neurons()):
        assert a.threshold.shape == b.threshold.shape and torch.equal(a.threshold, b.threshold)
        assert torch.equal(a.leak, b.leak)
    # the generic executor runs the same graph node by node with spikeforge's neuron: same logits and spikes
    net = from_nir(graph, generic=True)
    assert isinstance(net, NIRNetwork)
    got = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, name=name: got.__setitem__(name, o.clone()))
             for name, m in net.neurons.items()]
    with torch.no_grad():
        assert torch.equal(net(y), logits)
    for h in hooks:
        h.remove()
    assert all(torch.equal(got[k], spikes[k]) for k in spikes)


def test_nir_graph_content_and_metadata():
    nir = pytest.importorskip("nir")
    from spikeforge.export import from_nir, graph_info, to_nir

    model = create_model("vgg4", spiking=True, timesteps=1, **VGG)
    with torch.no_grad():
        model.neurons()[0].leak.fill_(1.0)
        model.neurons()[1].leak.fill_(0.75)
        model.neurons()[2].leak.fill_(0.0)
        model.neurons()[1].threshold.fill_(1.25)
    g = to_nir(model, dt=0.5, readout=True)
    n = g.nodes
    assert isinstance(n["input"], nir.Input) and list(n["input"].input_type["input"]) == [1, 12, 12]
    assert isinstance(n["normalize"], nir.Conv2d)
    assert np.allclose(n["normalize"].weight.ravel(), 1 / 0.3081) and np.allclose(n["normalize"].bias,
                                                                                   -0.1307 / 0.3081)
    assert isinstance(n["features.0"], nir.Conv2d) and not np.any(n["features.0"].bias)
    assert isinstance(n["features.1"], nir.IF) and np.allclose(n["features.1"].r, 1 / 0.5)
    lif = n["features.4"]
    assert isinstance(lif, nir.LIF) and lif.tau.shape == (16, 6, 6)
    assert np.allclose(lif.tau, 0.5 / 0.25) and np.allclose(lif.r, 4.0) and not np.any(lif.v_leak)
    assert np.all(lif.v_threshold == np.nextafter(np.float32(1.25), np.float32(0)))
    assert not np.any(getattr(lif, "v_reset", 0.0))  # nir 1.0.4 has no v_reset field: it resets to 0
    assert isinstance(n["classifier.2"], nir.LIF) and np.allclose(n["classifier.2"].tau, 0.5)  # leak 0: tau = dt
    assert isinstance(n["features.2"], nir.AvgPool2d) and isinstance(n["classifier.0"], nir.Flatten)
    assert n["classifier.0"].start_dim == 0
    assert isinstance(n["classifier.1"], nir.Linear) and isinstance(n["classifier.5"], nir.I)
    assert np.allclose(n["classifier.5"].r, 2.0) and ("classifier.5", "output") in g.edges
    assert "classifier.3" not in n  # dropout is an identity at inference
    info = graph_info(g)
    assert info["dt"] == 0.5 and info["timesteps"] == 1 and info["encoding"] == "direct"
    assert info["order"] == "integrate-fire" and info["reset"] == "soft" and info["exact"]
    assert info["readout"] == {"mode": "sum", "in_graph": True, "by_caller": False} and info["model"]["arch"] == "vgg4"
    assert g.metadata["timesteps"] == 1 and g.metadata["dt"] == 0.5
    assert any("leak and reset are exact" in s for s in info["notes"])
    # no readout node: the output is the last layer's per-step current
    g2 = to_nir(model, readout=False)
    assert "classifier.5" not in g2.nodes and ("classifier.4", "output") in g2.edges
    # the default at T=1: no integrator, the last affine layer's output is the logits (the readout over one step)
    g3 = to_nir(model)
    assert "classifier.5" not in g3.nodes and graph_info(g3)["readout"]["by_caller"]
    with torch.no_grad():
        x = images(VGG)
        assert torch.equal(from_nir(g3, generic=True)(x), model.eval()(x))
    # residual blocks: the second neuron gets two edges (NIR sums a node's inputs)
    res = create_model("resnet12", spiking=True, timesteps=1, **RESNET)
    gr = to_nir(res)
    assert {e for e in gr.edges if e[1] == "layers.1.act2"} == {("layers.1.conv2", "layers.1.act2"),
                                                                ("layers.1.shortcut.0", "layers.1.act2")}
    assert ("layers.0.act2", "layers.0.act2") not in gr.edges
    # identity shortcut: straight from the stem's pool
    assert {e for e in gr.edges if e[1] == "layers.0.act2"} == {("layers.0.conv2", "layers.0.act2"),
                                                                ("stem.8", "layers.0.act2")}


def test_nir_refuses_inexact_parts_unless_allowed(tmp_path):
    pytest.importorskip("nir")
    from spikeforge.export import InexactExportWarning, from_nir, graph_info, read_nir, to_nir, write_nir

    model = create_model("vgg4", spiking=True, timesteps=4, reset="soft", **VGG)
    x = images(VGG, n=3)
    calibrate(model, x, leak="lif")
    with pytest.raises(ConfigError, match="soft reset"):
        to_nir(model)
    with pytest.warns(InexactExportWarning, match="soft reset"):
        write_nir(model, tmp_path / "soft.nir", allow_inexact=True)
    graph = read_nir(tmp_path / "soft.nir")
    info = graph_info(graph)
    assert not info["exact"] and "soft reset" in info["inexact"][0] and graph.metadata["exact"] == 0
    twin = from_nir(graph)  # spikeforge's own import is exact from the metadata
    a, sa, _ = run_with_spikes(model, x)
    b, sb, _ = run_with_spikes(twin, x)
    assert torch.equal(a, b) and all(torch.equal(sa[k], sb[k]) for k in sa)
    with torch.no_grad():
        assert torch.equal(from_nir(graph, generic=True)(x), a)
    # fire-then-integrate ordering: refused even at T=1
    fi = create_model("resnet12", spiking=True, timesteps=1, order="fire-integrate", **RESNET)
    with pytest.raises(ConfigError, match="fire-integrate"):
        to_nir(fi)
    fi4 = calibrate(create_model("vgg4", spiking=True, timesteps=4, order="fire-integrate", reset="hard", **VGG), x)
    with pytest.warns(InexactExportWarning, match="fire-integrate"):
        g = to_nir(fi4, allow_inexact=True)
    c, sc, _ = run_with_spikes(from_nir(g), x)
    d, sd, _ = run_with_spikes(fi4, x)
    assert torch.equal(c, d) and sum(float(s.sum()) for s in sd.values()) > 0
    # a layer mixing leak 1 and leak < 1 channels
    mixed = create_model("vgg4", spiking=True, timesteps=4, per_channel=True, reset="hard", **VGG)
    calibrate(mixed, x, leak="lif")
    with torch.no_grad():
        mixed.neurons()[0].leak[:2] = 1.0
    with pytest.raises(ConfigError, match="leak 1"):
        to_nir(mixed)
    with pytest.warns(InexactExportWarning):
        g = to_nir(mixed, allow_inexact=True)
    assert torch.equal(from_nir(g).neurons()[0].leak, mixed.neurons()[0].leak)
    # an ANN has no NIR form
    with pytest.raises(ConfigError, match="ANN"):
        to_nir(create_model("vgg4", **VGG))


def test_nir_poisson_mean_readout_and_batchnorm(tmp_path):
    pytest.importorskip("nir")
    from spikeforge.export import from_nir, graph_info, read_nir, write_nir

    model = create_model("vgg4", spiking=True, timesteps=3, encoding="poisson", readout="mean", reset="hard",
                         batch_norm=True, **VGG)
    x = images(VGG, n=3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    torch.manual_seed(0)
    calibrate(model, x)
    write_nir(model, tmp_path / "p.nir")
    graph = read_nir(tmp_path / "p.nir")
    assert "normalize" not in graph.nodes  # the encoder (and the normalization before it) runs outside
    assert graph_info(graph)["encoding"] == "poisson"
    assert np.allclose(graph.nodes["classifier.5"].r, 1 / 3)  # mean readout: r = 1 / (T dt)
    twin = from_nir(graph)
    torch.manual_seed(1)
    a, sa, _ = run_with_spikes(model, x)
    torch.manual_seed(1)
    b, sb, _ = run_with_spikes(twin, x)
    assert torch.equal(a, b) and all(torch.equal(sa[k], sb[k]) for k in sa)
    # generic executor: feed the same encoded spikes
    torch.manual_seed(2)
    frames = model.encode(model.normalize(x))
    net = from_nir(graph, generic=True)
    with torch.no_grad():
        ref = model.run_time_first(frames)
        assert torch.equal(net(frames), ref)


def test_nir_import_of_a_foreign_graph():
    """A hand-written graph in the snnTorch convention (dt = 1e-4, r = tau/dt; IF with r = 1/dt) runs as expected."""
    nir = pytest.importorskip("nir")
    from spikeforge.export import NIRNetwork, from_nir

    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.6, (6, 5)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 6).astype(np.float32)
    w2 = rng.normal(0, 0.6, (3, 6)).astype(np.float32)
    dt, beta = 1e-4, np.full(6, 0.8)
    tau = dt / (1 - beta)
    graph = nir.NIRGraph(nodes={
        "in": nir.Input(input_type={"input": np.array([5])}),
        "fc1": nir.Affine(weight=w1, bias=b1),
        "lif": nir.LIF(tau=tau, r=2 * tau / dt, v_leak=np.zeros(6), v_threshold=np.full(6, 0.5)),
        "fc2": nir.Linear(weight=w2),
        "if": nir.IF(r=np.full(3, 1 / dt), v_threshold=np.full(3, 0.3)),
        "out": nir.Output(output_type={"output": np.array([3])})},
        edges=[("in", "fc1"), ("fc1", "lif"), ("lif", "fc2"), ("fc2", "if"), ("if", "out")])
    with pytest.raises(ConfigError, match="dt"):
        from_nir(graph)
    net = from_nir(graph, dt=dt)
    assert isinstance(net, NIRNetwork)
    x = torch.from_numpy(rng.uniform(0, 1, (7, 2, 5)).astype(np.float32))  # [T, B, 5]
    with torch.no_grad():
        out = net(x).numpy()
    # reference: forward Euler with NIR semantics (strict threshold, reset to 0), gain r*dt/tau = 2 on the LIF
    v1, v2, ref = np.zeros((2, 6)), np.zeros((2, 3)), []
    for t in range(7):
        v1 = 0.8 * v1 + 2 * (x[t].numpy() @ w1.T + b1)
        s1 = (v1 > 0.5).astype(np.float32)
        v1 = v1 * (1 - s1)
        v2 = v2 + s1 @ w2.T
        s2 = (v2 > 0.3).astype(np.float32)
        v2 = v2 * (1 - s2)
        ref.append(s2)
    assert np.array_equal(out, np.stack(ref)) and out.sum() > 0
    bad = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([3])}),
                              "li": nir.LI(tau=np.ones(3), r=np.ones(3), v_leak=np.zeros(3)),
                              "out": nir.Output(output_type={"output": np.array([3])})},
                       edges=[("in", "li"), ("li", "out")])
    with pytest.raises(ConfigError, match="LI is not supported"):
        from_nir(bad, dt=1.0)


# ------------------------------------------------------------------------------------------------------------------
# other NIR tools (snnTorch, sinabs, Norse): tests/test_export_targets.py
# ------------------------------------------------------------------------------------------------------------------
# ------------------------------------------------------------------------------------------------------------------
# ONNX
# ------------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def dyadic(model):
    """Weights on a 1/64 grid: every sum in the network is exact in float32, so any runtime gives the same bits."""
    for name, p in model.named_parameters():
        if not name.endswith(("threshold", "leak")):
            p.copy_(torch.round(p * 64) / 64)
    return model


@pytest.mark.parametrize("arch", ["vgg4", "resnet12"])
@pytest.mark.parametrize("spiking", [False, True])
def test_onnx_matches_pytorch(tmp_path, arch, spiking):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from spikeforge.export import check_onnx, to_onnx

    kw = VGG if arch == "vgg4" else RESNET
    model = create_model(arch, spiking=True, timesteps=1, **kw) if spiking else create_model(arch, **kw)
    x = images(kw, n=8)
    if spiking:
        calibrate(model, x)
    model.eval()
    to_onnx(model, tmp_path / "m.onnx", x, expose_spikes=spiking)
    res = check_onnx(tmp_path / "m.onnx", model, images(kw, n=8, seed=3))
    assert res["argmax_agree"] == 1.0 and res["max_abs_logit_diff"] < 1e-4
    if spiking:  # a spike can only flip if a current lies within float rounding of its threshold
        assert res["spike_mismatches"] <= 2
        # exact arithmetic (dyadic weights and inputs, normalization (x - 0.5) / 0.5): identical spikes and logits
        exact = create_model(arch, spiking=True, timesteps=1, **dict(kw, mean=[0.5], std=[0.5]))
        q = torch.round(images(kw, n=8, seed=4) * 16) / 16
        calibrate(dyadic(exact), q)
        with torch.no_grad():
            for n in exact.neurons():
                n.threshold.copy_(torch.round(n.threshold * 64) / 64 + 1 / 128)
        to_onnx(exact, tmp_path / "e.onnx", q, expose_spikes=True)
        res = check_onnx(tmp_path / "e.onnx", exact, q)
        assert res["spikes_equal"] and res["max_abs_logit_diff"] == 0.0
        assert json.loads((tmp_path / "e.onnx.card.json").read_text())["export"]["checks"]["spikes_equal"]


def test_onnx_heaviside_ops_and_refusals(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from spikeforge.export import build_onnx, check_onnx, to_onnx

    model = create_model("vgg4", spiking=True, timesteps=1, per_channel=True, **VGG)
    proto = build_onnx(model)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("GreaterOrEqual") == 3 and ops.count("Cast") == 3 and "Relu" not in ops
    assert ops[:2] == ["Sub", "Div"]
    ths = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer if i.name.endswith("threshold")}
    # per channel: [C, 1, 1] after a conv, [N] after a linear layer (hidden 64 x width 0.125 = 8)
    assert ths["features.1.threshold"].shape == (8, 1, 1) and ths["classifier.2.threshold"].shape == (8,)
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["spikeforge"])
    assert meta["kind"] == "snn-t1" and meta["snn"]["timesteps"] == 1
    with pytest.raises(ConfigError, match="T=4"):
        build_onnx(create_model("vgg4", spiking=True, timesteps=4, **VGG))
    with pytest.raises(ConfigError, match="poisson"):
        build_onnx(create_model("vgg4", spiking=True, timesteps=1, encoding="poisson", **VGG))
    # fire-then-integrate at T=1 fires from the zero initial membrane: no spikes, also in ONNX
    fi = create_model("vgg4", spiking=True, timesteps=1, order="fire-integrate", **VGG).eval()
    x = images(VGG)
    to_onnx(fi, tmp_path / "fi.onnx", x, expose_spikes=True, card=False)
    res = check_onnx(tmp_path / "fi.onnx", fi, x)
    assert res["spikes_equal"] and res["max_abs_logit_diff"] == 0.0
    assert not (tmp_path / "fi.onnx.card.json").exists()


# ------------------------------------------------------------------------------------------------------------------
# model card and command line
# ------------------------------------------------------------------------------------------------------------------
def _stage(tmp_path, model, metrics: dict | None):
    stage = tmp_path / "run" / "iir-T1"
    stage.mkdir(parents=True)
    header = {"stage": "iir-T1", "kind": "snn", "dataset": "mnist", "metrics": {"test_acc": 0.5}}
    save_checkpoint(stage / "model.pt", model, header)
    if metrics is not None:
        (stage / "metrics.json").write_text(json.dumps(metrics))
    return stage


def _cli(argv):
    parser = argparse.ArgumentParser(prog="spikeforge")
    export_cmd.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_exports_with_model_cards(tmp_path, capsys):
    pytest.importorskip("nir")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from spikeforge.export import from_nir, read_nir

    model = calibrate(create_model("vgg4", spiking=True, timesteps=1, **VGG), images(VGG))
    metrics = {"stage": "iir-T1", "kind": "snn", "timesteps": 1, "test_acc": 0.9637,
               "spike_rate": {"features.1": 0.05, "mean": 0.0514}}
    stage = _stage(tmp_path, model, metrics)
    assert _cli(["export", str(stage), "--format", "nir", "--out", str(tmp_path / "out" / "m.nir")]) == 0
    assert _cli(["export", str(stage / "model.pt"), "--out", str(tmp_path / "out" / "m.onnx")]) == 0
    text = capsys.readouterr().out
    assert "m.nir.card.md" in text and "argmax agreement 100.0%" in text
    card = json.loads((tmp_path / "out" / "m.nir.card.json").read_text())
    assert card["format"] == "nir" and card["dataset"] == "mnist" and card["timesteps"] == 1
    assert card["encoding"] == "direct" and card["test_acc"] == 0.9637 and card["spike_rate_mean"] == 0.0514
    assert card["energy_ratio"] is None and card["architecture"]["arch"] == "vgg4"
    assert card["export"]["exact"] and card["sha256"] and card["stage"] == "iir-T1"
    md = (tmp_path / "out" / "m.onnx.card.md").read_text()
    assert "96.37%" in md and "| energy ratio ANN/SNN | — |" in md
    onnx_card = json.loads((tmp_path / "out" / "m.onnx.card.json").read_text())
    assert onnx_card["export"]["checks"]["argmax_agree"] == 1.0
    twin = from_nir(read_nir(tmp_path / "out" / "m.nir"))
    x = images(VGG, seed=5)
    with torch.no_grad():
        assert torch.equal(twin(x), model.eval()(x))
    # default output beside the checkpoint; energy ratio from energy.json; metrics from the header otherwise
    (stage / "metrics.json").unlink()
    (stage / "energy.json").write_text(json.dumps({"timesteps": 1, "energy_ratio": 12.5}))
    assert _cli(["export", str(stage), "--format", "nir", "--no-readout"]) == 0
    card = json.loads((stage / "model.nir.card.json").read_text())
    assert card["test_acc"] == 0.5 and card["energy_ratio"] == 12.5 and card["spike_rate_mean"] is None
    assert card["export"]["readout_in_graph"] is False


def test_cli_errors_are_config_errors(tmp_path):
    pytest.importorskip("nir")
    pytest.importorskip("onnx")
    snn4 = create_model("vgg4", spiking=True, timesteps=4, **VGG)
    stage = _stage(tmp_path, snn4, None)
    with pytest.raises(ConfigError, match="T=4"):
        _cli(["export", str(stage), "--format", "onnx", "--out", str(tmp_path / "x.onnx")])
    with pytest.raises(ConfigError, match="soft reset"):
        _cli(["export", str(stage), "--out", str(tmp_path / "x.nir")])
    with pytest.raises(ConfigError, match="--format"):
        _cli(["export", str(stage), "--out", str(tmp_path / "x.bin")])
    assert _cli(["export", str(stage), "--out", str(tmp_path / "x.nir"), "--allow-inexact"]) == 0
    assert (tmp_path / "x.nir.card.json").exists()
