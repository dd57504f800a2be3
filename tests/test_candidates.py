"""kernels/candidates.py on the CPU: neighbour_hidden, finished into full candidate losses the way
the model does it, against the float64 reference's densely decoded neighbours (candidate_losses).

The parameters and targets are rounded to float32 once and handed to both sides, so the only
difference left is the kernel's float32 arithmetic (and NumPy's float32 `pre` and `u`): relative
errors ~1e-7 per term; the assembled losses come out within ~2e-8 of the loss scale, and the check
allows 1e-6 (the 1e-4 usual for float32 kernels could hide a wrong row whose effect is small).
The CUDA twin is checked under the simulator (tests/cudasim/test_candidates_cuda.py), compiled to
PTX (tests/test_ptx.py) and, where a GPU is present, on it (the gpu test below).
"""
import inspect

import numpy as np
import pytest
from numba import typeof

from dvae_cupy import reference as ref
from dvae_cupy.kernels import candidates
from dvae_cupy.kernels._cuda import cupy_usable

LOSS_RTOL = 1e-6


def float32_problem(rng, B, M, D, H, N, K):
    """Decoder parameters, binary targets and sampled codes, all exactly representable in float32.
    Returns (params float64, x (R, D) float64, codes (R, N) int32) with R = B*M."""
    params = ref.init_params(D, H, N, K, rng)
    params = {name: (2.0 * value).astype(np.float32).astype(np.float64)  # ReLUs both on and off
              for name, value in params.items()}
    x = np.repeat((rng.random((B, D)) < 0.4).astype(np.float64), M, axis=0)
    codes = rng.integers(0, K, size=(B * M, N)).astype(np.int32)
    return params, x, codes


def kernel_inputs(params, x, codes, K):
    """What the model hands neighbour_hidden: pre = onehot(codes) @ dec_w1 + dec_b1 and
    u = x @ dec_w2^T, in float32."""
    f32 = {name: value.astype(np.float32) for name, value in params.items()}
    onehot = ref.onehot(codes, K).reshape(len(codes), -1).astype(np.float32)
    pre = onehot @ f32["dec_w1"] + f32["dec_b1"]
    u = x.astype(np.float32) @ f32["dec_w2"].T
    return pre, f32["dec_w1"], u


def assemble_losses(params, x, codes, K, bounds, op=None):
    """Candidate losses (R, N, K) the way the model builds them: neighbour_hidden over chunks
    [bounds[i], bounds[i+1]) of the R*N*(K-1) candidates, the softplus sums in float64 here,
    store_candidate_losses, and store_sampled_losses with the reference's loss at the sampled code."""
    op = op or candidates.neighbour_hidden
    pre, weight, u = kernel_inputs(params, x, codes, K)
    R, N = codes.shape
    H = pre.shape[1]
    losses = np.full((R, N * K), np.nan, dtype=np.float32)
    linear_b2 = (x @ params["dec_b2"]).astype(np.float32)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        hidden = np.full((stop - start, H), np.nan, dtype=np.float32)
        linear = np.full(stop - start, np.nan, dtype=np.float32)
        op(pre, weight, codes, K, u, start, stop - start, hidden, linear)
        out = hidden.astype(np.float64) @ params["dec_w2"] + params["dec_b2"]
        sums = np.logaddexp(0.0, out).sum(axis=1).astype(np.float32)
        candidates.store_candidate_losses(sums, linear, linear_b2, codes, K, start, losses)
    sampled = ref.decoder_loss(params, x, codes, K).astype(np.float32)
    candidates.store_sampled_losses(sampled, codes, K, losses)
    return losses.reshape(R, N, K).astype(np.float64)


# (B, M, D, H, N, K, chunk bounds over R*N*K candidates): uneven chunks, count = 1 among them
# (B, M, D, H, N, K, chunk bounds over R*N*(K-1) candidates): uneven chunks, count = 1 among them
CASES = [
    (3, 2, 50, 37, 4, 3, [0, 1, 8, 9, 31, 48]),  # 48 candidates
    (2, 1, 30, 16, 1, 5, [0, 8]),  # N = 1: the K-1 other codes
    (4, 1, 20, 1, 3, 2, [0, 5, 6, 12]),  # H = 1, K = 2: one candidate per variable
    (5, 2, 64, 300, 20, 10, [0, 1, 777, 1799, 1800]),  # the model's H, N, K
]


@pytest.mark.parametrize("B, M, D, H, N, K, bounds", CASES,
                         ids=[f"B{c[0]}M{c[1]}D{c[2]}H{c[3]}N{c[4]}K{c[5]}" for c in CASES])
def test_candidate_losses_equal_reference(B, M, D, H, N, K, bounds):
    rng = np.random.default_rng(H * N + K)
    params, x, codes = float32_problem(rng, B, M, D, H, N, K)
    got = assemble_losses(params, x, codes, K, bounds)
    expected = ref.candidate_losses(params, x, codes, K)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=0, atol=LOSS_RTOL * scale)
    # the neighbours differ: the comparison is not trivially of one number
    assert np.ptp(expected) > 1e-3 * scale


def test_chunking_does_not_change_the_result():
    rng = np.random.default_rng(11)
    params, x, codes = float32_problem(rng, 3, 1, 40, 45, 5, 4)
    whole = assemble_losses(params, x, codes, 4, [0, 45])
    pieces = assemble_losses(params, x, codes, 4, list(range(0, 45, 7)) + [45])
    np.testing.assert_array_equal(pieces, whole)  # each candidate is computed on its own


def test_candidates_skip_the_sampled_value_and_cover_every_other():
    # each (r, n) gets the K-1 values other than codes[r, n], each once, in increasing order
    rng = np.random.default_rng(2)
    R, N, K = 4, 3, 5
    codes = rng.integers(0, K, size=(R, N)).astype(np.int32)
    total = candidates.candidate_count(R, N, K)
    losses = np.full((R, N * K), np.nan, np.float32)
    candidates.store_candidate_losses(np.arange(total, dtype=np.float32), np.zeros(total, np.float32),
                                      np.zeros(R, np.float32), codes, K, 0, losses)
    order = losses.reshape(R, N, K)
    for r in range(R):
        for n in range(N):
            assert np.isnan(order[r, n, codes[r, n]])
            others = np.delete(order[r, n], codes[r, n])
            np.testing.assert_array_equal(others, (r * N + n) * (K - 1) + np.arange(K - 1))
    candidates.store_sampled_losses(np.full(R, -1.0, np.float32), codes, K, losses)
    np.testing.assert_array_equal(np.take_along_axis(order, codes[..., None], axis=2)[..., 0], -1.0)
    assert not np.isnan(losses).any()


def test_empty_chunk_is_a_no_op():
    pre = np.ones((2, 3), np.float32)
    hidden = np.empty((0, 3), np.float32)
    linear = np.empty(0, np.float32)
    for op in (candidates.neighbour_hidden, candidates.neighbour_hidden_cuda):
        op(pre, np.ones((4, 3), np.float32), np.zeros((2, 2), np.int32), 2, pre, 4, 0, hidden,
           linear)


# ---------------------------------------------------------------------------------------------
# The Python fronts: checks, signatures, launch types

ARGS = ["pre", "weight", "codes", "K", "u", "start", "count", "hidden", "linear"]


def valid_args(R=3, N=2, K=4, H=5, start=7, count=9):
    return dict(pre=np.zeros((R, H), np.float32), weight=np.zeros((N * K, H), np.float32),
                codes=np.zeros((R, N), np.int32), K=K, u=np.zeros((R, H), np.float32),
                start=start, count=count, hidden=np.zeros((count, H), np.float32),
                linear=np.zeros(count, np.float32))


BAD_ARGS = [
    ("pre", np.zeros((3, 5), np.float64), "pre"),
    ("pre", np.zeros(15, np.float32), "pre"),
    ("weight", np.zeros((7, 5), np.float32), "weight"),
    ("weight", np.zeros((5, 8), np.float32).T, "weight"),  # not C-contiguous
    ("codes", np.zeros((3, 2), np.int64), "codes"),
    ("K", 1.5, "K"),
    ("u", np.zeros((3, 6), np.float32), "u"),
    ("start", -1, "start"),
    ("start", 10, "start"),  # 10 + 9 > R*N*(K-1) = 18
    ("count", 2.5, "count"),
    ("hidden", np.zeros((8, 5), np.float32), "hidden"),
    ("linear", np.zeros((9, 1), np.float32), "linear"),
]
BAD_CALLS = [(op, bad) for op in (candidates.neighbour_hidden, candidates.neighbour_hidden_cuda)
             for bad in BAD_ARGS]


@pytest.mark.parametrize("op, bad", BAD_CALLS,
                         ids=[f"{op.__name__}-{bad[0]}-{i}"
                              for i, (op, bad) in enumerate(BAD_CALLS)])
def test_bad_arguments_raise_before_any_work(op, bad):
    name, value, match = bad
    args = valid_args()
    args[name] = value
    with pytest.raises(ValueError, match=match):
        op(*[args[n] for n in ARGS])  # raises in the front, before any launch: no GPU needed


def test_cpu_twin_and_launcher_take_the_same_arguments():
    assert list(inspect.signature(candidates.neighbour_hidden).parameters) == ARGS
    assert list(inspect.signature(candidates.neighbour_hidden_cuda).parameters) == ARGS + ["stream"]


def test_launcher_passes_the_registered_types(monkeypatch):
    launches = []

    class RecordingKernel:
        def __getitem__(self, config):
            return lambda *args: launches.append((config, tuple(typeof(a) for a in args)))

    (kernel, sigs) = candidates.CUDA_KERNELS[0]
    monkeypatch.setattr(candidates, "neighbour_hidden_kernel", RecordingKernel())
    candidates.neighbour_hidden_cuda(*[valid_args()[n] for n in ARGS], stream=0)
    (config, types), = launches
    assert types in {tuple(s) for s in sigs}
    assert config == (9, candidates.NEIGHBOUR_THREADS, 0)  # one block per candidate


# ---------------------------------------------------------------------------------------------
# Real GPU (runs wherever CuPy sees one)


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_usable(), reason="needs CuPy and a CUDA GPU")
def test_cuda_matches_cpu_on_gpu():
    import cupy

    rng = np.random.default_rng(8)
    for B, M, D, H, N, K, (start, count) in [(100, 1, 784, 300, 20, 10, (0, 18000)),
                                             (7, 2, 20, 130, 3, 4, (5, 100)),
                                             (2, 1, 10, 1, 2, 2, (3, 1))]:
        params, x, codes = float32_problem(rng, B, M, D, H, N, K)
        pre, weight, u = kernel_inputs(params, x, codes, K)
        hidden = np.empty((count, H), np.float32)
        linear = np.empty(count, np.float32)
        candidates.neighbour_hidden(pre, weight, codes, K, u, start, count, hidden, linear)
        d_hidden = cupy.full((count, H), cupy.nan, dtype=cupy.float32)
        d_linear = cupy.full(count, cupy.nan, dtype=cupy.float32)
        candidates.neighbour_hidden_cuda(cupy.asarray(pre), cupy.asarray(weight),
                                         cupy.asarray(codes), K, cupy.asarray(u), start, count,
                                         d_hidden, d_linear)
        np.testing.assert_array_equal(cupy.asnumpy(d_hidden), hidden)  # one add, one relu: exact
        scale = np.abs(u).sum(axis=1).max() * np.abs(hidden).max()
        np.testing.assert_allclose(cupy.asnumpy(d_linear), linear, rtol=1e-5, atol=1e-6 * scale)
    for kernel, sigs in candidates.CUDA_KERNELS:
        assert set(kernel.overloads) <= {tuple(s) for s in sigs}, (kernel, list(kernel.overloads))
