"""SAM and Grad-CAM (spikeforge.analysis.explain): golden NCS values, shapes, hooks, pytorch-grad-cam parity, CLI."""

from __future__ import annotations

import argparse
import json
import math
import os

import pytest
import torch
from torch import nn

from spikeforge import create_model
from spikeforge.errors import ConfigError, ShapeError
from spikeforge.analysis.explain import (
    SAM,
    GradCAM,
    default_layer,
    fgsm,
    layer_names,
    neuronal_contribution,
    pearson,
    resolve_layer,
    sam_maps,
)
from spikeforge.app.commands.explain import add_parser as add_explain_parser, find_ann_twin

TINY = dict(num_classes=10, in_channels=1, input_size=28, width=0.125, hidden=[32])
TINY_RES = dict(num_classes=10, in_channels=3, input_size=16, width=0.0625)
HAS_MNIST = os.path.isdir(os.path.join(os.environ.get("SPIKEFORGE_DATA", ""), "mnist"))


def _snn(arch="vgg4", steps=4, **kw):
    torch.manual_seed(0)
    base = TINY if arch.startswith("vgg") else TINY_RES
    model = create_model(arch, spiking=True, timesteps=steps, threshold=0.3, **{**base, **kw})
    return model.eval()


def _images(model, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    s = model.spec
    return torch.rand(batch, s.in_channels, s.input_size, s.input_size, generator=g)


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               for m in model.modules())


# ---------------------------------------------------------------------------------------------------------------
# Neuronal contribution score: golden values


def _ncs_loop(train, gamma, variant):
    """Brute-force NCS of one spike train (list of 0/1), straight from the two definitions."""
    out = []
    for t in range(len(train)):
        if variant == "paper":
            out.append(sum(math.exp(-gamma * (t - p)) for p in range(t) if train[p]))
        else:
            out.append(sum(math.exp(-gamma * (t - p * train[p])) for p in range(t + 1)))
    return out


def test_ncs_always_spiking_converges():
    g = 0.5
    steps = 40
    ncs = neuronal_contribution(torch.ones(steps, 1), g)[:, 0]
    limit = math.exp(-g) / (1 - math.exp(-g))
    assert limit == pytest.approx(1.5415, abs=1e-4)
    assert ncs[0] == 0
    for t in (1, 2, 5):
        assert ncs[t].item() == pytest.approx(sum(math.exp(-g * k) for k in range(1, t + 1)), rel=1e-6)
    assert ncs[-1].item() == pytest.approx(limit, abs=1e-5)
    # the official code also counts the current spike (weight 1): 1 / (1 - e^-g)
    ref = neuronal_contribution(torch.ones(steps, 1), g, "reference")[:, 0]
    assert ref[-1].item() == pytest.approx(1 / (1 - math.exp(-g)), abs=1e-5)


@pytest.mark.parametrize("t", [0, 1, 3, 7])
def test_ncs_single_spike_at_t(t):
    g = 0.5
    train = torch.zeros(8, 1)
    train[t] = 1
    assert neuronal_contribution(train, g)[t, 0].item() == 0.0  # strict past: the current spike does not count
    ref = neuronal_contribution(train, g, "reference")[t, 0].item()
    assert ref == pytest.approx(1 + t * math.exp(-g * t), rel=1e-6)  # the official SAM code (Kim & Panda 2021)


def test_ncs_matches_definitions_and_recursion():
    g = 0.7
    spikes = (torch.rand(9, 3, 5, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    for variant in ("paper", "reference"):
        ncs = neuronal_contribution(spikes, g, variant)
        for idx in [(0, 0), (1, 3), (2, 4)]:
            train = spikes[:, idx[0], idx[1]].tolist()
            assert ncs[:, idx[0], idx[1]].tolist() == pytest.approx(_ncs_loop(train, g, variant), rel=1e-5, abs=1e-6)
    paper = neuronal_contribution(spikes, g)
    rec = torch.zeros_like(spikes[0])
    for t in range(1, spikes.shape[0]):
        rec = math.exp(-g) * (rec + spikes[t - 1])
        torch.testing.assert_close(paper[t], rec)
    hand = neuronal_contribution(torch.tensor([1.0, 0, 0, 1, 0, 1]), 0.5)
    e = lambda k: math.exp(-0.5 * k)  # noqa: E731
    assert hand.tolist() == pytest.approx([0, e(1), e(2), e(3), e(4) + e(1), e(5) + e(2)], rel=1e-6)


def test_sam_map_sums_ncs_times_current_spikes_over_channels():
    s = torch.zeros(3, 1, 2, 1, 2)  # [T, B, C, H, W]
    s[:, 0, 0, 0, 0] = torch.tensor([1.0, 1.0, 1.0])
    s[:, 0, 1, 0, 0] = torch.tensor([1.0, 0.0, 1.0])
    s[:, 0, 1, 0, 1] = torch.tensor([1.0, 1.0, 0.0])  # silent at t=2: contributes nothing then
    m = sam_maps(s, 0.5)
    e = lambda k: math.exp(-0.5 * k)  # noqa: E731
    assert m.shape == (3, 1, 1, 2)
    assert m[:, 0, 0, 0].tolist() == pytest.approx([0, e(1), (e(1) + e(2)) + e(2)], rel=1e-6)
    assert m[:, 0, 0, 1].tolist() == pytest.approx([0, e(1), 0], rel=1e-6)
    with pytest.raises(ConfigError, match="variant"):
        neuronal_contribution(s, 0.5, "nope")
    with pytest.raises(ConfigError, match="gamma"):
        neuronal_contribution(s, -1.0)


# ---------------------------------------------------------------------------------------------------------------
# Layers


def test_layer_names_and_resolution():
    snn = _snn()
    assert layer_names(snn) == {"conv": ["features.0", "features.3"], "neuron": ["features.1", "features.4"]}
    assert default_layer(snn) == "features.4"
    assert resolve_layer(snn, "features.3") == "features.4"
    assert resolve_layer(snn, snn.features[0]) == "features.1"
    with pytest.raises(ConfigError, match=r"unknown target layer 'features\.9'.*features\.0, features\.3.*features\.1"):
        resolve_layer(snn, "features.9")
    with pytest.raises(ConfigError, match="unknown target layer 'classifier.2'"):
        SAM(snn, ["classifier.2"])  # a fully connected neuron layer has no spatial map
    res = _snn("resnet12", steps=2)
    assert resolve_layer(res, "layers.1.conv1") == "layers.1.act1"
    assert resolve_layer(res, "layers.1.conv2") == "layers.1.act2"
    assert resolve_layer(res, "layers.1.shortcut.0") == "layers.1.act2"
    assert resolve_layer(res, "stem.3") == "stem.4"  # conv, neuron, dropout slot, conv, neuron
    ann = create_model("vgg4", **TINY)
    assert layer_names(ann) == layer_names(snn) and default_layer(ann) == "features.4"  # twins share names
    with pytest.raises(ConfigError, match="SAM needs a spiking network"):
        SAM(ann)


# ---------------------------------------------------------------------------------------------------------------
# SAM


@pytest.mark.parametrize("arch,layers", [
    ("vgg5", ["features.1"]),
    ("vgg5", ["features.3", "features.6"]),
    ("resnet12", ["stem.0", "layers.0.act1", "layers.2.conv2"]),
])
def test_sam_shapes_without_gradients(arch, layers):
    model = _snn(arch, steps=3)
    for p in model.parameters():
        p.requires_grad_(False)
    x = _images(model, batch=2)
    with torch.no_grad(), SAM(model, target_layers=layers) as sam:
        maps = sam(x)
    size = model.spec.input_size
    assert maps.shape == (3, 2, size, size) and sam.summed.shape == (2, size, size)
    assert not maps.requires_grad and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    assert sam.outputs.shape == (2, 10)
    for name in sam.layers:
        assert sam.spikes[name].shape[:2] == (3, 2) and sam.raw[name].shape[:2] == (3, 2)
        assert set(sam.spikes[name].unique().tolist()) <= {0.0, 1.0}
    # strict past: nothing before the first step, so the first map is empty
    assert torch.all(maps[0] == 0)
    assert _no_hooks(model)


def test_sam_summed_and_variants():
    model = _snn(steps=5)
    x = _images(model)
    sam = SAM(model, ["features.1"], normalize="none")
    maps = sam(x)
    raw = sam.raw["features.1"]
    torch.testing.assert_close(sam.raw_summed["features.1"], raw.sum(0))
    assert maps.shape == (5, 2, 28, 28) and torch.allclose(maps, raw)  # 28x28 layer: upsampling is the identity
    ncs = neuronal_contribution(sam.spikes["features.1"])
    torch.testing.assert_close(raw, (ncs * sam.spikes["features.1"]).sum(2))
    ref = SAM(model, ["features.1"], variant="reference", normalize="none")
    ref(x)
    assert torch.all(ref.raw["features.1"] >= raw) and ref.raw["features.1"][0].max() > 0
    seq = SAM(model, ["features.1"], normalize="sequence")(x)
    assert seq.amax((0, 2, 3)).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    with pytest.raises(ConfigError, match="label-free"):
        sam(x, targets=[1, 2])


def test_sam_stitches_time_chunks():
    """Long T under no_grad runs in chunks carrying the state: SAM must see the whole spike train."""
    a = _snn(steps=5, time_chunk=2)
    b = _snn(steps=5, time_chunk=None)
    x = _images(a)
    sa, sb = SAM(a, ["features.4"]), SAM(b, ["features.4"])
    torch.testing.assert_close(sa(x), sb(x))
    torch.testing.assert_close(sa.spikes["features.4"], sb.spikes["features.4"])
    assert sa.spikes["features.4"].shape[0] == 5


def test_hooks_removed_after_use_and_after_errors():
    model = _snn()
    x = _images(model)
    sam = SAM(model, ["features.1", "features.4"])
    sam(x)
    assert _no_hooks(model)
    with pytest.raises(ShapeError):
        sam(torch.rand(2, 3, 28, 28))  # wrong channel count: fails inside the forward pass
    assert _no_hooks(model)
    with pytest.raises(RuntimeError, match="boom"):
        with GradCAM(model, ["features.4"]) as cam:
            cam(x)
            raise RuntimeError("boom")
    assert _no_hooks(model)
    with pytest.raises(ConfigError, match="targets"):
        GradCAM(model, ["features.4"])(x, targets=[1, 2, 3])
    assert _no_hooks(model) and model.training is False


# ---------------------------------------------------------------------------------------------------------------
# Grad-CAM


def test_snn_gradcam_sums_gradients_over_time():
    model = _snn(steps=4)
    x = _images(model)
    cam = GradCAM(model, ["features.4"])
    maps = cam(x, targets=[3, 5])
    assert maps.shape == (4, 2, 28, 28) and cam.summed.shape == (2, 28, 28)
    assert cam.outputs.shape == (2, 10) and cam.classes == [3, 5]
    # independent computation: record the spikes, backprop the class scores, sum gradients over T
    store = {}
    h = model.features[4].register_forward_hook(lambda m, i, o: store.setdefault("s", o))
    try:
        out = model(x.clone().requires_grad_(True))
        (g,) = torch.autograd.grad(out[0, 3] + out[1, 5], store["s"])
    finally:
        h.remove()
    alpha = g.sum(0).mean((2, 3))
    torch.testing.assert_close(cam.weights["features.4"], alpha)
    spikes = store["s"].detach()
    torch.testing.assert_close(cam.raw["features.4"], torch.einsum("bc,tbchw->tbhw", alpha, spikes).clamp(min=0))
    torch.testing.assert_close(cam.raw_summed["features.4"],
                               torch.einsum("bc,bchw->bhw", alpha, spikes.sum(0)).clamp(min=0))
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():  # works inside no_grad too (gradients are switched on for the call)
        assert cam(x).shape == (4, 2, 28, 28)


def test_resnet_gradcam_shapes():
    model = _snn("resnet12", steps=2)
    maps = GradCAM(model, ["layers.1.act2"])(_images(model, batch=3))
    assert maps.shape == (2, 3, 16, 16)


def _trained_like_ann(arch="vgg4", **kw):
    torch.manual_seed(0)
    base = TINY if arch.startswith("vgg") else TINY_RES
    model = create_model(arch, **{**base, **kw}).eval()
    with torch.no_grad():  # mix of signs so that Grad-CAM maps are not all clipped to zero
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, 0.3)
    return model


@pytest.mark.parametrize("arch,layers", [
    ("vgg4", ["features.4"]),
    ("vgg4", ["features.1", "features.4"]),
    ("resnet12", ["layers.1.act2"]),
])
def test_ann_gradcam_matches_pytorch_grad_cam(arch, layers):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = _trained_like_ann(arch)
    x = _images(model, batch=3)
    modules = dict(model.named_modules())
    for targets in (None, [1, 4, 7]):
        ours = GradCAM(model, layers)
        ours(x, targets=targets)
        pg_targets = None if targets is None else [ClassifierOutputTarget(t) for t in targets]
        with pgc.GradCAM(model=model, target_layers=[modules[n] for n in layers]) as ref:
            theirs = torch.from_numpy(ref(input_tensor=x, targets=pg_targets))
        assert theirs.shape == ours.summed.shape
        assert float(theirs.amax()) > 0.5  # not a degenerate all-zero map
        torch.testing.assert_close(ours.summed, theirs, atol=2e-5, rtol=0)
        torch.testing.assert_close(ours(x, targets=targets)[0], theirs, atol=2e-5, rtol=0)  # T = 1


# ---------------------------------------------------------------------------------------------------------------
# FGSM and consistency


def test_fgsm_and_pearson():
    model = _snn(steps=2)
    x = _images(model)
    y = torch.tensor([1, 2])
    xa = fgsm(model, x, y, 0.1)
    assert xa.shape == x.shape and xa.min() >= 0 and xa.max() <= 1
    assert (xa - x).abs().max() <= 0.1 + 1e-6 and not torch.equal(xa, x)
    torch.testing.assert_close(fgsm(model, x, y, 0.0), x)
    a = torch.rand(3, 5, 5)
    r = pearson(a, torch.stack([a[0], -a[1], torch.ones(5, 5)]))
    assert r[0].item() == pytest.approx(1.0) and r[1].item() == pytest.approx(-1.0) and math.isnan(r[2].item())


# ---------------------------------------------------------------------------------------------------------------
# CLI


def _explain_args(argv):
    parser = argparse.ArgumentParser(prog="spikeforge")
    sub = parser.add_subparsers(dest="command", required=True)
    add_explain_parser(sub)
    return parser.parse_args(["explain", *argv])


@pytest.fixture
def tiny_run(tmp_path):
    from spikeforge.engine.checkpoint import save_checkpoint

    run = tmp_path / "run"
    torch.manual_seed(0)
    ann = create_model("vgg4", **TINY)
    snn = create_model("vgg4", spiking=True, timesteps=2, threshold=0.3, **TINY)
    snn.load_state_dict(ann.state_dict(), strict=False)
    save_checkpoint(run / "ann" / "model.pt", ann, {"dataset": "mnist", "stage": "ann", "kind": "ann"})
    save_checkpoint(run / "x" / "model.pt", snn, {"dataset": "mnist", "stage": "x", "kind": "snn"})
    (run / "summary.json").write_text(json.dumps({"stages": [{"stage": "ann", "kind": "ann"},
                                                             {"stage": "x", "kind": "snn"}]}))
    return run


def test_find_ann_twin(tiny_run, tmp_path):
    assert find_ann_twin(tiny_run / "x") == (tiny_run / "ann" / "model.pt").resolve()
    assert find_ann_twin(tiny_run / "x" / "model.pt") == (tiny_run / "ann" / "model.pt").resolve()
    assert find_ann_twin(tiny_run / "ann") is None  # an ANN is not its own twin
    (tiny_run / "summary.json").write_text("{not json")
    assert find_ann_twin(tiny_run / "x") is None


@pytest.mark.skipif(not HAS_MNIST, reason="needs MNIST under $SPIKEFORGE_DATA")
def test_explain_cli_on_tiny_checkpoint(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    args = _explain_args([str(tiny_run / "x"), "--method", "sam", "--images", "2", "--attack", "fgsm", "--eps", "0.1",
                          "--timesteps", "3", "--out", str(out), "--device", "cpu"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "mean consistency" in text and "features.4" in text
    rep = json.loads((out / "sam_features.4_T3_fgsm0.1.json").read_text())
    assert rep["layer"] == "features.4" and rep["timesteps"] == 3 and rep["attack"]["eps"] == 0.1
    assert rep["ann_checkpoint"].endswith("ann/model.pt")  # found through summary.json
    assert [r["index"] for r in rep["images"]] == [0, 1]
    assert set(rep["images"][0]["consistency"]) == {"sam", "ann_gradcam"}
    assert set(rep["mean_consistency"]) == {"sam", "ann_gradcam"}
    for name in rep["files"]:
        assert (out / name).stat().st_size > 1000 and name.endswith(".png")
    assert {"sam_features.4_T3_fgsm0.1_img1.png", "sam_features.4_T3_fgsm0.1_overview.png"} <= set(rep["files"])

    args = _explain_args([str(tiny_run / "x" / "model.pt"), "--method", "gradcam", "--layer", "features.0",
                          "--images", "1", "--start", "3", "--no-ann", "--encoding", "poisson", "--out", str(out),
                          "--device", "cpu"])
    assert args.func(args) == 0
    rep = json.loads((out / "gradcam_features.1_T2_poisson.json").read_text())
    assert rep["ann_checkpoint"] is None and rep["images"][0]["index"] == 3 and rep["encoding"] == "poisson"
    assert rep["mean_consistency"] is None and (out / "gradcam_features.1_T2_poisson_img3.png").is_file()

    args = _explain_args([str(tiny_run / "ann"), "--method", "gradcam", "--images", "1", "--out", str(out),
                          "--device", "cpu"])
    assert args.func(args) == 0 and (out / "gradcam_features.4_img0.png").is_file()


@pytest.mark.parametrize("argv,match", [
    (["--layer", "features.7"], "valid conv layers: features.0, features.3"),
    (["--attack", "fgsm"], "needs --eps"),
    (["--eps", "0.1"], "needs --attack"),
    (["--images", "0"], "--images"),
])
def test_explain_cli_errors(tiny_run, argv, match):
    args = _explain_args([str(tiny_run / "x"), "--device", "cpu", *argv])
    with pytest.raises(ConfigError, match=match):
        args.func(args)


def test_explain_cli_sam_on_ann_is_an_error(tiny_run):
    args = _explain_args([str(tiny_run / "ann"), "--method", "sam", "--device", "cpu"])
    with pytest.raises(ConfigError, match="SAM needs an SNN"):
        args.func(args)
