"""Run report: plots and a self-contained report.html from a fake run directory; rendered in headless Chromium."""

import base64
import json
import re
import shutil
import subprocess

import pytest
import torch

from spikeforge.analysis.energy import stage_energy_metrics
from spikeforge.analysis.monitor import SpikeMonitor
from spikeforge.app.report import write_run_plots, write_run_report
from spikeforge.models import create_model

TINY = dict(num_classes=10, in_channels=1, input_size=28, width=0.125, hidden=[32])
PNGS = ("accuracy_vs_timesteps.png", "spike_rates.png", "energy_per_layer.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _snn_stage(name, kind, steps, acc, seconds):
    torch.manual_seed(0)
    model = create_model("vgg4", spiking=True, timesteps=steps, threshold=0.2, **TINY)
    x = torch.rand(4, 1, 28, 28)
    energy = stage_energy_metrics(model, x, "cpu")
    return {"stage": name, "kind": kind, "timesteps": steps, "test_acc": acc, "epochs": 2, "seconds": seconds,
            "spike_rate": _rates(model, x), **energy}


def _rates(model, x):
    with torch.no_grad(), SpikeMonitor(model) as mon:
        model(x)
    return {**mon.rates(), "mean": mon.mean_rate()}


def _write_run(root, stages, summary_drop=()):
    root.mkdir(parents=True, exist_ok=True)
    light = []
    for st in stages:
        (root / st["stage"]).mkdir(exist_ok=True)
        full = {**st, "history": [{"epoch": 1, "loss": 1.0}]}
        (root / st["stage"] / "metrics.json").write_text(json.dumps(full))
        light.append({k: v for k, v in st.items() if k not in summary_drop})
    summary = {"recipe": "demo-recipe", "stages": light}
    (root / "summary.json").write_text(json.dumps(summary))
    return summary


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    ann = {"stage": "ann", "kind": "ann", "timesteps": None, "test_acc": 0.981, "epochs": 3, "seconds": 65.0}
    convert = {"stage": "convert", "kind": "convert", "timesteps": 64, "test_acc": 0.962, "epochs": 0,
               "seconds": 12.5, "ann_acc": 0.981,
               "acc_vs_timesteps": {"8": 0.41, "16": 0.77, "32": 0.93, "64": 0.962, "128": 0.975},
               "spike_rate": {"features.1": 3.1, "features.4": 1.7, "classifier.2": 0.9, "mean": 2.6}}
    snn = _snn_stage("snn", "snn", 5, 0.972, 300.0)
    iir = _snn_stage("iir-t1", "iir", 1, 0.955, 120.0)
    stages = [ann, convert, snn, iir]
    # the summary lacks the energy of the SNN stage: it must come from snn/metrics.json
    summary = _write_run(root, stages)
    summary["stages"][2] = {k: v for k, v in summary["stages"][2].items() if k != "energy"}
    (root / "summary.json").write_text(json.dumps(summary))
    paths = write_run_plots(root, summary)
    return root, paths, stages


def test_report_files_and_self_contained(full_run):
    root, paths, stages = full_run
    names = [p.name for p in paths]
    assert names[-1] == "report.html" and set(PNGS) <= set(names)
    for name in PNGS:
        assert (root / name).read_bytes().startswith(PNG_MAGIC)
    page = (root / "report.html").read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page, flags=re.I)
    assert refs and all(r.startswith("data:") for r in refs), refs
    assert "http://" not in page and "https://" not in page and "<script" not in page.lower()
    imgs = re.findall(r"<img[^>]*src=\"data:image/png;base64,([A-Za-z0-9+/=]+)\"", page)
    assert len(imgs) == 3
    for b64 in imgs:
        assert base64.b64decode(b64).startswith(PNG_MAGIC)
    # stage table: every stage, accuracies in %, the energy ratio of the SNN stage (merged from its metrics.json)
    for st in stages:
        assert f"<td>{st['stage']}</td>" in page
    assert "98.10%" in page and "97.20%" in page
    assert f"{stages[2]['energy_ratio']:.2f}&times;" in page
    assert "demo-recipe" in page


def test_report_reads_summary_json_and_handles_an_ann_only_run(tmp_path):
    ann = {"stage": "ann", "kind": "ann", "timesteps": None, "test_acc": 0.99, "epochs": 1, "seconds": 3.0}
    _write_run(tmp_path, [ann])
    paths = write_run_report(tmp_path)  # summary read from summary.json
    assert [p.name for p in paths] == ["report.html"]
    page = (tmp_path / "report.html").read_text()
    assert "<td>ann</td>" in page and "99.00%" in page and "<img" not in page
    assert "No spiking stage" in page
    # a spiking stage with neither energy nor curve still gets its spike rates and its point
    snn = {"stage": "snn", "kind": "snn", "timesteps": 3, "test_acc": 0.9, "epochs": 1, "seconds": 5.0,
           "spike_rate": {"a": 0.5, "b": 0.25, "mean": 0.4}}
    summary = _write_run(tmp_path, [ann, snn])
    names = [p.name for p in write_run_plots(tmp_path, summary)]
    assert names == ["accuracy_vs_timesteps.png", "spike_rates.png", "report.html"]


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary (apt-get install chromium)")
def test_report_renders_in_headless_chromium(full_run, tmp_path):
    import matplotlib.image

    root, _, _ = full_run
    page = (root / "report.html").resolve()
    base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "shot.png"
    subprocess.run(base + [f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
                   capture_output=True, timeout=90, check=False)
    assert shot.is_file() and shot.stat().st_size > 0
    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1000
    assert float(pixels[..., :3].std()) > 0.05  # not a blank page
    # the lower half holds plots too, not only white space
    assert float(pixels[pixels.shape[0] // 2:, :, :3].std()) > 0.02
    dom = subprocess.run(base + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=90,
                         check=False).stdout
    imgs = re.findall(r"<img\b[^>]*>", dom)
    assert len(imgs) == 3
    for tag in imgs:
        src = re.search(r"src=\"([^\"]*)\"", tag)
        assert src and src.group(1).startswith("data:image/png;base64,")
