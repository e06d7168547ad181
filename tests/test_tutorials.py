"""The tutorials run: each script in ``tutorials/`` is executed on a small slice (``SPIKEFORGE_TUTORIAL_FAST=1``), so
the code shown in the documentation cannot drift from the library. Each is sized to run well under a minute."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
NEEDS = {"06_export_nir_onnx.py": ("nir", "onnx", "onnxruntime", "snntorch")}


def test_there_are_six_tutorials_in_jupytext_percent_format():
    assert [p.name[:2] for p in TUTORIALS] == ["01", "02", "03", "04", "05", "06"]
    for path in TUTORIALS:
        text = path.read_text()
        assert "format_name: percent" in text and text.count("# %% [markdown]") >= 3, path.name
        assert "SPIKEFORGE_TUTORIAL_FAST" in text, path.name
    jupytext = pytest.importorskip("jupytext")
    for path in TUTORIALS:
        nb = jupytext.read(path)
        kinds = {cell.cell_type for cell in nb.cells}
        assert kinds == {"markdown", "code"}, path.name


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs(path, tmp_path):
    data = Path(os.environ.get("SPIKEFORGE_DATA", "")) / "mnist"
    if not (data / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("the tutorials train on MNIST: set SPIKEFORGE_DATA to a directory with mnist/")
    for module in NEEDS.get(path.name, ()):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{path.name} needs {module}")
    env = {**os.environ, "SPIKEFORGE_TUTORIAL_FAST": "1", "SPIKEFORGE_TUTORIAL_OUT": str(tmp_path / "out"),
           "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",  # one intra-op thread: fastest and steadiest on 2 cores
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    start = time.time()
    res = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    seconds = time.time() - start
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    print(f"{path.name}: {seconds:.1f} s")
