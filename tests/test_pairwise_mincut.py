"""kernels/pairwise_mincut.py (CPU twin) against brute-force enumeration, against PyMaxflow's
min-cut (the authors' solver, where installed) and the reference's plain Edmonds-Karp.

Sets are drawn with their top-2 score gap >= pairwise_cases.GAP (ties excluded by construction),
so codes are compared exactly. The CUDA twin is checked under the simulator
(tests/cudasim/test_pairwise_mincut_cuda.py) and compiled to PTX (tests/test_ptx.py).
"""
import numpy as np
import pytest

from dvae_cupy import reference as ref
from dvae_cupy.kernels import pairwise_mincut
from pairwise_cases import (assert_forced_values_are_every_maximisers, coupled_potentials,
                            draw_potentials, integer_potentials, pymaxflow_argmax,
                            reverse_residual_sets, undecided_counts, untied_potentials)

SETS_PER_N = 10_000


def solve(unary, pairwise, M=1):
    codes = np.full((len(unary), unary.shape[1] // 2), -1, dtype=np.int32)
    pairwise_mincut.mincut_argmax(unary, pairwise, M, codes)
    return codes


@pytest.mark.slow
@pytest.mark.parametrize("N", range(1, 13))
def test_mincut_equals_brute_force_on_10000_sets(N):
    # the brute force dominates: ~3 s for all twelve N on the 2-core machine
    unary, pairwise, truth = untied_potentials(np.random.default_rng([1, N]), SETS_PER_N, N,
                                               "attractive")
    np.testing.assert_array_equal(solve(unary, pairwise), truth)


@pytest.mark.parametrize("N", [2, 5, 15, 18])
def test_mincut_equals_brute_force_beyond_the_slow_sizes(N):
    # N = 15 (published) and 18: many augmenting paths after the greedy start
    count = {2: 2000, 5: 2000, 15: 300, 18: 20}[N]  # the brute force costs ~2^N per set
    unary, pairwise, truth = untied_potentials(np.random.default_rng([2, N]), count, N,
                                               "attractive")
    np.testing.assert_array_equal(solve(unary, pairwise), truth)


@pytest.mark.parametrize("N", [2, 3, 5, 8, 12, 15])
def test_mincut_equals_brute_force_where_the_forcing_leaves_the_flow_to_do(N):
    # draw_potentials' sets are ~97 % decided by the forcing pass alone; these mostly are not
    count = 300 if N == 15 else 2000
    unary, pairwise, truth = untied_potentials(np.random.default_rng([5, N]), count, N,
                                               "attractive", draw=coupled_potentials)
    undecided = undecided_counts(unary, pairwise)
    assert (undecided > 0).mean() > {2: 0.2, 3: 0.3}.get(N, 0.6)
    np.testing.assert_array_equal(solve(unary, pairwise), truth)


@pytest.mark.parametrize("N", [5, 6])
def test_sets_whose_max_flow_needs_a_reverse_residual(N):
    unary, pairwise, truth = reverse_residual_sets(N)
    np.testing.assert_array_equal(truth, ref.structured_argmax_enumerate(
        unary.astype(np.float64).reshape(len(unary), N, 2), pairwise.astype(np.float64)))
    assert (undecided_counts(unary, pairwise) > 0).all()  # the flow decides them
    np.testing.assert_array_equal(solve(unary, pairwise), truth)


def test_most_training_like_rows_need_no_flow():
    # the brute-force tests above cover both paths: forced rows and min-cut rows
    unary, pairwise = draw_potentials(np.random.default_rng(6), 2000, 15, "attractive")
    undecided = undecided_counts(unary, pairwise)
    assert 0.9 < (undecided == 0).mean() < 1.0


@pytest.mark.parametrize("N", [2, 4, 7])
def test_forced_values_are_those_of_every_maximiser_ties_included(N):
    # integer potentials: many codes tie for the maximum; a forced variable must take its
    # value in all of them, an undecided one may differ between them
    count = 3000
    unary, pairwise = integer_potentials(np.random.default_rng([7, N]), count, N, (-4, 4), (0, 2))
    assert assert_forced_values_are_every_maximisers(unary, pairwise) > count // 2


def test_pairwise_potentials_are_shared_by_the_m_rows_of_a_data_point():
    rng = np.random.default_rng(3)
    B, M, N = 40, 3, 6
    unary, _, _ = untied_potentials(rng, B * M, N, "attractive")
    pairwise = (np.abs(rng.normal(size=(B, ref.pair_count(N)))) * 2).astype(np.float32)
    truth = ref.structured_argmax_enumerate(unary.astype(np.float64).reshape(B, M, N, 2),
                                            pairwise.astype(np.float64)[:, None])
    np.testing.assert_array_equal(solve(unary, pairwise, M), truth.reshape(B * M, N))


def test_mincut_equals_pymaxflow():
    maxflow = pytest.importorskip("maxflow", reason="PyMaxflow (pip install PyMaxflow) is a "
                                                    "test-only dependency")
    for N in (2, 3, 5, 8, 12, 15):  # 3,000 sets
        unary, pairwise, truth = untied_potentials(np.random.default_rng([4, N]), 500, N,
                                                   "attractive")
        theirs = np.array([pymaxflow_argmax(maxflow, u, w) for u, w in zip(unary, pairwise)])
        np.testing.assert_array_equal(theirs, truth)  # the construction is the published one
        np.testing.assert_array_equal(solve(unary, pairwise), theirs)


def test_mincut_equals_pymaxflow_beyond_brute_force():
    # N = 30 and 64 (the kernel's limit): too many codes to enumerate; near ties are not
    # excluded here, but random float potentials have none at float64 resolution in practice
    maxflow = pytest.importorskip("maxflow", reason="PyMaxflow is a test-only dependency")
    rng = np.random.default_rng(6)
    for N in (30, pairwise_mincut.MINCUT_MAX_VARS):
        unary, pairwise = draw_potentials(rng, 100, N, "attractive")
        theirs = np.array([pymaxflow_argmax(maxflow, u, w) for u, w in zip(unary, pairwise)])
        np.testing.assert_array_equal(solve(unary, pairwise), theirs)


@pytest.mark.parametrize("N", [1, 2, 4, 7, 10])
def test_reference_edmonds_karp_equals_brute_force(N):
    unary, pairwise, truth = untied_potentials(np.random.default_rng([5, N]), 150, N,
                                               "attractive")
    codes = ref.structured_argmax_mincut(unary.astype(np.float64).reshape(-1, N, 2),
                                         pairwise.astype(np.float64))
    np.testing.assert_array_equal(codes, truth)


def test_ties_give_the_smallest_source_side():
    # all-zero potentials: every code scores 0; the min cut's source side is empty
    codes = solve(np.zeros((2, 8), np.float32), np.zeros((2, 6), np.float32))
    np.testing.assert_array_equal(codes, 0)
    # a_0 = 1 and w_01 = -... : z = (1, 0) and (1, 1) tie when a_1 + w_01 = 0 can't be attractive,
    # so tie z = (0, 0) and (1, 1): a = (-1, -1), w = 2 -> both score 0; (1,0), (0,1) score -1
    unary = np.array([[0, -1, 0, -1]], np.float32)
    codes = solve(unary, np.array([[2]], np.float32))
    np.testing.assert_array_equal(codes, [[0, 0]])
    np.testing.assert_array_equal(ref.structured_argmax_mincut(
        unary.astype(np.float64).reshape(1, 2, 2), np.array([[2.0]])), [[0, 0]])


# ---------------------------------------------------------------------------------------------
# Bad input: errors name the argument

def valid(N=3, B=2, M=1):
    return (np.zeros((B * M, 2 * N), np.float32), np.ones((B, ref.pair_count(N)), np.float32),
            M, np.zeros((B * M, N), np.int32))


@pytest.mark.parametrize("index, bad, message", [
    (0, np.zeros((2, 5), np.float32), "unary must have shape"),
    (0, np.zeros((2, 6), np.float64), "unary must be float32"),
    (1, np.ones((2, 4), np.float32), "pairwise must have shape"),
    (2, 0, "M must be an integer >= 1"),
    (2, 4, "not a multiple of M"),
    (3, np.zeros((2, 3), np.int64), "codes must be int32"),
    (3, np.zeros((2, 2), np.int32), "codes must have shape"),
])
def test_bad_arguments_are_named(index, bad, message):
    args = list(valid())
    args[index] = bad
    with pytest.raises(ValueError, match=message):
        pairwise_mincut.mincut_argmax(*args)


@pytest.mark.parametrize("name, value", [("unary", np.nan), ("unary", np.inf),
                                         ("pairwise", np.nan), ("pairwise", -np.inf)])
def test_non_finite_potentials_are_refused(name, value):
    unary, pairwise, M, codes = valid()
    {"unary": unary, "pairwise": pairwise}[name][1, 0] = value
    with pytest.raises(ValueError, match=f"{name} contains non-finite values"):
        pairwise_mincut.mincut_argmax(unary, pairwise, M, codes)


def test_negative_pairwise_potentials_are_refused():
    unary, pairwise, M, codes = valid()
    pairwise[0, 1] = -0.5
    with pytest.raises(ValueError, match="pairwise must be >= 0 for the min-cut"):
        pairwise_mincut.mincut_argmax(unary, pairwise, M, codes)


def test_too_many_variables_is_refused_with_the_reason():
    N = pairwise_mincut.MINCUT_MAX_VARS + 1
    unary, pairwise, M, codes = valid(N=N)
    with pytest.raises(ValueError, match="shared memory"):
        pairwise_mincut.mincut_argmax(unary, pairwise, M, codes)
