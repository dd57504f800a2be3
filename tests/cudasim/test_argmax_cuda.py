"""kernels/argmax.py's CUDA twins under the CUDA simulator, against the CPU twins.

Launchers are called on NumPy arrays (the simulator treats them as device arrays). Shapes are
small: one thread, and a few hundred threads (two blocks, the second partly idle). Codes are
compared exactly; gradients with a float32 tolerance (the simulator runs the same float32
operations as the CPU loop, so in practice they agree bit for bit).
"""
import numpy as np
import pytest

from dvae_cupy.kernels import argmax

# (B, M, N, K): one thread; R*N = 300 and B*N = 300 threads (two blocks of 256); K = 2 with M = 3
SHAPES = [(1, 1, 1, 2), (3, 2, 50, 3), (5, 3, 60, 2)]


def draw(rng, B, M, N, K):
    logits = rng.normal(size=(B, N * K)).astype(np.float32)
    gumbel = rng.gumbel(size=(B * M, N * K)).astype(np.float32)
    losses = (200.0 + 2.0 * rng.normal(size=(B * M, N * K))).astype(np.float32)
    return logits, gumbel, losses


@pytest.mark.parametrize("B, M, N, K", SHAPES, ids=str)
def test_gumbel_argmax_cuda_equals_cpu(B, M, N, K):
    logits, gumbel, _ = draw(np.random.default_rng(N), B, M, N, K)
    got = np.full((B * M, N), -1, dtype=np.int32)
    argmax.gumbel_argmax_cuda(logits, gumbel, K, M, got)
    expected = np.empty((B * M, N), dtype=np.int32)
    argmax.gumbel_argmax(logits, gumbel, K, M, expected)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("two_sided", [False, True], ids=["one-sided", "two-sided"])
@pytest.mark.parametrize("B, M, N, K", SHAPES, ids=str)
def test_direct_logit_grad_cuda_matches_cpu(B, M, N, K, two_sided):
    rng = np.random.default_rng(N + 1)
    logits, gumbel, losses = draw(rng, B, M, N, K)
    codes = np.empty((B * M, N), dtype=np.int32)
    argmax.gumbel_argmax(logits, gumbel, K, M, codes)
    grad0 = rng.normal(size=(B, N * K)).astype(np.float32)  # the op adds into grad
    got = grad0.copy()
    argmax.direct_logit_grad_cuda(logits, gumbel, losses, codes, K, M, 0.5, 0.01, two_sided, got)
    expected = grad0.copy()
    argmax.direct_logit_grad(logits, gumbel, losses, codes, K, M, 0.5, 0.01, two_sided, expected)
    if N > 1:
        assert np.count_nonzero(expected != grad0) > 0  # eps L moved some arg maxes
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)


def test_ties_go_to_the_first_index_under_simulator():
    logits = np.zeros((1, 4), dtype=np.float32)
    gumbel = np.array([[3, 3, 3, 3]], dtype=np.float32)
    losses = np.array([[1, 0, 1, 0]], dtype=np.float32)
    codes = np.full((1, 1), -1, dtype=np.int32)
    argmax.gumbel_argmax_cuda(logits, gumbel, 4, 1, codes, stream=0)
    assert codes[0, 0] == 0
    grad = np.zeros((1, 4), dtype=np.float32)
    argmax.direct_logit_grad_cuda(logits, gumbel, losses, np.array([[3]], np.int32), 4, 1, 1.0,
                                  1.0, False, grad, stream=0)
    np.testing.assert_array_equal(grad[0], [0, -1, 0, 1])


@pytest.mark.parametrize("two_sided", [False, True], ids=["one-sided", "two-sided"])
@pytest.mark.parametrize("B, M, N, K", SHAPES, ids=str)
def test_direct_logit_grad_cuda_with_eps_array_equals_cpu(B, M, N, K, two_sided):
    # eps as a 1-element float32 array read by the kernel, which makes the step from it
    rng = np.random.default_rng(N + 2)
    logits, gumbel, losses = draw(rng, B, M, N, K)
    codes = np.empty((B * M, N), dtype=np.int32)
    argmax.gumbel_argmax(logits, gumbel, K, M, codes)
    grad0 = rng.normal(size=(B, N * K)).astype(np.float32)
    for eps in (0.5, 0.3):  # 0.3 is not exact in float32
        eps_array = np.array([eps], np.float32)
        got = grad0.copy()
        argmax.direct_logit_grad_cuda(logits, gumbel, losses, codes, K, M, eps_array, 0.01,
                                      two_sided, got)
        by_number = grad0.copy()
        argmax.direct_logit_grad_cuda(logits, gumbel, losses, codes, K, M, eps, 0.01, two_sided,
                                      by_number, stream=0)
        expected = grad0.copy()
        argmax.direct_logit_grad(logits, gumbel, losses, codes, K, M, eps, 0.01, two_sided,
                                 expected)
        if N > 1:
            assert np.count_nonzero(expected != grad0) > 0
        np.testing.assert_array_equal(got, by_number)  # array eps == number eps, identically
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)
        assert eps_array[0] == np.float32(eps)
