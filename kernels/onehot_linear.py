"""The decoder's first layer on one-hot codes: a gather-sum forward with its ReLU, and a
scatter-add backward through that ReLU with the bias gradient.

Since z is one-hot per variable, onehot(z) @ W picks one row of W per variable: no GEMM.

  gather_rows_sum(weight (NK,H), bias (H,), codes (R,N), K, pre (R,H), hidden (R,H))
      pre[r] = bias + sum_n weight[n*K + codes[r,n]]   (== onehot(codes) @ weight + bias; added
                                                        bias first, then n = 0, 1, ...)
      hidden = np.maximum(pre, 0): pre where pre > 0, nan where pre is nan, else +0.0 (so -0.0
               becomes +0.0, as np.maximum does)
  scatter_rows_add(grad_out (R,H), hidden (R,H), codes (R,N), K, grad_weight (NK,H),
                   grad_bias (H,))
      with g = grad_out where hidden > 0, else 0 (grad_out itself is not modified):
      grad_weight = onehot(codes)^T @ g          (OVERWRITTEN: each element 0, then + g[r, j]
                                                  for every row r with codes[r, n] == k, in
                                                  order r = 0, 1, ...)
      grad_bias[j] = sum_r g[r, j]               (row 0's value, then rows 1, 2, ... added: on
                                                  the CPU bit-identical to np.sum(g, axis=0))

  relu_value / masked_grad                        scalar bodies shared by every target
  gather_rows_sum_rows / scatter_rows_add_rows    CPU @njit loops (row by row, contiguous)
  gather_rows_sum / scatter_rows_add              CPU twins: the launchers' arguments, validated
  gather_rows_sum_kernel                          CUDA, one thread per output element (r, j)
  scatter_rows_add_kernel                         CUDA, one thread per output element: N*K*H
                                                  threads for grad_weight, each summing its rows
                                                  in order, then H for grad_bias (no atomics,
                                                  deterministic)
  gather_rows_sum_cuda / scatter_rows_add_cuda    launchers, (..., stream=None): see
                                                  kernels/_cuda.py

Floats are float32, codes int32 in [0, K) (not checked: they come from our arg max kernels, and
checking values would cost a pass on the CPU and a sync on the GPU; an out-of-range code reads
or writes another variable's rows, or out of bounds). K is passed to the kernels as int32.
Every target adds in the same order and there are no products to fuse, so CPU, GPU and simulator
agree bit for bit.
"""
import numpy as np
from numba import njit, types

from ._compile import CACHE
from ._checks import check_array, check_shape
from ._cuda import as_device_view, cuda, current_stream, launch_1d

_ZERO = np.float32(0.0)

# ---------------------------------------------------------------------------------------------
# Scalar bodies (float32 in, float32 out)


@njit(inline="always")
def relu_value(p):
    """np.maximum(p, 0): p if p > 0, nan if p is nan, else +0.0 (also for p = -0.0)."""
    return p if (p > _ZERO or p != p) else _ZERO


@njit(inline="always")
def masked_grad(g, act):
    """g where the ReLU output was positive, else 0."""
    return g if act > _ZERO else _ZERO


# ---------------------------------------------------------------------------------------------
# Validation (Python level, cheap: shapes and dtypes only, never values)


def _check(name, array, dtype, ndim):
    check_array(name, array, dtype, ndim=ndim)


def _check_codes(codes, K, weight, weight_name):
    """Checks codes (R, N) int32 and weight (N*K, H) float32; returns K as np.int32."""
    _check("codes", codes, "int32", 2)
    _check(weight_name, weight, "float32", 2)
    if int(K) != K or int(K) < 1:
        raise ValueError("K must be an integer >= 1, got %r" % (K,))
    check_shape(weight_name, weight, (codes.shape[1] * int(K), weight.shape[1]))
    return np.int32(K)


def _check_rows(names_arrays, rows, hidden):
    for name, array in names_arrays:
        _check(name, array, "float32", 2)
        check_shape(name, array, (rows, hidden))


def _check_bias(name, bias, hidden):
    _check(name, bias, "float32", 1)
    check_shape(name, bias, (hidden,))


def _check_gather(weight, bias, codes, K, pre, hidden):
    K = _check_codes(codes, K, weight, "weight")
    _check_bias("bias", bias, weight.shape[1])
    _check_rows((("pre", pre), ("hidden", hidden)), codes.shape[0], weight.shape[1])
    return K


def _check_scatter(grad_out, hidden, codes, K, grad_weight, grad_bias):
    K = _check_codes(codes, K, grad_weight, "grad_weight")
    _check_rows((("grad_out", grad_out), ("hidden", hidden)), codes.shape[0],
                grad_weight.shape[1])
    _check_bias("grad_bias", grad_bias, grad_weight.shape[1])
    return K


# ---------------------------------------------------------------------------------------------
# CPU twins: row by row over contiguous memory


@njit(cache=CACHE)
def gather_rows_sum_rows(weight, bias, codes, K, pre, hidden):
    """pre[r] = bias + sum_n weight[n*K + codes[r, n]]; hidden[r] = relu_value(pre[r])."""
    rows, n_latent = codes.shape
    width = pre.shape[1]
    for r in range(rows):
        for j in range(width):
            pre[r, j] = bias[j]
        for n in range(n_latent):
            w = n * K + codes[r, n]
            for j in range(width):
                pre[r, j] += weight[w, j]
        for j in range(width):
            hidden[r, j] = relu_value(pre[r, j])


@njit(cache=CACHE)
def scatter_rows_add_rows(grad_out, hidden, codes, K, grad_weight, grad_bias):
    """grad_weight = 0, then grad_weight[n*K + codes[r, n]] += g[r] for r = 0, 1, ...;
    grad_bias = g[0] + g[1] + ... ; g = the masked grad_out, one row at a time in a scratch row."""
    rows, n_latent = codes.shape
    width = grad_weight.shape[1]
    g = np.empty(width, np.float32)
    for w in range(grad_weight.shape[0]):
        for j in range(width):
            grad_weight[w, j] = _ZERO
    if rows == 0:
        grad_bias[:] = _ZERO
    for r in range(rows):
        for j in range(width):
            g[j] = masked_grad(grad_out[r, j], hidden[r, j])
        for n in range(n_latent):
            w = n * K + codes[r, n]
            for j in range(width):
                grad_weight[w, j] += g[j]
        if r == 0:
            for j in range(width):
                grad_bias[j] = g[j]
        else:
            for j in range(width):
                grad_bias[j] += g[j]


def gather_rows_sum(weight, bias, codes, K, pre, hidden):
    """pre (R, H) = onehot(codes (R, N)) @ weight (N*K, H) + bias (H,), hidden = max(pre, 0), on
    float32 NumPy arrays."""
    K = _check_gather(weight, bias, codes, K, pre, hidden)
    gather_rows_sum_rows(weight, bias, codes, K, pre, hidden)


def scatter_rows_add(grad_out, hidden, codes, K, grad_weight, grad_bias):
    """grad_weight (N*K, H) = onehot(codes)^T @ g and grad_bias (H,) = g's column sums, both
    overwritten, with g = grad_out (R, H) masked where hidden <= 0; NumPy arrays."""
    K = _check_scatter(grad_out, hidden, codes, K, grad_weight, grad_bias)
    scatter_rows_add_rows(grad_out, hidden, codes, K, grad_weight, grad_bias)


# ---------------------------------------------------------------------------------------------
# CUDA twins


@cuda.jit
def gather_rows_sum_kernel(weight, bias, codes, K, pre, hidden):
    """Thread i computes pre[r, j] and hidden[r, j], i = r*H + j: neighbouring threads read
    neighbouring j."""
    i = cuda.grid(1)
    if i < pre.size:
        width = pre.shape[1]
        r = i // width
        j = i - r * width
        acc = bias[j]
        for n in range(codes.shape[1]):
            acc += weight[n * K + codes[r, n], j]
        pre[r, j] = acc
        hidden[r, j] = relu_value(acc)


@cuda.jit
def scatter_rows_add_kernel(grad_out, hidden, codes, K, grad_weight, grad_bias):
    """Threads t < N*K*H: t = (n*K + k)*H + j owns grad_weight[n*K + k, j] and adds the masked
    grad_out[r, j] of every row r with codes[r, n] == k, in order, to 0. The next H threads:
    t = N*K*H + j owns grad_bias[j], the masked column j summed over the rows in order from
    row 0's value. Neighbouring threads read neighbouring j."""
    t = cuda.grid(1)
    width = grad_weight.shape[1]
    weights = grad_weight.shape[0] * width
    if t < weights:
        w = t // width
        j = t - w * width
        n = w // K
        k = w - n * K
        acc = _ZERO
        for r in range(codes.shape[0]):
            if codes[r, n] == k:
                acc += np.float32(masked_grad(grad_out[r, j], hidden[r, j]))
        grad_weight[w, j] = acc
    elif t < weights + width:
        j = t - weights
        total = _ZERO
        for r in range(codes.shape[0]):
            # float32 on every target (under the simulator the body returns a Python float)
            g = np.float32(masked_grad(grad_out[r, j], hidden[r, j]))
            total = g if r == 0 else total + g
        grad_bias[j] = total


_MAT = types.float32[:, ::1]
_VEC = types.float32[::1]
_CODES = types.int32[:, ::1]

CUDA_KERNELS = [
    (gather_rows_sum_kernel, [(_MAT, _VEC, _CODES, types.int32, _MAT, _MAT)]),
    (scatter_rows_add_kernel, [(_MAT, _MAT, _CODES, types.int32, _MAT, _VEC)]),
]


def gather_rows_sum_cuda(weight, bias, codes, K, pre, hidden, stream=None):
    """CUDA twin of gather_rows_sum: CuPy/Numba device arrays (NumPy under the simulator);
    launched on `stream`, else CuPy's current stream. Does not synchronise."""
    K = _check_gather(weight, bias, codes, K, pre, hidden)
    if pre.size == 0:
        return
    blocks, threads = launch_1d(pre.size)
    stream = current_stream() if stream is None else stream
    gather_rows_sum_kernel[blocks, threads, stream](
        as_device_view(weight), as_device_view(bias), as_device_view(codes), K,
        as_device_view(pre), as_device_view(hidden))


def scatter_rows_add_cuda(grad_out, hidden, codes, K, grad_weight, grad_bias, stream=None):
    """CUDA twin of scatter_rows_add: CuPy/Numba device arrays (NumPy under the simulator);
    launched on `stream`, else CuPy's current stream. Does not synchronise. With R = 0 it still
    launches: grad_weight and grad_bias become 0."""
    K = _check_scatter(grad_out, hidden, codes, K, grad_weight, grad_bias)
    outputs = grad_weight.size + grad_bias.size  # N*K*H + H threads
    if outputs == 0:
        return
    blocks, threads = launch_1d(outputs)
    stream = current_stream() if stream is None else stream
    scatter_rows_add_kernel[blocks, threads, stream](
        as_device_view(grad_out), as_device_view(hidden), as_device_view(codes), K,
        as_device_view(grad_weight), as_device_view(grad_bias))
