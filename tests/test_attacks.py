"""Attacks: FGSM/PGD/EOT-PGD equal torchattacks on an ANN, Sharmin et al.'s first-layer estimator equals autograd on
direct input, budgets and [0, 1] hold, no state leaks between calls, attack-time surrogates and model modes are
restored, targeted modes, errors, robustness() and the ``spikeforge attack`` command on tiny checkpoints."""

import argparse
import json
import os

import pytest
import torch

from spikeforge.analysis.attacks import (EOTPGD, FGSM, PGD, GaussianNoise, attack_surrogate, input_gradient,
                                        make_attack, parse_values, robustness, robustness_table)
from spikeforge.app.commands.attack import add_parser as add_attack_parser
from spikeforge.errors import ConfigError, ShapeError
from spikeforge.models import create_model
from spikeforge.neuron.surrogate import ATan, FastSigmoid, PiecewiseLinear

TINY = dict(num_classes=10, in_channels=1, input_size=28, width=0.125, hidden=[32])
HAS_MNIST = os.path.isdir(os.path.join(os.environ.get("SPIKEFORGE_DATA", ""), "mnist"))


def ann(seed=0, **kw):
    torch.manual_seed(seed)
    return create_model("vgg4", **{**TINY, **kw}).eval()


def snn(timesteps=4, leak=0.9, encoding="direct", seed=0, **kw):
    """An SNN twin of ``ann(seed)`` with thresholds low enough that every layer spikes."""
    model = create_model("vgg4", spiking=True, timesteps=timesteps, leak=leak, encoding=encoding, threshold=0.25,
                         **{**TINY, **kw})
    weights = {k: v for k, v in ann(seed).state_dict().items() if not k.startswith("normalize.")}
    model.load_state_dict(weights, strict=False)
    return model.eval()


def batch(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


# ------------------------------------------------------------------------------------------------ torchattacks
def test_fgsm_pgd_eotpgd_equal_torchattacks_on_an_ann():
    ta = pytest.importorskip("torchattacks")
    model = ann(mean=[0.1307], std=[0.3081])
    x, y = batch(8)
    assert torch.equal(FGSM(model, eps=0.1)(x, y), ta.FGSM(model, eps=0.1)(x, y))
    for seed, start in ((3, True), (4, False)):
        torch.manual_seed(seed)
        ours = PGD(model, eps=0.1, alpha=0.02, steps=5, random_start=start)(x, y)
        torch.manual_seed(seed)
        theirs = ta.PGD(model, eps=0.1, alpha=0.02, steps=5, random_start=start)(x, y)
        assert torch.equal(ours, theirs)
    torch.manual_seed(5)
    ours = EOTPGD(model, eps=0.1, alpha=0.03, steps=3, eot_iter=2)(x, y)
    torch.manual_seed(5)
    theirs = ta.EOTPGD(model, eps=0.1, alpha=0.03, steps=3, eot_iter=2)(x, y)
    assert torch.equal(ours, theirs)


def test_targeted_pgd_equals_torchattacks_and_moves_towards_the_target():
    ta = pytest.importorskip("torchattacks")
    model = ann()
    x, _ = batch(8)
    target = torch.arange(8) % 10
    ours_atk = PGD(model, eps=0.2, alpha=0.05, steps=5).set_mode_targeted_by_label()
    theirs_atk = ta.PGD(model, eps=0.2, alpha=0.05, steps=5)
    theirs_atk.set_mode_targeted_by_label(quiet=True)
    torch.manual_seed(0)
    ours = ours_atk(x, target)
    torch.manual_seed(0)
    theirs = theirs_atk(x, target)
    assert torch.equal(ours, theirs)
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(model(x), target)
        after = torch.nn.functional.cross_entropy(model(ours), target)
    assert after < before


def test_targeted_modes_pick_valid_targets():
    model = ann()
    x, y = batch(32)
    atk = PGD(model, eps=0.1, steps=1)
    assert not atk.targeted and torch.equal(atk.target_labels(x, y), y)
    atk.set_mode_targeted_random()
    t = atk.target_labels(x, y)
    assert atk.targeted and (t != y).all() and ((t >= 0) & (t < 10)).all()
    atk.set_mode_targeted_least_likely()
    with torch.no_grad():
        assert torch.equal(atk.target_labels(x, y), model(x).argmin(1))
    atk.set_mode_targeted_by_function(lambda images, labels: (labels + 1) % 10)
    assert torch.equal(atk.target_labels(x, y), (y + 1) % 10)
    atk.set_mode_default()
    assert not atk.targeted


# ------------------------------------------------------------------------------------------------ estimators
@pytest.mark.parametrize("timesteps,leak,order", [(4, 0.9, "integrate-fire"), (5, 1.0, "fire-integrate"),
                                                  (1, 1.0, "integrate-fire")])
def test_sharmin_estimator_equals_autograd_on_direct_input(timesteps, leak, order):
    model = snn(timesteps, leak, order=order, mean=[0.1307], std=[0.3081])
    x, y = batch(6)
    exact = input_gradient(model, x, y, grad_estimator="bptt")
    ref = input_gradient(model, x, y, grad_estimator="sharmin")
    assert exact.abs().max() > 0
    torch.testing.assert_close(ref, exact, rtol=1e-4, atol=1e-6 * float(exact.abs().max()))
    # and for the ANN twin (first layer linear, T = 1)
    a = ann(mean=[0.1307], std=[0.3081])
    torch.testing.assert_close(input_gradient(a, x, y, grad_estimator="sharmin"), input_gradient(a, x, y),
                               rtol=1e-4, atol=1e-9)


def test_poisson_estimators_straight_through_and_sharmin():
    """Rate-1 Poisson input that never saturates (|x_norm| < 1): the straight-through BPTT gradient and Sharmin's
    summed first-layer gradient are the same quantity. Where the rate saturates (p = 1), E[s] is flat: BPTT gives 0
    there while Sharmin's estimator still passes the summed gradient."""
    model = snn(4, 0.9, encoding="poisson")  # mean 0, std 1: x_norm = x in [0, 1]
    x, y = batch(4)
    x = x * 0.95
    torch.manual_seed(0)
    st = input_gradient(model, x, y)
    torch.manual_seed(0)
    sh = input_gradient(model, x, y, grad_estimator="sharmin")
    assert st.abs().max() > 0
    torch.testing.assert_close(sh, st, rtol=1e-4, atol=1e-6 * float(st.abs().max()))
    sat = snn(4, 0.9, encoding="poisson", mean=[0.0], std=[0.5])  # x_norm = 2x: saturated where x >= 0.5
    torch.manual_seed(0)
    st = input_gradient(sat, x, y)
    torch.manual_seed(0)
    sh = input_gradient(sat, x, y, grad_estimator="sharmin")
    bright = x >= 0.5
    assert (st[bright] == 0).all() and (sh[bright] != 0).any()
    torch.testing.assert_close(sh[~bright], st[~bright], rtol=1e-4, atol=1e-6 * float(sh.abs().max()))


# ------------------------------------------------------------------------------------------------ invariants
@pytest.mark.parametrize("encoding", ["direct", "poisson"])
def test_perturbations_stay_in_the_eps_ball_and_in_0_1(encoding):
    model = snn(3, 0.9, encoding=encoding)
    x, y = batch(6)
    x[0] = 0.0
    x[1] = 1.0
    eps = 0.1
    for atk in (FGSM(model, eps=eps), PGD(model, eps=eps, alpha=0.04, steps=3),
                EOTPGD(model, eps=eps, alpha=0.04, steps=2, eot_iter=2),
                PGD(model, eps=eps, alpha=0.04, steps=2, grad_estimator="sharmin"),
                GaussianNoise(model, std=0.3)):
        adv = atk(x, y)
        assert adv.shape == x.shape and not adv.requires_grad
        assert adv.min() >= 0.0 and adv.max() <= 1.0
        if not isinstance(atk, GaussianNoise):
            assert (adv - x).abs().max() <= eps + 1e-6
    assert (FGSM(model, eps=eps)(x, y) != x).any()


def test_no_state_leaks_between_calls_on_a_direct_snn():
    model = snn(4, 0.9)
    x, y = batch(5)
    with torch.no_grad():
        first = model(x)
    fgsm = FGSM(model, eps=0.1)
    a1, a2 = fgsm(x, y), fgsm(x, y)
    assert torch.equal(a1, a2)
    pgd = PGD(model, eps=0.1, alpha=0.03, steps=3, seed=7)
    p1 = pgd(x, y)
    assert torch.equal(p1, pgd(x, y))
    with torch.no_grad():
        assert torch.equal(model(x), first)


def test_seeded_attack_is_reproducible_and_leaves_the_global_rng_alone():
    model = snn(3, 0.9, encoding="poisson")
    x, y = batch(4)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = PGD(model, eps=0.1, alpha=0.03, steps=2, seed=11)(x, y)
    assert torch.equal(torch.rand(3), expected)
    b = PGD(model, eps=0.1, alpha=0.03, steps=2, seed=11)(x, y)
    assert torch.equal(a, b)


def test_attack_time_surrogate_is_used_then_restored():
    model = snn(4, 0.9)
    x, y = batch(4)
    own = [n.surrogate for n in model.neurons()]
    assert all(isinstance(s, PiecewiseLinear) for s in own)
    default = input_gradient(model, x, y)
    with attack_surrogate(model, "atan"):
        assert all(isinstance(n.surrogate, ATan) for n in model.neurons())
        with_atan = input_gradient(model, x, y)
    assert [n.surrogate for n in model.neurons()] == own
    assert not torch.allclose(default, with_atan)
    # the attack uses it: FGSM with surrogate=atan == sign step of the atan gradient
    adv = FGSM(model, eps=0.05, surrogate="atan")(x, y)
    assert torch.equal(adv, (x + 0.05 * with_atan.sign()).clamp(0, 1))
    assert [n.surrogate for n in model.neurons()] == own
    # restored after an error inside the attack, too
    atk = PGD(model, eps=0.1, steps=1, surrogate={"name": "fast_sigmoid", "slope": 10})

    def boom(*a):
        assert all(isinstance(n.surrogate, FastSigmoid) for n in model.neurons())
        raise RuntimeError("boom")

    atk.perturb = boom
    with pytest.raises(RuntimeError, match="boom"):
        atk(x, y)
    assert [n.surrogate for n in model.neurons()] == own


def test_mode_and_parameters_restored_and_no_gradient_accumulated():
    model = snn(3, 0.9, learn_threshold=True, learn_leak=True)
    model.train()
    model.features.eval()  # mixed modes must come back as they were
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    x, y = batch(4)
    for atk in (FGSM(model, eps=0.1), PGD(model, eps=0.1, steps=2), PGD(model, eps=0.1, steps=2,
                                                                        grad_estimator="sharmin")):
        atk(x, y)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------------------------ errors
def test_bad_arguments_raise_config_errors():
    model = ann()
    x, y = batch(2)
    with pytest.raises(ConfigError, match="eps"):
        PGD(model, eps=2.0)
    with pytest.raises(ConfigError, match="alpha"):
        PGD(model, alpha=0)
    with pytest.raises(ConfigError, match="steps"):
        PGD(model, steps=0)
    with pytest.raises(ConfigError, match="grad_estimator"):
        FGSM(model, grad_estimator="magic")
    with pytest.raises(ConfigError, match="ANN"):
        FGSM(model, surrogate="atan")
    with pytest.raises(ConfigError, match="unknown surrogate"):
        FGSM(snn(), surrogate="nope")
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        FGSM(model)(x * 255, y)
    with pytest.raises(ShapeError):
        FGSM(model)(x[0], y)
    with pytest.raises(ConfigError, match="unknown attack"):
        make_attack("cw", model, 0.1)


def test_parse_values():
    assert parse_values("2/255, 4/255,8/255") == pytest.approx([2 / 255, 4 / 255, 8 / 255])
    assert parse_values("0.1,0.3") == [0.1, 0.3]
    for bad in ("", "abc", "8/0", "-0.1", "0", "1.5", "0.1,,0.2"):
        with pytest.raises(ConfigError, match="--eps"):
            parse_values(bad)
    assert parse_values("0.5,2", "--noise", high=float("inf")) == [0.5, 2.0]


# ------------------------------------------------------------------------------------------------ evaluation
def test_robustness_white_box_black_box_and_noise():
    target, source = snn(2, 0.9), ann(seed=1)
    loader = [batch(5, seed=s) for s in range(2)]
    res = robustness(target, loader, attack="pgd", eps=[0.05, 0.2], source=source, noise=[0.1], steps=2)
    assert res["samples"] == 10 and res["eps"] == [0.05, 0.2] and res["attack"]["alpha"] == "eps/4"
    assert set(res["models"]) == {"target", "source"} and set(res["black_box"]) == {"0.05", "0.2"}
    for m in res["models"].values():
        assert 0 <= m["clean"] <= 1 and set(m["white_box"]) == {"0.05", "0.2"} and set(m["noise"]) == {"0.1"}
    assert res["models"]["target"]["model"] == "SNN T=2, direct, LIF leak 0.9"
    assert res["models"]["source"]["model"] == "ANN"
    again = robustness(target, loader, attack="pgd", eps=[0.05, 0.2], source=source, noise=[0.1], steps=2)
    assert {k: v for k, v in again["models"]["target"].items() if k != "seconds_crafting"} == \
        {k: v for k, v in res["models"]["target"].items() if k != "seconds_crafting"}
    pois = snn(4, 0.9, encoding="poisson")  # stochastic forward: the seed covers the evaluation draws too
    r1, r2 = (robustness(pois, loader, attack="fgsm", eps=[0.1], noise=[0.2])["models"]["target"] for _ in range(2))
    assert [r1[k] for k in ("clean", "white_box", "noise")] == [r2[k] for k in ("clean", "white_box", "noise")]
    with pytest.raises(ConfigError, match="unknown attack"):
        robustness(target, loader, attack="cw", eps=[0.1])
    text = robustness_table(res)
    assert "black-box" in text and "noise sigma" in text and "clean" in text
    json.dumps(res)


def _attack_args(argv):
    parser = argparse.ArgumentParser()
    add_attack_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["attack", *argv])


@pytest.mark.skipif(not HAS_MNIST, reason="needs MNIST under $SPIKEFORGE_DATA")
def test_attack_cli_on_tiny_checkpoints(tmp_path, capsys):
    from spikeforge.engine.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "snn" / "model.pt", snn(2, 0.9, mean=[0.1307], std=[0.3081]),
                    {"dataset": "mnist", "stage": "snn", "kind": "snn"})
    save_checkpoint(tmp_path / "ann" / "model.pt", ann(seed=1, mean=[0.1307], std=[0.3081]),
                    {"dataset": "mnist", "stage": "ann", "kind": "ann"})
    out = tmp_path / "out"
    args = _attack_args([str(tmp_path / "snn"), "--attack", "pgd", "--eps", "8/255,0.1", "--steps", "2",
                         "--source", str(tmp_path / "ann"), "--noise", "0.1", "--batches", "1", "--batch-size", "8",
                         "--surrogate", "atan", "--out", str(out), "--device", "cpu"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "8/255" in text and "black-box" in text and "SNN T=2" in text and "ANN" in text
    rep = json.loads((out / "attack-pgd.json").read_text())
    assert rep["samples"] == 8 and rep["dataset"] == "mnist" and rep["eps"] == pytest.approx([8 / 255, 0.1])
    assert rep["attack"]["surrogate"]["name"] == "atan" and set(rep["black_box"]) == {"0.0313725", "0.1"}
    assert (out / "attack-pgd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    args = _attack_args([str(tmp_path / "ann" / "model.pt"), "--attack", "fgsm", "--eps", "0.1",
                         "--batches", "1", "--batch-size", "4", "--device", "cpu"])
    assert args.func(args) == 0
    assert json.loads((tmp_path / "ann" / "attack-fgsm.json").read_text())["source"] is None
    for bad, match in ((["--eps", "8/0"], "--eps"), (["--eps", "0.1", "--timesteps", "3"], "ANN"),
                       (["--eps", "0.1", "--surrogate", "atan"], "SNN"), (["--eps", "0.1", "--steps", "0"], "steps")):
        with pytest.raises(ConfigError, match=match):
            a = _attack_args([str(tmp_path / "ann"), "--device", "cpu", *bad])
            a.func(a)
