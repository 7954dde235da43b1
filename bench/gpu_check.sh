#!/usr/bin/env bash
# GPU check: on a machine with a CUDA GPU, run the GPU tests and the GPU benches in one go
# and print their figures (sized for about 6.5 minutes on one H200, each step with its own
# timeout; the first version took 8, bench/data/gpu_h200.md). On a machine without one, say
# so on one line and exit 0 (CI runs it that way, tests/test_gpu_check.py).
#
# Usage: bench/gpu_check.sh [OUT_DIR]      (PYTHON=python by default)
# Logs: OUT_DIR/<step>.log, and all of them in order in OUT_DIR/gpu_check.log.
# KGENGINE_HR_DIR: folder of benchmark photos for the trainer sweep (default ../shared/data/hr,
# else the bundled sample); GPU_CHECK_DEVSET=DIR also checks GPU against CPU accuracy on that
# development set; GPU_CHECK_SUITE=1 also runs the whole test suite with CUDA visible;
# GPU_CHECK_HOST=1 also times the per-image host work on the host's threads and a CPU batch
# trained whole against as parts on all of them (about 3 min).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-bench_out/gpu_check}

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA device (torch.cuda.is_available() is False): GPU tests and benches skipped"
  exit 0
fi
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
ALL="$OUT/gpu_check.log"
{
  "$PY" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), 'torch', torch.__version__, 'CUDA', torch.version.cuda)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1
  "$PY" -m kgengine info 2>&1
} | tee "$ALL"

status=0
summary=()
step() {  # step NAME SECONDS CMD...: run with a timeout, keep the log, report the exit code
  local name=$1 secs=$2; shift 2
  local t0=$SECONDS
  echo "=== $name: $*" | tee -a "$ALL"
  timeout "$secs" "$@" 2>&1 | tee "$OUT/$name.log" >> "$ALL"
  local rc=${PIPESTATUS[0]}
  local line
  line=$(printf '%-14s rc=%-3s %4ss' "$name" "$rc" "$((SECONDS - t0))")
  echo "$line" | tee -a "$ALL"
  summary+=("$line")
  [ "$rc" -eq 0 ] || status=1
}
step gpu-tests 90 "$PY" -m pytest -q -rs -p no:cacheprovider -m needs_cuda tests
step invariance 60 "$PY" bench/check_invariance.py --device cuda
step train 210 "$PY" bench/bench_train.py --device cuda --sweep 1,8,64,auto --sweep-iters 200 \
  --sweep-e2e-iters 500 --sweep-backends torch,cupy --sweep-graph
step farm 110 "$PY" bench/bench_farm.py --device cuda --iters 100 --batches --gpu-batches 1 8 64
step ops 60 "$PY" bench/bench_ops.py --repeats 5
step degrade 60 "$PY" bench/bench_degrade.py --repeats 3 --batch 1 4 --no-scipy --sections onnx module
if [ -n "${GPU_CHECK_DEVSET:-}" ]; then  # a development set (bench/devset.py): GPU vs CPU accuracy
  step accuracy 120 "$PY" bench/check_gpu_accuracy.py --device cuda --devset "$GPU_CHECK_DEVSET"
fi
if [ "${GPU_CHECK_HOST:-0}" = 1 ]; then  # kgengine.host_threads on a many-core GPU host
  step host-work 180 "$PY" bench/bench_host_work.py --rounds 1 --farm-images 0 \
    --out "$OUT/host_work.md"
  # kgengine.split_trainer with many parts (the GIL), on the CPU
  step cpu-split 120 "$PY" bench/bench_split.py --rounds 1 --iters 100 --sizes 4,16 \
    --e2e-rounds 0 --farm-rounds 0 --out "$OUT/thread_split.md"
fi
if [ "${GPU_CHECK_SUITE:-0}" = 1 ]; then
  extra=$("$PY" -c "import xdist" 2>/dev/null && echo "-n 12")
  extra="$extra $("$PY" -c "import pytest_timeout" 2>/dev/null && echo "--timeout 60")"
  # shellcheck disable=SC2086
  step suite 240 "$PY" -m pytest -q -rfE -p no:cacheprovider $extra tests
fi

echo
echo "== steps =="
printf '%s\n' "${summary[@]}"
echo "== figures (last lines of each log) =="
for f in "$OUT"/*.log; do
  [ "$f" = "$ALL" ] && continue
  echo "--- $(basename "$f" .log)"; tail -n 14 "$f"
done
exit "$status"
