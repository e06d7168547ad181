"""Engine: recipes (validation, --set), checkpoints (atomic, safe, clear errors), training stages, IIR chaining,
resume after a kill, and a tiny end-to-end ``spikeforge run`` on a slice of MNIST."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import pytest
import torch
import yaml

from spikeforge.app.cli import main
from spikeforge.engine.checkpoint import load_checkpoint, load_raw, save_checkpoint
from spikeforge.engine.recipe import load_recipe, parse_recipe
from spikeforge.config import PosFloat, config
from spikeforge.engine.stages import (STAGES, RecordError, Stage, StageConfig, check_same_recipe, run,
                                      stage_timesteps)
from spikeforge.errors import CheckpointError, ConfigError
from spikeforge.models import create_model

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "name": "tiny",
    "seed": 3,
    "device": "cpu",
    "data": {"dataset": "mnist", "batch_size": 32, "test_batch_size": 256, "train_subset": 1024, "test_subset": 256},
    "model": {"arch": "vgg4", "width": 0.25, "hidden": [64], "dropout": 0.1},
    "snn": {"surrogate": "linear", "leak": 0.9},
    "stages": [
        {"name": "ann", "kind": "ann", "epochs": 3, "lr": 3e-3, "schedule": "none"},
        {"name": "convert", "kind": "convert", "sim_timesteps": 8, "calib_batch_size": 64, "percentile": 99.7,
         "scaling": 0.6, "timesteps": 3, "eval_timesteps": [2, 8]},
        {"name": "diet", "kind": "snn", "timesteps": 3, "epochs": 1, "lr": 1e-3, "max_batches": 8},
        {"name": "iir", "kind": "iir", "timesteps": [2, 1], "epochs": 1, "lr": 1e-3, "max_batches": 4},
    ],
}


def tiny(**changes):
    raw = json.loads(json.dumps(TINY))
    raw.update(changes)
    return raw


def params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    summary = run(parse_recipe(tiny()), out, device=torch.device("cpu"), progress=False)
    return out, summary


def test_end_to_end_run_writes_every_stage(tiny_run):
    out, summary = tiny_run
    names = [s["stage"] for s in summary["stages"]]
    assert names == ["ann", "convert", "diet", "iir-T2", "iir-T1"]
    for st in summary["stages"]:
        m = json.loads((out / st["stage"] / "metrics.json").read_text())
        for key in ("stage", "kind", "timesteps", "test_acc", "epochs", "seconds"):
            assert key in m
        assert 0.0 <= m["test_acc"] <= 1.0
        assert (out / st["stage"] / "model.pt").is_file()
        assert not (out / st["stage"] / "last.pt").exists()
    kinds = [s["kind"] for s in summary["stages"]]
    assert kinds == ["ann", "convert", "snn", "iir", "iir"]
    assert [s["timesteps"] for s in summary["stages"]] == [None, 3, 3, 2, 1]
    conv = json.loads((out / "convert" / "metrics.json").read_text())
    assert set(conv["acc_vs_timesteps"]) == {"2", "3", "8"}
    assert summary["stages"][0]["test_acc"] > 0.6  # well above chance (0.1) after 96 steps on 1024 images
    assert json.loads((out / "summary.json").read_text()) == summary


def test_thresholds_and_leaks_learn_and_iir_chains_exact_parameters(tiny_run):
    out, _ = tiny_run
    conv = json.loads((out / "convert" / "metrics.json").read_text())
    diet = json.loads((out / "diet" / "metrics.json").read_text())
    assert diet["initial"]["thresholds"] == pytest.approx(conv["thresholds"])
    assert diet["thresholds"] != pytest.approx(conv["thresholds"])  # thresholds trained
    assert diet["initial"]["leaks"] == pytest.approx([0.9] * len(diet["leaks"]))
    assert diet["leaks"] != pytest.approx(diet["initial"]["leaks"], abs=1e-7)  # leaks trained
    assert all(0.0 <= lk <= 1.0 for lk in diet["leaks"])
    # IIR sub-stage k+1 starts from sub-stage k's exact parameters
    t2 = json.loads((out / "iir-T2" / "metrics.json").read_text())
    t1 = json.loads((out / "iir-T1" / "metrics.json").read_text())
    assert t2["initial"]["thresholds"] == diet["thresholds"] and t2["initial"]["leaks"] == diet["leaks"]
    assert t1["initial"]["thresholds"] == t2["thresholds"]
    model, head = load_checkpoint(out / "iir-T1")
    assert model.timesteps == 1 and head["kind"] == "snn" and head["stage"] == "iir-T1"


def test_rerun_skips_finished_stages(tiny_run, capsys):
    out, summary = tiny_run
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/model.pt")}
    again = run(parse_recipe(tiny()), out, device=torch.device("cpu"), progress=True)
    assert again == summary
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/model.pt")} == before
    cap = capsys.readouterr()
    assert "already finished" in cap.out + cap.err


def test_interrupted_training_resumes_to_identical_parameters(tmp_path):
    raw = tiny(stages=[{"name": "ann", "kind": "ann", "epochs": 3, "lr": 3e-3}])
    run(parse_recipe(raw), tmp_path / "full", device=torch.device("cpu"), progress=False)
    full, _ = load_checkpoint(tmp_path / "full" / "ann")

    import spikeforge.engine.train as train

    original = train.save_checkpoint
    calls = {"n": 0}

    def crash_after_second_epoch(*a, **k):
        original(*a, **k)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the process dies right after epoch 2's checkpoint

    train.save_checkpoint = crash_after_second_epoch
    try:
        with pytest.raises(KeyboardInterrupt):
            run(parse_recipe(raw), tmp_path / "cut", device=torch.device("cpu"), progress=False)
    finally:
        train.save_checkpoint = original
    assert load_raw(tmp_path / "cut" / "ann" / "last.pt")["train_state"]["epoch"] == 2
    run(parse_recipe(raw), tmp_path / "cut", device=torch.device("cpu"), progress=False)
    resumed, _ = load_checkpoint(tmp_path / "cut" / "ann")
    for k, v in params(full).items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    hist = json.loads((tmp_path / "cut" / "ann" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3]


def test_sigkill_during_training_then_rerun_completes(tmp_path):
    """A real process killed with SIGKILL mid-stage; the same command finishes without redoing saved epochs."""
    recipe = tmp_path / "r.yaml"
    raw = tiny(stages=[{"name": "ann", "kind": "ann", "epochs": 4, "lr": 3e-3},
                       {"name": "snn", "kind": "snn", "timesteps": 2, "epochs": 1, "max_batches": 2}])
    recipe.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "spikeforge", "run", str(recipe), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    last = out / "ann" / "last.pt"
    while time.time() < deadline and not last.exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists(), "the first epoch checkpoint was never written"
    done_epochs = load_raw(last)["train_state"]["epoch"]
    assert 1 <= done_epochs < 4
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    hist = json.loads((out / "ann" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert (out / "snn" / "model.pt").is_file()


def test_recipe_validation_names_the_key():
    with pytest.raises(ConfigError, match="unknown key.*'epoch'.*stage 'ann'"):
        parse_recipe(tiny(stages=[{"name": "ann", "kind": "ann", "epoch": 2}]))
    with pytest.raises(ConfigError, match="unknown top-level key"):
        parse_recipe(tiny(optimizer="adam"))
    with pytest.raises(ConfigError, match=r"stages\.ann\.epochs: .*greater than or equal to 1, got 0"):
        parse_recipe(tiny(stages=[{"name": "ann", "kind": "ann", "epochs": 0}]))
    with pytest.raises(ConfigError, match="kind must be one of"):
        parse_recipe(tiny(stages=[{"name": "x", "kind": "teleport"}]))
    with pytest.raises(ConfigError, match="percentile"):
        parse_recipe(tiny(stages=[{"name": "c", "kind": "convert", "percentile": 120}]))
    with pytest.raises(ConfigError, match="DataConfig.dataset|dataset"):
        parse_recipe(tiny(data={"dataset": "mnust"}))
    with pytest.raises(ConfigError, match="snn.encoding"):
        parse_recipe(tiny(snn={"encoding": "morse"}))
    with pytest.raises(ConfigError, match="unique"):
        parse_recipe(tiny(stages=[{"name": "a", "kind": "ann"}, {"name": "a", "kind": "ann"}]))
    with pytest.raises(ConfigError, match="3 values for 2 timesteps"):
        parse_recipe(tiny(stages=[{"name": "i", "kind": "iir", "timesteps": [2, 1], "lr": [1e-3, 1e-3, 1e-3]}]))
    r = parse_recipe(tiny(stages=[{"name": "i", "kind": "iir", "timesteps": [3, 2, 1], "max_batches": [5, 5, None]}]))
    assert [s.max_batches for s in r.stages] == [5, 5, None]  # one cap per T, like epochs and lr
    with pytest.raises(ConfigError, match=r"stages\.i\.max_batches\[0\]: .*greater than or equal to 1"):
        parse_recipe(tiny(stages=[{"name": "i", "kind": "iir", "timesteps": [2, 1], "max_batches": [0, 3]}]))
    r = parse_recipe(tiny(stages=[{"name": "a", "kind": "ann", "lr": "1e-3"}]))
    assert r.stages[0].lr == 1e-3  # YAML 1.1 reads 1e-3 as a string; accepted as a number


@pytest.mark.parametrize("stage, key", [
    ({"kind": "ann", "lr": 0}, "lr"), ({"kind": "ann", "lr": float("nan")}, "lr"),
    ({"kind": "ann", "weight_decay": -1e-4}, "weight_decay"), ({"kind": "ann", "grad_clip": 0}, "grad_clip"),
    ({"kind": "ann", "gamma": 0}, "gamma"), ({"kind": "ann", "momentum": 1.5}, "momentum"),
    ({"kind": "ann", "milestones": [0.5, 0]}, "milestones[1]"), ({"kind": "ann", "label_smoothing": 1}, "label_smoothing"),
    ({"kind": "ann", "train": ["bias"]}, "train[0]"), ({"kind": "ann", "schedule": "linear"}, "schedule"),
    ({"kind": "convert", "percentile": 0}, "percentile"), ({"kind": "convert", "scaling": float("inf")}, "scaling"),
    ({"kind": "convert", "eval_timesteps": [4, 0]}, "eval_timesteps[1]"),
    ({"kind": "iir", "timesteps": [2, 3]}, "timesteps"), ({"kind": "iir", "epochs": [1, 0], "timesteps": [2, 1]},
                                                          "epochs[1]"),
    ({"kind": "snn", "init": "random"}, "init"), ({"kind": "snn", "snn": {"leak": 2}}, "snn"),
    ({"kind": "bntt", "exit_threshold": -1}, "exit_threshold"), ({"kind": "attack", "eps": [1.5]}, "eps"),
    ({"kind": "attack", "steps": 0}, "steps"), ({"kind": "attack", "snn": {"leek": 1}}, "snn"),
])
def test_physical_bounds_are_one_line_errors_naming_the_key(stage, key):
    with pytest.raises(ConfigError) as exc:
        parse_recipe(tiny(stages=[{"name": "x", **stage}]))
    msg = str(exc.value)
    assert f"stages.x.{key}" in msg and "\n" not in msg, msg


def test_stage_timesteps_mean_the_same_for_every_kind(tmp_path):
    """The stage's ``timesteps`` wins, else its ``snn.timesteps``, else the recipe's ``snn.timesteps``."""
    r = parse_recipe(tiny(snn={"timesteps": 4}, stages=[
        {"name": "c", "kind": "convert", "snn": {"timesteps": 3}}, {"name": "s", "kind": "snn", "snn": {"timesteps": 3}},
        {"name": "s2", "kind": "snn", "timesteps": 2, "snn": {"timesteps": 3}}, {"name": "s3", "kind": "snn"},
        {"name": "b", "kind": "bntt", "snn": {"timesteps": 3}}, {"name": "c2", "kind": "convert"}]))
    assert [stage_timesteps(s, r.snn) for s in r.stages] == [3, 3, 2, 4, 3, 4]
    raw = tiny(stages=[{"name": "s", "kind": "snn", "init": "scratch", "snn": {"timesteps": 2}, "epochs": 1,
                        "max_batches": 1, "eval_batches": 1}])
    summary = run(parse_recipe(raw), tmp_path, device=torch.device("cpu"), progress=False)
    assert summary["stages"][0]["timesteps"] == 2
    assert load_checkpoint(tmp_path / "s")[0].timesteps == 2


def test_a_new_stage_kind_is_one_registered_class(tiny_run, tmp_path):
    """A stage kind is a Stage subclass with its config class, registered under its name: recipes validate its keys
    and the run gives it the same checkpoint / metrics / summary machinery."""

    @config
    class HalfConfig(StageConfig):
        kind: Literal["half"]
        factor: PosFloat = 0.5

    @STAGES.register("half")
    class Half(Stage):
        Config = HalfConfig

        def run(self, ctx):
            model, _ = self.load_previous(ctx)
            acc = ctx.previous_metrics["test_acc"] * self.cfg.factor
            return self.finish(ctx, model, {"test_acc": acc, "epochs": 0, "seconds": 0.0})

    try:
        with pytest.raises(ConfigError, match=r"stages\.h\.factor: .*greater than 0"):
            parse_recipe(tiny(stages=[{"name": "h", "kind": "half", "factor": 0}]))
        out = tmp_path / "run"
        shutil.copytree(tiny_run[0], out)
        summary = run(parse_recipe(tiny(stages=[*TINY["stages"], {"name": "h", "kind": "half", "source": "ann"}])),
                      out, device=torch.device("cpu"), progress=False)
        ann, half = summary["stages"][0], summary["stages"][-1]
        assert half["stage"] == "h" and half["kind"] == "half" and half["test_acc"] == ann["test_acc"] / 2
        assert load_checkpoint(out / "h")[1]["stage_config"]["factor"] == 0.5
    finally:
        STAGES._items.pop("half", None)


def test_set_overrides_address_stages_by_name(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(tiny()))
    r = load_recipe(p, ["stages.ann.epochs=5", "data.train_subset=100", "stages.iir.timesteps=[3, 2, 1]"])
    assert r.stages[0].epochs == 5 and r.data.train_subset == 100
    assert [s.name for s in r.stages][-3:] == ["iir-T3", "iir-T2", "iir-T1"]
    with pytest.raises(ConfigError, match="no stage named 'nope'"):
        load_recipe(p, ["stages.nope.epochs=1"])


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(path):
    r = load_recipe(path)
    assert r.stages


def test_checkpoint_errors_are_clear(tmp_path):
    m = create_model("vgg4", num_classes=10, in_channels=1, input_size=28, width=0.125, hidden=[16])
    save_checkpoint(tmp_path / "ok.pt", m, {"dataset": "mnist"})
    model, head = load_checkpoint(tmp_path / "ok.pt")
    assert head["dataset"] == "mnist" and not model.spiking
    bad = tmp_path / "bad.pt"
    bad.write_bytes((tmp_path / "ok.pt").read_bytes()[:500])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a spikeforge checkpoint"):
        load_checkpoint(tmp_path / "other.pt")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"format": "spikeforge-checkpoint", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="holds pickled Python code") as exc:
        load_checkpoint(tmp_path / "evil.pt")
    assert "weights_only" not in str(exc.value) and "refused" in str(exc.value)


def test_cli_errors_are_one_line(tmp_path, capsys):
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(tiny(stages=[{"name": "ann", "kind": "ann", "epochz": 1}])))
    assert main(["run", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "epochz" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["eval", str(tmp_path / "nothing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nothing.pt"), "--timesteps", "0"]) == 2
    err = capsys.readouterr().err
    assert "--timesteps must be" in err and "positive" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    r = tiny(data={"dataset": "mnist", "data_dir": str(empty), "download": False})
    p.write_text(yaml.safe_dump(r))
    assert main(["run", str(p), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "SPIKEFORGE_DATA" in err


def test_cli_eval_stage_directory(tiny_run, capsys):
    out, _ = tiny_run
    assert main(["eval", str(out / "convert"), "--timesteps", "2", "4", "--batches", "1", "--json",
                 str(out / "e.json")]) == 0
    res = json.loads((out / "e.json").read_text())
    assert set(res["acc_vs_timesteps"]) == {"2", "4"}
    assert main(["eval", str(out / "ann"), "--batches", "1"]) == 0
    assert "ANN test acc" in capsys.readouterr().out


def test_different_recipe_in_same_directory_is_refused(tiny_run):
    out, _ = tiny_run
    with pytest.raises(RecordError, match=r"stage 'ann' is finished with other settings \(model\.arch: 'vgg4' -> "
                                          r"'vgg5'.*--restart ann"):
        run(parse_recipe(tiny(model={"arch": "vgg5", "width": 0.25, "hidden": [64]})), out,
            device=torch.device("cpu"), progress=False)


def test_resume_accepts_a_run_written_before_a_config_key_existed(tmp_path):
    """A run directory from an older version (no stage records; its recipe.json lacks a key added since) reuses its
    finished stages when the current value of that key is its default, and is refused when it is not."""
    recipe = parse_recipe(tiny())
    check_same_recipe(recipe, tmp_path)
    old = json.loads((tmp_path / "recipe.json").read_text())
    del old["snn"]["checkpoint_chunk"]
    for st in old["stages"]:
        st.pop("eval_every", None)
    tiny_model = create_model("vgg4", num_classes=10, in_channels=1, input_size=28, width=0.125, hidden=[8])
    for st in recipe.stages:  # every stage finished (stand-in results: only the records are checked here)
        (tmp_path / st.name).mkdir()
        (tmp_path / st.name / "metrics.json").write_text("{}")
        save_checkpoint(tmp_path / st.name / "model.pt", tiny_model, {"stage": st.name})
    (tmp_path / "recipe.json").write_text(json.dumps(old))
    check_same_recipe(recipe, tmp_path)  # no error
    (tmp_path / "recipe.json").write_text(json.dumps(old))
    changed = tiny()
    changed["snn"] = {**changed.get("snn", {}), "checkpoint_chunk": 2}
    with pytest.raises(ConfigError, match=r"stage 'convert' is finished with other settings "
                                          r"\(snn\.checkpoint_chunk: null -> 2\)"):
        check_same_recipe(parse_recipe(changed), tmp_path)  # the ann stage does not read the snn section
    changed = tiny()
    changed["stages"][0]["eval_every"] = 2
    with pytest.raises(ConfigError, match=r"stage 'ann' is finished with other settings "
                                          r"\(stages\.ann\.eval_every: 1 -> 2\)"):
        check_same_recipe(parse_recipe(changed), tmp_path)


def test_eval_every_skips_test_evaluation_but_not_the_last_epoch(tmp_path):
    raw = tiny(stages=[{"name": "ann", "kind": "ann", "epochs": 3, "max_batches": 2, "eval_every": 2}])
    run(parse_recipe(raw), tmp_path, device=torch.device("cpu"), progress=False)
    hist = json.loads((tmp_path / "ann" / "metrics.json").read_text())["history"]
    assert [h["test_acc"] is None for h in hist] == [True, False, False]
    with pytest.raises(ConfigError, match=r"eval_every: .*greater than or equal to 0, got -1"):
        parse_recipe(tiny(stages=[{"name": "ann", "kind": "ann", "eval_every": -1}]))
    with pytest.raises(ConfigError, match="eval_every: .*valid integer, got 'often'"):
        parse_recipe(tiny(stages=[{"name": "ann", "kind": "ann", "eval_every": "often"}]))
    raw["stages"][0]["eval_every"] = 0
    run(parse_recipe(raw), tmp_path / "b", device=torch.device("cpu"), progress=False)
    hist = json.loads((tmp_path / "b" / "ann" / "metrics.json").read_text())["history"]
    assert [h["test_acc"] is None for h in hist] == [True, True, False]


def test_rebalance_ablation_recomputes_thresholds(tiny_run, tmp_path):
    """The marked ablation re-runs balancing at the new T instead of inheriting the previous thresholds."""
    out, _ = tiny_run
    raw = tiny(stages=[{"name": "ann", "kind": "ann", "epochs": 1, "max_batches": 4},
                       {"name": "rb", "kind": "snn", "timesteps": 2, "epochs": 1, "max_batches": 1,
                        "rebalance": {"percentile": 90, "sim_timesteps": 4}}])
    summary = run(parse_recipe(raw), tmp_path / "rb", device=torch.device("cpu"), progress=False)
    m = json.loads((tmp_path / "rb" / "rb" / "metrics.json").read_text())
    assert m["rebalanced"]["percentile"] == 90
    assert m["initial"]["thresholds"] != pytest.approx([1.0] * len(m["initial"]["thresholds"]))
    assert summary["stages"][-1]["timesteps"] == 2
    with pytest.raises(ConfigError, match=r"unknown key.*'percentil'.*rebalance"):
        parse_recipe(tiny(stages=[{"name": "rb", "kind": "snn", "timesteps": 2, "rebalance": {"percentil": 90}}]))


def test_attack_stage_white_and_black_box(tiny_run, tmp_path):
    """An ``attack`` stage evaluates the previous (or ``source``) model, optionally as a variant (T, encoding,
    leak) without retraining, with black-box examples crafted on another stage's model."""
    raw = tiny(stages=[*TINY["stages"],
                       {"name": "rob", "kind": "attack", "source": "diet", "attack": "pgd", "eps": ["8/255", 0.1],
                        "steps": 2, "black_box": "ann", "noise": [0.2], "batches": 1,
                        "snn": {"leak": 0.9, "timesteps": 2, "encoding": "poisson"}}])
    out = tmp_path / "run"
    shutil.copytree(tiny_run[0], out)  # reuse the trained stages; only the attack stage runs
    summary = run(parse_recipe(raw), out, device=torch.device("cpu"), progress=False)
    m = json.loads((out / "rob" / "metrics.json").read_text())
    assert m["kind"] == "attack" and m["timesteps"] == 2 and "poisson" in m["model"]
    res = m["robustness"]
    assert res["eps"] == pytest.approx([8 / 255, 0.1]) and set(res["models"]) == {"target", "source"}
    assert len(res["black_box"]) == 2 and (out / "rob" / "robustness.png").is_file()
    assert summary["stages"][-1]["stage"] == "rob"
    with pytest.raises(ConfigError, match="black_box must name an earlier stage"):
        parse_recipe(tiny(stages=[{"name": "rob", "kind": "attack", "black_box": "later"}]))
    with pytest.raises(ConfigError, match="eps"):
        parse_recipe(tiny(stages=[{"name": "a", "kind": "ann"}, {"name": "rob", "kind": "attack", "eps": ["8/0"]}]))


def test_distillation_loss_by_hand():
    """KD (Hinton et al. 2015): (1-w) CE + w tau^2 KL(p_teacher || p_student), both softened by tau."""
    from spikeforge.engine.train import distillation

    teacher = torch.nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    z = torch.randn(5, 3, requires_grad=True)
    w, tau = 0.7, 3.0
    loss = distillation(teacher, weight=w, temperature=tau)(z, x, y)
    pt = torch.softmax(teacher(x).detach() / tau, 1)
    ps = torch.softmax(z / tau, 1)
    kl = (pt * (pt.log() - ps.log())).sum(1).mean()
    expect = (1 - w) * torch.nn.functional.cross_entropy(z, y) + w * tau ** 2 * kl
    assert loss.item() == pytest.approx(expect.item(), rel=1e-5)
    loss.backward()
    assert z.grad is not None and all(p.grad is None for p in teacher.parameters())
    same = distillation(teacher, weight=1.0, temperature=2.0)(teacher(x).detach(), x, y)
    assert same.item() == pytest.approx(0.0, abs=1e-6)  # a student equal to its teacher has nothing to learn


def test_distill_option_of_snn_and_iir_stages(tiny_run, tmp_path):
    """``distill`` on an snn stage (teacher: the ANN stage) and an iir stage (teacher: the previous, higher-T
    stage) trains with the KD loss; the teacher stage is an input of the student's fingerprint."""
    raw = tiny(stages=[*TINY["stages"][:2],
                       {"name": "diet", "kind": "snn", "timesteps": 3, "epochs": 1, "lr": 1e-3, "max_batches": 4,
                        "distill": {"teacher": "ann", "weight": 0.5, "temperature": 4.0}},
                       {"name": "iir", "kind": "iir", "timesteps": [1], "epochs": 1, "lr": 1e-3, "max_batches": 2,
                        "distill": {"weight": 0.9}}])
    out = tmp_path / "run"
    shutil.copytree(tiny_run[0], out)
    for stage in ("diet", "iir-T2", "iir-T1"):
        shutil.rmtree(out / stage, ignore_errors=True)
    summary = run(parse_recipe(raw), out, device=torch.device("cpu"), progress=False)
    assert [s["stage"] for s in summary["stages"]][-2:] == ["diet", "iir-T1"]
    record = json.loads((out / "diet" / "stage.json").read_text())
    assert "ann" in record["inputs"] and "convert" in record["inputs"]
    plain = json.loads((tiny_run[0] / "diet" / "metrics.json").read_text())
    kd = json.loads((out / "diet" / "metrics.json").read_text())
    assert kd["history"][0]["train_loss"] != pytest.approx(plain["history"][0]["train_loss"])
    with pytest.raises(ConfigError, match="distill"):
        parse_recipe(tiny(stages=[{"name": "a", "kind": "ann"},
                                  {"name": "s", "kind": "snn", "distill": {"temperature": 0}}]))
    with pytest.raises(ConfigError, match="later"):
        parse_recipe(tiny(stages=[{"name": "a", "kind": "ann"},
                                  {"name": "s", "kind": "snn", "distill": {"teacher": "later"}}]))
