"""Argument checks shared by every kernel's CPU twin and launcher.

They read only dtype, shape and flags (never values), so they cost no device sync on CuPy or
Numba device arrays, and they run once per call at the Python level, never in a hot loop.
Each error names the argument.
"""
import numpy as np


def check_array(name, array, dtype, ndim=None, shape=None):
    """`array` must have `dtype`, be C-contiguous, and have `ndim` dimensions / exactly `shape`."""
    actual = getattr(array, "dtype", None)
    if actual is None or np.dtype(actual) != np.dtype(dtype):
        raise ValueError(f"{name} must be {np.dtype(dtype).name}, got {actual or type(array).__name__}")
    if ndim is not None and len(array.shape) != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(array.shape)}")
    if shape is not None:
        check_shape(name, array, shape)
    if not array.flags["C_CONTIGUOUS"]:
        raise ValueError(f"{name} must be C-contiguous, got strides {array.strides}")


def check_shape(name, array, shape):
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(array.shape)}")
