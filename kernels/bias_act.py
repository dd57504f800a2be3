"""A dense layer's bias and ReLU: the bias add with optional ReLU (forward, in place), and the
ReLU mask with the bias gradient (backward).

  bias_act(a (R,C), bias (C,), relu)
      a += bias; if relu: a = max(a, 0)                                (in place)
  relu_backward(grad (R,C), act (R,C), grad_bias (C,))
      grad = 0 where act <= 0 (in place; act: the post-ReLU output, so act > 0 iff the
      pre-activation was > 0), and grad_bias[j] = sum_r grad[r, j] of the masked grad, rows added
      in order starting from row 0's value (0 for R = 0): on the CPU bit-identical to
      np.sum(grad, axis=0), which adds a C-contiguous (R, C > 1) float32 array row by row

  bias_act_element / relu_grad_element   scalar bodies shared by every target
  bias_act_rows / relu_backward_rows     CPU @njit loops over the rows (contiguous, vectorised)
  bias_act / relu_backward               CPU twins: the launchers' arguments, validated
  bias_act_kernel                        CUDA, one thread per element of the flat view
  relu_backward_kernel                   CUDA, one thread per column j: it masks column j and sums
                                         it over the rows in order (deterministic, no atomics;
                                         neighbouring threads read neighbouring columns)
  bias_act_cuda / relu_backward_cuda     launchers, (..., stream=None): see kernels/_cuda.py

Reference: reference.relu and decoder_backward's `* (pre > 0)` and its bias sums. The forward and
the mask are exact (one rounding of a + b; max and the mask are exact) and the column sums are
added in the same order on every target, so CPU, GPU and simulator agree bit for bit.
"""
import numba
import numpy as np
from numba import types

from ._compile import CACHE
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


def _check_relu_backward(grad, act, grad_bias):
    _check("grad", grad, "float32", 2)
    _check("act", act, "float32", 2)
    _check("grad_bias", grad_bias, "float32", 1)
    if tuple(act.shape) != tuple(grad.shape):
        raise ValueError("act must have grad's shape %s, got %s"
                         % (tuple(grad.shape), tuple(act.shape)))
    if tuple(grad_bias.shape) != (grad.shape[1],):
        raise ValueError("grad_bias must have shape (%d,) to match grad %s, got %s"
                         % (grad.shape[1], tuple(grad.shape), tuple(grad_bias.shape)))


# ---------------------------------------------------------------------------------------------
# CPU twins: row-major loops over contiguous memory, no allocation (both vectorise)


@numba.njit(cache=CACHE)
def bias_act_rows(a, bias, relu):
    """a[r, c] = bias_act_element(a[r, c], bias[c], relu) for 2-D `a` (R, C).
    2-D indexing, not a[r*C + c]: Numba cannot prove a computed flat index non-negative, and
    the wraparound check it then inserts stops LLVM from vectorising the loop (7x slower)."""
    rows, cols = a.shape
    for r in range(rows):
        for c in range(cols):
            a[r, c] = bias_act_element(a[r, c], bias[c], relu)


@numba.njit(cache=CACHE)
def relu_backward_rows(grad, act, grad_bias):
    """grad[r, c] = relu_grad_element(grad[r, c], act[r, c]), and grad_bias = the column sums of
    the masked grad: row 0 copied, then rows 1, 2, ... added (np.sum(axis=0)'s order)."""
    rows, cols = grad.shape
    if rows == 0:
        grad_bias[:] = _ZERO
    for r in range(rows):
        for c in range(cols):
            grad[r, c] = relu_grad_element(grad[r, c], act[r, c])
        if r == 0:
            for c in range(cols):
                grad_bias[c] = grad[0, c]
        else:
            for c in range(cols):
                grad_bias[c] += grad[r, c]


def bias_act(a, bias, relu):
    """In place on float32 NumPy `a` (R, C): a += bias (C,); if relu: a = max(a, 0)."""
    _check_bias_act(a, bias)
    bias_act_rows(a, bias, bool(relu))


def relu_backward(grad, act, grad_bias):
    """In place on float32 NumPy `grad` (R, C): grad = 0 where the ReLU output `act` <= 0; and
    grad_bias (C,) = the column sums of the masked grad, rows in order."""
    _check_relu_backward(grad, act, grad_bias)
    relu_backward_rows(grad, act, grad_bias)


# ---------------------------------------------------------------------------------------------
# CUDA twins: one thread per element of the flat view


@cuda.jit
def bias_act_kernel(a, bias, relu):
    """a[i] = bias_act_element(a[i], bias[i % C], relu), C = bias.size."""
    i = cuda.grid(1)
    if i < a.size:
        a[i] = bias_act_element(a[i], bias[i % bias.size], relu)


@cuda.jit
def relu_backward_kernel(grad, act, grad_bias):
    """Thread j masks column j of grad and sums it over the rows in order, from row 0's value."""
    j = cuda.grid(1)
    if j < grad.shape[1]:
        total = _ZERO
        for r in range(grad.shape[0]):
            # float32 on every target (under the simulator the body returns a Python float)
            g = np.float32(relu_grad_element(grad[r, j], act[r, j]))
            grad[r, j] = g
            total = g if r == 0 else total + g
        grad_bias[j] = total


_VEC = types.float32[::1]
_MAT = types.float32[:, ::1]

CUDA_KERNELS = [
    (bias_act_kernel, [(_VEC, _VEC, types.boolean)]),  # relu: a Python bool
    (relu_backward_kernel, [(_MAT, _MAT, _VEC)]),
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


def relu_backward_cuda(grad, act, grad_bias, stream=None):
    """CUDA twin of relu_backward: float32 CuPy/Numba device arrays (NumPy under the simulator);
    launched on `stream`, else CuPy's current stream. Does not synchronise. With R = 0 it still
    launches (grad_bias becomes 0); with C = 0 there is nothing to do."""
    _check_relu_backward(grad, act, grad_bias)
    cols = grad.shape[1]
    if cols == 0:
        return
    blocks, threads = launch_1d(cols)
    stream = current_stream() if stream is None else stream
    relu_backward_kernel[blocks, threads, stream](as_device_view(grad), as_device_view(act),
                                                  as_device_view(grad_bias))
