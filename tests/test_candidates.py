"""kernels/candidates.py on the CPU: neighbour_hidden and store_candidate_losses, finished into full
candidate losses the way the model does it, and code_losses (N = 1), against the float64
reference's densely decoded codes (candidate_losses); the fused softplus sums bit for bit against
bce.softplus_row_sums followed by the float32 subtractions they replace, written out in NumPy.

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

from dvae_cupy import reference as ref
from dvae_cupy.kernels import bce, candidates
from dvae_cupy.kernels._cuda import cupy_usable
from launches import as_if_no_gpu, covers, record_launches, registered

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
    [bounds[i], bounds[i+1]) of the R*N*(K-1) candidates, their decoder outputs (here the float64
    product rounded once to float32), store_candidate_losses, and store_sampled_losses with the
    reference's loss at the sampled code."""
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
        cand_out = (hidden.astype(np.float64) @ params["dec_w2"]).astype(np.float32)
        candidates.store_candidate_losses(cand_out, params["dec_b2"].astype(np.float32), linear,
                                          linear_b2, codes, K, start, losses)
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
    # logits of -100: every softplus is exactly 0 (kernels/fastmath_f32.py flushes exp(-100)),
    # so candidate c's loss is 0 - linear[c] - 0 = c exactly
    candidates.store_candidate_losses(np.full((total, 3), -100.0, np.float32),
                                      np.zeros(3, np.float32), -np.arange(total, dtype=np.float32),
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
    losses = np.full((2, 4), np.nan, np.float32)
    for op in (candidates.neighbour_hidden, candidates.neighbour_hidden_cuda):
        op(pre, np.ones((4, 3), np.float32), np.zeros((2, 2), np.int32), 2, pre, 4, 0, hidden,
           linear)
    for op in (candidates.store_candidate_losses, candidates.store_candidate_losses_cuda):
        op(np.empty((0, 5), np.float32), np.zeros(5, np.float32), linear, np.zeros(2, np.float32),
           np.zeros((2, 2), np.int32), 2, 4, losses)
    assert np.isnan(losses).all()


# ---------------------------------------------------------------------------------------------
# The fused softplus sums: bit for bit the sequences they replace


def slot_columns(codes, K, start, count):
    """(rows, columns) of losses for candidates start .. start + count - 1 (the documented
    layout, written in NumPy)."""
    R, N = codes.shape
    g = start + np.arange(count)
    r, n, j = g // (N * (K - 1)), (g // (K - 1)) % N, g % (K - 1)
    sampled = codes[r, n]
    return r, n * K + j + (j >= sampled)


# (R, N, K, D, start, count): the model's N = 20, K = 10, R = 100, D = 784 in chunks of 4096
# (the first and the last, partial chunk), awkward small ones, D = 1
STORE_CASES = [(100, 20, 10, 784, 0, 4096), (100, 20, 10, 784, 16384, 1616), (3, 4, 5, 13, 7, 41),
               (2, 3, 2, 1, 0, 6), (1, 2, 3, 130, 3, 1)]


@pytest.mark.parametrize("R, N, K, D, start, count", STORE_CASES, ids=str)
def test_store_candidate_losses_is_the_former_sequence_bit_for_bit(R, N, K, D, start, count):
    # the sequence it replaces: softplus_row_sums(cand_out, bias, S), then
    # losses[r, n*K + k] = S[c] - linear[c] - linear_b2[r] in float32
    rng = np.random.default_rng(R + N + K + D)
    codes = rng.integers(0, K, size=(R, N)).astype(np.int32)
    cand_out = (rng.standard_normal((count, D)) * 4).astype(np.float32)
    bias = rng.standard_normal(D).astype(np.float32)
    linear = (rng.standard_normal(count) * 50).astype(np.float32)
    linear_b2 = (rng.standard_normal(R) * 10).astype(np.float32)
    sums = np.empty(count, np.float32)
    bce.softplus_row_sums(cand_out, bias, sums)
    expected = np.full((R, N * K), np.nan, np.float32)
    rows, columns = slot_columns(codes, K, start, count)
    expected[rows, columns] = sums - linear - linear_b2[rows]
    got = np.full((R, N * K), np.nan, np.float32)
    candidates.store_candidate_losses(cand_out, bias, linear, linear_b2, codes, K, start, got)
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def code_losses_inputs(rng, B, K, D):
    code_out = (rng.standard_normal((K, D)) * 4).astype(np.float32)
    bias = rng.standard_normal(D).astype(np.float32)
    x = (rng.random((B, D)) < 0.4).astype(np.float32)
    return code_out, bias, x, x @ code_out.T, x @ bias


# (B, M, K, D): the model's B = 100, K = 10 (and 50), D = 784 with M = 1 and 3; awkward small ones
CODE_CASES = [(100, 1, 10, 784), (100, 3, 10, 784), (100, 1, 50, 784), (7, 2, 2, 13), (1, 1, 1, 1),
              (3, 4, 5, 130)]


@pytest.mark.parametrize("B, M, K, D", CODE_CASES, ids=str)
def test_code_losses_is_the_former_model_code_bit_for_bit(B, M, K, D):
    # the sequence it replaces (model.all_code_losses, then candidate_losses' copy into the M
    # draws): losses = xo; losses += xb2[:, None]; losses = S - losses; repeated M times
    rng = np.random.default_rng(B * K + D)
    code_out, bias, _, xo, xb2 = code_losses_inputs(rng, B, K, D)
    sums = np.empty(K, np.float32)
    bce.softplus_row_sums(code_out, bias, sums)
    per_image = xo.copy()
    per_image += xb2[:, None]
    np.subtract(sums, per_image, out=per_image)
    expected = np.empty((B * M, K), np.float32)
    expected.reshape(B, M, K)[...] = per_image[:, None, :]
    got = np.full((B * M, K), np.nan, np.float32)
    candidates.code_losses(code_out, bias, xo, xb2, M, got)
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("B, M, D, H, K", [(3, 2, 50, 37, 5), (4, 1, 784, 300, 10), (2, 3, 9, 1, 2)],
                         ids=str)
def test_code_losses_equal_reference(B, M, D, H, K):
    # N = 1: the loss of every code k for every draw of image b, against the reference's densely
    # decoded candidates (all K values of the one variable)
    rng = np.random.default_rng(D + H + K)
    params, x, codes = float32_problem(rng, B, M, D, H, 1, K)
    f32 = {name: value.astype(np.float32) for name, value in params.items()}
    code_hidden = np.maximum(params["dec_w1"] + params["dec_b1"], 0.0)  # relu(W1[k] + b1)
    code_out = (code_hidden @ params["dec_w2"]).astype(np.float32)
    images = x[::M]  # x holds each of the B images M times
    xo = (images @ code_out.astype(np.float64).T).astype(np.float32)
    xb2 = (images @ params["dec_b2"]).astype(np.float32)
    got = np.full((B * M, K), np.nan, np.float32)
    candidates.code_losses(code_out, f32["dec_b2"], xo, xb2, M, got)
    expected = ref.candidate_losses(params, x, codes, K)[:, 0, :]  # (R, K)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=0, atol=LOSS_RTOL * scale)
    assert np.ptp(expected) > 1e-3 * scale


# ---------------------------------------------------------------------------------------------
# The Python fronts: checks, signatures, launch types

ARGS = ["pre", "weight", "codes", "K", "u", "start", "count", "hidden", "linear"]
STORE_ARGS = ["cand_out", "bias", "linear", "linear_b2", "codes", "K", "start", "losses"]
CODE_ARGS = ["code_out", "bias", "xo", "xb2", "M", "losses"]


def valid_args(R=3, N=2, K=4, H=5, start=7, count=9, D=6, B=2, M=3):
    return dict(pre=np.zeros((R, H), np.float32), weight=np.zeros((N * K, H), np.float32),
                codes=np.zeros((R, N), np.int32), K=K, u=np.zeros((R, H), np.float32),
                start=start, count=count, hidden=np.zeros((count, H), np.float32),
                linear=np.zeros(count, np.float32), cand_out=np.zeros((count, D), np.float32),
                bias=np.zeros(D, np.float32), linear_b2=np.zeros(R, np.float32),
                losses=np.zeros((R, N * K), np.float32))


def valid_code_args(B=2, M=3, K=4, D=6):
    return dict(code_out=np.zeros((K, D), np.float32), bias=np.zeros(D, np.float32),
                xo=np.zeros((B, K), np.float32), xb2=np.zeros(B, np.float32), M=M,
                losses=np.zeros((B * M, K), np.float32))


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
STORE_BAD_ARGS = [
    ("cand_out", np.zeros((9, 6), np.float64), "cand_out"),
    ("cand_out", np.zeros(9, np.float32), "cand_out must be 2-D"),
    ("cand_out", np.zeros((12, 6), np.float32), "start"),  # 7 + 12 > 18 candidates
    ("bias", np.zeros(5, np.float32), "bias"),
    ("linear", np.zeros(8, np.float32), "linear"),
    ("linear_b2", np.zeros(2, np.float32), "linear_b2"),
    ("codes", np.zeros((3, 2), np.int64), "codes"),
    ("K", 1, "K"),
    ("start", -1, "start"),
    ("losses", np.zeros((3, 7), np.float32), "losses"),
]
CODE_BAD_ARGS = [
    ("code_out", np.zeros((4, 6), np.float64), "code_out"),
    ("code_out", np.zeros(6, np.float32), "code_out must be 2-D"),
    ("bias", np.zeros(7, np.float32), "bias"),
    ("xo", np.zeros((2, 5), np.float32), "xo"),
    ("xo", np.zeros(8, np.float32), "xo must be 2-D"),
    ("xb2", np.zeros(3, np.float32), "xb2"),
    ("M", 0, "M must be an integer >= 1"),
    ("M", 1.5, "M must be an integer >= 1"),
    ("losses", np.zeros((2, 4), np.float32), "losses"),  # R != B*M
    ("losses", np.zeros((4, 6), np.float32).T, "losses"),  # not C-contiguous
]
BAD_CALLS = ([(op, ARGS, bad, valid_args)
              for op in (candidates.neighbour_hidden, candidates.neighbour_hidden_cuda)
              for bad in BAD_ARGS]
             + [(op, STORE_ARGS, bad, valid_args)
                for op in (candidates.store_candidate_losses, candidates.store_candidate_losses_cuda)
                for bad in STORE_BAD_ARGS]
             + [(op, CODE_ARGS, bad, valid_code_args)
                for op in (candidates.code_losses, candidates.code_losses_cuda)
                for bad in CODE_BAD_ARGS])


@pytest.mark.parametrize("op, names, bad, make", BAD_CALLS,
                         ids=[f"{op.__name__}-{bad[0]}-{i}"
                              for i, (op, _, bad, _) in enumerate(BAD_CALLS)])
def test_bad_arguments_raise_before_any_work(op, names, bad, make):
    name, value, match = bad
    args = make()
    args[name] = value
    with pytest.raises(ValueError, match=match):
        op(*[args[n] for n in names])  # raises in the front, before any launch: no GPU needed


@pytest.mark.parametrize("op, names", [("neighbour_hidden", ARGS),
                                       ("store_candidate_losses", STORE_ARGS),
                                       ("store_sampled_losses", ["sampled", "codes", "K", "losses"]),
                                       ("code_losses", CODE_ARGS)])
def test_cpu_twin_and_launcher_take_the_same_arguments(op, names):
    assert list(inspect.signature(getattr(candidates, op)).parameters) == names
    assert list(inspect.signature(getattr(candidates, op + "_cuda")).parameters) == names + ["stream"]


def test_launchers_pass_the_registered_types(monkeypatch):
    as_if_no_gpu(monkeypatch)
    args, code_args = valid_args(), valid_code_args()
    sampled = np.zeros(3, np.float32)
    for name, launch, expected_config in [
            ("neighbour_hidden", lambda: candidates.neighbour_hidden_cuda(
                *[args[n] for n in ARGS], stream=0), (9, candidates.NEIGHBOUR_THREADS, 0)),
            ("store_candidate_losses", lambda: candidates.store_candidate_losses_cuda(
                *[args[n] for n in STORE_ARGS], stream=0), (9, bce.THREADS, 0)),
            ("code_losses", lambda: candidates.code_losses_cuda(
                *[code_args[n] for n in CODE_ARGS], stream=0), (4, bce.THREADS, 0)),
            ("store_sampled_losses", lambda: candidates.store_sampled_losses_cuda(
                sampled, args["codes"], args["K"], args["losses"], stream=0), None)]:
        launches = record_launches(monkeypatch, candidates, name + "_kernel")
        launch()
        (config, types), = launches
        assert types in registered(candidates)[name + "_kernel"], name
        if expected_config is None:  # one thread per (r, n)
            assert covers(config, args["codes"].size)
        else:  # one block per candidate / code
            assert config == expected_config, name


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
        cand_out = (hidden.astype(np.float64) @ params["dec_w2"]).astype(np.float32)
        bias = params["dec_b2"].astype(np.float32)
        linear_b2 = (x @ params["dec_b2"]).astype(np.float32)
        losses = np.full((B * M, N * K), np.nan, np.float32)
        candidates.store_candidate_losses(cand_out, bias, linear, linear_b2, codes, K, start,
                                          losses)
        d_losses = cupy.full(losses.shape, cupy.nan, dtype=cupy.float32)
        candidates.store_candidate_losses_cuda(cupy.asarray(cand_out), cupy.asarray(bias),
                                               d_linear, cupy.asarray(linear_b2),
                                               cupy.asarray(codes), K, start, d_losses)
        np.testing.assert_allclose(cupy.asnumpy(d_losses), losses, rtol=1e-5, atol=1e-3)
    for B, M, K, D in CODE_CASES:
        code_out, bias, _, xo, xb2 = code_losses_inputs(rng, B, K, D)
        losses = np.empty((B * M, K), np.float32)
        candidates.code_losses(code_out, bias, xo, xb2, M, losses)
        d_losses = cupy.full(losses.shape, cupy.nan, dtype=cupy.float32)
        candidates.code_losses_cuda(cupy.asarray(code_out), cupy.asarray(bias), cupy.asarray(xo),
                                    cupy.asarray(xb2), M, d_losses)
        np.testing.assert_allclose(cupy.asnumpy(d_losses), losses, rtol=1e-5, atol=1e-3)
    for kernel, sigs in candidates.CUDA_KERNELS:
        assert set(kernel.overloads) <= {tuple(s) for s in sigs}, (kernel, list(kernel.overloads))
