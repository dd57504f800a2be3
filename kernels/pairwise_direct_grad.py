"""The direct gradient of the pairwise model in the encoder output (reference:
structured_direct_output_grad in dvae_cupy/reference.py).

  pairwise_direct_grad(enc_out, codes_base, codes_plus, eps, grad_scale, M, attractive,
                       two_sided, grad)
      OVERWRITES grad (B, 2N+P), the gradient in the encoder's last-layer output, with
      grad_scale * mean over b's M draws of (stat(codes_base) - stat(codes_plus)) / eps
      (two-sided: / (2 eps)), where
        stat = onehot(z)_i(k) in column 2i + k (the unaries),
               z_i z_j in column 2N + p(i, j) (the pairwise potentials), times
               softplus'(pre) = sigmoid(enc_out[b, 2N + p]) when `attractive`;
      codes_base is z_opt (one-sided) or z_dir(-eps) (two-sided), codes_plus is z_dir(+eps),
      all (R, N) int32 with row r = b*M + m. eps is a 1-element 1-D float32 array read by the
      kernel; grad_scale (e.g. 1/B) is a number.

Each output element sums its M draws in a fixed order (one CUDA thread each, no atomics; the CPU
loop row by row). Arithmetic is float64 (the count over draws is an integer in [-M, M]), rounded
once to float32. A pairwise column whose count is 0 is 0 without evaluating the sigmoid (most
are: z_dir mostly equals z_opt), which is the product's value for every finite pre-activation.

  sigmoid_f64, draw_weight, unary_grad_value, pair_grad_value   scalar bodies (every target)
  pairwise_direct_grad_at_cuda the CUDA body for element (b, c): its counts, then the values
  pairwise_direct_grad_loop    CPU @njit loop, row by row (the same counts and values)
  pairwise_direct_grad         CPU twin: the launcher's arguments, checked (eps and codes values
                               too: host memory)
  pairwise_direct_grad_kernel  CUDA, one thread per element of grad
  pairwise_direct_grad_cuda    launcher, never synchronises
"""
import math

import numba
import numpy as np
from numba import types

from ._compile import CACHE
from ._checks import check_array
from ._cuda import as_device_view, cuda, current_stream, launch_1d
from ._pairwise import check_count, check_eps_array, check_eps_value, pair_count, pair_of
from ._checks import check_scalar_array

__all__ = ["pairwise_direct_grad", "pairwise_direct_grad_cuda", "CUDA_KERNELS"]


def _check_grad(enc_out, codes_base, codes_plus, eps, grad_scale, M, grad):
    M = check_count("M", M, 1)
    check_eps_array(eps)
    if not math.isfinite(grad_scale):
        raise ValueError(f"grad_scale must be finite, got {grad_scale!r}")
    if len(codes_plus.shape) != 2 or codes_plus.shape[1] < 1:
        raise ValueError(f"codes_plus must have shape (R, N >= 1), got {tuple(codes_plus.shape)}")
    R, N = codes_plus.shape
    if R % M or R < M:
        raise ValueError(f"codes_plus has {R} rows, not a positive multiple of M={M}")
    B, width = R // M, 2 * N + pair_count(N)
    check_array("codes_plus", codes_plus, np.int32, shape=(R, N))
    check_array("codes_base", codes_base, np.int32, shape=(R, N))
    check_array("enc_out", enc_out, np.float32, shape=(B, width))
    check_array("grad", grad, np.float32, shape=(B, width))


@numba.njit(inline="always")
def sigmoid_f64(x):
    x = np.float64(x)
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@numba.njit(inline="always")
def draw_weight(grad_scale, eps, M, two_sided):
    """grad_scale / (eps M), or / (2 eps M) two-sided, in float64."""
    return grad_scale / ((2.0 if two_sided else 1.0) * np.float64(eps) * np.float64(M))


@numba.njit(inline="always")
def unary_grad_value(count, weight):
    """A unary column's gradient: count (an integer in [-M, M]) draws' stat difference."""
    return np.float32(count * weight)


@numba.njit(inline="always")
def pair_grad_value(count, weight, attractive, pre):
    """A pairwise column's gradient, through softplus' derivative sigmoid(pre) when attractive
    (skipped when count is 0: the product is 0 for any finite pre)."""
    value = count * weight
    if attractive and count != 0:
        value *= sigmoid_f64(pre)
    return np.float32(value)


def _pairwise_direct_grad_at(enc_out, codes_base, codes_plus, weight, M, attractive, b, c,
                             grad):
    N = codes_plus.shape[1]
    count = 0
    if c < 2 * N:
        i, k = c // 2, c % 2
        for m in range(M):
            r = b * M + m
            count += (1 if codes_base[r, i] == k else 0) - (1 if codes_plus[r, i] == k else 0)
        grad[b, c] = unary_grad_value(count, weight)
    else:
        i, j = pair_of(c - 2 * N, N)
        for m in range(M):
            r = b * M + m
            count += codes_base[r, i] * codes_base[r, j] - codes_plus[r, i] * codes_plus[r, j]
        grad[b, c] = pair_grad_value(count, weight, attractive, enc_out[b, c])


pairwise_direct_grad_at_cuda = cuda.jit(device=True, inline="always")(_pairwise_direct_grad_at)


@numba.njit(cache=CACHE)
def pairwise_direct_grad_loop(enc_out, codes_base, codes_plus, eps, grad_scale, M, attractive,
                              two_sided, grad):
    # Row by row, the pairs in column order by two nested loops: a call of the per-element body
    # (pair_of's search, the arrays passed per element) cost ~90 ns an element, 1.3 ms a step.
    weight = draw_weight(grad_scale, eps[0], M, two_sided)
    N = codes_plus.shape[1]
    for b in range(grad.shape[0]):
        for i in range(N):
            for k in range(2):
                count = 0
                for r in range(b * M, (b + 1) * M):
                    count += (1 if codes_base[r, i] == k else 0) - \
                        (1 if codes_plus[r, i] == k else 0)
                grad[b, 2 * i + k] = unary_grad_value(count, weight)
        c = 2 * N
        for i in range(N):
            for j in range(i + 1, N):
                count = 0
                for r in range(b * M, (b + 1) * M):
                    count += codes_base[r, i] * codes_base[r, j] - \
                        codes_plus[r, i] * codes_plus[r, j]
                grad[b, c] = pair_grad_value(count, weight, attractive, enc_out[b, c])
                c += 1


def pairwise_direct_grad(enc_out, codes_base, codes_plus, eps, grad_scale, M, attractive,
                         two_sided, grad):
    """CPU: writes grad_scale * the direct estimate of d E[L] / d enc_out into grad (B, 2N+P)."""
    _check_grad(enc_out, codes_base, codes_plus, eps, grad_scale, M, grad)
    check_eps_value(eps)
    for name, codes in (("codes_base", codes_base), ("codes_plus", codes_plus)):
        if codes.size and (codes.min() < 0 or codes.max() > 1):
            raise ValueError(f"{name} must hold 0 or 1 (a -1 marks a row whose potentials the "
                             f"GPU solver found non-finite)")
    pairwise_direct_grad_loop(enc_out, codes_base, codes_plus, eps, np.float64(grad_scale),
                              np.int32(M), bool(attractive), bool(two_sided), grad)


@cuda.jit
def pairwise_direct_grad_kernel(enc_out, codes_base, codes_plus, eps, grad_scale, M, attractive,
                                two_sided, grad):
    i = cuda.grid(1)
    width = grad.shape[1]
    if i < grad.shape[0] * width:
        weight = draw_weight(grad_scale, eps[0], M, two_sided)
        pairwise_direct_grad_at_cuda(enc_out, codes_base, codes_plus, weight, M, attractive,
                                     i // width, i % width, grad)


_F32 = types.float32[:, ::1]
_I32 = types.int32[:, ::1]
CUDA_KERNELS = [
    (pairwise_direct_grad_kernel, [(_F32, _I32, _I32, types.float32[::1], types.float64,
                                    types.int32, types.boolean, types.boolean, _F32)]),
]


def pairwise_direct_grad_cuda(enc_out, codes_base, codes_plus, eps, grad_scale, M, attractive,
                              two_sided, grad, stream=None):
    """CUDA twin of pairwise_direct_grad (overwrites grad); eps is a 1-element float32 device
    array (its value is not checked: no sync). Does not synchronise."""
    _check_grad(enc_out, codes_base, codes_plus, eps, grad_scale, M, grad)
    check_scalar_array("eps", eps, np.float32, device=True)  # refuses a NumPy eps on a real GPU
    stream = current_stream() if stream is None else stream
    blocks, threads = launch_1d(grad.size)
    pairwise_direct_grad_kernel[blocks, threads, stream](
        as_device_view(enc_out), as_device_view(codes_base), as_device_view(codes_plus),
        as_device_view(eps), np.float64(grad_scale), np.int32(M), bool(attractive),
        bool(two_sided), as_device_view(grad))
