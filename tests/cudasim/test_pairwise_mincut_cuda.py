"""kernels/pairwise_mincut.py's CUDA kernel under the CUDA simulator, against brute force and
the CPU twin.

The simulator runs each CUDA thread as a Python thread and every syncthreads as a poll of all
of them: a row of the min-cut costs ~10-60 ms here (against ~2-10 microseconds for the CPU
twin), so this file checks 20 untied sets per N for N = 1..12 (the CPU twin's test checks
10,000 per N) plus a few rows at N = 15, within ~15 s. What it adds to the CPU test is the
block-parallel part the CPU loop does not have: the threads' shared search levels, the rotating
flags and the syncs, which is why it also runs one problem with 1, 3, 5 and 32 threads. The CPU
loop runs the same decisions on a dense residual matrix instead of the slot array, so the two
must give the same codes on any input, tied or not: checked on ties by construction (small
integer potentials: both must return the source side of the smallest minimum cut, which any
exact max flow reaches) and on potentials shaped like a real step's.
"""

import numpy as np
import pytest

from dvae_cupy import reference as ref
from dvae_cupy.kernels import pairwise_mincut
from pairwise_cases import coupled_potentials, reverse_residual_sets, untied_potentials

SETS_PER_N = 20


pytestmark = pytest.mark.usefixtures("quick_thread_switches")  # tests/cudasim/conftest.py


def solve_cuda(unary, pairwise, M=1):
    codes = np.full((len(unary), unary.shape[1] // 2), -7, dtype=np.int32)
    pairwise_mincut.mincut_argmax_cuda(unary, pairwise, M, codes)
    return codes


@pytest.mark.parametrize("N", list(range(1, 13)) + [15])
def test_mincut_kernel_equals_brute_force(N):
    count = SETS_PER_N if N <= 12 else 4
    unary, pairwise, truth = untied_potentials(np.random.default_rng([21, N]), count, N,
                                               "attractive")
    np.testing.assert_array_equal(solve_cuda(unary, pairwise), truth)


@pytest.mark.parametrize("N", [3, 8, 15])
def test_mincut_kernel_equals_brute_force_where_the_forcing_leaves_the_flow_to_do(N):
    # most of draw_potentials' rows are decided by the forcing pass alone; these mostly are not
    unary, pairwise, truth = untied_potentials(np.random.default_rng([26, N]), 12, N,
                                               "attractive", draw=coupled_potentials)
    np.testing.assert_array_equal(solve_cuda(unary, pairwise), truth)


@pytest.mark.parametrize("N", [5, 6])
def test_mincut_kernel_on_sets_whose_max_flow_needs_a_reverse_residual(N):
    unary, pairwise, truth = reverse_residual_sets(N)
    np.testing.assert_array_equal(solve_cuda(unary, pairwise), truth)


def test_codes_do_not_depend_on_the_thread_count():
    N, R = 12, 3
    unary, pairwise, truth = untied_potentials(np.random.default_rng(22), R, N, "attractive")
    for threads in (1, 3, 5, 32):  # 32 > N + 2: some threads own no node
        codes = np.full((R, N), -7, dtype=np.int32)
        pairwise_mincut.mincut_argmax_kernel[R, threads, 0](unary, pairwise, np.int32(1), codes)
        np.testing.assert_array_equal(codes, truth, err_msg=f"{threads} threads")


def test_rows_share_their_data_point_pairwise_potentials():
    B, M, N = 3, 2, 5
    rng = np.random.default_rng(23)
    unary, _, _ = untied_potentials(rng, B * M, N, "attractive")
    pairwise = np.abs(rng.normal(size=(B, ref.pair_count(N)))).astype(np.float32)
    expected = ref.structured_argmax_enumerate(unary.astype(np.float64).reshape(B, M, N, 2),
                                               pairwise.astype(np.float64)[:, None])
    np.testing.assert_array_equal(solve_cuda(unary, pairwise, M), expected.reshape(B * M, N))


def test_bad_rows_get_codes_of_minus_one():
    # the launcher cannot read values without a sync: the kernel flags such rows instead
    N = 4
    unary, pairwise, truth = untied_potentials(np.random.default_rng(24), 4, N, "attractive")
    unary[1, 3] = np.nan
    pairwise[2, 0] = -1.0
    pairwise[3, 5] = np.inf
    codes = solve_cuda(unary, pairwise)
    np.testing.assert_array_equal(codes[1:], -1)
    np.testing.assert_array_equal(codes[0], truth[0])


def test_cpu_and_cuda_give_the_same_codes_ties_included():
    rng = np.random.default_rng(25)
    R, N = 12, 6
    # integers: many codes tie for the maximum; both return the one with the fewest ones
    unary = rng.integers(-3, 4, size=(R, 2 * N)).astype(np.float32)
    pairwise = rng.integers(0, 3, size=(R, ref.pair_count(N))).astype(np.float32)
    cpu = np.empty((R, N), np.int32)
    pairwise_mincut.mincut_argmax(unary, pairwise, 1, cpu)
    np.testing.assert_array_equal(solve_cuda(unary, pairwise), cpu)
    # a real step's shape: N = 15, perturbed unaries of spread ~3 and softplus pair potentials
    R, N = 6, 15
    unary = (3 * rng.normal(size=(R, 2 * N)) + rng.gumbel(size=(R, 2 * N))).astype(np.float32)
    pairwise = np.logaddexp(0, rng.normal(size=(R, ref.pair_count(N)))).astype(np.float32)
    cpu = np.empty((R, N), np.int32)
    pairwise_mincut.mincut_argmax(unary, pairwise, 1, cpu)
    np.testing.assert_array_equal(solve_cuda(unary, pairwise), cpu)
