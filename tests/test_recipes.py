"""The shipped full-scale paper recipes: full-size models build with the right shapes, and every recipe trains a few
steps end to end on synthetic data written in the original file formats (CIFAR python pickles, ImageFolder PNGs).
Real CIFAR/ImageNet files are not available on the development machines."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from spikeforge.engine.stages import run
from spikeforge.models import build_model
from spikeforge.engine.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
PAPER = ["cifar10-vgg16-hybrid", "cifar10-vgg16-diet", "cifar10-vgg16-iir", "cifar100-vgg16-iir",
         "cifar10-resnet20-diet", "imagenet-vgg16-iir"]
BNTT = ["cifar10-vgg9-bntt", "cifar100-vgg11-bntt", "tinyimagenet-vgg11-bntt"]


@pytest.mark.parametrize("name", BNTT)
def test_bntt_paper_models_build(name):
    from spikeforge.nn.bntt import bntt_layers

    r = load_recipe(REPO / "recipes" / f"{name}.yaml")
    st = r.stages[0]
    snn = build_model(r.model, r.snn.updated(**{**st.snn, "timesteps": st.timesteps})).eval()
    assert snn.spec.bntt and snn.snn.encoding == "poisson" and snn.snn.poisson_convention == "half"
    assert snn.snn.readout == "mean" and snn.snn.threshold == 1.0 and snn.snn.leak in (0.95, 0.99)
    layers = bntt_layers(snn)
    assert snn.timesteps == st.timesteps
    assert all(b.weight.shape[0] == st.timesteps and b.bias is None for b in layers)  # one BN per timestep
    assert st.optimizer == "sgd" and st.lr == 0.3 and st.milestones == [0.5, 0.7, 0.9] and st.epochs == 100
    snn.timesteps = 2  # a short forward at the full input size
    x = torch.rand(1, 3, r.model.input_size, r.model.input_size)
    with torch.no_grad():
        assert snn(x).shape == (1, r.model.num_classes)


@pytest.mark.parametrize("name", PAPER)
def test_full_size_models_build_with_paper_shapes(name):
    r = load_recipe(REPO / "recipes" / f"{name}.yaml")
    ann = build_model(r.model).eval()
    snn = build_model(r.model, r.snn.updated(timesteps=1)).eval()
    missing, unexpected = snn.load_state_dict(ann.state_dict(), strict=False)
    assert not unexpected and all(k.endswith((".threshold", ".leak")) for k in missing)
    x = torch.rand(1, 3, r.model.input_size, r.model.input_size)
    with torch.no_grad():
        assert ann(x).shape == (1, r.model.num_classes)
        assert snn(x).shape == (1, r.model.num_classes)
    if r.model.arch == "vgg16":
        expected = 512 * 7 * 7 if r.model.input_size == 224 else 2048
        assert ann.classifier[1].in_features == expected


def _write_cifar(root: Path, name: str, n_train=48, n_test=16):
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        key, classes = b"labels", 10
    else:
        folder = root / "cifar-100-python"
        files, key, classes = ["train", "test"], b"fine_labels", 100
    folder.mkdir(parents=True)
    for f in files:
        n = n_test if "test" in f else n_train // (len(files) - 1)
        labels = rng.integers(0, classes, n)
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        data[:, :1024] = (labels[:, None] * 23 % 256).astype(np.uint8)  # a learnable class signal in the R plane
        with open(folder / f, "wb") as fh:
            pickle.dump({b"batch_label": b"synthetic", b"data": data, key: labels.tolist()}, fh, protocol=2)


def _write_folder(root: Path, classes=3, per_class=4, size=40):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")


def _tiny(raw_stages: list) -> list[str]:
    sets = ["data.train_subset=32", "data.test_subset=16", "data.batch_size=8", "data.test_batch_size=8",
            "data.calib_batch_size=8", "model.width=0.0625", "model.hidden=[32, 32]", "data.workers=0"]
    for st in raw_stages:
        n = st["name"]
        kind = st["kind"]
        if kind in ("ann", "snn", "iir", "bntt"):
            sets += [f"stages.{n}.epochs=1", f"stages.{n}.max_batches=1"]
        if kind == "convert":
            sets += [f"stages.{n}.sim_timesteps=3", f"stages.{n}.eval_timesteps=[2]", f"stages.{n}.timesteps=2"]
        if kind in ("snn", "bntt"):
            sets.append(f"stages.{n}.timesteps=2")
        if kind == "iir":
            sets.append(f"stages.{n}.timesteps=[1]")
    return sets


@pytest.mark.parametrize("name", PAPER + BNTT)
def test_paper_recipes_run_a_few_steps_on_synthetic_files(name, tmp_path):
    import yaml

    raw = yaml.safe_load((REPO / "recipes" / f"{name}.yaml").read_text())
    data_dir = tmp_path / "data"
    if raw["data"]["dataset"] == "imagefolder":
        _write_folder(data_dir)
        extra = ["data.image_size=32", "model.input_size=32"]
    else:
        _write_cifar(data_dir, raw["data"]["dataset"])
        extra = []
    r = load_recipe(REPO / "recipes" / f"{name}.yaml",
                    _tiny(raw["stages"]) + extra + [f"data.data_dir={data_dir}", "device=cpu"])
    summary = run(r, tmp_path / "run", device=torch.device("cpu"), progress=False)
    assert [s["stage"] for s in summary["stages"]] == [s.name for s in r.stages]
    assert all(0.0 <= s["test_acc"] <= 1.0 for s in summary["stages"])
    assert summary["stages"][-1]["timesteps"] in (1, 2)
