"""kernels/candidates.py's CUDA twins under the CUDA simulator, against the CPU twins.

One block of NEIGHBOUR_THREADS (128) simulated threads per candidate (neighbour_hidden) and of
bce.THREADS (128) per candidate row or code (store_candidate_losses, code_losses): a few blocks
only. H or D = 130 leaves most of the second pass idle, 5 most of the block; `hidden` (one add,
one relu per entry) and the scatters are compared exactly, the sums (a float32 tree here, a
float64 sum on the CPU) with a float32 tolerance.
"""
import numpy as np
import pytest

from dvae_cupy.kernels import candidates
from launches import record_launches


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


# (R, N, K, D, start, count): one candidate of one pixel; a chunk in the middle (D = 130: a second,
# mostly idle pass over the pixels); the last candidates with D = 5
STORE_CASES = [(1, 1, 2, 1, 0, 1), (3, 2, 3, 130, 3, 4), (2, 3, 2, 5, 4, 2)]


@pytest.mark.parametrize("R, N, K, D, start, count", STORE_CASES, ids=str)
def test_store_ops_cuda_match_cpu(R, N, K, D, start, count):
    rng = np.random.default_rng(R * N * K + D)
    codes = rng.integers(0, K, size=(R, N)).astype(np.int32)
    cand_out = (rng.normal(size=(count, D)) * 4).astype(np.float32)
    bias = rng.normal(size=D).astype(np.float32)
    linear = rng.normal(size=count).astype(np.float32)
    linear_b2, sampled = rng.normal(size=(2, R)).astype(np.float32)
    got = np.full((R, N * K), np.nan, np.float32)
    expected = got.copy()
    candidates.store_candidate_losses_cuda(cand_out, bias, linear, linear_b2, codes, K, start, got)
    candidates.store_sampled_losses_cuda(sampled, codes, K, got)
    candidates.store_candidate_losses(cand_out, bias, linear, linear_b2, codes, K, start, expected)
    candidates.store_sampled_losses(sampled, codes, K, expected)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))  # the same slots written
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * D)
    assert np.isfinite(expected).sum() == count + R * N


# (B, M, K, D): one code of one pixel; K = 3 codes over 70 * 2 = 140 rows (> 128 threads: the
# block's second pass over the rows) and D = 130
@pytest.mark.parametrize("B, M, K, D", [(1, 1, 1, 1), (70, 2, 3, 130), (3, 1, 2, 5)], ids=str)
def test_code_losses_cuda_matches_cpu(B, M, K, D):
    rng = np.random.default_rng(B + K + D)
    code_out = (rng.normal(size=(K, D)) * 4).astype(np.float32)
    bias = rng.normal(size=D).astype(np.float32)
    xo = (rng.normal(size=(B, K)) * 30).astype(np.float32)
    xb2 = rng.normal(size=B).astype(np.float32)
    got = np.full((B * M, K), np.nan, np.float32)
    candidates.code_losses_cuda(code_out, bias, xo, xb2, M, got)
    expected = np.full((B * M, K), np.nan, np.float32)
    candidates.code_losses(code_out, bias, xo, xb2, M, expected)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * D)


def test_empty_chunks_launch_nothing(monkeypatch):
    neighbours = record_launches(monkeypatch, candidates, "neighbour_hidden_kernel")
    stores = record_launches(monkeypatch, candidates, "store_candidate_losses_kernel")
    codes_launches = record_launches(monkeypatch, candidates, "code_losses_kernel")
    pre = np.ones((1, 3), np.float32)
    weight, codes = np.ones((2, 3), np.float32), np.zeros((1, 1), np.int32)
    losses = np.zeros((1, 2), np.float32)
    for count in (0, 1):  # nothing to do for count 0; the recorders stand in for count 1
        candidates.neighbour_hidden_cuda(pre, weight, codes, 2, pre, 0, count,
                                         np.empty((count, 3), np.float32),
                                         np.empty(count, np.float32), stream=0)
        candidates.store_candidate_losses_cuda(np.zeros((count, 3), np.float32),
                                               np.zeros(3, np.float32), np.zeros(count, np.float32),
                                               np.zeros(1, np.float32), codes, 2, 0, losses)
        candidates.code_losses_cuda(np.zeros((count, 3), np.float32), np.zeros(3, np.float32),
                                    np.zeros((1, count), np.float32), np.zeros(1, np.float32), 1,
                                    np.zeros((1, count), np.float32))
        assert len(neighbours) == len(stores) == len(codes_launches) == count
