"""Bernoulli decoder loss: BCE-with-logits row sums and their gradient, and softplus row sums.

  bce_rows(out (R,D), x (B,D), samples_per_target M, grad_scale, loss (R,), grad (R,D))
      row r, target b = r // M:  loss[r] = sum_d softplus(o) - x o
                                 grad[r, d] = (sigmoid(o) - x) * grad_scale     (o = out[r, d])
      `out` already includes the output bias; `grad` may be `out` itself (updated in place).
  softplus_row_sums(out (C,D), bias (D,), sums (C,))
      sums[c] = sum_d softplus(out[c, d] + bias[d])   (the x-free part of a candidate's loss)

  exp_neg_abs, softplus, sigmoid, bce_linear_term, bce_grad, bce_term_and_grad
                                         scalar bodies, shared by every target
  bce_rows_njit / softplus_row_sums_njit CPU @njit loops over the rows (callable from @njit code)
  bce_rows / softplus_row_sums           CPU twins: the launchers' arguments, checked
  bce_rows_kernel / softplus_row_sums_kernel   CUDA: one block per row, threads stride over D,
                                               then a shared-memory tree sum (kernels/_reduce.py)
  bce_rows_cuda / softplus_row_sums_cuda       launchers (see kernels/_cuda.py for the pattern)

Stability: with e = exp(-|o|) in (0, 1], softplus(o) = max(o, 0) + log1p(e), and sigmoid(o) and
sigmoid(-o) are 1/(1+e) and e/(1+e) in some order: nothing overflows for any finite o. The
gradient is written (1 - x) sigmoid(o) - x sigmoid(-o), equal to sigmoid(o) - x, so that for a
binary pixel it is one correctly rounded sigmoid with no cancellation (x = 1, o = 80 gives
-1.8e-35, not 0 or 6e-8), and the loss term max(o, 0) - x o is exact for a binary x.

Accumulation: the GPU computes each term in float32 (libdevice's log1pf), sums a few per thread
in float32 and then pairwise in the block's tree: ~1e-6 relative. The CPU twin sums a row in
float64 (a serial float32 sum of D = 784 terms of one sign could drift by ~D/2 ulp, ~5e-5
relative, and the float64 add is free next to the exp) and replaces the per-pixel log1p by one
log of a product (see "CPU twins" below): the same sums, 3-5x faster.
"""
import math

import numba
import numpy as np
from numba import types

from ._cuda import as_device_view, cuda, current_stream
from ._reduce import block_sum

THREADS = 128  # threads per row: D = 784 is 6.1 passes; a power of two for the tree sum

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)

# ---------------------------------------------------------------------------------------------
# Scalar bodies (float32 in, float32 out; the np.float32 casts keep the simulator, whose math
# functions return float64, on the same precision as the compiled targets)


@numba.njit(inline="always")
def exp_neg_abs(o):
    """exp(-|o|) in (0, 1]: the one transcendental that softplus and sigmoid share."""
    return np.float32(math.exp(-abs(o)))


@numba.njit(inline="always")
def softplus(o):
    """log(1 + exp(o)) = max(o, 0) + log1p(exp(-|o|)), for any finite float32 o."""
    return max(o, _ZERO) + np.float32(math.log1p(exp_neg_abs(o)))


@numba.njit(inline="always")
def sigmoid(o):
    """1 / (1 + exp(-o)), for any finite float32 o without overflow."""
    e = exp_neg_abs(o)
    if o >= _ZERO:
        return _ONE / (_ONE + e)
    return e / (_ONE + e)


@numba.njit(inline="always")
def bce_linear_term(o, x):
    """softplus(o) - x o - log1p(exp(-|o|)) = max(o, 0) - x o: exact for a binary x."""
    return max(o, _ZERO) - x * o


@numba.njit(inline="always")
def bce_grad(o, x, e):
    """sigmoid(o) - x, given e = exp(-|o|), as (1 - x) sigmoid(o) - x sigmoid(-o)."""
    inv = _ONE / (_ONE + e)
    # selects, not branches: a logit's sign is a coin flip to a branch predictor
    sig_pos = inv if o >= _ZERO else e * inv  # sigmoid(o)
    sig_neg = e * inv if o >= _ZERO else inv  # sigmoid(-o)
    return (_ONE - x) * sig_pos - x * sig_neg


@numba.njit(inline="always")
def bce_term_and_grad(o, x):
    """(softplus(o) - x o, sigmoid(o) - x) for logit o and target x, from one exp."""
    e = exp_neg_abs(o)
    return bce_linear_term(o, x) + np.float32(math.log1p(e)), bce_grad(o, x, e)


# ---------------------------------------------------------------------------------------------
# Argument checks, shared by the CPU twins and the launchers (NumPy, CuPy or Numba device arrays)


def _check_array(name, array, ndim):
    if getattr(array, "dtype", None) != np.float32:
        raise ValueError("%s must be float32, got %s" % (name, getattr(array, "dtype", type(array))))
    if array.ndim != ndim:
        raise ValueError("%s must be %d-D, got shape %s" % (name, ndim, tuple(array.shape)))
    if not array.flags["C_CONTIGUOUS"]:
        raise ValueError("%s must be C-contiguous, got strides %s" % (name, array.strides))


def _check_shape(name, array, shape):
    if tuple(array.shape) != shape:
        raise ValueError("%s must have shape %s, got %s" % (name, shape, tuple(array.shape)))


def _check_bce_rows(out, x, samples_per_target, loss, grad):
    """(R, M) after checking the arguments of bce_rows."""
    for name, array, ndim in (("out", out, 2), ("x", x, 2), ("loss", loss, 1), ("grad", grad, 2)):
        _check_array(name, array, ndim)
    rows, pixels = out.shape
    samples = int(samples_per_target)
    if samples < 1:
        raise ValueError("samples_per_target must be >= 1, got %r" % (samples_per_target,))
    if x.shape[1] != pixels:
        raise ValueError("x must have %d columns like out, got shape %s" % (pixels, tuple(x.shape)))
    if rows != x.shape[0] * samples:
        raise ValueError("out has %d rows; x has %d with samples_per_target %d: need R = B*M"
                         % (rows, x.shape[0], samples))
    _check_shape("loss", loss, (rows,))
    _check_shape("grad", grad, (rows, pixels))
    return rows, samples


def _check_softplus_row_sums(out, bias, sums):
    for name, array, ndim in (("out", out, 2), ("bias", bias, 1), ("sums", sums, 1)):
        _check_array(name, array, ndim)
    _check_shape("bias", bias, (out.shape[1],))
    _check_shape("sums", sums, (out.shape[0],))
    return out.shape[0]


# ---------------------------------------------------------------------------------------------
# CPU twins: one pass over contiguous rows, no allocation, float64 row sums (see the docstring).
# Speed trick: glibc's log1pf costs ~14 ns, three times expf or logf, and would dominate. Since
# sum_d log1p(e_d) = log(prod_d (1 + e_d)), the loop multiplies the factors 1 + e_d in (1, 2] in
# float64 and takes one log per LOG_EVERY pixels (2**1000 is far from overflow). Rounding: ~1e-16
# relative per factor, i.e. ~1e-16 absolute per pixel in the sum (a pixel's own softplus below
# 1e-16, e.g. o = -40, is lost: invisible in a row sum). Measured at R=1000, D=784 on one core:
# softplus_row_sums 19 -> 3.6 ms. In bce_rows the sigmoid uses selects, not branches: a logit's
# sign is a coin flip to the branch predictor (11.6 -> 5.7 ms).

LOG_EVERY = 1000


@numba.njit
def bce_rows_njit(out, x, samples_per_target, grad_scale, loss, grad):
    """The loop of bce_rows on 2-D C-contiguous float32 arrays."""
    rows, pixels = out.shape
    for r in range(rows):
        o_row = out[r]
        x_row = x[r // samples_per_target]
        g_row = grad[r]
        total = 0.0
        for start in range(0, pixels, LOG_EVERY):
            product = 1.0
            for d in range(start, min(start + LOG_EVERY, pixels)):
                o = o_row[d]
                x_d = x_row[d]
                e = exp_neg_abs(o)
                total += bce_linear_term(o, x_d)
                product *= 1.0 + e
                g_row[d] = bce_grad(o, x_d, e) * grad_scale
            total += math.log(product)
        loss[r] = total


@numba.njit
def softplus_row_sums_njit(out, bias, sums):
    """The loop of softplus_row_sums on C-contiguous float32 arrays."""
    rows, pixels = out.shape
    for c in range(rows):
        o_row = out[c]
        total = 0.0
        for start in range(0, pixels, LOG_EVERY):
            product = 1.0
            for d in range(start, min(start + LOG_EVERY, pixels)):
                o = o_row[d] + bias[d]
                total += max(o, _ZERO)
                product *= 1.0 + exp_neg_abs(o)
            total += math.log(product)
        sums[c] = total


def bce_rows(out, x, samples_per_target, grad_scale, loss, grad):
    """CPU twin of bce_rows_cuda on NumPy float32 arrays (see the module docstring)."""
    _, samples = _check_bce_rows(out, x, samples_per_target, loss, grad)
    bce_rows_njit(out, x, np.int64(samples), np.float32(grad_scale), loss, grad)


def softplus_row_sums(out, bias, sums):
    """CPU twin of softplus_row_sums_cuda on NumPy float32 arrays (see the module docstring)."""
    _check_softplus_row_sums(out, bias, sums)
    softplus_row_sums_njit(out, bias, sums)


# ---------------------------------------------------------------------------------------------
# CUDA twins: block r owns row r; thread t takes pixels t, t + THREADS, ... (coalesced), keeps a
# float32 partial sum, and the block's tree sum gives the row total. Every thread reaches
# block_sum (no early return): the grid is exactly one block per row.


@cuda.jit
def bce_rows_kernel(out, x, samples_per_target, grad_scale, loss, grad):
    """Row r = blockIdx.x of bce_rows."""
    r = cuda.blockIdx.x
    t = cuda.threadIdx.x
    b = r // samples_per_target
    partial = _ZERO
    for d in range(t, out.shape[1], THREADS):
        term, g = bce_term_and_grad(out[r, d], x[b, d])
        partial += term
        grad[r, d] = g * grad_scale
    total = block_sum(cuda.shared.array(THREADS, numba.float32), partial)
    if t == 0:
        loss[r] = total


@cuda.jit
def softplus_row_sums_kernel(out, bias, sums):
    """Row c = blockIdx.x of softplus_row_sums."""
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    partial = _ZERO
    for d in range(t, out.shape[1], THREADS):
        partial += softplus(out[c, d] + bias[d])
    total = block_sum(cuda.shared.array(THREADS, numba.float32), partial)
    if t == 0:
        sums[c] = total


_F32_ROWS = types.float32[:, ::1]
_F32_VEC = types.float32[::1]

CUDA_KERNELS = [
    (bce_rows_kernel, [(_F32_ROWS, _F32_ROWS, types.int32, types.float32, _F32_VEC, _F32_ROWS)]),
    (softplus_row_sums_kernel, [(_F32_ROWS, _F32_VEC, _F32_VEC)]),
]


def bce_rows_cuda(out, x, samples_per_target, grad_scale, loss, grad, stream=None):
    """CUDA twin of bce_rows: float32 CuPy/Numba device arrays (NumPy under the simulator);
    launched on `stream`, else CuPy's current stream. Does not synchronise."""
    rows, samples = _check_bce_rows(out, x, samples_per_target, loss, grad)
    if rows == 0:
        return
    stream = current_stream() if stream is None else stream
    bce_rows_kernel[rows, THREADS, stream](
        as_device_view(out), as_device_view(x), np.int32(samples), np.float32(grad_scale),
        as_device_view(loss), as_device_view(grad))


def softplus_row_sums_cuda(out, bias, sums, stream=None):
    """CUDA twin of softplus_row_sums: float32 CuPy/Numba device arrays (NumPy under the
    simulator); launched on `stream`, else CuPy's current stream. Does not synchronise."""
    rows = _check_softplus_row_sums(out, bias, sums)
    if rows == 0:
        return
    stream = current_stream() if stream is None else stream
    softplus_row_sums_kernel[rows, THREADS, stream](
        as_device_view(out), as_device_view(bias), as_device_view(sums))
