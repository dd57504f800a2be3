"""dvae_cupy.gpu_probe's decisions, on a machine with no GPU: each piece made to fail in turn.

A fake CuPy (NumPy arrays with .get(), a scripted runtime) and a fake kernel launch stand in for
the GPU; NVVM and nvJitLink are the real ones installed here (the test extra brings them), so
the healthy case also proves that the probe finds them and reads their releases. Every failure
must come back as a Probe naming the piece, in one line, never as an exception.
"""
import sys
import types

import numpy as np
import numba.cuda
import pytest
from numba.cuda.cudadrv import driver as cuda_driver
from numba.cuda.cudadrv import nvvm

from conftest import SIMULATOR_ON
from dvae_cupy import gpu_probe
from dvae_cupy.backend import get_backend, gpu_unavailable_reason
from dvae_cupy.check import check_main
from dvae_cupy.errors import GPUUnavailableError
from dvae_cupy.kernels import _cuda

pytestmark = [
    pytest.mark.skipif(SIMULATOR_ON, reason="the probe refuses the simulator; tested without it"),
    pytest.mark.skipif(not nvvm.is_available(), reason="NVVM is not installed (pip install -e '.[test]')"),
]


class DeviceArray(np.ndarray):
    """A NumPy array that answers .get() like a CuPy array."""

    def get(self):
        return np.asarray(self)


def fake_cupy(driver=13000, devices=1, name=b"NVIDIA H200", cc=(9, 0)):
    """A stand-in for the parts of CuPy the probe touches; tests change its attributes."""
    cupy = types.ModuleType("cupy")
    cupy.__version__ = "14.2.0"
    cupy.float32 = np.float32
    cupy.is_available = lambda: devices > 0
    cupy.arange = lambda n, dtype: np.arange(n, dtype=dtype).view(DeviceArray)
    cupy.full = lambda n, value, dtype: np.full(n, value, dtype=dtype).view(DeviceArray)
    cupy.asarray = lambda a: np.array(a).view(DeviceArray)
    cupy.matmul = lambda a, b: (np.asarray(a) @ np.asarray(b)).view(DeviceArray)
    runtime = types.SimpleNamespace(
        driverGetVersion=lambda: driver, runtimeGetVersion=lambda: 13000,
        getDeviceCount=lambda: devices, getDevice=lambda: 0,
        getDeviceProperties=lambda device: {"name": name, "major": cc[0], "minor": cc[1]})
    stream = types.SimpleNamespace(ptr=0, synchronize=lambda: None)
    cupy.cuda = types.SimpleNamespace(runtime=runtime, get_current_stream=lambda: stream)
    return cupy


class FakeKernel:
    """Stands in for the compiled probe kernel: computes out = a * x + out, wrongly or raises."""

    def __init__(self, error=None, offset=0.0):
        self.error, self.offset, self.launches = error, offset, 0

    def __getitem__(self, launch):
        def run(a, x, out):
            self.launches += 1
            if self.error is not None:
                raise self.error
            out[...] = a * x + out + self.offset
        return run


@pytest.fixture
def machine(monkeypatch):
    """A healthy GPU machine, as far as the probe can tell: break one piece in each test."""
    cupy = fake_cupy()
    kernel = FakeKernel()
    kernel.py_func = gpu_probe.probe_kernel().py_func  # what the NVVM check really compiles
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.delenv("DVAE_CUPY_BACKEND", raising=False)
    monkeypatch.setattr(numba.cuda, "is_available", lambda: True)
    monkeypatch.setattr(numba.cuda, "as_cuda_array", lambda array, sync=True: array)
    monkeypatch.setattr(_cuda, "current_stream", lambda: 0)
    monkeypatch.setattr(gpu_probe, "probe_kernel", lambda: kernel)
    gpu_probe.forget()
    yield types.SimpleNamespace(cupy=cupy, kernel=kernel)
    gpu_probe.forget()


def failed(piece):
    result = gpu_probe.run_probe()
    assert not result.usable, "the probe should have failed at " + piece
    assert result.piece == piece, result.message()
    assert "\n" not in result.message()
    return result


def test_a_healthy_machine_is_usable_and_its_toolchain_is_recorded(machine):
    result = gpu_probe.run_probe()
    assert result.usable, result.message()
    found = result.found
    assert found["gpu"] == "NVIDIA H200" and found["driver_cuda"] == "13.0"
    # the real NVVM and nvJitLink installed here, read from what they produce and report
    assert found["nvvm_release"][0] == 13 and found["ptx_isa"][0] == 9
    assert gpu_probe.nvjitlink_can_link(tuple(map(int, found["nvjitlink"].split("."))),
                                        found["nvvm_release"])
    assert machine.kernel.launches == 1


def test_the_environment_override_wins_and_is_read_at_every_call(machine, monkeypatch):
    monkeypatch.setenv("DVAE_CUPY_BACKEND", "cpu")
    result = gpu_probe.probe()
    assert not result.usable and result.piece == "DVAE_CUPY_BACKEND"
    monkeypatch.delenv("DVAE_CUPY_BACKEND")
    assert gpu_probe.probe().usable


def test_missing_cupy(machine, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    result = failed("CuPy")
    assert "not installed" in result.reason and "dvae-cupy[gpu]" in result.fix


@pytest.mark.parametrize("version, words", [(0, "no NVIDIA driver"), (12080, "supports CUDA 12.8")])
def test_no_driver_or_a_driver_older_than_cuda_13(machine, version, words):
    machine.cupy.cuda.runtime.driverGetVersion = lambda: version
    result = failed("driver")
    assert words in result.reason and "580" in result.fix


def test_a_driver_that_finds_no_gpu(machine):
    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
    machine.cupy.cuda.runtime.getDeviceCount = no_device
    assert "cudaErrorNoDevice" in failed("driver").reason


def test_an_unexpected_error_inside_cupy_is_named_not_raised(machine):
    machine.cupy.cuda.runtime.getDeviceProperties = lambda device: {}  # KeyError inside the check
    assert "KeyError" in failed("driver").reason


def test_numba_cuda_that_sees_no_gpu_or_runs_the_simulator(machine, monkeypatch):
    monkeypatch.setattr(numba.cuda, "is_available", lambda: False)
    assert "sees no GPU" in failed("numba-cuda").reason
    monkeypatch.setattr(numba.cuda, "is_available", lambda: True)
    monkeypatch.setattr(numba.config, "ENABLE_CUDASIM", True)
    assert "simulator" in failed("numba-cuda").reason


def test_nvvm_not_found_names_both_fixes(machine, monkeypatch):
    monkeypatch.setattr(nvvm, "is_available", lambda: False)
    result = failed("NVVM")
    assert "CUDA_HOME" in result.fix and "nvidia-nvvm==13.0.*" in result.fix


def test_nvjitlink_missing(machine, monkeypatch):
    monkeypatch.setattr(cuda_driver, "_have_nvjitlink", lambda: False)
    result = failed("nvJitLink")
    assert "driver's own linker" in result.reason and "nvidia-nvjitlink>=" in result.fix


def test_nvjitlink_older_than_nvvm(machine, monkeypatch):
    from cuda.bindings import nvjitlink

    release = gpu_probe.run_probe().found["nvvm_release"]
    older = (release[0], release[1] - 1) if release[1] else (release[0] - 1, 9)
    monkeypatch.setattr(nvjitlink, "version", lambda: older)
    result = failed("nvJitLink")
    assert "cannot link" in result.reason and "%d.%d" % older in result.reason


def test_nvjitlink_rule():
    assert gpu_probe.nvjitlink_can_link((13, 5), (13, 5))
    assert gpu_probe.nvjitlink_can_link((13, 5), (13, 0))      # newer linker reads older LTO-IR
    assert not gpu_probe.nvjitlink_can_link((13, 0), (13, 5))  # ERROR_OUTDATED_LIBRARY
    assert not gpu_probe.nvjitlink_can_link((12, 9), (13, 0))  # another major release


def test_a_kernel_that_fails_to_link_or_computes_wrong(machine):
    class nvJitLinkError(Exception):
        pass

    machine.kernel.error = nvJitLinkError("ERROR_OUTDATED_LIBRARY (14)\nnvJitLink error log: ...")
    result = failed("kernel launch")
    assert "nvJitLinkError: ERROR_OUTDATED_LIBRARY (14)" in result.reason
    machine.kernel.error, machine.kernel.offset = None, 1.0
    assert "differ from NumPy's" in failed("kernel launch").reason


def test_a_wrong_matrix_product(machine):
    machine.cupy.matmul = lambda a, b: np.zeros((a.shape[0], b.shape[1]), np.float32).view(DeviceArray)
    assert "differs from NumPy's" in failed("CuPy matmul").reason


def test_the_probe_runs_once_per_process(machine, monkeypatch):
    calls = []
    original = gpu_probe.check_cupy
    monkeypatch.setattr(gpu_probe, "check_cupy", lambda found: calls.append(1) or original(found))
    assert gpu_probe.probe().usable and gpu_probe.probe().usable
    assert gpu_unavailable_reason() is None
    assert len(calls) == 1


def test_checks_after_the_failing_piece_do_not_run(machine, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr(gpu_probe, "check_nvvm", lambda found: pytest.fail("NVVM checked after CuPy failed"))
    failed("CuPy")


# ---------------------------------------------------------------------------------------------
# The backend and dvae-check on top of the probe.

@pytest.fixture
def nvvm_missing(machine, monkeypatch):
    monkeypatch.setattr(nvvm, "is_available", lambda: False)


def test_auto_falls_back_to_the_cpu_saying_why_once(nvvm_missing, capsys):
    assert get_backend("auto").name == "cpu"
    assert get_backend("auto").name == "cpu"
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "using the CPU" in lines[0] and "NVVM: libNVVM not found" in lines[0] and "CUDA_HOME" in lines[0]


def test_auto_under_dvae_cupy_backend_cpu_says_so_without_a_fix(monkeypatch, capsys):
    gpu_probe.forget()
    monkeypatch.setenv("DVAE_CUPY_BACKEND", "cpu")
    try:
        assert get_backend("auto").name == "cpu"
    finally:
        gpu_probe.forget()
    assert capsys.readouterr().err == "dvae_cupy: using the CPU, as DVAE_CUPY_BACKEND=cpu asks\n"


def test_gpu_backend_raises_naming_the_piece(nvvm_missing):
    with pytest.raises(GPUUnavailableError, match="not usable here: NVVM: libNVVM not found"):
        get_backend("gpu")


def test_dvae_check_gpu_prints_one_error_line_and_exits_2(nvvm_missing, capsys):
    assert check_main(["--backend", "gpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dvae-check: error: ") and "NVVM" in err[0], err


def test_the_library_api_refuses_the_gpu_clearly(nvvm_missing):
    from dvae_cupy import DiscreteVAE

    with pytest.raises(GPUUnavailableError, match="NVVM"):  # at first use: __init__ only stores
        DiscreteVAE(backend="gpu", pixels=4).encode([[0, 0, 0, 0]])
