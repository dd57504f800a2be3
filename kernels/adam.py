"""Adam, PyTorch's formula, one element at a time, in place on float32 arrays of any shape.

  m = b1 m + (1 - b1) g      written as a lerp, as PyTorch does: m += (1 - b1) (g - m)
  v = b2 v + (1 - b2) g^2    the same form (PyTorch: v * b2 + (1 - b2) g^2): v += (1 - b2) (g^2 - v)
  p -= step_size * m / (sqrt(v) / bias_correction2_sqrt + eps)
  with step_size = lr / (1 - b1^step), bias_correction2_sqrt = sqrt(1 - b2^step)

The host computes 1 - b1, 1 - b2 and the two bias corrections in float64 and passes them to the
kernel as float32 (float32(1 - 0.999) is good to an ulp; 1 - float32(0.999) is off by 1e-5
relative). Every array is used through its flat view, so one launch covers any parameter shape.

  adam_element     scalar body: new (p, m, v) from (p, g, m, v) and the five float32 scalars
  adam_update_flat CPU @njit loop over flat arrays
  adam_update      CPU twin: the launcher's arguments, validated, scalars prepared
  adam_kernel      CUDA, one thread per element
  adam_update_cuda launcher (see kernels/_cuda.py for the pattern)

Reference: reference.adam_step. CPU and GPU may differ by an ulp (NVVM fuses multiply-adds).
"""
import math

import numba
import numpy as np
from numba import types

from ._cuda import as_device_view, cuda, current_stream, flat_view, launch_1d

# ---------------------------------------------------------------------------------------------
# Scalar body (float32 in, float32 out)


@numba.njit(inline="always")
def adam_element(p, g, m, v, one_minus_beta1, one_minus_beta2, eps, step_size,
                 bias_correction2_sqrt):
    """One Adam step of one element: returns the new (p, m, v)."""
    m = m + one_minus_beta1 * (g - m)
    v = v + one_minus_beta2 * (g * g - v)  # >= 0: v - (1 - b2) v >= 0 exactly, then + (1 - b2) g^2
    denom = math.sqrt(v) / bias_correction2_sqrt + eps
    return p - step_size * (m / denom), m, v


# ---------------------------------------------------------------------------------------------
# Host side: validation (shapes and dtypes only) and the five kernel scalars


def _check(name, array, shape):
    if array.dtype != "float32":
        raise ValueError("%s must be float32, got %s" % (name, array.dtype))
    if tuple(array.shape) != shape:
        raise ValueError("%s must have param's shape %s, got %s"
                         % (name, shape, tuple(array.shape)))
    if not array.flags["C_CONTIGUOUS"]:
        raise ValueError("%s must be C-contiguous, got strides %s" % (name, array.strides))


def adam_scalars(lr, beta1, beta2, eps, step):
    """(1 - b1, 1 - b2, eps, lr / (1 - b1^step), sqrt(1 - b2^step)) as float32, from float64."""
    step = int(step)
    if step < 1:
        raise ValueError("step must be >= 1 (Adam's steps count from 1), got %r" % (step,))
    beta1, beta2 = float(beta1), float(beta2)
    return (np.float32(1.0 - beta1), np.float32(1.0 - beta2), np.float32(eps),
            np.float32(float(lr) / (1.0 - beta1 ** step)),
            np.float32(math.sqrt(1.0 - beta2 ** step)))


def _prepare(param, grad, m, v, lr, beta1, beta2, eps, step):
    """Flat views of the four arrays (all param's shape, float32, C-contiguous) and the scalars."""
    shape = tuple(param.shape)
    for name, array in (("param", param), ("grad", grad), ("m", m), ("v", v)):
        _check(name, array, shape)
    flats = [flat_view(array) for array in (param, grad, m, v)]
    return flats, adam_scalars(lr, beta1, beta2, eps, step)


# ---------------------------------------------------------------------------------------------
# CPU twin


@numba.njit(error_model="numpy")  # a division raising ZeroDivisionError stops vectorisation (5x)
def adam_update_flat(param, grad, m, v, one_minus_beta1, one_minus_beta2, eps, step_size,
                     bias_correction2_sqrt):
    """adam_element over flat float32 arrays of one size, in place."""
    for i in range(param.size):
        param[i], m[i], v[i] = adam_element(param[i], grad[i], m[i], v[i], one_minus_beta1,
                                            one_minus_beta2, eps, step_size,
                                            bias_correction2_sqrt)


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step):
    """One Adam step (1-based `step`) on float32 NumPy arrays of any one shape, in place."""
    flats, scalars = _prepare(param, grad, m, v, lr, beta1, beta2, eps, step)
    adam_update_flat(*flats, *scalars)


# ---------------------------------------------------------------------------------------------
# CUDA twin: one thread per element


@cuda.jit
def adam_kernel(param, grad, m, v, one_minus_beta1, one_minus_beta2, eps, step_size,
                bias_correction2_sqrt):
    """Element i: (param, m, v)[i] = adam_element(...)."""
    i = cuda.grid(1)
    if i < param.size:
        param[i], m[i], v[i] = adam_element(param[i], grad[i], m[i], v[i], one_minus_beta1,
                                            one_minus_beta2, eps, step_size,
                                            bias_correction2_sqrt)


_VEC = types.float32[::1]

CUDA_KERNELS = [
    (adam_kernel, [(_VEC, _VEC, _VEC, _VEC) + (types.float32,) * 5]),
]


def adam_update_cuda(param, grad, m, v, lr, beta1, beta2, eps, step, stream=None):
    """CUDA twin of adam_update: float32 CuPy/Numba device arrays (NumPy under the simulator);
    launched on `stream`, else CuPy's current stream. Does not synchronise."""
    flats, scalars = _prepare(param, grad, m, v, lr, beta1, beta2, eps, step)
    if flats[0].size == 0:
        return
    blocks, threads = launch_1d(flats[0].size)
    stream = current_stream() if stream is None else stream
    adam_kernel[blocks, threads, stream](*(as_device_view(f) for f in flats), *scalars)
