"""The backend, chosen once at the edge: NumPy + Numba @njit kernels, or CuPy + Numba CUDA kernels.

Everything above this module (model, estimators, trainer) is written against `backend.xp` (the
array namespace) and `backend.ops` (the fused kernels: the module ops_cpu.py or ops_cuda.py, same
names and arguments on both targets), so the GPU orchestration is the same code that the CPU
tests run.

    backend = get_backend("auto")      # "cpu", "gpu", or "auto" (GPU when one is usable)
    backend.xp.matmul(a, b, out=c)
    backend.ops.bias_act(c, bias, True)

DVAE_CUPY_BACKEND=cpu in the environment forces the CPU whatever is asked for with "auto".
"""
from dataclasses import dataclass
from types import ModuleType

import numpy as np

BACKEND_NAMES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class Backend:
    name: str          # "cpu" or "gpu"
    xp: object         # numpy or cupy (numpy for the CUDA kernels under the simulator)
    ops: ModuleType    # ops_cpu or ops_cuda

    def asarray(self, array, dtype=np.float32):
        """Host or device array -> this backend's array (a copy only where needed)."""
        return self.xp.asarray(array, dtype=dtype)

    def to_host(self, array):
        """This backend's array -> NumPy (a device-to-host copy on the GPU)."""
        return array.get() if hasattr(array, "get") else np.asarray(array)

    def synchronize(self):
        """Wait for the current stream's work (timing, host reads)."""
        if self.on_device:
            self.xp.cuda.get_current_stream().synchronize()

    def synchronize_device(self):
        """Wait for all of the device's work on every stream (before switching streams)."""
        if self.on_device:
            self.xp.cuda.Device().synchronize()

    def free_memory_bytes(self):
        """Free device memory, or None where arrays live in host memory (CPU, simulator)."""
        if not self.on_device:
            return None
        free, _ = self.xp.cuda.runtime.memGetInfo()
        return int(free) + int(self.xp.get_default_memory_pool().free_bytes())

    @property
    def on_device(self):
        """True when the arrays are CuPy arrays in GPU memory (not under the simulator)."""
        return getattr(self.xp, "__name__", "") == "cupy"


def cpu_backend():
    from . import ops_cpu

    return Backend("cpu", np, ops_cpu)


def cuda_backend(xp):
    """The CUDA kernels with array namespace `xp`: cupy on a GPU, numpy under the simulator."""
    from . import ops_cuda

    return Backend("gpu", xp, ops_cuda)


def gpu_unavailable_reason():
    """None when the GPU backend is usable here, else one line naming the failing piece (CuPy,
    driver, numba-cuda, NVVM, nvJitLink, kernel launch, CuPy matmul) and the fix. The answer is
    dvae_cupy.gpu_probe's: a real compile, link and launch, run once per process."""
    from .gpu_probe import probe

    result = probe()
    return None if result.usable else result.message()


def get_backend(name="auto"):
    """The backend called `name`: "cpu", "gpu", or "auto" (the GPU when the probe finds it usable,
    else the CPU, saying why once per process on stderr). "gpu" where the GPU is not usable
    raises GPUUnavailableError naming the failing piece."""
    from .errors import GPUUnavailableError
    from .gpu_probe import probe, report_cpu_fallback

    if name not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {name!r}")
    if name == "auto":
        result = probe()
        if not result.usable:
            report_cpu_fallback(result)
        name = "gpu" if result.usable else "cpu"
    if name == "cpu":
        return cpu_backend()
    reason = gpu_unavailable_reason()
    if reason:
        raise GPUUnavailableError(f"backend 'gpu' is not usable here: {reason}")
    import cupy

    return cuda_backend(cupy)
