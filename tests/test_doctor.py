"""``spikeforge doctor``: one table (or JSON) of the installation's state; exit status 1 when something is broken, with
the fix on that row."""

import argparse
import json

import pytest

from spikeforge import kernels
from spikeforge.app.commands import doctor
from spikeforge.kernels import selfcheck

ROWS = ["python", "torch", "CUDA", "triton", "C++ compiler", "ninja", "extension build cache", "neuron path (cpu)",
        "kernel self-check (cpu)", "neuron path (cuda)", "data directory", "cache directory"]


def _doctor(*argv):
    p = argparse.ArgumentParser(prog="spikeforge")
    doctor.add_parser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["doctor", *argv])
    return args.func(args)


def _json(capsys, *argv):
    rc = _doctor("--json", *argv)
    report = json.loads(capsys.readouterr().out)
    return rc, report, {c["name"]: c for c in report["checks"]}


@pytest.fixture
def fresh_selfcheck(monkeypatch):
    monkeypatch.delenv(selfcheck.ENV, raising=False)
    monkeypatch.setattr(selfcheck, "_RESULTS", {})


def test_happy_path_json(capsys, tmp_path, monkeypatch, fresh_selfcheck):
    monkeypatch.setenv("SPIKEFORGE_CACHE", str(tmp_path / "cache"))
    rc, report, rows = _json(capsys)
    assert rc == 0 and report["ok"] is True, [c for c in report["checks"] if c["status"] == "FAIL"]
    assert set(ROWS) <= set(rows)
    assert {f"extra: {name}" for name in doctor.EXTRAS} <= set(rows)
    assert all(c["status"] in ("ok", "info", "warn") for c in report["checks"])
    assert all(c["fix"] for c in report["checks"] if c["status"] in ("warn", "FAIL"))
    assert rows["cache directory"]["status"] == "ok" and str(tmp_path / "cache") in rows["cache directory"]["detail"]
    if kernels.cpu_kernel() is not None:
        assert rows["neuron path (cpu)"]["detail"].startswith("compiled C++ kernel")
        assert rows["kernel self-check (cpu)"]["status"] == "ok"
        assert "8 configurations agree with the PyTorch path" in rows["kernel self-check (cpu)"]["detail"]


def test_happy_path_table(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEFORGE_CACHE", str(tmp_path / "cache"))
    assert _doctor("--data-dir", str(tmp_path / "empty")) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["check", "status", "detail", "fix"] and set(lines[1]) <= {"-", " "}
    for name in ROWS:
        assert any(line.startswith(name + " ") for line in lines), name
    assert f"{tmp_path / 'empty'} (--data-dir): no dataset found" in out
    assert out.rstrip().endswith("no problems found")


def test_unwritable_cache_fails_and_names_the_fix(capsys, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SPIKEFORGE_CACHE", str(blocker / "cache"))  # unwritable even for root
    rc, report, rows = _json(capsys)
    assert rc == 1 and report["ok"] is False
    row = rows["cache directory"]
    assert row["status"] == "FAIL" and "not writable" in row["detail"] and "($SPIKEFORGE_CACHE)" in row["detail"]
    assert "set SPIKEFORGE_CACHE to a writable directory" in row["fix"]
    assert _doctor() == 1
    tail = capsys.readouterr().out.strip().splitlines()[-1]
    assert tail.startswith("1 problem(s): cache directory: set SPIKEFORGE_CACHE to a writable directory")


def test_failed_self_check_fails_and_names_the_fix(capsys, tmp_path, monkeypatch, fresh_selfcheck):
    real = kernels.cpu_kernel()
    if real is None:
        pytest.skip("no C++ compiler: the compiled kernel is unavailable")

    class Flipped:
        def neuron_forward(self, *args):
            spikes, pre, u = real.neuron_forward(*args)
            return 1.0 - spikes, pre, u

        def neuron_backward(self, *args):
            return real.neuron_backward(*args)

    monkeypatch.setattr(kernels, "cpu_kernel", lambda: Flipped())
    monkeypatch.setenv("SPIKEFORGE_CACHE", str(tmp_path / "cache"))
    with pytest.warns(RuntimeWarning, match="kernel self-check failed"):
        rc, report, rows = _json(capsys)
    assert rc == 1 and not report["ok"]
    row = rows["kernel self-check (cpu)"]
    assert row["status"] == "FAIL" and row["detail"].startswith("8 of 8 configurations disagree")
    assert "forward spikes differ" in row["detail"] and "SPIKEFORGE_NO_CPP=1" in row["fix"]


def test_selfcheck_env_var_is_reported(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv(selfcheck.ENV, "1")
    monkeypatch.setenv("SPIKEFORGE_CACHE", str(tmp_path / "cache"))
    rc, _, rows = _json(capsys)
    assert rc == 0 and rows["kernel self-check (cpu)"]["status"] == "info"
    assert "SPIKEFORGE_NO_SELFCHECK=1" in rows["kernel self-check (cpu)"]["detail"]
