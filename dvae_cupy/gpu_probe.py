"""Can this process use the GPU backend? One real check, run once per process and cached.

Asking CuPy and Numba whether a driver answers is not enough: our kernels also need NVVM to
compile them, nvJitLink (no older than NVVM) to link them to a cubin, and a driver that loads
the result. probe() looks at each piece in the order a launch needs it and stops at the first
that fails:

    DVAE_CUPY_BACKEND  =cpu in the environment forces the CPU (read at every call, not cached)
    CuPy               importable
    driver             a GPU answers, through a CUDA 13.x driver (>= 580)
    numba-cuda         importable, the simulator off, and its CUDA target sees the GPU
    NVVM               libNVVM found, and it compiles a small kernel to PTX
    nvJitLink          found (without it numba-cuda hands PTX to the driver's linker), of
                       NVVM's major release and no older than NVVM (it cannot read newer LTO-IR)
    kernel launch      a small kernel compiled, linked and launched on CuPy arrays through
                       kernels/_cuda.py's plumbing, its output compared with NumPy's
    CuPy matmul        one CuPy (cuBLAS) matrix product compared with NumPy's

The answer is a Probe: usable or not, the failing piece, a one-line reason, the fix where there
is one, and `found`: what was seen on the way (versions, library paths, the GPU), which
benchmarks/gpu_probe.py prints. Any exception raised inside CuPy or Numba becomes such an
answer; no traceback leaves probe().
"""
import functools
import os
import re
import sys
from dataclasses import dataclass, field

import numpy as np

# The oldest CUDA release whose driver we support (driver 580): numba-cuda[cu13], cuda-toolkit 13.
OLDEST_CUDA = (13, 0)
OLDEST_DRIVER = "580"
# The PTX ISA that release's driver and ptxas accept at most: CUDA 13.m toolchains emit ISA 9.m.
OLDEST_PTX_ISA = (9, 0)

INSTALL_FIX = "pip install 'dvae-cupy[gpu]'"
DRIVER_FIX = f"install an NVIDIA driver for CUDA 13.x (driver >= {OLDEST_DRIVER})"


class PieceFailed(Exception):
    """Raised by a check: `reason` is one line saying what is wrong, `fix` what to do (or "")."""

    def __init__(self, reason, fix=""):
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


@dataclass(frozen=True)
class Probe:
    usable: bool
    piece: str = ""      # the failing piece ("" when usable), one of the names in steps()
    reason: str = ""     # one line
    fix: str = ""        # what to do about it, "" where we know of nothing
    found: dict = field(default_factory=dict, compare=False)

    def message(self):
        """One line: the failing piece, why, and the fix."""
        if self.usable:
            return "the GPU backend is usable"
        text = f"{self.piece}: {self.reason}"
        return f"{text} (fix: {self.fix})" if self.fix else text


# ---------------------------------------------------------------------------------------------
# Version facts read from PTX text and from the libraries.

def ptx_isa_version(ptx):
    """(major, minor) of the PTX ISA a PTX text declares (its `.version` line), or None."""
    match = re.search(r"^\s*\.version\s+(\d+)\.(\d+)", ptx, re.MULTILINE)
    return (int(match.group(1)), int(match.group(2))) if match else None


def ptx_cuda_release(ptx):
    """(major, minor) of the CUDA release of the NVVM that wrote a PTX text (its header says
    "Cuda compilation tools, release 13.5"), or None."""
    match = re.search(r"release (\d+)\.(\d+)", ptx)
    return (int(match.group(1)), int(match.group(2))) if match else None


def nvjitlink_can_link(nvjitlink_version, nvvm_release):
    """True when nvJitLink of that version reads LTO-IR from NVVM of that release: the same
    major release, and nvJitLink no older (an older one fails with ERROR_OUTDATED_LIBRARY)."""
    return nvjitlink_version[0] == nvvm_release[0] and tuple(nvjitlink_version) >= tuple(nvvm_release)


def _cuda_version(encoded):
    """CUDA's integer version (13000) as "13.0"."""
    return f"{encoded // 1000}.{encoded % 1000 // 10}"


def _one_line(error):
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(error).__name__}: {line}"[:300]


def library_path(name):
    """Where cuda-pathfinder (numba-cuda's own search) finds an NVIDIA library, or None."""
    try:
        from cuda import pathfinder

        return pathfinder.load_nvidia_dynamic_lib(name).abs_path
    except Exception:  # not found, or cuda-pathfinder missing: the checks below say which
        return None


# ---------------------------------------------------------------------------------------------
# The checks, in the order a launch needs the pieces. Each records what it sees in `found` and
# raises PieceFailed when its piece is missing or wrong.

def check_override(found):
    if os.environ.get("DVAE_CUPY_BACKEND", "").strip().lower() == "cpu":
        raise PieceFailed("DVAE_CUPY_BACKEND=cpu is set", "unset DVAE_CUPY_BACKEND to use the GPU")


def check_cupy(found):
    try:
        import cupy
    except ImportError as error:
        raise PieceFailed(f"CuPy is not installed ({error})", INSTALL_FIX) from None
    found["cupy"] = cupy.__version__


def check_driver(found):
    import cupy

    runtime = cupy.cuda.runtime
    try:
        version = runtime.driverGetVersion()
    except Exception as error:
        raise PieceFailed(f"no CUDA driver answers ({_one_line(error)})", DRIVER_FIX) from None
    if version == 0:
        raise PieceFailed("no NVIDIA driver is installed", DRIVER_FIX)
    found["driver_cuda"] = _cuda_version(version)
    if (version // 1000, version % 1000 // 10) < OLDEST_CUDA:
        raise PieceFailed(f"the driver supports CUDA {found['driver_cuda']}; the kernels are built "
                          "with CUDA 13 and need a CUDA 13.x driver", DRIVER_FIX)
    try:
        count = runtime.getDeviceCount()
    except Exception as error:
        raise PieceFailed(f"the driver finds no GPU ({_one_line(error)})") from None
    if count < 1:
        raise PieceFailed("the driver finds no GPU")
    device = runtime.getDevice()
    properties = runtime.getDeviceProperties(device)
    name = properties["name"]
    found["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
    found["compute_capability"] = (int(properties["major"]), int(properties["minor"]))
    found["cuda_runtime"] = _cuda_version(runtime.runtimeGetVersion())
    if found["compute_capability"] < (7, 5):
        raise PieceFailed(f"{found['gpu']} has compute capability %d.%d; CUDA 13 builds for 7.5 "
                          "and newer" % found["compute_capability"])


def check_numba_cuda(found):
    from numba import config

    if config.ENABLE_CUDASIM:
        raise PieceFailed("the Numba CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1)",
                          "unset NUMBA_ENABLE_CUDASIM")
    try:
        import numba_cuda
        from numba import cuda
    except ImportError as error:
        raise PieceFailed(f"numba-cuda is not installed ({error})", INSTALL_FIX) from None
    found["numba_cuda"] = numba_cuda.__version__
    if not cuda.is_available():
        raise PieceFailed("Numba's CUDA target sees no GPU", INSTALL_FIX)


def _nvvm_fix(found):
    release = found.get("driver_cuda", "13.0")
    return (f"set CUDA_HOME to a CUDA {release.split('.')[0]}.x toolkit, or "
            f"pip install 'nvidia-nvvm=={release}.*' (the driver's CUDA release)")


def check_nvvm(found):
    from numba import cuda, float32
    from numba.cuda.cudadrv import nvvm

    found["nvvm_path"] = library_path("nvvm")
    if not nvvm.is_available():
        raise PieceFailed("libNVVM not found: numba-cuda cannot compile kernels", _nvvm_fix(found))
    cc = found.get("compute_capability", (9, 0))
    try:
        ptx, _ = cuda.compile_ptx(probe_kernel().py_func, (float32, float32[::1], float32[::1]),
                                  cc=cc)
    except Exception as error:
        raise PieceFailed(f"NVVM cannot compile a small kernel ({_one_line(error)})",
                          _nvvm_fix(found)) from None
    found["nvvm_release"] = ptx_cuda_release(ptx)
    found["ptx_isa"] = ptx_isa_version(ptx)


def check_nvjitlink(found):
    from numba.cuda.cudadrv import driver

    found["nvjitlink_path"] = library_path("nvJitLink")
    release = found.get("nvvm_release")
    wanted = "%d.%d" % release if release else "%d.%d" % OLDEST_CUDA
    fix = (f"pip install 'nvidia-nvjitlink>={wanted},<{int(wanted.split('.')[0]) + 1}', "
           "or reinstall with 'dvae-cupy[gpu]', which takes NVVM and nvJitLink from one release")
    if not driver._have_nvjitlink():
        isa = found.get("ptx_isa")
        raise PieceFailed("nvJitLink (>= 12.3) not found: numba-cuda would hand NVVM's PTX"
                          + (" (ISA %d.%d)" % isa if isa else "") + " to the driver's own linker",
                          fix)
    from cuda.bindings import nvjitlink

    version = tuple(nvjitlink.version())
    found["nvjitlink"] = "%d.%d" % version
    if release and not nvjitlink_can_link(version, release):
        raise PieceFailed(f"nvJitLink {found['nvjitlink']} cannot link what NVVM {wanted} "
                          "emits (it must be the same major release and no older)", fix)


def check_kernel_launch(found):
    import cupy
    from numba import cuda

    from .kernels._cuda import current_stream, launch_1d

    n = 1000
    x = cupy.arange(n, dtype=cupy.float32)
    out = cupy.full(n, 3.0, dtype=cupy.float32)
    # views made here, not through _cuda's view cache: the probe's arrays are transient
    args = (np.float32(2.0), cuda.as_cuda_array(x, sync=False), cuda.as_cuda_array(out, sync=False))
    try:
        probe_kernel()[launch_1d(n) + (current_stream(),)](*args)
        cupy.cuda.get_current_stream().synchronize()
        got = out.get()
    except Exception as error:
        raise PieceFailed("a small kernel failed to compile, link or run "
                          f"({_one_line(error)})") from None
    expected = np.float32(2.0) * np.arange(n, dtype=np.float32) + np.float32(3.0)
    if not np.array_equal(got, expected):
        wrong = int(np.sum(got != expected))
        raise PieceFailed(f"a small kernel ran but {wrong} of {n} outputs differ from NumPy's")


# A tolerance far above float32 (or TF32) rounding: this catches a product that is garbage,
# not one that rounds differently (dvae-check measures that).
MATMUL_TOLERANCE = 1e-2


def check_matmul(found):
    import cupy

    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 48)).astype(np.float32)
    b = rng.standard_normal((48, 32)).astype(np.float32)
    try:
        got = cupy.matmul(cupy.asarray(a), cupy.asarray(b)).get()
    except Exception as error:
        raise PieceFailed(f"a CuPy matrix product failed ({_one_line(error)})") from None
    expected = a.astype(np.float64) @ b.astype(np.float64)
    error = float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))
    if not error <= MATMUL_TOLERANCE:
        raise PieceFailed(f"a 64x48 @ 48x32 CuPy product differs from NumPy's by {error:.1e} of "
                          "its scale")


def steps():
    """[(piece, check)] in the order they run (looked up at each call, so tests can replace one)."""
    return [("CuPy", check_cupy), ("driver", check_driver), ("numba-cuda", check_numba_cuda),
            ("NVVM", check_nvvm), ("nvJitLink", check_nvjitlink),
            ("kernel launch", check_kernel_launch), ("CuPy matmul", check_matmul)]


@functools.lru_cache(maxsize=1)
def probe_kernel():
    """The probe's kernel, out = a * x + out (one thread per element), made at first use so that
    importing this module imports no numba.cuda."""
    from numba import cuda

    @cuda.jit
    def axpy_kernel(a, x, out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = a * x[i] + out[i]

    return axpy_kernel


# ---------------------------------------------------------------------------------------------

def run_probe():
    """Run every check once (no cache) and return the Probe."""
    found = {}
    for piece, check in [("DVAE_CUPY_BACKEND", check_override)] + steps():
        try:
            check(found)
        except PieceFailed as failure:
            return Probe(False, piece, failure.reason, failure.fix, found)
        except Exception as error:  # a fault inside CuPy or Numba: named, never a traceback
            return Probe(False, piece, f"unexpected error ({_one_line(error)})", "", found)
    return Probe(True, found=found)


@functools.lru_cache(maxsize=1)
def _probe_once():
    return run_probe()


def probe():
    """The Probe for this process: DVAE_CUPY_BACKEND=cpu is honoured at every call; the rest
    (imports, driver, compile, link, launch) runs once and is cached."""
    try:
        check_override({})
    except PieceFailed as failure:
        return Probe(False, "DVAE_CUPY_BACKEND", failure.reason, failure.fix, {})
    return _probe_once()


_fallback_reported = False


def report_cpu_fallback(result, stream=None):
    """Say on stderr, once per process, why the 'auto' backend runs on the CPU."""
    global _fallback_reported
    if _fallback_reported:
        return
    _fallback_reported = True
    if result.piece == "DVAE_CUPY_BACKEND":  # asked for: not a fault to fix
        line = "dvae_cupy: using the CPU, as DVAE_CUPY_BACKEND=cpu asks"
    else:
        line = f"dvae_cupy: using the CPU: the GPU backend is not usable here ({result.message()})"
    print(line, file=stream if stream is not None else sys.stderr, flush=True)


def forget():
    """Drop the cached probe and the 'already reported' mark (for tests)."""
    global _fallback_reported
    _probe_once.cache_clear()
    _fallback_reported = False
