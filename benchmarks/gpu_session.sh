#!/usr/bin/env bash
# The GPU checks in one prepared run, for a machine with a CUDA GPU and CuPy, numba-cuda, h5py and
# (for the peer) a CUDA build of torch already installed (the device machine lent to some
# sessions has all of these). From the repository root:
#     bash benchmarks/gpu_session.sh [OUT_DIR]
# It writes each step's output to OUT_DIR (default: $OUT, else ./gpu-out) and goes on after a
# failure, so one run shows everything: the gpu-marked tests, dvae-check, ms per training step
# with and without CUDA-graph capture, and the race against the peer on the same GPU.
set -u
out=${1:-${OUT:-gpu-out}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
run() {  # name, command...: run, keep the output, note the exit status
    local name=$1; shift
    echo "== $name: $*" | tee -a "$out/summary.txt"
    "$@" > "$out/$name.txt" 2>&1
    local rc=$?
    tail -n 25 "$out/$name.txt"
    echo "== $name exit $rc" | tee -a "$out/summary.txt"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$out/install.txt" 2>&1 \
    || echo "pip install -e . failed: see install.txt" | tee -a "$out/summary.txt"
run tests-gpu python3 -m pytest -q -m gpu tests
run dvae-check dvae-check --backend gpu
run bench-step python3 benchmarks/bench_step.py --backend gpu --steps 200 --warmup 20 --configs 1x10 20x10
run bench-step-graph python3 benchmarks/bench_step.py --backend gpu --cuda-graph --steps 200 --warmup 20 --configs 1x10 20x10
run race python3 benchmarks/compare.py speed --backend gpu --steps 200 --warmup 20 --block 50
