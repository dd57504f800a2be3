"""kernels/candidates.py's CUDA twin under the CUDA simulator, against the CPU twin.

One block of NEIGHBOUR_THREADS (128) simulated threads per candidate: chunks of a few
candidates only. H = 130 leaves most of the second pass over H idle, H = 5 most of the block;
`hidden` (one add, one relu per entry) is compared exactly, `linear` (a tree reduction here, a
vectorised sequential sum on the CPU) with a float32 tolerance.
"""
import numpy as np
import pytest

from dvae_cupy.kernels import candidates


def draw(rng, R, N, K, H):
    pre = rng.normal(size=(R, H)).astype(np.float32)
    weight = rng.normal(size=(N * K, H)).astype(np.float32)
    codes = rng.integers(0, K, size=(R, N)).astype(np.int32)
    u = rng.normal(size=(R, H)).astype(np.float32)
    return pre, weight, codes, u


# (R, N, K, H, start, count): all 4 candidates; a chunk ending at the last candidate; count = 1
CASES = [(1, 2, 3, 5, 0, 4), (3, 2, 2, 130, 1, 5), (2, 3, 2, 1, 4, 1)]


@pytest.mark.parametrize("R, N, K, H, start, count", CASES, ids=str)
def test_neighbour_hidden_cuda_matches_cpu(R, N, K, H, start, count):
    pre, weight, codes, u = draw(np.random.default_rng(H), R, N, K, H)
    got_hidden = np.full((count, H), np.nan, dtype=np.float32)
    got_linear = np.full(count, np.nan, dtype=np.float32)
    candidates.neighbour_hidden_cuda(pre, weight, codes, K, u, start, count, got_hidden, got_linear)
    hidden = np.empty((count, H), dtype=np.float32)
    linear = np.empty(count, dtype=np.float32)
    candidates.neighbour_hidden(pre, weight, codes, K, u, start, count, hidden, linear)
    np.testing.assert_array_equal(got_hidden, hidden)
    if hidden.size > 20:
        assert (hidden == 0).any() and (hidden > 0).any()  # both sides of the relu
    scale = np.abs(u).sum(axis=1).max() * np.abs(hidden).max()
    np.testing.assert_allclose(got_linear, linear, rtol=1e-5, atol=1e-6 * scale)


def test_empty_chunk_launches_nothing():
    pre = np.ones((1, 3), np.float32)
    hidden = np.empty((0, 3), np.float32)
    linear = np.empty(0, np.float32)
    candidates.neighbour_hidden_cuda(pre, np.ones((2, 3), np.float32), np.zeros((1, 1), np.int32),
                                     2, pre, 1, 0, hidden, linear, stream=0)


@pytest.mark.parametrize("R, N, K, start, count", [(1, 1, 2, 0, 1), (3, 4, 5, 7, 41), (5, 2, 3, 0, 20)])
def test_store_ops_cuda_match_cpu(R, N, K, start, count):
    rng = np.random.default_rng(R * N * K)
    codes = rng.integers(0, K, size=(R, N)).astype(np.int32)
    sums, linear = rng.normal(size=(2, count)).astype(np.float32)
    linear_b2, sampled = rng.normal(size=(2, R)).astype(np.float32)
    got = np.full((R, N * K), np.nan, np.float32)
    expected = got.copy()
    candidates.store_candidate_losses_cuda(sums, linear, linear_b2, codes, K, start, got)
    candidates.store_sampled_losses_cuda(sampled, codes, K, got)
    candidates.store_candidate_losses(sums, linear, linear_b2, codes, K, start, expected)
    candidates.store_sampled_losses(sampled, codes, K, expected)
    np.testing.assert_array_equal(got, expected)  # one subtraction each: exact
    assert np.isfinite(expected).sum() == count + R * N
