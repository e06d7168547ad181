"""Progress bars: drawn on a terminal, never into a log file or a pipe (unless forced), never with --quiet; a log
file still gets the stage and epoch lines."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spikeforge.engine.train import evaluate
from spikeforge.utils import bars_disabled


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize("tty, env, progress, disabled", [
    (True, None, True, False),     # terminal: bars
    (False, None, True, True),     # log file or pipe: none
    (True, None, False, True),     # asked for none
    (False, "1", True, False),     # forced on
    (True, "0", True, True),       # forced off
    (False, "1", False, True),     # --quiet wins over the environment
    (False, "yes", True, True),    # unknown value: the terminal decides
])
def test_bars_follow_the_terminal(monkeypatch, tty, env, progress, disabled):
    monkeypatch.setattr(sys, "stderr", _Stream(tty))
    if env is None:
        monkeypatch.delenv("SPIKEFORGE_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("SPIKEFORGE_PROGRESS", env)
    assert bars_disabled(progress) is disabled


def test_closed_stderr_means_no_bars(monkeypatch):
    closed = io.StringIO()
    closed.close()
    monkeypatch.delenv("SPIKEFORGE_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", closed)
    assert bars_disabled(True) is True


def test_library_bar_writes_nothing_to_a_log(monkeypatch):
    """``evaluate(progress=True)`` with standard error redirected to a file draws no bar there."""
    monkeypatch.delenv("SPIKEFORGE_PROGRESS", raising=False)
    log = _Stream(False)
    monkeypatch.setattr(sys, "stderr", log)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    loader = [(torch.rand(2, 1, 2, 2), torch.tensor([0, 1])) for _ in range(3)]
    res = evaluate(model, loader, torch.device("cpu"), progress=True, desc="log-test")
    assert 0.0 <= res["acc"] <= 1.0
    assert "log-test" not in log.getvalue()
    # and on a terminal the same call draws its bar
    tty = _Stream(True)
    monkeypatch.setattr(sys, "stderr", tty)
    evaluate(model, loader, torch.device("cpu"), progress=True, desc="tty-test")
    assert "tty-test" in tty.getvalue()


def test_cli_run_log_has_no_bars(tmp_path: Path):
    """``spikeforge run`` with its output going to a file (no --quiet) leaves the stage and epoch lines and the
    results, and no redrawn bars; --quiet leaves only the results."""
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        "name: tiny\nseed: 0\n"
        "data: {dataset: mnist, batch_size: 32, test_batch_size: 64, train_subset: 128, test_subset: 64}\n"
        "model: {arch: mlp, hidden: [16]}\n"
        "stages:\n  - {name: ann, kind: ann, epochs: 1}\n")
    env = {k: v for k, v in os.environ.items() if k != "SPIKEFORGE_PROGRESS"}
    res = subprocess.run([sys.executable, "-m", "spikeforge", "run", str(recipe), "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout + res.stderr
    assert "summary:" in out and "[ann] ann stage" in out and "epoch 1/1" in out
    assert "it/s" not in out
    quiet = subprocess.run([sys.executable, "-m", "spikeforge", "run", str(recipe), "--out", str(tmp_path / "q"),
                            "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0 and "summary:" in quiet.stdout
    assert "epoch 1/1" not in quiet.stdout + quiet.stderr
