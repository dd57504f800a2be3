"""Exact batched arg max of the pairwise binary model with attractive (>= 0) pairwise potentials,
by a minimum s-t cut per sample (reference: mincut_argmax_one / structured_argmax_mincut in
dvae_cupy/reference.py; the truth is structured_argmax_enumerate).

  mincut_argmax(unary, pairwise, M, codes)
      codes[r] = arg max_z sum_i unary[r, 2i + z_i] + sum_{i<j} pairwise[r // M, p(i,j)] z_i z_j
      unary (R, 2N) float32 (perturbed unaries, row r = b*M + m), pairwise (B, P) float32 >= 0,
      codes (R, N) int32. N <= MINCUT_MAX_VARS.
  mincut_argmax_listed(unary, pairwise, M, rows, count, codes)
      the same for rows[:count] only (CPU: the structured pruning's re-solves)

The graph (reference.mincut_argmax_one explains the construction): N + 2 nodes, node i on the
source side iff z_i = 1; source -> i with capacity -c_i where c_i < 0, i -> sink with capacity
c_i where c_i > 0, c_i = -((phi_i(1) - phi_i(0)) + sum_{j != i} w_ij / 2), and i <-> j with
capacity w_ij / 2 each way. It is kept as residual capacities in one array (see edge_slot);
edges into the source and out of the sink are never on an augmenting path and are not kept.

Forcing first: a sweep of the rule "z_i = 1 in every maximiser where a_i plus the pairs of the
variables known to be 1 is > 0, z_i = 0 where that plus the pairs of every undecided variable
is < 0" (a_i = phi_i(1) - phi_i(0); kernels/_pairwise.py's forced_codes_body, with a margin
rounding cannot cross). It decides every variable of ~97 % of a trained model's rows, which then
need no flow (their codes are the unique maximiser's: what the min-cut gives). Any other row is
solved as below, whole.

Algorithm: a greedy feasible flow along the paths source -> i -> j -> sink, then Edmonds-Karp
(shortest augmenting paths) from it; exact and deterministic. Each search is
level-synchronous: node v joins level d + 1 with parent = the smallest-numbered node u of level d
with residual(u, v) > 0, so the CPU loop (on a dense residual matrix, below) and a CUDA block
(threads over the nodes, on the slot array) build the same tree and push the same flows in the
same order: identical codes on every target.
Arithmetic is float64 on float32 inputs: the cut is exact to ~1e-13 of the scores. The
bottleneck edge's residual becomes exactly 0 (x - x) and any other stays > 0 (a float
difference r - b with r > b is never 0), so the residual graph has exactly the edges exact
arithmetic would give it on these values and the Edmonds-Karp bound of O(V E) augmentations
holds. The codes are the nodes the last search reached: the source side of the minimum cut (on
ties, the maximiser with the fewest ones; tests exclude ties).

Pieces:
  forced_codes(_cuda)     _pairwise's forcing sweep, for the CPU (inlined into mincut_row)
                          and the GPU (thread 0 of a block)
  edge_slot               scalar body: where edge u -> v's residual capacity is kept (CUDA)
  _setup, _push_two_hop_paths, _reset_levels, _discover, _augment, _write_codes
                          the CUDA block's phases on the slot array (setup, discover and the
                          writes for the nodes thread, thread + block size, ...), compiled as
                          device functions (*_cuda)
  dense_setup, dense_push_two_hop_paths, dense_search, dense_augment, mincut_row
                          the CPU's phases on a dense residual matrix (see below), one row
  mincut_argmax_loop      CPU @njit loop over the rows, work arrays allocated once per call
  mincut_argmax           CPU twin: the launcher's arguments, checked (values too: host memory)
  mincut_argmax_listed    CPU only: the listed rows
  mincut_argmax_kernel    CUDA: one block of min(32, N + 2) threads per row, graph in shared
                          memory (the codes do not depend on the thread count);
                          a row with non-finite unaries or a negative / non-finite pairwise
                          potential gets codes -1 (the launcher cannot check values: no sync)
  mincut_argmax_cuda      launcher (see kernels/_cuda.py), never synchronises
"""
import math

import numba
import numpy as np
from numba import types

from ._compile import CACHE
from ._cuda import as_device_view, cuda, current_stream
from ._pairwise import (FORCING_VECTORS, check_host_potentials, check_listed_rows,
                        check_solver_args, forced_codes, forced_codes_cuda, pair_index)

__all__ = ["mincut_argmax", "mincut_argmax_listed", "mincut_argmax_cuda", "MINCUT_MAX_VARS", "CUDA_KERNELS"]

MINCUT_MAX_VARS = 64  # the CUDA block's graph lives in fixed-size shared memory (~34 KB at 64)
MINCUT_MAX_PAIRS = MINCUT_MAX_VARS * (MINCUT_MAX_VARS - 1) // 2
_MAX_NODES = MINCUT_MAX_VARS + 2
_MAX_SLOTS = 2 * MINCUT_MAX_VARS + 2 * MINCUT_MAX_PAIRS  # residual capacities of one graph
_FORCING_SLOTS = FORCING_VECTORS * MINCUT_MAX_VARS  # the forcing's work vectors of one row
MINCUT_THREADS = 32  # at most one warp per row: threads stride over the N + 2 nodes
_WHY_MAX = (f"the CUDA kernel holds each sample's graph in shared memory sized for "
            f"MINCUT_MAX_VARS={MINCUT_MAX_VARS} variables")


# ---------------------------------------------------------------------------------------------
# Bodies. Node numbers: variables 0..N-1, source N, sink N+1. All residual capacities of a row
# live in one float64 array `graph` of 2N + 2P slots: from_source[i] = graph[i],
# to_sink[i] = graph[N + i], forward (i -> j) = graph[2N + p], backward (j -> i) =
# graph[2N + P + p]. The per-edge helper maps an edge to its slot and takes scalars only: a
# small helper that takes arrays costs reference counting on every call (~100 ns on the CPU).

@numba.njit(inline="always")
def edge_slot(u, v, N, P):
    """Slot in `graph` of the residual capacity of edge u -> v, or -1 where no edge is kept."""
    if u == N:
        return v if v < N else -1
    if u > N or v == N or v == u:
        return -1
    if v == N + 1:
        return N + u
    if u < v:
        return 2 * N + pair_index(u, v, N)
    return 2 * N + P + pair_index(v, u, N)


def _setup(unary, pairwise, r, b, N, first, stride, graph):
    """Capacities of row r's graph for this thread's nodes and pairs; returns 1 if it saw a
    non-finite unary or a pairwise potential that is negative or not finite, else 0."""
    P = pairwise.shape[1]
    bad = 0
    for i in range(first, N, stride):
        u0 = np.float64(unary[r, 2 * i])
        u1 = np.float64(unary[r, 2 * i + 1])
        half_sum = 0.0
        for j in range(N):  # a fixed order, so every target rounds alike
            if j < i:
                half_sum += 0.5 * np.float64(pairwise[b, pair_index(j, i, N)])
            elif j > i:
                half_sum += 0.5 * np.float64(pairwise[b, pair_index(i, j, N)])
        c = -((u1 - u0) + half_sum)
        graph[i] = -c if c < 0.0 else 0.0
        graph[N + i] = c if c > 0.0 else 0.0
        if not (math.isfinite(u0) and math.isfinite(u1)):
            bad = 1
    for p in range(first, P, stride):
        w = np.float64(pairwise[b, p])
        graph[2 * N + p] = 0.5 * w
        graph[2 * N + P + p] = 0.5 * w
        if not (w >= 0.0 and math.isfinite(w)):
            bad = 1
    return bad


def _push_two_hop_paths(N, P, graph):
    """A feasible starting flow: along every path source -> i -> j -> sink, i then j in node
    order, push what it can carry. Most of the max flow of these dense graphs runs on such
    paths; the searches that follow find the rest (augmenting from any feasible flow is exact)."""
    for i in range(N):
        for j in range(N):
            if graph[i] <= 0.0:
                break
            if j != i and graph[N + j] > 0.0:
                ij = edge_slot(i, j, N, P)
                flow = min(graph[i], graph[N + j], graph[ij])
                if flow > 0.0:
                    graph[i] -= flow
                    graph[N + j] -= flow
                    graph[ij] -= flow
                    graph[edge_slot(j, i, N, P)] += flow


def _reset_levels(N, first, stride, level):
    for v in range(first, N + 2, stride):
        level[v] = 0 if v == N else -1


def _discover(d, N, P, first, stride, graph, level, parent):
    """Level d + 1 of the search, for this thread's unreached nodes: parent = the first node u of
    level d (in node order) with residual(u, v) > 0. Returns 2 if the sink was reached, 1 if
    only other nodes were, 0 if none. It reads level[u] == d only, which no concurrent write
    (-1 -> d + 1) can change, so the threads of a block need no sync inside a level."""
    found = 0
    for v in range(first, N + 2, stride):
        if level[v] < 0:
            for u in range(N + 2):
                if level[u] == d:
                    slot = edge_slot(u, v, N, P)
                    if slot >= 0 and graph[slot] > 0.0:
                        level[v] = d + 1
                        parent[v] = u
                        if v == N + 1:
                            found = 2
                        elif found == 0:
                            found = 1
                        break
    return found


def _augment(N, P, graph, parent):
    """Pushes the bottleneck of the searched path, source -> ... -> sink along parent[]."""
    bottleneck = math.inf
    v = N + 1
    while v != N:
        u = parent[v]
        bottleneck = min(bottleneck, graph[edge_slot(u, v, N, P)])
        v = u
    v = N + 1
    while v != N:
        u = parent[v]
        graph[edge_slot(u, v, N, P)] -= bottleneck
        back = edge_slot(v, u, N, P)
        if back >= 0:  # edges into the source and out of the sink are not kept
            graph[back] += bottleneck
        v = u


def _write_codes(r, N, first, stride, level, codes):
    for i in range(first, N, stride):
        codes[r, i] = 1 if level[i] >= 0 else 0


_gpu = cuda.jit(device=True, inline="always")
setup_cuda, push_two_hop_paths_cuda = _gpu(_setup), _gpu(_push_two_hop_paths)
reset_levels_cuda, discover_cuda = _gpu(_reset_levels), _gpu(_discover)
augment_cuda, write_codes_cuda = _gpu(_augment), _gpu(_write_codes)


# ---------------------------------------------------------------------------------------------
# CPU twin

# The CPU keeps a row's residual capacities in a dense (N+2) x (N+2) matrix (cap[u*V + v], V =
# N + 2) and each search level's nodes in a list, instead of the CUDA kernel's slot array and
# level scan: a residual is one load, not an edge_slot branch, and a level looks only at the
# previous level's nodes (about twice as fast on a row of N = 15). The decisions and the
# arithmetic are the slot bodies' to the operation: the same capacities (the half sums added in
# the same node order), the same two-hop pushes, the same parents (the first node of level d in
# node order), the same bottlenecks; edges into the source, out of the sink and from a node to
# itself stay 0, as the slot layout does not keep them. So the CPU's codes are the CUDA kernel's
# (tests/cudasim/test_pairwise_mincut_cuda.py compares them, ties included).

@numba.njit(inline="always")
def dense_setup(unary, pairwise, r, b, N, half_sums, cap):
    """Row r's capacities into cap (every other entry 0)."""
    V = N + 2
    cap[:] = 0.0
    half_sums[:] = 0.0
    p = 0
    for i in range(N):  # pair (i, j) adds to node j after every (i' < i, j) and before (j, k > j)
        for j in range(i + 1, N):
            half = 0.5 * np.float64(pairwise[b, p])
            half_sums[i] += half
            half_sums[j] += half
            cap[i * V + j] = half
            cap[j * V + i] = half
            p += 1
    for i in range(N):
        c = -((np.float64(unary[r, 2 * i + 1]) - np.float64(unary[r, 2 * i])) + half_sums[i])
        cap[N * V + i] = -c if c < 0.0 else 0.0
        cap[i * V + N + 1] = c if c > 0.0 else 0.0


@numba.njit(inline="always")
def dense_push_two_hop_paths(N, cap):
    V = N + 2
    source, sink = N * V, N + 1
    for i in range(N):
        for j in range(N):
            if cap[source + i] <= 0.0:
                break
            if j != i and cap[j * V + sink] > 0.0:
                flow = min(cap[source + i], cap[j * V + sink], cap[i * V + j])
                if flow > 0.0:
                    cap[source + i] -= flow
                    cap[j * V + sink] -= flow
                    cap[i * V + j] -= flow
                    cap[j * V + i] += flow


@numba.njit(inline="always")
def dense_search(N, cap, level, parent, frontier):
    """One level-synchronous search from the source; returns True if it reached the sink."""
    V = N + 2
    for v in range(V):
        level[v] = -1
    level[N] = 0
    frontier[0] = N
    width = 1
    d = 0
    while True:
        found = 0
        for v in range(V):
            if level[v] < 0:
                for f in range(width):
                    u = frontier[f]
                    if cap[u * V + v] > 0.0:
                        level[v] = d + 1
                        parent[v] = u
                        if v == N + 1:
                            found = 2
                        elif found == 0:
                            found = 1
                        break
        if found != 1:
            return found == 2
        d += 1
        width = 0
        for v in range(V):
            if level[v] == d:
                frontier[width] = v
                width += 1


@numba.njit(inline="always")
def dense_augment(N, cap, parent):
    V = N + 2
    bottleneck = math.inf
    v = N + 1
    while v != N:
        u = parent[v]
        bottleneck = min(bottleneck, cap[u * V + v])
        v = u
    v = N + 1
    while v != N:
        u = parent[v]
        cap[u * V + v] -= bottleneck
        if u != N and v != N + 1:  # edges into the source and out of the sink are not kept
            cap[v * V + u] += bottleneck
        v = u


@numba.njit(inline="always")
def mincut_row(unary, pairwise, M, r, work, level, parent, frontier, codes):
    """Row r's codes, on one thread: the forced variables' if they are all forced, else the
    min-cut's; work: N + (N+2)^2 >= 4N float64 (the forcing's vectors, then the half
    sums and cap); level holds the forcing's states first."""
    N = codes.shape[1]
    if forced_codes(unary, pairwise, r, r // M, N, work, level) == 0:
        for i in range(N):
            codes[r, i] = level[i]
        return
    half_sums, cap = work[:N], work[N:N + (N + 2) ** 2]
    dense_setup(unary, pairwise, r, r // M, N, half_sums, cap)
    dense_push_two_hop_paths(N, cap)
    while dense_search(N, cap, level, parent, frontier):
        dense_augment(N, cap, parent)
    for i in range(N):
        codes[r, i] = 1 if level[i] >= 0 else 0


@numba.njit(inline="always")
def _work_arrays(N):
    return (np.empty(N + (N + 2) ** 2), np.empty(N + 2, np.int32), np.empty(N + 2, np.int32),
            np.empty(N + 2, np.int32))


@numba.njit(cache=CACHE)
def mincut_argmax_loop(unary, pairwise, M, codes):
    work, level, parent, frontier = _work_arrays(codes.shape[1])
    for r in range(codes.shape[0]):
        mincut_row(unary, pairwise, M, r, work, level, parent, frontier, codes)


@numba.njit(cache=CACHE)
def mincut_argmax_listed_loop(unary, pairwise, M, rows, count, codes):
    work, level, parent, frontier = _work_arrays(codes.shape[1])
    for c in range(count):
        mincut_row(unary, pairwise, M, rows[c], work, level, parent, frontier, codes)


def mincut_argmax(unary, pairwise, M, codes):
    """CPU: codes (R, N) = the exact arg max of each row's score (pairwise >= 0)."""
    check_solver_args(unary, pairwise, M, codes, MINCUT_MAX_VARS, _WHY_MAX)
    check_host_potentials(unary, pairwise, attractive=True)
    mincut_argmax_loop(unary, pairwise, np.int32(M), codes)


def mincut_argmax_listed(unary, pairwise, M, rows, count, codes):
    """CPU: mincut_argmax for rows[:count] only (the other rows of codes are left as they are);
    the same arithmetic row by row, so a listed row's codes are mincut_argmax's. CPU only: the
    structured pruning (kernels/structured_pruning.py) re-solves the rows it changed."""
    check_solver_args(unary, pairwise, M, codes, MINCUT_MAX_VARS, _WHY_MAX)
    check_listed_rows(rows, count, len(codes))
    check_host_potentials(unary, pairwise, attractive=True)
    mincut_argmax_listed_loop(unary, pairwise, np.int32(M), rows, np.int64(count), codes)


# ---------------------------------------------------------------------------------------------
# CUDA twin: one block per row; the block's threads share the residual graph in shared memory.
# Each search level is one phase followed by one syncthreads: threads record "found" with an
# atomic max in one of three rotating flags (thread 0 clears the next level's flag during a
# level, when no thread can still be reading it), so every thread reads the same decision.

@cuda.jit
def mincut_argmax_kernel(unary, pairwise, M, codes):
    r = cuda.blockIdx.x
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    N = codes.shape[1]
    P = pairwise.shape[1]
    graph = cuda.shared.array(_MAX_SLOTS, types.float64)
    level = cuda.shared.array(_MAX_NODES, types.int32)
    parent = cuda.shared.array(_MAX_NODES, types.int32)
    flags = cuda.shared.array(5, types.int32)  # [0..2] search levels, [3] bad input, [4] undecided
    forcing = cuda.shared.array(_FORCING_SLOTS, types.float64)
    if t == 0:
        flags[3] = 0
    cuda.syncthreads()
    if setup_cuda(unary, pairwise, r, r // M, N, t, T, graph):
        cuda.atomic.max(flags, 3, 1)
    cuda.syncthreads()
    if flags[3] != 0:  # the same branch for every thread: nobody writes flags[3] again
        for i in range(t, N, T):
            codes[r, i] = -1
        return
    if t == 0:  # the forced variables, by one thread in node order as on the CPU
        flags[4] = forced_codes_cuda(unary, pairwise, r, r // M, N, forcing, level)
    cuda.syncthreads()
    if flags[4] == 0:  # every variable forced: the same branch for every thread
        for i in range(t, N, T):
            codes[r, i] = level[i]
        return
    if t == 0:  # sequential, in node order, as on the CPU
        push_two_hop_paths_cuda(N, P, graph)
    while True:
        reset_levels_cuda(N, t, T, level)
        if t == 0:
            flags[0] = 0
        cuda.syncthreads()
        d = 0
        while True:
            if t == 0:
                flags[(d + 1) % 3] = 0
            found = discover_cuda(d, N, P, t, T, graph, level, parent)
            if found > 0:
                cuda.atomic.max(flags, d % 3, found)
            cuda.syncthreads()
            found = flags[d % 3]
            if found != 1:
                break
            d += 1
        if found == 0:
            break
        if t == 0:
            augment_cuda(N, P, graph, parent)
        cuda.syncthreads()
    write_codes_cuda(r, N, t, T, level, codes)


_F32 = types.float32[:, ::1]
CUDA_KERNELS = [
    (mincut_argmax_kernel, [(_F32, _F32, types.int32, types.int32[:, ::1])]),
]


def mincut_argmax_cuda(unary, pairwise, M, codes, stream=None):
    """CUDA twin of mincut_argmax on CuPy/Numba device arrays (NumPy under the simulator), one
    launch for the batch; launched on `stream`, else CuPy's current stream. Does not
    synchronise, so it cannot check values: rows with bad potentials get codes -1."""
    B, R, N = check_solver_args(unary, pairwise, M, codes, MINCUT_MAX_VARS, _WHY_MAX)
    stream = current_stream() if stream is None else stream
    threads = min(MINCUT_THREADS, N + 2)  # any count gives the same codes; more would idle
    mincut_argmax_kernel[R, threads, stream](
        as_device_view(unary), as_device_view(pairwise), np.int32(M), as_device_view(codes))
