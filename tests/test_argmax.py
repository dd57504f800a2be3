"""kernels/argmax.py on the CPU against the float64 reference (gumbel_max, direct_logit_grad),
and sample_codes' noise against rng.gumbel_noise bit for bit (the sequence it replaces).

Arg max outputs are compared exactly: the inputs are drawn (or, for sample_codes, checked) so
that no top-2 gap of a compared score is below GAP, far above float32 rounding (~1e-5 at scores
~100), except in the tie tests, where the scores are exact in float32 and float64 and the first
index must win.
The CUDA twins are checked under the simulator (tests/cudasim/test_argmax_cuda.py), compiled to
PTX (tests/test_ptx.py) and, where a GPU is present, on it (the gpu test below).
"""
import inspect

import numpy as np
import pytest

from dvae_cupy import reference as ref
from dvae_cupy.kernels import _cuda, argmax, rng as rngmod
from dvae_cupy.kernels._cuda import cupy_usable
from launches import as_if_no_gpu, covers, record_launches, registered

GAP = 1e-3


def as_reference(logits, gumbel, M, K, *per_draw):
    """(B, NK) logits and (R, NK) per-draw arrays -> float64 (B, N, K) and (B, M, N, K)."""
    B = logits.shape[0]
    shaped = [a.astype(np.float64).reshape(B, M, -1, K) for a in (gumbel,) + per_draw]
    return (logits.astype(np.float64).reshape(B, -1, K), *shaped)


def top_gaps(scores):
    """Top-1 minus top-2 score along the last axis (float64)."""
    top2 = np.sort(scores, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0]


def untied_sampling(rng, B, M, N, K, losses_mean=200.0, eps=0.5):
    """float32 logits, Gumbel noise and losses (around a realistic BCE of ~200) whose h + g and
    h + g -/+ eps L all have top-2 gaps >= GAP in float64: arg maxes are exact in float32 too."""
    logits = rng.normal(size=(B, N * K)).astype(np.float32)
    gumbel = rng.gumbel(size=(B * M, N * K)).astype(np.float32)
    losses = (losses_mean + 2.0 * rng.normal(size=(B * M, N * K))).astype(np.float32)
    for _ in range(100):  # redraw the noise of any (r, n) with a near tie
        h, g, L = as_reference(logits, gumbel, M, K, losses)
        scores = [h[:, None] + g, h[:, None] + g - eps * L, h[:, None] + g + eps * L]
        near = np.any([top_gaps(s) < GAP for s in scores], axis=0).reshape(B * M, N)
        if not near.any():
            return logits, gumbel, losses
        r, n = np.nonzero(near)
        for rr, nn in zip(r, n):
            gumbel[rr, nn * K:(nn + 1) * K] = rng.gumbel(size=K)
    raise AssertionError("could not draw untied inputs")


def counter(value):
    return np.array([value], np.uint64)


def eps_array(value):
    return np.array([value], np.float32)


def sampled(logits, seed, step, K, M, per_image):
    """(gumbel, codes) written by sample_codes (pre-filled with nan / -1: both are outputs)."""
    B, NK = logits.shape
    gumbel = np.full((B * M, NK), np.nan, np.float32)
    codes = np.full((B * M, NK // K), -1, np.int32)
    argmax.sample_codes(logits, seed, counter(step), K, M, per_image, gumbel, codes)
    return gumbel, codes


# ---------------------------------------------------------------------------------------------
# sample_codes

# (B, M, N, K): the model's shapes (B = 100, N = 1 and 20, K = 10), K = 2, M > 1, B = 1
SAMPLING_SHAPES = [(100, 1, 1, 10), (100, 1, 20, 10), (100, 3, 1, 10), (1, 1, 1, 2), (7, 1, 3, 10),
                   (5, 3, 20, 10), (4, 2, 1, 7), (2, 4, 11, 2)]


@pytest.mark.parametrize("B, M, N, K", SAMPLING_SHAPES, ids=str)
def test_training_noise_is_gumbel_noise_bit_for_bit(B, M, N, K):
    # per_image=False is the sequence it replaces: rng.gumbel_noise into (R, NK), then arg max
    logits = np.random.default_rng(B + N).normal(size=(B, N * K)).astype(np.float32)
    seed, step = 0xDEADBEEF_0BADF00D, 2**33 + 7
    gumbel, codes = sampled(logits, seed, step, K, M, False)
    expected = np.empty_like(gumbel)
    rngmod.gumbel_noise(seed, counter(step), expected)
    np.testing.assert_array_equal(gumbel.view(np.uint32), expected.view(np.uint32))
    scores = (np.repeat(logits, M, axis=0) + expected).reshape(B * M, N, K)  # float32, as the op
    np.testing.assert_array_equal(codes, scores.argmax(axis=-1))  # first maximum, as np.argmax


@pytest.mark.parametrize("B, M, N, K", SAMPLING_SHAPES, ids=str)
def test_per_image_noise_follows_the_image_not_the_batch(B, M, N, K):
    # image b of the batch draws stream counter + b at indices m*NK + c: the same noise whatever
    # the batch it is in, so a batch split in two (the second half counted from start) agrees
    logits = np.random.default_rng(B * N).normal(size=(B, N * K)).astype(np.float32)
    seed, step = 5, 2**40 + 11
    gumbel, codes = sampled(logits, seed, step, K, M, True)
    for b in range(B):
        image = np.empty((M, N * K), np.float32)
        rngmod.gumbel_noise(seed, counter(step + b), image)
        np.testing.assert_array_equal(gumbel[b * M:(b + 1) * M], image)
    if B < 2:
        return
    half = (B + 1) // 2
    first = sampled(logits[:half], seed, step, K, M, True)
    second = sampled(logits[half:], seed, step + half, K, M, True)
    np.testing.assert_array_equal(np.concatenate([first[0], second[0]]), gumbel)
    np.testing.assert_array_equal(np.concatenate([first[1], second[1]]), codes)


def test_per_image_counter_wraps_as_uint64():
    logits = np.zeros((3, 4), np.float32)
    gumbel, _ = sampled(logits, 1, 2**64 - 2, 2, 1, True)  # images use 2**64 - 2, 2**64 - 1, 0
    image = np.empty(4, np.float32)
    rngmod.gumbel_noise(1, counter(0), image)
    np.testing.assert_array_equal(gumbel[2], image)


@pytest.mark.parametrize("per_image", [False, True], ids=["training", "per-image"])
@pytest.mark.parametrize("B, M, N, K", SAMPLING_SHAPES, ids=str)
def test_sample_codes_equal_reference(B, M, N, K, per_image):
    logits = np.random.default_rng(B * 1000 + M * 100 + N * 10 + K).normal(
        size=(B, N * K)).astype(np.float32)
    gumbel, codes = sampled(logits, 11, 3, K, M, per_image)
    h, g = as_reference(logits, gumbel, M, K)
    assert np.isfinite(g).all()
    assert top_gaps(h[:, None] + g).min() >= 1e-5  # no float32 near-tie: the arg max is exact
    np.testing.assert_array_equal(codes.reshape(B, M, N), ref.gumbel_max(h, g))


def test_sample_codes_ties_go_to_the_first_index():
    # 2**30 + g rounds to 2**30 for every Gumbel value g (|g| < 17 < half an ulp, 64), so the
    # entries with logit 2**30 tie exactly and the first of them must win
    K, M = 5, 2
    big = np.float32(2.0 ** 30)
    logits = np.array([[0, big, 0, big, big,   big, big, big, big, big]], np.float32)  # N = 2
    for per_image in (False, True):
        _, codes = sampled(logits, 7, 1, K, M, per_image)
        np.testing.assert_array_equal(codes, [[1, 0], [1, 0]])


# ---------------------------------------------------------------------------------------------
# direct_logit_grad


@pytest.mark.parametrize("two_sided", [False, True], ids=["one-sided", "two-sided"])
@pytest.mark.parametrize("M", [1, 3])
@pytest.mark.parametrize("N", [1, 6])
@pytest.mark.parametrize("K", [2, 5])
def test_direct_logit_grad_equals_reference(two_sided, M, N, K):
    B, eps, grad_scale = 40, 0.5, 0.01
    rng = np.random.default_rng([M, N, K, two_sided])
    logits, gumbel, losses = untied_sampling(rng, B, M, N, K, eps=eps)
    codes = ref.gumbel_max(*as_reference(logits, gumbel, M, K)).reshape(B * M, N).astype(np.int32)
    grad0 = (0.01 * rng.normal(size=(B, N * K))).astype(np.float32)  # the op ADDS into grad
    grad = grad0.copy()
    argmax.direct_logit_grad(logits, gumbel, losses, codes, K, M, eps_array(eps), grad_scale,
                             two_sided, grad)

    h, g, L = as_reference(logits, gumbel, M, K, losses)
    estimate = ref.direct_logit_grad(h, g, codes.reshape(B, M, N), L, eps, two_sided)
    z_plus = ref.perturbed_argmax(h, g, L, eps)
    moved = z_plus != (ref.perturbed_argmax(h, g, L, -eps) if two_sided else codes.reshape(B, M, N))
    assert moved.any() and np.count_nonzero(estimate) > 0  # eps L moved some arg maxes
    assert not moved.all()  # ... and left some in place
    # float32: the step grad_scale / (eps M) rounds once; at most M adds per entry
    np.testing.assert_allclose(grad, grad0 + grad_scale * estimate.reshape(B, N * K),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("two_sided", [False, True], ids=["one-sided", "two-sided"])
def test_direct_step_from_the_eps_array_is_the_host_formula(two_sided):
    # with grad = 0 and M = 1 every touched entry is exactly +-step: the step made in the @njit
    # loop from eps[0] equals float32(grad_scale / (mult * float64(float32(eps)) * M)), the
    # number the host computed before eps became an array (eps not exact in float32 included)
    B, M, N, K = 30, 1, 6, 5
    rng = np.random.default_rng([two_sided, 7])
    logits, gumbel, losses = untied_sampling(rng, B, M, N, K, eps=0.3)
    codes = ref.gumbel_max(*as_reference(logits, gumbel, M, K)).reshape(B * M, N).astype(np.int32)
    for eps in [0.3, 1 / 3, 0.1, 0.5, 0.987654321, 0.1 * np.exp(-0.05)]:
        for grad_scale in [1.0, 1 / 100, 1 / 128, 0.37]:
            grad = np.zeros((B, N * K), np.float32)
            e = eps_array(eps)
            argmax.direct_logit_grad(logits, gumbel, losses, codes, K, M, e, grad_scale,
                                     two_sided, grad)
            step = np.float32(grad_scale / ((2.0 if two_sided else 1.0)
                                            * float(np.float32(eps)) * M))
            touched = grad[grad != 0]
            assert touched.size > 0
            np.testing.assert_array_equal(np.abs(touched), step)
            assert e[0] == np.float32(eps)  # read, not written


def test_direct_step_is_made_from_the_float32_eps():
    for eps in [0.3, 1 / 3, 0.1, 0.5, 2.0 ** -10, 0.777]:
        for M in [1, 3]:
            for two_sided in [False, True]:
                got = argmax.direct_step(0.01, np.float32(eps), np.int32(M), two_sided)
                expected = np.float32(0.01 / ((2.0 if two_sided else 1.0)
                                              * float(np.float32(eps)) * M))
                assert got == expected, (eps, M, two_sided)


def test_direct_logit_grad_ties_go_to_the_first_index():
    # K = 4, eps = 1, integers: h + g - L ties at k = 1, 3 (z_dir = 1); h + g + L ties at 0, 2
    K, M = 4, 1
    logits = np.zeros((1, K), dtype=np.float32)
    gumbel = np.array([[3, 3, 3, 3]], dtype=np.float32)
    losses = np.array([[1, 0, 1, 0]], dtype=np.float32)
    codes = np.array([[3]], dtype=np.int32)
    h, g, L = as_reference(logits, gumbel, M, K, losses)
    for two_sided, expected in [(False, [0, -1, 0, 1]), (True, [0.5, -0.5, 0, 0])]:
        grad = np.zeros((1, K), dtype=np.float32)
        argmax.direct_logit_grad(logits, gumbel, losses, codes, K, M, eps_array(1.0), 1.0,
                                 two_sided, grad)
        np.testing.assert_array_equal(grad[0], expected)
        reference = ref.direct_logit_grad(h, g, codes.reshape(1, 1, 1), L, 1.0, two_sided)
        np.testing.assert_array_equal(grad[0], reference.ravel())


def test_direct_logit_grad_unmoved_draws_leave_grad_untouched():
    # z_dir == z_opt everywhere (eps L constant across k): grad stays bit-identical
    rng = np.random.default_rng(3)
    B, M, N, K = 6, 2, 4, 3
    logits, gumbel, _ = untied_sampling(rng, B, M, N, K)
    losses = np.full((B * M, N * K), 123.0, dtype=np.float32)
    codes = ref.gumbel_max(*as_reference(logits, gumbel, M, K)).reshape(B * M, N).astype(np.int32)
    grad0 = rng.normal(size=(B, N * K)).astype(np.float32)
    grad = grad0.copy()
    argmax.direct_logit_grad(logits, gumbel, losses, codes, K, M, eps_array(0.3), 1.0, False, grad)
    np.testing.assert_array_equal(grad, grad0)


@pytest.mark.parametrize("bad", [0.0, -0.5, np.inf, np.nan])
def test_cpu_twin_checks_the_eps_value_in_its_loop(bad):
    args = valid_args()
    args["eps"] = eps_array(bad)
    with pytest.raises(ValueError, match=r"eps\[0\] must be a finite number > 0"):
        argmax.direct_logit_grad(*[args[n] for n in DIRECT_ARGS])
    assert not args["grad"].any()


# ---------------------------------------------------------------------------------------------
# The Python fronts: checks, signatures, launch types


def valid_args(B=2, M=3, N=4, K=5):
    return dict(logits=np.zeros((B, N * K), np.float32), seed=1, counter=counter(0),
                gumbel=np.zeros((B * M, N * K), np.float32),
                losses=np.zeros((B * M, N * K), np.float32), codes=np.zeros((B * M, N), np.int32),
                K=K, M=M, per_image=False, eps=eps_array(0.5), grad_scale=1.0, two_sided=False,
                grad=np.zeros((B, N * K), np.float32))


SAMPLING_ARGS = ["logits", "seed", "counter", "K", "M", "per_image", "gumbel", "codes"]
DIRECT_ARGS = ["logits", "gumbel", "losses", "codes", "K", "M", "eps", "grad_scale", "two_sided",
               "grad"]

BAD_ARGS = [
    ("logits", np.zeros((2, 20), np.float64), "logits"),
    ("logits", np.zeros((2, 21), np.float32), "logits"),  # not a multiple of K
    ("logits", np.zeros((0, 20), np.float32), "logits"),  # B = 0
    ("gumbel", np.zeros((2, 20), np.float32), "gumbel"),  # R != B*M
    ("gumbel", np.zeros((20, 6), np.float32).T, "gumbel"),  # not C-contiguous
    ("codes", np.zeros((6, 4), np.int64), "codes"),
    ("codes", np.zeros((6, 5), np.int32), "codes"),
    ("K", 0, "K"),
    ("M", 2.5, "M"),
    ("seed", -1, "seed"),
    ("seed", 2 ** 64, "seed"),
    ("counter", 3, "counter must be a 1-element 1-D uint64 array"),
    ("counter", np.zeros(1, np.int64), "counter must be a 1-element 1-D uint64 array"),
    ("counter", np.zeros(2, np.uint64), "counter must be a 1-element 1-D uint64 array"),
    ("losses", np.zeros((6, 19), np.float32), "losses"),
    ("grad", np.zeros((3, 20), np.float32), "grad"),
    ("grad_scale", float("inf"), "grad_scale"),
    ("eps", 0.5, "eps must be a 1-element 1-D float32 array"),
    ("eps", np.float32(0.5), "eps must be a 1-element 1-D float32 array"),
    ("eps", np.full(1, 0.5, np.float64), "eps must be a 1-element 1-D float32 array"),
    ("eps", np.full(2, 0.5, np.float32), "eps must be a 1-element 1-D float32 array"),
    ("eps", np.full((), 0.5, np.float32), "eps must be a 1-element 1-D float32 array"),
]


BAD_CALLS = [(op, names, bad) for op, names in [
    (argmax.sample_codes, SAMPLING_ARGS), (argmax.sample_codes_cuda, SAMPLING_ARGS),
    (argmax.direct_logit_grad, DIRECT_ARGS), (argmax.direct_logit_grad_cuda, DIRECT_ARGS)]
    for bad in BAD_ARGS if bad[0] in names]


@pytest.mark.parametrize("op, names, bad", BAD_CALLS,
                         ids=[f"{op.__name__}-{bad[0]}-{i}"
                              for i, (op, _, bad) in enumerate(BAD_CALLS)])
def test_bad_arguments_raise_before_any_work(op, names, bad):
    name, value, match = bad
    args = valid_args()
    args[name] = value
    with pytest.raises(ValueError, match=match):
        op(*[args[n] for n in names])  # raises in the front, before any launch: no GPU needed


@pytest.mark.parametrize("op, names", [(argmax.sample_codes, SAMPLING_ARGS),
                                       (argmax.direct_logit_grad, DIRECT_ARGS)])
def test_cpu_twin_and_launcher_take_the_same_arguments(op, names):
    launcher = getattr(argmax, op.__name__ + "_cuda")
    assert list(inspect.signature(op).parameters) == names
    assert list(inspect.signature(launcher).parameters) == names + ["stream"]


def test_launchers_refuse_host_scalar_arrays_on_a_gpu(monkeypatch):
    monkeypatch.setattr(_cuda, "cupy_usable", lambda: True)
    args = valid_args()
    with pytest.raises(ValueError, match="eps must be a device array"):
        argmax.direct_logit_grad_cuda(*[args[n] for n in DIRECT_ARGS])
    with pytest.raises(ValueError, match="counter must be a device array"):
        argmax.sample_codes_cuda(*[args[n] for n in SAMPLING_ARGS])


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("two_sided", [False, True])
def test_launchers_pass_the_registered_types(monkeypatch, two_sided, per_image):
    as_if_no_gpu(monkeypatch)
    args = valid_args(B=100, M=1, N=20, K=10)
    args["two_sided"], args["per_image"] = two_sided, per_image
    for name, names in [("sample_codes", SAMPLING_ARGS), ("direct_logit_grad", DIRECT_ARGS)]:
        launches = record_launches(monkeypatch, argmax, name + "_kernel")
        getattr(argmax, name + "_cuda")(*[args[n] for n in names], stream=0)
        (config, types), = launches
        assert types in registered(argmax)[name + "_kernel"], (name, types)
        assert covers(config, 100 * 20)


# ---------------------------------------------------------------------------------------------
# Real GPU (runs wherever CuPy sees one)


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_usable(), reason="needs CuPy and a CUDA GPU")
def test_cuda_matches_cpu_on_gpu():
    import cupy

    rng = np.random.default_rng(5)
    for B, M, N, K in [(1, 1, 1, 2), (100, 1, 20, 10), (100, 3, 1, 10), (33, 2, 7, 3)]:
        logits = rng.normal(size=(B, N * K)).astype(np.float32)
        for per_image in (False, True):
            gumbel, codes = sampled(logits, 9, 2**33 + 1, K, M, per_image)
            d_gumbel = cupy.full(gumbel.shape, cupy.nan, dtype=cupy.float32)
            d_codes = cupy.full(codes.shape, -1, dtype=cupy.int32)
            argmax.sample_codes_cuda(cupy.asarray(logits), 9, cupy.array([2**33 + 1], cupy.uint64),
                                     K, M, per_image, d_gumbel, d_codes)
            # libdevice's log may differ by an ulp: rare arg max ties may then differ too
            np.testing.assert_allclose(cupy.asnumpy(d_gumbel), gumbel, rtol=2e-6, atol=2e-6)
            assert np.mean(cupy.asnumpy(d_codes) == codes) > 0.999
        _, gumbel, losses = untied_sampling(rng, B, M, N, K)
        codes = ref.gumbel_max(*as_reference(logits, gumbel, M, K)).reshape(B * M, N)
        codes = codes.astype(np.int32)
        for two_sided in (False, True):
            for eps in (0.5, 0.3, 1 / 3):
                grad = np.ones((B, N * K), np.float32)
                argmax.direct_logit_grad(logits, gumbel, losses, codes, K, M, eps_array(eps), 0.01,
                                         two_sided, grad)
                d_grad = cupy.ones((B, N * K), dtype=cupy.float32)
                argmax.direct_logit_grad_cuda(cupy.asarray(logits), cupy.asarray(gumbel),
                                              cupy.asarray(losses), cupy.asarray(codes), K, M,
                                              cupy.array([eps], cupy.float32), 0.01, two_sided,
                                              d_grad)
                np.testing.assert_allclose(cupy.asnumpy(d_grad), grad, rtol=1e-6, atol=1e-8)
    for kernel, sigs in argmax.CUDA_KERNELS:
        assert set(kernel.overloads) <= {tuple(s) for s in sigs}, (kernel, list(kernel.overloads))
