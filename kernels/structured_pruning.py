"""The pairwise model's z_dir(+eps) without decoding the neighbours it cannot need (CPU).

The structured direct estimator's z_dir is the exact arg max of
    S(z) = sum_i s[r, 2i + z_i] + sum_{i<j} w_ij z_i z_j,   s = shift(t, eps, L)
(kernels/pairwise_potentials.py: t the perturbed unaries, L the candidate losses, column 2i + k
the loss with variable i set to k; shift is fl(t - eps L), non-increasing in L). Column 2i + z_i
(z = z_opt) holds the sampled code's loss, which the step has; only the N flipped neighbours need
the decoder's H x D product. Replace the undecoded ones' L by a lower bound L_low <= L (the
tangent bound of kernels/neighbour_pruning.py, the same formula and margin): their s can only
grow, so the pruned score S_low(z) >= S(z) for every z, with equality where z flips no undecoded
variable. Hence if z* = arg max S_low flips no undecoded variable,
    S(z*) = S_low(z*) >= S_low(z) >= S(z)   for all z,
and z* is the arg max of S: the unpruned z_dir. Otherwise the variables z* flips are decoded,
their exact losses replace the bounds, and those rows are solved again; each round decodes at
least one more neighbour of every row it re-solves, so it ends within N rounds (on Fashion-MNIST,
one solve of every row and a second of ~3 % of them; BENCHMARKS.md). The first neighbours
decoded are a guess, the ones whose flip alone would raise S_low; the solves decide the rest.
The argument holds for any exact solver of the float32 s it is given (min-cut or enumeration,
both exact to ~1e-13 of the scores in float64): the pruned step's z_dir is the unpruned one
wherever the arg max is not tied within that, which the tests check on real steps, bit for bit.
The two-sided estimator's z_dir(-eps) maximises t + eps L and needs upper bounds: not pruned.

  neighbour_loss_bounds(pre, weight, codes, u, dhidden, margin_w, margin_m, v_z, sampled,
                        grad_scale, scratch, losses, decoded)
      losses[r, 2i + 1 - z_i] = L_low of neighbour (r, i) (select_neighbours' bound, bit for
      bit), losses[r, 2i + z_i] = sampled[r]; decoded[r, i] = 0. scratch (1, H): a hidden row.
  list_flipped_neighbours(pre, weight, codes, trial, u, start, hidden, linear, ids, decoded,
                          rows, row_count) -> (count, stop, row_count)
      from neighbour `start` on (kernels/candidates.py's numbering, K = 2: neighbour r*N + i),
      every (r, i) with trial[r, i] != codes[r, i] and decoded[r, i] == 0: its hidden layer
      and x-linear part into row `count` of hidden/linear (neighbour_hidden's, bit for bit),
      its number into ids, decoded[r, i] = 1, and r appended to rows[row_count:] once; stops
      when `hidden` is full or the neighbours end (stop = the first not looked at).
  single_flip_codes(shifted, pairwise, M, codes, trial)
      trial = codes with every variable flipped whose flip alone raises the score of shifted
The model decodes the listed rows (the product, then
kernels/neighbour_pruning.store_listed_candidate_losses into `losses`) and re-solves the listed
rows (mincut_argmax_listed / enumeration_argmax_listed): dvae_cupy/model.py,
Model.pruned_structured_direct_codes.

No CUDA twins, as for kernels/neighbour_pruning.py: the host reads each round's counts.
"""
import numba
import numpy as np

from ._checks import check_array
from ._compile import CACHE
from ._pairwise import check_solver_args
from .candidates import candidate_count
from .pairwise_mincut import MINCUT_MAX_VARS
from .neighbour_pruning import (MARGIN_FACTOR, bound_dots, check_grad_scale, gamma,
                                loss_lower_bound, neighbour_row)

__all__ = ["neighbour_loss_bounds", "single_flip_codes", "list_flipped_neighbours"]


# ---------------------------------------------------------------------------------------------
# Argument checks (shape, dtype and ranges only)

def _check_codes(codes, pre, weight, u):
    check_array("codes", codes, np.int32, ndim=2)
    R, N = codes.shape
    check_array("pre", pre, np.float32, ndim=2)
    H = pre.shape[1]
    for name, array in (("pre", pre), ("u", u)):
        check_array(name, array, np.float32, shape=(R, H))
    check_array("weight", weight, np.float32, shape=(2 * N, H))
    return R, N, H


def _check_bounds(pre, weight, codes, u, dhidden, margin_w, margin_m, v_z, sampled, scratch,
                  losses, decoded):
    R, N, H = _check_codes(codes, pre, weight, u)
    for name, array in (("dhidden", dhidden), ("margin_w", margin_w)):
        check_array(name, array, np.float32, shape=(R, H))
    for name, array in (("margin_m", margin_m), ("v_z", v_z)):
        check_array(name, array, np.float64, shape=(R,))
    check_array("sampled", sampled, np.float32, shape=(R,))
    check_array("scratch", scratch, np.float32, shape=(1, H))
    check_array("losses", losses, np.float32, shape=(R, 2 * N))
    check_array("decoded", decoded, np.uint8, shape=(R, N))


def _check_flipped(pre, weight, codes, trial, u, start, hidden, linear, ids, decoded, rows,
                   row_count):
    R, N, H = _check_codes(codes, pre, weight, u)
    check_array("trial", trial, np.int32, shape=(R, N))
    check_array("hidden", hidden, np.float32, ndim=2)
    if hidden.shape[1] != H or hidden.shape[0] < 1:
        raise ValueError(f"hidden must have shape (C >= 1, {H}), got {tuple(hidden.shape)}")
    check_array("linear", linear, np.float32, shape=(hidden.shape[0],))
    check_array("ids", ids, np.int32, shape=(hidden.shape[0],))
    check_array("decoded", decoded, np.uint8, shape=(R, N))
    check_array("rows", rows, np.int32, shape=(R,))
    total = candidate_count(R, N, 2)
    if int(start) != start or not 0 <= start <= total:
        raise ValueError(f"start must be an integer in [0, {total}], got {start!r}")
    if int(row_count) != row_count or not 0 <= row_count <= R:
        raise ValueError(f"row_count must be an integer in [0, {R}], got {row_count!r}")


# ---------------------------------------------------------------------------------------------
# The bounds

@numba.njit(cache=CACHE, error_model="numpy")
def neighbour_loss_bounds_loop(pre, weight, codes, u, dhidden, margin_w, margin_m, v_z, sampled,
                               grad_scale, margin_factor, gamma_h, scratch, losses, decoded):
    R, N = codes.shape
    s = np.float64(grad_scale)
    for r in range(R):
        for i in range(N):
            z = codes[r, i]
            neighbour_row(pre, weight, u, r, 2 * i + z, 2 * i + 1 - z, 0, scratch)
            dot, dmargin = bound_dots(dhidden, margin_w, r, scratch, 0)
            losses[r, 2 * i + 1 - z] = loss_lower_bound(sampled[r], dot, dmargin, v_z[r],
                                                        margin_m[r], s, margin_factor, gamma_h)
            losses[r, 2 * i + z] = sampled[r]
            decoded[r, i] = 0


def neighbour_loss_bounds(pre, weight, codes, u, dhidden, margin_w, margin_m, v_z, sampled,
                          grad_scale, scratch, losses, decoded):
    """Every neighbour's loss lower bound into losses, the sampled value's columns exact, and
    decoded cleared (see the module docstring); grad_scale: bce_rows' scale of dhidden."""
    _check_bounds(pre, weight, codes, u, dhidden, margin_w, margin_m, v_z, sampled, scratch,
                  losses, decoded)
    neighbour_loss_bounds_loop(pre, weight, codes, u, dhidden, margin_w, margin_m, v_z, sampled,
                               check_grad_scale(grad_scale), MARGIN_FACTOR,
                               gamma(pre.shape[1]), scratch, losses, decoded)


# ---------------------------------------------------------------------------------------------
# The first guess: the single flips that pay

@numba.njit(cache=CACHE)
def single_flip_codes_loop(shifted, pairwise, M, codes, trial):
    R, N = codes.shape
    field = np.empty(N)  # field[i] = sum_j w_ij z_j, from one pass over the pairs
    for r in range(R):
        b = r // M
        field[:] = 0.0
        p = 0
        for i in range(N):
            for j in range(i + 1, N):
                w = np.float64(pairwise[b, p])
                if codes[r, j]:
                    field[i] += w
                if codes[r, i]:
                    field[j] += w
                p += 1
        for i in range(N):
            gain_on = (np.float64(shifted[r, 2 * i + 1]) - np.float64(shifted[r, 2 * i])) + field[i]
            z = codes[r, i]
            gain = gain_on if z == 0 else -gain_on
            trial[r, i] = 1 - z if gain > 0.0 else z


def single_flip_codes(shifted, pairwise, M, codes, trial):
    """trial[r] = codes[r] with every variable flipped whose flip alone raises the score of
    `shifted` (the bounds): the first neighbours to decode. Only a guess (the solve that follows
    decides), so its arithmetic needs no care."""
    check_solver_args(shifted, pairwise, M, codes, MINCUT_MAX_VARS, "the solvers' largest")
    check_array("trial", trial, np.int32, shape=codes.shape)
    single_flip_codes_loop(shifted, pairwise, np.int32(M), codes, trial)


# ---------------------------------------------------------------------------------------------
# The flipped neighbours still undecoded

@numba.njit(cache=CACHE)
def list_flipped_neighbours_loop(pre, weight, codes, trial, u, start, hidden, linear, ids,
                                 decoded, rows, row_count):
    R, N = codes.shape
    total = R * N
    capacity = hidden.shape[0]
    count = 0
    g = start
    while g < total and count < capacity:
        r, i = g // N, g % N
        z = codes[r, i]
        if trial[r, i] != z and decoded[r, i] == 0:
            linear[count] = neighbour_row(pre, weight, u, r, 2 * i + z, 2 * i + 1 - z, count,
                                          hidden)
            ids[count] = g
            decoded[r, i] = 1
            if row_count == 0 or rows[row_count - 1] != r:
                rows[row_count] = r
                row_count += 1
            count += 1
        g += 1
    return count, g, row_count


def list_flipped_neighbours(pre, weight, codes, trial, u, start, hidden, linear, ids, decoded,
                            rows, row_count):
    """The undecoded neighbours that `trial` flips, from `start` on, into hidden[:count] (numbers
    in ids; their rows appended to rows); returns (count, stop, row_count)."""
    _check_flipped(pre, weight, codes, trial, u, start, hidden, linear, ids, decoded, rows,
                   row_count)
    count, stop, row_count = list_flipped_neighbours_loop(
        pre, weight, codes, trial, u, np.int64(start), hidden, linear, ids, decoded, rows,
        np.int64(row_count))
    return int(count), int(stop), int(row_count)
