"""kernels/argmax.py on the CPU against the float64 reference (gumbel_max, direct_logit_grad).

Arg max outputs are compared exactly: the inputs are drawn so that no top-2 gap of a compared
score is below GAP, far above float32 rounding (~1e-5 at scores ~100), except in the tie tests,
where the scores are small integers (exact in float32 and float64) and the first index must win.
The CUDA twins are checked under the simulator (tests/cudasim/test_argmax_cuda.py), compiled to
PTX (tests/test_ptx.py) and, where a GPU is present, on it (the gpu test below).
"""
import inspect

import numpy as np
import pytest
from numba import typeof

from dvae_cupy import reference as ref
from dvae_cupy.kernels import argmax
from dvae_cupy.kernels._cuda import cupy_usable

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


# ---------------------------------------------------------------------------------------------
# gumbel_argmax


@pytest.mark.parametrize("B, M, N, K", [(1, 1, 1, 2), (7, 1, 3, 10), (5, 3, 20, 10), (4, 2, 1, 7),
                                        (2, 4, 11, 2)])
def test_gumbel_argmax_equals_reference(B, M, N, K):
    rng = np.random.default_rng(B * 1000 + M * 100 + N * 10 + K)
    logits, gumbel, _ = untied_sampling(rng, B, M, N, K)
    codes = np.full((B * M, N), -1, dtype=np.int32)
    argmax.gumbel_argmax(logits, gumbel, K, M, codes)
    h, g = as_reference(logits, gumbel, M, K)
    assert top_gaps(h[:, None] + g).min() >= GAP
    np.testing.assert_array_equal(codes.reshape(B, M, N), ref.gumbel_max(h, g))


def test_gumbel_argmax_ties_go_to_the_first_index():
    K, M = 5, 2
    logits = np.array([[0, 1, 0, 1, 0,   3, 3, 3, 3, 3]], dtype=np.float32)  # B = 1, N = 2
    gumbel = np.array([[2, 1, 2, 0, 2,   0, 0, 0, 0, 0],     # scores 2 2 2 1 2 | 3 3 3 3 3
                       [0, 0, 0, 0, 1,   0, 0, 1, 0, 1]], dtype=np.float32)  # 0 1 0 1 1 | 3 3 4 3 4
    codes = np.empty((2, 2), dtype=np.int32)
    argmax.gumbel_argmax(logits, gumbel, K, M, codes)
    np.testing.assert_array_equal(codes, [[0, 0], [1, 2]])
    h, g = as_reference(logits, gumbel, M, K)
    np.testing.assert_array_equal(codes.reshape(1, M, 2), ref.gumbel_max(h, g))


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
    codes = np.empty((B * M, N), dtype=np.int32)
    argmax.gumbel_argmax(logits, gumbel, K, M, codes)
    grad0 = (0.01 * rng.normal(size=(B, N * K))).astype(np.float32)  # the op ADDS into grad
    grad = grad0.copy()
    argmax.direct_logit_grad(logits, gumbel, losses, codes, K, M, eps, grad_scale, two_sided, grad)

    h, g, L = as_reference(logits, gumbel, M, K, losses)
    estimate = ref.direct_logit_grad(h, g, codes.reshape(B, M, N), L, eps, two_sided)
    z_plus = ref.perturbed_argmax(h, g, L, eps)
    moved = z_plus != (ref.perturbed_argmax(h, g, L, -eps) if two_sided else codes.reshape(B, M, N))
    assert moved.any() and np.count_nonzero(estimate) > 0  # eps L moved some arg maxes
    assert not moved.all()  # ... and left some in place
    # float32: the step grad_scale / (eps M) rounds once; at most M adds per entry
    np.testing.assert_allclose(grad, grad0 + grad_scale * estimate.reshape(B, N * K),
                               rtol=1e-6, atol=1e-8)


def test_direct_logit_grad_ties_go_to_the_first_index():
    # K = 4, eps = 1, integers: h + g - L ties at k = 1, 3 (z_dir = 1); h + g + L ties at 0, 2
    K, M, eps = 4, 1, 1.0
    logits = np.zeros((1, K), dtype=np.float32)
    gumbel = np.array([[3, 3, 3, 3]], dtype=np.float32)
    losses = np.array([[1, 0, 1, 0]], dtype=np.float32)
    codes = np.array([[3]], dtype=np.int32)
    h, g, L = as_reference(logits, gumbel, M, K, losses)
    for two_sided, expected in [(False, [0, -1, 0, 1]), (True, [0.5, -0.5, 0, 0])]:
        grad = np.zeros((1, K), dtype=np.float32)
        argmax.direct_logit_grad(logits, gumbel, losses, codes, K, M, eps, 1.0, two_sided, grad)
        np.testing.assert_array_equal(grad[0], expected)
        reference = ref.direct_logit_grad(h, g, codes.reshape(1, 1, 1), L, eps, two_sided)
        np.testing.assert_array_equal(grad[0], reference.ravel())


def test_direct_logit_grad_unmoved_draws_leave_grad_untouched():
    # z_dir == z_opt everywhere (eps L constant across k): grad stays bit-identical
    rng = np.random.default_rng(3)
    B, M, N, K = 6, 2, 4, 3
    logits, gumbel, _ = untied_sampling(rng, B, M, N, K)
    losses = np.full((B * M, N * K), 123.0, dtype=np.float32)
    codes = np.empty((B * M, N), dtype=np.int32)
    argmax.gumbel_argmax(logits, gumbel, K, M, codes)
    grad0 = rng.normal(size=(B, N * K)).astype(np.float32)
    grad = grad0.copy()
    argmax.direct_logit_grad(logits, gumbel, losses, codes, K, M, 0.3, 1.0, False, grad)
    np.testing.assert_array_equal(grad, grad0)


# ---------------------------------------------------------------------------------------------
# The Python fronts: checks, signatures, launch types


def valid_args(B=2, M=3, N=4, K=5):
    return dict(logits=np.zeros((B, N * K), np.float32),
                gumbel=np.zeros((B * M, N * K), np.float32),
                losses=np.zeros((B * M, N * K), np.float32), codes=np.zeros((B * M, N), np.int32),
                K=K, M=M, eps=0.5, grad_scale=1.0, two_sided=False,
                grad=np.zeros((B, N * K), np.float32))


SAMPLING_ARGS = ["logits", "gumbel", "K", "M", "codes"]
DIRECT_ARGS = ["logits", "gumbel", "losses", "codes", "K", "M", "eps", "grad_scale", "two_sided",
               "grad"]

BAD_ARGS = [
    ("logits", np.zeros((2, 20), np.float64), "logits"),
    ("logits", np.zeros((2, 21), np.float32), "logits"),  # not a multiple of K
    ("gumbel", np.zeros((2, 20), np.float32), "gumbel"),  # R != B*M
    ("gumbel", np.zeros((20, 6), np.float32).T, "gumbel"),  # not C-contiguous
    ("codes", np.zeros((6, 4), np.int64), "codes"),
    ("codes", np.zeros((6, 5), np.int32), "codes"),
    ("K", 0, "K"),
    ("M", 2.5, "M"),
    ("losses", np.zeros((6, 19), np.float32), "losses"),
    ("grad", np.zeros((3, 20), np.float32), "grad"),
    ("eps", 0.0, "eps"),
    ("eps", float("nan"), "eps"),
    ("grad_scale", float("inf"), "grad_scale"),
    ("eps", 1e-50, "eps"),  # 0 in float32
    ("eps", np.full(1, 0.5, np.float64), "eps given as an array must be a 1-element 1-D float32"),
    ("eps", np.full(2, 0.5, np.float32), "eps given as an array"),
    ("eps", np.full((), 0.5, np.float32), "eps given as an array"),
]


BAD_CALLS = [(op, names, bad) for op, names in [
    (argmax.gumbel_argmax, SAMPLING_ARGS), (argmax.gumbel_argmax_cuda, SAMPLING_ARGS),
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


@pytest.mark.parametrize("op, names", [(argmax.gumbel_argmax, SAMPLING_ARGS),
                                       (argmax.direct_logit_grad, DIRECT_ARGS)])
def test_cpu_twin_and_launcher_take_the_same_arguments(op, names):
    launcher = getattr(argmax, op.__name__ + "_cuda")
    assert list(inspect.signature(op).parameters) == names
    assert list(inspect.signature(launcher).parameters) == names + ["stream"]


class RecordingKernel:
    """Stands in for a CUDA kernel: records the launch configuration and argument types."""

    def __init__(self):
        self.launches = []

    def __getitem__(self, config):
        return lambda *args: self.launches.append((config, tuple(typeof(a) for a in args)))


@pytest.mark.parametrize("eps_form", ["float", "array"])
@pytest.mark.parametrize("two_sided", [False, True])
def test_launchers_pass_the_registered_types(monkeypatch, two_sided, eps_form):
    registered = {kernel.py_func.__name__: {tuple(s) for s in sigs}
                  for kernel, sigs in argmax.CUDA_KERNELS}
    args = valid_args(B=100, M=1, N=20, K=10)
    args["two_sided"] = two_sided
    direct_kernel = "direct_logit_grad_kernel"
    if eps_form == "array":
        import dvae_cupy.kernels.rng as rng  # scalar_array's check: NumPy stands in for CuPy

        monkeypatch.setattr(rng, "cupy_usable", lambda: False)
        args["eps"] = np.full(1, 0.5, np.float32)
        direct_kernel = "direct_logit_grad_eps_array_kernel"
    for name, kernel, names, threads in [
            ("gumbel_argmax", "gumbel_argmax_kernel", SAMPLING_ARGS, 100 * 20),
            ("direct_logit_grad", direct_kernel, DIRECT_ARGS, 100 * 20)]:
        recorder = RecordingKernel()
        monkeypatch.setattr(argmax, kernel, recorder)
        getattr(argmax, name + "_cuda")(*[args[n] for n in names], stream=0)
        (config, types), = recorder.launches
        assert types in registered[kernel], (kernel, types)
        blocks, block, stream = config
        assert blocks * block >= threads > (blocks - 1) * block and stream == 0


# ---------------------------------------------------------------------------------------------
# eps as a 1-element float32 array (read at run time, for CUDA graphs)


@pytest.mark.parametrize("two_sided", [False, True], ids=["one-sided", "two-sided"])
@pytest.mark.parametrize("M", [1, 3])
def test_eps_array_and_eps_number_give_identical_grads(two_sided, M):
    B, N, K = 30, 6, 5
    rng = np.random.default_rng([M, two_sided, 7])
    logits, gumbel, losses = untied_sampling(rng, B, M, N, K, eps=0.3)
    codes = np.empty((B * M, N), dtype=np.int32)
    argmax.gumbel_argmax(logits, gumbel, K, M, codes)
    grad0 = rng.normal(size=(B, N * K)).astype(np.float32)
    # eps not exact in float32 (0.3, 1/3, 0.1 ...) and exact (0.5); grad_scales like 1 / batch
    for eps in [0.3, 1 / 3, 0.1, 0.5, 0.987654321, 0.1 * np.exp(-0.05)]:
        for grad_scale in [1.0, 1 / 100, 1 / 128, 0.37]:
            by_number, by_array = grad0.copy(), grad0.copy()
            argmax.direct_logit_grad(logits, gumbel, losses, codes, K, M, eps, grad_scale,
                                     two_sided, by_number)
            eps_array = np.array([eps], np.float32)
            argmax.direct_logit_grad(logits, gumbel, losses, codes, K, M, eps_array, grad_scale,
                                     two_sided, by_array)
            assert (by_number != grad0).any()
            np.testing.assert_array_equal(by_array, by_number)
            assert eps_array[0] == np.float32(eps)  # read, not written


def test_direct_step_is_made_from_the_float32_eps():
    # the step's float64 arithmetic starts from float32(eps), the eps the arg maxes use, so that
    # a float32 device eps gives the same step as a number
    for eps in [0.3, 1 / 3, 0.1, 0.5, 2.0 ** -10, 0.777]:
        for M in [1, 3]:
            for two_sided in [False, True]:
                got = argmax.direct_step(0.01, np.float32(eps), np.int32(M), two_sided)
                expected = np.float32(0.01 / ((2.0 if two_sided else 1.0)
                                              * float(np.float32(eps)) * M))
                assert got == expected, (eps, M, two_sided)
                scalars = argmax._direct_scalars(5, M, eps, 0.01, two_sided)[1]
                assert type(scalars[3]) is np.float32 and scalars[3] == expected


@pytest.mark.parametrize("bad", [0.0, -0.5, np.inf, np.nan])
def test_cpu_twin_checks_the_eps_array_value(bad):
    # the CPU twin reads host memory and checks eps[0] like a number (the launcher cannot: no sync)
    args = valid_args()
    args["eps"] = np.array([bad], np.float32)
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        argmax.direct_logit_grad(*[args[n] for n in DIRECT_ARGS])


def test_launcher_refuses_a_host_eps_array_on_a_gpu(monkeypatch):
    import dvae_cupy.kernels.rng as rng

    monkeypatch.setattr(rng, "cupy_usable", lambda: True)
    args = valid_args()
    args["eps"] = np.array([0.5], np.float32)
    with pytest.raises(ValueError, match="eps must be a device array"):
        argmax.direct_logit_grad_cuda(*[args[n] for n in DIRECT_ARGS])


# ---------------------------------------------------------------------------------------------
# Real GPU (runs wherever CuPy sees one)


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_usable(), reason="needs CuPy and a CUDA GPU")
def test_cuda_matches_cpu_on_gpu():
    import cupy

    rng = np.random.default_rng(5)
    for B, M, N, K in [(1, 1, 1, 2), (100, 1, 20, 10), (100, 3, 1, 10), (33, 2, 7, 3)]:
        logits, gumbel, losses = untied_sampling(rng, B, M, N, K)
        codes = np.empty((B * M, N), np.int32)
        argmax.gumbel_argmax(logits, gumbel, K, M, codes)
        d_codes = cupy.full(codes.shape, -1, dtype=cupy.int32)
        argmax.gumbel_argmax_cuda(cupy.asarray(logits), cupy.asarray(gumbel), K, M, d_codes)
        np.testing.assert_array_equal(cupy.asnumpy(d_codes), codes)
        for two_sided in (False, True):
            grad = np.ones((B, N * K), np.float32)
            argmax.direct_logit_grad(logits, gumbel, losses, codes, K, M, 0.5, 0.01, two_sided,
                                     grad)
            d_grad = cupy.ones((B, N * K), dtype=cupy.float32)
            argmax.direct_logit_grad_cuda(cupy.asarray(logits), cupy.asarray(gumbel),
                                          cupy.asarray(losses), d_codes, K, M, 0.5, 0.01,
                                          two_sided, d_grad)
            np.testing.assert_allclose(cupy.asnumpy(d_grad), grad, rtol=1e-6, atol=1e-8)
            # eps as a device array: the same float64 step arithmetic, identical grads
            d_grad_eps_array = cupy.ones((B, N * K), dtype=cupy.float32)
            argmax.direct_logit_grad_cuda(cupy.asarray(logits), cupy.asarray(gumbel),
                                          cupy.asarray(losses), d_codes, K, M,
                                          cupy.array([0.5], cupy.float32), 0.01, two_sided,
                                          d_grad_eps_array)
            np.testing.assert_array_equal(cupy.asnumpy(d_grad_eps_array), cupy.asnumpy(d_grad))
            for eps in (0.3, 1 / 3):  # not exact in float32
                by_number = cupy.ones((B, N * K), dtype=cupy.float32)
                by_array = cupy.ones((B, N * K), dtype=cupy.float32)
                args = (cupy.asarray(logits), cupy.asarray(gumbel), cupy.asarray(losses), d_codes,
                        K, M)
                argmax.direct_logit_grad_cuda(*args, eps, 0.01, two_sided, by_number)
                argmax.direct_logit_grad_cuda(*args, cupy.array([eps], cupy.float32), 0.01,
                                              two_sided, by_array)
                np.testing.assert_array_equal(cupy.asnumpy(by_array), cupy.asnumpy(by_number))
    for kernel, sigs in argmax.CUDA_KERNELS:
        assert set(kernel.overloads) <= {tuple(s) for s in sigs}, (kernel, list(kernel.overloads))
