#!/usr/bin/env bash
# One-shot GPU validation of spikeforge (about 5-8 minutes on one H100/H200). Writes one markdown report.
#
#   bash benchmarks/gpu_validate.sh [--out gpu_report.md] [--dry-run]
#
# Steps: machine and versions; `spikeforge doctor` (versions, neuron path per device, kernel self-check, data, cache);
# every test marked `gpu` (pytest -m gpu); the CUDA tests (Triton neuron kernel against the PyTorch reference,
# forward and gradients, every ordering/reset/surrogate/parameter layout); the kernel self-check of every
# configuration on the device, with its cost; the torch.compile tests (no graph break, training and inference equal
# eager, dynamic batch); a whole VGG16 on the Triton path against the PyTorch path, 2-epoch training throughput on
# synthetic CIFAR-sized data and torch.compile inference (graph breaks, eager vs compiled time); the peer benchmark
# (VGG16 at CIFAR size, batch 64, T in {1, 5}: spikeforge Triton vs spikeforge PyTorch path vs SpikingJelly's
# backends, step time and peak memory).
#
# --dry-run runs every step at tiny sizes on the CPU (Triton's interpreter where Triton is installed; the compiled
# C++ kernel for the self-check) so that CI exercises the script in about a minute. Every step runs even if an
# earlier one fails; the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=gpu_report.md
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n 2,17p "$0"; exit 0 ;;
    *) echo "gpu_validate.sh: unknown argument $1 (use --out FILE or --dry-run)" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
FAILED=()

if [ "$DRY" = 1 ]; then
  DEV=cpu; NET=issue9; BATCH=4; IMAGES=16; EPOCHS=1; TS="1 2"; REPEATS=1
  TEST_ARGS=(tests/test_triton.py -q -x -k "interpreter or reference")
  GPU_TEST_ARGS=(tests/test_triton.py tests/test_selfcheck.py tests/test_compile.py)  # collected, then skipped
  COMPILE_ARGS=(tests/test_compile.py -q -rs -k "graph_break or opcheck")
else
  if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_validate.sh: no CUDA GPU visible to $PY (torch.cuda.is_available() is False); use --dry-run on a CPU" >&2
    exit 2
  fi
  DEV=cuda; NET=vgg16; BATCH=64; IMAGES=5120; EPOCHS=2; TS="1 5"; REPEATS=20
  TEST_ARGS=(tests/test_triton.py tests/test_neuron.py tests/test_peers.py -q -rs)
  GPU_TEST_ARGS=(tests/test_triton.py tests/test_selfcheck.py tests/test_compile.py tests/test_doctor.py tests/test_peers.py)
  COMPILE_ARGS=(tests/test_compile.py -q -rs)
fi

step() {  # step NAME CMD...: run, keep the log, record the status
  local name="$1"; shift
  echo "== $name"
  local t0=$SECONDS
  "$@" >"$TMP/$name.log" 2>&1
  local rc=$?
  cat "$TMP/$name.log"
  echo "$rc $((SECONDS - t0))" >"$TMP/$name.rc"
  [ $rc -eq 0 ] || FAILED+=("$name")
}

step machine "$PY" - <<'EOF'
import platform, subprocess, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
try:
    import triton; print("triton", triton.__version__)
except ImportError:
    print("triton not installed")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("GPU", p.name, f"{p.total_memory / 2**30:.0f} GiB", f"{p.multi_processor_count} SMs",
          f"capability {p.major}.{p.minor}")
    try:
        print(subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip() and "driver " +
              subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip())
    except OSError:
        pass
for name in ("snntorch", "spikingjelly"):
    try:
        m = __import__(name); print(name, getattr(m, "__version__", "installed"))
    except Exception as exc:
        print(name, "not available:", type(exc).__name__)
EOF
if "$PY" -c 'import spikeforge.app.commands.doctor' 2>/dev/null; then
  step doctor "$PY" -m spikeforge.app.commands.doctor
fi
step gpu_tests "$PY" -m pytest -m gpu -q -rs "${GPU_TEST_ARGS[@]}"
step cuda_tests "$PY" -m pytest "${TEST_ARGS[@]}"
step selfcheck "$PY" benchmarks/gpu_train.py --device "$DEV" --selfcheck-only
step compile "$PY" -m pytest "${COMPILE_ARGS[@]}"
step network "$PY" benchmarks/gpu_train.py --device "$DEV" --net "$NET" --batch "$BATCH" --images "$IMAGES" \
  --epochs "$EPOCHS" --timesteps "${TS##* }" --json "$TMP/network.json"
if [ "$DRY" = 1 ]; then
  step peers "$PY" benchmarks/peers.py --device cpu --nets issue9 --timesteps $TS --batch 2 --repeats 1 --warmup 1 \
    --no-memory --libs spikeforge --out "$TMP/peers.md"
else
  step peers "$PY" benchmarks/peers.py --device cuda --nets vgg16 --batch 64 --timesteps $TS --repeats "$REPEATS" \
    --out "$TMP/peers.md"
fi

{
  echo "# spikeforge GPU validation ($(date -u +%Y-%m-%d), $([ "$DRY" = 1 ] && echo "dry run on the CPU" || echo "$DEV"))"
  echo
  echo "| step | status | seconds |"
  echo "|---|---|---|"
  for f in "$TMP"/*.rc; do
    n="$(basename "$f" .rc)"; read -r rc secs <"$f"
    echo "| $n | $([ "$rc" = 0 ] && echo ok || echo "FAILED (exit $rc)") | $secs |"
  done
  for n in machine doctor gpu_tests cuda_tests selfcheck compile network peers; do
    [ -f "$TMP/$n.log" ] || continue
    echo; echo "## $n"; echo; echo '```'; tail -n 60 "$TMP/$n.log"; echo '```'
  done
  if [ -f "$TMP/peers.md" ]; then echo; echo "## peer benchmark table"; echo; cat "$TMP/peers.md"; fi
} >"$OUT"
echo "wrote $OUT"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "gpu_validate.sh: failed steps: ${FAILED[*]}" >&2
  exit 1
fi
