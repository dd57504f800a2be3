"""kernels/onehot_linear.py's CUDA twins under the CUDA simulator, against the CPU twins.

Every target adds the same float32 terms in the same order (no products to fuse), so the
launchers' outputs must equal the CPU twins' bit for bit. Small shapes (a simulated thread is a
Python thread), including R = 1, K = 2, N = 1 and N > 1, H = 7 and H = 300 (the gather's two
blocks, the second partly idle; the scatter's N*K*H + H threads likewise), and R = 0 (the
scatter still zeroes its outputs).
"""
import numpy as np
import pytest

from dvae_cupy.kernels import onehot_linear as ops
from launches import record_launches

# (R, N, K, H)
CASES = [(1, 1, 2, 7), (1, 2, 2, 300), (4, 3, 5, 7), (9, 1, 3, 11), (2, 4, 2, 1)]


def random_case(R, N, K, H, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N * K, H)).astype(np.float32),
            rng.standard_normal(H).astype(np.float32),
            rng.integers(0, K, size=(R, N), dtype=np.int32),
            rng.standard_normal((R, H)).astype(np.float32))


def both(op, *inputs, outputs):
    """The CPU twin's and the launcher's outputs (nan-filled arrays of the given shapes)."""
    results = []
    for fn in (getattr(ops, op), getattr(ops, op + "_cuda")):
        out = [np.full(shape, np.nan, np.float32) for shape in outputs]
        fn(*inputs, *out)
        results.append(out)
    return results


@pytest.mark.parametrize("R, N, K, H", CASES, ids=str)
def test_gather_rows_sum_cuda_equals_cpu(R, N, K, H):
    weight, bias, codes, _ = random_case(R, N, K, H, seed=R + H)
    expected, got = both("gather_rows_sum", weight, bias, codes, K, outputs=[(R, H), (R, H)])
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("R, N, K, H", CASES + [(0, 2, 3, 4)], ids=str)
def test_scatter_rows_add_cuda_equals_cpu(R, N, K, H):
    weight, bias, codes, grad_out = random_case(R, N, K, H, seed=R * H)
    hidden = np.maximum(grad_out[::-1] + 0.3, 0).astype(np.float32)  # some units off
    grad_out_before = grad_out.copy()
    expected, got = both("scatter_rows_add", grad_out, hidden, codes, K,
                         outputs=[weight.shape, (H,)])
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    np.testing.assert_array_equal(grad_out, grad_out_before)
    if R == 0:
        assert (got[0] == 0).all() and (got[1] == 0).all()


def test_scatter_many_rows_into_one():
    # every row on one code: each grad_weight thread sums all R rows, in order
    R, N, K, H = 40, 2, 3, 5
    weight, _, _, grad_out = random_case(R, N, K, H, seed=3)
    codes = np.full((R, N), 1, np.int32)
    hidden = np.ones((R, H), np.float32)
    expected, got = both("scatter_rows_add", grad_out, hidden, codes, K,
                         outputs=[weight.shape, (H,)])
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_zero_rows_gather_launches_nothing(monkeypatch):
    launches = record_launches(monkeypatch, ops, "gather_rows_sum_kernel")
    weight, bias, _, _ = random_case(1, 2, 3, 4, seed=0)
    empty = np.empty((0, 4), np.float32)
    ops.gather_rows_sum_cuda(weight, bias, np.empty((0, 2), np.int32), 3, empty, empty.copy())
    assert launches == []
    one = np.empty((1, 4), np.float32)
    ops.gather_rows_sum_cuda(weight, bias, np.zeros((1, 2), np.int32), 3, one, one.copy(),
                             stream=0)
    assert len(launches) == 1  # the recorder does stand in for the kernel
