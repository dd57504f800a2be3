"""The direct estimator's candidate losses: all K codes for N = 1, the N*(K-1) neighbours of each
sampled code for N > 1.

Reference: candidate_losses in dvae_cupy/reference.py (neighbours decoded densely one by one).
The shortcuts (DESIGN.md, "Where the time goes"):

N = 1: the candidate codes are the same K one-hots for every sample, so the decoder runs once per
category (code_out = relu(W1 + b1) @ W2, without the output bias) and the x-linear part of the
BCE is one small GEMM, xo = x @ code_out^T, plus xb2 = x @ dec_b2:
  code_losses(code_out (K,D), bias (D,), xo (B,K), xb2 (B,), M, losses (B*M,K))
      S_k = sum_d softplus(code_out[k, d] + bias[d])    (bce.softplus_row_sums' arithmetic)
      losses[b*M + m, k] = S_k - (xo[b, k] + xb2[b])      (float32; every draw m of image b)

N > 1: the decoder's pre-activation at a neighbour differs from the one at the sampled code in
one row of the first layer, and the x-linear part of the BCE is a dot product with
u = x @ dec_w2^T, so per candidate this op is O(H). The neighbour that keeps the sampled value is
the sampled code itself, whose loss the step already has, so only the K-1 other values of each
variable are candidates (K = 2 halves the work):
  neighbour_hidden(pre, weight, codes, K, u, start, count, hidden, linear)
      candidate c < count is g = start + c, g = (r*N + n)*(K-1) + j, value k = j + (j >= codes[r, n])
      hidden[c] = relu(pre[r] + (weight[n*K + k] - weight[n*K + codes[r, n]]))
      linear[c] = u[r] . hidden[c]
  the model then computes cand_out = hidden @ dec_w2 (without the bias), and
  store_candidate_losses(cand_out (C,D), bias (D,), linear (C,), linear_b2 (R,), codes, K, start,
                         losses)
      S_c = sum_d softplus(cand_out[c, d] + bias[d])    (bce.softplus_row_sums' arithmetic)
      losses[r, n*K + k] = (S_c - linear[c]) - linear_b2[r]     (linear_b2[r] = x_r . dec_b2)
  store_sampled_losses(sampled, codes, K, losses)
      losses[r, n*K + codes[r, n]] = sampled[r]                  (the loss at the sampled code)
Candidates are processed in chunks [start, start + count) so memory stays bounded.

On the CPU the softplus sums come from bce.softplus_row_sum, the one CPU implementation of a
row's softplus sum (float64 accumulation), so the fused ops are bit-identical to
softplus_row_sums followed by the float32 subtractions; on the GPU, one block per row sums
float32 partials in a shared-memory tree (kernels/_reduce.py), as softplus_row_sums_kernel does.

Pieces:
  candidate_slot, slot_value, neighbour_activation    scalar bodies (@njit inline, every target)
  neighbour_partial / neighbour_partial_cuda  one body, compiled twice: the CPU loop runs it over
                          all H with stride 1, a CUDA thread over j = tid, tid + THREADS, ...
  store_candidate / store_candidate_cuda      one body, compiled twice: the scatter of one loss
  <op>_loop               CPU @njit loops, no allocation beyond a row of scratch
  <op>                    CPU twins: the launchers' arguments, checked, scalars cast
  neighbour_hidden_kernel CUDA, one block of NEIGHBOUR_THREADS per candidate, threads over H,
                          `linear` by a shared-memory tree sum
  code_losses_kernel      CUDA, one block of bce.THREADS per code k: the tree sum gives S_k, then
                          the block's threads write column k of all B*M rows
  store_candidate_losses_kernel   CUDA, one block of bce.THREADS per candidate row: tree sum,
                          thread 0 stores
  store_sampled_losses_kernel     CUDA, one thread per (r, n)
  <op>_cuda               launchers, (..., stream=None): see kernels/_cuda.py; never synchronise
"""
import numba
import numpy as np
from numba import types

from ._compile import CACHE
from ._checks import check_array
from ._cuda import as_device_view, cuda, current_stream, launch_1d
from ._reduce import block_sum
from .bce import THREADS as ROW_THREADS
from .bce import softplus_row_partial, softplus_row_sum

__all__ = ["code_losses", "code_losses_cuda", "neighbour_hidden", "neighbour_hidden_cuda",
           "store_candidate_losses", "store_candidate_losses_cuda", "store_sampled_losses",
           "store_sampled_losses_cuda", "candidate_count", "NEIGHBOUR_THREADS", "CUDA_KERNELS"]

NEIGHBOUR_THREADS = 128  # threads per candidate block: a power of two (tree reduction); H ~ 300


# ---------------------------------------------------------------------------------------------
# Argument checks (Python level, once per call; shape, dtype and flags only: no device sync)

def _check_array(name, array, dtype, shape):
    check_array(name, array, dtype, shape=shape)


def candidate_count(rows, n_latent, n_categories):
    """Candidates of R sampled codes: the K-1 other values of each of the N variables."""
    return rows * n_latent * (n_categories - 1)


def _check_chunk(codes, K, start, count):
    if int(K) != K or K < 2:
        raise ValueError(f"K must be an integer >= 2, got {K!r}")
    if len(codes.shape) != 2:
        raise ValueError(f"codes must be 2-D, got {tuple(codes.shape)}")
    _check_array("codes", codes, np.int32, codes.shape)
    total = candidate_count(codes.shape[0], codes.shape[1], int(K))
    if int(start) != start or int(count) != count or start < 0 or count < 0 \
            or start + count > total:
        raise ValueError(f"start, count must be integers with 0 <= start, 0 <= count and "
                         f"start + count <= R*N*(K-1) = {total}, got start={start!r}, count={count!r}")


def _check_neighbours(pre, weight, codes, K, u, start, count, hidden, linear):
    _check_chunk(codes, K, start, count)
    if len(pre.shape) != 2:
        raise ValueError(f"pre must be 2-D, got {tuple(pre.shape)}")
    R, H = pre.shape
    N = codes.shape[1]
    _check_array("pre", pre, np.float32, (R, H))
    _check_array("weight", weight, np.float32, (N * int(K), H))
    _check_array("codes", codes, np.int32, (R, N))
    _check_array("u", u, np.float32, (R, H))
    _check_array("hidden", hidden, np.float32, (int(count), H))
    _check_array("linear", linear, np.float32, (int(count),))


def _check_rows_and_bias(name, rows, bias):
    """`rows` (C, D) and `bias` (D,) float32; returns (C, D)."""
    if len(rows.shape) != 2:
        raise ValueError(f"{name} must be 2-D, got {tuple(rows.shape)}")
    _check_array(name, rows, np.float32, rows.shape)
    _check_array("bias", bias, np.float32, (rows.shape[1],))
    return rows.shape


def _check_store(cand_out, bias, linear, linear_b2, codes, K, start, losses):
    count, _ = _check_rows_and_bias("cand_out", cand_out, bias)
    _check_chunk(codes, K, start, count)
    R, N = codes.shape
    _check_array("linear", linear, np.float32, (count,))
    _check_array("linear_b2", linear_b2, np.float32, (R,))
    _check_array("losses", losses, np.float32, (R, N * int(K)))


def _check_code_losses(code_out, bias, xo, xb2, M, losses):
    """M as int32 after checking code_losses' arguments."""
    K, _ = _check_rows_and_bias("code_out", code_out, bias)
    if int(M) != M or M < 1:
        raise ValueError(f"M must be an integer >= 1, got {M!r}")
    if len(xo.shape) != 2:
        raise ValueError(f"xo must be 2-D, got {tuple(xo.shape)}")
    B = xo.shape[0]
    _check_array("xo", xo, np.float32, (B, K))
    _check_array("xb2", xb2, np.float32, (B,))
    _check_array("losses", losses, np.float32, (B * int(M), K))
    return np.int32(M)


def _check_sampled(sampled, codes, K, losses):
    if int(K) != K or K < 2:
        raise ValueError(f"K must be an integer >= 2, got {K!r}")
    if len(codes.shape) != 2:
        raise ValueError(f"codes must be 2-D, got {tuple(codes.shape)}")
    R, N = codes.shape
    _check_array("codes", codes, np.int32, (R, N))
    _check_array("sampled", sampled, np.float32, (R,))
    _check_array("losses", losses, np.float32, (R, N * int(K)))


# ---------------------------------------------------------------------------------------------
# Shared bodies

@numba.njit(inline="always")
def candidate_slot(g, N, K):
    """Global candidate g -> (row r, variable n, slot j): for each (r, n) the K-1 values other than
    the sampled one, g = (r*N + n)*(K-1) + j. Scalars only, so every target can call it."""
    others = K - 1
    return g // (N * others), (g // others) % N, g % others


@numba.njit(inline="always")
def slot_value(j, sampled):
    """The value of slot j: 0..K-1 with the sampled value skipped."""
    return j + 1 if j >= sampled else j


@numba.njit(inline="always")
def neighbour_activation(pre, w_old, w_new):
    """relu of the pre-activation with one one-hot row swapped; exactly relu(pre) if old == new."""
    a = pre + (w_new - w_old)
    return a if a > 0 else np.float32(0.0)


def _neighbour_partial(pre, weight, u, r, row_old, row_new, c, first, stride, hidden):
    """hidden[c, j] for j = first, first + stride, ... < H; returns the sum of u[r, j] hidden[c, j]
    over those j (float32)."""
    acc = np.float32(0.0)
    for j in range(first, pre.shape[1], stride):
        h = neighbour_activation(pre[r, j], weight[row_old, j], weight[row_new, j])
        hidden[c, j] = h
        acc += u[r, j] * h
    return acc


neighbour_partial = numba.njit(inline="always")(_neighbour_partial)
neighbour_partial_cuda = cuda.jit(device=True, inline="always")(_neighbour_partial)


# ---------------------------------------------------------------------------------------------
# CPU twin

# reassoc lets LLVM vectorise the float32 dot product (4x faster at H = 300); contract fuses its
# multiply-adds as the GPU does. The activation keeps its exact-at-the-sampled-code property
# (checked in tests/test_candidates.py).
@numba.njit(cache=CACHE, fastmath={"reassoc", "contract"})
def neighbour_hidden_loop(pre, weight, codes, K, u, start, hidden, linear):
    N = codes.shape[1]
    for c in range(hidden.shape[0]):
        r, n, j = candidate_slot(start + c, N, K)
        k = slot_value(j, codes[r, n])
        linear[c] = neighbour_partial(pre, weight, u, r, n * K + codes[r, n], n * K + k, c, 0, 1,
                                      hidden)


def neighbour_hidden(pre, weight, codes, K, u, start, count, hidden, linear):
    """Hidden layer and x-linear BCE part of candidates [start, start + count), on the CPU."""
    _check_neighbours(pre, weight, codes, K, u, start, count, hidden, linear)
    neighbour_hidden_loop(pre, weight, codes, np.int32(K), u, np.int32(start), hidden, linear)


# ---------------------------------------------------------------------------------------------
# CUDA twin: block c is candidate start + c; its threads stride over H (coalesced row reads) and
# sum their partial dot products in shared memory.

@cuda.jit
def neighbour_hidden_kernel(pre, weight, codes, K, u, start, hidden, linear):
    # no bounds check: the grid is exactly one block per candidate (block_sum needs every thread)
    c = cuda.blockIdx.x
    r, n, j = candidate_slot(start + c, codes.shape[1], K)
    k = slot_value(j, codes[r, n])
    partial = neighbour_partial_cuda(pre, weight, u, r, n * K + codes[r, n], n * K + k, c,
                                     cuda.threadIdx.x, NEIGHBOUR_THREADS, hidden)
    total = block_sum(cuda.shared.array(NEIGHBOUR_THREADS, types.float32), partial)
    if cuda.threadIdx.x == 0:
        linear[c] = total


# ---------------------------------------------------------------------------------------------
# N = 1: all K codes. CPU: the K softplus sums, then the (B*M, K) losses row by row.

@numba.njit(cache=CACHE)
def code_losses_loop(code_out, bias, xo, xb2, M, losses):
    K, D = code_out.shape
    terms = np.empty(D, np.float32)
    sums = np.empty(K, np.float32)
    for k in range(K):
        sums[k] = softplus_row_sum(code_out[k], bias, terms)
    for b in range(xo.shape[0]):
        for m in range(M):
            r = b * M + m
            for k in range(K):
                losses[r, k] = sums[k] - (xo[b, k] + xb2[b])


def code_losses(code_out, bias, xo, xb2, M, losses):
    """N = 1: losses[b*M + m, k] = S_k - (xo[b, k] + xb2[b]), S_k the softplus sum of code k's
    logits code_out[k] + bias; float32 NumPy arrays."""
    M = _check_code_losses(code_out, bias, xo, xb2, M, losses)
    code_losses_loop(code_out, bias, xo, xb2, M, losses)


@cuda.jit
def code_losses_kernel(code_out, bias, xo, xb2, M, losses):
    """Block k: S_k by a tree sum, then its threads write column k of rows t, t + THREADS, ..."""
    k = cuda.blockIdx.x
    total = block_sum(cuda.shared.array(ROW_THREADS, types.float32),
                      softplus_row_partial(code_out, bias, k))
    for i in range(cuda.threadIdx.x, losses.shape[0], ROW_THREADS):
        b = i // M
        losses[i, k] = total - (xo[b, k] + xb2[b])


def code_losses_cuda(code_out, bias, xo, xb2, M, losses, stream=None):
    """CUDA twin of code_losses on CuPy/Numba device arrays (NumPy under the simulator);
    launched on `stream`, else CuPy's current stream. Does not synchronise."""
    M = _check_code_losses(code_out, bias, xo, xb2, M, losses)
    if code_out.shape[0] == 0:
        return
    stream = current_stream() if stream is None else stream
    code_losses_kernel[code_out.shape[0], ROW_THREADS, stream](
        as_device_view(code_out), as_device_view(bias), as_device_view(xo), as_device_view(xb2),
        M, as_device_view(losses))


# ---------------------------------------------------------------------------------------------
# N > 1: the finished neighbour losses scattered into (R, N*K). One body stores candidate c's loss
# from its softplus sum, compiled for each target (the simulator cannot pass arrays into @njit(cache=CACHE)
# code).

def _store_candidate(softplus_sum, linear, linear_b2, codes, K, start, losses, c):
    r, n, j = candidate_slot(start + c, codes.shape[1], K)
    losses[r, n * K + slot_value(j, codes[r, n])] = softplus_sum - linear[c] - linear_b2[r]


store_candidate = numba.njit(inline="always")(_store_candidate)
store_candidate_cuda = cuda.jit(device=True, inline="always")(_store_candidate)


@numba.njit(cache=CACHE)
def store_candidate_losses_loop(cand_out, bias, linear, linear_b2, codes, K, start, losses):
    terms = np.empty(cand_out.shape[1], np.float32)
    for c in range(cand_out.shape[0]):
        store_candidate(softplus_row_sum(cand_out[c], bias, terms), linear, linear_b2, codes, K,
                        start, losses, c)


def store_candidate_losses(cand_out, bias, linear, linear_b2, codes, K, start, losses):
    """losses[r, n*K + k] = (S_c - linear[c]) - linear_b2[r] for the chunk's candidates c, S_c the
    softplus sum of cand_out[c] + bias; float32 NumPy arrays."""
    _check_store(cand_out, bias, linear, linear_b2, codes, K, start, losses)
    store_candidate_losses_loop(cand_out, bias, linear, linear_b2, codes, np.int32(K),
                                np.int32(start), losses)


@numba.njit(cache=CACHE)
def store_sampled_losses_loop(sampled, codes, K, losses):
    for r in range(codes.shape[0]):
        for n in range(codes.shape[1]):
            losses[r, n * K + codes[r, n]] = sampled[r]


def store_sampled_losses(sampled, codes, K, losses):
    """losses[r, n*K + codes[r, n]] = sampled[r]: the neighbour that keeps the sampled value."""
    _check_sampled(sampled, codes, K, losses)
    store_sampled_losses_loop(sampled, codes, np.int32(K), losses)


@cuda.jit
def store_candidate_losses_kernel(cand_out, bias, linear, linear_b2, codes, K, start, losses):
    """Block c: S_c by a tree sum over the row's pixels, stored by thread 0."""
    c = cuda.blockIdx.x
    total = block_sum(cuda.shared.array(ROW_THREADS, types.float32),
                      softplus_row_partial(cand_out, bias, c))
    if cuda.threadIdx.x == 0:
        store_candidate_cuda(total, linear, linear_b2, codes, K, start, losses, c)


@cuda.jit
def store_sampled_losses_kernel(sampled, codes, K, losses):
    i = cuda.grid(1)
    if i < codes.shape[0] * codes.shape[1]:
        r, n = i // codes.shape[1], i % codes.shape[1]
        losses[r, n * K + codes[r, n]] = sampled[r]


def store_candidate_losses_cuda(cand_out, bias, linear, linear_b2, codes, K, start, losses,
                                stream=None):
    """CUDA twin of store_candidate_losses on CuPy/Numba device arrays (NumPy under the
    simulator); launched on `stream`, else CuPy's current stream. Does not synchronise."""
    _check_store(cand_out, bias, linear, linear_b2, codes, K, start, losses)
    count = cand_out.shape[0]
    if count == 0:
        return
    stream = current_stream() if stream is None else stream
    store_candidate_losses_kernel[count, ROW_THREADS, stream](
        as_device_view(cand_out), as_device_view(bias), as_device_view(linear),
        as_device_view(linear_b2), as_device_view(codes), np.int32(K), np.int32(start),
        as_device_view(losses))


def store_sampled_losses_cuda(sampled, codes, K, losses, stream=None):
    """CUDA twin of store_sampled_losses. Does not synchronise."""
    _check_sampled(sampled, codes, K, losses)
    if codes.size == 0:
        return
    blocks, threads = launch_1d(codes.size)
    stream = current_stream() if stream is None else stream
    store_sampled_losses_kernel[blocks, threads, stream](
        as_device_view(sampled), as_device_view(codes), np.int32(K), as_device_view(losses))


_F32 = types.float32[:, ::1]
_V32 = types.float32[::1]
_CODES = types.int32[:, ::1]
CUDA_KERNELS = [
    (code_losses_kernel, [(_F32, _V32, _F32, _V32, types.int32, _F32)]),
    (neighbour_hidden_kernel, [(_F32, _F32, _CODES, types.int32, _F32, types.int32, _F32, _V32)]),
    (store_candidate_losses_kernel, [(_F32, _V32, _V32, _V32, _CODES, types.int32, types.int32,
                                      _F32)]),
    (store_sampled_losses_kernel, [(_V32, _CODES, types.int32, _F32)]),
]


def neighbour_hidden_cuda(pre, weight, codes, K, u, start, count, hidden, linear, stream=None):
    """CUDA twin of neighbour_hidden on CuPy/Numba device arrays (NumPy under the simulator);
    launched on `stream`, else CuPy's current stream. Does not synchronise."""
    _check_neighbours(pre, weight, codes, K, u, start, count, hidden, linear)
    if count == 0:
        return
    stream = current_stream() if stream is None else stream
    neighbour_hidden_kernel[int(count), NEIGHBOUR_THREADS, stream](
        as_device_view(pre), as_device_view(weight), as_device_view(codes), np.int32(K),
        as_device_view(u), np.int32(start), as_device_view(hidden), as_device_view(linear))
