"""Shared pieces of the pairwise (structured binary) kernels: pair indexing and argument checks.

Layouts (reference: the "Structured latents" section of dvae_cupy/reference.py):
  enc_out  (B, 2N+P)  encoder output: unary potential of variable i, value k in column 2i + k,
                      then one pairwise pre-activation per pair i < j, row-major pair order
  unary    (R, 2N)    perturbed unaries of row r = b*M + m (the solvers' input)
  pairwise (B, P)     pairwise potentials, shared by the M rows of data point b
  codes    (R, N)     int32 in {0, 1}
P = N(N-1)/2; pair (i, j), i < j, is column i*N - i*(i+1)/2 + (j - i - 1).
"""
import math

import numba
import numpy as np

from ._checks import check_array
from ._cuda import cuda

__all__ = ["pair_count", "pair_index", "pair_of", "check_count", "check_solver_args",
           "check_host_potentials", "check_listed_rows", "check_eps_array", "check_eps_value",
           "forced_codes", "forced_codes_cuda", "forced_codes_of_row", "FORCED_MARGIN",
           "FORCING_VECTORS"]


def pair_count(n_vars):
    return n_vars * (n_vars - 1) // 2


@numba.njit(inline="always")
def pair_index(i, j, N):
    """Column of pair (i, j) for i < j (scalars: callable from every target)."""
    return i * N - (i * (i + 1)) // 2 + (j - i - 1)


# ---------------------------------------------------------------------------------------------
# Forced variables, the solvers' first pass (kernels/pairwise_mincut.py, pairwise_enumeration.py).
# Flipping z_i from 0 to 1 changes the score by a_i + sum_{j: z_j = 1} w_ij, a_i = phi_i(1) -
# phi_i(0). So every maximiser has z_i = 1 where a_i, plus the pairs with the variables known to
# be 1, plus the negative pairs with the undecided ones, is > 0; and z_i = 0 where a_i plus the
# pairs with the ones known to be 1 plus the positive pairs with the undecided ones is < 0 (with
# attractive potentials, w >= 0, there are no negative pairs). Each decision moves the others'
# sums, so the rule is swept until nothing changes. On a trained model's rows it decides every
# variable of most rows (attractive ~97 %, signed ~70-90 %: the Gumbel-perturbed unaries are
# large against the pairs), which then need no flow or enumeration. A decision needs its margin
# beyond FORCED_MARGIN times the variable's scale |a_i| + sum_j |w_ij|: the running sums'
# rounding (< 2 (N + 1) float64 ulps of the scale) can then never turn it, so a row whose
# variables are all forced has a unique maximiser, the one the exact solvers return. A row
# with any variable left undecided is solved whole, as without this pass.
FORCED_MARGIN = 1e-10
FORCING_VECTORS = 4  # float64 work vectors of N: gain, negative pairs, positive pairs, scale


def forced_codes_body(unary, pairwise, r, b, N, work, state):
    """The forcing sweep of row r (pairwise row b), on one thread in variable order: state[i] =
    1 or 0 where every maximiser has that value, -1 where undecided; returns how many are left
    undecided. work: FORCING_VECTORS * N float64. Plain Python, compiled below for the CPU
    (forced_codes, @njit inline) and the GPU (forced_codes_cuda, a device function one thread of
    a block runs)."""
    gain, negative, positive, scale = work[:N], work[N:2 * N], work[2 * N:3 * N], work[3 * N:4 * N]
    for i in range(N):
        a = np.float64(unary[r, 2 * i + 1]) - np.float64(unary[r, 2 * i])
        gain[i] = a
        negative[i] = 0.0
        positive[i] = 0.0
        scale[i] = abs(a)
        state[i] = -1
    p = 0
    for i in range(N):  # pairs in column order, each added to both of its variables
        for j in range(i + 1, N):
            w = np.float64(pairwise[b, p])
            if w < 0.0:
                negative[i] += w
                negative[j] += w
            else:
                positive[i] += w
                positive[j] += w
            p += 1
    for i in range(N):
        scale[i] += positive[i] - negative[i]
    undecided = N
    changed = True
    while changed and undecided > 0:
        changed = False
        for i in range(N):
            if state[i] >= 0:
                continue
            margin = FORCED_MARGIN * scale[i]
            if gain[i] + negative[i] > margin:
                state[i] = 1
            elif gain[i] + positive[i] < -margin:
                state[i] = 0
            else:
                continue
            undecided -= 1
            changed = True
            for j in range(N):  # i's pair leaves j's undecided sums (and joins its gain if 1)
                if state[j] < 0:
                    column = pair_index(i, j, N) if i < j else pair_index(j, i, N)
                    w = np.float64(pairwise[b, column])
                    if w < 0.0:
                        negative[j] -= w
                    else:
                        positive[j] -= w
                    if state[i] == 1:
                        gain[j] += w
    return undecided


forced_codes = numba.njit(inline="always")(forced_codes_body)
forced_codes_cuda = cuda.jit(device=True, inline="always")(forced_codes_body)


@numba.njit
def _forced_codes_row(unary, pairwise, state):
    return forced_codes(unary, pairwise, 0, 0, state.size,
                        np.empty(FORCING_VECTORS * state.size), state)


def forced_codes_of_row(unary_row, pairwise_row):
    """(undecided count, state (N,) int32: 1, 0, or -1 undecided) of the forcing sweep on one
    row (unary (2N,), pairwise (P,) float32), from Python: for tests and measurements."""
    unary = np.ascontiguousarray(unary_row, np.float32).reshape(1, -1)
    pairwise = np.ascontiguousarray(pairwise_row, np.float32).reshape(1, -1)
    state = np.empty(unary.shape[1] // 2, np.int32)
    return int(_forced_codes_row(unary, pairwise, state)), state


@numba.njit(inline="always")
def pair_of(p, N):
    """(i, j) of pair column p: row i holds the N-1-i pairs (i, i+1) .. (i, N-1)."""
    i = 0
    row = N - 1
    while p >= row:
        p -= row
        i += 1
        row -= 1
    return i, i + 1 + p


def check_count(name, value, minimum):
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_solver_args(unary, pairwise, M, codes, max_vars, why):
    """Shapes and dtypes of a solver call; returns (B, R, N). `max_vars` bounds N, `why` says
    what bounds it (for the error)."""
    M = check_count("M", M, 1)
    if len(unary.shape) != 2 or unary.shape[1] < 2 or unary.shape[1] % 2 or unary.shape[0] < 1:
        raise ValueError(f"unary must have shape (R >= 1, 2N) with N >= 1 (two values per "
                         f"variable), got {tuple(unary.shape)}")
    R, N = unary.shape[0], unary.shape[1] // 2
    if N > max_vars:
        raise ValueError(f"unary has N={N} variables; this solver takes N <= {max_vars}: {why}")
    if R % M:
        raise ValueError(f"unary has {R} rows, not a multiple of M={M} (row r = b*M + m)")
    B = R // M
    check_array("unary", unary, np.float32, shape=(R, 2 * N))
    check_array("pairwise", pairwise, np.float32, shape=(B, pair_count(N)))
    check_array("codes", codes, np.int32, shape=(R, N))
    return B, R, N


def check_listed_rows(rows, count, R):
    """rows[:count]: row numbers in [0, R) (int32), for the solvers' listed variants (a row listed
    twice is solved twice, to the same codes)."""
    check_array("rows", rows, np.int32, ndim=1)
    if int(count) != count or not 0 <= count <= len(rows):
        raise ValueError(f"count must be an integer in [0, {len(rows)}], got {count!r}")
    listed = np.asarray(rows[:int(count)])
    if listed.size and (listed.min() < 0 or listed.max() >= R):
        raise ValueError(f"rows[:count] must be row numbers in [0, {R}), got {listed.min()} .. "
                         f"{listed.max()}")


def check_host_potentials(unary, pairwise, attractive):
    """Value checks the CPU twins make on host arrays (the launchers cannot without a sync; their
    kernels write codes of -1 for a row with such input instead)."""
    if not np.all(np.isfinite(unary)):
        raise ValueError("unary contains non-finite values (nan or inf)")
    if not np.all(np.isfinite(pairwise)):
        raise ValueError("pairwise contains non-finite values (nan or inf)")
    if attractive and np.any(pairwise < 0):
        raise ValueError("pairwise must be >= 0 for the min-cut arg max (attractive potentials: "
                         "softplus of the pre-activations)")


def check_eps_array(eps):
    """eps is a 1-element 1-D float32 array (read by the kernel: no Python-number variant)."""
    if getattr(eps, "dtype", None) is None or np.dtype(eps.dtype) != np.float32 \
            or tuple(eps.shape) != (1,):
        raise ValueError(f"eps must be a 1-element 1-D float32 array, got "
                         f"{type(eps).__name__} {getattr(eps, 'dtype', '')} "
                         f"{tuple(getattr(eps, 'shape', ()))}")


def check_eps_value(eps):
    """The CPU twins' check of eps[0] (host memory): a finite number > 0."""
    check_eps_array(eps)
    value = float(eps[0])
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"eps must be a finite number > 0, got eps[0] = {value!r}")
