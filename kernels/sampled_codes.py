"""N = 1: the decoder loss and its gradient at the sampled codes, from the K codes' decoder.

With one latent variable every sampled code is one of the K codes, which the direct estimator
decodes anyway for its candidate losses (kernels/candidates.py's code_losses). So the decoder
never runs on the R = B*M sampled rows: the loss of row r is read from the candidate losses, and
dL/d(logits) summed over the rows that sampled code k is a (K, D) array, after which the
decoder's backward products have K rows instead of R (DESIGN.md, "Where the time goes").

  sampled_code_losses(losses (R,K), codes (R,1) int32, sampled (R,))
      sampled[r] = losses[r, codes[r, 0]]
  sampled_code_grads(code_out (K,D), bias (D,), x (B,D), codes (R,1) int32, M, grad_scale,
                     grad (K,D))
      grad[k, d] = grad_scale * sum over rows r with codes[r, 0] = k of (sigmoid(o) - x[r // M, d]),
      o = code_out[k, d] + bias[d] (one float32 add, as bce_rows makes its logits)

The sum is formed from c_k (how many rows sampled k) and s_kd = sum of their x[., d] as
(c_k - s_kd) * g0 + s_kd * g1, with g0 = sigmoid(o) - 0 and g1 = sigmoid(o) - 1 from
bce.bce_grad (one exp for both): algebraically sum_r (sigmoid(o) - x_r) for any x, and for binary
x (every training target) c_k - s_kd and s_kd are exact integers and g1 keeps its tiny values
(x = 1, o = 80: -1.8e-35, not 0), as bce_rows' per-row gradient does. Rounding differs from
summing bce_rows' R per-row gradients in a product (the former path): ~1e-7 relative.

  sampled_code_losses_loop, sampled_code_grads_loop   CPU @njit loops (the latter also checks
                          each code is in [0, K); the CUDA kernels cannot without a sync, so a
                          code outside it is skipped there by the row-loss kernel and ignored
                          by the gradient kernel)
  sampled_code_losses, sampled_code_grads             CPU twins: the launchers' arguments, checked
  sampled_code_losses_kernel   CUDA, one thread per row
  sampled_code_grads_kernel    CUDA, one thread per (k, d): it scans the R codes (R = B*M is a
                               few hundred; every thread reads the same codes, and x coalesced)
  <op>_cuda                    launchers, (..., stream=None): see kernels/_cuda.py
"""
import math

import numba
import numpy as np
from numba import types

from ._checks import check_array
from ._compile import CACHE
from ._cuda import as_device_view, cuda, current_stream, launch_1d
from .bce import bce_grad
from .fastmath_f32 import exp_neg_abs

__all__ = ["sampled_code_losses", "sampled_code_losses_cuda", "sampled_code_grads",
           "sampled_code_grads_cuda", "CUDA_KERNELS"]

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)


# ---------------------------------------------------------------------------------------------
# Argument checks (shape, dtype and flags only: no device sync)

def _check_codes(codes, rows):
    check_array("codes", codes, np.int32, ndim=2)
    if tuple(codes.shape) != (rows, 1):
        raise ValueError(f"codes must have shape ({rows}, 1) (one latent variable), "
                         f"got {tuple(codes.shape)}")


def _check_losses(losses, codes, sampled):
    check_array("losses", losses, np.float32, ndim=2)
    rows = losses.shape[0]
    _check_codes(codes, rows)
    check_array("sampled", sampled, np.float32, shape=(rows,))


def _check_grads(code_out, bias, x, codes, M, grad_scale, grad):
    """M as int32 and grad_scale as float32 after checking sampled_code_grads' arguments."""
    check_array("code_out", code_out, np.float32, ndim=2)
    K, D = code_out.shape
    check_array("bias", bias, np.float32, shape=(D,))
    check_array("x", x, np.float32, ndim=2)
    if x.shape[1] != D:
        raise ValueError(f"x must have code_out's {D} pixels per row, got shape {tuple(x.shape)}")
    if int(M) != M or M < 1:
        raise ValueError(f"M must be an integer >= 1, got {M!r}")
    _check_codes(codes, x.shape[0] * int(M))
    check_array("grad", grad, np.float32, shape=(K, D))
    if not math.isfinite(grad_scale):
        raise ValueError(f"grad_scale must be finite, got {grad_scale!r}")
    return np.int32(M), np.float32(grad_scale)


# ---------------------------------------------------------------------------------------------
# Shared body

@numba.njit(inline="always")
def summed_grad(o, count, x_sum, grad_scale):
    """grad_scale * ((count - x_sum) (sigmoid(o) - 0) + x_sum (sigmoid(o) - 1)), one exp."""
    e = exp_neg_abs(o)
    return ((count - x_sum) * bce_grad(o, _ZERO, e) + x_sum * bce_grad(o, _ONE, e)) * grad_scale


# ---------------------------------------------------------------------------------------------
# CPU twins

@numba.njit(cache=CACHE)
def sampled_code_losses_loop(losses, codes, sampled):
    K = losses.shape[1]
    for r in range(losses.shape[0]):
        k = codes[r, 0]
        if k < 0 or k >= K:
            raise IndexError("sampled_code_losses: a code outside [0, K)")
        sampled[r] = losses[r, k]


def sampled_code_losses(losses, codes, sampled):
    """sampled[r] = losses[r, codes[r, 0]] (N = 1); NumPy arrays."""
    _check_losses(losses, codes, sampled)
    sampled_code_losses_loop(losses, codes, sampled)


@numba.njit(cache=CACHE, fastmath={"contract"}, error_model="numpy")
def sampled_code_grads_loop(code_out, bias, x, codes, M, grad_scale, grad):
    """grad first holds s_kd (the rows' x summed per code, in row order), then the gradient."""
    K, D = code_out.shape
    counts = np.zeros(K, np.float32)
    grad[...] = 0.0
    for r in range(codes.shape[0]):
        k = codes[r, 0]
        if k < 0 or k >= K:
            raise IndexError("sampled_code_grads: a code outside [0, K)")
        counts[k] += _ONE
        x_row, g_row = x[r // M], grad[k]
        for d in range(D):
            g_row[d] += x_row[d]
    for k in range(K):
        g_row, o_row = grad[k], code_out[k]
        for d in range(D):
            g_row[d] = summed_grad(o_row[d] + bias[d], counts[k], g_row[d], grad_scale)


def sampled_code_grads(code_out, bias, x, codes, M, grad_scale, grad):
    """grad (K, D) = grad_scale * dL/d(logits) of the K codes, summed over the rows that sampled
    each (see the module docstring); NumPy float32 arrays."""
    M, grad_scale = _check_grads(code_out, bias, x, codes, M, grad_scale, grad)
    sampled_code_grads_loop(code_out, bias, x, codes, M, grad_scale, grad)


# ---------------------------------------------------------------------------------------------
# CUDA twins

@cuda.jit
def sampled_code_losses_kernel(losses, codes, sampled):
    r = cuda.grid(1)
    if r < sampled.size:
        k = codes[r, 0]
        if k >= 0 and k < losses.shape[1]:
            sampled[r] = losses[r, k]


@cuda.jit
def sampled_code_grads_kernel(code_out, bias, x, codes, M, grad_scale, grad):
    """Thread (k, d): c_k and s_kd from a scan of the codes (rows in order), then the gradient."""
    i = cuda.grid(1)
    D = code_out.shape[1]
    if i < grad.size:
        k = i // D
        d = i - k * D
        count = _ZERO
        x_sum = _ZERO
        for r in range(codes.shape[0]):
            if codes[r, 0] == k:
                count += _ONE
                x_sum += x[r // M, d]
        grad[k, d] = summed_grad(code_out[k, d] + bias[d], count, x_sum, grad_scale)


_F32 = types.float32[:, ::1]
_I32 = types.int32[:, ::1]
CUDA_KERNELS = [
    (sampled_code_losses_kernel, [(_F32, _I32, types.float32[::1])]),
    (sampled_code_grads_kernel, [(_F32, types.float32[::1], _F32, _I32, types.int32,
                                  types.float32, _F32)]),
]


def sampled_code_losses_cuda(losses, codes, sampled, stream=None):
    """CUDA twin of sampled_code_losses on CuPy/Numba device arrays (NumPy under the simulator);
    launched on `stream`, else CuPy's current stream. Does not synchronise."""
    _check_losses(losses, codes, sampled)
    if sampled.size == 0:
        return
    blocks, threads = launch_1d(sampled.size)
    stream = current_stream() if stream is None else stream
    sampled_code_losses_kernel[blocks, threads, stream](
        as_device_view(losses), as_device_view(codes), as_device_view(sampled))


def sampled_code_grads_cuda(code_out, bias, x, codes, M, grad_scale, grad, stream=None):
    """CUDA twin of sampled_code_grads on CuPy/Numba device arrays (NumPy under the simulator);
    launched on `stream`, else CuPy's current stream. Does not synchronise."""
    M, grad_scale = _check_grads(code_out, bias, x, codes, M, grad_scale, grad)
    if grad.size == 0:
        return
    blocks, threads = launch_1d(grad.size)
    stream = current_stream() if stream is None else stream
    sampled_code_grads_kernel[blocks, threads, stream](
        as_device_view(code_out), as_device_view(bias), as_device_view(x), as_device_view(codes),
        M, grad_scale, as_device_view(grad))
