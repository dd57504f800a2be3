"""Adam, PyTorch's formula, one element at a time, in place on float32 arrays of any shape.

  adam_update(param, grad, m, v, lr, beta1, beta2, eps, step)

  m = b1 m + (1 - b1) g      written as a lerp, as PyTorch does: m += (1 - b1) (g - m)
  v = b2 v + (1 - b2) g^2    the same form (PyTorch: v * b2 + (1 - b2) g^2): v += (1 - b2) (g^2 - v)
  p -= step_size * m / (sqrt(v) / bias_correction2_sqrt + eps)
  with step_size = lr / (1 - b1^t), bias_correction2_sqrt = sqrt(1 - b2^t), t = step[0]

`step` is a 1-element 1-D int64 array holding the 1-based step t (NumPy for the CPU twin and the
simulator, a CuPy/Numba device array on the GPU), read at run time so that a CUDA graph can replay
the update while the count moves (kernels/step_end.py's finish_step advances it). The two bias
corrections come from step[0] through one scalar body (adam_bias_corrections: float64 pow, then
float32): in the CPU twin's @njit code (which also checks step[0] >= 1), and on the GPU once per
block, by thread 0 into shared memory. On a GPU, libdevice's float64 pow (and NVVM's contraction
of 1 - pow) may differ from the host libm's in the last float64 bit, which reaches the float32
corrections only in rare rounding ties. The launcher cannot check step[0] (no sync); 0 would
divide by zero. The host computes 1 - b1 and 1 - b2 in float64 and passes them as float32
(float32(1 - 0.999) is good to an ulp; 1 - float32(0.999) is off by 1e-5 relative). Every array
is used through its flat view, so one launch covers any parameter shape.

  adam_element           scalar body: new (p, m, v) from (p, g, m, v), four float32 scalars and
                         the float64 inverse of bias_correction2_sqrt
  adam_bias_corrections  scalar body: (lr / (1 - b1^t), sqrt(1 - b2^t)) as float32
  inverse_correction     scalar body: 1 / bias_correction2_sqrt in float64
  adam_update_flat       CPU @njit loop over flat arrays, given the corrections
  adam_update_step_flat  CPU @njit: the corrections from step[0], then adam_update_flat
  adam_update            CPU twin: the launcher's arguments, validated, scalars prepared
  adam_kernel            CUDA, one thread per element
  adam_update_cuda       launcher, (..., stream=None): see kernels/_cuda.py

The division by bias_correction2_sqrt (c) is a multiply: float32(float64(s) * (1 / float64(c)))
with s = sqrt(v), which is s / c rounded to float32 exactly, for every float32 s and every
normal c (one divider pass fewer per element: Adam 0.41 -> 0.35 ms over the default model's
478k parameters on one core). Why: the float64 product is s / c within a relative 2^-52 (two
float64 roundings). The float32 result could differ only if a float32 rounding boundary (a
midpoint m = M 2^k, M odd, 2^24 <= M < 2^25) lay within that distance of s / c. With
s = S 2^a and c = C 2^b (S, C < 2^24 integers), m c - s is a nonzero multiple of
2^min(k+b, a) (nonzero: a quotient of two 24-bit significands is never a midpoint, the odd part
of M C having more bits than S has), so |m - s/c| >= 2^min(k+b, a) / c, which is more than
2^-49 |s/c| whichever exponent is smaller. tests/test_adam.py checks every float32 significand
against the float32 division for many c.

Reference: reference.adam_step. CPU and GPU may differ by an ulp (NVVM fuses multiply-adds).
"""
import functools
import math

import numba
import numpy as np
from numba import types

from ._compile import CACHE
from ._checks import check_scalar_array
from ._cuda import as_device_view, cuda, current_stream, flat_view, launch_1d

# ---------------------------------------------------------------------------------------------
# Scalar body (float32 in, float32 out)

_SMALLEST_NORMAL = np.float32(np.finfo(np.float32).tiny)


@numba.njit(inline="always")
def adam_element(p, g, m, v, one_minus_beta1, one_minus_beta2, eps, step_size,
                 inverse_correction2):
    """One Adam step of one element: returns the new (p, m, v). inverse_correction2 is
    1 / bias_correction2_sqrt in float64 (inverse_correction): the product below is
    sqrt(v) / bias_correction2_sqrt rounded to float32, exactly (module docstring).

    m and v below the smallest normal float32 are flushed to 0: a parameter whose gradient stays
    0 sees its moments decay geometrically into subnormals, which x86 handles ~100x slower (a
    training run slowed down 1.5x by epoch 3 before this). Their effect on p is < 1e-30."""
    m = m + one_minus_beta1 * (g - m)
    v = v + one_minus_beta2 * (g * g - v)  # >= 0: v - (1 - b2) v >= 0 exactly, then + (1 - b2) g^2
    m = m if abs(m) >= _SMALLEST_NORMAL else np.float32(0.0)
    v = v if v >= _SMALLEST_NORMAL else np.float32(0.0)
    denom = np.float32(np.float64(math.sqrt(v)) * inverse_correction2) + eps
    return p - step_size * (m / denom), m, v


@numba.njit(inline="always")
def inverse_correction(bias_correction2_sqrt):
    """1 / bias_correction2_sqrt (a float32) in float64: adam_element's multiplier."""
    return np.float64(1.0) / np.float64(bias_correction2_sqrt)


@numba.njit(inline="always", error_model="numpy")
def adam_bias_corrections(lr, beta1, beta2, step):
    """(lr / (1 - beta1^step), sqrt(1 - beta2^step)) in float64, each rounded once to float32.
    lr, beta1, beta2 float64; step any integer. The power takes a float64 exponent (libm's pow on
    the CPU, as Python's float ** int; libdevice's on the GPU), not Numba's repeated squaring
    for an integer exponent."""
    t = np.float64(step)
    return (np.float32(lr / (1.0 - beta1 ** t)), np.float32(math.sqrt(1.0 - beta2 ** t)))


# ---------------------------------------------------------------------------------------------
# Host side: validation (shapes and dtypes only) and the step-free kernel scalars


def _check(name, array, shape):
    if array.dtype != "float32":
        raise ValueError("%s must be float32, got %s" % (name, array.dtype))
    if tuple(array.shape) != shape:
        raise ValueError("%s must have param's shape %s, got %s"
                         % (name, shape, tuple(array.shape)))
    if not array.flags["C_CONTIGUOUS"]:
        raise ValueError("%s must be C-contiguous, got strides %s" % (name, array.strides))


@functools.lru_cache(maxsize=16)  # the same four numbers every step: made once (3 us a step)
def _kernel_scalars(lr, beta1, beta2, eps):
    """(1 - b1, 1 - b2, eps) as float32, (lr, b1, b2) as float64: the kernel's scalars."""
    return (np.float32(1.0 - float(beta1)), np.float32(1.0 - float(beta2)), np.float32(eps),
            np.float64(lr), np.float64(beta1), np.float64(beta2))


def _prepare(param, grad, m, v, lr, beta1, beta2, eps, step, device=False):
    """Flat views of the four arrays (all param's shape, float32, C-contiguous) and the scalars
    the kernel takes besides them (_kernel_scalars)."""
    shape = tuple(param.shape)
    for name, array in (("param", param), ("grad", grad), ("m", m), ("v", v)):
        _check(name, array, shape)
    check_scalar_array("step", step, np.int64, device)
    flats = [flat_view(array) for array in (param, grad, m, v)]
    return flats, _kernel_scalars(lr, beta1, beta2, eps)


# ---------------------------------------------------------------------------------------------
# CPU twin


@numba.njit(cache=CACHE, error_model="numpy")  # a division raising ZeroDivisionError stops vectorisation (5x)
def adam_update_flat(param, grad, m, v, one_minus_beta1, one_minus_beta2, eps, step_size,
                     inverse_correction2):
    """adam_element over flat float32 arrays of one size, in place."""
    for i in range(param.size):
        param[i], m[i], v[i] = adam_element(param[i], grad[i], m[i], v[i], one_minus_beta1,
                                            one_minus_beta2, eps, step_size, inverse_correction2)


@numba.njit(cache=CACHE, error_model="numpy")
def adam_update_step_flat(param, grad, m, v, one_minus_beta1, one_minus_beta2, eps, lr, beta1,
                          beta2, step):
    """adam_update_flat with the bias corrections made from step[0] (1-element int64, >= 1)."""
    t = step[0]
    if t < 1:
        raise ValueError("step[0] must be >= 1 (Adam's steps count from 1)")
    step_size, bias_correction2_sqrt = adam_bias_corrections(lr, beta1, beta2, t)
    adam_update_flat(param, grad, m, v, one_minus_beta1, one_minus_beta2, eps, step_size,
                     inverse_correction(bias_correction2_sqrt))


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step):
    """One Adam step (the 1-based step in `step`, a 1-element int64 NumPy array) on float32 NumPy
    arrays of any one shape, in place."""
    flats, scalars = _prepare(param, grad, m, v, lr, beta1, beta2, eps, step)
    adam_update_step_flat(*flats, *scalars, step)


# ---------------------------------------------------------------------------------------------
# CUDA twin: one thread per element


@cuda.jit
def adam_kernel(param, grad, m, v, one_minus_beta1, one_minus_beta2, eps, lr, beta1, beta2, step):
    """Element i: (param, m, v)[i] = adam_element(...), with the bias corrections made from
    step[0] once per block, by thread 0 into shared memory (two float64 pows per thread would
    cost as much as the update): step_size (float32, exact in float64) and the inverse of
    bias_correction2_sqrt."""
    corrections = cuda.shared.array(2, numba.float64)
    if cuda.threadIdx.x == 0:
        step_size, bias_correction2_sqrt = adam_bias_corrections(lr, beta1, beta2, step[0])
        corrections[0] = step_size
        corrections[1] = inverse_correction(bias_correction2_sqrt)
    cuda.syncthreads()
    i = cuda.grid(1)
    if i < param.size:
        param[i], m[i], v[i] = adam_element(param[i], grad[i], m[i], v[i], one_minus_beta1,
                                            one_minus_beta2, eps, np.float32(corrections[0]),
                                            corrections[1])


_VEC = types.float32[::1]

CUDA_KERNELS = [
    (adam_kernel, [(_VEC, _VEC, _VEC, _VEC) + (types.float32,) * 3 + (types.float64,) * 3
                   + (types.int64[::1],)]),
]


def adam_update_cuda(param, grad, m, v, lr, beta1, beta2, eps, step, stream=None):
    """CUDA twin of adam_update: float32 CuPy/Numba device arrays (NumPy under the simulator);
    `step` a 1-element int64 device array read by the kernel (its value is not checked: no host
    sync). Launched on `stream`, else CuPy's current stream. Does not synchronise."""
    flats, scalars = _prepare(param, grad, m, v, lr, beta1, beta2, eps, step, device=True)
    if flats[0].size == 0:
        return
    blocks, threads = launch_1d(flats[0].size)
    stream = current_stream() if stream is None else stream
    adam_kernel[blocks, threads, stream](*[as_device_view(f) for f in flats], *scalars,
                                         as_device_view(step))
