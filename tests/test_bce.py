"""kernels/bce.py on the CPU against the float64 reference (reference.bce_with_logits, its grad
and softplus), on awkward shapes and logits large enough to overflow a naive formula.
The CUDA twins are checked under the simulator (tests/cudasim/test_bce_cuda.py), compiled to PTX
(tests/test_ptx.py) and, where a GPU is present, on it (the gpu-marked tests below).

Tolerances: the inputs are float32 and the reference sees the same values in float64, so only
the kernels' arithmetic is measured: a few float32 roundings per element, ~1e-7 relative. The
gradient is held to rtol 1e-5 with atol 1e-12 (the reference's 0.5 (1 + tanh(o/2)) - x has
~1e-16 absolute cancellation error for |o| large; ours has none, see test_grad_has_no_cancellation).
Row sums are held to rtol 1e-5 plus atol 1e-6: the CPU twin adds ~1e-16 absolute per pixel.
"""
import math

import numpy as np
import pytest

from dvae_cupy import reference
from dvae_cupy.kernels import bce
from dvae_cupy.kernels._cuda import cupy_usable

GRAD_TOL = dict(rtol=1e-5, atol=1e-12)
SUM_TOL = dict(rtol=1e-5, atol=1e-6)

# (B, M, D): one pixel; D < 8; the real D with M > 1 (r // M); odd D; D past the CPU twin's
# LOG_EVERY (two product blocks, the second partial)
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


def run_bce(out, x, samples, grad_scale):
    loss = np.full(out.shape[0], np.nan, dtype=np.float32)
    grad = np.full(out.shape, np.nan, dtype=np.float32)
    bce.bce_rows(out, x, samples, grad_scale, loss, grad)
    return loss, grad


# ---------------------------------------------------------------------------------------------
# Scalar bodies


@pytest.mark.parametrize("o", [-100.0, -80.0, -20.0, -1.5, -1e-3, 0.0, 1e-3, 0.7, 17.0, 80.0, 100.0])
def test_scalar_bodies(o):
    # abs 1e-38: below it float32 is subnormal (exp(-100) = 3.7e-44 keeps 1 significant digit)
    o32 = np.float32(o)
    o64 = np.float64(o32)
    sp = bce.softplus(o32)
    assert np.isfinite(sp)
    assert sp == pytest.approx(float(reference.softplus(o64)), rel=1e-6, abs=1e-38)
    sig = bce.sigmoid(o32)
    assert sig == pytest.approx(1.0 / (1.0 + math.exp(-o64)), rel=1e-6, abs=1e-38)
    for x in (0.0, 1.0, 0.25):
        term, grad = bce.bce_term_and_grad(o32, np.float32(x))
        # float64 truths written without cancellation (the reference's softplus(80) - 80 is 0)
        exact_term = max(o64, 0.0) - x * o64 + math.log1p(math.exp(-abs(o64)))
        exact_grad = (1 - x) / (1 + math.exp(-o64)) - x / (1 + math.exp(o64))
        assert term == pytest.approx(exact_term, rel=1e-6, abs=1e-38)
        assert grad == pytest.approx(exact_grad, rel=1e-6, abs=1e-38)
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
    bce.bce_rows(out, x, 2, 0.1, loss, out)  # grad is out: each element read before written
    np.testing.assert_allclose(loss, want_loss, **SUM_TOL)
    np.testing.assert_allclose(out, want_grad, rtol=1e-5, atol=1e-13)


def test_bce_rows_rejects_bad_arguments():
    out = np.zeros((4, 5), dtype=np.float32)
    x = np.zeros((2, 5), dtype=np.float32)
    loss = np.zeros(4, dtype=np.float32)
    grad = np.zeros((4, 5), dtype=np.float32)
    bce.bce_rows(out, x, 2, 1.0, loss, grad)  # the good call
    bad = [
        ((out.astype(np.float64), x, 2, 1.0, loss, grad), "out"),
        ((out, x.astype(np.float64), 2, 1.0, loss, grad), "x"),
        ((out, x, 1, 1.0, loss, grad), "R = B\\*M"),
        ((out, x, 0, 1.0, loss, grad), "samples_per_target"),
        ((out, np.zeros((2, 6), np.float32), 2, 1.0, loss, grad), "x"),
        ((out, x, 2, 1.0, np.zeros(3, np.float32), grad), "loss"),
        ((out, x, 2, 1.0, loss, np.zeros((4, 6), np.float32)), "grad"),
        ((out, x, 2, 1.0, loss, np.zeros((4, 10), np.float32)[:, ::2]), "grad"),
        ((out, x, 2, 1.0, loss.reshape(4, 1), grad), "loss"),
    ]
    for args, name in bad:
        with pytest.raises(ValueError, match=name):
            bce.bce_rows(*args)


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


def test_softplus_row_sums_large_logits_and_largest_product():
    # +-80..100 (overflowing exp), and o = 0 for 2500 pixels: every factor 1 + e is 2, the most
    # the CPU twin's product can reach (2**1000 per block)
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
# The launchers' argument types are the registered ones (what test_ptx compiles)


def test_launch_arguments_type_as_registered():
    from numba import typeof

    rows = typeof(np.zeros((4, 3), np.float32))
    vec = typeof(np.zeros(4, np.float32))
    launched = {
        bce.bce_rows_kernel: (rows, rows, typeof(np.int32(2)), typeof(np.float32(1)), vec, rows),
        bce.softplus_row_sums_kernel: (rows, vec, vec),
    }
    for kernel, sigs in bce.CUDA_KERNELS:
        assert launched[kernel] in [tuple(s) for s in sigs], kernel


# ---------------------------------------------------------------------------------------------
# Real GPU (runs wherever CuPy sees one)


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_usable(), reason="needs CuPy and a CUDA GPU")
def test_cuda_matches_cpu_on_gpu():
    import cupy

    rng = np.random.default_rng(0)
    for batch, samples, pixels in [(1, 1, 1), (3, 2, 784), (50, 2, 784), (2, 1, 300)]:
        out, x = make_case(rng, batch, samples, pixels, scale=30.0)
        loss, grad = run_bce(out, x, samples, 0.01)
        d_loss = cupy.empty(loss.shape, cupy.float32)
        d_grad = cupy.empty(grad.shape, cupy.float32)
        bce.bce_rows_cuda(cupy.asarray(out), cupy.asarray(x), samples, 0.01, d_loss, d_grad)
        np.testing.assert_allclose(cupy.asnumpy(d_loss), loss, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(cupy.asnumpy(d_grad), grad, rtol=1e-5, atol=1e-12)
        bias = rng.standard_normal(pixels).astype(np.float32)
        sums = np.empty(out.shape[0], np.float32)
        bce.softplus_row_sums(out, bias, sums)
        d_sums = cupy.empty_like(d_loss)
        bce.softplus_row_sums_cuda(cupy.asarray(out), cupy.asarray(bias), d_sums)
        np.testing.assert_allclose(cupy.asnumpy(d_sums), sums, rtol=1e-5, atol=1e-5)
    for kernel, sigs in bce.CUDA_KERNELS:
        assert set(kernel.overloads) <= {tuple(s) for s in sigs}, (kernel, list(kernel.overloads))
