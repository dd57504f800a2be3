"""kernels/softmax_kl.py on the CPU against the float64 reference (reference.kl_uniform and
kl_uniform_grad), on awkward shapes (K = 1, 2; N = 1 with a large K; N > 32, which the CUDA
kernel's 32 threads cover in two passes) and logits of +-100.
The CUDA twin is checked under the simulator (tests/cudasim/test_softmax_kl_cuda.py), compiled
to PTX (tests/test_ptx.py) and, where a GPU is present, on it (the gpu-marked test below).

Tolerances: float32 inputs seen by the reference as the same values in float64, so only the
kernel's float32 arithmetic is measured. Each variable's KL is sum q log q + log K, which cancels
to ~0 for a near-uniform q: ~1e-7 absolute per variable, hence atol 1e-6 * N next to rtol 1e-5.
The gradient q (log q - sum q log q) crosses zero: rtol 1e-5 with atol 1e-6 * grad_scale.
"""
import numpy as np
import pytest

from dvae_cupy import reference
from dvae_cupy.kernels import softmax_kl as sk
from dvae_cupy.kernels._cuda import cupy_usable

# (B, N, K)
SHAPES = [(1, 1, 2), (1, 1, 1), (4, 3, 2), (7, 20, 10), (2, 1, 300), (3, 50, 3), (100, 30, 10)]


def expected(logits, n_categories, grad_scale):
    batch, width = logits.shape
    h = logits.astype(np.float64).reshape(batch, width // n_categories, n_categories)
    return (reference.kl_uniform(h),
            grad_scale * reference.kl_uniform_grad(h).reshape(batch, width))


def run(logits, n_categories, grad_scale):
    kl = np.full(logits.shape[0], np.nan, dtype=np.float32)
    grad = np.full(logits.shape, np.nan, dtype=np.float32)  # OVERWRITTEN, whatever it held
    sk.softmax_kl(logits, n_categories, grad_scale, kl, grad)
    return kl, grad


def check(logits, n_categories, grad_scale):
    kl, grad = run(logits, n_categories, grad_scale)
    assert np.isfinite(kl).all() and np.isfinite(grad).all()
    want_kl, want_grad = expected(logits, n_categories, grad_scale)
    n_latent = logits.shape[1] // n_categories
    np.testing.assert_allclose(kl, want_kl, rtol=1e-5, atol=1e-6 * n_latent)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-6 * abs(grad_scale))
    return kl, grad


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_softmax_kl_matches_reference(shape):
    batch, n_latent, n_categories = shape
    rng = np.random.default_rng(sum(shape))
    logits = (rng.standard_normal((batch, n_latent * n_categories)) * 3).astype(np.float32)
    check(logits, n_categories, 0.01)


@pytest.mark.parametrize("shape", [(3, 4, 2), (5, 20, 10), (2, 1, 50)], ids=str)
def test_large_logits_are_stable(shape):
    # +-100: exp(h) overflows float32 (h > 88.7) without the max shift; many q underflow to 0
    # (q log q must be 0, not nan)
    batch, n_latent, n_categories = shape
    rng = np.random.default_rng(7)
    logits = rng.uniform(-100.0, 100.0, (batch, n_latent * n_categories)).astype(np.float32)
    check(logits, n_categories, 1.0)


def test_uniform_and_one_hot_extremes():
    # equal logits: KL 0 and zero gradient; one logit 100 above the others: KL = log K
    logits = np.zeros((2, 6), dtype=np.float32)
    logits[0] = 3.5
    logits[1, [0, 3]] = 100.0
    kl, grad = check(logits, 3, 2.0)
    assert abs(kl[0]) < 1e-6 and np.all(np.abs(grad[0]) < 1e-6)
    assert kl[1] == pytest.approx(2 * np.log(3.0), rel=1e-6)


def test_grad_scale_and_overwrite():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((4, 12)).astype(np.float32)
    kl1, grad1 = run(logits, 4, 1.0)
    kl2, grad2 = run(logits, 4, -0.25)
    np.testing.assert_array_equal(kl1, kl2)  # the scale touches the gradient only
    np.testing.assert_allclose(grad2, -0.25 * grad1, rtol=1e-6, atol=0)
    grad = np.full_like(logits, 1e9)
    sk.softmax_kl(logits, 4, 1.0, np.empty(4, np.float32), grad)
    np.testing.assert_array_equal(grad, grad1)  # overwritten, not added to


def test_softmax_kl_rejects_bad_arguments():
    logits = np.zeros((3, 6), dtype=np.float32)
    kl = np.zeros(3, dtype=np.float32)
    grad = np.zeros((3, 6), dtype=np.float32)
    sk.softmax_kl(logits, 3, 1.0, kl, grad)  # the good call
    bad = [
        ((logits.astype(np.float64), 3, 1.0, kl, grad), "logits"),
        ((logits, 4, 1.0, kl, grad), "K"),
        ((logits, 0, 1.0, kl, grad), "K"),
        ((logits, 3, 1.0, np.zeros(2, np.float32), grad), "kl"),
        ((logits, 3, 1.0, kl, np.zeros((3, 7), np.float32)), "grad"),
        ((logits, 3, 1.0, kl, np.zeros((6, 3), np.float32).T), "grad"),
        ((logits[:, ::2], 3, 1.0, kl, grad), "logits"),
        ((logits, 3, 1.0, kl, logits), "grad must not be logits"),
    ]
    for args, name in bad:
        with pytest.raises(ValueError, match=name):
            sk.softmax_kl(*args)


def test_launch_arguments_type_as_registered():
    from numba import typeof

    launched = (typeof(np.zeros((2, 6), np.float32)), typeof(np.int32(3)), typeof(np.float32(1)),
                typeof(np.zeros(2, np.float32)), typeof(np.zeros((2, 6), np.float32)))
    (kernel, sigs), = sk.CUDA_KERNELS
    assert kernel is sk.softmax_kl_kernel
    assert launched in [tuple(s) for s in sigs]


# ---------------------------------------------------------------------------------------------
# Real GPU (runs wherever CuPy sees one)


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_usable(), reason="needs CuPy and a CUDA GPU")
def test_cuda_matches_cpu_on_gpu():
    import cupy

    rng = np.random.default_rng(0)
    for batch, n_latent, n_categories in [(1, 1, 2), (100, 20, 10), (100, 1, 300), (7, 70, 3)]:
        logits = (rng.standard_normal((batch, n_latent * n_categories)) * 5).astype(np.float32)
        kl, grad = run(logits, n_categories, 0.01)
        d_kl = cupy.empty(kl.shape, cupy.float32)
        d_grad = cupy.empty(grad.shape, cupy.float32)
        sk.softmax_kl_cuda(cupy.asarray(logits), n_categories, 0.01, d_kl, d_grad)
        np.testing.assert_allclose(cupy.asnumpy(d_kl), kl, rtol=1e-5, atol=1e-6 * n_latent)
        np.testing.assert_allclose(cupy.asnumpy(d_grad), grad, rtol=1e-5, atol=1e-8)
    for kernel, sigs in sk.CUDA_KERNELS:
        assert set(kernel.overloads) <= {tuple(s) for s in sigs}, (kernel, list(kernel.overloads))
