"""kernels/bce.py's CUDA twins under the CUDA simulator, against the CPU twins.

One block of bce.THREADS (128) threads per row (logits out + bias): the shapes cover D = 1, D < 128 (most threads
idle), D = 128 (one full pass), D = 300 (two full passes and a partial one), and M > 1 (the
row -> target index r // M). Small shapes: the simulator runs each thread as a Python thread.
The simulator runs the same float32 @njit bodies as the CPU twin (kernels/fastmath_f32.py's
exp/log1p; compiled without the CPU loops' fused multiply-adds: ~1 ulp apart), while the kernel
sums float32 partials in a tree where the CPU twin sums in float64: sums agree to rtol 1e-5
(+1e-6 absolute), gradients element by element to rtol 1e-5."""
import numpy as np
import pytest

from dvae_cupy.kernels import bce
from launches import record_launches

# (B, M, D)
SHAPES = [(1, 1, 1), (2, 1, 7), (1, 1, 128), (1, 2, 300)]


def make_case(rng, batch, samples, pixels, large=False):
    rows = batch * samples
    if large:  # exp(|o|) would overflow float32
        out = rng.uniform(60.0, 100.0, (rows, pixels)) * rng.choice([-1.0, 1.0], (rows, pixels))
    else:
        out = rng.standard_normal((rows, pixels)) * 4
    x = (rng.random((batch, pixels)) < 0.4).astype(np.float32)
    return out.astype(np.float32), x


def both(out, x, samples, grad_scale, bias=None):
    """(CPU loss, CPU grad, CUDA loss, CUDA grad), the CUDA outputs pre-filled with nan; a zero
    bias unless one is given."""
    rows = out.shape[0]
    bias = np.zeros(out.shape[1], np.float32) if bias is None else bias
    cpu_loss, cpu_grad = np.empty(rows, np.float32), np.empty(out.shape, np.float32)
    bce.bce_rows(out, bias, x, samples, grad_scale, cpu_loss, cpu_grad)
    loss, grad = np.full(rows, np.nan, np.float32), np.full(out.shape, np.nan, np.float32)
    bce.bce_rows_cuda(out, bias, x, samples, grad_scale, loss, grad)
    return cpu_loss, cpu_grad, loss, grad


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bce_rows_cuda_matches_cpu(shape):
    batch, samples, pixels = shape
    rng = np.random.default_rng(sum(shape))
    out, x = make_case(rng, batch, samples, pixels)
    bias = rng.standard_normal(pixels).astype(np.float32)
    out_before = out.copy()
    cpu_loss, cpu_grad, loss, grad = both(out, x, samples, 0.01, bias)
    np.testing.assert_array_equal(out, out_before)
    np.testing.assert_allclose(loss, cpu_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, cpu_grad, rtol=1e-5, atol=1e-14)


def test_bce_rows_cuda_large_logits():
    rng = np.random.default_rng(1)
    out, x = make_case(rng, 1, 2, 150, large=True)
    cpu_loss, cpu_grad, loss, grad = both(out, x, 2, 1.0)
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(loss, cpu_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, cpu_grad, rtol=1e-5, atol=1e-38)


def test_bce_rows_cuda_in_place_and_explicit_stream():
    rng = np.random.default_rng(2)
    out, x = make_case(rng, 2, 1, 40)
    cpu_loss, cpu_grad, _, _ = both(out, x, 1, 0.5)
    loss = np.empty(2, np.float32)
    bce.bce_rows_cuda(out, np.zeros(40, np.float32), x, 1, 0.5, loss, out, stream=0)  # grad is out
    np.testing.assert_allclose(loss, cpu_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, cpu_grad, rtol=1e-5, atol=1e-14)


def test_bce_rows_cuda_rejects_bad_arguments():
    out = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match="R = B"):
        bce.bce_rows_cuda(out, np.zeros(5, np.float32), np.zeros((3, 5), np.float32), 1, 1.0,
                          np.zeros(4, np.float32), out)


@pytest.mark.parametrize("rows, pixels", [(1, 1), (2, 7), (2, 300)], ids=str)
def test_softplus_row_sums_cuda_matches_cpu(rows, pixels):
    rng = np.random.default_rng(rows * pixels)
    out = (rng.standard_normal((rows, pixels)) * 4).astype(np.float32)
    out[0, 0] = 95.0  # one overflowing logit each way
    out[-1, -1] = -95.0
    bias = rng.standard_normal(pixels).astype(np.float32)
    cpu = np.empty(rows, np.float32)
    bce.softplus_row_sums(out, bias, cpu)
    sums = np.full(rows, np.nan, np.float32)
    bce.softplus_row_sums_cuda(out, bias, sums)
    np.testing.assert_allclose(sums, cpu, rtol=1e-5, atol=1e-6)


EDGE_LOGITS = [0.0, 1e-8, -1e-8, 20.0, -20.0, 80.0, -80.0, 87.33654, -87.33654, 87.34, -87.34,
               88.0, -88.0, 100.0, -100.0]


def test_edge_logits_cuda_match_cpu():
    # every edge value in every row, at shifted positions; binary and fractional targets
    edge = np.float32(EDGE_LOGITS)
    pixels = 2 * len(edge) + 3
    out = np.stack([np.roll(np.resize(edge, pixels), k) for k in range(4)]).astype(np.float32)
    x = np.zeros((2, pixels), np.float32)
    x[1] = 1.0
    x[1, ::4] = 0.5
    cpu_loss, cpu_grad, loss, grad = both(out, x, 2, 0.5)
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(loss, cpu_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, cpu_grad, rtol=1e-5, atol=1e-38)
    bias = np.zeros(pixels, np.float32)
    cpu = np.empty(4, np.float32)
    bce.softplus_row_sums(out, bias, cpu)
    sums = np.full(4, np.nan, np.float32)
    bce.softplus_row_sums_cuda(out, bias, sums)
    np.testing.assert_allclose(sums, cpu, rtol=1e-5, atol=1e-6)


def test_zero_rows_launch_nothing(monkeypatch):
    bce_rows = record_launches(monkeypatch, bce, "bce_rows_kernel")
    sums = record_launches(monkeypatch, bce, "softplus_row_sums_kernel")
    for rows in (0, 1):
        out, bias = np.zeros((rows, 3), np.float32), np.zeros(3, np.float32)
        loss = np.zeros(rows, np.float32)
        bce.bce_rows_cuda(out, bias, np.zeros((rows, 3), np.float32), 1, 1.0, loss, out.copy())
        bce.softplus_row_sums_cuda(out, bias, loss)
        assert len(bce_rows) == len(sums) == rows  # none for 0 rows; the recorders stand in
