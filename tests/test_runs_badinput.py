"""Bad input and a hostile environment end in one clear line, never a traceback, and never touch an earlier run.

Every case runs ``spikeforge ...`` in-process and asserts: exit status 2, at most 3 lines on stderr (the last one the
error, naming the problem), no traceback, and a finished run directory built once for the module byte-identical
afterwards (the cases that name it as ``--out`` are refused before anything is written).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch
import torchvision.datasets.utils as tv_utils
import yaml

import spikeforge.engine.stages.runner as runner
import spikeforge.utils as sf_utils
from spikeforge.app.cli import main
from spikeforge.engine.checkpoint import save_checkpoint
from spikeforge.engine.lock import RunLock
from spikeforge.engine.recipe import parse_recipe
from spikeforge.engine.stages import run
from spikeforge.models import create_model

DATA = Path(os.environ.get("SPIKEFORGE_DATA", "~/.cache/spikeforge/data")).expanduser()
HAS_MNIST = (DATA / "mnist").is_dir() or (DATA / "MNIST").is_dir()
pytestmark = pytest.mark.skipif(not HAS_MNIST, reason="needs MNIST under $SPIKEFORGE_DATA")

FAST = {
    "name": "prior", "seed": 1, "device": "cpu",
    "data": {"dataset": "mnist", "batch_size": 16, "test_batch_size": 64, "train_subset": 64, "test_subset": 64},
    "model": {"arch": "vgg4", "width": 0.125, "hidden": [16], "dropout": 0.0},
    "snn": {"leak": 0.9},
    "stages": [
        {"name": "ann", "kind": "ann", "epochs": 1, "max_batches": 2, "lr": 3e-3, "schedule": "none"},
        {"name": "convert", "kind": "convert", "sim_timesteps": 2, "calib_batch_size": 16, "timesteps": 2,
         "eval_timesteps": [1]},
        {"name": "diet", "kind": "snn", "timesteps": 2, "epochs": 1, "max_batches": 1, "lr": 1e-3},
    ],
}


def tree_hash(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    """A tiny finished run and its recipe file."""
    root = tmp_path_factory.mktemp("prior")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(FAST))
    out = root / "run"
    run(parse_recipe(FAST), out, device=torch.device("cpu"), progress=False)
    return out, recipe, tree_hash(out)


@dataclass
class Env:
    """What a case's setup gets: a scratch directory, the prior run, its recipe and pytest's monkeypatch."""

    tmp: Path
    prior: Path
    recipe: Path
    monkeypatch: pytest.MonkeyPatch
    cleanup: list[Callable] = field(default_factory=list)


@dataclass
class Case:
    id: str
    argv: list[str]
    expect: str
    setup: Callable[[Env], dict] | None = None


def sets(*edits: str) -> list[str]:
    """``spikeforge run RECIPE --out PRIOR --set ...``: refused at validation, before the run directory is read."""
    return ["run", "{recipe}", "--out", "{prior}", "--quiet"] + [a for e in edits for a in ("--set", e)]


def recipe_file(content: bytes | str | object):
    """A setup writing a recipe file (bytes, text, or an object dumped as YAML) as ``{bad}``."""

    def setup(env: Env) -> dict:
        path = env.tmp / "bad.yaml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            path.write_text(yaml.safe_dump(content))
        return {"bad": str(path)}

    return setup


def with_stages(*stages) -> dict:
    return {**json.loads(json.dumps(FAST)), "stages": list(stages)}


def a_file(env: Env) -> dict:
    (env.tmp / "file").write_text("not a directory")
    return {"file": str(env.tmp / "file")}


def held_lock(env: Env) -> dict:
    lock = RunLock(env.prior)
    lock.__enter__()
    env.cleanup.append(lock.release)
    return {}


def fail_writes(code: int):
    def setup(env: Env) -> dict:
        def refuse(path, writer):
            raise OSError(code, os.strerror(code), str(path))

        env.monkeypatch.setattr(sf_utils, "atomic_write_bytes", refuse)
        return {}

    return setup


def no_memory(env: Env) -> dict:
    def build(*a, **k):
        raise MemoryError

    env.monkeypatch.setattr(runner, "build_data", build)
    return {}


def corrupt_mnist(env: Env) -> dict:
    """A data directory whose MNIST training images are garbage (and no download)."""
    folder = env.tmp / "data" / "mnist"
    folder.mkdir(parents=True)
    src = DATA / "mnist" if (DATA / "mnist").is_dir() else DATA / "MNIST" / "raw"
    for f in src.iterdir():
        if "t10k" in f.name:
            shutil.copy(f, folder / f.name)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(os.urandom(4096))
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(os.urandom(64))
    return {"data": str(env.tmp / "data")}


def unreadable_mnist(env: Env) -> dict:
    out = corrupt_mnist(env)

    def denied(path, md5=None):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    env.monkeypatch.setattr(tv_utils, "check_integrity", denied)
    return out


def checkpoints(env: Env) -> dict:
    """Broken checkpoint files: garbage, pickled code, a forged header asking for a huge model."""
    (env.tmp / "garbage.pt").write_bytes(os.urandom(2048))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"format": "spikeforge-checkpoint", "x": Evil()}, env.tmp / "evil.pt")
    m = create_model("vgg4", num_classes=10, in_channels=1, input_size=28, width=0.125, hidden=[8])
    save_checkpoint(env.tmp / "ok.pt", m, {"dataset": "mnist"})
    raw = torch.load(env.tmp / "ok.pt", weights_only=True)
    raw["header"]["model"]["hidden"] = [2**31 - 1]
    torch.save(raw, env.tmp / "forged.pt")
    (env.tmp / "empty").mkdir()
    (env.tmp / "badrun").mkdir()
    (env.tmp / "badrun" / "summary.json").write_text("{not json")
    return {}


DIET = "{prior}/diet"
CASES = [
    # ---- recipe values: bounds, NaN/inf, types, choices (refused before the run directory is read)
    Case("grad_clip<0", sets("stages.ann.grad_clip=-1"), "stages.ann.grad_clip"),
    Case("weight_decay<0", sets("stages.ann.weight_decay=-0.1"), "stages.ann.weight_decay"),
    Case("gamma<0", sets("stages.ann.schedule=step", "stages.ann.gamma=-5"), "stages.ann.gamma"),
    Case("scaling-nan", sets("stages.convert.scaling=.nan"), "stages.convert.scaling"),
    Case("scaling-inf", sets("stages.convert.scaling=.inf"), "stages.convert.scaling"),
    Case("scaling<0", sets("stages.convert.scaling=-1"), "stages.convert.scaling"),
    Case("lr=0", sets("stages.ann.lr=0"), "stages.ann.lr"),
    Case("lr<0", sets("stages.ann.lr=-1e-3"), "stages.ann.lr"),
    Case("lr-nan", sets("stages.ann.lr=.nan"), "stages.ann.lr"),
    Case("lr-text", sets("stages.ann.lr=fast"), "stages.ann.lr"),
    Case("lr-list", sets("stages.ann.lr=[[1.0]]"), "stages.ann.lr"),
    Case("momentum>1", sets("stages.ann.momentum=1.5"), "stages.ann.momentum"),
    Case("epochs=0", sets("stages.ann.epochs=0"), "stages.ann.epochs"),
    Case("epochs-float", sets("stages.ann.epochs=1.5"), "stages.ann.epochs"),
    Case("epochs-bool", sets("stages.ann.epochs=true"), "stages.ann.epochs"),
    Case("epochs-huge-text", sets("stages.ann.epochs=1e400"), "stages.ann.epochs"),
    Case("max_batches<0", sets("stages.ann.max_batches=-1"), "stages.ann.max_batches"),
    Case("eval_every<0", sets("stages.ann.eval_every=-1"), "stages.ann.eval_every"),
    Case("label_smoothing=1", sets("stages.ann.label_smoothing=1"), "stages.ann.label_smoothing"),
    Case("milestone>1", sets("stages.ann.milestones=[0.5, 2]"), "stages.ann.milestones[1]"),
    Case("train-group", sets("stages.ann.train=[bias]"), "stages.ann.train[0]"),
    Case("train-empty", sets("stages.ann.train=[]"), "stages.ann.train"),
    Case("schedule", sets("stages.ann.schedule=linear"), "stages.ann.schedule"),
    Case("optimizer", sets("stages.ann.optimizer=rmsprop"), "stages.ann.optimizer"),
    Case("percentile=0", sets("stages.convert.percentile=0"), "stages.convert.percentile"),
    Case("percentile>100", sets("stages.convert.percentile=101"), "stages.convert.percentile"),
    Case("eval_timesteps-nested", sets("stages.convert.eval_timesteps=[[1, 2]]"), "stages.convert.eval_timesteps[0]"),
    Case("eval_timesteps=0", sets("stages.convert.eval_timesteps=[0]"), "stages.convert.eval_timesteps[0]"),
    Case("sim_timesteps=0", sets("stages.convert.sim_timesteps=0"), "stages.convert.sim_timesteps"),
    Case("calib=0", sets("stages.convert.calib_batch_size=0"), "stages.convert.calib_batch_size"),
    Case("timesteps<0", sets("stages.diet.timesteps=-2"), "stages.diet.timesteps"),
    Case("stage-snn-leak", sets("stages.diet.snn={leak: 2}"), "stages.diet.snn"),
    Case("stage-snn-key", sets("stages.diet.snn={leek: 1}"), "leek"),
    Case("init", sets("stages.diet.init=random"), "stages.diet.init"),
    Case("rebalance-key", sets("stages.diet.rebalance={percentil: 90}"), "percentil"),
    Case("iir-increasing", sets("stages.diet.kind=iir", "stages.diet.timesteps=[1, 2]"), "strictly decreasing"),
    Case("source-later", sets("stages.ann.source=diet"), "must name an earlier stage"),
    Case("width-huge", sets("model.width=100000.0"), "model.width"),
    Case("width=0", sets("model.width=0"), "model.width"),
    Case("hidden-nested", sets("model.hidden=[[16]]"), "model.hidden[0]"),
    Case("dropout=1", sets("model.dropout=1"), "model.dropout"),
    Case("arch", sets("model.arch=nope"), "model.arch"),
    Case("in_channels=0", sets("model.in_channels=0"), "model.in_channels"),
    Case("batch_size=0", sets("data.batch_size=0"), "data.batch_size"),
    Case("dataset", sets("data.dataset=mnust"), "mnust"),
    Case("train_subset<0", sets("data.train_subset=-5"), "data.train_subset"),
    Case("test_batch_size-nan", sets("data.test_batch_size=.nan"), "data.test_batch_size"),
    Case("snn-leak<0", sets("snn.leak=-0.1"), "snn.leak"),
    Case("snn-threshold-inf", sets("snn.threshold=.inf"), "snn.threshold"),
    Case("snn-encoding", sets("snn.encoding=morse"), "snn.encoding"),
    Case("snn-timesteps=0", sets("snn.timesteps=0"), "snn.timesteps"),
    Case("seed.x", sets("seed.x=1"), "seed is a value"),
    Case("seed-text", sets("seed=abc"), "seed"),
    Case("seed<0", sets("seed=-1"), "seed"),
    Case("seed-huge", sets("seed=100000000000000000000"), "seed"),
    Case("device", sets("device=tpu"), "device"),
    Case("set-no-stage", sets("stages.nope.lr=1"), "no stage named 'nope'"),
    Case("set-no-equals", sets("stages.ann.lr"), "--set expects key.path=value"),
    Case("set-empty-key", sets("stages..lr=1"), "empty key"),
    Case("unknown-stage-key", sets("stages.ann.epochz=1"), "epochz"),
    Case("unknown-top-key", sets("frobnicate=1"), "unknown top-level key"),
    Case("stages-empty", sets("stages=[]"), "stages must be a non-empty list"),
    Case("model-not-mapping", sets("model=5"), "model must be a mapping"),
    # ---- recipe files
    Case("recipe-not-utf8", ["run", "{bad}", "--out", "{prior}"], "not UTF-8", recipe_file(b"name: \xff\xfe\n")),
    Case("recipe-is-dir", ["run", "{prior}", "--out", "{tmp}/o"], "is a directory"),
    Case("recipe-missing", ["run", "{tmp}/none.yaml", "--out", "{prior}"], "not found"),
    Case("recipe-list", ["run", "{bad}", "--out", "{prior}"], "must be a YAML mapping", recipe_file([1, 2])),
    Case("recipe-bad-yaml", ["run", "{bad}", "--out", "{prior}"], "not valid YAML", recipe_file("a: [1, 2\nb: {")),
    Case("recipe-empty", ["run", "{bad}", "--out", "{prior}"], "has no 'data' section", recipe_file("")),
    Case("recipe-no-stages", ["run", "{bad}", "--out", "{prior}"], "no 'stages' section",
         recipe_file({k: v for k, v in FAST.items() if k != "stages"})),
    Case("stages-mapping", ["run", "{bad}", "--out", "{prior}"], "stages must be a non-empty list",
         recipe_file({**FAST, "stages": {"ann": {"kind": "ann"}}})),
    Case("stage-no-kind", ["run", "{bad}", "--out", "{prior}"], "kind must be one of",
         recipe_file(with_stages({"name": "ann", "epochs": 1}))),
    Case("stage-not-mapping", ["run", "{bad}", "--out", "{prior}"], "must be a mapping",
         recipe_file(with_stages("ann"))),
    Case("stage-name-path", ["run", "{bad}", "--out", "{prior}"], "plain directory name",
         recipe_file(with_stages({"name": "../x", "kind": "ann"}))),
    # ---- the run directory
    Case("out-is-file", ["run", "{recipe}", "--out", "{file}", "--quiet"], "is a file", a_file),
    Case("out-under-file", ["run", "{recipe}", "--out", "{file}/sub", "--quiet"], "is a file, not a directory",
         a_file),
    Case("changed-finished-stage", sets("stages.diet.lr=5.0e-3"), "stage 'diet' is finished with other settings"),
    Case("changed-upstream", sets("stages.ann.epochs=2"), "stage 'ann' is finished with other settings"),
    Case("restart-unknown", ["run", "{recipe}", "--out", "{prior}", "--restart", "nope"], "no such stage"),
    Case("locked", ["run", "{recipe}", "--out", "{prior}", "--quiet"], f"PID {os.getpid()}", held_lock),
    # ---- the environment
    Case("diverges", ["run", "{recipe}", "--out", "{tmp}/o", "--quiet", "--set", "stages.ann.lr=1e30"], "diverged"),
    Case("disk-full", ["run", "{recipe}", "--out", "{tmp}/o", "--quiet"], "no space left", fail_writes(errno.ENOSPC)),
    Case("read-only", ["run", "{recipe}", "--out", "{tmp}/o", "--quiet"], "read-only", fail_writes(errno.EROFS)),
    Case("no-permission", ["run", "{recipe}", "--out", "{tmp}/o", "--quiet"], "permission denied",
         fail_writes(errno.EACCES)),
    Case("out-of-memory", ["run", "{recipe}", "--out", "{tmp}/o", "--quiet"], "out of memory", no_memory),
    Case("corrupt-data", ["run", "{recipe}", "--out", "{tmp}/o", "--quiet", "--set", "data.download=false",
                          "--data-dir", "{data}"], "checksum mismatch", corrupt_mnist),
    Case("unreadable-data", ["run", "{recipe}", "--out", "{tmp}/o", "--quiet", "--set", "data.download=false",
                             "--data-dir", "{data}"], "cannot read", unreadable_mnist),
    Case("energy-read-only", ["energy", DIET, "--batches", "1", "--json", "{tmp}/e.json", "--device", "cpu"],
         "read-only", fail_writes(errno.EROFS)),
    Case("eval-json-dir", ["eval", DIET, "--batches", "1", "--json", "{tmp}", "--device", "cpu"], "is a directory"),
    Case("explain-out-under-file", ["explain", DIET, "--images", "1", "--out", "{file}/x", "--device", "cpu",
                                    "--no-ann"], "is a file, not a directory", a_file),
    # ---- checkpoints and the other verbs
    Case("eval-timesteps=0", ["eval", "{prior}", "--timesteps", "0"], "--timesteps must be a positive integer"),
    Case("eval-missing", ["eval", "{tmp}/missing.pt"], "does not exist"),
    Case("eval-garbage", ["eval", "{tmp}/garbage.pt"], "corrupt", checkpoints),
    Case("eval-code", ["eval", "{tmp}/evil.pt"], "holds pickled Python code", checkpoints),
    Case("eval-forged-header", ["eval", "{tmp}/forged.pt"], "does not match its model description", checkpoints),
    Case("eval-empty-dir", ["eval", "{tmp}/empty"], "holds no model.pt", checkpoints),
    Case("eval-corrupt-summary", ["eval", "{tmp}/badrun"], "no finished stage", checkpoints),
    Case("eval-batch-size=0", ["eval", "{prior}", "--batch-size", "0"], "--batch-size"),
    Case("eval-early-exit-nan", ["eval", "{prior}", "--early-exit", "nan"], "--early-exit must be a finite"),
    Case("export-out-dir", ["export", DIET, "--format", "nir", "--out", "{prior}/ann"], "is a directory"),
    Case("export-dt-nan", ["export", DIET, "--format", "nir", "--out", "{tmp}/m.nir", "--dt", "nan"], "--dt"),
    Case("export-dt<0", ["export", DIET, "--format", "nir", "--out", "{tmp}/m.nir", "--dt", "-1"], "--dt"),
    Case("export-format", ["export", DIET, "--out", "{tmp}/m.txt"], "say which format"),
    Case("energy-batches=0", ["energy", DIET, "--batches", "0"], "--batches"),
    Case("energy-e-mem<0", ["energy", DIET, "--e-mem", "-1"], "--e-mem"),
    Case("explain-images=0", ["explain", DIET, "--images", "0"], "--images"),
    Case("explain-gamma-nan", ["explain", DIET, "--gamma", "nan"], "--gamma"),
    Case("attack-steps=0", ["attack", DIET, "--steps", "0"], "--steps"),
    Case("attack-eps>1", ["attack", DIET, "--eps", "2"], "eps"),
    Case("verb", ["frobnicate"], "invalid choice"),
    Case("int-option", ["eval", "{prior}", "--timesteps", "x"], "invalid int value"),
    Case("missing-argument", ["run"], "required"),
]


def fill(arg: str, values: dict) -> str:
    for key, value in values.items():
        arg = arg.replace("{" + key + "}", value)
    return arg


def test_enough_cases():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_line_and_leaves_the_prior_run_intact(prior, case, tmp_path, monkeypatch, capsys):
    out, recipe, before = prior
    env = Env(tmp_path, out, recipe, monkeypatch)
    values = {"prior": str(out), "recipe": str(recipe), "tmp": str(tmp_path)}
    try:
        if case.setup:
            values.update(case.setup(env) or {})
        argv = [fill(a, values) for a in case.argv]
        capsys.readouterr()
        status = main(argv)
        err = capsys.readouterr().err
    finally:
        for undo in env.cleanup:
            undo()
        monkeypatch.undo()
    lines = err.strip().splitlines()
    assert status == 2, err
    assert "Traceback" not in err and 1 <= len(lines) <= 3, err
    assert case.expect in lines[-1], err
    assert tree_hash(out) == before, "the prior run directory changed"
