"""The N*(K-1) neighbours of each sampled code, for the candidate losses (N > 1).

Reference: candidate_losses in dvae_cupy/reference.py (neighbours decoded densely one by one).
The shortcut (DESIGN.md, "Where the time goes"): the decoder's pre-activation at a neighbour
differs from the one at the sampled code in one row of the first layer, and the x-linear part of
the BCE is a dot product with u = x @ dec_w2^T, so per candidate this op is O(H). The neighbour
that keeps the sampled value is the sampled code itself, whose loss the step already has, so only
the K-1 other values of each variable are candidates (K = 2 halves the work):

  neighbour_hidden(pre, weight, codes, K, u, start, count, hidden, linear)
      candidate c < count is g = start + c, g = (r*N + n)*(K-1) + j, value k = j + (j >= codes[r, n])
      hidden[c] = relu(pre[r] + (weight[n*K + k] - weight[n*K + codes[r, n]]))
      linear[c] = u[r] . hidden[c]
  the model then computes S = softplus_row_sums(hidden @ dec_w2, dec_b2), and
  store_candidate_losses(S, linear, linear_b2, codes, K, start, losses)
      losses[r, n*K + k] = S[c] - linear[c] - linear_b2[r]       (linear_b2[r] = x_r . dec_b2)
  store_sampled_losses(sampled, codes, K, losses)
      losses[r, n*K + codes[r, n]] = sampled[r]                  (the loss at the sampled code)

Candidates are processed in chunks [start, start + count) so memory stays bounded. Pieces:
  candidate_slot, slot_value, neighbour_activation    scalar bodies (@njit inline, every target)
  neighbour_partial / neighbour_partial_cuda  one body, compiled twice: the CPU loop runs it over
                          all H with stride 1, a CUDA thread over j = tid, tid + THREADS, ...
  neighbour_hidden_loop   CPU @njit loop over the chunk, no allocation
  neighbour_hidden        CPU twin: the launcher's arguments, checked, scalars cast
  neighbour_hidden_kernel CUDA, one block of NEIGHBOUR_THREADS per candidate, threads over H,
                          `linear` by a shared-memory tree sum (kernels/_reduce.py)
  neighbour_hidden_cuda   launcher (see kernels/_cuda.py), never synchronises
  store_candidate_losses, store_sampled_losses (+ _loop, _kernel, _cuda): the scatters above,
                          one CUDA thread per candidate / per (r, n)
"""
import numba
import numpy as np
from numba import types

from ._cuda import as_device_view, cuda, current_stream, launch_1d
from ._checks import check_array
from ._reduce import block_sum

__all__ = ["neighbour_hidden", "neighbour_hidden_cuda", "store_candidate_losses",
           "store_candidate_losses_cuda", "store_sampled_losses", "store_sampled_losses_cuda",
           "candidate_count", "NEIGHBOUR_THREADS", "CUDA_KERNELS"]

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


def _check_store(softplus_sums, linear, linear_b2, codes, K, start, losses):
    count = softplus_sums.shape[0] if len(softplus_sums.shape) == 1 else -1
    _check_array("softplus_sums", softplus_sums, np.float32, (max(count, 0),))
    _check_chunk(codes, K, start, count)
    R, N = codes.shape
    _check_array("linear", linear, np.float32, (count,))
    _check_array("linear_b2", linear_b2, np.float32, (R,))
    _check_array("losses", losses, np.float32, (R, N * int(K)))


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
@numba.njit(fastmath={"reassoc", "contract"})
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
# Scatters of the finished losses into (R, N*K): CPU loops and CUDA kernels share the element body.

def _store_candidate(softplus_sums, linear, linear_b2, codes, K, start, losses, c):
    r, n, j = candidate_slot(start + c, codes.shape[1], K)
    losses[r, n * K + slot_value(j, codes[r, n])] = softplus_sums[c] - linear[c] - linear_b2[r]


# One body, compiled for each target (the simulator cannot pass arrays into @njit code).
store_candidate = numba.njit(inline="always")(_store_candidate)
store_candidate_cuda = cuda.jit(device=True, inline="always")(_store_candidate)


@numba.njit
def store_candidate_losses_loop(softplus_sums, linear, linear_b2, codes, K, start, losses):
    for c in range(softplus_sums.shape[0]):
        store_candidate(softplus_sums, linear, linear_b2, codes, K, start, losses, c)


def store_candidate_losses(softplus_sums, linear, linear_b2, codes, K, start, losses):
    """losses[r, n*K + k] = softplus_sums[c] - linear[c] - linear_b2[r] for the chunk's candidates."""
    _check_store(softplus_sums, linear, linear_b2, codes, K, start, losses)
    store_candidate_losses_loop(softplus_sums, linear, linear_b2, codes, np.int32(K), np.int32(start),
                                losses)


@numba.njit
def store_sampled_losses_loop(sampled, codes, K, losses):
    for r in range(codes.shape[0]):
        for n in range(codes.shape[1]):
            losses[r, n * K + codes[r, n]] = sampled[r]


def store_sampled_losses(sampled, codes, K, losses):
    """losses[r, n*K + codes[r, n]] = sampled[r]: the neighbour that keeps the sampled value."""
    _check_sampled(sampled, codes, K, losses)
    store_sampled_losses_loop(sampled, codes, np.int32(K), losses)


@cuda.jit
def store_candidate_losses_kernel(softplus_sums, linear, linear_b2, codes, K, start, losses):
    c = cuda.grid(1)
    if c < softplus_sums.shape[0]:
        store_candidate_cuda(softplus_sums, linear, linear_b2, codes, K, start, losses, c)


@cuda.jit
def store_sampled_losses_kernel(sampled, codes, K, losses):
    i = cuda.grid(1)
    if i < codes.shape[0] * codes.shape[1]:
        r, n = i // codes.shape[1], i % codes.shape[1]
        losses[r, n * K + codes[r, n]] = sampled[r]


def store_candidate_losses_cuda(softplus_sums, linear, linear_b2, codes, K, start, losses, stream=None):
    """CUDA twin of store_candidate_losses. Does not synchronise."""
    _check_store(softplus_sums, linear, linear_b2, codes, K, start, losses)
    if softplus_sums.shape[0] == 0:
        return
    blocks, threads = launch_1d(softplus_sums.shape[0])
    stream = current_stream() if stream is None else stream
    store_candidate_losses_kernel[blocks, threads, stream](
        as_device_view(softplus_sums), as_device_view(linear), as_device_view(linear_b2),
        as_device_view(codes), np.int32(K), np.int32(start), as_device_view(losses))


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
    (neighbour_hidden_kernel, [(_F32, _F32, _CODES, types.int32, _F32, types.int32, _F32, _V32)]),
    (store_candidate_losses_kernel, [(_V32, _V32, _V32, _CODES, types.int32, types.int32, _F32)]),
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
