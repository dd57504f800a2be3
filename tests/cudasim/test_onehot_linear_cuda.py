"""kernels/onehot_linear.py's CUDA twins under the CUDA simulator, against the CPU twins.

Every target adds the same float32 terms in the same order (no products to fuse), so the
launchers' outputs must equal the CPU twins' bit for bit. Small shapes (a simulated thread is a
Python thread), including R = 1, K = 2, N = 1 and N > 1, H = 7 and H = 300 (the gather's two
blocks, the second partly idle), and R = 0 (the scatter still zeroes grad_weight).
"""
import numpy as np
import pytest

from dvae_cupy.kernels import onehot_linear as ops

# (R, N, K, H)
CASES = [(1, 1, 2, 7), (1, 2, 2, 300), (4, 3, 5, 7), (9, 1, 3, 11), (2, 4, 2, 1)]


def random_case(R, N, K, H, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N * K, H)).astype(np.float32),
            rng.standard_normal(H).astype(np.float32),
            rng.integers(0, K, size=(R, N), dtype=np.int32),
            rng.standard_normal((R, H)).astype(np.float32))


@pytest.mark.parametrize("R, N, K, H", CASES, ids=str)
def test_gather_rows_sum_cuda_equals_cpu(R, N, K, H):
    weight, bias, codes, _ = random_case(R, N, K, H, seed=R + H)
    expected = np.empty((R, H), np.float32)
    ops.gather_rows_sum(weight, bias, codes, K, expected)
    got = np.full((R, H), np.nan, np.float32)
    ops.gather_rows_sum_cuda(weight, bias, codes, K, got)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("R, N, K, H", CASES, ids=str)
def test_scatter_rows_add_cuda_equals_cpu(R, N, K, H):
    weight, _, codes, grad_out = random_case(R, N, K, H, seed=R * H)
    expected = np.empty_like(weight)
    ops.scatter_rows_add(grad_out, codes, K, expected)
    got = np.full_like(weight, np.nan)
    ops.scatter_rows_add_cuda(grad_out, codes, K, got)
    np.testing.assert_array_equal(got, expected)


def test_scatter_many_rows_into_one():
    # every row on one code: one thread per column sums all R rows, in order
    R, N, K, H = 40, 2, 3, 5
    weight, _, _, grad_out = random_case(R, N, K, H, seed=3)
    codes = np.full((R, N), 1, np.int32)
    expected = np.empty_like(weight)
    ops.scatter_rows_add(grad_out, codes, K, expected)
    got = np.full_like(weight, np.nan)
    ops.scatter_rows_add_cuda(grad_out, codes, K, got, stream=0)
    np.testing.assert_array_equal(got, expected)


def test_zero_rows():
    weight, bias, _, _ = random_case(1, 2, 3, 4, seed=0)
    codes = np.empty((0, 2), np.int32)
    ops.gather_rows_sum_cuda(weight, bias, codes, 3, np.empty((0, 4), np.float32))
    grad_weight = np.full_like(weight, np.nan)
    ops.scatter_rows_add_cuda(np.empty((0, 4), np.float32), codes, 3, grad_weight)
    assert (grad_weight == 0).all()
