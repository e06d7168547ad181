"""Architecture contracts: layers look only down, no import cycles, no function-local imports of spikeforge modules
(which would hide a cycle or an upward import from a reader), library functions stay short.

The layer order and the contracts live in ``pyproject.toml`` (``[tool.importlinter]``); ``docs/architecture.md``
draws them.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "spikeforge"
LIBRARY = ("neuron", "kernels", "nn", "models", "data", "methods", "analysis", "export", "presets.py")
MAX_FUNCTION_LINES = 60
# Long by nature: a Triton kernel must be one function (no calls into Python helpers inside @triton.jit).
LONG_ALLOWED = {"kernels/triton_neuron.py:_backward_kernel", "kernels/triton_neuron.py:_forward_kernel"}


def _lint_imports() -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    return subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})


def test_import_contracts_hold():
    res = _lint_imports()
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken" in res.stdout


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _py_files():
    return sorted(p for p in SRC.rglob("*.py"))


def test_no_function_local_spikeforge_imports():
    """Every import of a spikeforge module sits at the top of its file; a local one would hide a cycle."""
    local = []
    for path in _py_files():
        rel = path.relative_to(SRC).as_posix()
        if rel == "__init__.py":  # the lazy public API (PEP 562 __getattr__) imports on first attribute access
            continue
        tree = ast.parse(path.read_text())
        for fn in _functions(tree):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("spikeforge")):
                    local.append(f"{rel}:{fn.name} imports {node.module}")
                elif isinstance(node, ast.Import) and any(a.name.startswith("spikeforge") for a in node.names):
                    local.append(f"{rel}:{fn.name}")
    assert not local, "function-local spikeforge imports:\n" + "\n".join(local)


def test_library_functions_are_short():
    long = []
    for path in _py_files():
        rel = path.relative_to(SRC).as_posix()
        if rel.split("/")[0] not in LIBRARY:
            continue
        for fn in _functions(ast.parse(path.read_text())):
            n = fn.end_lineno - fn.lineno + 1
            if n > MAX_FUNCTION_LINES and f"{rel}:{fn.name}" not in LONG_ALLOWED:
                long.append(f"{rel}:{fn.name} ({n} lines)")
    assert not long, f"library functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_docstrings_cite_papers_not_internal_notes():
    hits = [p.relative_to(SRC).as_posix() for p in _py_files() if "methods.md" in p.read_text()]
    assert not hits, f"docstrings point to a file that is not in the repository: {hits}"
