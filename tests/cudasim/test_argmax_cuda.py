"""kernels/argmax.py's CUDA twins under the CUDA simulator, against the CPU twins.

Launchers are called on NumPy arrays (the simulator treats them as device arrays). Shapes are
small: one thread, and a few hundred threads (two blocks, the second partly idle). Codes are
compared exactly; noise and gradients with a float32 tolerance (inside a simulated kernel the
@njit scalar bodies run compiled for the CPU, so in practice they agree bit for bit). There is
no empty launch to test: B >= 1 and N*K >= 1 are required, so R*N >= 1.
"""
import numpy as np
import pytest

from dvae_cupy.kernels import argmax

# (B, M, N, K): one thread; R*N = 300 and B*N = 300 threads (two blocks of 256); K = 2 with M = 3
SEED = 0xDEADBEEF_0BADF00D
SHAPES = [(1, 1, 1, 2), (3, 2, 50, 3), (5, 3, 60, 2)]


def counter(value):
    return np.array([value], np.uint64)


def draw(rng, B, M, N, K):
    logits = rng.normal(size=(B, N * K)).astype(np.float32)
    gumbel = rng.gumbel(size=(B * M, N * K)).astype(np.float32)
    losses = (200.0 + 2.0 * rng.normal(size=(B * M, N * K))).astype(np.float32)
    return logits, gumbel, losses


def sample(op, logits, step, K, M, per_image):
    B, NK = logits.shape
    gumbel = np.full((B * M, NK), np.nan, np.float32)
    codes = np.full((B * M, NK // K), -1, np.int32)
    op(logits, SEED, counter(step), K, M, per_image, gumbel, codes)
    return gumbel, codes


@pytest.mark.parametrize("per_image", [False, True], ids=["training", "per-image"])
@pytest.mark.parametrize("B, M, N, K", SHAPES, ids=str)
def test_sample_codes_cuda_matches_cpu(B, M, N, K, per_image):
    logits, _, _ = draw(np.random.default_rng(N), B, M, N, K)
    gumbel, codes = sample(argmax.sample_codes_cuda, logits, 2**33 + 5, K, M, per_image)
    expected_gumbel, expected_codes = sample(argmax.sample_codes, logits, 2**33 + 5, K, M,
                                             per_image)
    np.testing.assert_allclose(gumbel, expected_gumbel, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(codes, expected_codes)


def test_sample_codes_cuda_reads_the_counter_at_each_launch():
    logits = np.zeros((2, 6), np.float32)
    c = counter(7)
    gumbel = np.empty((2, 6), np.float32)
    codes = np.empty((2, 2), np.int32)
    for value in (7, 8):
        c[0] = value
        argmax.sample_codes_cuda(logits, SEED, c, 3, 1, False, gumbel, codes, stream=0)
        expected = sample(argmax.sample_codes, logits, value, 3, 1, False)[0]
        np.testing.assert_allclose(gumbel, expected, rtol=1e-6, atol=1e-6)
        assert int(c[0]) == value


@pytest.mark.parametrize("two_sided", [False, True], ids=["one-sided", "two-sided"])
@pytest.mark.parametrize("B, M, N, K", SHAPES, ids=str)
def test_direct_logit_grad_cuda_matches_cpu(B, M, N, K, two_sided):
    rng = np.random.default_rng(N + 1)
    logits, gumbel, losses = draw(rng, B, M, N, K)
    codes = (np.repeat(logits, M, axis=0) + gumbel).reshape(B * M, N, K).argmax(-1)
    codes = codes.astype(np.int32)
    grad0 = rng.normal(size=(B, N * K)).astype(np.float32)  # the op adds into grad
    for eps in (0.5, 0.3):  # 0.3 is not exact in float32: the step is made from float32 eps
        eps_array = np.array([eps], np.float32)
        got = grad0.copy()
        argmax.direct_logit_grad_cuda(logits, gumbel, losses, codes, K, M, eps_array, 0.01,
                                      two_sided, got)
        expected = grad0.copy()
        argmax.direct_logit_grad(logits, gumbel, losses, codes, K, M, eps_array, 0.01, two_sided,
                                 expected)
        if N > 1:
            assert np.count_nonzero(expected != grad0) > 0  # eps L moved some arg maxes
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)
        assert eps_array[0] == np.float32(eps)  # read, not written


def test_ties_go_to_the_first_index_under_simulator():
    big = np.float32(2.0 ** 30)  # big + g == big for every Gumbel g: exact ties
    _, codes = sample(argmax.sample_codes_cuda, np.array([[0, big, 0, big]], np.float32), 1, 4,
                      1, False)
    assert codes[0, 0] == 1
    logits = np.zeros((1, 4), dtype=np.float32)
    gumbel = np.array([[3, 3, 3, 3]], dtype=np.float32)
    losses = np.array([[1, 0, 1, 0]], dtype=np.float32)
    grad = np.zeros((1, 4), dtype=np.float32)
    argmax.direct_logit_grad_cuda(logits, gumbel, losses, np.array([[3]], np.int32), 4, 1,
                                  np.array([1.0], np.float32), 1.0, False, grad, stream=0)
    np.testing.assert_array_equal(grad[0], [0, -1, 0, 1])
