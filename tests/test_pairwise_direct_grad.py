"""kernels/pairwise_direct_grad.py, and the structured direct estimator's kernel pipeline
(split_potentials -> perturb_unaries -> solver -> shift_unaries -> solver -> gradient), against
the float64 reference (reference.structured_direct_output_grad).

The Gumbel noise is redrawn for any row whose perturbed or eps-shifted unaries have a near tie
(top-2 gap below TIE_GAP, far above the float32 rounding of unaries ~100), so the kernels'
codes equal the reference's exactly; the gradients then agree to float32 rounding."""
import numpy as np
import pytest

from dvae_cupy import reference as ref
from dvae_cupy.kernels import pairwise_direct_grad as dg
from dvae_cupy.kernels import pairwise_enumeration, pairwise_mincut
from dvae_cupy.kernels import pairwise_potentials as pp
from pairwise_cases import best_codes_and_gaps

TIE_GAP = 1e-2
EPS = 0.5


def solver(mode):
    return pairwise_mincut.mincut_argmax if mode == "attractive" else \
        pairwise_enumeration.enumeration_argmax


def kernel_codes(enc_out, gumbel, losses, eps, N, M, mode):
    """(z_opt, z_dir(+eps), z_dir(-eps)) by the kernels, and the smallest score gap they met."""
    B = len(enc_out)
    unary = np.empty((B, 2 * N), np.float32)
    pairwise = np.empty((B, ref.pair_count(N)), np.float32)
    pp.split_potentials(enc_out, N, mode == "attractive", unary, pairwise)
    perturbed = np.empty((B * M, 2 * N), np.float32)
    pp.perturb_unaries(unary, gumbel, M, perturbed)
    codes, gaps = [], []
    for shift in (None, False, True):
        scores = perturbed
        if shift is not None:
            scores = np.empty_like(perturbed)
            pp.shift_unaries(perturbed, losses, eps, shift, scores)
        z = np.empty((B * M, N), np.int32)
        solver(mode)(scores, pairwise, M, z)
        codes.append(z)
        gaps.append(best_codes_and_gaps(scores, np.repeat(pairwise, M, axis=0))[1])
    return codes, np.min(gaps, axis=0)


def untied_problem(rng, B, M, N, mode):
    enc_out = (1.5 * rng.normal(size=(B, ref.structured_output_width(N)))).astype(np.float32)
    gumbel = rng.gumbel(size=(B * M, 2 * N)).astype(np.float32)
    losses = (200 + 10 * rng.normal(size=(B * M, 2 * N))).astype(np.float32)
    eps = np.array([EPS], np.float32)
    for _ in range(50):
        codes, gaps = kernel_codes(enc_out, gumbel, losses, eps, N, M, mode)
        near = gaps < TIE_GAP
        if not near.any():
            return enc_out, gumbel, losses, eps, codes
        gumbel[near] = rng.gumbel(size=(int(near.sum()), 2 * N))
    raise AssertionError("could not draw untied noise")


@pytest.mark.parametrize("two_sided", [False, True], ids=["one-sided", "two-sided"])
@pytest.mark.parametrize("mode", ref.PAIRWISE_MODES)
@pytest.mark.parametrize("B, M, N", [(20, 1, 2), (12, 3, 5), (6, 2, 15)])
def test_kernel_gradient_equals_reference(B, M, N, mode, two_sided):
    rng = np.random.default_rng([B, M, N, two_sided])
    enc_out, gumbel, losses, eps, (z_opt, z_plus, z_minus) = untied_problem(rng, B, M, N, mode)
    grad = np.full(enc_out.shape, np.nan, np.float32)  # the op overwrites every entry
    base = z_minus if two_sided else z_opt
    dg.pairwise_direct_grad(enc_out, base, z_plus, eps, 1.0 / B, M, mode == "attractive",
                            two_sided, grad)

    shaped = dict(gumbel=gumbel.astype(np.float64).reshape(B, M, N, 2),
                  losses=losses.astype(np.float64).reshape(B, M, N, 2))
    z_opt_ref = ref.structured_argmax(
        ref.structured_potentials(enc_out, N, mode)[0][:, None] + shaped["gumbel"],
        ref.structured_potentials(enc_out, N, mode)[1][:, None], mode)
    np.testing.assert_array_equal(z_opt.reshape(B, M, N), z_opt_ref)
    expected, z_plus_ref, z_minus_ref = ref.structured_direct_output_grad(
        enc_out, shaped["gumbel"], shaped["losses"], z_opt_ref, N, EPS, mode, two_sided)
    np.testing.assert_array_equal(z_plus.reshape(B, M, N), z_plus_ref)
    if two_sided:
        np.testing.assert_array_equal(z_minus.reshape(B, M, N), z_minus_ref)
    moved = z_plus != base
    assert moved.any() and not moved.all()  # eps L moved some variables and left others
    assert np.count_nonzero(expected[:, 2 * N:]) > 0  # ... pairwise statistics included
    np.testing.assert_allclose(grad, expected / B, rtol=1e-6, atol=1e-9)


def test_pairwise_gradient_goes_through_the_softplus():
    # one pair, z_opt = (1, 1), z_dir = (0, 0): d/d pre = sigmoid(pre) / eps; signed: 1 / eps
    enc_out = np.array([[0, 0, 0, 0, 0.7]], np.float32)
    ones, zeros = np.ones((1, 2), np.int32), np.zeros((1, 2), np.int32)
    for attractive, factor in [(True, 1 / (1 + np.exp(-0.7))), (False, 1.0)]:
        grad = np.empty((1, 5), np.float32)
        dg.pairwise_direct_grad(enc_out, ones, zeros, np.array([0.25], np.float32), 1.0, 1,
                                attractive, False, grad)
        np.testing.assert_allclose(grad, [[-4, 4, -4, 4, 4 * factor]], rtol=1e-7)


def test_bad_arguments_are_named():
    enc_out = np.zeros((2, 9), np.float32)
    codes = np.zeros((2, 3), np.int32)
    eps = np.array([0.5], np.float32)
    grad = np.zeros((2, 9), np.float32)
    call = dg.pairwise_direct_grad
    with pytest.raises(ValueError, match="eps must be a 1-element 1-D float32 array"):
        call(enc_out, codes, codes, 0.5, 1.0, 1, True, False, grad)
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        call(enc_out, codes, codes, np.array([-1.0], np.float32), 1.0, 1, True, False, grad)
    with pytest.raises(ValueError, match="grad_scale must be finite"):
        call(enc_out, codes, codes, eps, np.nan, 1, True, False, grad)
    with pytest.raises(ValueError, match="grad must have shape"):
        call(enc_out, codes, codes, eps, 1.0, 1, True, False, np.zeros((2, 8), np.float32))
    with pytest.raises(ValueError, match="codes_base must have shape"):
        call(enc_out, codes[:, :2], codes, eps, 1.0, 1, True, False, grad)
    with pytest.raises(ValueError, match="not a positive multiple of M"):
        call(enc_out, codes, codes, eps, 1.0, 3, True, False, grad)
    with pytest.raises(ValueError, match="codes_plus must hold 0 or 1"):
        call(enc_out, codes, codes - 1, eps, 1.0, 1, True, False, grad)
