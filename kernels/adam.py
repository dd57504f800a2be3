"""Adam, PyTorch's formula, one element at a time, in place on float32 arrays of any shape.

  m = b1 m + (1 - b1) g      written as a lerp, as PyTorch does: m += (1 - b1) (g - m)
  v = b2 v + (1 - b2) g^2    the same form (PyTorch: v * b2 + (1 - b2) g^2): v += (1 - b2) (g^2 - v)
  p -= step_size * m / (sqrt(v) / bias_correction2_sqrt + eps)
  with step_size = lr / (1 - b1^step), bias_correction2_sqrt = sqrt(1 - b2^step)

The host computes 1 - b1, 1 - b2 and the two bias corrections in float64 and passes them to the
kernel as float32 (float32(1 - 0.999) is good to an ulp; 1 - float32(0.999) is off by 1e-5
relative). Every array is used through its flat view, so one launch covers any parameter shape.

`step` is an int, or a 1-element 1-D int64 array holding it (NumPy for the CPU twin and the
simulator, a CuPy/Numba device array on the GPU) that the kernel reads at run time, so that a
CUDA graph can replay the update while the step count moves (rng.advance_counter_cuda adds 1 to
it on the device). The two bias corrections then come from step[0] through the same scalar body
(adam_bias_corrections: float64 pow, then float32) that the host uses for an int. Identical on
the CPU and under the simulator; on a GPU, libdevice's float64 pow (and NVVM's contraction of
1 - pow) may differ from the host libm's in the last float64 bit, which reaches the float32
corrections only in rare rounding ties. The
launcher checks only the array's dtype and shape (step >= 1 is checked for an int, and by the
CPU twin for an array); step[0] = 0 would divide by zero.

  adam_element     scalar body: new (p, m, v) from (p, g, m, v) and the five float32 scalars
  adam_bias_corrections  scalar body: (lr / (1 - b1^step), sqrt(1 - b2^step)) as float32
  adam_update_flat CPU @njit loop over flat arrays
  adam_update      CPU twin: the launcher's arguments, validated, scalars prepared
  adam_kernel      CUDA, one thread per element
  adam_update_step_array_flat / adam_step_array_kernel   the same, step read from step[0]
  adam_update_cuda launcher (see kernels/_cuda.py for the pattern)

Reference: reference.adam_step. CPU and GPU may differ by an ulp (NVVM fuses multiply-adds).
"""
import math

import numba
import numpy as np
from numba import types

from ._cuda import as_device_view, cuda, current_stream, flat_view, launch_1d
from .rng import scalar_array

# ---------------------------------------------------------------------------------------------
# Scalar body (float32 in, float32 out)

_SMALLEST_NORMAL = np.float32(np.finfo(np.float32).tiny)


@numba.njit(inline="always")
def adam_element(p, g, m, v, one_minus_beta1, one_minus_beta2, eps, step_size,
                 bias_correction2_sqrt):
    """One Adam step of one element: returns the new (p, m, v).

    m and v below the smallest normal float32 are flushed to 0: a parameter whose gradient stays
    0 sees its moments decay geometrically into subnormals, which x86 handles ~100x slower (a
    training run slowed down 1.5x by epoch 3 before this). Their effect on p is < 1e-30."""
    m = m + one_minus_beta1 * (g - m)
    v = v + one_minus_beta2 * (g * g - v)  # >= 0: v - (1 - b2) v >= 0 exactly, then + (1 - b2) g^2
    m = m if abs(m) >= _SMALLEST_NORMAL else np.float32(0.0)
    v = v if v >= _SMALLEST_NORMAL else np.float32(0.0)
    denom = math.sqrt(v) / bias_correction2_sqrt + eps
    return p - step_size * (m / denom), m, v


@numba.njit(inline="always", error_model="numpy")
def adam_bias_corrections(lr, beta1, beta2, step):
    """(lr / (1 - beta1^step), sqrt(1 - beta2^step)) in float64, each rounded once to float32.
    lr, beta1, beta2 float64; step any integer. The power takes a float64 exponent (libm's pow on
    the CPU, as Python's float ** int; libdevice's on the GPU), not Numba's repeated squaring
    for an integer exponent."""
    t = np.float64(step)
    return (np.float32(lr / (1.0 - beta1 ** t)), np.float32(math.sqrt(1.0 - beta2 ** t)))


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


def _check_step(step):
    step = int(step)
    if step < 1:
        raise ValueError("step must be >= 1 (Adam's steps count from 1), got %r" % (step,))
    return step


def adam_scalars(lr, beta1, beta2, eps, step):
    """(1 - b1, 1 - b2, eps, lr / (1 - b1^step), sqrt(1 - b2^step)) as float32, from float64."""
    step = _check_step(step)
    step_size, bias_correction2_sqrt = adam_bias_corrections(float(lr), float(beta1),
                                                             float(beta2), step)
    # Numba returns float32 as Python floats: exact, re-typed float32 for the kernel's signature
    return _step_free_scalars(beta1, beta2, eps) + (np.float32(step_size),
                                                     np.float32(bias_correction2_sqrt))


def _step_free_scalars(beta1, beta2, eps):
    return np.float32(1.0 - float(beta1)), np.float32(1.0 - float(beta2)), np.float32(eps)


def _prepare(param, grad, m, v, lr, beta1, beta2, eps, step, device=False):
    """Flat views of the four arrays (all param's shape, float32, C-contiguous), the step array
    (None for an int step) and the scalars: adam_scalars(...) for an int step, else
    (1 - b1, 1 - b2, eps) as float32 and (lr, b1, b2) as float64 for the kernel to finish."""
    shape = tuple(param.shape)
    for name, array in (("param", param), ("grad", grad), ("m", m), ("v", v)):
        _check(name, array, shape)
    flats = [flat_view(array) for array in (param, grad, m, v)]
    steps = scalar_array("step", step, np.int64, device)
    if steps is None:
        return flats, None, adam_scalars(lr, beta1, beta2, eps, step)
    return flats, steps, _step_free_scalars(beta1, beta2, eps) + (
        np.float64(lr), np.float64(beta1), np.float64(beta2))


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


@numba.njit(error_model="numpy")
def adam_update_step_array_flat(param, grad, m, v, one_minus_beta1, one_minus_beta2, eps, lr,
                                beta1, beta2, step):
    """adam_update_flat with the bias corrections made from step[0] (1-element int64)."""
    step_size, bias_correction2_sqrt = adam_bias_corrections(lr, beta1, beta2, step[0])
    adam_update_flat(param, grad, m, v, one_minus_beta1, one_minus_beta2, eps, step_size,
                     bias_correction2_sqrt)


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step):
    """One Adam step (1-based `step`: an int or a 1-element int64 NumPy array) on float32 NumPy
    arrays of any one shape, in place."""
    flats, steps, scalars = _prepare(param, grad, m, v, lr, beta1, beta2, eps, step)
    if steps is None:
        adam_update_flat(*flats, *scalars)
    else:
        _check_step(steps[0])  # host memory here: checked like an int
        adam_update_step_array_flat(*flats, *scalars, steps)


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


@cuda.jit
def adam_step_array_kernel(param, grad, m, v, one_minus_beta1, one_minus_beta2, eps, lr, beta1,
                           beta2, step):
    """adam_kernel with the bias corrections made from step[0] at run time: once per block, by
    thread 0 into shared memory (two float64 pows per thread would cost as much as the update)."""
    corrections = cuda.shared.array(2, numba.float32)
    if cuda.threadIdx.x == 0:
        corrections[0], corrections[1] = adam_bias_corrections(lr, beta1, beta2, step[0])
    cuda.syncthreads()
    i = cuda.grid(1)
    if i < param.size:
        param[i], m[i], v[i] = adam_element(param[i], grad[i], m[i], v[i], one_minus_beta1,
                                            one_minus_beta2, eps, corrections[0], corrections[1])


_VEC = types.float32[::1]

CUDA_KERNELS = [
    (adam_kernel, [(_VEC, _VEC, _VEC, _VEC) + (types.float32,) * 5]),
    (adam_step_array_kernel, [(_VEC, _VEC, _VEC, _VEC) + (types.float32,) * 3
                              + (types.float64,) * 3 + (types.int64[::1],)]),
]


def adam_update_cuda(param, grad, m, v, lr, beta1, beta2, eps, step, stream=None):
    """CUDA twin of adam_update: float32 CuPy/Numba device arrays (NumPy under the simulator);
    `step` an int or a 1-element int64 device array read by the kernel (its value is not
    checked: no host sync). Launched on `stream`, else CuPy's current stream. Does not
    synchronise."""
    flats, steps, scalars = _prepare(param, grad, m, v, lr, beta1, beta2, eps, step, device=True)
    if flats[0].size == 0:
        return
    blocks, threads = launch_1d(flats[0].size)
    stream = current_stream() if stream is None else stream
    arrays = [as_device_view(f) for f in flats]
    if steps is None:
        adam_kernel[blocks, threads, stream](*arrays, *scalars)
    else:
        adam_step_array_kernel[blocks, threads, stream](*arrays, *scalars, as_device_view(steps))
