"""``spikeforge doctor``: what this installation can do, and what to fix.

One table (or ``--json``): Python, torch, CUDA and the GPUs, Triton, the C++ toolchain (compiler, ninja, extension
build cache), which neuron path each device takes (CPU: compiled C++ kernel or PyTorch; CUDA: Triton or PyTorch) and
why, the kernel self-check on each device (the compiled kernel against the PyTorch path, see
:mod:`spikeforge.kernels.selfcheck`), the data directory and the datasets found in it, whether the cache directory is
writable, and the optional extras installed. Each row has a status: ``ok``, ``info`` (absent but optional), ``warn``
(works, slower or with less) or ``FAIL`` (broken); a row that is not ``ok`` names its fix. The exit status is 1 when
any row is ``FAIL``, else 0.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import torch

from spikeforge import kernels
from spikeforge.data import DATASETS, resolve_cache_dir, resolve_data_dir
from spikeforge.data.paths import CACHE_ENV, DATA_ENV, is_writable_dir
from spikeforge.data.registry import tensor_dataset_names
from spikeforge.kernels import selfcheck, triton_neuron
from spikeforge.neuron import functional as F
from spikeforge.utils import text_table
from spikeforge.version import __version__

OK, INFO, WARN, FAIL = "ok", "info", "warn", "FAIL"

#: Optional packages and what spikeforge does with them.
EXTRAS = {
    "nir": ("NIR export", "pip install 'spikeforge[export]'"),
    "onnx": ("ONNX export", "pip install 'spikeforge[export]'"),
    "onnxruntime": ("checking exported ONNX files against PyTorch", "pip install 'spikeforge[export]'"),
    "snntorch": ("reading spikeforge's NIR graphs, the peer benchmark", "pip install snntorch"),
    "sinabs": ("reading NIR graphs, for interoperability checks", "pip install sinabs"),
    "tonic": ("event-camera datasets", "pip install tonic"),
    "tensorboard": ("TensorBoard logs", "pip install tensorboard"),
    "spikingjelly": ("the peer benchmark, benchmarks/peers.py", "pip install spikingjelly==2.0.0"),
    "norse": ("reading NIR graphs, for interoperability checks", "install norse from source"),
}


class Check(NamedTuple):
    name: str
    status: str  # ok | info | warn | FAIL
    detail: str
    fix: str = ""


def _first_line(text: str, limit: int = 160) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0][:limit] if lines else ""


def _version_of(cmd: list[str]) -> str | None:
    """First line of ``cmd`` (a ``--version`` call), or None if it cannot run."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return _first_line(out.stdout or out.stderr) or None


def platform_checks() -> list[Check]:
    """Python, torch, CUDA (and each GPU), Triton."""
    rows = [Check("python", OK, f"{platform.python_version()} ({sys.executable})"),
            Check("torch", OK, f"{torch.__version__} (CUDA build: {torch.version.cuda or 'none, CPU only'}); "
                               f"spikeforge {__version__}")]
    if torch.cuda.is_available():
        gpus = [f"cuda:{i} {torch.cuda.get_device_name(i)} (capability "
                f"{'.'.join(map(str, torch.cuda.get_device_capability(i)))})" for i in range(torch.cuda.device_count())]
        rows.append(Check("CUDA", OK, "; ".join(gpus)))
    elif torch.version.cuda:
        rows.append(Check("CUDA", INFO, f"torch built for CUDA {torch.version.cuda} but no GPU is visible",
                          "check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES, if a GPU is expected"))
    else:
        rows.append(Check("CUDA", INFO, "CPU-only build of torch", "install a CUDA build of torch to use a GPU"))
    if triton_neuron.triton is not None:
        rows.append(Check("triton", OK, str(getattr(triton_neuron.triton, "__version__", "installed"))))
    else:
        status = WARN if torch.cuda.is_available() else INFO
        rows.append(Check("triton", status, f"not usable ({_first_line(kernels.unavailable_reason() or '')})",
                          "pip install triton (CUDA builds of torch ship it); needed for the fast CUDA neuron"))
    return rows


def toolchain_checks() -> list[Check]:
    """The C++ compiler, ninja and the extension build cache the compiled CPU kernel needs."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # no "No CUDA runtime" noise
    from torch.utils import cpp_extension

    cxx = os.environ.get("CXX", "c++")
    version = _version_of([cxx, "--version"])
    fix_cxx = "install a C++ compiler (e.g. apt install g++) for the compiled CPU neuron (about 3x faster)"
    rows = [Check("C++ compiler", OK, f"{cxx}: {version}") if version else
            Check("C++ compiler", WARN, f"{cxx} not found (the CPU neuron takes the PyTorch path)", fix_cxx)]
    ninja = _version_of(["ninja", "--version"]) if cpp_extension.is_ninja_available() else None
    rows.append(Check("ninja", OK, ninja) if ninja else
                Check("ninja", WARN, "not found (torch builds C++ extensions with it)", "pip install ninja"))
    build_root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root())
    rows.append(Check("extension build cache", OK, f"{build_root} (writable)") if is_writable_dir(build_root) else
                Check("extension build cache", WARN, f"{build_root} is not writable (new kernels cannot be built)",
                      "set TORCH_EXTENSIONS_DIR to a writable directory"))
    return rows


def _selfcheck_row(device: str, results: dict) -> Check:
    name = f"kernel self-check ({device})"
    if selfcheck.disabled():
        return Check(name, INFO, f"skipped ({selfcheck.ENV}=1): compiled kernels are trusted unchecked",
                     f"unset {selfcheck.ENV}")
    if not results:
        return Check(name, INFO, "not run: no compiled kernel applies on this device")
    bad = {c: o for c, o in results.items() if not o.ok}
    secs = sum(o.seconds for o in results.values())
    if not bad:
        return Check(name, OK, f"{len(results)} configurations agree with the PyTorch path ({secs * 1e3:.0f} ms "
                               f"in all, {max(o.seconds for o in results.values()) * 1e3:.0f} ms at most)")
    config, outcome = next(iter(bad.items()))
    flag = "SPIKEFORGE_NO_TRITON" if config.backend == "triton" else "SPIKEFORGE_NO_CPP"
    return Check(name, FAIL, f"{len(bad)} of {len(results)} configurations disagree with the PyTorch path and use it "
                             f"instead, e.g. {config.describe()}: {outcome.detail}",
                 f"results stay correct (PyTorch path) but slower: report this output as a bug; {flag}=1 switches "
                 f"the kernel off without the warning")


def cpu_neuron_checks() -> list[Check]:
    """Which path the CPU neuron takes (compiled C++ kernel or PyTorch) and its self-check."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = kernels.cpu_kernel() is not None
    if kernels.cpp_disabled():
        path = Check("neuron path (cpu)", INFO, "PyTorch fused path: SPIKEFORGE_NO_CPP is set",
                     "unset SPIKEFORGE_NO_CPP for the compiled C++ kernel")
    elif not built:
        why = _first_line(caught[-1].message) if caught else "the build failed earlier in this process"
        path = Check("neuron path (cpu)", WARN, f"PyTorch fused path: the C++ kernel is unavailable ({why})",
                     "install g++ and ninja (pip install ninja) and make TORCH_EXTENSIONS_DIR writable")
    else:
        path = Check("neuron path (cpu)", OK, "compiled C++ kernel (float32/float64)")
    results = F.check_kernels("cpu") if built else {}
    return [path, _selfcheck_row("cpu", results)]


def cuda_neuron_checks() -> list[Check]:
    """Which path the CUDA neuron takes (Triton or PyTorch) and its self-check; nothing without CUDA."""
    if not torch.cuda.is_available():
        return [Check("neuron path (cuda)", INFO, "no CUDA device")]
    fix = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ready = kernels.triton_available("cuda")
    if os.environ.get("SPIKEFORGE_NO_TRITON", "") in ("1", "true", "yes"):
        status, detail, fix = INFO, "PyTorch fused path: SPIKEFORGE_NO_TRITON is set", "unset SPIKEFORGE_NO_TRITON"
    elif triton_neuron.triton is None:
        status, detail = WARN, f"PyTorch fused path: triton is not usable ({_first_line(kernels.unavailable_reason())})"
        fix = "pip install triton matching your torch (CUDA builds of torch ship it)"
    elif not ready:
        why = _first_line(caught[-1].message) if caught else "its test launch failed"
        status, detail = WARN, f"PyTorch fused path: the Triton kernel does not run here ({why})"
        fix = "update the NVIDIA driver, or install the triton version your torch was built with"
    else:
        status, detail = OK, "Triton kernel for T >= 2 (the PyTorch fused path at T = 1, where it is faster)"
    results = F.check_kernels("cuda") if ready and status == OK else {}
    return [Check("neuron path (cuda)", status, detail, fix), _selfcheck_row("cuda", results)]


def _datasets_present(root: Path) -> tuple[list[str], list[str]]:
    """``(found, missing)`` tensor datasets under ``root`` (the test split is read and checksum-verified)."""
    found, missing = [], []
    for name in tensor_dataset_names():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                DATASETS.get(name).load(root, False, False)
            found.append(name)
        except Exception:  # DataError: missing or corrupt; anything else: unreadable
            missing.append(name)
    return found, missing


def data_checks(data_dir: str | None = None) -> list[Check]:
    """The data directory (and which datasets it holds) and the cache directory (must be writable)."""
    root = resolve_data_dir(data_dir)
    source = "--data-dir" if data_dir else (f"${DATA_ENV}" if os.environ.get(DATA_ENV) else "default")
    found, missing = _datasets_present(root)
    if found:
        data = Check("data directory", OK, f"{root} ({source}): {', '.join(found)}"
                                           + (f"; not found: {', '.join(missing)}" if missing else ""))
    else:
        data = Check("data directory", INFO, f"{root} ({source}): no dataset found",
                     f"datasets download there on first use, or point {DATA_ENV} (or --data-dir) at your copies")
    cache = resolve_cache_dir()
    where = f"${CACHE_ENV}" if os.environ.get(CACHE_ENV) else "default"
    if is_writable_dir(cache):
        return [data, Check("cache directory", OK, f"{cache} ({where}): writable")]
    return [data, Check("cache directory", FAIL, f"{cache} ({where}): not writable",
                        f"set {CACHE_ENV} to a writable directory (or fix the permissions of {cache})")]


def extras_checks() -> list[Check]:
    rows = []
    for name, (use, install) in EXTRAS.items():
        if importlib.util.find_spec(name) is None:
            rows.append(Check(f"extra: {name}", INFO, f"not installed (used for {use})", install))
            continue
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = "installed"
        rows.append(Check(f"extra: {name}", OK, f"{version} (used for {use})"))
    return rows


def run_checks(data_dir: str | None = None) -> list[Check]:
    """Every row of the doctor's table, in order."""
    return [*platform_checks(), *toolchain_checks(), *cpu_neuron_checks(), *cuda_neuron_checks(),
            *data_checks(data_dir), *extras_checks()]


def cmd_doctor(args) -> int:
    t0 = time.perf_counter()
    checks = run_checks(args.data_dir)
    failed = [c for c in checks if c.status == FAIL]
    if args.json:
        print(json.dumps({"ok": not failed, "seconds": round(time.perf_counter() - t0, 3),
                          "checks": [c._asdict() for c in checks]}, indent=1))
    else:
        table = text_table(("check", "status", "detail", "fix"), [tuple(c) for c in checks], left=4)
        print("\n".join(line.rstrip() for line in table.splitlines()))
        print(f"\n{len(failed)} problem(s): " + "; ".join(f"{c.name}: {c.fix}" for c in failed) if failed
              else "\nno problems found")
    return 1 if failed else 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("doctor", help="check the installation: versions, GPU, kernels, data, cache",
                              description=__doc__.split("\n\n")[1])
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.add_argument("--data-dir", help="dataset directory to inspect (default: $SPIKEFORGE_DATA, else "
                                      "~/.cache/spikeforge/data)")
    p.set_defaults(func=cmd_doctor)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m spikeforge.app.commands.doctor [--json] [--data-dir DIR]`` (the same as ``spikeforge doctor``)."""
    p = argparse.ArgumentParser(prog="spikeforge")
    add_parser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["doctor", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
