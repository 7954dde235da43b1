#!/usr/bin/env bash
# second GPU call of 2026-12-04: validate the numba_cuda probe, diagnose invariance, B=1 profile,
# GPU-vs-CPU accuracy sanity, ops bench
set -u
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/tmp/pip.log 2>&1 || export PYTHONPATH=$PWD
L=$OUT/run2.log
s() { local n=$1 t=$2; shift 2; local t0=$SECONDS; echo "=== $n: $*" >> "$L"; timeout "$t" "$@" >> "$L" 2>&1; echo "--- $n rc=$? $((SECONDS - t0))s" | tee -a "$L"; }
s tests 40 python3 -m pytest -q -p no:cacheprovider -m needs_cuda -rs tests
s inv 40 python3 bench/check_invariance.py --device cuda
s b1 45 env KGENGINE_HR_DIR=$PWD/.gpudata/hr python3 bench/bench_train.py --device cuda --sweep 1 --sweep-iters 200 --sweep-e2e-iters 500
s acc 95 python3 bench/check_gpu_accuracy.py --device cuda --devset .gpudata/devset --images 5-12
s ops 40 python3 bench/bench_ops.py --repeats 5
grep -v "Warning\|warn(" "$L" | grep -v "^\s*$" | tail -n 150
