#!/usr/bin/env bash
# The GPU checks in one prepared run, for a bare, offline GPU machine (the device machine lent to
# some sessions: CuPy, numba-cuda, h5py, pytest and a CUDA build of torch in its python3, no
# network) and a 15-minute device budget that includes the machine's start. From the repo root:
#     bash benchmarks/gpu_session.sh [OUT_DIR]
#
# Writes at most 6 files to OUT_DIR (default $OUT, else ./gpu-out):
#     summary.txt  what ran, how long, exit statuses, and each step's key lines
#     probe.txt    (a) benchmarks/gpu_probe.py: GPU, driver, CUDA runtime, library versions and
#                  paths, PTX version, each kernel loaded with its registers, launch overhead
#     bench.txt    (b) bench_step.py --compare-graph: eager vs CUDA-graph steps, 1x10 and 20x10
#     check.txt    (c) dvae-check --backend gpu
#     tests.txt    (d) pytest -m gpu
#     race.txt     (e) compare.py speed against the PyTorch peer, only if time is left
# Each step runs under its own `timeout` and the next step goes on after a failure; the whole
# stays under SESSION_BUDGET_S (default 500 s, well under 9 minutes): a step is cut to what is
# left, and (e) runs only with RACE_MIN_S left.
#
# Install: wheels in .whl/ (if any, see benchmarks/README.md): NVIDIA library wheels (a carried
# nvidia-nvvm) into the interpreter's site-packages, where numba-cuda's library search looks, any
# other wheel to /tmp/site, first on PYTHONPATH; then
# `pip install --no-index --no-deps --no-build-isolation -e .`, and if that fails the package runs
# from the tree through a generated shim (kernels/ as dvae_cupy.kernels, data/ as
# dvae_cupy.embedded, as pyproject's package-dir maps them). CUDA_HOME is set to the system
# toolkit when unset and one holds libnvvm (the machine has no nvidia-nvvm wheel).
#
# With no GPU (no nvidia-smi, or it lists none), or GPU_SESSION_DRY_RUN=1, it is a DRY RUN:
# nothing is installed (the shim is used), the probe and dvae-check's refusal run, steps that
# need a GPU are skipped, and the summary says plainly that nothing ran on a GPU.
# PYTHON picks the interpreter (default python3).
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${OUT:-$repo/gpu-out}}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$repo" || exit 1
PY=${PYTHON:-python3}
BUDGET=${SESSION_BUDGET_S:-500}
RACE_MIN_S=${RACE_MIN_S:-100}
export PYTHONUNBUFFERED=1
summary="$out/summary.txt"
: > "$summary"
say() { echo "$*" | tee -a "$summary"; }

left() { echo $((BUDGET - SECONDS)); }

# step NAME LIMIT_S FILE COMMAND...: run under timeout (cut to the budget left), output to FILE,
# the exit status and time into the summary.
step() {
    local name=$1 limit=$2 file=$3; shift 3
    local remaining; remaining=$(left)
    if [ "$remaining" -lt 15 ]; then
        say "step $name: skipped (only ${remaining}s of the ${BUDGET}s budget left)"
        return
    fi
    [ "$limit" -gt "$remaining" ] && limit=$remaining
    local started=$SECONDS
    echo "== $name: $* (limit ${limit}s)" >> "$out/$file"
    timeout -k 5 "$limit" "$@" >> "$out/$file" 2>&1
    local rc=$?
    local note=""
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && note=" (TIMED OUT after ${limit}s)"
    say "step $name: exit $rc in $((SECONDS - started))s$note ($file)"
}

key_lines() {  # FILE PATTERN: the step's lines worth reading first, into the summary
    [ -f "$out/$1" ] && grep -E "$2" "$out/$1" | tail -n 20 | sed 's/^/    /' | tee -a "$summary"
}

# ---------------------------------------------------------------------------------------------
say "gpu_session: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), budget ${BUDGET}s"
gpu=""
if command -v nvidia-smi > /dev/null 2>&1; then
    gpu=$(timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)
fi
dry=${GPU_SESSION_DRY_RUN:-0}
if [ -z "$gpu" ]; then
    dry=1
    say "gpu_session: DRY RUN: no GPU on this machine (no nvidia-smi, or it lists no GPU): nothing ran on a GPU"
elif [ "$dry" = 1 ]; then
    say "gpu_session: DRY RUN (GPU_SESSION_DRY_RUN=1) on $gpu: nothing ran on a GPU"
else
    say "gpu_session: GPU: $gpu"
fi

# Carried wheels. NVIDIA library wheels (nvidia-nvvm, nvidia-nvjitlink) go into the interpreter's
# own site-packages: cuda-pathfinder, which finds libnvvm and libnvJitLink for numba-cuda, looks
# only in site.getsitepackages() and the user site, never on PYTHONPATH (checked with
# cuda-pathfinder 1.9: a libnvJitLink in /tmp/site on PYTHONPATH is "not found"). Any other
# wheel goes to /tmp/site, first on PYTHONPATH.
install_wheels() {  # DESCRIPTION PIP-ARGS... -- WHEELS...
    local what=$1; shift
    if timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            "$@" > "${TMPDIR:-/tmp}/gpu_session_wheels.$$" 2>&1; then
        say "wheels: installed into $what: $(printf '%s ' "$@" | tr ' ' '\n' | grep '\.whl$' | xargs -n1 basename | tr '\n' ' ')"
    else
        say "wheels: pip could not install into $what:"
        tail -n 4 "${TMPDIR:-/tmp}/gpu_session_wheels.$$" | sed 's/^/    /' | tee -a "$summary"
    fi
    rm -f "${TMPDIR:-/tmp}/gpu_session_wheels.$$"
}
if [ -d .whl ]; then
    nvidia_wheels=(.whl/nvidia_*.whl) other_wheels=()
    for wheel in .whl/*.whl; do case $wheel in .whl/nvidia_*) ;; *) [ -e "$wheel" ] && other_wheels+=("$wheel") ;; esac; done
    [ -e "${nvidia_wheels[0]}" ] && install_wheels "$PY's site-packages" "${nvidia_wheels[@]}"
    if [ ${#other_wheels[@]} -gt 0 ]; then
        install_wheels /tmp/site --target /tmp/site "${other_wheels[@]}"
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
fi

if [ -z "${CUDA_HOME:-}" ]; then
    for toolkit in /usr/local/cuda /usr/local/cuda-13*; do
        if ls "$toolkit"/nvvm/lib64/libnvvm.so* "$toolkit"/lib64/libnvvm.so* > /dev/null 2>&1; then
            export CUDA_HOME=$toolkit
            say "CUDA_HOME=$toolkit (unset before; it holds libnvvm)"
            break
        fi
    done
fi

use_tree() {  # the package from the source tree: a shim folder mapping it as pyproject installs it
    local shim=${TMPDIR:-/tmp}/dvae_cupy_tree_shim.$$
    rm -rf "$shim" && mkdir -p "$shim/dvae_cupy" || return 1
    trap 'rm -rf "'"$shim"'"' EXIT
    for entry in "$repo"/dvae_cupy/*; do
        case $(basename "$entry") in __pycache__|kernels|embedded) continue ;; esac
        ln -s "$entry" "$shim/dvae_cupy/"
    done
    ln -s "$repo/kernels" "$shim/dvae_cupy/kernels"
    ln -s "$repo/data" "$shim/dvae_cupy/embedded"
    export PYTHONPATH=$shim${PYTHONPATH:+:$PYTHONPATH}
    # `python -c` and `python -m` put the working directory (the repo root, whose dvae_cupy/ has
    # no kernels/) first on sys.path, ahead of the shim: Python >= 3.11 leaves it out with this
    export PYTHONSAFEPATH=1
    say "install: running from the tree through the shim $shim"
}

pip_log=${TMPDIR:-/tmp}/gpu_session_pip.$$
if [ "$dry" = 1 ]; then
    use_tree
elif timeout 90 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . > "$pip_log" 2>&1; then
    say "install: pip install --no-index --no-deps --no-build-isolation -e . done"
else
    say "install: pip install -e . failed offline; its last lines:"
    grep -v "is ignored" "$pip_log" | grep -E "error|Error|No module" | tail -n 4 | sed 's/^/    /' | tee -a "$summary"
    use_tree
fi
rm -f "$pip_log"
"$PY" -c "import dvae_cupy, dvae_cupy.kernels, dvae_cupy.embedded; print('import: dvae_cupy from', dvae_cupy.__path__[0])" 2>&1 | tee -a "$summary"

# ---------------------------------------------------------------------------------------------
step probe 150 probe.txt "$PY" benchmarks/gpu_probe.py
key_lines probe.txt "GPU \(nvidia-smi\)|verdict|NVVM release|PTX .version|nvJitLink version|driver_cuda|cuda_runtime|FAILED|FAIL$|launch|element-wise"

# dvae-check's own entry point, run by $PY so that it sees the same install (or the shim)
check_cmd=("$PY" -c "import sys; from dvae_cupy.cli import check_main; sys.exit(check_main(sys.argv[1:]))" --backend gpu)
if [ "$dry" = 1 ]; then
    for name in bench tests race; do say "step $name: skipped (dry run: needs a GPU)"; done
    step dvae-check 60 check.txt "${check_cmd[@]}"
    key_lines check.txt "dvae-check"
else
    step bench 150 bench.txt "$PY" benchmarks/bench_step.py --backend gpu --configs 1x10 20x10 --compare-graph
    key_lines bench.txt "ms|graph|capture|diff|launch|Error|error"
    step dvae-check 90 check.txt "${check_cmd[@]}"
    key_lines check.txt "dvae-check|FAIL|passed|Error"
    step tests 150 tests.txt "$PY" -m pytest -q -p no:cacheprovider -m gpu tests
    key_lines tests.txt "passed|failed|skipped|error"
    if [ "$(left)" -ge "$RACE_MIN_S" ]; then
        step race $(( $(left) - 10 )) race.txt "$PY" benchmarks/compare.py speed --backend gpu --steps 200 --warmup 20 --block 50
        key_lines race.txt "."
    else
        say "step race: skipped (only $(left)s left, it needs ${RACE_MIN_S}s)"
    fi
fi
say "gpu_session: done in ${SECONDS}s; files: $(cd "$out" && ls | tr '\n' ' ')"
