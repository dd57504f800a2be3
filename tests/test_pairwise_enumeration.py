"""kernels/pairwise_enumeration.py (CPU twin) against brute-force enumeration.

Sets are drawn with their top-2 score gap >= pairwise_cases.GAP (ties excluded by construction),
so codes are compared exactly; the tie tests use small integers (exact in float32 and float64).
Up to N = 12 every chunk of the Gray sequence is a single high code scored afresh (4 low bits,
256 chunks), so N = 13 .. 20 are tested too: they exercise the Gray-code flips. The CUDA twin
is checked under the simulator (tests/cudasim/test_pairwise_enumeration_cuda.py) and compiled
to PTX (tests/test_ptx.py).
"""
import numpy as np
import pytest

from dvae_cupy import reference as ref
from dvae_cupy.kernels import pairwise_enumeration
from pairwise_cases import (assert_forced_values_are_every_maximisers, coupled_potentials,
                            draw_potentials, integer_potentials, undecided_counts,
                            untied_potentials)

SETS_PER_N = 10_000


def solve(unary, pairwise, M=1):
    codes = np.full((len(unary), unary.shape[1] // 2), -1, dtype=np.int32)
    pairwise_enumeration.enumeration_argmax(unary, pairwise, M, codes)
    return codes


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["signed", "attractive"])
@pytest.mark.parametrize("N", range(1, 13))
def test_enumeration_equals_brute_force_on_10000_sets(N, mode):
    # enumeration is exact for either sign; ~3 s per mode for all twelve N on this machine
    unary, pairwise, truth = untied_potentials(np.random.default_rng([11, N, mode == "signed"]),
                                               SETS_PER_N, N, mode)
    np.testing.assert_array_equal(solve(unary, pairwise), truth)


@pytest.mark.parametrize("N, count", [(13, 300), (14, 200), (16, 60),
                                      pytest.param(20, 6, marks=pytest.mark.slow)])
def test_gray_code_flips_equal_brute_force(N, count):
    # chunks of 2, 4, 16 and 256 high codes: the incremental score and field updates
    unary, pairwise, truth = untied_potentials(np.random.default_rng([12, N]), count, N,
                                               "signed")
    np.testing.assert_array_equal(solve(unary, pairwise), truth)


@pytest.mark.parametrize("N, count", [(3, 2000), (8, 1000), (12, 300), (15, 40)])
def test_enumeration_equals_brute_force_where_the_forcing_leaves_it_to_do(N, count):
    unary, pairwise, truth = untied_potentials(np.random.default_rng([14, N]), count, N,
                                               "signed", draw=coupled_potentials)
    assert (undecided_counts(unary, pairwise) > 0).mean() > (0.3 if N == 3 else 0.5)
    np.testing.assert_array_equal(solve(unary, pairwise), truth)


def test_the_random_sets_take_all_three_paths():
    # the brute-force tests above see rows all forced, rows partly forced (the enumeration over
    # the undecided variables) and rows with nothing forced (the whole enumeration)
    unary, pairwise = draw_potentials(np.random.default_rng(15), 1000, 12, "signed")
    undecided = undecided_counts(unary, pairwise)
    for path in (undecided == 0, (undecided > 0) & (undecided < 12), undecided == 12):
        assert 0.1 < path.mean() < 0.9


@pytest.mark.parametrize("N", [3, 5, 7])
def test_ties_go_to_the_smallest_code_when_some_variables_are_forced(N):
    # small integers: exact scores, many tied maxima, many rows partly forced
    count = 2000
    unary, pairwise = integer_potentials(np.random.default_rng([17, N]), count, N, (-3, 3), (-2, 2))
    undecided = undecided_counts(unary, pairwise)
    assert ((undecided > 0) & (undecided < N)).mean() > 0.2
    truth = ref.structured_argmax_enumerate(unary.astype(np.float64).reshape(count, N, 2),
                                            pairwise.astype(np.float64))  # the smallest code
    np.testing.assert_array_equal(solve(unary, pairwise), truth)


@pytest.mark.parametrize("N", [2, 4, 7])
def test_forced_values_are_those_of_every_maximiser_ties_included(N):
    # small integers of either sign: many codes tie; a forced variable has its value in all
    count = 3000
    unary, pairwise = integer_potentials(np.random.default_rng([16, N]), count, N, (-4, 4), (-2, 2))
    assert assert_forced_values_are_every_maximisers(unary, pairwise) > count // 3


def test_pairwise_potentials_are_shared_by_the_m_rows_of_a_data_point():
    rng = np.random.default_rng(13)
    B, M, N = 30, 4, 7
    unary, _, _ = untied_potentials(rng, B * M, N, "signed")
    pairwise = (2 * rng.normal(size=(B, ref.pair_count(N)))).astype(np.float32)
    truth = ref.structured_argmax_enumerate(unary.astype(np.float64).reshape(B, M, N, 2),
                                            pairwise.astype(np.float64)[:, None])
    np.testing.assert_array_equal(solve(unary, pairwise, M), truth.reshape(B * M, N))


def test_ties_go_to_the_smallest_code():
    # N = 3, a = (1, 1, 0), w_01 = -1: codes 1, 2, 3 all score 1 -> code 1, z = (1, 0, 0)
    unary = np.array([[0, 1, 0, 1, 0, 0]], np.float32)
    pairwise = np.array([[-1, 0, 0]], np.float32)
    np.testing.assert_array_equal(solve(unary, pairwise), [[1, 0, 0]])
    assert ref.structured_argmax_enumerate(unary.reshape(1, 3, 2),
                                           pairwise).tolist() == [[1, 0, 0]]
    # N = 14: code 1 (chunk 0) and code 2^13 (a later chunk) tie at 1; w_{0,13} = -2
    N = 14
    unary = np.zeros((1, 2 * N), np.float32)
    unary[0, 1] = unary[0, 2 * 13 + 1] = 1
    pairwise = np.zeros((1, ref.pair_count(N)), np.float32)
    pairwise[0, ref.pair_index(0, 13, N)] = -2
    expected = np.zeros((1, N), np.int32)
    expected[0, 0] = 1
    np.testing.assert_array_equal(solve(unary, pairwise), expected)
    np.testing.assert_array_equal(solve(np.zeros((2, 2 * N), np.float32),
                                        np.zeros((2, ref.pair_count(N)), np.float32)), 0)


# ---------------------------------------------------------------------------------------------
# Bad input: errors name the argument

def valid(N=3, B=2, M=1):
    return (np.zeros((B * M, 2 * N), np.float32), -np.ones((B, ref.pair_count(N)), np.float32),
            M, np.zeros((B * M, N), np.int32))


@pytest.mark.parametrize("index, bad, message", [
    (0, np.zeros((2, 5), np.float32), "unary must have shape"),
    (1, np.ones((2, 3), np.float64), "pairwise must be float32"),
    (1, np.ones((3, 3), np.float32), "pairwise must have shape"),
    (2, 1.5, "M must be an integer >= 1"),
    (3, np.zeros((2, 4), np.int32), "codes must have shape"),
])
def test_bad_arguments_are_named(index, bad, message):
    args = list(valid())
    args[index] = bad
    with pytest.raises(ValueError, match=message):
        pairwise_enumeration.enumeration_argmax(*args)


@pytest.mark.parametrize("name, value", [("unary", np.nan), ("pairwise", np.inf)])
def test_non_finite_potentials_are_refused(name, value):
    unary, pairwise, M, codes = valid()
    {"unary": unary, "pairwise": pairwise}[name][0, 2] = value
    with pytest.raises(ValueError, match=f"{name} contains non-finite values"):
        pairwise_enumeration.enumeration_argmax(unary, pairwise, M, codes)


def test_more_than_20_variables_is_refused_with_the_reason():
    unary, pairwise, M, codes = valid(N=21)
    with pytest.raises(ValueError, match=r"N <= 20: signed potentials .* all 2\*\*N codes"):
        pairwise_enumeration.enumeration_argmax(unary, pairwise, M, codes)
