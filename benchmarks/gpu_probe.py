"""What this machine's GPU toolchain makes of dvae_cupy's kernels (not a test; step (a) of
benchmarks/gpu_session.sh).

    python benchmarks/gpu_probe.py

Prints, in this order:
1. the machine: GPU name, driver and memory (nvidia-smi), Python;
2. versions and library paths: CuPy, numba, numba-cuda, cuda-bindings/core/pathfinder, the
   nvidia-nvvm / nvidia-nvjitlink / cuda-toolkit wheels, CUDA_HOME, libNVVM and libnvJitLink as
   numba-cuda finds them, and the CUDA release and PTX `.version` NVVM emits for sm_90;
3. dvae_cupy.gpu_probe's verdict (the one `--backend auto` acts on) and what it found: driver
   CUDA version, CUDA runtime, compute capability, NVVM and nvJitLink releases;
4. on a usable GPU only: every registered kernel (each kernel module's CUDA_KERNELS) compiled,
   linked and loaded by numba-cuda, with registers per thread, shared and local memory per
   block; then every dvae-check op launched once on its smallest shape through the launchers
   (each in its own try), with its error against the float64 reference;
5. on a usable GPU only: host time per launch, the median over 7 runs of 300 launches: our
   launcher path (kernels/_cuda.py's cached views and stream), a bare pre-configured Numba
   launch, and one CuPy element-wise op.

With no GPU it prints what it can (2, 3) and says plainly that there is no GPU. Exit status: 0
when everything it could run ran (no GPU included), 1 when a GPU answers but is not usable or a
kernel failed.
"""
import importlib
import os
import pkgutil
import platform
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

LAUNCH_RUNS, LAUNCHES_PER_RUN = 7, 300


def section(title):
    print(f"\n== {title}", flush=True)


def row(name, value):
    print(f"  {name:<28} {value}", flush=True)


def nvidia_smi():
    """The GPU as nvidia-smi names it, or None where there is no nvidia-smi or no GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                               "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def dist_version(name):
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def module_version(name):
    try:
        return getattr(importlib.import_module(name), "__version__", "?")
    except Exception as error:  # a broken install is a finding, not a crash
        return f"not importable ({type(error).__name__}: {str(error).splitlines()[0][:120]})"


def print_versions():
    from dvae_cupy import gpu_probe

    section("versions and libraries")
    row("python", f"{platform.python_version()} ({sys.executable})")
    print_package_location()
    for name in ("numpy", "numba", "numba_cuda", "cupy"):
        row(name, module_version(name))
    for name in ("cuda-bindings", "cuda-core", "cuda-pathfinder", "cuda-toolkit", "nvidia-nvvm",
                 "nvidia-nvjitlink", "nvidia-cuda-nvrtc", "nvidia-cuda-runtime", "cupy-cuda13x"):
        row(name + " (wheel)", dist_version(name))
    row("CUDA_HOME", os.environ.get("CUDA_HOME", "(unset)"))
    row("libNVVM", gpu_probe.library_path("nvvm") or "not found")
    row("libnvJitLink", gpu_probe.library_path("nvJitLink") or "not found")
    try:
        from cuda.bindings import nvjitlink

        row("nvJitLink version", "%d.%d" % tuple(nvjitlink.version()))
    except Exception as error:
        row("nvJitLink version", f"unavailable ({type(error).__name__})")
    print_nvvm_output()


def print_package_location():
    """Where dvae_cupy, its kernels and its embedded data set were imported from (an install, or
    gpu_session.sh's shim over the source tree)."""
    from importlib import resources

    import dvae_cupy
    import dvae_cupy.kernels

    row("dvae_cupy from", os.path.dirname(dvae_cupy.__file__))
    row("dvae_cupy.kernels from", os.path.dirname(dvae_cupy.kernels.__file__))
    data = resources.files("dvae_cupy.embedded") / "fashion_mnist.h5"
    row("embedded data set", f"{data} ({'present' if data.is_file() else 'MISSING'})")


def print_nvvm_output():
    """The CUDA release and PTX ISA of what NVVM emits for sm_90 (needs no GPU)."""
    from dvae_cupy import gpu_probe

    try:
        from numba import cuda, float32
        from numba.cuda.cudadrv import nvvm

        if not nvvm.is_available():
            row("NVVM output", "libNVVM not found: nothing compiled")
            return
        ptx, _ = cuda.compile_ptx(gpu_probe.probe_kernel().py_func,
                                  (float32, float32[::1], float32[::1]), cc=(9, 0))
    except Exception as error:
        row("NVVM output", f"compile failed ({type(error).__name__}: {str(error).splitlines()[0][:160]})")
        return
    release, isa = gpu_probe.ptx_cuda_release(ptx), gpu_probe.ptx_isa_version(ptx)
    row("NVVM release (PTX header)", "%d.%d" % release if release else "?")
    row("PTX .version for sm_90", "%d.%d" % isa if isa else "?")
    oldest = gpu_probe.OLDEST_PTX_ISA
    if isa and isa > oldest:
        row("", "newer than a CUDA %d.%d driver accepts (%d.%d): launches rely on nvJitLink"
            % (*gpu_probe.OLDEST_CUDA, *oldest))


# ---------------------------------------------------------------------------------------------
# Every registered kernel, launched once.

def registered_kernels():
    """[(module name, kernel name, kernel, signature)] from every kernel module's CUDA_KERNELS."""
    import dvae_cupy.kernels

    entries = []
    for info in pkgutil.iter_modules(dvae_cupy.kernels.__path__, "dvae_cupy.kernels."):
        module = importlib.import_module(info.name)
        for kernel, signatures in getattr(module, "CUDA_KERNELS", []):
            function = getattr(kernel, "py_func", None) or getattr(kernel, "fn", kernel)
            for signature in signatures:
                entries.append((info.name.rsplit(".", 1)[1], function.__name__, kernel, tuple(signature)))
    return entries


def load_every_kernel():
    """Compile, link and load each registered kernel (numba-cuda's own launch path); print its
    resources. False when any failed."""
    section("every registered kernel: compiled, linked (nvJitLink), loaded")
    print(f"  {'kernel':<46}{'regs':>6}{'shared B':>10}{'local B':>9}{'seconds':>9}  result")
    all_loaded = True
    for module, name, kernel, signature in registered_kernels():
        label = f"{module}.{name}"
        started = time.perf_counter()
        try:
            compiled = kernel.compile(signature)  # binds: the cubin is loaded on the device
            print(f"  {label:<46}{compiled.regs_per_thread:>6}{compiled.shared_mem_per_block:>10}"
                  f"{compiled.local_mem_per_thread:>9}{time.perf_counter() - started:>9.2f}  ok",
                  flush=True)
        except Exception as error:
            all_loaded = False
            print(f"  {label:<46}  FAILED: {type(error).__name__}: {str(error).splitlines()[0][:200]}",
                  flush=True)
    return all_loaded


def launch_every_op():
    """Each dvae-check op once, on its smallest shape, through the launchers (the kernels' own
    arguments need an op's shapes: no generic tiny arguments keep every kernel in bounds, and one
    out-of-bounds launch would lose the CUDA context). Each op in its own try, so one failure
    does not hide the rest. False when any failed."""
    from dvae_cupy import check
    from dvae_cupy.backend import get_backend

    section("every dvae-check op launched once on its smallest shape (error vs the float64 reference)")
    backend = get_backend("gpu")
    all_passed = True
    for number, (op, make_case, tolerance, shapes, _) in enumerate(check.CHECKS):
        if not shapes:
            continue
        shape = "x".join(map(str, shapes[0]))
        try:
            case = make_case(backend, np.random.default_rng([0, number]), *shapes[0])
            case.run()
            error = case.error()
            backend.synchronize()
            passed = check.CheckResult(op, shape, error, tolerance).passed
            verdict = "ok" if passed else "FAIL"
            print(f"  {op:<26}{shape:<12}{error:>11.2e}{tolerance:>10.1e}  {verdict}", flush=True)
        except Exception as failure:
            passed = False
            print(f"  {op:<26}{shape:<12}  FAILED: {type(failure).__name__}: "
                  f"{str(failure).splitlines()[0][:200]}", flush=True)
        all_passed = all_passed and passed
    return all_passed


def median_us_per_launch(launch, synchronize):
    for _ in range(20):
        launch()
    synchronize()
    runs = []
    for _ in range(LAUNCH_RUNS):
        started = time.perf_counter()
        for _ in range(LAUNCHES_PER_RUN):
            launch()
        synchronize()
        runs.append((time.perf_counter() - started) / LAUNCHES_PER_RUN * 1e6)
    return statistics.median(runs)


def print_launch_overhead():
    import cupy
    from numba import cuda

    from dvae_cupy import gpu_probe
    from dvae_cupy.kernels._cuda import as_device_view, current_stream, launch_1d

    section(f"host time per launch (median of {LAUNCH_RUNS} runs of {LAUNCHES_PER_RUN}, 1 element)")
    kernel = gpu_probe.probe_kernel()
    x, out = cupy.zeros(1, cupy.float32), cupy.zeros(1, cupy.float32)
    stream = cupy.cuda.get_current_stream()
    a = np.float32(0.0)

    def our_launcher():  # what kernels/<op>.py's launchers do at each call
        kernel[launch_1d(out.size) + (current_stream(),)](a, as_device_view(x), as_device_view(out))

    views = (cuda.as_cuda_array(x, sync=False), cuda.as_cuda_array(out, sync=False))
    configured = kernel[1, 32, current_stream()]
    row("our launcher path", "%.1f us" % median_us_per_launch(our_launcher, stream.synchronize))
    row("bare Numba launch", "%.1f us" % median_us_per_launch(lambda: configured(a, *views),
                                                               stream.synchronize))
    row("CuPy element-wise (x += 1)", "%.1f us" % median_us_per_launch(
        lambda: cupy.add(x, 1, out=x), stream.synchronize))


def main():
    from dvae_cupy import gpu_probe

    section("machine")
    smi = nvidia_smi()
    row("GPU (nvidia-smi)", smi or "none: no nvidia-smi, or it lists no GPU")
    row("host", f"{platform.machine()}, {os.cpu_count()} CPUs")
    print_versions()

    section("dvae_cupy.gpu_probe")
    result = gpu_probe.run_probe()
    for key, value in result.found.items():
        row(key, value)
    no_gpu = not result.usable and result.piece in ("DVAE_CUPY_BACKEND", "CuPy", "driver") and smi is None
    if result.usable:
        row("verdict", "usable")
    elif no_gpu:
        row("verdict", f"NO GPU on this machine ({result.message()}): nothing launched")
        return 0
    else:
        row("verdict", f"NOT USABLE: {result.message()}")
        return 1
    loaded = load_every_kernel()
    launched = launch_every_op()
    print_launch_overhead()
    return 0 if loaded and launched else 1


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()  # --help, no options
    sys.exit(main())
