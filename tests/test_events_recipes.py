"""The event recipes (nmnist, dvs-gesture, cifar10-dvs-bntt, shd, mnist-saccade): each builds its full-size model
and trains a few steps end to end through the unchanged engine (stages, energy, summary, resume) on small files
written here in the datasets' original formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_events import write_cifar10_dvs, write_gesture, write_mnist_idx, write_nmnist, write_shd

from spikeforge.engine.recipe import load_recipe
from spikeforge.engine.stages import run
from spikeforge.models import SilentLayerWarning

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore", category=SilentLayerWarning)

# recipe -> (writer of its files, frames used in the test: the full T for the small models, 2 for the big ones)
CASES = {"nmnist": (lambda d: write_nmnist(d, per_class=1), 2),
         "dvs-gesture": (lambda d: write_gesture(d), 3),
         "cifar10-dvs-bntt": (lambda d: write_cifar10_dvs(d, per_class=2), 2),
         "shd": (lambda d: write_shd(d, n=8), None),
         "mnist-saccade": (lambda d: write_mnist_idx(d, 16, 8), None)}


def _few_steps(name: str, data_dir: Path, frames: int | None) -> list[str]:
    r = load_recipe(REPO / "recipes" / f"{name}.yaml")
    sets = [f"data.data_dir={data_dir}", "data.download=false", "data.batch_size=2", "data.test_batch_size=2"]
    if frames is not None:
        sets.append(f"data.timesteps={frames}")
    for st in r.source["stages"]:
        sets += [f"stages.{st['name']}.epochs=1", f"stages.{st['name']}.max_batches=1",
                 f"stages.{st['name']}.eval_batches=1"]
    return sets


@pytest.mark.parametrize("name", list(CASES))
def test_event_recipe_trains_a_few_steps(name, tmp_path, monkeypatch):
    pytest.importorskip("tonic")
    pytest.importorskip("h5py")
    monkeypatch.setenv("SPIKEFORGE_CACHE", str(tmp_path / "cache"))
    write, frames = CASES[name]
    write(tmp_path / "data")
    full = load_recipe(REPO / "recipes" / f"{name}.yaml")
    recipe = load_recipe(REPO / "recipes" / f"{name}.yaml", _few_steps(name, tmp_path / "data", frames))
    assert recipe.model == full.model  # the recipe's own full-size architecture and input size
    assert recipe.model.input == "events" and recipe.snn.encoding == "events"
    assert recipe.snn.timesteps == (frames or full.snn.timesteps)
    out = tmp_path / "run"
    summary = run(recipe, out, device=torch.device("cpu"), progress=False)
    stage = summary["stages"][-1]
    assert 0.0 <= stage["test_acc"] <= 1.0
    assert stage["energy"]["encoding"] == "events" and stage["energy"]["layers"][0]["input"] == "spikes"
    assert stage["energy_ratio"] is None or stage["energy_ratio"] > 0
    again = run(recipe, out, device=torch.device("cpu"), progress=False)  # finished stages are reused, not redone
    assert again["stages"][-1]["test_acc"] == stage["test_acc"]
    assert json.loads((out / "summary.json").read_text())["recipe"] == full.name


def test_cli_evaluates_an_event_checkpoint_on_its_own_frames(tmp_path, monkeypatch):
    """`spikeforge eval` / `energy` rebuild the frames the model was trained on (the checkpoint header records the
    data's frame count and binning), not the dataset's defaults."""
    pytest.importorskip("tonic")
    from spikeforge.app.cli import main
    from spikeforge.engine.checkpoint import load_checkpoint

    monkeypatch.setenv("SPIKEFORGE_CACHE", str(tmp_path / "cache"))
    write_mnist_idx(tmp_path / "data", 16, 8)
    sets = _few_steps("mnist-saccade", tmp_path / "data", None)
    recipe = load_recipe(REPO / "recipes" / "mnist-saccade.yaml", sets)
    out = tmp_path / "run"
    run(recipe, out, device=torch.device("cpu"), progress=False)
    _, header = load_checkpoint(out / recipe.stages[-1].name / "model.pt")
    assert header["data"]["timesteps"] == recipe.data.timesteps
    report = tmp_path / "eval.json"
    args = [str(out), "--data-dir", str(tmp_path / "data"), "--batches", "1", "--device", "cpu"]
    assert main(["eval", *args, "--json", str(report)]) in (0, None)
    assert set(json.loads(report.read_text())["acc_vs_timesteps"]) == {str(recipe.data.timesteps)}
    assert main(["energy", *args]) in (0, None)
