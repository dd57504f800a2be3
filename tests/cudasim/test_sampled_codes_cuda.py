"""kernels/sampled_codes.py's CUDA twins under the CUDA simulator, against the CPU twins.

One thread per row (sampled_code_losses) and per (k, d) (sampled_code_grads), blocks of 256:
the shapes below leave a partial last block and, at K * D = 390, a second block. The row losses
are copied values (exact); the gradients sum the same float32 terms in the same row order, with
the simulator's float64 exp (DESIGN.md), so they are compared with a float32 tolerance.
"""
import numpy as np
import pytest

from dvae_cupy.kernels import sampled_codes


# (B, M, K, D): one row, code and pixel; M > 1 with a code no row samples; two blocks of threads
@pytest.mark.parametrize("B, M, K, D", [(1, 1, 1, 1), (4, 3, 6, 7), (9, 1, 3, 130)], ids=str)
def test_sampled_code_ops_cuda_match_cpu(B, M, K, D):
    rng = np.random.default_rng(B + M + K + D)
    code_out = (rng.standard_normal((K, D)) * 4).astype(np.float32)
    bias = rng.standard_normal(D).astype(np.float32)
    x = (rng.random((B, D)) < 0.4).astype(np.float32)
    codes = rng.integers(0, max(1, K - 1), size=(B * M, 1)).astype(np.int32)  # K-1 unsampled
    got, expected = (np.full((K, D), np.nan, np.float32) for _ in range(2))
    sampled_codes.sampled_code_grads_cuda(code_out, bias, x, codes, M, 0.25, got)
    sampled_codes.sampled_code_grads(code_out, bias, x, codes, M, 0.25, expected)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    losses = rng.standard_normal((B * M, K)).astype(np.float32)
    got_rows, expected_rows = (np.full(B * M, np.nan, np.float32) for _ in range(2))
    sampled_codes.sampled_code_losses_cuda(losses, codes, got_rows)
    sampled_codes.sampled_code_losses(losses, codes, expected_rows)
    np.testing.assert_array_equal(got_rows, expected_rows)
