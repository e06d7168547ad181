"""benchmarks/peers.py: matched dynamics against snnTorch / SpikingJelly, and the report on a tiny config.

No timing assertions. Peers are optional (the ``bench`` extra): each test skips when its peer is missing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def peers():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("peers_bench", BENCH / "peers.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.path.remove(str(BENCH))


def _rows(peers, lib, all_layers=True, **kw):
    rows = peers.check_dynamics("issue9", timesteps=6, batch=2, peers=[lib], width=0.125, **kw)
    assert rows
    for r in rows:
        assert r["layers_match"] and r["layers"] == 3
        assert r["layer_rates"][0] > 0
        if all_layers:
            assert all(rate > 0 for rate in r["layer_rates"]), r  # every layer spikes: the check is not vacuous
    return rows


def test_snntorch_matches_with_reset_delay_false(peers):
    pytest.importorskip("snntorch")
    for r in _rows(peers, "snntorch", all_layers=False, weight_gain=1.0):
        if r["setting"].startswith("reset_delay=False"):
            # no post-reset membrane above threshold here -> identical trains
            assert r["post_reset_above_threshold"] == 0 and r["differing"] == 0, r
            assert r["max_logit_diff"] < 1e-4
        else:  # default reset_delay=True subtracts theta after the leak (beta * theta in ours): differs for beta < 1
            assert r["differing"] > 0
    for r in _rows(peers, "snntorch", weight_gain=1.5):
        if r["setting"].startswith("reset_delay=False"):
            # snnTorch decides on U' - theta where the post-reset membrane stayed above theta: only there they differ
            assert 0 < r["post_reset_above_threshold"] and r["differing"] <= r["post_reset_above_threshold"], r
            assert r["differing"] <= 0.01 * r["spikes"]


def test_snntorch_default_matches_for_if_neurons(peers):
    pytest.importorskip("snntorch")
    for r in _rows(peers, "snntorch", leak=1.0, weight_gain=1.5):
        if r["setting"].startswith("reset_delay=True"):
            assert r["differing"] == 0, r
            assert r["max_logit_diff"] < 1e-4


def test_spikingjelly_matches(peers):
    pytest.importorskip("spikingjelly")
    for leak in (peers.LEAK, 1.0):
        for r in _rows(peers, "spikingjelly", leak=leak, weight_gain=4.0 if leak < 1 else 2.0):
            assert r["differing"] == 0, r
            assert r["max_logit_diff"] < 1e-4
            assert r["max_grad_diff"] <= 1e-4 * max(1.0, r["max_grad"])  # same surrogate, detached reset


def test_report_table_tiny(peers, tmp_path):
    pytest.importorskip("snntorch")
    report = peers.run(["issue9"], [1, 2], batch=2, repeats=1, warmup=0, memory=False)
    text = peers.table(report)
    assert "| 2 | spikeforge |" in text and "snntorch" in text and "images/s" in text
    res = report["nets"][0]
    assert {"ann@1", "spikeforge@1", "spikeforge@2", "snntorch@2"} <= set(res["train_ms"])
    assert res["infer_img_s"]["spikeforge"] > 0
    report["nets"][0]["peak_mb"] = {k: 1.0 for k in res["train_ms"]}  # table with memory columns
    assert "spikeforge mem / lower peer" in peers.table(report)


def test_peak_memory_subprocess(peers):
    mb = peers.peak_memory("issue9", "spikeforge", 2, batch=2, steps=1, threads=1)
    assert mb >= 0


# ---------------------------------------------------------------------------------------------------------------
# GPU mode (--device cuda)
def test_cuda_without_gpu_exits_cleanly(tmp_path):
    import os
    import subprocess

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(BENCH.parent / "src") + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, str(BENCH / "peers.py"), "--device", "cuda", "--nets", "vgg16",
                          "--batch", "64", "--timesteps", "5", "--out", str(tmp_path / "x.md")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode != 0
    assert "--device cuda needs a CUDA GPU" in out.stderr and "torch.cuda.is_available() is False" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert not (tmp_path / "x.md").exists()


def test_neuron_path_on_cpu(peers):
    import torch

    from spikeforge.kernels import compiled_kernels

    model = peers.make_impl("spikeforge", "issue9", 2, width=0.125)
    assert peers.neuron_path(model) in ("cpp", "torch")
    assert peers.neuron_path(model, like=torch.zeros(3, dtype=torch.float64)) in ("cpp", "torch")
    with compiled_kernels(False):
        assert peers.neuron_path(model) == "torch"
    with peers.lib_context(peers.NO_TRITON):  # the Triton-off row's context
        assert peers.neuron_path(model) == "torch"
    assert peers.split_lib("spikingjelly[triton]") == ("spikingjelly", "triton")
    assert peers.split_lib("snntorch") == ("snntorch", None)


def test_sj_backend_switch_and_probe(peers):
    pytest.importorskip("spikingjelly")
    if peers._sj_legacy():
        pytest.skip("legacy SpikingJelly: backend= argument, no implementation selectors")
    sels = peers._sj_selections()
    before = [(s._requested, s._selections) for s in sels]
    with peers.sj_backend("triton"):
        assert all(s._requested == "triton" for s in sels)
        assert all(s._selections is not b[1] for s, b in zip(sels, before))
    assert [(s._requested, s._selections) for s in sels] == before
    # "cupy" is no SpikingJelly 2.0 backend: skipped with the reason; the CPU probe of "torch" runs
    ok, skipped = peers.probe_sj_backends(["cupy", "torch"], "cpu")
    assert ok == ["torch"] and "not a backend" in skipped["cupy"]


def test_gpu_table_from_synthetic_report(peers):
    libs = ["spikeforge", peers.NO_TRITON, "snntorch", "spikingjelly[triton]", "spikingjelly[torch]"]
    tr = {"ann@1": 2.0, "spikeforge@5": 8.0, f"{peers.NO_TRITON}@5": 16.0, "snntorch@5": 40.0,
          "spikingjelly[triton]@5": 10.0, "spikingjelly[torch]@5": 30.0}
    report = {"machine": {"gpu": "GPU", "cuda": "12", "cudnn": 9, "cpu": "cpu", "torch": "2", "triton": "3",
                          "python": "3.11"},
              "config": {"device": "cuda", "libs": libs, "repeats": 20, "warmup": 2, "leak": 0.875,
                         "peer_input": "once", "mem_steps": 2, "sj_skipped": {"cuda": "ImportError: not built"},
                         "notes": []},
              "nets": [{"net": "vgg16", "batch": 64, "train_ms": tr, "peak_mb": {k: 100.0 for k in tr},
                        "neuron_path": {"spikeforge": "triton", peers.NO_TRITON: "torch"},
                        "infer_ms": {"ann": 1.0, "spikeforge": 2.0},
                        "infer_img_s": {"ann": 64000.0, "spikeforge": 32000.0},
                        "infer_peak_mb": {"ann": 10.0, "spikeforge": 20.0}}]}
    text = peers.table(report)
    assert "| 5 | spikeforge (triton) | 8.00 |" in text
    assert "| 5 | spikeforge (torch, Triton off) | 16.00 | 1.60 | 0.50 |" in text
    assert "| 5 | SpikingJelly (triton) | 10.00 |" in text and "SpikingJelly (torch)" in text
    assert "fastest SpikingJelly (triton) 10.00 ms -> spikeforge speedup 1.25x" in text
    assert "Triton speedup over the PyTorch fused path 2.00x" in text
    assert "SpikingJelly backend cuda skipped: ImportError: not built." in text
    assert "| spikeforge (triton) | 2.00 | 32000 | 0.50 | 20 |" in text


def test_gpu_smoke(peers):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    from spikeforge.kernels.triton_neuron import triton_available

    report = peers.run(["issue9"], [2], batch=4, repeats=1, warmup=1, mem_steps=1, device="cuda")
    res = report["nets"][0]
    libs = report["config"]["libs"]
    assert "spikeforge" in libs and {"ann@1", "spikeforge@2"} <= set(res["train_ms"])
    path = res["neuron_path"]["spikeforge"]
    if triton_available(torch.device("cuda")):
        assert path == "triton" and peers.NO_TRITON in libs and res["neuron_path"][peers.NO_TRITON] == "torch"
    assert all(v > 0 for v in res["train_ms"].values())
    assert res["peak_mb"]["spikeforge@2"] > 0 and res["infer_peak_mb"]["spikeforge"] >= 0
    text = peers.table(report)
    assert f"spikeforge ({path})" in text and "torch.cuda.synchronize()" in text
    if any(lib.startswith("spikingjelly[") for lib in libs):
        assert "SpikingJelly (" in text and "fastest SpikingJelly" in text
