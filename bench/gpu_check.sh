#!/usr/bin/env bash
# GPU check: on a machine with a CUDA GPU, run the GPU tests and the GPU benches in one go
# (under 8 minutes: each step has its own timeout) and print their figures; on a machine
# without one, say so on one line and exit 0 (CI runs it that way, tests/test_gpu_check.py).
#
# Usage: bench/gpu_check.sh [OUT_DIR]      (PYTHON=python by default; logs in OUT_DIR)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-bench_out/gpu_check}

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA device (torch.cuda.is_available() is False): GPU tests and benches skipped"
  exit 0
fi
mkdir -p "$OUT"
"$PY" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
"$PY" -m kgengine info | tee "$OUT/info.txt"

status=0
step() {  # step NAME SECONDS CMD...: run with a timeout, keep the log, report the exit code
  local name=$1 secs=$2; shift 2
  local t0=$SECONDS
  timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%-22s rc=%-3s %4ss  %s\n' "$name" "$rc" "$((SECONDS - t0))" "$OUT/$name.log"
  [ "$rc" -eq 0 ] || status=1
}
step gpu-tests 120 "$PY" -m pytest -q -m needs_cuda tests
step invariance 45 "$PY" bench/check_invariance.py --device cuda
step ops 45 "$PY" bench/bench_ops.py --repeats 3
step train-b1-b8 100 "$PY" bench/bench_train.py --device cuda --images 1 --iters 300 --layers-iters 20 --batch 8
step train-b64 50 "$PY" bench/bench_train.py --device cuda --images 1 --iters 100 --layers-iters 5 --batch 64
step farm 70 "$PY" bench/bench_farm.py --device cuda --iters 100 --batches 1 8 64
step degrade 50 "$PY" bench/bench_degrade.py --repeats 2 --batch 1 4 --no-scipy --sections onnx module

echo
echo "== figures (last lines of each log) =="
for f in "$OUT"/*.log; do echo "--- $(basename "$f" .log)"; tail -n 12 "$f"; done
exit "$status"
