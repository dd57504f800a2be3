"""kernels/onehot_linear.py on the CPU: gather_rows_sum == onehot(codes) @ W + b (and its ReLU)
and scatter_rows_add == onehot(codes)^T @ (G masked by the ReLU) (and the bias sums), against
float64 products built with reference.onehot; and bit for bit against the sequences they
replace, written out in NumPy (the row adds in order, np.maximum, the mask, np.sum(axis=0)).

Tolerance: a float32 sum of n terms is within n * 2**-24 * sum|terms| of the exact sum (each of
the n roundings is at most half an ulp of a partial sum, |partial| <= sum|terms|); the checks
below use that bound, computed per element, and also rtol 1e-5 against the float64 product.
The CUDA twins run under the simulator (tests/cudasim/test_onehot_linear_cuda.py), compile to
PTX (tests/test_ptx.py) and, where a GPU is present, are compared here.
"""
import numpy as np
import pytest

from dvae_cupy import reference
from dvae_cupy.kernels import onehot_linear as ops
from dvae_cupy.kernels._cuda import cupy_usable
from launches import as_if_no_gpu, covers, record_launches, registered

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


def gather(weight, bias, codes, K):
    """(pre, hidden) from the op, both pre-filled with nan (outputs, not accumulated into)."""
    pre = np.full((codes.shape[0], weight.shape[1]), np.nan, dtype=np.float32)
    hidden = np.full_like(pre, np.nan)
    ops.gather_rows_sum(weight, bias, codes, K, pre, hidden)
    return pre, hidden


def scatter(grad_out, hidden, codes, K):
    """(grad_weight, grad_bias) from the op, pre-filled with nan (overwritten)."""
    grad_weight = np.full((codes.shape[1] * K, grad_out.shape[1]), np.nan, dtype=np.float32)
    grad_bias = np.full(grad_out.shape[1], np.nan, dtype=np.float32)
    ops.scatter_rows_add(grad_out, hidden, codes, K, grad_weight, grad_bias)
    return grad_weight, grad_bias


def bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


@pytest.mark.parametrize("R, N, K, H", CASES, ids=str)
def test_gather_rows_sum_matches_onehot_matmul(R, N, K, H):
    weight, bias, codes, _ = random_case(R, N, K, H, seed=R + 10 * N + 100 * K + H)
    z = onehot_rows(codes, K)
    exact = z @ weight.astype(np.float64) + bias
    pre, hidden = gather(weight, bias, codes, K)
    assert_float32_sum_close(pre, exact, N + 1, z @ np.abs(weight.astype(np.float64)) + np.abs(bias))
    np.testing.assert_array_equal(hidden, reference.relu(pre.astype(np.float64)))


@pytest.mark.parametrize("R, N, K, H", CASES, ids=str)
def test_gather_rows_sum_is_the_numpy_sequence_bit_for_bit(R, N, K, H):
    # the sequence it replaces: bias, then + the picked row of each variable n = 0, 1, ...
    # (today's gather), then np.maximum(pre, 0, out=hidden)
    weight, bias, codes, _ = random_case(R, N, K, H, seed=R * K + H)
    expected = np.repeat(bias[None], R, axis=0)
    for n in range(N):
        expected += weight[n * K + codes[:, n]]
    pre, hidden = gather(weight, bias, codes, K)
    np.testing.assert_array_equal(bits(pre), bits(expected))
    np.testing.assert_array_equal(bits(hidden), bits(np.maximum(expected, 0)))


def test_gather_relu_is_np_maximum_on_signed_zeros_and_nan():
    # np.maximum(p, 0): -0.0 -> +0.0, nan stays nan, tiny and infinite values as they are
    H = 9
    weight = np.zeros((2, H), np.float32)
    weight[1] = [-0.0, 0.0, np.nan, -np.inf, np.inf, -1e-45, 1e-45, -1.0, 1.0]
    bias = np.full(H, -0.0, np.float32)  # -0 + -0 = -0 keeps the sign of zero in pre
    pre, hidden = gather(weight, bias, np.array([[1]], np.int32), 2)
    assert np.signbit(pre[0, 0])
    np.testing.assert_array_equal(bits(hidden), bits(np.maximum(pre, 0)))
    assert not np.signbit(hidden[0, 0]) and np.isnan(hidden[0, 2])


@pytest.mark.parametrize("R, N, K, H", CASES, ids=str)
def test_scatter_rows_add_matches_onehot_transpose_matmul(R, N, K, H):
    weight, bias, codes, grad_out = random_case(R, N, K, H, seed=R * N * K + H)
    _, hidden = gather(weight, bias, codes, K)
    masked = grad_out.astype(np.float64) * (hidden > 0)  # decoder_backward's mask
    z = onehot_rows(codes, K)
    grad_out_before = grad_out.copy()
    grad_weight, grad_bias = scatter(grad_out, hidden, codes, K)
    np.testing.assert_array_equal(grad_out, grad_out_before)  # the mask is not written back
    assert_float32_sum_close(grad_weight, z.T @ masked, R, z.T @ np.abs(masked))
    assert_float32_sum_close(grad_bias, masked.sum(axis=0), R, np.abs(masked).sum(axis=0))
    unused = z.sum(axis=0) == 0
    assert (grad_weight[unused] == 0).all()  # categories no row picked get exact zeros


@pytest.mark.parametrize("R, N, K, H", CASES, ids=str)
def test_scatter_rows_add_is_the_numpy_sequence_bit_for_bit(R, N, K, H):
    # the sequence it replaces: the mask in place (relu_backward), then grad_weight = 0 and
    # += the masked row r for r = 0, 1, ... (today's scatter), then np.sum(masked, axis=0)
    weight, bias, codes, grad_out = random_case(R, N, K, H, seed=R + N + K + H)
    _, hidden = gather(weight, bias, codes, K)
    masked = np.where(hidden > 0, grad_out, np.float32(0.0))
    expected = np.zeros((N * K, H), np.float32)
    for r in range(R):
        for n in range(N):
            expected[n * K + codes[r, n]] += masked[r]
    grad_weight, grad_bias = scatter(grad_out, hidden, codes, K)
    np.testing.assert_array_equal(bits(grad_weight), bits(expected))
    if H > 1:  # np.sum over axis 0 of an (R, 1) array is pairwise, not row by row
        np.testing.assert_array_equal(bits(grad_bias), bits(np.sum(masked, axis=0)))


def test_scatter_is_the_adjoint_of_gather():
    # <onehot(z) W, G> = <W, onehot(z)^T G>: the two ops are each other's transpose (with every
    # hidden unit on, the mask passes G through)
    R, N, K, H = 9, 3, 4, 11
    weight, _, codes, grad_out = random_case(R, N, K, H, seed=5)
    out, _ = gather(weight, np.zeros(H, np.float32), codes, K)
    grad_weight, _ = scatter(grad_out, np.ones((R, H), np.float32), codes, K)
    lhs = np.sum(out.astype(np.float64) * grad_out)
    rhs = np.sum(weight.astype(np.float64) * grad_weight)
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_all_rows_on_one_code_and_extreme_codes():
    # every row picks the last category of every variable: all R rows land in N rows
    R, N, K, H = 50, 2, 3, 5
    weight, bias, _, grad_out = random_case(R, N, K, H, seed=2)
    codes = np.full((R, N), K - 1, dtype=np.int32)
    grad_weight, grad_bias = scatter(grad_out, np.ones((R, H), np.float32), codes, K)
    for n in range(N):
        np.testing.assert_allclose(grad_weight[n * K + K - 1], grad_out.astype(np.float64).sum(0),
                                   rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad_bias, grad_out.astype(np.float64).sum(0), rtol=1e-5, atol=1e-5)
    pre, _ = gather(weight, bias, codes, K)
    np.testing.assert_allclose(pre, np.broadcast_to(bias + weight[K - 1] + weight[2 * K - 1],
                                                    pre.shape), rtol=1e-6)


def test_zero_rows():
    # R = 0: nothing to gather; the scatter still overwrites grad_weight and grad_bias with zeros
    weight, bias, _, _ = random_case(1, 2, 3, 4, seed=0)
    codes = np.empty((0, 2), dtype=np.int32)
    gather(weight, bias, codes, 3)
    grad_weight, grad_bias = scatter(np.empty((0, 4), np.float32), np.empty((0, 4), np.float32),
                                     codes, 3)
    assert (grad_weight == 0).all() and (grad_bias == 0).all()


def _args(R=2, N=3, K=4, H=5):
    weight, bias, codes, grad_out = random_case(R, N, K, H, seed=0)
    return (weight, bias, codes, grad_out, np.empty((R, H), np.float32),
            np.empty((R, H), np.float32))


BAD_CALLS = [
    (lambda w, b, c, g, o, h: ops.gather_rows_sum(w, b, c.astype(np.int64), 4, o, h), "codes must be int32"),
    (lambda w, b, c, g, o, h: ops.gather_rows_sum(w, b, c, 5, o, h), r"weight must have shape \(15, 5\)"),
    (lambda w, b, c, g, o, h: ops.gather_rows_sum(w, b, c, 0, o, h), "K must be an integer >= 1"),
    (lambda w, b, c, g, o, h: ops.gather_rows_sum(w, b, c, 2.5, o, h), "K must be an integer >= 1"),
    (lambda w, b, c, g, o, h: ops.gather_rows_sum(w, b[:4], c, 4, o, h), "bias must have shape"),
    (lambda w, b, c, g, o, h: ops.gather_rows_sum(w, b, c, 4, o[:1], h), "pre must have shape"),
    (lambda w, b, c, g, o, h: ops.gather_rows_sum(w, b, c, 4, o, h[:, :4].copy()), "hidden must have shape"),
    (lambda w, b, c, g, o, h: ops.gather_rows_sum(w, b, c, 4, o, h.astype(np.float64)), "hidden must be float32"),
    (lambda w, b, c, g, o, h: ops.gather_rows_sum(w.astype(np.float64), b, c, 4, o, h), "weight must be float32"),
    (lambda w, b, c, g, o, h: ops.gather_rows_sum(w, b, c, 4, o.T, h), "pre must be C-contiguous"),
    (lambda w, b, c, g, o, h: ops.scatter_rows_add(g, h, c, 4, w[:, :4], b), "grad_weight must be C-contiguous"),
    (lambda w, b, c, g, o, h: ops.scatter_rows_add(g[:, :4].copy(), h, c, 4, w, b), "grad_out must have shape"),
    (lambda w, b, c, g, o, h: ops.scatter_rows_add(g, h[:1], c, 4, w, b), "hidden must have shape"),
    (lambda w, b, c, g, o, h: ops.scatter_rows_add(g, h, c[0], 4, w, b), "codes must be 2-D"),
    (lambda w, b, c, g, o, h: ops.scatter_rows_add(g, h, c, 4, w, b[:4]), "grad_bias must have shape"),
    (lambda w, b, c, g, o, h: ops.scatter_rows_add(g, h, c, 4, w, b.astype(np.float64)), "grad_bias must be float32"),
]


@pytest.mark.parametrize("target", ["cpu", "cuda"])
@pytest.mark.parametrize("call, message", BAD_CALLS, ids=[m for _, m in BAD_CALLS])
def test_bad_arguments_are_named(call, message, target, monkeypatch):
    if target == "cuda":  # the launchers share the fronts' checks: call them instead
        monkeypatch.setattr(ops, "gather_rows_sum", ops.gather_rows_sum_cuda)
        monkeypatch.setattr(ops, "scatter_rows_add", ops.scatter_rows_add_cuda)
    with pytest.raises(ValueError, match=message):
        call(*_args())


@pytest.mark.parametrize("R, N, K, H", [(1, 1, 2, 7), (100, 1, 10, 300), (100, 20, 10, 300)],
                         ids=str)
def test_launchers_pass_the_registered_types(R, N, K, H, monkeypatch):
    # what they would launch with must be a signature the PTX test compiles, on a grid with a
    # thread for each output element: R*H (gather), N*K*H + H (scatter)
    as_if_no_gpu(monkeypatch)
    weight, bias, codes, grad_out, pre, hidden = _args(R, N, K, H)
    launches = [
        ("gather_rows_sum_kernel",
         lambda: ops.gather_rows_sum_cuda(weight, bias, codes, K, pre, hidden), R * H),
        ("scatter_rows_add_kernel",
         lambda: ops.scatter_rows_add_cuda(grad_out, hidden, codes, K, weight, bias), (N * K + 1) * H),
    ]
    for name, launch, needed in launches:
        recorded = record_launches(monkeypatch, ops, name)
        launch()
        (config, types), = recorded
        assert types in registered(ops)[name]
        assert covers(config, needed)


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_usable(), reason="needs CuPy and a CUDA GPU")
def test_cuda_matches_cpu_on_gpu():
    import cupy

    for R, N, K, H in CASES:
        weight, bias, codes, grad_out = random_case(R, N, K, H, seed=R + H)
        pre, hidden = gather(weight, bias, codes, K)
        grad_weight, grad_bias = scatter(grad_out, hidden, codes, K)
        d = {name: cupy.asarray(a) for name, a in
             dict(weight=weight, bias=bias, codes=codes, grad_out=grad_out).items()}
        got_pre = cupy.full((R, H), cupy.nan, dtype=cupy.float32)
        got_hidden = cupy.full((R, H), cupy.nan, dtype=cupy.float32)
        got_weight = cupy.full(weight.shape, cupy.nan, dtype=cupy.float32)
        got_bias = cupy.full(H, cupy.nan, dtype=cupy.float32)
        ops.gather_rows_sum_cuda(d["weight"], d["bias"], d["codes"], K, got_pre, got_hidden)
        ops.scatter_rows_add_cuda(d["grad_out"], got_hidden, d["codes"], K, got_weight, got_bias)
        # same additions in the same order, no products to fuse: bit for bit
        np.testing.assert_array_equal(cupy.asnumpy(got_pre), pre)
        np.testing.assert_array_equal(cupy.asnumpy(got_hidden), hidden)
        np.testing.assert_array_equal(cupy.asnumpy(got_weight), grad_weight)
        np.testing.assert_array_equal(cupy.asnumpy(got_bias), grad_bias)
    for kernel, sigs in ops.CUDA_KERNELS:
        assert set(kernel.overloads) <= {tuple(s) for s in sigs}, (kernel, list(kernel.overloads))
