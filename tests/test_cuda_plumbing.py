"""kernels/_cuda.py's device-view cache, with a stand-in for CuPy arrays (no GPU needed)."""
import pytest

from conftest import SIMULATOR_ON
from dvae_cupy.kernels import _cuda

pytestmark = pytest.mark.skipif(SIMULATOR_ON, reason="the simulator takes host arrays unwrapped")


class FakeDeviceArray:
    def __init__(self, ptr, shape=(4,)):
        self.__cuda_array_interface__ = {"data": (ptr, False), "shape": shape,
                                         "strides": None, "typestr": "<f4", "version": 3}


def test_views_are_made_once_per_buffer_and_bounded(monkeypatch):
    made = []
    monkeypatch.setattr(_cuda.cuda, "as_cuda_array", lambda a, sync: made.append((a, sync)) or ("view", a))
    monkeypatch.setattr(_cuda, "_views", {})
    monkeypatch.setattr(_cuda, "_VIEW_CACHE_SIZE", 3)
    a, b = FakeDeviceArray(1000), FakeDeviceArray(2000)
    assert _cuda.as_device_view(a) == ("view", a)
    assert _cuda.as_device_view(a) == ("view", a)
    assert len(made) == 1 and made[0][1] is False  # wrapped once, without a stream sync
    _cuda.as_device_view(b)
    _cuda.as_device_view(FakeDeviceArray(1000, shape=(2, 2)))  # same pointer, other shape: new view
    assert len(made) == 3
    _cuda.as_device_view(a)                                    # refreshes a
    _cuda.as_device_view(FakeDeviceArray(3000))                # evicts the least recently used (b)
    assert len(_cuda._views) == 3
    _cuda.as_device_view(a)
    assert len(made) == 4
    _cuda.as_device_view(b)
    assert len(made) == 5


def test_host_arrays_pass_through():
    import numpy as np

    x = np.zeros(3)
    assert _cuda.as_device_view(x) is x


def test_the_view_cache_holds_a_run_and_no_more(monkeypatch):
    monkeypatch.setattr(_cuda.cuda, "as_cuda_array", lambda a, sync: ("view", a))
    monkeypatch.setattr(_cuda, "_views", {})
    arrays = [FakeDeviceArray(4096 * (i + 1)) for i in range(_cuda._VIEW_CACHE_SIZE + 1)]
    for array in arrays:
        _cuda.as_device_view(array)
    assert len(_cuda._views) == _cuda._VIEW_CACHE_SIZE <= 256
    assert all(view[1] is not arrays[0] for view in _cuda._views.values())  # the oldest let go


# ---------------------------------------------------------------------------------------------
# Stream wrappers: one per CuPy stream, not one per launch.

class FakeStream:
    def __init__(self, ptr, device_id=0):
        self.ptr, self.device_id = ptr, device_id


@pytest.fixture
def cupy_streams(monkeypatch):
    """A fake CuPy whose current stream the test sets; external_stream records what it wraps."""
    import sys
    import types

    state = types.SimpleNamespace(current=FakeStream(0), wrapped=[])
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(get_current_stream=lambda: state.current)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setattr(_cuda, "cupy_usable", lambda: True)
    monkeypatch.setattr(_cuda, "_stream_wrappers", {})
    monkeypatch.setattr(_cuda.cuda, "external_stream",
                        lambda ptr: state.wrapped.append(ptr) or ("stream", ptr, len(state.wrapped)))
    return state


def test_stream_wrappers_are_made_once_per_stream(cupy_streams):
    assert _cuda.current_stream() == 0                    # CuPy's null stream: Numba's default
    cupy_streams.current = FakeStream(0xA000)
    first = _cuda.current_stream()
    assert _cuda.current_stream() is first and cupy_streams.wrapped == [0xA000]
    cupy_streams.current = FakeStream(0xB000)
    assert _cuda.current_stream() is not first and cupy_streams.wrapped == [0xA000, 0xB000]
    cupy_streams.current = FakeStream(0xA000, device_id=1)  # same handle value, other device
    _cuda.current_stream()
    assert len(cupy_streams.wrapped) == 3
    cupy_streams.current = FakeStream(0xA000)
    assert _cuda.current_stream() is first


def test_stream_wrappers_are_bounded(cupy_streams, monkeypatch):
    monkeypatch.setattr(_cuda, "_STREAM_CACHE_SIZE", 2)
    for ptr in (1, 2, 3):
        cupy_streams.current = FakeStream(ptr)
        _cuda.current_stream()
    assert len(_cuda._stream_wrappers) == 2
    cupy_streams.current = FakeStream(1)                  # the oldest went: wrapped again
    _cuda.current_stream()
    assert cupy_streams.wrapped == [1, 2, 3, 1]


# ---------------------------------------------------------------------------------------------
# The low-occupancy warning: off for our small grids, by numba-cuda's own switch.

def _configure_small_launch():
    import warnings

    from numba.cuda.core.errors import NumbaPerformanceWarning

    @_cuda.cuda.jit
    def tiny(out):
        out[0] = 1.0

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny[1, 32]  # configuring the launch is where numba-cuda warns; nothing runs
    return [w for w in caught if issubclass(w.category, NumbaPerformanceWarning)]


def test_small_grids_do_not_warn():
    import os

    assert os.environ["NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS"] == "0"  # survives numba's config reload
    assert _configure_small_launch() == []


def test_the_switch_is_the_one_that_silences_it(monkeypatch):
    from numba.cuda.core import config as cuda_config

    monkeypatch.setattr(cuda_config, "CUDA_LOW_OCCUPANCY_WARNINGS", 1)
    caught = _configure_small_launch()
    assert caught and "under-utilization" in str(caught[0].message)
