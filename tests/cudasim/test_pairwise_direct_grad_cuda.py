"""kernels/pairwise_direct_grad.py's CUDA kernel under the simulator, against the estimate
written in NumPy float64 from the same codes (tests/test_pairwise_direct_grad.py checks the CPU
twin and the whole kernel pipeline against the reference)."""
import numpy as np
import pytest

from dvae_cupy import reference as ref
from dvae_cupy.kernels import pairwise_direct_grad as dg


def expected_grad(enc_out, base, plus, eps, grad_scale, M, attractive, two_sided):
    R, N = plus.shape
    B = R // M
    stats = [np.concatenate([ref.onehot(z, 2).reshape(R, 2 * N), ref.pair_statistics(z)], 1)
             for z in (base, plus)]
    diff = (stats[0] - stats[1]).reshape(B, M, -1).mean(axis=1)
    diff = diff * grad_scale / ((2 if two_sided else 1) * np.float64(eps[0]))
    if attractive:
        diff[:, 2 * N:] *= 1 / (1 + np.exp(-enc_out[:, 2 * N:].astype(np.float64)))
    return diff


@pytest.mark.parametrize("two_sided", [False, True])
@pytest.mark.parametrize("attractive", [True, False])
@pytest.mark.parametrize("B, M, N", [(1, 1, 1), (4, 3, 9)])  # 4 x 54 = 216 threads
def test_pairwise_direct_grad_cuda(B, M, N, attractive, two_sided):
    rng = np.random.default_rng([B, M, N])
    enc_out = rng.normal(size=(B, ref.structured_output_width(N))).astype(np.float32)
    base = rng.integers(0, 2, size=(B * M, N)).astype(np.int32)
    plus = np.where(rng.uniform(size=base.shape) < 0.3, 1 - base, base).astype(np.int32)
    eps = np.array([0.3], np.float32)
    grad = np.full(enc_out.shape, np.nan, np.float32)
    dg.pairwise_direct_grad_cuda(enc_out, base, plus, eps, 1.0 / B, M, attractive, two_sided,
                                 grad)
    expected = expected_grad(enc_out, base, plus, eps, 1.0 / B, M, attractive, two_sided)
    if N > 1:
        assert np.count_nonzero(expected) > 0
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-9)


def test_grad_refuses_a_number_eps():
    codes = np.zeros((2, 3), np.int32)
    with pytest.raises(ValueError, match="eps must be a 1-element 1-D float32 array"):
        dg.pairwise_direct_grad_cuda(np.zeros((2, 9), np.float32), codes, codes, 0.5, 1.0, 1,
                                     True, False, np.zeros((2, 9), np.float32))
