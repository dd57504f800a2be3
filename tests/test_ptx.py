"""Every CUDA kernel in dvae_cupy.kernels compiles to PTX for the GPUs we target, with no GPU.

The simulator accepts code the real compiler rejects, so each kernel is also compiled by NVVM
for every signature in its module's CUDA_KERNELS registry, for sm_80 (A100) and sm_90
(H100/H200), the way numba-cuda compiles it at launch (tests/kernel_builds.py; the same builds
are linked to cubins and assembled by ptxas in tests/test_toolchain.py). Kernels are found by
walking the package, and a module-level @cuda.jit kernel missing from its module's registry
fails the suite: no kernel escapes this test.
"""
import importlib
import os
import pkgutil
import types

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("compile_ptx does not exist under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1); "
                "run without it", allow_module_level=True)

from numba import types as numba_types  # noqa: E402
from numba.cuda.cudadrv import nvvm  # noqa: E402
from numba.cuda.dispatcher import CUDADispatcher  # noqa: E402

import dvae_cupy.kernels  # noqa: E402
from kernel_builds import launch_build  # noqa: E402

if not nvvm.is_available():
    pytest.skip("NVVM is not installed (pip install 'numba-cuda[cu13]'): cannot compile PTX",
                allow_module_level=True)

TARGETS = [(8, 0), (9, 0)]


def kernel_modules():
    return [importlib.import_module(info.name)
            for info in pkgutil.iter_modules(dvae_cupy.kernels.__path__, "dvae_cupy.kernels.")]


def defined_kernels(module):
    """{name: dispatcher} for the @cuda.jit kernels defined (not imported) at module level.
    Device functions (@cuda.jit(device=True)) are compiled inside the kernels that call them."""
    return {name: obj for name, obj in vars(module).items()
            if isinstance(obj, CUDADispatcher) and not obj.targetoptions.get("device")
            and obj.py_func.__module__ == module.__name__}


def unregistered_kernels(module):
    listed = [dispatcher for dispatcher, _ in getattr(module, "CUDA_KERNELS", [])]
    return sorted(name for name, kernel in defined_kernels(module).items()
                  if not any(kernel is d for d in listed))


def registry():
    """[(module, kernel name, dispatcher, signature)] from every module's CUDA_KERNELS."""
    entries = []
    for module in kernel_modules():
        for dispatcher, sigs in getattr(module, "CUDA_KERNELS", []):
            for sig in sigs:
                entries.append((module.__name__, dispatcher.py_func.__name__, dispatcher, sig))
    return entries


REGISTRY = registry()


def test_registry_is_not_empty():
    assert REGISTRY, "no CUDA_KERNELS found in dvae_cupy.kernels"


@pytest.mark.parametrize("module", kernel_modules(), ids=lambda m: m.__name__)
def test_every_kernel_is_registered(module):
    assert not unregistered_kernels(module), (
        f"{module.__name__}: add {unregistered_kernels(module)} to CUDA_KERNELS")
    for dispatcher, sigs in getattr(module, "CUDA_KERNELS", []):
        assert isinstance(dispatcher, CUDADispatcher), dispatcher
        assert not dispatcher.targetoptions.get("device"), "list kernels, not device functions"
        assert sigs, f"{dispatcher.py_func.__name__} has no signatures to compile"


@pytest.mark.parametrize("module", kernel_modules(), ids=lambda m: m.__name__)
def test_device_functions_are_inlined(module):
    # a device function compiled on its own (inline='never', the default) asks the driver for
    # the current GPU: compile_ptx then fails on machines without one (CudaSupportError)
    for name, obj in vars(module).items():
        if (isinstance(obj, CUDADispatcher) and obj.targetoptions.get("device")
                and obj.py_func.__module__ == module.__name__):
            assert obj.targetoptions.get("inline") == "always", (
                f"{module.__name__}.{name}: use @cuda.jit(device=True, inline='always')")


def test_unregistered_kernel_is_caught():
    # the guard above, on a module that defines a kernel, a device function and no registry
    module = types.ModuleType("fake_kernels")
    exec("from numba import cuda\n"
         "@cuda.jit(device=True)\ndef helper(x):\n    return x\n"
         "@cuda.jit\ndef forgotten(out):\n    out[0] = helper(1.0)\n", vars(module))
    assert unregistered_kernels(module) == ["forgotten"]
    module.CUDA_KERNELS = [(module.forgotten, [(numba_types.float32[::1],)])]
    assert unregistered_kernels(module) == []


@pytest.mark.parametrize("cc", TARGETS, ids=lambda cc: "sm_%d%d" % cc)
@pytest.mark.parametrize("module_name, kernel_name, dispatcher, sig",
                         REGISTRY, ids=[f"{e[0].rsplit('.', 1)[1]}.{e[1]}-{i}"
                                        for i, e in enumerate(REGISTRY)])
def test_kernel_compiles_to_ptx(module_name, kernel_name, dispatcher, sig, cc):
    ptx = launch_build(dispatcher, sig, cc).ptx
    assert ".target sm_%d%d" % cc in ptx, f"{module_name}.{kernel_name}{sig}"
    assert ".entry" in ptx
