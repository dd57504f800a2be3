"""Bias add with optional ReLU (forward, in place) and the ReLU mask (backward, in place).

  bias_act(a (R,C), bias (C,), relu)   a += bias; if relu: a = max(a, 0)
  relu_backward(grad (R,C), act (R,C)) grad = 0 where act <= 0  (act: the post-ReLU output,
                                       so act > 0 iff the pre-activation was > 0)

  bias_act_element / relu_grad_element   scalar bodies shared by every target
  bias_act_rows / relu_backward_flat     CPU @njit loops: over (R, C) / over the flat views
  bias_act / relu_backward               CPU twins: the launchers' arguments, validated
  bias_act_kernel / relu_backward_kernel CUDA, one thread per element of the flat view
  bias_act_cuda / relu_backward_cuda     launchers (see kernels/_cuda.py for the pattern)

Reference: reference.relu and decoder_backward's `* (pre > 0)`. The float32 result is exact
(one rounding of a + b; max and the mask are exact), so every target agrees bit for bit.
"""
import numba
import numpy as np
from numba import types

from ._cuda import as_device_view, cuda, current_stream, flat_view, launch_1d
from ._checks import check_array

# ---------------------------------------------------------------------------------------------
# Scalar bodies (float32 in, float32 out)

_ZERO = np.float32(0.0)


@numba.njit(inline="always")
def bias_act_element(a, b, relu):
    """a + b, through a ReLU when `relu` (a bool)."""
    y = a + b
    if relu and y < 0:  # nan passes through, as in np.maximum
        y = _ZERO
    return y


@numba.njit(inline="always")
def relu_grad_element(g, act):
    """g where the ReLU output was positive, else 0."""
    return g if act > 0 else _ZERO


# ---------------------------------------------------------------------------------------------
# Validation (Python level, cheap: shapes and dtypes only, never values)


def _check(name, array, dtype, ndim):
    check_array(name, array, dtype, ndim=ndim)


def _check_bias_act(a, bias):
    _check("a", a, "float32", 2)
    _check("bias", bias, "float32", 1)
    if bias.shape[0] != a.shape[1]:
        raise ValueError("bias must have shape (%d,) to match a %s, got %s"
                         % (a.shape[1], tuple(a.shape), tuple(bias.shape)))


def _check_relu_backward(grad, act):
    _check("grad", grad, "float32", 2)
    _check("act", act, "float32", 2)
    if tuple(act.shape) != tuple(grad.shape):
        raise ValueError("act must have grad's shape %s, got %s"
                         % (tuple(grad.shape), tuple(act.shape)))


# ---------------------------------------------------------------------------------------------
# CPU twins: row-major loops over contiguous memory, no allocation (both vectorise)


@numba.njit
def bias_act_rows(a, bias, relu):
    """a[r, c] = bias_act_element(a[r, c], bias[c], relu) for 2-D `a` (R, C).
    2-D indexing, not a[r*C + c]: Numba cannot prove a computed flat index non-negative, and
    the wraparound check it then inserts stops LLVM from vectorising the loop (7x slower)."""
    rows, cols = a.shape
    for r in range(rows):
        for c in range(cols):
            a[r, c] = bias_act_element(a[r, c], bias[c], relu)


@numba.njit
def relu_backward_flat(grad, act):
    """grad[i] = relu_grad_element(grad[i], act[i]) over flat arrays of one size."""
    for i in range(grad.size):
        grad[i] = relu_grad_element(grad[i], act[i])


def bias_act(a, bias, relu):
    """In place on float32 NumPy `a` (R, C): a += bias (C,); if relu: a = max(a, 0)."""
    _check_bias_act(a, bias)
    bias_act_rows(a, bias, bool(relu))


def relu_backward(grad, act):
    """In place on float32 NumPy `grad` (R, C): grad = 0 where the ReLU output `act` <= 0."""
    _check_relu_backward(grad, act)
    relu_backward_flat(flat_view(grad), flat_view(act))


# ---------------------------------------------------------------------------------------------
# CUDA twins: one thread per element of the flat view


@cuda.jit
def bias_act_kernel(a, bias, relu):
    """a[i] = bias_act_element(a[i], bias[i % C], relu), C = bias.size."""
    i = cuda.grid(1)
    if i < a.size:
        a[i] = bias_act_element(a[i], bias[i % bias.size], relu)


@cuda.jit
def relu_backward_kernel(grad, act):
    """grad[i] = relu_grad_element(grad[i], act[i])."""
    i = cuda.grid(1)
    if i < grad.size:
        grad[i] = relu_grad_element(grad[i], act[i])


_VEC = types.float32[::1]

CUDA_KERNELS = [
    (bias_act_kernel, [(_VEC, _VEC, types.boolean)]),  # relu: a Python bool
    (relu_backward_kernel, [(_VEC, _VEC)]),
]


def bias_act_cuda(a, bias, relu, stream=None):
    """CUDA twin of bias_act: float32 CuPy/Numba device arrays (NumPy under the simulator);
    launched on `stream`, else CuPy's current stream. Does not synchronise."""
    _check_bias_act(a, bias)
    flat = flat_view(a)
    if flat.size == 0:
        return
    blocks, threads = launch_1d(flat.size)
    stream = current_stream() if stream is None else stream
    bias_act_kernel[blocks, threads, stream](as_device_view(flat), as_device_view(bias), bool(relu))


def relu_backward_cuda(grad, act, stream=None):
    """CUDA twin of relu_backward: float32 CuPy/Numba device arrays (NumPy under the simulator);
    launched on `stream`, else CuPy's current stream. Does not synchronise."""
    _check_relu_backward(grad, act)
    flat = flat_view(grad)
    if flat.size == 0:
        return
    blocks, threads = launch_1d(flat.size)
    stream = current_stream() if stream is None else stream
    relu_backward_kernel[blocks, threads, stream](as_device_view(flat),
                                                  as_device_view(flat_view(act)))
