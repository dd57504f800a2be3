"""kernels/bce.py on the CPU against the float64 reference (reference.bce_with_logits, its grad
and softplus), on awkward shapes and logits large enough to overflow a naive formula, and the
accuracy of its vectorised float32 exp/log1p bodies (kernels/fastmath_f32.py) on a dense grid.
The CUDA twins are checked under the simulator (tests/cudasim/test_bce_cuda.py), compiled to PTX
(tests/test_ptx.py) and, where a GPU is present, on it (the gpu-marked tests below).

bce_rows takes the output bias (logit = out + bias, one float32 add): it is checked against the
reference with a bias, and bit for bit against the former bias_act-then-bce_rows sequence.

Tolerances: the inputs are float32 and the reference sees the same values in float64, so only
the kernels' arithmetic is measured: a few float32 roundings per element (softplus <= 3 ulp,
sigmoid and the gradient <= 2.5 ulp, measured 2.72 and 2.25), ~1e-7 relative. The gradient is
held to rtol 1e-5 with atol 1e-12 (the reference's 0.5 (1 + tanh(o/2)) - x has ~1e-16 absolute
cancellation error for |o| large; ours has none, see test_grad_has_no_cancellation). Row sums are
held to rtol 1e-5 plus atol 1e-6 against the reference, and the CPU twin's float64 row sums to
3e-7 relative against a float64 truth (measured 6e-8: the final rounding to float32). Results
below 2^-126 (|o| > 87.34) are flushed to 0: absolute error < 1.2e-38.
"""
import math
import platform
import re

import numba
import numpy as np
import pytest

from dvae_cupy import reference
from dvae_cupy.kernels import bce, fastmath_f32
from dvae_cupy.kernels._cuda import cupy_usable
from launches import as_if_no_gpu, record_launches, registered

GRAD_TOL = dict(rtol=1e-5, atol=1e-12)
SUM_TOL = dict(rtol=1e-5, atol=1e-6)
TINY = 2.0 ** -126  # results below it are flushed to 0

# (B, M, D): one pixel; D < 8 (no full vector); the real D with M > 1 (r // M); odd D; a long row
# whose length is no multiple of the vector width (a partial vector at the end)
SHAPES = [(1, 1, 1), (2, 1, 7), (3, 2, 784), (4, 3, 13), (2, 2, 1500)]


def make_case(rng, batch, samples, pixels, scale=4.0, binary=True):
    out = (rng.standard_normal((batch * samples, pixels)) * scale).astype(np.float32)
    if binary:
        x = (rng.random((batch, pixels)) < 0.4).astype(np.float32)
    else:
        x = rng.random((batch, pixels)).astype(np.float32)
    return out, x


def expected_bce(out, x, samples, grad_scale):
    o = out.astype(np.float64)
    targets = np.repeat(x.astype(np.float64), samples, axis=0)  # row r -> target r // M
    return (reference.bce_with_logits(o, targets),
            reference.bce_with_logits_grad(o, targets) * grad_scale)


def run_bce(out, x, samples, grad_scale, bias=None):
    """(loss, grad) of bce_rows; with no bias a zero bias, so that the logits are `out` exactly."""
    bias = np.zeros(out.shape[1], np.float32) if bias is None else bias
    loss = np.full(out.shape[0], np.nan, dtype=np.float32)
    grad = np.full(out.shape, np.nan, dtype=np.float32)
    bce.bce_rows(out, bias, x, samples, grad_scale, loss, grad)
    return loss, grad


# ---------------------------------------------------------------------------------------------
# Scalar bodies


EDGE_LOGITS = [0.0, 1e-8, -1e-8, 1e-3, -1e-3, 0.7, -1.5, 17.0, 20.0, -20.0, 80.0, -80.0,
               87.33654, -87.33654, 87.34, -87.34, 88.0, -88.0, 100.0, -100.0]


@pytest.mark.parametrize("o", EDGE_LOGITS)
def test_scalar_bodies(o):
    # abs TINY = 2^-126 = 1.18e-38: below it the bodies return 0 (exp(-100) = 3.7e-44)
    o32 = np.float32(o)
    o64 = np.float64(o32)
    sp = bce.softplus(o32)
    assert np.isfinite(sp)
    assert sp == pytest.approx(float(reference.softplus(o64)), rel=1e-6, abs=TINY)
    sig = bce.sigmoid(o32)
    assert sig == pytest.approx(1.0 / (1.0 + math.exp(-o64)), rel=1e-6, abs=TINY)
    for x in (0.0, 1.0, 0.25):
        term, grad = bce.bce_term_and_grad(o32, np.float32(x))
        # float64 truths written without cancellation (the reference's softplus(80) - 80 is 0)
        exact_term = max(o64, 0.0) - x * o64 + math.log1p(math.exp(-abs(o64)))
        exact_grad = (1 - x) / (1 + math.exp(-o64)) - x / (1 + math.exp(o64))
        assert term == pytest.approx(exact_term, rel=1e-6, abs=TINY)
        assert grad == pytest.approx(exact_grad, rel=1e-6, abs=TINY)
        assert term == pytest.approx(float(reference.softplus(o64)) - x * o64, rel=1e-6, abs=1e-14)
        assert grad == pytest.approx(float(reference.bce_with_logits_grad(o64, x)), rel=1e-6,
                                     abs=1e-16)


# ---------------------------------------------------------------------------------------------
# bce_rows


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bce_rows_matches_reference(shape):
    rng = np.random.default_rng(sum(shape))
    batch, samples, pixels = shape
    out, x = make_case(rng, batch, samples, pixels)
    loss, grad = run_bce(out, x, samples, 0.01)
    want_loss, want_grad = expected_bce(out, x, samples, 0.01)
    np.testing.assert_allclose(loss, want_loss, **SUM_TOL)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-12 * 0.01)


@pytest.mark.parametrize("shape", SHAPES + [(100, 1, 784), (50, 2, 784)], ids=str)
def test_bce_rows_with_bias_matches_reference(shape):
    # the logit is out + bias, one float32 add: the reference sees that rounded sum
    rng = np.random.default_rng(sum(shape) + 1)
    batch, samples, pixels = shape
    out, x = make_case(rng, batch, samples, pixels)
    bias = rng.standard_normal(pixels).astype(np.float32)
    out_before = out.copy()
    loss, grad = run_bce(out, x, samples, 0.01, bias)
    np.testing.assert_array_equal(out, out_before)  # out is not modified when grad is not out
    want_loss, want_grad = expected_bce(out + bias, x, samples, 0.01)
    np.testing.assert_allclose(loss, want_loss, **SUM_TOL)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-12 * 0.01)


@pytest.mark.parametrize("shape", [(100, 1, 784), (50, 2, 784), (1, 1, 1), (4, 3, 13),
                                   (2, 2, 1500)], ids=str)
def test_bias_is_the_former_bias_act_bit_for_bit(shape):
    # the sequence it replaces: bias_act(out, bias, relu=False), i.e. out + bias in float32 (as
    # NumPy adds it), then bce_rows on those logits (here: with a zero bias, which adds nothing)
    rng = np.random.default_rng(sum(shape) + 2)
    batch, samples, pixels = shape
    out, x = make_case(rng, batch, samples, pixels, scale=8.0)
    bias = (rng.standard_normal(pixels) * 3).astype(np.float32)
    loss, grad = run_bce(out, x, samples, 1.0 / (batch * samples), bias)
    want_loss, want_grad = run_bce(out + bias, x, samples, 1.0 / (batch * samples))
    np.testing.assert_array_equal(loss.view(np.uint32), want_loss.view(np.uint32))
    np.testing.assert_array_equal(grad.view(np.uint32), want_grad.view(np.uint32))
    in_place, in_place_loss = out.copy(), np.empty_like(loss)
    bce.bce_rows(in_place, bias, x, samples, 1.0 / (batch * samples), in_place_loss, in_place)
    np.testing.assert_array_equal(in_place_loss.view(np.uint32), want_loss.view(np.uint32))
    np.testing.assert_array_equal(in_place.view(np.uint32), want_grad.view(np.uint32))


def test_rows_use_their_own_target():
    # every sample row of point b must see x[b]: distinct targets make r // M mistakes visible
    rng = np.random.default_rng(5)
    batch, samples, pixels = 3, 4, 9
    x = np.zeros((batch, pixels), dtype=np.float32)
    for b in range(batch):
        x[b, b] = 1.0
    out = np.repeat(rng.standard_normal((1, pixels)), batch * samples, axis=0).astype(np.float32)
    loss, grad = run_bce(out, x, samples, 1.0)
    want_loss, want_grad = expected_bce(out, x, samples, 1.0)
    np.testing.assert_allclose(loss, want_loss, **SUM_TOL)
    np.testing.assert_allclose(grad, want_grad, **GRAD_TOL)


def test_soft_targets():
    rng = np.random.default_rng(8)
    out, x = make_case(rng, 5, 2, 50, binary=False)
    loss, grad = run_bce(out, x, 2, 0.5)
    want_loss, want_grad = expected_bce(out, x, 2, 0.5)
    np.testing.assert_allclose(loss, want_loss, **SUM_TOL)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7)  # 1 - x: a rounding of x


def test_large_logits_are_stable():
    # |o| ~ 80-100: exp(o) overflows float32 (> 88.7); both signs, both targets
    rng = np.random.default_rng(3)
    batch, samples, pixels = 4, 2, 300
    out = (rng.uniform(60.0, 100.0, (batch * samples, pixels))
           * rng.choice([-1.0, 1.0], (batch * samples, pixels))).astype(np.float32)
    x = (rng.random((batch, pixels)) < 0.5).astype(np.float32)
    loss, grad = run_bce(out, x, samples, 1.0)
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    want_loss, want_grad = expected_bce(out, x, samples, 1.0)
    np.testing.assert_allclose(loss, want_loss, **SUM_TOL)
    np.testing.assert_allclose(grad, want_grad, **GRAD_TOL)


def test_grad_has_no_cancellation():
    # binary targets: sigmoid(o) - x is one correctly signed sigmoid, even where it is ~1e-35
    o = np.array([[80.0, -80.0, 30.0, -30.0, 5.0, -5.0]], dtype=np.float32)
    x = np.array([[1.0, 0.0, 1.0, 0.0, 1.0, 0.0]], dtype=np.float32)
    _, grad = run_bce(o, x, 1, 1.0)
    o64 = o.astype(np.float64)
    exact = np.where(x == 1.0, -1.0 / (1.0 + np.exp(o64)), 1.0 / (1.0 + np.exp(-o64)))
    np.testing.assert_allclose(grad, exact, rtol=1e-6, atol=0)


def test_most_pixels_saturated():
    # every pixel right and confident: the loss is tiny but must not go negative or nan
    o = np.full((2, 784), 90.0, dtype=np.float32)
    o[1] = -90.0
    x = np.zeros((2, 784), dtype=np.float32)
    x[0] = 1.0
    loss, grad = run_bce(o, x, 1, 1.0)
    assert np.all(loss >= 0) and np.all(loss < 1e-30)
    assert np.all(np.abs(grad) < 1e-35) and np.isfinite(grad).all()


def test_grad_in_place_over_out():
    rng = np.random.default_rng(11)
    out, x = make_case(rng, 3, 2, 40)
    want_loss, want_grad = expected_bce(out, x, 2, 0.1)
    loss = np.empty(6, dtype=np.float32)
    bce.bce_rows(out, np.zeros(40, np.float32), x, 2, 0.1, loss, out)  # grad is out: each
    # element read before it is written
    np.testing.assert_allclose(loss, want_loss, **SUM_TOL)
    np.testing.assert_allclose(out, want_grad, rtol=1e-5, atol=1e-13)


def test_bce_rows_rejects_bad_arguments():
    out = np.zeros((4, 5), dtype=np.float32)
    bias = np.zeros(5, dtype=np.float32)
    x = np.zeros((2, 5), dtype=np.float32)
    loss = np.zeros(4, dtype=np.float32)
    grad = np.zeros((4, 5), dtype=np.float32)
    bce.bce_rows(out, bias, x, 2, 1.0, loss, grad)  # the good call
    bad = [
        ((out.astype(np.float64), bias, x, 2, 1.0, loss, grad), "out must be float32"),
        ((out, bias.astype(np.float64), x, 2, 1.0, loss, grad), "bias must be float32"),
        ((out, np.zeros(6, np.float32), x, 2, 1.0, loss, grad), "bias must have shape"),
        ((out, bias.reshape(1, 5), x, 2, 1.0, loss, grad), "bias must be 1-D"),
        ((out, bias, x.astype(np.float64), 2, 1.0, loss, grad), "x must be float32"),
        ((out, bias, x, 1, 1.0, loss, grad), "R = B\\*M"),
        ((out, bias, x, 0, 1.0, loss, grad), "samples_per_target"),
        ((out, bias, np.zeros((2, 6), np.float32), 2, 1.0, loss, grad), "x must have 5 columns"),
        ((out, bias, x, 2, 1.0, np.zeros(3, np.float32), grad), "loss must have shape"),
        ((out, bias, x, 2, 1.0, loss, np.zeros((4, 6), np.float32)), "grad must have shape"),
        ((out, bias, x, 2, 1.0, loss, np.zeros((4, 10), np.float32)[:, ::2]), "grad must be C-"),
        ((out, bias, x, 2, 1.0, loss.reshape(4, 1), grad), "loss must be 1-D"),
    ]
    for op in (bce.bce_rows, bce.bce_rows_cuda):
        for args, message in bad:
            with pytest.raises(ValueError, match=message):
                op(*args)


# ---------------------------------------------------------------------------------------------
# softplus_row_sums


@pytest.mark.parametrize("rows, pixels", [(1, 1), (3, 7), (20, 784), (2, 2500)], ids=str)
def test_softplus_row_sums_matches_reference(rows, pixels):
    rng = np.random.default_rng(rows + pixels)
    out = (rng.standard_normal((rows, pixels)) * 4).astype(np.float32)
    bias = rng.standard_normal(pixels).astype(np.float32)
    sums = np.full(rows, np.nan, dtype=np.float32)
    bce.softplus_row_sums(out, bias, sums)
    # the kernel adds the bias in float32: give the reference the same rounded sum
    shifted = (out + bias).astype(np.float64)
    np.testing.assert_allclose(sums, reference.softplus(shifted).sum(axis=1), **SUM_TOL)


def test_softplus_row_sums_large_logits_and_zero_logits():
    # +-80..100 (overflowing exp; past 87.34 the e term is flushed to 0), and o = 0 for 2500
    # pixels: every term is log 2, the largest log1p(e)
    rng = np.random.default_rng(4)
    out = (rng.uniform(80.0, 100.0, (3, 2500)) * rng.choice([-1.0, 1.0], (3, 2500))).astype(np.float32)
    out[2] = 0.0
    bias = np.zeros(2500, dtype=np.float32)
    sums = np.empty(3, dtype=np.float32)
    bce.softplus_row_sums(out, bias, sums)
    assert np.isfinite(sums).all()
    np.testing.assert_allclose(sums, reference.softplus(out.astype(np.float64)).sum(axis=1), **SUM_TOL)
    assert sums[2] == pytest.approx(2500 * math.log(2.0), rel=1e-6)


def test_softplus_row_sums_rejects_bad_arguments():
    out = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="bias"):
        bce.softplus_row_sums(out, np.zeros(5, np.float32), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="sums"):
        bce.softplus_row_sums(out, np.zeros(4, np.float32), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="out"):
        bce.softplus_row_sums(out.T, np.zeros(3, np.float32), np.zeros(4, np.float32))


# ---------------------------------------------------------------------------------------------
# Accuracy of the vectorised float32 math on a dense grid (every 1e-4 of o in [-100, 100])


def ulp_error(got, truth):
    """(max error in ulps of float32(truth) where |truth| >= 2^-126, max abs error elsewhere)."""
    got, truth = np.asarray(got, np.float64), np.asarray(truth, np.float64)
    normal = np.abs(truth) >= TINY
    ulps = np.abs(got - truth)[normal] / np.spacing(np.abs(truth[normal]).astype(np.float32))
    return ulps.max(initial=0.0), np.abs(got - truth)[~normal].max(initial=0.0)


@numba.njit(fastmath={"contract"}, error_model="numpy")  # as the CPU loops compile them
def _eval_bodies(o, e, log1p_e, sp, sig, term0, grad0, term1, grad1):
    for i in range(o.size):
        e[i] = fastmath_f32.exp_neg_abs(o[i])
        log1p_e[i] = fastmath_f32.log1p_unit(e[i])
        sp[i] = bce.softplus(o[i])
        sig[i] = bce.sigmoid(o[i])
        term0[i], grad0[i] = bce.bce_term_and_grad(o[i], np.float32(0.0))
        term1[i], grad1[i] = bce.bce_term_and_grad(o[i], np.float32(1.0))


def test_dense_grid_accuracy():
    o = np.arange(-100.0, 100.0, 1e-4).astype(np.float32)
    o = np.concatenate([o, np.float32(EDGE_LOGITS)])
    outs = [np.full_like(o, np.nan) for _ in range(8)]
    _eval_bodies(o, *outs)
    e, log1p_e, sp, sig, term0, grad0, term1, grad1 = outs
    o64 = o.astype(np.float64)
    e64 = np.exp(-np.abs(o64))
    sig_pos = np.where(o64 >= 0, 1.0, e64) / (1.0 + e64)   # sigmoid(o), no cancellation
    sig_neg = np.where(o64 >= 0, e64, 1.0) / (1.0 + e64)   # sigmoid(-o)
    log1p64 = np.log1p(e64)
    limits = [  # (name, got, float64 truth, max ulps); measured 0.99, 1.88, 2.72, 2.25 ulp
        ("exp(-|o|)", e, e64, 1.5),
        ("log1p(e)", log1p_e, np.log1p(e.astype(np.float64)), 2.5),
        ("softplus", sp, np.maximum(o64, 0.0) + log1p64, 3.0),
        ("sigmoid", sig, sig_pos, 2.5),
        ("term x=0", term0, np.maximum(o64, 0.0) + log1p64, 3.0),   # softplus(o)
        ("term x=1", term1, np.maximum(-o64, 0.0) + log1p64, 3.0),  # softplus(-o)
        ("grad x=0", grad0, sig_pos, 2.5),                           # sigmoid(o)
        ("grad x=1", grad1, -sig_neg, 2.5),                          # sigmoid(o) - 1
    ]
    for name, got, truth, max_ulps in limits:
        ulps, tiny_abs = ulp_error(got, truth)
        assert ulps <= max_ulps, (name, ulps)
        assert tiny_abs < TINY, (name, tiny_abs)


def test_exp_flush_and_nan():
    for o in (87.34, -87.34, 88.0, 100.0, 1e30, np.inf, -np.inf):
        assert fastmath_f32.exp_neg_abs(np.float32(o)) == 0.0
    assert fastmath_f32.exp_neg_abs(np.float32(fastmath_f32.A_MAX)) >= TINY  # normal, not 0
    assert fastmath_f32.exp_neg_abs(np.float32(0.0)) == 1.0
    assert bce.softplus(np.float32(0.0)) == np.float32(math.log(2.0))
    assert bce.sigmoid(np.float32(0.0)) == 0.5
    assert np.isnan(fastmath_f32.exp_neg_abs(np.float32(np.nan)))
    assert np.isnan(bce.softplus(np.float32(np.nan)))
    assert np.isnan(bce.sigmoid(np.float32(np.nan)))


# ---------------------------------------------------------------------------------------------
# Row sums against float64 truth, and the CPU loops' shape (vectorised, no libm calls)


@pytest.mark.parametrize("scale", [1.0, 4.0, 30.0])
def test_row_sums_match_float64(scale):
    # D = 784, many rows: float64 accumulation leaves the final rounding (~6e-8 measured)
    rng = np.random.default_rng(int(scale))
    out = (rng.standard_normal((500, 784)) * scale).astype(np.float32)
    bias = rng.standard_normal(784).astype(np.float32)
    sums = np.empty(500, np.float32)
    bce.softplus_row_sums(out, bias, sums)
    shifted = (out + bias).astype(np.float64)
    np.testing.assert_allclose(sums, reference.softplus(shifted).sum(axis=1), rtol=3e-7, atol=0)
    x = (rng.random((250, 784)) < 0.4).astype(np.float32)
    loss, grad = run_bce(out, x, 2, 1.0)
    o = out.astype(np.float64)
    targets = np.repeat(x.astype(np.float64), 2, axis=0)
    exact = (np.maximum(o, 0.0) - targets * o + np.log1p(np.exp(-np.abs(o)))).sum(axis=1)
    np.testing.assert_allclose(loss, exact, rtol=3e-7, atol=0)


def test_edge_logits_in_rows():
    # every edge value at every position of a long row (vector body and remainder), both targets
    edge = np.float32(EDGE_LOGITS)
    pixels = 3 * len(edge) + 5
    out = np.stack([np.roll(np.resize(edge, pixels), k) for k in range(8)]).astype(np.float32)
    x = np.zeros((4, pixels), np.float32)
    x[1::2] = 1.0
    x[2, ::3] = 0.5
    loss, grad = run_bce(out, x, 2, 0.25)
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    want_loss, want_grad = expected_bce(out, x, 2, 0.25)
    np.testing.assert_allclose(loss, want_loss, **SUM_TOL)
    binary = np.repeat((x == 0.0) | (x == 1.0), 2, axis=0)
    np.testing.assert_allclose(grad[binary], want_grad[binary], rtol=1e-5, atol=0.25e-12)
    # sigmoid(o) - 0.5 cancels in float32 (sigmoid(1e-8) is 0.5): absolute, as test_soft_targets
    np.testing.assert_allclose(grad[~binary], want_grad[~binary], rtol=1e-5, atol=0.25e-7)
    sums = np.empty(8, np.float32)
    bias = np.zeros(pixels, np.float32)
    bce.softplus_row_sums(out, bias, sums)
    np.testing.assert_allclose(sums, reference.softplus(out.astype(np.float64)).sum(axis=1),
                               rtol=3e-7, atol=1e-38)


def test_long_rows():
    rng = np.random.default_rng(12)
    out = (rng.standard_normal((3, 20001)) * 6).astype(np.float32)
    x = (rng.random((3, 20001)) < 0.3).astype(np.float32)
    loss, grad = run_bce(out, x, 1, 1e-3)
    want_loss, want_grad = expected_bce(out, x, 1, 1e-3)
    np.testing.assert_allclose(loss, want_loss, rtol=3e-7)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-15)
    bias = rng.standard_normal(20001).astype(np.float32)
    sums = np.empty(3, np.float32)
    bce.softplus_row_sums(out, bias, sums)
    truth = reference.softplus((out + bias).astype(np.float64)).sum(axis=1)
    np.testing.assert_allclose(sums, truth, rtol=3e-7)


def test_nan_logits_propagate():
    # a diverged model must not look healthy: nan in, nan loss (the trainer checks the loss)
    out = np.zeros((2, 20), np.float32)
    out[1, 7] = np.nan
    x = np.zeros((2, 20), np.float32)
    loss, grad = run_bce(out, x, 1, 1.0)
    assert np.isfinite(loss[0]) and np.isnan(loss[1])
    assert np.isnan(grad[1, 7]) and np.isfinite(np.delete(grad.ravel(), 27)).all()
    sums = np.empty(2, np.float32)
    bce.softplus_row_sums(out, np.zeros(20, np.float32), sums)
    assert np.isfinite(sums[0]) and np.isnan(sums[1])


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="checks x86 assembly")
def test_cpu_loops_are_vectorised():
    # packed divisions (divps on xmm/ymm/zmm) mean the element loop runs in vector lanes; a
    # libm call (expf, log1pf) or a branch in a scalar body would keep it scalar
    out = np.zeros((2, 40), np.float32)
    run_bce(out, np.zeros((1, 40), np.float32), 2, 1.0)
    bce.softplus_row_sums(out, np.zeros(40, np.float32), np.zeros(2, np.float32))
    for cached in (bce.bce_rows_njit, bce.softplus_row_sum):
        # a function loaded from the on-disk cache keeps no assembly: compile a fresh copy
        options = {k: v for k, v in cached.targetoptions.items() if k != "cache"}
        fn = numba.njit(**options)(cached.py_func)
        for sig in cached.signatures:
            fn.compile(sig)
            asm = fn.inspect_asm(sig)
            assert re.search(r"\bv?divps\b", asm), fn
            assert not re.search(r"(expf|log1pf|logf)\b", asm), fn


# ---------------------------------------------------------------------------------------------
# The launchers' argument types are the registered ones (what test_ptx compiles)


def test_launch_arguments_type_as_registered(monkeypatch):
    # what the launchers would launch with is a registered signature (what test_ptx compiles),
    # on one block of THREADS per row
    as_if_no_gpu(monkeypatch)
    out, bias = np.zeros((6, 3), np.float32), np.zeros(3, np.float32)
    x, rows = np.zeros((3, 3), np.float32), np.zeros(6, np.float32)
    for name, launch in [
            ("bce_rows_kernel", lambda: bce.bce_rows_cuda(out, bias, x, 2, 0.5, rows, out.copy())),
            ("softplus_row_sums_kernel", lambda: bce.softplus_row_sums_cuda(out, bias, rows))]:
        launches = record_launches(monkeypatch, bce, name)
        launch()
        (config, types), = launches
        assert types in registered(bce)[name], name
        assert config == (6, bce.THREADS, 0)


# ---------------------------------------------------------------------------------------------
# Real GPU (runs wherever CuPy sees one)


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_usable(), reason="needs CuPy and a CUDA GPU")
def test_cuda_matches_cpu_on_gpu():
    import cupy

    rng = np.random.default_rng(0)
    for batch, samples, pixels in [(1, 1, 1), (3, 2, 784), (50, 2, 784), (2, 1, 300)]:
        out, x = make_case(rng, batch, samples, pixels, scale=30.0)
        bias = rng.standard_normal(pixels).astype(np.float32)
        loss, grad = run_bce(out, x, samples, 0.01, bias)
        d_loss = cupy.empty(loss.shape, cupy.float32)
        d_grad = cupy.empty(grad.shape, cupy.float32)
        bce.bce_rows_cuda(cupy.asarray(out), cupy.asarray(bias), cupy.asarray(x), samples, 0.01,
                          d_loss, d_grad)
        np.testing.assert_allclose(cupy.asnumpy(d_loss), loss, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(cupy.asnumpy(d_grad), grad, rtol=1e-5, atol=1e-12)
        sums = np.empty(out.shape[0], np.float32)
        bce.softplus_row_sums(out, bias, sums)
        d_sums = cupy.empty_like(d_loss)
        bce.softplus_row_sums_cuda(cupy.asarray(out), cupy.asarray(bias), d_sums)
        np.testing.assert_allclose(cupy.asnumpy(d_sums), sums, rtol=1e-5, atol=1e-5)
    for kernel, sigs in bce.CUDA_KERNELS:
        assert set(kernel.overloads) <= {tuple(s) for s in sigs}, (kernel, list(kernel.overloads))
