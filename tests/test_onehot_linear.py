"""kernels/onehot_linear.py on the CPU: gather_rows_sum == onehot(codes) @ W + b and
scatter_rows_add == onehot(codes)^T @ G, against float64 products built with reference.onehot.

Tolerance: a float32 sum of n terms is within n * 2**-24 * sum|terms| of the exact sum (each of
the n roundings is at most half an ulp of a partial sum, |partial| <= sum|terms|); the checks
below use that bound, computed per element, and also rtol 1e-5 against the float64 product.
The CUDA twins run under the simulator (tests/cudasim/test_onehot_linear_cuda.py), compile to
PTX (tests/test_ptx.py) and, where a GPU is present, are compared here.
"""
import numpy as np
import pytest
from numba import typeof

from dvae_cupy import reference
from dvae_cupy.kernels import onehot_linear as ops
from dvae_cupy.kernels._cuda import cupy_usable

U32 = 2.0 ** -24  # unit roundoff of float32

# (R, N, K, H): R = 1, K = 2, N = 1 and N > 1, H = 300 and 7 (not multiples of 256), the
# model's N = 20, K = 10 at R = 100, and R > NK (several rows per category)
CASES = [(1, 1, 2, 7), (1, 3, 2, 300), (5, 1, 10, 300), (100, 20, 10, 300), (3, 4, 5, 7),
         (64, 2, 3, 1), (257, 1, 2, 13)]


def random_case(R, N, K, H, seed):
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((N * K, H)).astype(np.float32)
    bias = rng.standard_normal(H).astype(np.float32)
    codes = rng.integers(0, K, size=(R, N), dtype=np.int32)
    grad_out = rng.standard_normal((R, H)).astype(np.float32)
    return weight, bias, codes, grad_out


def onehot_rows(codes, K):
    """(R, N) codes -> (R, N*K) float64 one-hot rows (the reference's layout)."""
    return reference.onehot(codes, K).reshape(codes.shape[0], -1)


def assert_float32_sum_close(got, exact, n_terms, abs_sum):
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-5 * abs_sum.max(initial=0))
    error = np.abs(got.astype(np.float64) - exact)
    assert (error <= n_terms * U32 * abs_sum).all(), error.max()


@pytest.mark.parametrize("R, N, K, H", CASES, ids=str)
def test_gather_rows_sum_matches_onehot_matmul(R, N, K, H):
    weight, bias, codes, _ = random_case(R, N, K, H, seed=R + 10 * N + 100 * K + H)
    z = onehot_rows(codes, K)
    exact = z @ weight.astype(np.float64) + bias
    out = np.full((R, H), np.nan, dtype=np.float32)  # overwritten, not accumulated into
    ops.gather_rows_sum(weight, bias, codes, K, out)
    assert_float32_sum_close(out, exact, N + 1, z @ np.abs(weight.astype(np.float64)) + np.abs(bias))


@pytest.mark.parametrize("R, N, K, H", CASES, ids=str)
def test_scatter_rows_add_matches_onehot_transpose_matmul(R, N, K, H):
    weight, _, codes, grad_out = random_case(R, N, K, H, seed=R * N * K + H)
    z = onehot_rows(codes, K)
    exact = z.T @ grad_out.astype(np.float64)
    grad_weight = np.full((N * K, H), np.nan, dtype=np.float32)  # overwritten
    ops.scatter_rows_add(grad_out, codes, K, grad_weight)
    assert_float32_sum_close(grad_weight, exact, R, z.T @ np.abs(grad_out.astype(np.float64)))
    unused = z.sum(axis=0) == 0
    assert (grad_weight[unused] == 0).all()  # categories no row picked get exact zeros


def test_scatter_is_the_adjoint_of_gather():
    # <onehot(z) W, G> = <W, onehot(z)^T G>: the two ops are each other's transpose
    R, N, K, H = 9, 3, 4, 11
    weight, _, codes, grad_out = random_case(R, N, K, H, seed=5)
    out = np.empty((R, H), dtype=np.float32)
    ops.gather_rows_sum(weight, np.zeros(H, np.float32), codes, K, out)
    grad_weight = np.empty_like(weight)
    ops.scatter_rows_add(grad_out, codes, K, grad_weight)
    lhs = np.sum(out.astype(np.float64) * grad_out)
    rhs = np.sum(weight.astype(np.float64) * grad_weight)
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_all_rows_on_one_code_and_extreme_codes():
    # every row picks the last category of every variable: all R rows land in N rows
    R, N, K, H = 50, 2, 3, 5
    weight, bias, _, grad_out = random_case(R, N, K, H, seed=2)
    codes = np.full((R, N), K - 1, dtype=np.int32)
    grad_weight = np.empty_like(weight)
    ops.scatter_rows_add(grad_out, codes, K, grad_weight)
    for n in range(N):
        np.testing.assert_allclose(grad_weight[n * K + K - 1], grad_out.astype(np.float64).sum(0),
                                   rtol=1e-5, atol=1e-5)
    out = np.empty((R, H), dtype=np.float32)
    ops.gather_rows_sum(weight, bias, codes, K, out)
    np.testing.assert_allclose(out, np.broadcast_to(bias + weight[K - 1] + weight[2 * K - 1], out.shape),
                               rtol=1e-6)


def test_zero_rows():
    # R = 0: nothing to gather; the scatter still overwrites grad_weight with zeros
    weight, bias, _, _ = random_case(1, 2, 3, 4, seed=0)
    codes = np.empty((0, 2), dtype=np.int32)
    ops.gather_rows_sum(weight, bias, codes, 3, np.empty((0, 4), np.float32))
    grad_weight = np.full_like(weight, np.nan)
    ops.scatter_rows_add(np.empty((0, 4), np.float32), codes, 3, grad_weight)
    assert (grad_weight == 0).all()


def _args(R=2, N=3, K=4, H=5):
    weight, bias, codes, grad_out = random_case(R, N, K, H, seed=0)
    return weight, bias, codes, grad_out, np.empty((R, H), np.float32)


@pytest.mark.parametrize("call, message", [
    (lambda w, b, c, g, o: ops.gather_rows_sum(w, b, c.astype(np.int64), 4, o), "codes must be int32"),
    (lambda w, b, c, g, o: ops.gather_rows_sum(w, b, c, 5, o), r"weight must have shape \(15, 5\)"),
    (lambda w, b, c, g, o: ops.gather_rows_sum(w, b, c, 0, o), "K must be >= 1"),
    (lambda w, b, c, g, o: ops.gather_rows_sum(w, b[:4], c, 4, o), "bias must have shape"),
    (lambda w, b, c, g, o: ops.gather_rows_sum(w, b, c, 4, o[:1]), "out must have shape"),
    (lambda w, b, c, g, o: ops.gather_rows_sum(w.astype(np.float64), b, c, 4, o), "weight must be float32"),
    (lambda w, b, c, g, o: ops.gather_rows_sum(w, b, c, 4, o.T), "out must be C-contiguous"),
    (lambda w, b, c, g, o: ops.scatter_rows_add(g, c, 4, w[:, :4]), "grad_weight must be C-contiguous"),
    (lambda w, b, c, g, o: ops.scatter_rows_add(g[:, :4].copy(), c, 4, w), "grad_out must have shape"),
    (lambda w, b, c, g, o: ops.scatter_rows_add(g, c[0], 4, w), "codes must be 2-D"),
])
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call(*_args())


class LaunchRecorder:
    """Stands in for a @cuda.jit kernel: records the launch configuration and arguments."""

    def __init__(self):
        self.launches = []

    def __getitem__(self, config):
        return lambda *args: self.launches.append((config, args))


@pytest.mark.parametrize("R, N, K, H", [(1, 1, 2, 7), (100, 20, 10, 300)], ids=str)
def test_launchers_pass_the_registered_types(R, N, K, H, monkeypatch):
    # the launchers run here (no GPU: host arrays pass through as_device_view, stream 0); what they
    # would launch with must be a signature the PTX test compiles, on a grid with a thread for each
    # output element (gather) or each (n, j) column (scatter)
    registry = {kernel.py_func.__name__: [tuple(s) for s in sigs] for kernel, sigs in ops.CUDA_KERNELS}
    weight, bias, codes, grad_out, out = _args(R, N, K, H)
    launches = [
        ("gather_rows_sum_kernel", lambda: ops.gather_rows_sum_cuda(weight, bias, codes, K, out), R * H),
        ("scatter_rows_add_kernel", lambda: ops.scatter_rows_add_cuda(grad_out, codes, K, weight), N * H),
    ]
    for name, launch, threads_needed in launches:
        recorder = LaunchRecorder()
        monkeypatch.setattr(ops, name, recorder)
        launch()
        (config, args), = recorder.launches
        assert tuple(typeof(x) for x in args) in registry[name]
        blocks, threads, stream = config
        assert blocks * threads >= threads_needed > (blocks - 1) * threads and stream == 0


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_usable(), reason="needs CuPy and a CUDA GPU")
def test_cuda_matches_cpu_on_gpu():
    import cupy

    for R, N, K, H in CASES:
        weight, bias, codes, grad_out = random_case(R, N, K, H, seed=R + H)
        out = np.empty((R, H), np.float32)
        grad_weight = np.empty_like(weight)
        ops.gather_rows_sum(weight, bias, codes, K, out)
        ops.scatter_rows_add(grad_out, codes, K, grad_weight)
        got_out = cupy.full((R, H), cupy.nan, dtype=cupy.float32)
        got_grad = cupy.full(weight.shape, cupy.nan, dtype=cupy.float32)
        ops.gather_rows_sum_cuda(cupy.asarray(weight), cupy.asarray(bias), cupy.asarray(codes), K,
                                 got_out)
        ops.scatter_rows_add_cuda(cupy.asarray(grad_out), cupy.asarray(codes), K, got_grad)
        # same additions in the same order, no products to fuse: bit for bit
        np.testing.assert_array_equal(cupy.asnumpy(got_out), out)
        np.testing.assert_array_equal(cupy.asnumpy(got_grad), grad_weight)
    for kernel, sigs in ops.CUDA_KERNELS:
        assert set(kernel.overloads) <= {tuple(s) for s in sigs}, (kernel, list(kernel.overloads))
