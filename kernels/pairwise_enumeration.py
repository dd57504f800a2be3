"""Exact batched arg max of the pairwise binary model with pairwise potentials of either sign
("signed"), by enumerating all 2^N codes in Gray-code order (reference:
structured_argmax_enumerate in dvae_cupy/reference.py).

  enumeration_argmax(unary, pairwise, M, codes)
      codes[r] = arg max_z sum_i unary[r, 2i + z_i] + sum_{i<j} pairwise[r // M, p(i,j)] z_i z_j
      unary (R, 2N) float32 (perturbed unaries, row r = b*M + m), pairwise (B, P) float32,
      codes (R, N) int32; N <= ENUMERATION_MAX_VARS = 20: the work is 2^N codes per row
      (2^20 = 1M codes already takes ~0.1 s per row on one CPU core).
  enumeration_argmax_listed(unary, pairwise, M, rows, count, codes)
      the same for rows[:count] only (CPU: the structured pruning's re-solves)

Forcing first (kernels/_pairwise.py's forced_codes_body): the variables every maximiser fixes,
from bounds on each one's pairs (70-90 % of a trained signed model's rows have all of them
forced). Only the n undecided variables are then enumerated (reduced_setup: their a_i take the
pairs with the variables forced to 1, and they are numbered in increasing order, so the arg max
and its tie-break are the full enumeration's): 2^n codes instead of 2^N. With nothing forced
that is the whole enumeration, as follows.

Scores are relative to z = 0: S(z) = sum_i a_i z_i + sum_{i<j} w_ij z_i z_j with
a_i = phi_i(1) - phi_i(0), in float64 from the float32 inputs. The lowest low = min(N, 4)
variables are the low part, the other h = N - low the high part. The high codes are visited in
Gray-code order: consecutive ones differ in one bit j (the lowest set bit of the position k),
so the high part's score moves by +-(a_j + field_j), field_i = sum_{j high, set} w_ij, and the
flip moves every field_i by +-w_ij: O(N) per high code. Each high code is completed by all
2^low low codes at O(1) each (a per-row table of the low part's own score, plus the fields of
the set low bits). Ties go to the smallest code number c = sum_i z_i 2^i, as in the reference.

The 2^h high positions are cut into 2^(h - chunk_bits) aligned chunks of 2^chunk_bits,
chunk_bits = max(h - 8, 0): each chunk starts from a freshly computed score (rounding never
accumulates over more than 4096 flips), and a CUDA block runs one chunk per thread (at most 256
threads) and reduces (best score, smallest code) in shared memory. The CPU loop runs the same
chunks with the same arithmetic (flip signs of +-1 are exact, so a fused multiply-add rounds as
the separate ops do): every target returns the same codes.

  forced_codes(_cuda)          _pairwise's forcing sweep, for the CPU and the GPU (thread 0)
  low_bits, gray_chunk_bits, better   scalar bodies (every target)
  low_table, best_of_chunks    bodies compiled twice (CPU @njit inline, CUDA device)
  reduced_setup                the undecided variables' problem (twice too; thread 0 on the GPU)
  setup                        the GPU's first phase: a_i, w and the check of the values
  enumeration_row              one row on one thread (inlined into both CPU loops)
  enumeration_argmax_loop      CPU @njit loop over the rows, work arrays allocated once per call
  enumeration_argmax           CPU twin: the launcher's arguments, checked (values too)
  enumeration_argmax_listed    CPU only: rows[:count] only (the structured pruning's re-solves)
  enumeration_argmax_kernel    CUDA: one block per row, one thread per chunk; a row with
                               non-finite potentials gets codes -1 (no sync to check values)
  enumeration_argmax_cuda      launcher (see kernels/_cuda.py), never synchronises
"""
import math

import numba
import numpy as np
from numba import types

from ._compile import CACHE
from ._cuda import as_device_view, cuda, current_stream
from ._pairwise import (FORCING_VECTORS, check_host_potentials, check_listed_rows,
                        check_solver_args, forced_codes, forced_codes_cuda, pair_index)

__all__ = ["enumeration_argmax", "enumeration_argmax_listed", "enumeration_argmax_cuda", "ENUMERATION_MAX_VARS",
           "CUDA_KERNELS"]

ENUMERATION_MAX_VARS = 20
LOW_BITS = 4  # the 2^4 completions of the lowest 4 variables are scored from a table
LOW_CODES = 1 << LOW_BITS
LOG2_THREADS = 8  # at most 2^8 = 256 chunks (CUDA threads) per row
_MAX_THREADS = 1 << LOG2_THREADS
_MAX_W = ENUMERATION_MAX_VARS * ENUMERATION_MAX_VARS  # the dense pairwise matrix
_FORCING_SLOTS = FORCING_VECTORS * ENUMERATION_MAX_VARS  # the forcing's work vectors of one row
_WHY_MAX = ("signed potentials are solved exactly by enumerating all 2**N codes per sample; "
            "at N = 21 that is 2 million codes per sample")


@numba.njit(inline="always")
def low_bits(N):
    """Variables 0 .. low_bits - 1 are the low part, scored for all completions at once."""
    return N if N < LOW_BITS else LOW_BITS


@numba.njit(inline="always")
def gray_chunk_bits(N):
    """log2 of a chunk's length in high codes: 2^(h - chunk_bits) <= 256 chunks, h = N - low."""
    h = N - low_bits(N)
    return h - LOG2_THREADS if h > LOG2_THREADS else 0


@numba.njit(inline="always")
def better(score, code, best, best_code):
    """Whether (score, code) beats (best, best_code): a higher score, or the same and a smaller
    code. A total order, so any reduction order gives the same winner."""
    return score > best or (score == best and code < best_code)


def _setup(unary, pairwise, r, b, N, first, stride, a, w):
    """a_i and the dense symmetric w (w[i*N + j], zero diagonal) of row r for this thread's
    variables; returns 1 if it saw a non-finite potential, else 0."""
    bad = 0
    for i in range(first, N, stride):
        u0 = np.float64(unary[r, 2 * i])
        u1 = np.float64(unary[r, 2 * i + 1])
        a[i] = u1 - u0
        if not (math.isfinite(u0) and math.isfinite(u1)):
            bad = 1
        for j in range(N):
            if j == i:
                w[i * N + j] = 0.0
            else:
                value = np.float64(pairwise[b, pair_index(min(i, j), max(i, j), N)])
                w[i * N + j] = value
                if not math.isfinite(value):
                    bad = 1
    return bad


def _reduced_setup(unary, pairwise, r, b, N, state, a, w, index):
    """The problem left over the undecided variables of row r (state[i] < 0, forced_codes'), on
    one thread: index[k] = the k-th undecided variable in increasing order, a[k] = its a_i plus
    its pairs with the variables forced to 1, w[k*n + l] = the pair of the k-th and l-th (dense,
    zero diagonal); returns n, their number. A code of these n variables scores what the full
    code (the forced values elsewhere) scores less a constant, and numbering them in increasing
    order keeps the order of the full codes, so the arg max and its tie-break (the smallest
    code) are the full enumeration's. With no variable forced it is setup's problem exactly."""
    n = 0
    for i in range(N):
        if state[i] < 0:
            index[n] = i
            n += 1
    for k in range(n):
        i = index[k]
        value = np.float64(unary[r, 2 * i + 1]) - np.float64(unary[r, 2 * i])
        for j in range(N):
            if state[j] == 1:
                value += np.float64(pairwise[b, pair_index(min(i, j), max(i, j), N)])
        a[k] = value
        for l in range(n):
            j = index[l]
            if l == k:
                w[k * n + l] = 0.0
            else:
                w[k * n + l] = np.float64(pairwise[b, pair_index(min(i, j), max(i, j), N)])
    return n


def _low_table(a, w, N, first, stride, table):
    """table[l] = score of the low variables alone at their code l (all others 0), for this
    thread's l."""
    low = low_bits(N)
    for l in range(first, 1 << low, stride):
        score = 0.0
        for i in range(low):
            if (l >> i) & 1:
                score += a[i]
                for j in range(i + 1, low):
                    if (l >> j) & 1:
                        score += w[i * N + j]
        table[l] = score


def _best_of_chunks(a, w, table, N, first, stride, field, cross):
    """(best score, its code) over the chunks first, first + stride, ... of the Gray sequence of
    the high codes, each high code with all 2^low low completions; `field` (N) and `cross`
    (2^LOW_BITS) are work arrays.

    With H the high code (variables low .. N-1) and l the low one, the score is
    S(H) + table[l] + sum_{i < low, l_i = 1} field_i, field_i = sum_{j high, set} w_ij: the
    last sum is built for every l by adding one field per l (cross), so a code costs O(1), and
    only a high flip costs O(N)."""
    low = low_bits(N)
    h = N - low
    chunk_bits = gray_chunk_bits(N)
    length = 1 << chunk_bits
    best = -math.inf
    best_code = 1 << N  # larger than every code
    for q in range(first, 1 << (h - chunk_bits), stride):
        k0 = q * length
        g = k0 ^ (k0 >> 1)
        score = 0.0
        for k in range(k0, k0 + length):
            if k == k0:  # the chunk's first high code, scored afresh
                for i in range(N):
                    field[i] = 0.0
                for jj in range(h):
                    if (g >> jj) & 1:
                        score += a[low + jj]
                        for i in range(N):
                            field[i] += w[(low + jj) * N + i]
                for ii in range(h):
                    if (g >> ii) & 1:
                        for jj in range(ii + 1, h):
                            if (g >> jj) & 1:
                                score += w[(low + ii) * N + low + jj]
            else:  # flip high bit jj, the lowest set bit of k
                jj = 0
                while not (k >> jj) & 1:
                    jj += 1
                j = low + jj
                sign = -1.0 if (g >> jj) & 1 else 1.0
                score += sign * (a[j] + field[j])
                g ^= 1 << jj
                for i in range(N):
                    field[i] += sign * w[j * N + i]
            cross[0] = 0.0
            for l in range(1, 1 << low):
                i = 0
                while not (l >> i) & 1:
                    i += 1
                cross[l] = cross[l & (l - 1)] + field[i]
            for l in range(1 << low):
                total = (score + table[l]) + cross[l]
                code = (g << low) | l
                if better(total, code, best, best_code):
                    best = total
                    best_code = code
    return best, best_code


_cpu = numba.njit(inline="always")
_gpu = cuda.jit(device=True, inline="always")
reduced_setup, reduced_setup_cuda = _cpu(_reduced_setup), _gpu(_reduced_setup)
setup_cuda = _gpu(_setup)  # the CPU starts from reduced_setup: setup's problem if nothing is forced
low_table, low_table_cuda = _cpu(_low_table), _gpu(_low_table)
best_of_chunks, best_of_chunks_cuda = _cpu(_best_of_chunks), _gpu(_best_of_chunks)


# ---------------------------------------------------------------------------------------------
# CPU twin

@numba.njit(inline="always")
def enumeration_row(unary, pairwise, M, r, a, w, table, field, cross, forcing, state, index,
                    codes):
    """Row r's codes, on one thread: the forced variables' values, and the enumeration's over
    the others (work arrays: the loop's)."""
    N = codes.shape[1]
    forced_codes(unary, pairwise, r, r // M, N, forcing, state)
    n = reduced_setup(unary, pairwise, r, r // M, N, state, a, w, index)
    for i in range(N):
        codes[r, i] = state[i]
    if n == 0:
        return
    low_table(a, w, n, 0, 1, table)
    _, code = best_of_chunks(a, w, table, n, 0, 1, field, cross)
    for k in range(n):
        codes[r, index[k]] = (code >> k) & 1


@numba.njit(cache=CACHE)
def enumeration_argmax_loop(unary, pairwise, M, codes):
    R, N = codes.shape
    a, w, field = np.empty(N), np.empty(N * N), np.empty(N)
    table, cross = np.empty(LOW_CODES), np.empty(LOW_CODES)
    forcing = np.empty(FORCING_VECTORS * N)
    state, index = np.empty(N, np.int32), np.empty(N, np.int32)
    for r in range(R):
        enumeration_row(unary, pairwise, M, r, a, w, table, field, cross, forcing, state, index,
                        codes)


@numba.njit(cache=CACHE)
def enumeration_argmax_listed_loop(unary, pairwise, M, rows, count, codes):
    N = codes.shape[1]
    a, w, field = np.empty(N), np.empty(N * N), np.empty(N)
    table, cross = np.empty(LOW_CODES), np.empty(LOW_CODES)
    forcing = np.empty(FORCING_VECTORS * N)
    state, index = np.empty(N, np.int32), np.empty(N, np.int32)
    for c in range(count):
        enumeration_row(unary, pairwise, M, rows[c], a, w, table, field, cross, forcing, state,
                        index, codes)


def enumeration_argmax(unary, pairwise, M, codes):
    """CPU: codes (R, N) = the exact arg max of each row's score (any sign of pairwise)."""
    check_solver_args(unary, pairwise, M, codes, ENUMERATION_MAX_VARS, _WHY_MAX)
    check_host_potentials(unary, pairwise, attractive=False)
    enumeration_argmax_loop(unary, pairwise, np.int32(M), codes)


def enumeration_argmax_listed(unary, pairwise, M, rows, count, codes):
    """CPU: enumeration_argmax for rows[:count] only (the other rows of codes are left as they
    are); the same arithmetic row by row. CPU only: the structured pruning's re-solves."""
    check_solver_args(unary, pairwise, M, codes, ENUMERATION_MAX_VARS, _WHY_MAX)
    check_listed_rows(rows, count, len(codes))
    check_host_potentials(unary, pairwise, attractive=False)
    enumeration_argmax_listed_loop(unary, pairwise, np.int32(M), rows, np.int64(count), codes)


# ---------------------------------------------------------------------------------------------
# CUDA twin: one block per row, thread t runs chunk t, then a shared-memory tree picks the best.

@cuda.jit
def enumeration_argmax_kernel(unary, pairwise, M, codes):
    r = cuda.blockIdx.x
    t = cuda.threadIdx.x
    T = cuda.blockDim.x  # 2^(N - chunk_bits): the launcher's choice, one chunk per thread
    N = codes.shape[1]
    a = cuda.shared.array(ENUMERATION_MAX_VARS, types.float64)
    w = cuda.shared.array(_MAX_W, types.float64)
    scores = cuda.shared.array(_MAX_THREADS, types.float64)
    best_codes = cuda.shared.array(_MAX_THREADS, types.int32)
    table = cuda.shared.array(LOW_CODES, types.float64)
    flags = cuda.shared.array(2, types.int32)  # [0] bad input, [1] undecided variables
    forcing = cuda.shared.array(_FORCING_SLOTS, types.float64)
    state = cuda.shared.array(ENUMERATION_MAX_VARS, types.int32)
    index = cuda.shared.array(ENUMERATION_MAX_VARS, types.int32)
    field = cuda.local.array(ENUMERATION_MAX_VARS, types.float64)
    cross = cuda.local.array(LOW_CODES, types.float64)
    if t == 0:
        flags[0] = 0
    cuda.syncthreads()
    if setup_cuda(unary, pairwise, r, r // M, N, t, T, a, w):
        cuda.atomic.max(flags, 0, 1)
    cuda.syncthreads()
    if flags[0] != 0:  # the same branch for every thread
        for i in range(t, N, T):
            codes[r, i] = -1
        return
    if t == 0:  # the forced variables and the problem left, by one thread as on the CPU
        forced_codes_cuda(unary, pairwise, r, r // M, N, forcing, state)
        flags[1] = reduced_setup_cuda(unary, pairwise, r, r // M, N, state, a, w, index)
    cuda.syncthreads()
    n = flags[1]
    for i in range(t, N, T):
        if state[i] >= 0:
            codes[r, i] = state[i]
    if n == 0:  # every variable forced: the same branch for every thread
        return
    low_table_cuda(a, w, n, t, T, table)
    cuda.syncthreads()
    score, code = best_of_chunks_cuda(a, w, table, n, t, T, field, cross)
    scores[t] = score
    best_codes[t] = code
    cuda.syncthreads()
    stride = T // 2
    while stride > 0:
        if t < stride and better(scores[t + stride], best_codes[t + stride], scores[t],
                                 best_codes[t]):
            scores[t] = scores[t + stride]
            best_codes[t] = best_codes[t + stride]
        cuda.syncthreads()
        stride //= 2
    for k in range(t, n, T):
        codes[r, index[k]] = (best_codes[0] >> k) & 1


_F32 = types.float32[:, ::1]
CUDA_KERNELS = [
    (enumeration_argmax_kernel, [(_F32, _F32, types.int32, types.int32[:, ::1])]),
]


def enumeration_argmax_cuda(unary, pairwise, M, codes, stream=None):
    """CUDA twin of enumeration_argmax on CuPy/Numba device arrays (NumPy under the simulator),
    one launch for the batch; launched on `stream`, else CuPy's current stream. Does not
    synchronise, so it cannot check values: rows with non-finite potentials get codes -1."""
    B, R, N = check_solver_args(unary, pairwise, M, codes, ENUMERATION_MAX_VARS, _WHY_MAX)
    threads = 1 << (N - low_bits(N) - gray_chunk_bits(N))
    stream = current_stream() if stream is None else stream
    enumeration_argmax_kernel[R, threads, stream](
        as_device_view(unary), as_device_view(pairwise), np.int32(M), as_device_view(codes))
