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
