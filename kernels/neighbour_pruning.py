"""N > 1, CPU: the neighbours that cannot be z_dir(+eps), found before they are decoded.

The direct estimator's z_dir(+eps) is the first k maximising V_k = fl(t_k - fl(eps L_k)) with
t_k = fl(h_k + g_k) (kernels/argmax.py, float32, no fused multiply-add on the CPU). A neighbour k
can be skipped when a float32 number L_low <= its computed loss L_k is known with
fl(t_k - fl(eps L_low)) < V_z, the sampled value's: V_k is non-increasing in L_k (every rounding
is monotone), so V_k < V_z and k is never the arg max. A skipped neighbour's loss is stored as
+inf (V = -inf: it cannot win either), so z_dir is bit for bit the one of the full computation.
The two-sided estimator's z_dir(-eps) maximises t + eps L and needs upper bounds: not pruned.

The lower bound is the tangent of a convex function. A neighbour's loss as a function of its
hidden layer h', L(h') = sum_d softplus(o_d) - x_d o_d with o = h' W2 + b2, is convex (softplus
of an affine map, minus a linear term), so with h_z the sampled code's hidden layer
    L(h') >= L(h_z) + v . (h' - h_z),     v = W2 (sigmoid(o_z) - x),
and v is the decoder backward's dhidden of the sampled row divided by the BCE's grad_scale (the
step computes it before the candidates, prune_rows' `dhidden`). Bounding by 0 (losses >= 0)
skips nothing at the paper's eps ~ 1, where eps L_z ~ 200 dwarfs the logit gaps; the tangent
skips 50-80 % of a real N = 20 run's neighbours (BENCHMARKS.md).

Rounding. The bound is about the exact L of the float32 inputs; the step compares computed
float32 losses, so L_low = L_z^ + delta^ - MARGIN_FACTOR * margin, where margin bounds
|L_z^ - L(h_z)| + |L_k^ - L(h')| + |delta^ - v . (h' - h_z)| by the standard worst case
|fl(sum of n products) - sum| <= gamma_n sum |products| (any order, with or without FMA),
gamma_n = n u / (1 - n u), u = 2^-24, and the softplus/sigmoid bodies' 2.72 / 2.25 ulp:
  L^'s pieces  BLAS logits (gamma_H (|W2|^T h)_d per pixel), the bias add, softplus, the float64
               row sum rounded to float32; x . o via u = x W2^T (BLAS, gamma_D) and a float32 dot
               (gamma_H); x . b2 (gamma_D); two float32 subtractions. With a = |W2| 1 (H,) all
               are <= c (h . a + |b2|_1 + D log 2), c = (gamma_{H+2} + gamma_{D+H+1} + gamma_D
               + 18 u) for a neighbour and (gamma_{H+2} + 9 u) for the sampled row.
  delta^       dhidden^ = BLAS((sigmoid(o_z^) - x) s) W2^T: sigmoid's error 1/4 |o_z^ - o_z|
               (<= gamma_{H+2} h_z . w_max + u |b2|_inf, w_max = max_d |W2_jd|) + 2.25 ulp, the
               scaling, gamma_D; then float32 dots with h' (gamma_H |dhidden| . h').
So per row r the margin is w_r . h' + m_r (w_r (H,) float32 rounded up, m_r float64), computed
once per step by prune_rows, and per neighbour only two more float32 dot products over H
(delta and margin) ride along with neighbour_hidden's. MARGIN_FACTOR = 2 on top of the worst
case, for slack in this accounting; measured float32 errors are ~1000x below the margin
(tests/test_neighbour_pruning.py).

  prune_rows(hidden (R,H), dhidden (R,H), weight W2 (H,D), bias b2 (D,), grad_scale s,
             margin_w (R,H), margin_m (R,), v_z (R,))
      the per-row parts of the margin, and v_z[r] = dhidden[r] . hidden[r] (float64)
  select_neighbours(pre, weight W1, codes, K, u, dhidden, margin_w, margin_m, v_z, sampled,
                    logits, gumbel, M, eps, grad_scale, start, hidden, linear, ids, losses)
      -> (count, stop): from candidate `start` on (kernels/candidates.py's numbering), each
      neighbour's hidden layer and x-linear part as neighbour_hidden computes them (bit for bit),
      kept in rows 0 .. count-1 of hidden/linear with its number in ids, or skipped with
      losses[r, n*K + k] = +inf; stops when `hidden` is full or the candidates end (stop = the
      first candidate not looked at)
  store_listed_candidate_losses(cand_out, bias, linear, linear_b2, codes, K, ids, losses)
      store_candidate_losses for the candidates numbered ids[c] (rows c of cand_out)

No CUDA twins: the host reads `count` to size the next product, which on a GPU is a sync per
chunk, and the GPU decodes all candidates in one chunk anyway; a step prunes on the CPU only
(dvae_cupy/step.py).
"""
import math

import numba
import numpy as np

from ._checks import check_array, check_scalar_array
from ._compile import CACHE
from .bce import softplus_row_sum
from .candidates import candidate_count, candidate_slot, neighbour_partial, slot_value

__all__ = ["prune_rows", "select_neighbours", "store_listed_candidate_losses", "MARGIN_FACTOR",
           "loss_lower_bound", "neighbour_row", "bound_dots", "check_grad_scale", "gamma",
           "rounding_margin_constants"]

MARGIN_FACTOR = 2.0
_U = 2.0 ** -24
_INF = np.float32(np.inf)


def gamma(n):
    return n * _U / (1.0 - n * _U)


def rounding_margin_constants(hidden, pixels):
    """(c for a neighbour's loss, c for the sampled row's loss, gamma_H, gamma_D, gamma_{H+2})."""
    neighbour = gamma(hidden + 2) + gamma(pixels + hidden + 1) + gamma(pixels) + 18 * _U
    sampled = gamma(hidden + 2) + 9 * _U
    return neighbour, sampled, gamma(hidden), gamma(pixels), gamma(hidden + 2)


# ---------------------------------------------------------------------------------------------
# Argument checks (shape, dtype and flags only)

def _check_rows(hidden, dhidden, weight, bias, margin_w, margin_m, v_z):
    check_array("hidden", hidden, np.float32, ndim=2)
    R, H = hidden.shape
    check_array("dhidden", dhidden, np.float32, shape=(R, H))
    check_array("weight", weight, np.float32, ndim=2)
    if weight.shape[0] != H:
        raise ValueError(f"weight must have hidden's {H} rows, got shape {tuple(weight.shape)}")
    check_array("bias", bias, np.float32, shape=(weight.shape[1],))
    check_array("margin_w", margin_w, np.float32, shape=(R, H))
    check_array("margin_m", margin_m, np.float64, shape=(R,))
    check_array("v_z", v_z, np.float64, shape=(R,))


def check_grad_scale(grad_scale):
    if not (math.isfinite(grad_scale) and grad_scale > 0):
        raise ValueError(f"grad_scale must be a finite number > 0, got {grad_scale!r}")
    return np.float32(grad_scale)


def _check_select(pre, weight, codes, K, u, dhidden, margin_w, margin_m, v_z, sampled, logits,
                  gumbel, M, eps, start, hidden, linear, ids, losses):
    if int(K) != K or K < 2:
        raise ValueError(f"K must be an integer >= 2, got {K!r}")
    if int(M) != M or M < 1:
        raise ValueError(f"M must be an integer >= 1, got {M!r}")
    check_array("codes", codes, np.int32, ndim=2)
    R, N = codes.shape
    check_array("pre", pre, np.float32, ndim=2)
    H = pre.shape[1]
    for name, array in (("pre", pre), ("u", u), ("dhidden", dhidden), ("margin_w", margin_w)):
        check_array(name, array, np.float32, shape=(R, H))
    check_array("weight", weight, np.float32, shape=(N * int(K), H))
    for name, array in (("margin_m", margin_m), ("v_z", v_z)):
        check_array(name, array, np.float64, shape=(R,))
    check_array("sampled", sampled, np.float32, shape=(R,))
    if R % int(M):
        raise ValueError(f"codes' {R} rows must be B*M with M={M}")
    check_array("logits", logits, np.float32, shape=(R // int(M), N * int(K)))
    check_array("gumbel", gumbel, np.float32, shape=(R, N * int(K)))
    check_array("losses", losses, np.float32, shape=(R, N * int(K)))
    check_scalar_array("eps", eps, np.float32)
    check_array("hidden", hidden, np.float32, ndim=2)
    if hidden.shape[1] != H or hidden.shape[0] < 1:
        raise ValueError(f"hidden must have shape (C >= 1, {H}), got {tuple(hidden.shape)}")
    check_array("linear", linear, np.float32, shape=(hidden.shape[0],))
    check_array("ids", ids, np.int32, shape=(hidden.shape[0],))
    total = candidate_count(R, N, int(K))
    if int(start) != start or not 0 <= start <= total:
        raise ValueError(f"start must be an integer in [0, {total}], got {start!r}")


def _check_listed(cand_out, bias, linear, linear_b2, codes, K, ids, losses):
    check_array("cand_out", cand_out, np.float32, ndim=2)
    count, D = cand_out.shape
    check_array("bias", bias, np.float32, shape=(D,))
    check_array("linear", linear, np.float32, shape=(count,))
    check_array("ids", ids, np.int32, shape=(count,))
    check_array("codes", codes, np.int32, ndim=2)
    R, N = codes.shape
    if int(K) != K or K < 2:
        raise ValueError(f"K must be an integer >= 2, got {K!r}")
    check_array("linear_b2", linear_b2, np.float32, shape=(R,))
    check_array("losses", losses, np.float32, shape=(R, N * int(K)))


# ---------------------------------------------------------------------------------------------
# Per-row parts of the margin

# prune_rows' float64 sums are re-associated so the loops run in vector lanes (per step the
# weight pass is H x D, the rows' R x H): a sum of n float64 terms in any order is within
# n 2^-53 of its value relative to the sum of |terms|, which is ~1e9 times below the float32
# gamma_n the margin allows for the same sums (and a is rounded up by 1 + 2^-30 besides).
@numba.njit(cache=CACHE, fastmath={"reassoc"}, error_model="numpy")
def weight_row_norms(weight, a, w_max):
    """a[j] = sum_d |W2_jd| (rounded up) and w_max[j] = max_d |W2_jd|, in float64.
    The max is taken over the bit patterns of |W2_jd| (int32, the sign bit cleared), whose order
    is the floats' for values >= 0: LLVM vectorises an integer max, not a float one (its NaN
    rules), and one loop with both ran at ~1.7 ns an element (~410 us for 300 x 784), the two
    apart at ~0.4. A NaN's pattern is above every finite one's, so a NaN weight gives w_max NaN
    (and a NaN margin, which prunes nothing)."""
    bits = weight.view(np.int32)
    largest_bits = np.empty(1, np.int32)
    largest = largest_bits.view(np.float32)
    for j in range(weight.shape[0]):
        total = 0.0
        for d in range(weight.shape[1]):
            total += np.float64(abs(weight[j, d]))
        a[j] = total * (1.0 + 2.0 ** -30)
        pattern = 0
        for d in range(weight.shape[1]):
            x = bits[j, d] & 0x7FFFFFFF
            pattern = x if x > pattern else pattern
        largest_bits[0] = pattern
        w_max[j] = largest[0]


@numba.njit(cache=CACHE, fastmath={"reassoc"}, error_model="numpy")
def prune_rows_loop(hidden, dhidden, weight, bias, grad_scale, c_neighbour, c_sampled, gamma_h,
                    gamma_d, gamma_h2, margin_w, margin_m, v_z):
    R, H = hidden.shape
    D = weight.shape[1]
    a = np.empty(H)        # |W2| 1
    w_max = np.empty(H)    # max_d |W2_jd|
    weight_row_norms(weight, a, w_max)
    b_l1, b_inf = 0.0, 0.0
    for d in range(D):
        b_l1 += abs(np.float64(bias[d]))
        b_inf = max(b_inf, abs(np.float64(bias[d])))
    constant = b_l1 + D * math.log(2.0)
    s = np.float64(grad_scale)
    for r in range(R):
        h_a, h_wmax, h_v, h_absv = 0.0, 0.0, 0.0, 0.0
        for j in range(H):
            h = np.float64(hidden[r, j])
            h_a += h * a[j]
            h_wmax += h * w_max[j]
            h_v += h * np.float64(dhidden[r, j])
            h_absv += h * abs(np.float64(dhidden[r, j]))
        # error of v^ / s per unit of a_j (the sigmoid's input error, its body, the scaling, BLAS)
        eta = 0.25 * (gamma_h2 * h_wmax + _U * b_inf) + 5.5 * _U + gamma_d * (1.0 + 16.0 * _U)
        for j in range(H):
            weight_j = (c_neighbour + eta) * a[j] + gamma_h * abs(np.float64(dhidden[r, j])) / s
            margin_w[r, j] = np.float32(weight_j * (1.0 + 2.0 ** -20))  # rounded up
        margin_m[r] = (c_sampled * (h_a + constant) + c_neighbour * constant + eta * h_a
                       + gamma_h * h_absv / s)
        v_z[r] = h_v


def prune_rows(hidden, dhidden, weight, bias, grad_scale, margin_w, margin_m, v_z):
    """The per-row parts of the rounding margin and v_z = dhidden . hidden (see the module
    docstring); grad_scale: the float32 scale bce_rows applied to the sampled rows' gradient."""
    _check_rows(hidden, dhidden, weight, bias, margin_w, margin_m, v_z)
    constants = rounding_margin_constants(hidden.shape[1], weight.shape[1])
    prune_rows_loop(hidden, dhidden, weight, bias, check_grad_scale(grad_scale), *constants,
                    margin_w, margin_m, v_z)


# ---------------------------------------------------------------------------------------------
# The selection

# The float32 loops over one hidden row, compiled with re-association (vector lanes) and FMA as
# neighbour_hidden_loop is, and kept out of select_neighbours_loop so that the arg max arithmetic
# there stays plain IEEE float32 (no contraction). neighbour_row is neighbour_hidden_loop's body
# (the same inlined neighbour_partial, so the same hidden layer and `linear`, bit for bit:
# tested); bound_dots then reads the row back for the tangent's and the margin's dot products.
@numba.njit(cache=CACHE, fastmath={"reassoc", "contract"})
def neighbour_row(pre, weight, u, r, row_old, row_new, c, hidden):
    return neighbour_partial(pre, weight, u, r, row_old, row_new, c, 0, 1, hidden)


@numba.njit(cache=CACHE, fastmath={"reassoc", "contract"})
def bound_dots(dhidden, margin_w, r, hidden, c):
    delta = np.float32(0.0)
    margin = np.float32(0.0)
    for j in range(hidden.shape[1]):
        delta += dhidden[r, j] * hidden[c, j]
        margin += margin_w[r, j] * hidden[c, j]
    return delta, margin


@numba.njit(inline="always")
def loss_lower_bound(sampled, dot, dmargin, v_z, margin_m, s, margin_factor, gamma_h):
    """A float32 L_low <= the neighbour's computed loss: the tangent at the sampled code
    (sampled + (dot - v_z) / s, dot = dhidden . hidden') minus the rounding margin, rounded down."""
    margin = margin_factor * (np.float64(dmargin) * (1.0 + 2.0 * gamma_h) + margin_m)
    low = np.float64(sampled) + (np.float64(dot) - v_z) / s - margin
    low -= abs(low) * 2.0 ** -22
    return np.float32(low)


@numba.njit(cache=CACHE, error_model="numpy")
def select_neighbours_loop(pre, weight, codes, K, u, dhidden, margin_w, margin_m, v_z, sampled,
                           logits, gumbel, M, eps, grad_scale, margin_factor, gamma_h, start,
                           hidden, linear, ids, losses):
    e = eps[0]
    if not (e > 0 and e < np.inf):
        raise ValueError("eps[0] must be a finite number > 0")
    R, N = codes.shape
    total = R * N * (K - 1)
    s = np.float64(grad_scale)
    capacity = hidden.shape[0]
    count = 0
    g = start
    while g < total and count < capacity:
        r, n, j = candidate_slot(g, N, K)
        z = codes[r, n]
        k = slot_value(j, z)
        b = r // M
        c0 = n * K
        lin = neighbour_row(pre, weight, u, r, c0 + z, c0 + k, count, hidden)
        dot, dmargin = bound_dots(dhidden, margin_w, r, hidden, count)
        low32 = loss_lower_bound(sampled[r], dot, dmargin, v_z[r], margin_m[r], s,
                                 margin_factor, gamma_h)
        # the arg max kernel's float32 operations, for k at L_low and for the sampled value
        v_low = (logits[b, c0 + k] + gumbel[r, c0 + k]) - e * low32
        v_z_value = (logits[b, c0 + z] + gumbel[r, c0 + z]) - e * sampled[r]
        if v_low < v_z_value:
            losses[r, c0 + k] = _INF
        else:
            linear[count] = lin
            ids[count] = g
            count += 1
        g += 1
    return count, g


def select_neighbours(pre, weight, codes, K, u, dhidden, margin_w, margin_m, v_z, sampled, logits,
                      gumbel, M, eps, grad_scale, start, hidden, linear, ids, losses):
    """Neighbours from `start` on: kept ones' hidden layers into hidden[:count] (numbers in ids),
    skipped ones' losses +inf; returns (count, stop). See the module docstring."""
    _check_select(pre, weight, codes, K, u, dhidden, margin_w, margin_m, v_z, sampled, logits,
                  gumbel, M, eps, start, hidden, linear, ids, losses)
    count, stop = select_neighbours_loop(
        pre, weight, codes, np.int32(K), u, dhidden, margin_w, margin_m, v_z, sampled, logits,
        gumbel, np.int32(M), eps, check_grad_scale(grad_scale), MARGIN_FACTOR,
        gamma(pre.shape[1]), np.int64(start), hidden, linear, ids, losses)
    return int(count), int(stop)


# ---------------------------------------------------------------------------------------------
# The kept neighbours' losses

@numba.njit(cache=CACHE)
def store_listed_candidate_losses_loop(cand_out, bias, linear, linear_b2, codes, K, ids, losses):
    N = codes.shape[1]
    terms = np.empty(cand_out.shape[1], np.float32)
    for c in range(cand_out.shape[0]):
        r, n, j = candidate_slot(ids[c], N, K)
        losses[r, n * K + slot_value(j, codes[r, n])] = (
            softplus_row_sum(cand_out[c], bias, terms) - linear[c] - linear_b2[r])


def store_listed_candidate_losses(cand_out, bias, linear, linear_b2, codes, K, ids, losses):
    """store_candidate_losses (kernels/candidates.py) for the candidates numbered ids[c]: the
    same float32 operations, so a kept neighbour's loss is bit for bit the unpruned one."""
    _check_listed(cand_out, bias, linear, linear_b2, codes, K, ids, losses)
    store_listed_candidate_losses_loop(cand_out, bias, linear, linear_b2, codes, np.int32(K), ids,
                                       losses)
