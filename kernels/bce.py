"""Bernoulli decoder loss: BCE-with-logits row sums and their gradient, and softplus row sums.

  bce_rows(out (R,D), bias (D,), x (B,D), samples_per_target M, grad_scale, loss (R,), grad (R,D))
      row r, target b = r // M, logit o = out[r, d] + bias[d] (one float32 add):
                                 loss[r] = sum_d softplus(o) - x o
                                 grad[r, d] = (sigmoid(o) - x) * grad_scale
      `out` is the decoder's output without its bias, and is not modified unless `grad` is `out`
      itself (then it is overwritten with the gradient, each element read before it is written).
  softplus_row_sums(out (C,D), bias (D,), sums (C,))
      sums[c] = sum_d softplus(out[c, d] + bias[d])   (the x-free part of a candidate's loss)

  softplus, sigmoid, bce_linear_term, bce_grad, bce_term_and_grad
                                         scalar bodies, shared by every target, on
                                         exp_neg_abs / log1p_unit (kernels/fastmath_f32.py)
  sum_f64                                CPU: float64 sum of a float32 vector (vectorised)
  softplus_row_sum                       CPU @njit: one row's softplus sum, as float32 (shared
                                         with kernels/candidates.py's fused losses, so their
                                         sums are bit-identical to softplus_row_sums')
  softplus_row_partial                   CUDA device function: a thread's float32 partial sum
                                         of one row (shared with kernels/candidates.py)
  bce_rows_njit / softplus_row_sums_njit CPU @njit loops over the rows (callable from @njit code)
  bce_rows / softplus_row_sums           CPU twins: the launchers' arguments, checked
  bce_rows_kernel / softplus_row_sums_kernel   CUDA: one block per row, threads stride over D,
                                               then a shared-memory tree sum (kernels/_reduce.py)
  bce_rows_cuda / softplus_row_sums_cuda       launchers, (..., stream=None): see kernels/_cuda.py

Stability: with e = exp(-|o|) in [0, 1], softplus(o) = max(o, 0) + log1p(e), and sigmoid(o) and
sigmoid(-o) are 1/(1+e) and e/(1+e) in some order: nothing overflows for any finite o. The
gradient is written ((1 - x) n(o) - x n(-o)) / (1 + e) with n(o) = (1 + e) sigmoid(o), 1 or e,
equal to sigmoid(o) - x, so that for a binary pixel it is one correctly rounded division of exact
operands with no cancellation (x = 1, o = 80 gives -1.8e-35, not 0 or 6e-8), and the loss term
max(o, 0) - x o is exact for a binary x. Below 2^-126 (|o| > 87.34) e is 0, not subnormal:
softplus(-100) and sigmoid(-100) are 0 (truth 3.7e-44).

Accuracy (float32 in, float64 truth, every 1e-4 of o in [-100, 100], tests/test_bce.py): softplus
and the loss term within 2.72 ulp (libm's log1pf gave 1.46), sigmoid and the gradient (binary x)
within 2.25 ulp (as with libm). Speed: exp_neg_abs and log1p_unit are branch-free float32
arithmetic that LLVM vectorises (8 lanes: on AVX-512 LLVM still prefers 256-bit vectors), where
expf and log1pf were scalar library calls: ~1-1.5 ns per element instead of ~6-11, on one core of
a 2.3 GHz Xeon (softplus_row_sums (4096, 784) 22 -> 5 ms, bce_rows (100, 784) 0.9 -> 0.15 ms).
The price is ~0.6 s more JIT compilation at the first call.

Accumulation: the GPU sums a few terms per thread in float32 and then pairwise in the block's
tree: ~1e-6 relative. The CPU twin stores a row's terms in a float32 scratch vector and sums it
in float64 (sum_f64; a serial float32 sum of D = 784 terms of one sign could drift by ~D/2 ulp,
~5e-5 relative): row sums at D = 784 are within 6e-8 relative of float64 truth, i.e. the final
rounding to float32. No prange: on the 2-core VM measured, waking the OpenMP worker cost 2-8 ms
per call after an idle spell, and alternating with OpenBLAS's matmuls (the candidate loop) the
parallel version was no faster overall; a single core is predictable.
"""
import numba
import numpy as np
from numba import types

from ._compile import CACHE
from ._cuda import as_device_view, cuda, current_stream
from ._checks import check_array, check_shape
from ._reduce import block_sum
from .fastmath_f32 import exp_neg_abs, log1p_unit

THREADS = 128  # threads per row: D = 784 is 6.1 passes; a power of two for the tree sum

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)

# ---------------------------------------------------------------------------------------------
# Scalar bodies (float32 in, float32 out). exp and log1p are kernels/fastmath_f32.py's branch-free
# float32 bodies, not libm's: the CPU loops vectorise, and the GPU computes the same formulas.


@numba.njit(inline="always")
def softplus(o):
    """log(1 + exp(o)) = max(o, 0) + log1p(exp(-|o|)), for any finite float32 o."""
    return max(o, _ZERO) + log1p_unit(exp_neg_abs(o))


@numba.njit(inline="always")
def sigmoid(o):
    """1 / (1 + exp(-o)), for any finite float32 o without overflow: one rounded division of
    1 (o >= 0) or e (o < 0) by 1 + e."""
    e = exp_neg_abs(o)
    return (_ONE if o >= _ZERO else e) / (_ONE + e)


@numba.njit(inline="always")
def bce_linear_term(o, x):
    """softplus(o) - x o - log1p(exp(-|o|)) = max(o, 0) - x o: exact for a binary x."""
    return max(o, _ZERO) - x * o


@numba.njit(inline="always")
def bce_grad(o, x, e):
    """sigmoid(o) - x, given e = exp(-|o|), as ((1 - x) n(o) - x n(-o)) / (1 + e) where
    n(o) = (1 + e) sigmoid(o) is 1 or e: for a binary x the numerator is exact and the result
    one rounded division. Selects, not branches: a logit's sign is a coin flip."""
    pos = o >= _ZERO
    num_pos = _ONE if pos else e  # (1 + e) sigmoid(o)
    num_neg = e if pos else _ONE  # (1 + e) sigmoid(-o)
    return ((_ONE - x) * num_pos - x * num_neg) / (_ONE + e)


@numba.njit(inline="always")
def bce_term_and_grad(o, x):
    """(softplus(o) - x o, sigmoid(o) - x) for logit o and target x, from one exp."""
    e = exp_neg_abs(o)
    return bce_linear_term(o, x) + log1p_unit(e), bce_grad(o, x, e)


# ---------------------------------------------------------------------------------------------
# Argument checks, shared by the CPU twins and the launchers (NumPy, CuPy or Numba device arrays)


def _check_array(name, array, ndim):
    check_array(name, array, np.float32, ndim=ndim)


_check_shape = check_shape


def _check_bce_rows(out, bias, x, samples_per_target, loss, grad):
    """(R, M) after checking the arguments of bce_rows."""
    for name, array, ndim in (("out", out, 2), ("bias", bias, 1), ("x", x, 2), ("loss", loss, 1),
                              ("grad", grad, 2)):
        _check_array(name, array, ndim)
    rows, pixels = out.shape
    _check_shape("bias", bias, (pixels,))
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
# CPU twins. Per row, two loops: an element loop with no reduction and no stores that can alias
# its inputs (the terms, and bce_rows' gradients, go to small scratch vectors), which LLVM
# vectorises with nothing but 'contract' (FMA); then sum_f64 adds the terms in float64 with
# 'reassoc', the only function allowed to re-associate. 'reassoc' on the element loop could let
# LLVM undo the Cody-Waite split in exp_neg_abs; gradients written straight into `grad` would fail
# LLVM's run-time alias check when grad is out (in place) and run the scalar loop, 10x slower.
# error_model='numpy': no zero-divisor branch in the divisions.

_ELEMENT_FLAGS = {"contract"}  # fused multiply-add only


@numba.njit(cache=CACHE, fastmath={"reassoc", "nsz"}, error_model="numpy")
def sum_f64(terms):
    """The float64 sum of a float32 vector, re-associated into vector lanes."""
    total = 0.0
    for i in range(terms.size):
        total += np.float64(terms[i])
    return total


@numba.njit(cache=CACHE, fastmath=_ELEMENT_FLAGS, error_model="numpy")
def bce_rows_njit(out, bias, x, samples_per_target, grad_scale, loss, grad):
    """The loop of bce_rows on 2-D C-contiguous float32 arrays (grad may be out)."""
    rows, pixels = out.shape
    terms = np.empty(pixels, np.float32)
    grads = np.empty(pixels, np.float32)
    for r in range(rows):
        o_row = out[r]
        x_row = x[r // samples_per_target]
        for d in range(pixels):
            term, g = bce_term_and_grad(o_row[d] + bias[d], x_row[d])
            terms[d] = term
            grads[d] = g * grad_scale
        g_row = grad[r]
        for d in range(pixels):
            g_row[d] = grads[d]
        loss[r] = sum_f64(terms)


@numba.njit(cache=CACHE, fastmath=_ELEMENT_FLAGS, error_model="numpy")
def softplus_row_sum(o_row, bias, terms):
    """sum_d softplus(o_row[d] + bias[d]) in float64, rounded to float32; `terms` a float32
    scratch vector of the row's length. The one place a row's softplus sum is computed on the
    CPU, so every op that needs one gets the same bits."""
    for d in range(o_row.size):
        terms[d] = softplus(o_row[d] + bias[d])
    return np.float32(sum_f64(terms))


@numba.njit(cache=CACHE, fastmath=_ELEMENT_FLAGS, error_model="numpy")
def softplus_row_sums_njit(out, bias, sums):
    """The loop of softplus_row_sums on C-contiguous float32 arrays."""
    terms = np.empty(out.shape[1], np.float32)
    for c in range(out.shape[0]):
        sums[c] = softplus_row_sum(out[c], bias, terms)


def bce_rows(out, bias, x, samples_per_target, grad_scale, loss, grad):
    """CPU twin of bce_rows_cuda on NumPy float32 arrays (see the module docstring)."""
    _, samples = _check_bce_rows(out, bias, x, samples_per_target, loss, grad)
    bce_rows_njit(out, bias, x, np.int64(samples), np.float32(grad_scale), loss, grad)


def softplus_row_sums(out, bias, sums):
    """CPU twin of softplus_row_sums_cuda on NumPy float32 arrays (see the module docstring)."""
    _check_softplus_row_sums(out, bias, sums)
    softplus_row_sums_njit(out, bias, sums)


# ---------------------------------------------------------------------------------------------
# CUDA twins: block r owns row r; thread t takes pixels t, t + THREADS, ... (coalesced), keeps a
# float32 partial sum, and the block's tree sum gives the row total. Every thread reaches
# block_sum (no early return): the grid is exactly one block per row.


@cuda.jit(device=True, inline="always")
def softplus_row_partial(out, bias, c):
    """Thread t's float32 partial sum of softplus(out[c, d] + bias[d]) over d = t, t + THREADS,
    ... (coalesced); block_sum of the partials is row c's sum."""
    partial = _ZERO
    for d in range(cuda.threadIdx.x, out.shape[1], THREADS):
        partial += softplus(out[c, d] + bias[d])
    return partial


@cuda.jit
def bce_rows_kernel(out, bias, x, samples_per_target, grad_scale, loss, grad):
    """Row r = blockIdx.x of bce_rows."""
    r = cuda.blockIdx.x
    t = cuda.threadIdx.x
    b = r // samples_per_target
    partial = _ZERO
    for d in range(t, out.shape[1], THREADS):
        term, g = bce_term_and_grad(out[r, d] + bias[d], x[b, d])
        partial += term
        grad[r, d] = g * grad_scale
    total = block_sum(cuda.shared.array(THREADS, numba.float32), partial)
    if t == 0:
        loss[r] = total


@cuda.jit
def softplus_row_sums_kernel(out, bias, sums):
    """Row c = blockIdx.x of softplus_row_sums."""
    c = cuda.blockIdx.x
    total = block_sum(cuda.shared.array(THREADS, numba.float32), softplus_row_partial(out, bias, c))
    if cuda.threadIdx.x == 0:
        sums[c] = total


_F32_ROWS = types.float32[:, ::1]
_F32_VEC = types.float32[::1]

CUDA_KERNELS = [
    (bce_rows_kernel, [(_F32_ROWS, _F32_VEC, _F32_ROWS, types.int32, types.float32, _F32_VEC,
                        _F32_ROWS)]),
    (softplus_row_sums_kernel, [(_F32_ROWS, _F32_VEC, _F32_VEC)]),
]


def bce_rows_cuda(out, bias, x, samples_per_target, grad_scale, loss, grad, stream=None):
    """CUDA twin of bce_rows: float32 CuPy/Numba device arrays (NumPy under the simulator);
    launched on `stream`, else CuPy's current stream. Does not synchronise."""
    rows, samples = _check_bce_rows(out, bias, x, samples_per_target, loss, grad)
    if rows == 0:
        return
    stream = current_stream() if stream is None else stream
    bce_rows_kernel[rows, THREADS, stream](
        as_device_view(out), as_device_view(bias), as_device_view(x), np.int32(samples),
        np.float32(grad_scale), as_device_view(loss), as_device_view(grad))


def softplus_row_sums_cuda(out, bias, sums, stream=None):
    """CUDA twin of softplus_row_sums: float32 CuPy/Numba device arrays (NumPy under the
    simulator); launched on `stream`, else CuPy's current stream. Does not synchronise."""
    rows = _check_softplus_row_sums(out, bias, sums)
    if rows == 0:
        return
    stream = current_stream() if stream is None else stream
    softplus_row_sums_kernel[rows, THREADS, stream](
        as_device_view(out), as_device_view(bias), as_device_view(sums))
