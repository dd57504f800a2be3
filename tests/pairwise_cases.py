"""Random potential sets for the pairwise (structured binary) solvers, with ties excluded by
construction, and the authors' PyMaxflow construction. Shared by tests/test_pairwise_*.py and
tests/cudasim/test_pairwise_*_cuda.py (tests/ is on sys.path: tests/conftest.py lives there).

Every set is drawn in float32 (what the kernels take), its 2^N scores are computed in float64 by
the reference (reference.all_code_scores) from those same float32 values, and any set whose best
and second-best scores are closer than GAP is redrawn. The kernels compute in float64 from the
float32 inputs, so their rounding (~1e-12 here) is far below GAP and the arg max is unique.
"""
import numpy as np

from dvae_cupy import reference as ref

GAP = 1e-5


def _softplus(a):
    return np.logaddexp(0.0, a)


def draw_potentials(rng, count, N, mode):
    """(unary (count, 2N), pairwise (count, P)) float32, mixing regimes per set: unary scales
    0.3 .. 10, a third shifted by a common -200 (the size of eps * L in z_dir's unaries);
    attractive pairwise = softplus(normal(mu, 1)), mu in -3 .. 1, a fifth of the pairs exactly 0;
    signed pairwise = normal * (0.3 .. 3), either sign."""
    P = ref.pair_count(N)
    scale = rng.choice([0.3, 1.0, 3.0, 10.0], size=(count, 1, 1))
    unary = rng.normal(size=(count, N, 2)) * scale
    shifted = rng.uniform(size=count) < 1 / 3
    unary[shifted] += rng.normal(-200.0, 5.0, size=(int(shifted.sum()), N, 1))
    if mode == "attractive":
        mu = rng.choice([-3.0, -1.0, 0.0, 1.0], size=(count, 1))
        pairwise = _softplus(rng.normal(size=(count, P)) + mu)
        pairwise[rng.uniform(size=(count, P)) < 0.2] = 0.0
    else:
        pairwise = rng.normal(size=(count, P)) * rng.choice([0.3, 1.0, 3.0], size=(count, 1))
    return (unary.reshape(count, 2 * N).astype(np.float32), pairwise.astype(np.float32))


def coupled_potentials(rng, count, N, mode):
    """Sets the min-cut's forcing pass (kernels/pairwise_mincut.py) mostly leaves undecided, so
    the flow does the work: each variable's unary difference a_i is minus half its pair sum
    plus noise (spread 0.3 .. 3), which puts both of its values within the pairs' reach.
    Attractive pairwise = softplus(normal), signed = normal."""
    P = ref.pair_count(N)
    pairwise = rng.normal(size=(count, P))
    if mode == "attractive":
        pairwise = _softplus(pairwise)
    first, second = ref.pair_indices(N)
    sums = np.zeros((count, N))
    np.add.at(sums, (slice(None), first), pairwise)
    np.add.at(sums, (slice(None), second), pairwise)
    a = -0.5 * sums + rng.normal(size=(count, N)) * rng.choice([0.3, 1.0, 3.0], size=(count, 1))
    unary = np.stack([-a / 2, a / 2], axis=-1)
    return unary.reshape(count, 2 * N).astype(np.float32), pairwise.astype(np.float32)


def best_codes_and_gaps(unary, pairwise):
    """(the brute-force arg max (count, N) int32, best minus second-best score): every code
    scored in float64 by the reference (reference.code_scores) on the float32 values, in blocks
    of codes and groups of sets so memory stays bounded; ties go to the smallest code."""
    count, width = unary.shape
    N = width // 2
    block = 2 ** min(N, 14)
    group = max(1, 2 ** 22 // block)
    best = np.zeros(count, dtype=np.int64)
    gaps = np.empty(count)
    for first in range(0, count, group):
        u = unary[first:first + group].astype(np.float64).reshape(-1, N, 2)
        w = pairwise[first:first + group].astype(np.float64)
        top1 = np.full(len(u), -np.inf)
        top2 = np.full(len(u), -np.inf)
        for start in range(0, 2 ** N, block):
            scores = ref.code_scores(u, w, ref.binary_codes(start, start + block, N))
            rows = np.arange(len(u))
            top = np.argmax(scores, axis=-1)
            block1 = scores[rows, top]
            scores[rows, top] = -np.inf
            block2 = scores.max(axis=-1) if scores.shape[1] > 1 else np.full(len(u), -np.inf)
            wins = block1 > top1
            best[first + np.flatnonzero(wins)] = start + top[wins]
            top2 = np.maximum(np.maximum(top2, block2), np.minimum(top1, block1))
            top1 = np.maximum(top1, block1)
        gaps[first:first + group] = top1 - top2
    return ((best[:, None] >> np.arange(N)) & 1).astype(np.int32), gaps


def untied_potentials(rng, count, N, mode, gap=GAP, draw=draw_potentials):
    """draw's sets (draw_potentials, or coupled_potentials) with every set's top-2 score gap >=
    gap (near ties redrawn); returns (unary, pairwise, truth) with truth the brute-force arg max
    codes (count, N) int32."""
    unary, pairwise = draw(rng, count, N, mode)
    truth, gaps = best_codes_and_gaps(unary, pairwise)
    for _ in range(50):
        near = np.flatnonzero(gaps < gap)
        if len(near) == 0:
            return unary, pairwise, truth
        unary[near], pairwise[near] = draw(rng, len(near), N, mode)
        truth[near], gaps[near] = best_codes_and_gaps(unary[near], pairwise[near])
    raise AssertionError("could not draw untied potentials")


def brute_force_codes(unary, pairwise):
    """reference.structured_argmax_enumerate on the float32 values in float64, int32 (R, N)."""
    N = unary.shape[1] // 2
    u = unary.astype(np.float64).reshape(len(unary), N, 2)
    return ref.structured_argmax_enumerate(u, pairwise.astype(np.float64)).astype(np.int32)


def pymaxflow_argmax(maxflow, unary_row, pairwise_row):
    """The authors' min-cut (run_structured_maxflow.py), rebuilt from its description: source
    capacity -(a_i + sum_j w_ij / 2) on node i (a negative one acts as a sink capacity),
    w_ij / 2 each way between i and j; z_i = 1 where node i ends on the sink side."""
    N = len(unary_row) // 2
    a = unary_row[1::2].astype(np.float64) - unary_row[0::2].astype(np.float64)
    w = pairwise_row.astype(np.float64)
    first, second = ref.pair_indices(N)
    half_sums = np.zeros(N)
    np.add.at(half_sums, first, w / 2)
    np.add.at(half_sums, second, w / 2)
    graph = maxflow.Graph[float]()
    nodes = graph.add_nodes(N)
    for i in range(N):
        graph.add_tedge(nodes[i], -a[i] - half_sums[i], 0.0)
    for p in range(len(w)):
        graph.add_edge(nodes[first[p]], nodes[second[p]], w[p] / 2, w[p] / 2)
    graph.maxflow()
    return np.array([graph.get_segment(nodes[i]) for i in range(N)], dtype=np.int32)


# Sets whose max flow needs a reverse residual: the flow the greedy two-hop start pushes on
# i -> j must be partly cancelled (more than j -> i's own w_ij / 2), so an augmenting step that
# did not add the bottleneck back on j -> i cuts wrongly on them. Found by a search over small
# integer graphs (200,000 random sparse graphs of N = 5 and 6: 20 such sets, these with a top-2
# score gap of 1): (a_i = phi_i(1) - phi_i(0), w in pair order, the brute-force arg max).
REVERSE_RESIDUAL_SETS = [
    ([-3, -10, -2, -6, 0], [0, 2, 0, 2, 6, 0, 6, 4, 0, 0], [1, 1, 1, 0, 1]),
    ([-5, -9, -10, -5, 1], [4, 6, 4, 0, 0, 4, 2, 6, 0, 4], [1, 1, 1, 1, 1]),
    ([-1, -3, -9, -5, 0, -5], [0, 0, 6, 0, 0, 6, 2, 0, 6, 0, 4, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]),
    ([-3, -9, -4, -13, -1, -7], [6, 0, 6, 0, 0, 2, 0, 2, 0, 6, 0, 8, 8, 0, 0], [1, 1, 1, 1, 1, 1]),
]


def reverse_residual_sets(N):
    """REVERSE_RESIDUAL_SETS of N variables as (unary (R, 2N), pairwise (R, P) float32, truth
    (R, N) int32), unary phi_i(0) = 0, phi_i(1) = a_i."""
    rows = [(a, w, z) for a, w, z in REVERSE_RESIDUAL_SETS if len(a) == N]
    unary = np.zeros((len(rows), N, 2), np.float32)
    unary[:, :, 1] = [a for a, _, _ in rows]
    pairwise = np.array([w for _, w, _ in rows], np.float32)
    truth = np.array([z for _, _, z in rows], np.int32)
    return unary.reshape(len(rows), 2 * N), pairwise, truth


def undecided_counts(unary, pairwise):
    """How many variables the solvers' forcing sweep (kernels/_pairwise.py) leaves undecided,
    per row (M = 1)."""
    from dvae_cupy.kernels._pairwise import forced_codes_of_row
    return np.array([forced_codes_of_row(unary[r], pairwise[r])[0] for r in range(len(unary))])


def integer_potentials(rng, count, N, unary_range, pairwise_range):
    """Small-integer sets (exact scores, many tied maxima): unary (count, 2N) and pairwise
    (count, P) float32, uniform over the inclusive (low, high) ranges."""
    unary = rng.integers(unary_range[0], unary_range[1] + 1, size=(count, 2 * N))
    pairwise = rng.integers(pairwise_range[0], pairwise_range[1] + 1,
                            size=(count, ref.pair_count(N)))
    return unary.astype(np.float32), pairwise.astype(np.float32)


def assert_forced_values_are_every_maximisers(unary, pairwise):
    """Every variable the forcing sweep decides has its value in every maximiser of its row
    (brute force over all 2^N codes); returns how many rows had a variable forced."""
    from dvae_cupy.kernels._pairwise import forced_codes_of_row
    count, N = len(unary), unary.shape[1] // 2
    codes = ref.binary_codes(0, 2 ** N, N)
    scores = ref.code_scores(unary.astype(np.float64).reshape(count, N, 2),
                             pairwise.astype(np.float64), codes)
    forced_somewhere = 0
    for r in range(count):
        maximisers = codes[np.flatnonzero(scores[r] == scores[r].max())]
        _, state = forced_codes_of_row(unary[r], pairwise[r])
        for i in np.flatnonzero(state >= 0):
            np.testing.assert_array_equal(maximisers[:, i], state[i], err_msg=f"row {r}")
        forced_somewhere += (state >= 0).any()
    return forced_somewhere
