"""``benchmarks/gpu_validate.sh --dry-run``: every step of the one-shot GPU validation runs at tiny sizes on the CPU
(about a minute) and the report has all its sections, so the script is known to work before a GPU is rented."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_validate.sh"
STEPS = ["machine", "doctor", "gpu_tests", "cuda_tests", "selfcheck", "compile", "network", "peers"]


def _run(*args, timeout=600):
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)


def test_dry_run_passes_and_reports_every_step(tmp_path):
    out = tmp_path / "report.md"
    proc = _run("--dry-run", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    report = out.read_text()
    assert report.startswith("# spikeforge GPU validation") and "dry run on the CPU" in report
    for step in STEPS:
        assert f"| {step} | ok |" in report, step
        assert f"\n## {step}\n" in report, step
    assert "## peer benchmark table" in report
    assert "kernel self-check (cpu)" in report  # the doctor's table
    assert "configurations in" in report and "FAIL" not in report.split("## selfcheck")[1].split("## ")[0]
    assert '"graph_breaks": 0' in report  # torch.compile of the network (gpu_train.py)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_refuses_a_real_run_without_cuda(tmp_path):
    proc = _run("--out", str(tmp_path / "r.md"), timeout=120)
    assert proc.returncode == 2 and "no CUDA GPU visible" in proc.stderr and "--dry-run" in proc.stderr
    assert not (tmp_path / "r.md").exists()


def test_unknown_argument_is_refused():
    proc = _run("--fast", timeout=60)
    assert proc.returncode == 2 and "unknown argument --fast" in proc.stderr
