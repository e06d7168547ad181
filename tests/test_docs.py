"""The documentation site builds without a warning (``mkdocs build --strict``), and the Python shown in it and in the
README parses. Skipped when mkdocs and its plugins are not installed (``pip install -e ".[docs]"``; the ``test`` extra
has them too, except the Material theme, without which the site is built with mkdocs' own theme)."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# pages written by hand for the site (results/, architecture and export pages have their own owners and checks)
PAGES = sorted(p for p in DOCS.rglob("*.md") if p.relative_to(DOCS).parts[0] not in ("results", "explain"))


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^ *```python\n(.*?)^ *```", text, flags=re.S | re.M)


@pytest.mark.parametrize("path", [ROOT / "README.md", *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_python_in_the_docs_parses(path):
    for block in _python_blocks(path.read_text()):
        lines = block.splitlines()
        indent = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
        ast.parse("\n".join(line[indent:] for line in lines))


def _config(tmp_path: Path) -> Path:
    """mkdocs.yml with absolute paths (and mkdocs' own theme when Material is not installed)."""
    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    cfg["docs_dir"] = str(DOCS)
    cfg["hooks"] = [str(ROOT / h) for h in cfg.get("hooks", [])]
    handler = cfg["plugins"][1]["mkdocstrings"]["handlers"]["python"]
    handler["paths"] = [str(ROOT / p) for p in handler.get("paths", [])]
    handler["options"]["extensions"] = [str(ROOT / e) for e in handler["options"].get("extensions", [])]
    if importlib.util.find_spec("material") is None:
        cfg["theme"] = {"name": "mkdocs"}
    path = tmp_path / "mkdocs.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_site_builds_strict(tmp_path):
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python", "pymdownx"):
        if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(_config(tmp_path)),
                          "-d", str(site)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    recipes = (site / "reference" / "recipes" / "index.html").read_text()
    for key in ("checkpoint_chunk", "percentile", "train_subset", "kind: iir", "kind: stdp"):
        assert key in recipes, key
    assert "spikeforge run" in (site / "reference" / "cli" / "index.html").read_text()
    for page in ("tutorials/01_your_own_training_loop", "api/models", "methods/diet-snn", "changelog"):
        assert (site / page / "index.html").is_file(), page
    assert "param_groups" in (site / "api" / "models" / "index.html").read_text()
