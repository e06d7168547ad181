"""Runs that never record what did not happen: fault injection at every atomic write and between stages (then a rerun
gives the uninterrupted result, and no record is lost), stage fingerprints (a recipe changed between a kill and the
rerun is refused for every key class; upstream changes invalidate downstream stages; ``--restart``), old run
directories without records, the run-directory lock, debris cleanup, ``eval RUN_DIR``, and checkpoint refusals."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import spikeforge.engine.train as sf_train
import spikeforge.utils as sf_utils
from spikeforge.app.cli import main
from spikeforge.data import build_data
from spikeforge.engine import checkpoint as ckpt
from spikeforge.engine.checkpoint import load_checkpoint, load_raw, resolve_checkpoint, save_checkpoint
from spikeforge.engine.lock import LOCK_FILE, RunDirBusy, RunLock
from spikeforge.engine.recipe import parse_recipe
from spikeforge.engine.stages import RecordError, run
from spikeforge.engine.stages.stdp import load_stdp
from spikeforge.errors import CheckpointError
from spikeforge.models import create_model

REPO = Path(__file__).resolve().parents[1]
HAS_MNIST = any((Path(os.environ.get("SPIKEFORGE_DATA", "~/.cache/spikeforge/data")).expanduser() / d).is_dir()
                for d in ("mnist", "MNIST"))
pytestmark = pytest.mark.skipif(not HAS_MNIST, reason="needs MNIST under $SPIKEFORGE_DATA")

FAST = {
    "name": "fast", "seed": 1, "device": "cpu",
    "data": {"dataset": "mnist", "batch_size": 16, "test_batch_size": 64, "train_subset": 64, "test_subset": 64},
    "model": {"arch": "vgg4", "width": 0.125, "hidden": [16], "dropout": 0.0},
    "snn": {"leak": 0.9},
    "stages": [
        {"name": "ann", "kind": "ann", "epochs": 2, "max_batches": 2, "lr": 3e-3, "schedule": "none"},
        {"name": "convert", "kind": "convert", "sim_timesteps": 2, "calib_batch_size": 16, "timesteps": 2,
         "eval_timesteps": [1]},
        {"name": "diet", "kind": "snn", "timesteps": 2, "epochs": 2, "max_batches": 1, "lr": 1e-3},
    ],
}
NAMES = ["ann", "convert", "diet"]
CPU = torch.device("cpu")


def fast(**changes) -> dict:
    raw = json.loads(json.dumps(FAST))
    raw.update(changes)
    return raw


@pytest.fixture(scope="module")
def data():
    return build_data(parse_recipe(fast()).data, device=CPU, seed=1)


def go(out: Path, data, raw: dict | None = None, **kw) -> dict:
    return run(parse_recipe(raw or fast()), out, device=CPU, data=data, progress=False, **kw)


def weights(out: Path, names=NAMES) -> dict:
    return {n: load_raw(out / n / "model.pt")["state_dict"] for n in names}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[n].keys() == b[n].keys() and all(torch.equal(a[n][k], b[n][k]) for k in a[n]) for n in a)


def tree_hash(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def finished(out: Path) -> list[str]:
    return [n for n in NAMES if (out / n / "model.pt").is_file() and (out / n / "metrics.json").is_file()]


def summary_names(out: Path) -> list[str]:
    path = out / "summary.json"
    return [s["stage"] for s in json.loads(path.read_text())["stages"]] if path.exists() else []


def debris(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob(".*.tmp"))


class Fault:
    """Make the k-th call of ``spikeforge.utils.atomic_write_bytes`` (every atomic write: recipe, records,
    checkpoints, metrics, summary, report) fail with ``error`` half-way through writing its temporary file."""

    def __init__(self, monkeypatch, k: int, error: BaseException):
        self.k, self.calls, self.error = k, 0, error
        self.real = sf_utils.atomic_write_bytes
        monkeypatch.setattr(sf_utils, "atomic_write_bytes", self)

    def __call__(self, path, writer):
        self.calls += 1
        if self.calls != self.k:
            return self.real(path, writer)

        def fail_half_way(f):
            f.write(b"half a file")
            raise self.error

        return self.real(path, fail_half_way)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    """An uninterrupted run: its weights, summary, and the number of atomic writes it makes."""
    out = tmp_path_factory.mktemp("reference")
    mp = pytest.MonkeyPatch()
    counter = Fault(mp, 0, OSError())
    try:
        summary = go(out, data)
    finally:
        mp.undo()
    return out, summary, counter.calls, weights(out)


def test_fault_at_every_atomic_write_then_rerun_gives_the_uninterrupted_result(reference, data, tmp_path,
                                                                                 monkeypatch):
    ref_out, ref_summary, writes, ref_weights = reference
    assert writes >= 15  # recipe, summary x4, 3 records, 4 last.pt, 3 model.pt, 3 metrics
    results = []
    for k in range(1, writes + 1):
        out = tmp_path / f"k{k}"
        fault = Fault(monkeypatch, k, OSError(errno.ENOSPC, "No space left on device"))
        with pytest.raises(OSError, match="No space left"):
            go(out, data)
        monkeypatch.undo()
        assert fault.calls == k
        done = finished(out)
        assert done == NAMES[:len(done)]  # stages finish in order
        listed = summary_names(out)
        assert listed == done[:len(listed)] and len(listed) >= len(done) - 1  # never a stage that did not finish
        assert not debris(out)
        summary = go(out, data)  # the same command again
        assert [s["stage"] for s in summary["stages"]] == NAMES
        assert same_weights(weights(out), ref_weights), f"fault at write {k}: different result"
        assert [s["test_acc"] for s in summary["stages"]] == [s["test_acc"] for s in ref_summary["stages"]]
        assert not list(out.glob("*/last.pt")) and not debris(out)
        assert all((out / n / "stage.json").is_file() for n in NAMES)
        results.append(k)
    assert results == list(range(1, writes + 1))


@pytest.mark.parametrize("after", NAMES[:-1])
def test_interrupt_between_stages_then_rerun(reference, data, tmp_path, after):
    _, _, _, ref_weights = reference

    def stop(metrics):
        if metrics["stage"] == after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        go(tmp_path, data, on_stage_end=stop)
    assert summary_names(tmp_path) == finished(tmp_path) == NAMES[:NAMES.index(after) + 1]
    go(tmp_path, data)
    assert same_weights(weights(tmp_path), ref_weights)


def test_failed_rerun_never_shrinks_the_summary(reference, data, tmp_path, monkeypatch):
    """A finished run extended by one stage; every write of the rerun fails in turn: the recorded stages stay listed,
    and ``eval RUN_DIR`` keeps choosing the last finished stage."""
    base = tmp_path / "base"
    shutil.copytree(reference[0], base)
    longer = fast()
    longer["stages"].append({"name": "more", "kind": "snn", "timesteps": 1, "epochs": 1, "max_batches": 1})
    k = 1
    while True:
        out = tmp_path / f"k{k}"
        shutil.copytree(base, out)
        fault = Fault(monkeypatch, k, OSError(errno.ENOSPC, "No space left on device"))
        try:
            go(out, data, longer)
            monkeypatch.undo()
            break  # k exceeded the number of writes of the rerun
        except OSError:
            monkeypatch.undo()
        assert fault.calls == k
        assert summary_names(out)[:3] == NAMES
        assert resolve_checkpoint(out).parent.name in ("diet", "more")
        assert json.loads((out / "diet" / "metrics.json").read_text()) == json.loads(
            (base / "diet" / "metrics.json").read_text())
        summary = go(out, data, longer)
        assert [s["stage"] for s in summary["stages"]] == NAMES + ["more"]
        assert resolve_checkpoint(out) == out / "more" / "model.pt"
        k += 1
    assert k >= 6  # recipe.json, summary, record, last.pt, model.pt, metrics.json, summary


def test_cli_disk_full_and_read_only_are_one_line_and_keep_the_records(reference, tmp_path, monkeypatch, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(fast()))
    for code, words in ((errno.ENOSPC, "no space left"), (errno.EROFS, "read-only file system"),
                        (errno.EACCES, "permission denied")):
        out = tmp_path / f"out{code}"
        shutil.copytree(reference[0], out)
        (out / "diet" / "metrics.json").unlink()  # the last stage is unfinished: the rerun has work to write
        before = tree_hash(out)
        Fault(monkeypatch, 3, OSError(code, os.strerror(code), str(out / "x")))
        assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 2
        monkeypatch.undo()
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert words in lines[-1] and "Traceback" not in err and len(lines) <= 3, err
        after = tree_hash(out)
        for name in ("ann/model.pt", "ann/metrics.json", "convert/model.pt", "convert/metrics.json",
                     "ann/stage.json", "convert/stage.json"):
            assert after[name] == before[name]
        assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
        assert summary_names(out) == NAMES


def test_fault_at_every_write_of_the_cli_rerun_including_the_report(reference, tmp_path, monkeypatch, capsys):
    """``spikeforge run`` on a finished run rewrites the recipe record, the summary and the report; a failure at any
    of those writes is one line and exit 2, and the same command then completes the report."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(fast()))
    k = 1
    while True:
        out = tmp_path / f"k{k}"
        shutil.copytree(reference[0], out)
        Fault(monkeypatch, k, OSError(errno.ENOSPC, "No space left on device"))
        status = main(["run", str(recipe), "--out", str(out), "--quiet"])
        monkeypatch.undo()
        err = capsys.readouterr().err
        if status == 0:
            break
        assert status == 2 and "no space left" in err and len(err.strip().splitlines()) == 1, err
        assert summary_names(out) == NAMES and not debris(out)
        assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
        assert (out / "report.html").is_file() and summary_names(out) == NAMES
        k += 1
    assert k >= 5  # recipe.json, summary.json, the plots, report.html


def test_torch_save_failure_is_a_disk_error(tmp_path, monkeypatch, capsys):
    """torch reports a failed write of its zip stream as RuntimeError('... unexpected pos ...')."""
    m = create_model("vgg4", num_classes=10, in_channels=1, input_size=28, width=0.125, hidden=[8])

    def broken(obj, f):
        f.write(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(ckpt.torch, "save", broken)
    with pytest.raises(OSError) as exc:
        save_checkpoint(tmp_path / "m.pt", m)
    assert exc.value.errno in (errno.ENOSPC, errno.EIO) and exc.value.filename == str(tmp_path / "m.pt")
    assert not list(tmp_path.iterdir())  # no partial file, no temporary file


# ---------------------------------------------------------------------------------------------------------------
# fingerprints: a recipe changed between a kill and the rerun


@pytest.fixture(scope="module")
def killed(tmp_path_factory, data):
    """A run killed after DIET's first epoch (its last.pt holds epoch 1)."""
    out = tmp_path_factory.mktemp("killed")
    real = sf_train.save_checkpoint

    def die_after_first_diet_epoch(path, *a, **k):
        real(path, *a, **k)
        if Path(path).parent.name == "diet":
            raise KeyboardInterrupt

    mp = pytest.MonkeyPatch()
    mp.setattr(sf_train, "save_checkpoint", die_after_first_diet_epoch)
    try:
        with pytest.raises(KeyboardInterrupt):
            go(out, data)
    finally:
        mp.undo()
    assert load_raw(out / "diet" / "last.pt")["train_state"]["epoch"] == 1
    return out


CHANGES = {  # key class -> (--set edits, the key the refusal names)
    "lr": (["stages.diet.lr=5.0e-3"], "stages.diet.lr: 0.001 -> 0.005"),
    "epochs": (["stages.diet.epochs=1"], "stages.diet.epochs: 2 -> 1"),
    "optimizer": (["stages.diet.optimizer=sgd"], "stages.diet.optimizer: 'adam' -> 'sgd'"),
    "train groups": (["stages.diet.train=[weights]"], "stages.diet.train"),
    "schedule": (["stages.diet.schedule=step", "stages.diet.gamma=0.5"], "stages.diet.gamma: 0.1 -> 0.5"),
    "snn of the stage": (["stages.diet.snn={leak: 0.5}"], "stages.diet.snn"),
    "model": (["model.width=0.25"], "model.width: 0.125 -> 0.25"),
    "data": (["data.train_subset=32"], "data.train_subset: 64 -> 32"),
    "seed": (["seed=2"], "seed: 1 -> 2"),
    "recipe snn": (["snn.leak=0.8"], "snn.leak: 0.9 -> 0.8"),
    "upstream stage": (["stages.convert.scaling=0.9"], "stages.convert.scaling: 1.0 -> 0.9"),
}


@pytest.mark.parametrize("what", list(CHANGES))
def test_recipe_changed_between_kill_and_rerun_is_refused(killed, tmp_path, capsys, what):
    sets, named = CHANGES[what]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(fast()))
    before = tree_hash(killed)
    argv = ["run", str(recipe), "--out", str(killed), "--quiet"] + [a for s in sets for a in ("--set", s)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert named in err and "--restart" in err and "another --out" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert tree_hash(killed) == before  # nothing written, nothing removed


def test_restart_redoes_the_stage_and_every_later_one(reference, data, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    changed = fast()
    changed["stages"][2]["lr"] = 5e-3
    with pytest.raises(RecordError, match="stage 'diet' is finished with other settings"):
        go(out, data, changed)
    ann_before = (out / "ann" / "model.pt").read_bytes()
    go(out, data, changed, restart="diet")
    assert (out / "ann" / "model.pt").read_bytes() == ann_before  # reused
    assert json.loads((out / "diet" / "stage.json").read_text())["config"]["stage"]["lr"] == 5e-3
    assert load_checkpoint(out / "diet")[1]["stage_config"]["lr"] == 5e-3
    assert not same_weights(weights(out, ["diet"]), {"diet": reference[3]["diet"]})
    go(out, data, changed)  # now consistent: everything reused


def test_upstream_change_invalidates_downstream_stages(reference, data, tmp_path, capsys):
    """Remove convert/ from a finished run and rerun with another scaling: DIET was built on the old conversion, so
    it is refused (not skipped); --restart convert redoes convert and DIET."""
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    shutil.rmtree(out / "convert")
    changed = fast()
    changed["stages"][1]["scaling"] = 0.9
    before = tree_hash(out)
    with pytest.raises(RecordError, match=r"stage 'diet' is finished, but stage 'convert'.*--restart convert"):
        go(out, data, changed)
    assert tree_hash(out) == before
    summary = go(out, data, changed, restart="convert")
    assert [s["stage"] for s in summary["stages"]] == NAMES
    diet_rec = json.loads((out / "diet" / "stage.json").read_text())
    conv_rec = json.loads((out / "convert" / "stage.json").read_text())
    assert diet_rec["inputs"] == {"convert": conv_rec["fingerprint"]}
    assert conv_rec["config"]["stage"]["scaling"] == 0.9
    assert summary["stages"][1]["scaling"] == 0.9
    # a change upstream of a finished stage with the directory still there: refused at the changed stage
    with pytest.raises(RecordError, match=r"stage 'ann' is finished with other settings \(stages\.ann\.lr"):
        go(out, data, fast(stages=[{**FAST["stages"][0], "lr": 1e-3}, *changed["stages"][1:]]))


def test_fingerprints_chain_and_only_readers_depend(reference, data, tmp_path):
    """An attack stage reading the ANN (source) does not depend on DIET; its record names its inputs."""
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    raw = fast()
    raw["stages"].append({"name": "rob", "kind": "attack", "source": "ann", "attack": "fgsm", "eps": [0.1],
                          "batches": 1, "black_box": "convert"})
    go(out, data, raw)
    rec = {n: json.loads((out / n / "stage.json").read_text()) for n in NAMES + ["rob"]}
    assert rec["rob"]["inputs"] == {"ann": rec["ann"]["fingerprint"], "convert": rec["convert"]["fingerprint"]}
    assert rec["diet"]["inputs"] == {"convert": rec["convert"]["fingerprint"]}
    assert len({r["fingerprint"] for r in rec.values()}) == 4
    assert load_checkpoint(out / "rob")[1]["fingerprint"] == rec["rob"]["fingerprint"]
    # DIET redone with other settings: the attack (reading ann and convert only) is kept
    raw["stages"][2]["lr"] = 2e-3
    rob_before = (out / "rob" / "model.pt").read_bytes()
    with pytest.raises(RecordError, match="stage 'diet'"):
        go(out, data, raw)
    shutil.rmtree(out / "diet")
    go(out, data, raw)
    assert (out / "rob" / "model.pt").read_bytes() == rob_before


def test_old_run_directory_without_records_resumes_and_skips(killed, reference, data, tmp_path):
    """Directories written before stage records existed: the record is rebuilt from recipe.json (keys added since
    count as their defaults); they resume and skip when the recipe is the same, and are refused when not."""
    old = tmp_path / "old"
    shutil.copytree(killed, old)
    for rec in old.glob("*/stage.json"):
        rec.unlink()
    recipe = json.loads((old / "recipe.json").read_text())
    for st in recipe["stages"]:
        st.pop("eval_every", None)  # a key this old version did not have
    del recipe["snn"]["checkpoint_chunk"]
    (old / "recipe.json").write_text(json.dumps(recipe))
    changed = fast()
    changed["stages"][2]["epochs"] = 1
    with pytest.raises(RecordError, match=r"stage 'diet' is interrupted.*stages\.diet\.epochs: 2 -> 1"):
        go(old, data, changed)
    go(old, data)  # resumes DIET from its last.pt, skips ann and convert
    assert same_weights(weights(old), reference[3])
    assert all((old / n / "stage.json").is_file() for n in NAMES)  # records migrated
    # a corrupt recipe.json no longer turns the guard off: without records the stages cannot be checked
    for rec in old.glob("*/stage.json"):
        rec.unlink()
    (old / "recipe.json").write_text("{not json")
    before = tree_hash(old)
    with pytest.raises(RecordError, match="recipe.json is corrupt"):
        go(old, data)
    assert tree_hash(old) == before


@pytest.mark.parametrize("damage, match", [
    (lambda out: (out / "diet" / "stage.json").write_text("{"), "diet/stage.json cannot be read"),
    (lambda out: (out / "diet" / "stage.json").write_text("[]"), "is not a stage record"),
    (lambda out: (out / "diet" / "stage.json").write_bytes(b"\xff\xfe{"), "cannot be read"),
    (lambda out: (out / "convert" / "metrics.json").write_text("{"), "convert/metrics.json is corrupt"),
    (lambda out: (out / "convert" / "model.pt").write_bytes(b"PK\x03\x04"), "corrupt.*--restart convert"),
    (lambda out: shutil.copy(out / "ann" / "model.pt", out / "convert" / "model.pt"),
     "does not belong to stage 'convert'"),
    (lambda out: [(out / "diet" / "stage.json").unlink(), (out / "recipe.json").unlink()], "were not recorded"),
])
def test_damaged_records_are_refused_not_ignored(reference, data, tmp_path, damage, match):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    damage(out)
    before = tree_hash(out)
    with pytest.raises(RecordError, match=match):
        go(out, data)
    assert tree_hash(out) == before


@pytest.mark.parametrize("damage, match", [
    (lambda out: shutil.copy(out / "ann" / "model.pt", out / "diet" / "last.pt"), "does not belong to stage 'diet'"),
    (lambda out: (out / "diet" / "last.pt").write_bytes((out / "diet" / "last.pt").read_bytes()[:300]), "corrupt"),
])
def test_damaged_resume_file_is_refused(killed, data, tmp_path, damage, match):
    out = tmp_path / "run"
    shutil.copytree(killed, out)
    damage(out)
    before = tree_hash(out)
    with pytest.raises(RecordError, match=match):
        go(out, data)
    assert tree_hash(out) == before


def test_debris_of_killed_runs_is_cleaned_at_start(reference, data, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    for p in (out / ".summary.json.abc.tmp", out / "ann" / ".model.pt.x1.tmp", out / "diet" / ".last.pt.q.tmp"):
        p.write_bytes(b"half")
    shutil.copy(out / "convert" / "model.pt", out / "convert" / "last.pt")  # killed between finish and cleanup
    keep = out / "notes.txt"
    keep.write_text("mine")
    go(out, data)
    assert not debris(out) and not (out / "convert" / "last.pt").exists() and keep.read_text() == "mine"
    assert same_weights(weights(out), reference[3])


# ---------------------------------------------------------------------------------------------------------------
# the lock


def test_second_run_on_the_same_directory_is_refused_naming_the_holder(reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(fast()))
    before = tree_hash(out)
    with RunLock(out):
        held = tree_hash(out)
        assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"PID {os.getpid()}" in err and "in use" in err and len(err.strip().splitlines()) == 1
        with pytest.raises(RunDirBusy):
            RunLock(out).__enter__()
        assert tree_hash(out) == held
    assert tree_hash(out) == before and not (out / LOCK_FILE).exists()  # released and removed
    # a lock file left by a process that is gone (SIGKILL) is stale: the next run takes it over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": "here"}))
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    assert not (out / LOCK_FILE).exists()


def _interactive_sigint() -> None:
    """Ctrl-C as in a terminal's foreground job: a suite started in the background (``nohup``, ``&``) has SIGINT
    ignored, and a child inherits that (Python then never raises KeyboardInterrupt), so restore the default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _spikeforge(*args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "spikeforge", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=_interactive_sigint if os.name == "posix" else None)


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)


def test_concurrent_run_is_refused_and_ctrl_c_exits_130_with_one_line(tmp_path, capsys):
    """Two real processes: the second run into the same --out is refused with the first one's PID; Ctrl-C (SIGINT)
    during training ends the first with status 130 and one line; Ctrl-C during start-up too."""
    raw = fast(stages=[{"name": "ann", "kind": "ann", "epochs": 200, "max_batches": 1, "eval_every": 0}])
    recipe = tmp_path / "slow.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    first = _spikeforge("run", str(recipe), "--out", str(out), "--quiet")
    try:
        _wait_for(out / "ann" / "last.pt", first)
        assert first.poll() is None, first.communicate()
        assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"PID {first.pid}" in err and "Traceback" not in err, err
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, err
    assert err.strip() == "spikeforge: interrupted; rerun the same command to resume"
    assert not (out / LOCK_FILE).exists() and (out / "ann" / "last.pt").is_file()

    early = _spikeforge("run", str(recipe), "--out", str(tmp_path / "early"))
    time.sleep(1.0)  # still importing torch
    early.send_signal(signal.SIGINT)
    _, err = early.communicate(timeout=60)
    assert early.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


# ---------------------------------------------------------------------------------------------------------------
# eval RUN_DIR and checkpoint refusals


def test_eval_run_dir_picks_the_last_finished_stage(reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    assert resolve_checkpoint(out) == out / "diet" / "model.pt"
    (out / "summary.json").write_text(json.dumps({"stages": [{"stage": "ann"}]}))  # a stale, shrunk summary
    assert resolve_checkpoint(out) == out / "diet" / "model.pt"  # the recipe order and the disk decide
    (out / "diet" / "metrics.json").unlink()  # killed between model.pt and metrics.json: not finished
    assert resolve_checkpoint(out) == out / "convert" / "model.pt"
    (out / "recipe.json").write_text("{corrupt")
    (out / "summary.json").write_text(json.dumps({"stages": [{"kind": "ann"}, {"stage": "../../etc"}, "x",
                                                             {"stage": "ann"}, {"stage": "convert"}]}))
    assert resolve_checkpoint(out) == out / "convert" / "model.pt"
    (out / "summary.json").write_text("{corrupt")
    with pytest.raises(CheckpointError, match="no finished stage"):
        resolve_checkpoint(out)


def test_checkpoint_refusals_are_plain(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"format": "spikeforge-checkpoint", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(tmp_path / "evil.pt")
    msg = str(exc.value)
    assert "holds pickled Python code" in msg and "refused" in msg and "weights_only" not in msg
    assert "False" not in msg and "\n" not in msg
    # a forged header asking for a huge model is refused before anything is allocated
    m = create_model("vgg4", num_classes=10, in_channels=1, input_size=28, width=0.125, hidden=[8])
    save_checkpoint(tmp_path / "ok.pt", m)
    raw = torch.load(tmp_path / "ok.pt", weights_only=True)
    raw["header"]["model"]["hidden"] = [2**31 - 1]
    torch.save(raw, tmp_path / "forged.pt")
    t0 = time.time()
    with pytest.raises(CheckpointError, match=r"does not match its model description.*classifier"):
        load_checkpoint(tmp_path / "forged.pt")
    assert time.time() - t0 < 5
    raw["header"]["model"] = {"arch": "vgg4", "width": 1e6}
    torch.save(raw, tmp_path / "forged2.pt")
    with pytest.raises(CheckpointError, match="invalid model description.*width"):
        load_checkpoint(tmp_path / "forged2.pt")
    stdp = {"format": "spikeforge-checkpoint", "version": 1, "header": {"kind": "stdp", "stage": "stdp",
            "net": {"n_input": 10**6, "n_neurons": 10**6}}, "state_dict": {"W": torch.zeros(4, 2)}}
    torch.save(stdp, tmp_path / "stdp.pt")
    t0 = time.time()
    with pytest.raises(CheckpointError, match="does not match its network description"):
        load_stdp(tmp_path / "stdp.pt")
    assert time.time() - t0 < 5
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(CheckpointError, match="holds no model.pt"):
        load_checkpoint(tmp_path / "dir.pt")
