"""kernels/pairwise_potentials.py's CUDA kernels under the simulator, against NumPy float64
(the same formulas the CPU twins use; tests/test_pairwise_potentials.py checks those against
the reference). Shapes: one thread, and more than one block of 256 threads."""
import numpy as np
import pytest

from dvae_cupy import reference as ref
from dvae_cupy.kernels import pairwise_potentials as pp


@pytest.mark.parametrize("attractive", [True, False])
@pytest.mark.parametrize("B, N", [(1, 1), (3, 15)])  # 3 x 135 = 405 threads: two blocks
def test_split_potentials_cuda(B, N, attractive):
    rng = np.random.default_rng(N)
    enc_out = (4 * rng.normal(size=(B, ref.structured_output_width(N)))).astype(np.float32)
    unary = np.full((B, 2 * N), np.nan, np.float32)
    pairwise = np.full((B, ref.pair_count(N)), np.nan, np.float32)
    pp.split_potentials_cuda(enc_out, N, attractive, unary, pairwise)
    np.testing.assert_array_equal(unary, enc_out[:, :2 * N])
    pre = enc_out[:, 2 * N:].astype(np.float64)
    expected = np.logaddexp(0.0, pre).astype(np.float32) if attractive else enc_out[:, 2 * N:]
    np.testing.assert_allclose(pairwise, expected, rtol=1e-7, atol=1e-44)


@pytest.mark.parametrize("B, M, N", [(1, 1, 1), (5, 3, 10)])  # 300 threads
def test_perturb_and_shift_cuda(B, M, N):
    rng = np.random.default_rng(B)
    unary = rng.normal(size=(B, 2 * N)).astype(np.float32)
    gumbel = rng.gumbel(size=(B * M, 2 * N)).astype(np.float32)
    losses = (200 + rng.normal(size=(B * M, 2 * N))).astype(np.float32)
    perturbed = np.full((B * M, 2 * N), np.nan, np.float32)
    pp.perturb_unaries_cuda(unary, gumbel, M, perturbed)
    np.testing.assert_array_equal(perturbed, np.repeat(unary, M, axis=0) + gumbel)
    eps = np.array([0.3], np.float32)
    for negate in (False, True):
        shifted = np.full_like(perturbed, np.nan)
        pp.shift_unaries_cuda(perturbed, losses, eps, negate, shifted, stream=0)
        moved = np.float64(eps[0]) * losses.astype(np.float64)
        exact = perturbed.astype(np.float64) + (moved if negate else -moved)
        np.testing.assert_array_equal(shifted, exact.astype(np.float32))


def test_shift_refuses_a_number_eps():
    x = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="eps must be a 1-element 1-D float32 array"):
        pp.shift_unaries_cuda(x, x, 0.5, False, np.zeros_like(x))
