"""Hidden layer of the N*K neighbours of each sampled code, for the candidate losses (N > 1).

Reference: candidate_losses in dvae_cupy/reference.py (neighbours decoded densely one by one).
The shortcut (DESIGN.md, "Where the time goes"): the decoder's pre-activation at a neighbour
differs from the one at the sampled code in one row of the first layer, and the x-linear part of
the BCE is a dot product with u = x @ dec_w2^T, so per candidate this op is O(H):

  neighbour_hidden(pre, weight, codes, K, u, start, count, hidden, linear)
      candidate c < count is g = start + c: r = g // NK, n = (g // K) % N, k = g % K
      hidden[c] = relu(pre[r] + (weight[n*K + k] - weight[n*K + codes[r, n]]))
      linear[c] = u[r] . hidden[c]
  and the model finishes
      L[g] = softplus_row_sums(hidden @ dec_w2, dec_b2)[c] - linear[c] - x_b . dec_b2.

The row difference is taken first so the candidate at the sampled code (k = codes[r, n]) gets
exactly `pre`, the decoder's own pre-activation. Candidates are processed in chunks
[start, start + count) so memory stays bounded. Pieces:
  candidate_index, neighbour_activation    scalar bodies (@njit inline, every target)
  neighbour_partial / neighbour_partial_cuda  one body, compiled twice: the CPU loop runs it over
                          all H with stride 1, a CUDA thread over j = tid, tid + THREADS, ...
  neighbour_hidden_loop   CPU @njit loop over the chunk, no allocation
  neighbour_hidden        CPU twin: the launcher's arguments, checked, scalars cast
  neighbour_hidden_kernel CUDA, one block of NEIGHBOUR_THREADS per candidate, threads over H,
                          `linear` by a shared-memory tree sum (kernels/_reduce.py)
  neighbour_hidden_cuda   launcher (see kernels/_cuda.py), never synchronises
"""
import numba
import numpy as np
from numba import types

from ._cuda import as_device_view, cuda, current_stream
from ._reduce import block_sum

__all__ = ["neighbour_hidden", "neighbour_hidden_cuda", "NEIGHBOUR_THREADS", "CUDA_KERNELS"]

NEIGHBOUR_THREADS = 128  # threads per candidate block: a power of two (tree reduction); H ~ 300


# ---------------------------------------------------------------------------------------------
# Argument checks (Python level, once per call; shape, dtype and flags only: no device sync)

def _check_array(name, array, dtype, shape):
    if np.dtype(array.dtype) != np.dtype(dtype):
        raise ValueError(f"{name} must be {np.dtype(dtype).name}, got {array.dtype}")
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(array.shape)}")
    if not array.flags["C_CONTIGUOUS"]:
        raise ValueError(f"{name} must be C-contiguous")


def _check_neighbours(pre, weight, codes, K, u, start, count, hidden, linear):
    if int(K) != K or K < 1:
        raise ValueError(f"K must be an integer >= 1, got {K!r}")
    if len(pre.shape) != 2 or len(codes.shape) != 2:
        raise ValueError(f"pre and codes must be 2-D, got {tuple(pre.shape)} and "
                         f"{tuple(codes.shape)}")
    R, H = pre.shape
    N = codes.shape[1]
    total = R * N * int(K)
    _check_array("pre", pre, np.float32, (R, H))
    _check_array("weight", weight, np.float32, (N * int(K), H))
    _check_array("codes", codes, np.int32, (R, N))
    _check_array("u", u, np.float32, (R, H))
    if int(start) != start or int(count) != count or start < 0 or count < 0 \
            or start + count > total:
        raise ValueError(f"start, count must be integers with 0 <= start, 0 <= count and "
                         f"start + count <= R*N*K = {total}, got start={start!r}, count={count!r}")
    _check_array("hidden", hidden, np.float32, (int(count), H))
    _check_array("linear", linear, np.float32, (int(count),))


# ---------------------------------------------------------------------------------------------
# Shared bodies

@numba.njit(inline="always")
def candidate_index(g, N, K):
    """Global candidate g -> (row r, variable n, value k): g = (r*N + n)*K + k."""
    return g // (N * K), (g // K) % N, g % K


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
        r, n, k = candidate_index(start + c, N, K)
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
    r, n, k = candidate_index(start + c, codes.shape[1], K)
    partial = neighbour_partial_cuda(pre, weight, u, r, n * K + codes[r, n], n * K + k, c,
                                     cuda.threadIdx.x, NEIGHBOUR_THREADS, hidden)
    total = block_sum(cuda.shared.array(NEIGHBOUR_THREADS, types.float32), partial)
    if cuda.threadIdx.x == 0:
        linear[c] = total


_F32 = types.float32[:, ::1]
CUDA_KERNELS = [
    (neighbour_hidden_kernel, [(_F32, _F32, types.int32[:, ::1], types.int32, _F32, types.int32,
                                _F32, types.float32[::1])]),
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
