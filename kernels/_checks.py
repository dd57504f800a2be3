"""Argument checks shared by every kernel's CPU twin and launcher.

They read only dtype, shape and flags (never values), so they cost no device sync on CuPy or
Numba device arrays, and they run once per call at the Python level, never in a hot loop.
Each error names the argument.

  check_array(name, array, dtype, ndim, shape)    dtype, C-contiguity and ndim / exact shape
  check_shape(name, array, shape)                 exact shape
  check_scalar_array(name, array, dtype, device)  a per-step scalar: a 1-element 1-D array
"""
import numpy as np

from . import _cuda


_DTYPES = {}  # np.float32 etc. -> its dtype object, made once: np.dtype() costs ~0.5 us a call


def _dtype(dtype):
    found = _DTYPES.get(dtype)
    if found is None:
        found = _DTYPES[dtype] = np.dtype(dtype)
    return found


def _same_dtype(actual, dtype):
    """actual (an array's dtype, or None) is `dtype`: by identity first (NumPy's native dtypes are
    singletons, also on CuPy and Numba arrays), by comparison otherwise."""
    expected = _dtype(dtype)
    return actual is expected or (actual is not None and np.dtype(actual) == expected)


def check_array(name, array, dtype, ndim=None, shape=None):
    """`array` must have `dtype`, be C-contiguous, and have `ndim` dimensions / exactly `shape`."""
    actual = getattr(array, "dtype", None)
    if not _same_dtype(actual, dtype):
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


def check_scalar_array(name, array, dtype, device=False):
    """A per-step scalar (a counter, Adam's step, eps) is a 1-element 1-D `dtype` array that the
    kernel reads at run time (a CUDA graph bakes in scalar arguments, not memory): NumPy for the
    CPU twins and the simulator, CuPy/Numba device arrays on a GPU. Numbers are refused.
    With device=True (the launchers) a NumPy array is refused where a GPU is in use (outside the
    simulator): Numba would copy it to the device and back around the launch, a hidden sync."""
    actual = getattr(array, "dtype", None)
    if not _same_dtype(actual, dtype) or isinstance(array, np.generic) \
            or tuple(array.shape) != (1,):
        dtype = np.dtype(dtype)
        got = (f"shape {tuple(array.shape)} and dtype {actual}" if actual is not None
               and not isinstance(array, np.generic) else f"{type(array).__name__} {array!r}")
        raise ValueError(f"{name} must be a 1-element 1-D {dtype.name} array, got {got}")
    if device and isinstance(array, np.ndarray) and _cuda.cupy_usable():
        raise ValueError(f"{name} must be a device array (CuPy or Numba) on the GPU, "
                         f"not a NumPy array (its copies would synchronise)")
