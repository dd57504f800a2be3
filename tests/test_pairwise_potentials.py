"""kernels/pairwise_potentials.py (CPU twins) against the float64 reference
(reference.structured_potentials and the perturbations of structured_direct_estimator)."""
import numpy as np
import pytest

from dvae_cupy import reference as ref
from dvae_cupy.kernels import pairwise_potentials as pp


@pytest.mark.parametrize("mode", ref.PAIRWISE_MODES)
@pytest.mark.parametrize("B, N", [(1, 1), (5, 2), (7, 15)])
def test_split_potentials_equals_reference(B, N, mode):
    rng = np.random.default_rng([B, N])
    enc_out = (4 * rng.normal(size=(B, ref.structured_output_width(N)))).astype(np.float32)
    enc_out[0, -1] = -100.0 if N > 1 else enc_out[0, -1]  # softplus underflow side
    unary = np.full((B, 2 * N), np.nan, np.float32)
    pairwise = np.full((B, ref.pair_count(N)), np.nan, np.float32)
    pp.split_potentials(enc_out, N, mode == "attractive", unary, pairwise)
    if N == 1:  # the reference's model needs a pair; the kernels take N = 1 (P = 0)
        np.testing.assert_array_equal(unary, enc_out)
        return
    expected_unary, expected_pairwise = ref.structured_potentials(enc_out, N, mode)
    np.testing.assert_array_equal(unary, expected_unary.reshape(B, 2 * N))  # a copy
    if mode == "signed":
        np.testing.assert_array_equal(pairwise, expected_pairwise)
    else:  # float64 softplus rounded once
        np.testing.assert_allclose(pairwise, expected_pairwise, rtol=1e-7, atol=1e-44)  # denormals
        assert (pairwise >= 0).all()


def test_perturb_and_shift_unaries():
    rng = np.random.default_rng(1)
    B, M, N = 4, 3, 5
    unary = rng.normal(size=(B, 2 * N)).astype(np.float32)
    gumbel = rng.gumbel(size=(B * M, 2 * N)).astype(np.float32)
    losses = (200 + rng.normal(size=(B * M, 2 * N))).astype(np.float32)
    perturbed = np.empty((B * M, 2 * N), np.float32)
    pp.perturb_unaries(unary, gumbel, M, perturbed)
    np.testing.assert_array_equal(perturbed, np.repeat(unary, M, axis=0) + gumbel)
    for eps in (0.5, 0.3, 1 / 3):  # 0.3 and 1/3 are not exact in float32
        eps_array = np.array([eps], np.float32)
        for negate in (False, True):
            shifted = np.empty_like(perturbed)
            pp.shift_unaries(perturbed, losses, eps_array, negate, shifted)
            moved = np.float64(eps_array[0]) * losses.astype(np.float64)
            exact = perturbed.astype(np.float64) + (moved if negate else -moved)
            np.testing.assert_array_equal(shifted, exact.astype(np.float32))  # rounded once
            # against the reference's float64 h + g - eps L: float32 rounding of ~100
            reference = (np.repeat(unary, M, 0).astype(np.float64) + gumbel
                         + (1 if negate else -1) * eps * losses.astype(np.float64))
            np.testing.assert_allclose(shifted, reference, rtol=0, atol=3e-5)


@pytest.mark.parametrize("eps, message", [
    (0.5, "eps must be a 1-element 1-D float32 array"),
    (np.float32(0.5), "eps must be a 1-element 1-D float32 array"),
    (np.array([0.5]), "eps must be a 1-element 1-D float32 array"),
    (np.array([0.5, 0.5], np.float32), "eps must be a 1-element 1-D float32 array"),
    (np.array([0.0], np.float32), "eps must be a finite number > 0"),
    (np.array([np.nan], np.float32), "eps must be a finite number > 0"),
])
def test_eps_must_be_a_positive_1_element_float32_array(eps, message):
    x = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=message):
        pp.shift_unaries(x, x, eps, False, np.zeros_like(x))


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="enc_out must have shape"):
        pp.split_potentials(np.zeros((2, 8), np.float32), 3, True, np.zeros((2, 6), np.float32),
                            np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="pairwise must have shape"):
        pp.split_potentials(np.zeros((2, 9), np.float32), 3, True, np.zeros((2, 6), np.float32),
                            np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="gumbel must have shape"):
        pp.perturb_unaries(np.zeros((2, 6), np.float32), np.zeros((3, 6), np.float32), 2,
                           np.zeros((4, 6), np.float32))
    with pytest.raises(ValueError, match="N must be an integer >= 1"):
        pp.split_potentials(np.zeros((2, 0), np.float32), 0, True, np.zeros((2, 0), np.float32),
                            np.zeros((2, 0), np.float32))
