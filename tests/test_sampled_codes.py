"""kernels/sampled_codes.py on the CPU (N = 1: the decoder at the sampled codes from the K codes'
decoder), against float64 written out from the reference's BCE gradient, and the whole direct
step's decoder gradients against the reference's backprop at z_opt.

sampled_code_grads sums float32 (sigmoid - x) terms per code, so it is within ~1e-7 of the
float64 sum relative to the sum of the terms' magnitudes; the check allows 1e-6 of that (a row
assigned to the wrong code moves a sum by a whole term, ~1e-2 of it at these sizes). The
CUDA twins: tests/cudasim/test_sampled_codes_cuda.py, PTX in tests/test_ptx.py.
"""
import numpy as np
import pytest

from dvae_cupy import reference as ref
from dvae_cupy.backend import cpu_backend
from dvae_cupy.estimators import direct_gradients
from dvae_cupy.kernels import sampled_codes
from dvae_cupy.model import Model, ModelShape
from dvae_cupy.workspace import TrainWorkspace

GRAD_RTOL = 1e-6


def draw(rng, B, M, K, D, logit_scale=4.0):
    code_out = (rng.standard_normal((K, D)) * logit_scale).astype(np.float32)
    bias = rng.standard_normal(D).astype(np.float32)
    x = (rng.random((B, D)) < 0.4).astype(np.float32)
    codes = rng.integers(0, K, size=(B * M, 1)).astype(np.int32)
    return code_out, bias, x, codes


def float64_grads(code_out, bias, x, codes, M, grad_scale):
    """sum over the rows at each code of the reference's dBCE/dlogits, times grad_scale."""
    K, D = code_out.shape
    logits = (code_out + bias).astype(np.float64)  # the kernel's one float32 add
    grad, scale = np.zeros((K, D)), np.zeros((K, D))
    for r, (k,) in enumerate(codes):
        term = ref.bce_with_logits_grad(logits[k], x[r // M].astype(np.float64))
        grad[k] += term
        scale[k] += np.abs(term)
    return grad * grad_scale, scale * abs(grad_scale)


# (B, M, K, D): the model's batch, K and D; M > 1; a code no row samples (K = 50 > B); tiny ones
CASES = [(100, 1, 10, 784), (30, 3, 10, 784), (20, 1, 50, 33), (1, 1, 1, 1), (3, 2, 4, 5)]


@pytest.mark.parametrize("B, M, K, D", CASES, ids=str)
def test_sampled_code_grads_equal_the_rows_gradients_summed_per_code(B, M, K, D):
    rng = np.random.default_rng(B * M + K + D)
    code_out, bias, x, codes = draw(rng, B, M, K, D)
    grad_scale = 1.0 / (B * M)
    got = np.full((K, D), np.nan, np.float32)
    sampled_codes.sampled_code_grads(code_out, bias, x, codes, M, grad_scale, got)
    expected, scale = float64_grads(code_out, bias, x, codes, M, grad_scale)
    np.testing.assert_allclose(got, expected, rtol=0, atol=GRAD_RTOL * scale.max())
    unsampled = np.setdiff1d(np.arange(K), codes[:, 0])
    assert (got[unsampled] == 0).all()  # a code no row sampled gets no gradient
    if B * M > 10:
        assert np.ptp(expected) > 0.1 * np.abs(expected).max()  # not one number


def test_sampled_code_grads_keep_tiny_gradients_of_confident_pixels():
    # x = 1 at a logit of 80: sigmoid(o) - 1 = -1.8e-35 per row; (c - s) sigmoid(o) + s (sigmoid(o)
    # - 1) keeps it, where c * sigmoid(o) - s would give 0 (sigmoid(80) is 1 in float32)
    code_out = np.array([[80.0, -80.0]], np.float32)
    x = np.array([[1.0, 0.0]] * 3, np.float32)
    got = np.empty((1, 2), np.float32)
    sampled_codes.sampled_code_grads(code_out, np.zeros(2, np.float32), x,
                                     np.zeros((3, 1), np.int32), 1, 1.0, got)
    truth = 3 * -np.exp(-80.0) / (1 + np.exp(-80.0))
    np.testing.assert_allclose(got[0], [truth, -truth], rtol=1e-5)


def test_sampled_code_losses_read_each_rows_code():
    rng = np.random.default_rng(3)
    losses = rng.standard_normal((7, 5)).astype(np.float32)
    codes = rng.integers(0, 5, size=(7, 1)).astype(np.int32)
    got = np.full(7, np.nan, np.float32)
    sampled_codes.sampled_code_losses(losses, codes, got)
    np.testing.assert_array_equal(got, losses[np.arange(7), codes[:, 0]])


def test_bad_arguments_raise_naming_them():
    code_out, bias, x, codes = draw(np.random.default_rng(0), 4, 2, 3, 5)
    grad = np.empty((3, 5), np.float32)
    sampled_codes.sampled_code_grads(code_out, bias, x, codes, 2, 0.5, grad)  # the good call
    for op in (sampled_codes.sampled_code_grads, sampled_codes.sampled_code_grads_cuda):
        with pytest.raises(ValueError, match="codes must have shape \\(8, 1\\)"):
            op(code_out, bias, x, codes[:4], 2, 0.5, grad)
        with pytest.raises(ValueError, match="M must be"):
            op(code_out, bias, x, codes, 0, 0.5, grad)
        with pytest.raises(ValueError, match="x must have"):
            op(code_out, bias, np.ascontiguousarray(x[:, :4]), codes, 2, 0.5, grad)
        with pytest.raises(ValueError, match="grad must"):
            op(code_out, bias, x, codes, 2, 0.5, grad[:2])
        with pytest.raises(ValueError, match="grad_scale"):
            op(code_out, bias, x, codes, 2, np.nan, grad)
    with pytest.raises(IndexError, match="outside"):
        sampled_codes.sampled_code_grads(code_out, bias, x, codes + 3, 2, 0.5, grad)
    losses = np.zeros((8, 3), np.float32)
    for op in (sampled_codes.sampled_code_losses, sampled_codes.sampled_code_losses_cuda):
        with pytest.raises(ValueError, match="sampled must"):
            op(losses, codes, np.zeros(7, np.float32))
        with pytest.raises(ValueError, match="codes must be int32"):
            op(losses, codes.astype(np.int64), np.zeros(8, np.float32))
    with pytest.raises(IndexError, match="outside"):
        sampled_codes.sampled_code_losses(losses, codes - 5, np.zeros(8, np.float32))


@pytest.mark.parametrize("samples", [1, 3])
def test_the_direct_step_at_n1_decodes_k_rows_and_matches_the_reference(samples):
    # the whole decoder side of a direct step at N = 1 against the reference's backprop at z_opt
    # (reference.direct_estimator decodes every sampled row densely), with the model's H and D
    rng = np.random.default_rng(samples)
    K, B = 10, 12
    model = Model(ModelShape(1, K), cpu_backend(), seed=2)
    params = {k: v.astype(np.float64) for k, v in model.host_params().items()}
    ws = TrainWorkspace(np, model.shape, "direct", B, samples)
    assert ws.decoder is None and ws.dout is None  # nothing of R rows is decoded
    x = (rng.random((B, 784)) < 0.4).astype(np.float64)
    counter, eps = np.array([4], np.uint64), np.array([0.5], np.float32)
    recon, _ = direct_gradients(model, ws, x.astype(np.float32), 7, counter, eps, samples)
    gumbel = np.zeros((B * samples, K), np.float32)
    model.ops.gumbel_noise(7, counter, gumbel)
    _, grads, info = ref.direct_estimator(params, x, K, gumbel.astype(np.float64).reshape(
        B, samples, 1, K), 0.5)
    for name in ("dec_w1", "dec_b1", "dec_w2", "dec_b2"):
        got, expected = model.grads[name], grads[name]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max(),
                                   err_msg=name)
    truth = ref.decoder_loss(params, np.repeat(x, samples, axis=0), ws.codes, K)
    np.testing.assert_allclose(recon, truth, rtol=1e-5)
