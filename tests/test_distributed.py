"""Multi-process training: ``torchrun --nproc_per_node 2 -m spikeforge run`` with the gloo backend on the CPU gives
the same result as one process with the same global batch (each rank takes half of every batch)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from spikeforge.engine.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]

RECIPE = {
    "name": "ddp",
    "seed": 5,
    "device": "cpu",
    "data": {"dataset": "mnist", "batch_size": 32, "test_batch_size": 100, "train_subset": 256, "test_subset": 200},
    "model": {"arch": "vgg4", "width": 0.25, "hidden": [32], "dropout": 0.0},
    "stages": [
        {"name": "ann", "kind": "ann", "epochs": 2, "lr": 2e-3, "schedule": "none"},
        {"name": "snn", "kind": "snn", "timesteps": 2, "epochs": 1, "lr": 1e-3, "max_batches": 4},
    ],
}


def _run(cmd, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.mark.slow
def test_two_process_gloo_equals_single_process(tmp_path):
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    single = [sys.executable, "-m", "spikeforge", "run", str(recipe), "--out", str(tmp_path / "one"), "--quiet"]
    _run(single, tmp_path)
    multi = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
             "-m", "spikeforge", "run", str(recipe), "--out", str(tmp_path / "two"), "--quiet"]
    _run(multi, tmp_path)
    for stage in ("ann", "snn"):
        a, _ = load_checkpoint(tmp_path / "one" / stage)
        b, _ = load_checkpoint(tmp_path / "two" / stage)
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.allclose(va, vb, rtol=1e-4, atol=1e-5), (stage, k, (va - vb).abs().max())
        ma = json.loads((tmp_path / "one" / stage / "metrics.json").read_text())
        mb = json.loads((tmp_path / "two" / stage / "metrics.json").read_text())
        assert ma["test_acc"] == pytest.approx(mb["test_acc"], abs=0.011)
    # only rank 0 wrote files: one summary with both stages
    assert [s["stage"] for s in json.loads((tmp_path / "two" / "summary.json").read_text())["stages"]] == ["ann", "snn"]
