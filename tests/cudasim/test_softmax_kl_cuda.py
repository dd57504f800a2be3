"""kernels/softmax_kl.py's CUDA twin under the CUDA simulator, against the CPU twin.

One block of softmax_kl.THREADS (32) threads per sample, one thread per variable: the shapes
cover N = 1 (31 idle threads) with K = 2 and with a large K, N = 40 > 32 (a second, partial pass
over the variables), and logits of +-100 (exp overflows float32 past 88.7). Tolerances as in tests/test_softmax_kl.py: the
simulator's math runs in float64, the per-sample sum is a float32 tree.
"""
import numpy as np
import pytest

from dvae_cupy.kernels import softmax_kl as sk

# (B, N, K)
SHAPES = [(1, 1, 2), (2, 3, 4), (2, 40, 3), (1, 1, 50)]


def both(logits, n_categories, grad_scale):
    batch = logits.shape[0]
    cpu_kl, cpu_grad = np.empty(batch, np.float32), np.empty(logits.shape, np.float32)
    sk.softmax_kl(logits, n_categories, grad_scale, cpu_kl, cpu_grad)
    kl, grad = np.full(batch, np.nan, np.float32), np.full(logits.shape, np.nan, np.float32)
    sk.softmax_kl_cuda(logits, n_categories, grad_scale, kl, grad)
    return cpu_kl, cpu_grad, kl, grad


@pytest.mark.parametrize("large", [False, True], ids=["normal", "pm100"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_softmax_kl_cuda_matches_cpu(shape, large):
    batch, n_latent, n_categories = shape
    rng = np.random.default_rng(sum(shape))
    size = (batch, n_latent * n_categories)
    logits = rng.uniform(-100, 100, size) if large else rng.standard_normal(size) * 3
    logits = logits.astype(np.float32)
    cpu_kl, cpu_grad, kl, grad = both(logits, n_categories, 0.5)
    assert np.isfinite(kl).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(kl, cpu_kl, rtol=1e-5, atol=1e-6 * n_latent)
    np.testing.assert_allclose(grad, cpu_grad, rtol=1e-5, atol=1e-6 * 0.5)


def test_softmax_kl_cuda_rejects_bad_arguments():
    logits = np.zeros((2, 6), np.float32)
    with pytest.raises(ValueError, match="K"):
        sk.softmax_kl_cuda(logits, 4, 1.0, np.zeros(2, np.float32), np.zeros((2, 6), np.float32))
