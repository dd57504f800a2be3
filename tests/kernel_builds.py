"""Our CUDA kernels built the way numba-cuda builds them at their first launch, with no GPU.

At a launch numba-cuda 0.30 makes a ``_Kernel`` for the current device: it lowers the Python
function, has NVVM compile it to PTX (to look for NRT and helper calls) and, at
``library.get_cubin()``, to LTO-IR that nvJitLink links into the cubin the driver loads. It
builds for the device's compute capability, with the arch-specific suffix from 9.0 on
(sm_90a on an H100/H200: ``CUDACodeLibrary._ensure_cc``). Nothing of that needs a GPU except
two questions, "which device?" in the dispatcher (``get_current_device``) and in the code
library (``devices.get_context``): here both are answered by a stand-in device of the compute
capability asked for, and every other step is numba-cuda's own code.

Each (kernel, signature, compute capability) is built once per test session and shared by
tests/test_ptx.py and tests/test_toolchain.py (a build costs about half a second).
"""
import functools
import types
from dataclasses import dataclass
from unittest import mock

from numba.cuda import codegen
from numba.cuda import dispatcher as cuda_dispatcher


@dataclass(frozen=True)
class LaunchBuild:
    library: object   # numba-cuda's CUDACodeLibrary of the kernel, as a launch makes it
    cc: tuple         # what numba-cuda builds for on that device, e.g. (9, 0, "a")
    ptx: str          # the PTX NVVM made for it (what the driver would get without nvJitLink)

    def cubin(self):
        """The cubin as a launch links it (nvJitLink, LTO); cached by numba-cuda's library."""
        return self.library.get_cubin(cc=self.cc)

    @property
    def arch(self):
        return "sm_%d%d%s" % self.cc


class _StandInDevice:
    def __init__(self, cc):
        self.compute_capability = cc
        self.id = 0


@functools.lru_cache(maxsize=None)
def launch_build(dispatcher, sig, cc):
    """The LaunchBuild of `dispatcher` (an @cuda.jit kernel) for argument types `sig` on a device
    of compute capability `cc` ((9, 0), (8, 0), ...)."""
    device = _StandInDevice(tuple(cc))
    context = types.SimpleNamespace(device=device)
    with mock.patch.object(cuda_dispatcher, "get_current_device", lambda: device), \
            mock.patch.object(codegen.devices, "get_context", lambda: context):
        kernel = cuda_dispatcher._Kernel(dispatcher.py_func, tuple(sig), **dispatcher.targetoptions)
        launch_cc = kernel.library._ensure_cc(None)
    return LaunchBuild(kernel.library, launch_cc, kernel.library.get_asm_str(cc=launch_cc))
