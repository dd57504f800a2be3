"""Test helpers for the kernels' launchers: stand-ins that record launches instead of running them.

  LaunchRecorder            replaces a @cuda.jit kernel: kernel[config](*args) is recorded as
                            (config, Numba types of args); nothing runs
  record_launches(mp, module, name)   patches module.name with a recorder; returns its list
  registered(module)        {kernel name: {signature tuples}} from module.CUDA_KERNELS
  as_if_no_gpu(mp)          makes the launchers take NumPy arrays here even where a GPU is
                            present (as they do under the simulator)
"""
from numba import typeof

from dvae_cupy.kernels import _cuda


class LaunchRecorder:
    def __init__(self):
        self.launches = []

    def __getitem__(self, config):
        return lambda *args: self.launches.append((config, tuple(typeof(a) for a in args)))


def record_launches(monkeypatch, module, name):
    recorder = LaunchRecorder()
    monkeypatch.setattr(module, name, recorder)
    return recorder.launches


def registered(module):
    return {kernel.py_func.__name__: {tuple(s) for s in sigs} for kernel, sigs in module.CUDA_KERNELS}


def as_if_no_gpu(monkeypatch):
    monkeypatch.setattr(_cuda, "cupy_usable", lambda: False)


def covers(config, needed):
    """The 1-D launch config (blocks, threads, stream) has a thread for each of `needed` items
    and no idle block, on stream 0."""
    blocks, threads, stream = config
    return blocks * threads >= needed > (blocks - 1) * threads and stream == 0
