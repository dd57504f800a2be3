"""The backend, chosen once at the edge: NumPy + Numba @njit kernels, or CuPy + Numba CUDA kernels.

Everything above this module (model, estimators, trainer) is written against `backend.xp` (the
array namespace) and `backend.ops` (the fused kernels, same names and arguments on both targets),
so the GPU orchestration is the same code that the CPU tests run.

    backend = get_backend("auto")      # "cpu", "gpu", or "auto" (GPU when one is usable)
    backend.xp.matmul(a, b, out=c)
    backend.ops.bias_act(c, bias, True)

DVAE_CUPY_BACKEND=cpu in the environment forces the CPU whatever is asked for with "auto".
"""
import os
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

BACKEND_NAMES = ("auto", "cpu", "gpu")

# The fused ops every backend provides: module in dvae_cupy.kernels -> op names.
KERNEL_OPS = {
    "rng": ("gumbel_noise", "philox_bits", "advance_counter"),
    "bias_act": ("bias_act", "relu_backward"),
    "onehot_linear": ("gather_rows_sum", "scatter_rows_add"),
    "adam": ("adam_update",),
    "bce": ("bce_rows", "softplus_row_sums"),
    "softmax_kl": ("softmax_kl",),
    "argmax": ("gumbel_argmax", "direct_logit_grad"),
    "candidates": ("neighbour_hidden", "store_candidate_losses", "store_sampled_losses"),
}


@dataclass(frozen=True)
class Backend:
    name: str          # "cpu" or "gpu"
    xp: object         # numpy or cupy
    ops: SimpleNamespace

    def asarray(self, array, dtype=np.float32):
        """Host or device array -> this backend's array (a copy only where needed)."""
        return self.xp.asarray(array, dtype=dtype)

    def to_host(self, array):
        """This backend's array -> NumPy (a device-to-host copy on the GPU)."""
        return array.get() if hasattr(array, "get") else np.asarray(array)

    def synchronize(self):
        if self.name == "gpu":
            self.xp.cuda.get_current_stream().synchronize()


def _load_ops(suffix):
    """The kernels' CPU twins (suffix "") or CUDA launchers (suffix "_cuda") as one namespace."""
    import importlib

    ops = {}
    for module_name, names in KERNEL_OPS.items():
        module = importlib.import_module(f"dvae_cupy.kernels.{module_name}")
        for name in names:
            ops[name] = getattr(module, name + suffix)
    return SimpleNamespace(**ops)


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
        return Backend("cpu", np, _load_ops(""))
    reason = gpu_unavailable_reason()
    if reason:
        raise GPUUnavailableError(f"backend 'gpu' is not usable here: {reason}")
    import cupy

    return Backend("gpu", cupy, _load_ops("_cuda"))
