"""SAM / Grad-CAM consistency between clean and perturbed inputs (analysis.explain.consistency), the ``compare`` hook
of the robustness study, and the attack stage's ``sam_consistency`` and ``checkpoint`` options on a tiny BNTT SNN."""

import json
import os

import pytest
import torch

from spikeforge.analysis.attacks.study import consistency_table, plot_robustness, robustness, robustness_table
from spikeforge.analysis.explain.consistency import (MapConsistency, explanation_maps, map_correlation,
                                                     topk_overlap)
from spikeforge.engine.recipe import parse_recipe
from spikeforge.engine.stages import run
from spikeforge.errors import ConfigError
from spikeforge.models import create_model

TINY = dict(num_classes=10, in_channels=1, input_size=28, width=0.125, hidden=[32])
HAS_MNIST = os.path.isdir(os.path.join(os.environ.get("SPIKEFORGE_DATA", ""), "mnist"))


def loader(batches=2, n=4):
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)) for _ in range(batches)]


def bntt_snn(encoding="poisson", timesteps=3):
    torch.manual_seed(0)
    return create_model("vgg4", spiking=True, bntt=True, timesteps=timesteps, encoding=encoding, threshold=0.25,
                        **TINY).eval()


# ------------------------------------------------------------------------------------------------ metrics
def test_correlation_and_topk_on_hand_made_maps():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 8, 8, generator=g)
    assert torch.allclose(map_correlation(a, a), torch.ones(3))
    assert torch.allclose(map_correlation(a, 2 * a + 1), torch.ones(3))       # affine change: still 1
    assert torch.allclose(map_correlation(a, 1 - a), -torch.ones(3))          # inverted map: -1
    assert torch.equal(topk_overlap(a, a, 0.1), torch.ones(3))
    assert torch.equal(topk_overlap(a, 2 * a + 1, 0.25), torch.ones(3))
    # top 10% of 100 pixels = 10 pixels: a's top are pixels 0..9, b's 5..14 -> half of them shared
    ra, rb = torch.zeros(1, 10, 10), torch.zeros(1, 10, 10)
    ra.view(-1)[:10] = 1.0
    rb.view(-1)[5:15] = 1.0
    assert topk_overlap(ra, rb, 0.1).item() == pytest.approx(0.5)
    assert topk_overlap(ra, 1 - ra, 0.1).item() == 0.0                       # disjoint tops
    assert map_correlation(ra, rb).item() == pytest.approx((5 / 100 - 0.01) / 0.09)  # Pearson of two indicators
    const = torch.zeros(1, 10, 10)
    assert torch.isnan(map_correlation(ra, const)).all()                       # no spikes: undefined
    assert torch.isnan(topk_overlap(ra, const, 0.1)).all()                     # no salient pixels: undefined
    assert torch.isnan(topk_overlap(const, const, 0.1)).all()                  # not 1 from the tie-break
    mixed = topk_overlap(torch.cat([ra, const]), torch.cat([rb, ra]), 0.1)     # per image, not per batch
    assert mixed[0].item() == pytest.approx(0.5) and torch.isnan(mixed[1])
    with pytest.raises(ConfigError, match="same shape"):
        map_correlation(a, a[:, :4])
    with pytest.raises(ConfigError, match=r"top-k fraction"):
        topk_overlap(a, a, 0.0)
    with pytest.raises(ConfigError, match=r"top-k fraction"):
        MapConsistency(topk=1.5)


def test_map_consistency_is_one_for_deterministic_models_and_uses_gradcam_on_an_ann():
    x, _ = loader(1, 3)[0]
    snn = bntt_snn("direct")
    cons = MapConsistency()
    assert cons.method(snn) == "SAM"
    s = cons(snn, x, x.clone())
    assert torch.allclose(s["correlation"], torch.ones(3), atol=1e-5) and torch.equal(s["topk"], torch.ones(3))
    moved = cons(snn, x, torch.flip(x, dims=[-1]))                             # a mirrored image moves the map
    assert moved["topk"].mean() < 1.0
    torch.manual_seed(0)
    ann = create_model("vgg4", **TINY).eval()
    assert cons.method(ann) == "Grad-CAM"
    maps = explanation_maps(ann, x)
    assert maps.shape == (3, 28, 28) and float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0 + 1e-6
    assert torch.equal(cons(ann, x, x.clone())["topk"], torch.ones(3))


def test_robustness_compare_hook_keeps_the_accuracies_and_reports_consistency(tmp_path):
    snn = bntt_snn("poisson")
    torch.manual_seed(1)
    source = create_model("vgg4", **TINY).eval()
    data = loader(1, 4)
    kw = dict(attack="fgsm", eps=[0.1, 0.3], source=source, noise=[0.2])
    plain = robustness(snn, data, **kw)
    res = robustness(snn, data, compare=MapConsistency(topk=0.2), **kw)
    drop = ("seconds_crafting", "consistency")
    assert {k: v for k, v in res["models"]["target"].items() if k not in drop} == \
        {k: v for k, v in plain["models"]["target"].items() if k not in drop}  # maps drawn in their own RNG
    assert res["black_box"] == plain["black_box"]
    cons = res["models"]["target"]["consistency"]
    assert cons["method"] == "SAM" and set(cons["white_box"]) == {"0.1", "0.3"}
    assert set(cons["black_box"]) == {"0.1", "0.3"} and set(cons["noise"]) == {"0.2"}
    for row in [cons["clean"], *cons["white_box"].values(), *cons["noise"].values()]:
        assert 0.0 <= row["topk"] <= 1.0 and (row["correlation"] is None or -1.0 <= row["correlation"] <= 1.0)
    assert cons["clean"]["topk"] < 1.0  # Poisson input: a second simulation of the clean image moves the map
    assert "consistency" not in res["models"]["source"]
    text = robustness_table(res)
    assert "SAM consistency" in text and "white-box 0.1" in text and consistency_table(res) in text
    json.dumps(res)
    assert plot_robustness(res, tmp_path / "r.png").stat().st_size > 1000


@pytest.mark.skipif(not HAS_MNIST, reason="needs MNIST under $SPIKEFORGE_DATA")
def test_attack_stage_sam_consistency_on_a_tiny_bntt_run(tmp_path):
    raw = {"name": "tiny-bntt", "seed": 0, "device": "cpu",
           "data": {"dataset": "mnist", "batch_size": 32, "test_batch_size": 16, "train_subset": 32,
                    "test_subset": 16},
           "model": {"arch": "vgg4", "bntt": True, "width": 0.125, "hidden": [32], "dropout": 0.0,
                     "mean": [0.0], "std": [0.5]},
           "stages": [{"name": "bntt", "kind": "bntt", "timesteps": 2, "epochs": 1, "lr": 0.05},
                      {"name": "atk", "kind": "attack", "attack": "pgd", "eps": [0.1], "steps": 1, "noise": [0.3],
                       "batches": 1, "sam_consistency": True, "sam_topk": 0.2}]}
    out = tmp_path / "run"
    run(parse_recipe(raw), out, device=torch.device("cpu"), progress=False)
    m = json.loads((out / "atk" / "metrics.json").read_text())
    cons = m["robustness"]["models"]["target"]["consistency"]
    assert cons["method"] == "SAM" and set(cons["white_box"]) == {"0.1"} and set(cons["noise"]) == {"0.3"}
    assert "SAM consistency" in (out / "atk" / "robustness.txt").read_text()
    # the same model attacked from another run through ``checkpoint`` (relative to that run's directory)
    other = {**raw, "name": "tiny-bntt-2", "model": {"arch": "vgg4", "width": 0.125, "hidden": [32]},
             "stages": [{"name": "ann", "kind": "ann", "epochs": 1, "max_batches": 1},
                        {"name": "atk", "kind": "attack", "checkpoint": "../run/bntt", "attack": "pgd",
                         "eps": [0.1], "steps": 1, "noise": [0.3], "batches": 1}]}
    run(parse_recipe(other), tmp_path / "run2", device=torch.device("cpu"), progress=False)
    m2 = json.loads((tmp_path / "run2" / "atk" / "metrics.json").read_text())
    assert m2["timesteps"] == 2 and m2["test_acc"] == m["test_acc"] and "consistency" not in \
        m2["robustness"]["models"]["target"]
    bad = {**other, "stages": [other["stages"][0], {**other["stages"][1], "checkpoint": "../nowhere"}]}
    with pytest.raises(Exception, match="checkpoint"):
        run(parse_recipe(bad), tmp_path / "run3", device=torch.device("cpu"), progress=False)
    with pytest.raises(ConfigError, match="sam_topk"):
        parse_recipe({**raw, "stages": [raw["stages"][0], {**raw["stages"][1], "sam_topk": 0}]})
