"""STDP network (Diehl & Cook) with pruning and quantization: neuron dynamics against hand-computed values, both STDP
rules on hand-made spike pairs, normalization, persistent masks, quantization levels, crossbar arithmetic, and a tiny
``stdp`` stage run through the engine (synthetic image folder) with resume after an interruption."""

import json
import math

import pytest
import torch

import spikeforge.engine.stages.stdp as stdp_stage
from spikeforge.engine.checkpoint import save_checkpoint
from spikeforge.engine.recipe import parse_recipe
from spikeforge.engine.stages import run
from spikeforge.engine.stages.stdp import load_stdp
from spikeforge.errors import CheckpointError, ConfigError
from spikeforge.methods.stdp import network as nw
from spikeforge.methods.stdp.hardware import CrossbarModel, crossbar_cost
from spikeforge.methods.stdp.learn import assign_labels, predict, train_batch
from spikeforge.methods.stdp.network import DiehlCook, NetConfig
from spikeforge.methods.stdp.preprocess import preprocess
from spikeforge.methods.stdp.prune import level_values, prune_lowest, prune_target, pruned_fraction, quantize
from spikeforge.methods.stdp.rules import apply_update, weight_update
from spikeforge.models import create_model


def one_neuron(model, w, **kw):
    """A 1-input, 1-neuron network whose input spikes at every step (rate 1000/dt Hz, pixel 1)."""
    cfg = NetConfig(n_input=1, n_neurons=1, model=model, max_rate=1000.0, min_spikes=0, **kw)
    net = DiehlCook(cfg)
    net.W.fill_(w)
    return net


@pytest.mark.parametrize("compiled", [False, True])
def test_current_lif_matches_hand_computed_trajectory(compiled):
    # v_n = v_rest + w (1 - d^n) / (1 - d) with d = exp(-1/100): -62, -59.0299, -56.0893, -53.1779, -50.2955 > -52
    net = one_neuron("current", 3.0, t_present=12)
    x = torch.ones(1, 1)
    v = net.present(x, learn=False, generator=torch.Generator().manual_seed(0), record_v=True)["v"][:, 0, 0]
    assert v[:4].tolist() == pytest.approx([-62.0, -59.02985, -56.08925, -53.17792], abs=1e-4)
    # spike at step 5 (index 4): reset to -60, then 5 refractory steps where v only decays towards rest (-65)
    d = math.exp(-0.01)
    expect = [-60.0]
    for _ in range(5):
        expect.append((expect[-1] + 65) * d - 65)
    expect.append((expect[-1] + 65) * d - 65 + 3.0)  # input integrates again
    assert v[4:11].tolist() == pytest.approx(expect, abs=1e-4)
    nw._KERNEL["disabled"] = not compiled
    try:
        out = net.present(x, learn=True, generator=torch.Generator().manual_seed(0))
    finally:
        nw._KERNEL["disabled"] = False
    spikes = out["spikes_out"][:, 0, 0]
    assert spikes.nonzero().squeeze(1).tolist()[0] == 4
    assert out["theta_rise"].item() == pytest.approx(0.05 * spikes.sum().item(), abs=1e-5)


def test_conductance_lif_first_steps_by_hand():
    # tau_m dv/dt = (v_rest - v) + k g_e (E_exc - v), k = tau_ge/dt (1 - exp(-dt/tau_ge)) = 1 - e^-1 (mean over step)
    net = one_neuron("conductance", 1.0, t_present=3)
    v = net.present(torch.ones(1, 1), learn=False, generator=torch.Generator(), record_v=True)["v"][:, 0, 0]
    # exponential Euler: v -> v_inf + (v - v_inf) exp(-dt/tau_m (1 + k g)), v_inf = (v_rest + k g E_exc)/(1 + k g)
    k = 1 - math.exp(-1)
    G1 = 1 + k * 1.0
    v1 = (-65 / G1) + (-65 - (-65 / G1)) * math.exp(-0.01 * G1)
    G2 = 1 + k * (1.0 * math.exp(-1) + 1.0)
    v2 = (-65 / G2) + (v1 - (-65 / G2)) * math.exp(-0.01 * G2)
    assert v[0].item() == pytest.approx(v1, abs=1e-4)  # -64.5925
    assert v1 == pytest.approx(-64.5925, abs=1e-4)
    assert v[1].item() == pytest.approx(v2, abs=1e-4)


def test_compiled_and_pytorch_loops_agree():
    torch.manual_seed(0)
    for model in ("conductance", "current"):
        cfg = NetConfig(n_input=64, n_neurons=12, model=model, t_present=60)
        net = DiehlCook(cfg, torch.Generator().manual_seed(1))
        net.normalize()
        x = torch.rand(5, 64)
        outs = []
        for disabled in (True, False):
            nw._KERNEL["disabled"] = disabled
            outs.append(net.present(x, learn=True, generator=torch.Generator().manual_seed(3)))
        nw._KERNEL["disabled"] = False
        assert torch.equal(outs[0]["spikes_out"], outs[1]["spikes_out"])
        assert torch.allclose(outs[0]["theta_rise"], outs[1]["theta_rise"])


def test_trace_rule_on_hand_made_spike_pairs():
    cfg = NetConfig(n_input=1, n_neurons=1, rule="trace")
    T = 10
    pre = torch.zeros(T, 1, 1, dtype=torch.bool)
    post = torch.zeros(T, 1, 1)
    pre[2] = pre[9] = True
    post[5] = post[7] = 1.0
    W = torch.full((1, 1), 0.5)
    cols, d = weight_update(cfg, W, pre, post)
    # post at 5: post2 before = 0 -> nothing; post at 7: nu_post * x_pre(e^-5/20) * post2_before(e^-2/40)
    # pre at 2: post1 = 0 -> nothing; pre at 9: - nu_pre * post1 (e^-2/20)
    expect = 1e-2 * math.exp(-5 / 20) * math.exp(-2 / 40) - 1e-4 * math.exp(-2 / 20)
    assert cols.tolist() == [0]
    assert d.item() == pytest.approx(expect, rel=1e-5)


def test_powerlaw_rule_on_hand_made_spike_pairs():
    cfg = NetConfig(n_input=2, n_neurons=1, rule="powerlaw", eta=0.01, x_tar=0.4, mu=0.2)
    T = 8
    pre = torch.zeros(T, 1, 2, dtype=torch.bool)
    pre[2, 0, 0] = pre[4, 0, 0] = True  # input 0: two spikes before the post spike; input 1 silent
    post = torch.zeros(T, 1, 1)
    post[5] = 1.0
    W = torch.tensor([[0.3], [0.6]])
    _, d = weight_update(cfg, W, pre, post)
    x0 = math.exp(-3 / 20) + math.exp(-1 / 20)  # additive trace
    assert d[0, 0].item() == pytest.approx(0.01 * (x0 - 0.4) * (1 - 0.3) ** 0.2, rel=1e-5)
    assert d[1, 0].item() == pytest.approx(0.01 * (0 - 0.4) * (1 - 0.6) ** 0.2, rel=1e-5)  # depressed


def test_normalization_keeps_each_neurons_weight_sum():
    net = DiehlCook(NetConfig(n_neurons=7), torch.Generator().manual_seed(0))
    net.W.mul_(torch.rand(net.W.shape))
    net.normalize()
    assert torch.allclose(net.W.sum(0), torch.full((7,), 78.0), rtol=1e-5)
    kept = (net.W * prune_lowest(net.W, net.mask, 0.5)).sum(0) / 78.0
    net.prune_to(prune_lowest(net.W, net.mask, 0.5))
    net.W.add_(0.3).mul_(net.mask)  # STDP-like change, then normalization keeps the pruned neuron's reduced sum
    net.normalize()
    assert torch.allclose(net.W.sum(0), 78.0 * kept, rtol=1e-5)
    assert (kept < 1).all() and (kept > 0.5).all()
    assert (net.W[~net.mask] == 0).all()


def test_pruned_synapses_stay_pruned_under_stdp():
    g = torch.Generator().manual_seed(0)
    net = DiehlCook(NetConfig(n_input=100, n_neurons=6, t_present=40, norm=10.0), g)
    net.mask.copy_(prune_lowest(net.W, net.mask, 0.6))
    before = net.mask.clone()
    assert pruned_fraction(net.mask) == pytest.approx(0.6)
    assert (net.mask.sum(0) == 40).all()  # per neuron
    for _ in range(4):
        train_batch(net, torch.rand(4, 100, generator=g), g)
    assert torch.equal(net.mask, before)
    assert (net.W[~net.mask] == 0).all()
    assert (net.W[net.mask] > 0).any()
    # pruning again only removes more
    m2 = prune_lowest(net.W, net.mask, 0.8)
    assert not (m2 & ~before).any() and pruned_fraction(m2) == pytest.approx(0.8)


@pytest.mark.parametrize("range_", ["wmax", "neuron"])
def test_quantized_weights_lie_on_the_levels(range_):
    W = torch.rand(50, 4) * 0.7
    mask = torch.rand(50, 4) > 0.3
    q = quantize(W * mask, mask, 16, 1.0, range_)
    for n in range(4):
        top = 1.0 if range_ == "wmax" else float((W * mask)[:, n].max())
        lv = level_values(16, top)
        dist = (q[:, n, None] - lv[None, :]).abs().min(1).values
        assert dist.max() < 1e-6
        assert (q[~mask[:, n], n] == 0).all()
    assert ((q - W * mask).abs() <= (1.0 / 15) / 2 + 1e-6).all() or range_ == "neuron"


@pytest.mark.parametrize("range_", ["wmax", "neuron"])
def test_sum_preserving_rounding_keeps_levels_and_neuron_totals(range_):
    torch.manual_seed(0)
    mask = torch.rand(200, 6) > 0.5
    W = (torch.rand(200, 6) ** 3) * mask
    W = W / W.sum(0) * 20.0
    q = quantize(W, mask, 16, 1.0, range_, rounding="sum")
    top = torch.ones(6) if range_ == "wmax" else W.amax(0)
    step = top / 15
    lv = q / step
    assert (lv - lv.round()).abs().max() < 1e-4  # on the levels
    assert ((q - W).abs() < step + 1e-6).all()  # floor or ceiling of each weight
    assert ((q.sum(0) - W.sum(0)).abs() <= step / 2 + 1e-4).all()  # each neuron's total kept
    assert (q[~mask] == 0).all()
    nearest = quantize(W, mask, 16, 1.0, range_)
    assert (nearest.sum(0) - W.sum(0)).abs().max() > (q.sum(0) - W.sum(0)).abs().max()
    # hand-made column: four weights 0.1 with levels 0, 1/3, 2/3, 1. Nearest rounds all to 0 (total 0 instead of
    # 0.4); largest remainder lifts round(4 * 0.3) = 1 of them (the first: equal remainders keep their order).
    w = torch.full((4, 1), 0.1)
    m = torch.ones_like(w, dtype=torch.bool)
    assert quantize(w, m, 4, 1.0, "wmax").sum() == 0
    q3 = quantize(w, m, 4, 1.0, "wmax", rounding="sum")
    assert torch.allclose(q3.flatten(), torch.tensor([1 / 3, 0.0, 0.0, 0.0]))
    with pytest.raises(ConfigError, match="rounding"):
        quantize(w, m, 4, 1.0, "wmax", rounding="up")


def test_apply_update_clips_and_masks():
    net = DiehlCook(NetConfig(n_input=3, n_neurons=2))
    net.W.fill_(0.5)
    net.mask[0, 1] = False
    apply_update(net, (torch.tensor([0, 1]), torch.tensor([[1.0, 0.2], [-1.0, 0.1], [0.1, 0.1]])))
    assert torch.allclose(net.W, torch.tensor([[1.0, 0.0], [0.0, 0.6], [0.6, 0.6]]))


def test_labeling_and_prediction():
    counts = torch.tensor([[5.0, 0, 1], [0, 4, 0], [4, 1, 0], [0, 0, 3]])
    labels = torch.tensor([0, 1, 0, 2])
    assign = assign_labels(counts, labels, 3)
    assert assign.tolist() == [0, 1, 2]
    assert predict(torch.tensor([[0.0, 2, 1], [3, 0, 0]]), assign, 3).tolist() == [1, 0]


def test_crossbar_cost_arithmetic():
    m = CrossbarModel(tile=64, bits_per_cell=4, baseline_bits=8, periphery_cells=1024, e_cell_pj=0.1, e_row_pj=1.0,
                      e_column_pj=0.5)
    dense_mask = torch.ones(130, 70, dtype=torch.bool)
    spikes = torch.ones(130)
    dense = crossbar_cost(dense_mask, None, spikes, 10.0, m)
    # 8 bits / 4 bits per cell = 2 cells per synapse -> 140 columns: 3 x 3 tiles
    assert dense["cells_per_synapse"] == 2 and dense["crossbars"] == 9
    assert dense["area_cells"] == 9 * (64 * 64 + 1024)
    # energy: 130 spikes x 140 cells x 0.1 + 130 spikes x 3 crossbars x 1 + 10 steps x 9 x 64 columns x 0.5
    assert dense["energy_pj"] == pytest.approx(130 * 140 * 0.1 + 130 * 3 * 1.0 + 10 * 9 * 64 * 0.5)
    sparse_mask = torch.zeros(130, 70, dtype=torch.bool)
    sparse_mask[:10] = True
    sp = crossbar_cost(sparse_mask, 16, spikes, 10.0, m)
    assert sp["bits"] == 4 and sp["cells_per_synapse"] == 1 and sp["crossbars"] == 2
    assert sp["crossbars_ideal"] == 1
    assert sp["energy_pj"] == pytest.approx(10 * 70 * 0.1 + 10 * 2 * 1.0 + 10 * 2 * 64 * 0.5)


def test_preprocess_grayscale_resize_dog():
    x = torch.zeros(2, 3, 32, 32)
    x[:, :, 8:24, 8:24] = 1.0
    out = preprocess(x, {"size": 16, "dog": [1.0, 2.0]})
    assert out.shape == (2, 256)
    assert out.max().item() == pytest.approx(1.0) and out.min().item() >= 0
    img = out[0].view(16, 16)
    assert img[4, 8] > img[8, 8]  # edges respond more than the flat interior


def _write_bars(root, n=12, size=20):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for cls in ("horizontal", "vertical"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                img = torch.zeros(size, size, 3, dtype=torch.uint8)
                k = int(torch.randint(2, size - 4, (1,), generator=g))
                if cls == "horizontal":
                    img[k:k + 3, :, :] = 255
                else:
                    img[:, k:k + 3, :] = 255
                Image.fromarray(img.numpy()).save(d / f"{i}.png")


def _recipe(data_dir, **stage):
    st = {"name": "stdp", "kind": "stdp", "n_neurons": 8, "passes": 2, "batch_size": 4, "eval_batch_size": 16,
          "checkpoint_every": 8, "preprocess": {"size": 12, "dog": [0.7, 1.5]},
          "net": {"t_present": 40, "max_rate": 255.0}, "plots": True, **stage}
    return parse_recipe({"name": "tiny-stdp", "seed": 1, "device": "cpu",
                         "data": {"dataset": "imagefolder", "data_dir": str(data_dir), "image_size": 20, "workers": 0,
                                  "augment": False, "batch_size": 8, "test_batch_size": 8},
                         "model": {"arch": "diehl-cook"}, "stages": [st]})


def test_stdp_stage_runs_through_the_engine_and_resumes(tmp_path, monkeypatch):
    data = tmp_path / "data"
    _write_bars(data)
    recipe = _recipe(data, prune_fraction=0.5, prune_every=8, levels=8, prune_end=0.5, sweep_prune=[0.75],
                     sweep_levels=[4])
    full = run(recipe, tmp_path / "full", device=torch.device("cpu"), progress=False)
    m = full["stages"][0]
    assert m["kind"] == "stdp" and 0.0 <= m["test_acc"] <= 1.0
    assert m["images_seen"] == 48 and m["pruned_fraction"] == pytest.approx(0.5, abs=0.01)
    assert m["hardware"]["this"]["synapses"] < m["hardware"]["dense"]["synapses"]
    net, head = load_stdp(tmp_path / "full" / "stdp")
    assert head["kind"] == "stdp" and net.W.shape == (144, 8)
    assert (net.W[~net.mask] == 0).all()
    lv = level_values(8, 1.0)
    assert ((net.W[:, :, None] - lv).abs().min(2).values < 1e-6).all()
    assert (tmp_path / "full" / "stdp" / "receptive_fields.png").is_file()
    assert (tmp_path / "full" / "stdp" / "accuracy_vs_pruning.png").is_file()
    assert {(round(r["pruned"], 2), r["levels"]) for r in m["sweep"]} >= {(0.5, None), (0.75, 4)}

    # interrupted run: fail after 5 training batches (checkpoints every 8 images = 2 batches), then resume
    st = stdp_stage
    calls = {"n": 0}
    real = st.train_batch

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt("simulated kill")
        return real(*a, **k)

    monkeypatch.setattr(st, "train_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(recipe, tmp_path / "resumed", device=torch.device("cpu"), progress=False)
    assert (tmp_path / "resumed" / "stdp" / "last.pt").is_file()
    monkeypatch.setattr(st, "train_batch", real)
    again = run(recipe, tmp_path / "resumed", device=torch.device("cpu"), progress=False)
    assert not (tmp_path / "resumed" / "stdp" / "last.pt").exists()
    net2, _ = load_stdp(tmp_path / "resumed" / "stdp")
    assert torch.equal(net.W, net2.W) and torch.equal(net.mask, net2.mask) and torch.equal(net.theta, net2.theta)
    assert again["stages"][0]["test_acc"] == m["test_acc"]
    metrics = json.loads((tmp_path / "resumed" / "stdp" / "metrics.json").read_text())
    assert metrics["images_seen"] == 48
    # a truncated file and a checkpoint of another stage kind give one clear error each
    bad = tmp_path / "bad.pt"
    bad.write_bytes((tmp_path / "resumed" / "stdp" / "model.pt").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_stdp(bad)
    other = tmp_path / "ann.pt"
    save_checkpoint(other, create_model("vgg4", in_channels=1, input_size=28, width=0.125), {"kind": "ann"})
    with pytest.raises(CheckpointError, match="not of an stdp stage"):
        load_stdp(other)


def test_bad_stage_keys_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="prune_fraction"):
        _recipe(tmp_path, prune_fraction=1.5)
    with pytest.raises(ConfigError, match="net"):
        _recipe(tmp_path, net={"rule": "hebb"})
    with pytest.raises(ConfigError, match="unknown key"):
        _recipe(tmp_path, net={"tau": 3})
    with pytest.raises(ConfigError, match="t_present"):  # a string where a number belongs: one clear error
        _recipe(tmp_path, net={"t_present": "long"})
    with pytest.raises(ConfigError, match=r"hardware\.tile: .*valid integer, got 'big'"):
        _recipe(tmp_path, hardware={"tile": "big"})
    with pytest.raises(ConfigError, match="unknown key.*hardware"):
        _recipe(tmp_path, hardware={"tiles": 64})
    with pytest.raises(ConfigError, match=r"stages\.stdp\.levels: .*greater than or equal to 2"):
        _recipe(tmp_path, levels=1)
    with pytest.raises(ConfigError, match=r"stages\.stdp\.quant_range: .*'wmax' or 'neuron'"):
        _recipe(tmp_path, quant_range="layer")
    with pytest.raises(ConfigError, match=r"net\.tau_m_e: .*greater than 0"):
        _recipe(tmp_path, net={"tau_m_e": 0})
    with pytest.raises(ConfigError, match=r"unknown key.*'blur'.*preprocess"):
        _recipe(tmp_path, preprocess={"blur": 2})


def test_prune_target_ramps_linearly():
    assert prune_target(10, 100, 0.5, start=20, end=0.6) == 0.0
    assert prune_target(40, 100, 0.5, start=20, end=0.6) == pytest.approx(0.25)
    assert prune_target(90, 100, 0.5, start=20, end=0.6) == 0.5
    assert prune_target(90, 100, 0.0) == 0.0


def test_theta_decays_over_every_presented_images_time():
    cfg = NetConfig(n_input=4, n_neurons=3, t_present=10, rest=5, tau_theta=1000.0, max_retries=2)
    net = DiehlCook(cfg)
    net.theta.fill_(30.0)
    r = train_batch(net, torch.zeros(4, 4), torch.Generator())  # silent: every image presented 1 + 2 times
    assert r["presentations"] == 12
    assert torch.allclose(net.theta, torch.full((3,), 30.0 * math.exp(-12 * 15 / 1000.0)))


def test_training_time_budget_stops_early(tmp_path):
    data = tmp_path / "data"
    _write_bars(data, n=8)
    s = run(_recipe(data, max_train_minutes=1e-6, plots=False), tmp_path / "run", device=torch.device("cpu"),
            progress=False)["stages"][0]
    assert s["stopped_early"] and s["images_seen"] == 4 and 0.0 <= s["test_acc"] <= 1.0
