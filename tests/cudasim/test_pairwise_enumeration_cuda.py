"""kernels/pairwise_enumeration.py's CUDA kernel under the CUDA simulator, against brute force
and the CPU twin.

A row is one block of 2^min(N - 4, 8) simulated threads: ~5 ms per row up to N = 4 (one
thread), ~30-70 ms at N = 5..8, ~0.1 s at N = 10 and ~0.7 s from N = 12 on (256 threads).
So the counts fall with N: 40 sets per N up to 4, 10 up to 8, 4 at 9-10, 2 at 11-12, and 2 at
N = 13 and 14, where chunks hold 2 and 4 high codes (the Gray flips); ~15 s in all. The CPU
twin's test checks 10,000 sets per N; this one adds the block's chunk-per-thread split and its
shared-memory reduction (ties to the smallest code across threads included).
"""

import numpy as np
import pytest

from dvae_cupy import reference as ref
from dvae_cupy.kernels import pairwise_enumeration
from pairwise_cases import coupled_potentials, untied_potentials


pytestmark = pytest.mark.usefixtures("quick_thread_switches")  # tests/cudasim/conftest.py


def solve_cuda(unary, pairwise, M=1):
    codes = np.full((len(unary), unary.shape[1] // 2), -7, dtype=np.int32)
    pairwise_enumeration.enumeration_argmax_cuda(unary, pairwise, M, codes)
    return codes


def sets_per_n(N):
    return 40 if N <= 4 else 10 if N <= 8 else 4 if N <= 10 else 2


@pytest.mark.parametrize("N", range(1, 15))
def test_enumeration_kernel_equals_brute_force(N):
    unary, pairwise, truth = untied_potentials(np.random.default_rng([31, N]), sets_per_n(N), N,
                                               "signed")
    np.testing.assert_array_equal(solve_cuda(unary, pairwise), truth)


@pytest.mark.parametrize("N", [3, 9])
def test_enumeration_kernel_equals_brute_force_where_the_forcing_leaves_it_to_do(N):
    # draw_potentials' signed rows are often all forced; these mostly are not
    unary, pairwise, truth = untied_potentials(np.random.default_rng([37, N]), 10, N, "signed",
                                               draw=coupled_potentials)
    codes = np.full((len(unary), N), -7, dtype=np.int32)
    pairwise_enumeration.enumeration_argmax_cuda(unary, pairwise, 1, codes)
    np.testing.assert_array_equal(codes, truth)


def test_rows_share_their_data_point_pairwise_potentials():
    B, M, N = 3, 3, 6
    rng = np.random.default_rng(32)
    unary, _, _ = untied_potentials(rng, B * M, N, "signed")
    pairwise = rng.normal(size=(B, ref.pair_count(N))).astype(np.float32)
    expected = ref.structured_argmax_enumerate(unary.astype(np.float64).reshape(B, M, N, 2),
                                               pairwise.astype(np.float64)[:, None])
    np.testing.assert_array_equal(solve_cuda(unary, pairwise, M), expected.reshape(B * M, N))


def test_ties_across_threads_go_to_the_smallest_code():
    # N = 9: 32 threads, one high code each (variables 4..8). Codes 16, 32 and 256 (threads 1,
    # 2 and 16) tie; the smallest must win whatever the order of the tree reduction
    N = 9
    unary = np.zeros((1, 2 * N), np.float32)
    for i in (4, 5, 8):
        unary[0, 2 * i + 1] = 1.0
    pairwise = np.zeros((1, ref.pair_count(N)), np.float32)
    pairwise[0, ref.pair_index(4, 5, N)] = -5  # the three singles 16, 32, 256 tie at 1 and
    pairwise[0, ref.pair_index(4, 8, N)] = -5  # any two together score -3
    pairwise[0, ref.pair_index(5, 8, N)] = -5
    codes = solve_cuda(unary, pairwise)
    expected = np.zeros((1, N), np.int32)
    expected[0, 4] = 1  # code 16, the smallest of 16, 32, 256
    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_array_equal(
        ref.structured_argmax_enumerate(unary.reshape(1, N, 2), pairwise), expected)


def test_bad_rows_get_codes_of_minus_one():
    N = 5
    unary, pairwise, truth = untied_potentials(np.random.default_rng(33), 3, N, "signed")
    unary[1, 0] = np.inf
    pairwise[2, 4] = np.nan
    codes = solve_cuda(unary, pairwise)
    np.testing.assert_array_equal(codes[1:], -1)
    np.testing.assert_array_equal(codes[0], truth[0])
