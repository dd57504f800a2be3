"""kernels/pairwise_mincut.py's CUDA kernel under the CUDA simulator, against brute force and
the CPU twin.

The simulator runs each CUDA thread as a Python thread and every syncthreads as a poll of all
of them: a row of the min-cut costs ~10-60 ms here (against ~2-10 microseconds for the CPU
twin), so this file checks 20 untied sets per N for N = 1..12 (the CPU twin's test checks
10,000 per N) plus a few rows at N = 15, within ~15 s. What it adds to the CPU test is the
block-parallel part the CPU loop does not have: the threads' shared search levels, the rotating
flags and the syncs, which is why it also runs one problem with 1, 3, 5 and 32 threads.
"""

import numpy as np
import pytest

from dvae_cupy import reference as ref
from dvae_cupy.kernels import pairwise_mincut
from pairwise_cases import untied_potentials

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
