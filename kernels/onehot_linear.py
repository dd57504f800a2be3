"""The decoder's first layer on one-hot codes: a gather-sum forward, a scatter-add backward.

Since z is one-hot per variable, onehot(z) @ W picks one row of W per variable: no GEMM.

  gather_rows_sum(weight (NK,H), bias (H,), codes (R,N), K, out (R,H))
      out[r] = bias + sum_n weight[n*K + codes[r,n]]          (== onehot(codes) @ weight + bias)
  scatter_rows_add(grad_out (R,H), codes (R,N), K, grad_weight (NK,H))
      grad_weight = onehot(codes)^T @ grad_out                 (OVERWRITES grad_weight)

  gather_rows_sum_rows / scatter_rows_add_rows   CPU @njit loops (row by row, contiguous)
  gather_rows_sum / scatter_rows_add             CPU twins: the launchers' arguments, validated
  gather_rows_sum_kernel                         CUDA, one thread per output element (r, j)
  scatter_rows_add_kernel                        CUDA, one thread per (n, j) column: it owns rows
                                                 n*K .. n*K+K-1 of column j, so no atomics and a
                                                 deterministic sum
  gather_rows_sum_cuda / scatter_rows_add_cuda   launchers (see kernels/_cuda.py for the pattern)

Floats are float32, codes int32 in [0, K) (not checked: they come from our arg max kernels, and
checking values would cost a pass on the CPU and a sync on the GPU; an out-of-range code reads
or writes another variable's rows, or out of bounds). K is passed to the kernels as int32.
There is no scalar body to share: the work is an array walk, written once per target.
Every target adds in the same order (bias, then n = 0, 1, ...; rows r = 0, 1, ... for the
scatter) and there are no products to fuse, so CPU, GPU and simulator agree bit for bit.
"""
import numpy as np
from numba import njit, types

from ._cuda import as_device_view, cuda, current_stream, launch_1d
from ._checks import check_array, check_shape

# ---------------------------------------------------------------------------------------------
# Validation (Python level, cheap: shapes and dtypes only, never values)


def _check(name, array, dtype, ndim):
    check_array(name, array, dtype, ndim=ndim)


_check_shape = check_shape


def _check_codes(codes, K, weight, weight_name):
    """Checks codes (R, N) int32 and weight (N*K, H) float32; returns K as np.int32."""
    _check("codes", codes, "int32", 2)
    _check(weight_name, weight, "float32", 2)
    if int(K) < 1:
        raise ValueError("K must be >= 1, got %r" % (K,))
    _check_shape(weight_name, weight, (codes.shape[1] * int(K), weight.shape[1]))
    return np.int32(K)


def _check_gather(weight, bias, codes, K, out):
    K = _check_codes(codes, K, weight, "weight")
    rows, hidden = codes.shape[0], weight.shape[1]
    _check("bias", bias, "float32", 1)
    _check_shape("bias", bias, (hidden,))
    _check("out", out, "float32", 2)
    _check_shape("out", out, (rows, hidden))
    return K


def _check_scatter(grad_out, codes, K, grad_weight):
    K = _check_codes(codes, K, grad_weight, "grad_weight")
    _check("grad_out", grad_out, "float32", 2)
    _check_shape("grad_out", grad_out, (codes.shape[0], grad_weight.shape[1]))
    return K


# ---------------------------------------------------------------------------------------------
# CPU twins: row by row over contiguous memory, no allocation


@njit
def gather_rows_sum_rows(weight, bias, codes, K, out):
    """out[r] = bias + sum_n weight[n*K + codes[r, n]]."""
    rows, n_latent = codes.shape
    hidden = out.shape[1]
    for r in range(rows):
        for j in range(hidden):
            out[r, j] = bias[j]
        for n in range(n_latent):
            w = n * K + codes[r, n]
            for j in range(hidden):
                out[r, j] += weight[w, j]


@njit
def scatter_rows_add_rows(grad_out, codes, K, grad_weight):
    """grad_weight = 0; grad_weight[n*K + codes[r, n]] += grad_out[r] for r = 0, 1, ... ."""
    rows, n_latent = codes.shape
    hidden = grad_weight.shape[1]
    for w in range(grad_weight.shape[0]):
        for j in range(hidden):
            grad_weight[w, j] = 0
    for r in range(rows):
        for n in range(n_latent):
            w = n * K + codes[r, n]
            for j in range(hidden):
                grad_weight[w, j] += grad_out[r, j]


def gather_rows_sum(weight, bias, codes, K, out):
    """out (R, H) = onehot(codes (R, N)) @ weight (N*K, H) + bias (H,), on float32 NumPy arrays."""
    K = _check_gather(weight, bias, codes, K, out)
    gather_rows_sum_rows(weight, bias, codes, K, out)


def scatter_rows_add(grad_out, codes, K, grad_weight):
    """grad_weight (N*K, H) = onehot(codes (R, N))^T @ grad_out (R, H), overwritten; NumPy arrays."""
    K = _check_scatter(grad_out, codes, K, grad_weight)
    scatter_rows_add_rows(grad_out, codes, K, grad_weight)


# ---------------------------------------------------------------------------------------------
# CUDA twins


@cuda.jit
def gather_rows_sum_kernel(weight, bias, codes, K, out):
    """Thread i computes out[r, j], i = r*H + j: neighbouring threads read neighbouring j."""
    i = cuda.grid(1)
    if i < out.size:
        hidden = out.shape[1]
        r = i // hidden
        j = i - r * hidden
        acc = bias[j]
        for n in range(codes.shape[1]):
            acc += weight[n * K + codes[r, n], j]
        out[r, j] = acc


@cuda.jit
def scatter_rows_add_kernel(grad_out, codes, K, grad_weight):
    """Thread t owns column j of rows n*K .. n*K+K-1, t = n*H + j: it zeroes them, then adds
    grad_out[r, j] into row n*K + codes[r, n] for r = 0, 1, ... (in order: deterministic)."""
    t = cuda.grid(1)
    hidden = grad_weight.shape[1]
    if t < codes.shape[1] * hidden:
        n = t // hidden
        j = t - n * hidden
        first = n * K
        for k in range(K):
            grad_weight[first + k, j] = 0
        for r in range(codes.shape[0]):
            grad_weight[first + codes[r, n], j] += grad_out[r, j]


_MAT = types.float32[:, ::1]
_CODES = types.int32[:, ::1]

CUDA_KERNELS = [
    (gather_rows_sum_kernel, [(_MAT, types.float32[::1], _CODES, types.int32, _MAT)]),
    (scatter_rows_add_kernel, [(_MAT, _CODES, types.int32, _MAT)]),
]


def gather_rows_sum_cuda(weight, bias, codes, K, out, stream=None):
    """CUDA twin of gather_rows_sum: CuPy/Numba device arrays (NumPy under the simulator);
    launched on `stream`, else CuPy's current stream. Does not synchronise."""
    K = _check_gather(weight, bias, codes, K, out)
    if out.size == 0:
        return
    blocks, threads = launch_1d(out.size)
    stream = current_stream() if stream is None else stream
    gather_rows_sum_kernel[blocks, threads, stream](
        as_device_view(weight), as_device_view(bias), as_device_view(codes), K,
        as_device_view(out))


def scatter_rows_add_cuda(grad_out, codes, K, grad_weight, stream=None):
    """CUDA twin of scatter_rows_add: CuPy/Numba device arrays (NumPy under the simulator);
    launched on `stream`, else CuPy's current stream. Does not synchronise."""
    K = _check_scatter(grad_out, codes, K, grad_weight)
    columns = codes.shape[1] * grad_weight.shape[1]  # N * H threads; with R = 0 they still zero
    if columns == 0:
        return
    blocks, threads = launch_1d(columns)
    stream = current_stream() if stream is None else stream
    scatter_rows_add_kernel[blocks, threads, stream](
        as_device_view(grad_out), as_device_view(codes), K, as_device_view(grad_weight))
