"""kernels/adam.py on the CPU: adam_update against reference.adam_step (float64) over 3 steps.

Tolerances, rtol 1e-5 relative to the size of the terms (not of the result: m = b1 m + (1-b1) g
cancels when g changes sign, and the parameter moves by ~lr, far below its own size):
  m:     |m32 - m64| <= 1e-5 * m_abs, with m_abs the first moment of |g| (>= |m64|)
  v:     rtol 1e-5 (a sum of positive terms)
  param: |p32 - p64| <= 1e-5 * (sum over steps of the update computed from m_abs)
                        + steps * ulp(p)   (each step rounds the new parameter once)
The CPU twin also equals the formula written out in NumPy float32 bit for bit (the corrections
made from step[0] in its @njit loop are the host's numbers). The CUDA twin runs under the simulator (tests/cudasim/test_adam_cuda.py), compiles to PTX
(tests/test_ptx.py) and, where a GPU is present, is compared here.
"""
import math

import numpy as np
import pytest

from dvae_cupy import reference
from dvae_cupy.kernels import _cuda
from dvae_cupy.kernels import adam as ops
from dvae_cupy.kernels._cuda import cupy_usable
from launches import as_if_no_gpu, covers, record_launches, registered

SHAPES = [(1,), (300,), (7, 300), (3, 4, 5), (784, 300)]
HYPER = [reference.ADAM_DEFAULTS,
         {"lr": 1e-2, "beta1": 0.5, "beta2": 0.9, "eps": 1e-6}]


def step_array(step):
    return np.array([step], np.int64)


def run_both(shape, hyper, steps, seed):
    """Runs `steps` Adam steps in float32 (the CPU twin) and float64 (the reference) from the
    same float32 start and gradients; returns (float32 state, float64 state, scales), the scales
    being (m_abs, summed update size) for the tolerances."""
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(shape).astype(np.float32)
    param, m, v = p0.copy(), np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    ref = (p0.astype(np.float64), np.zeros(shape), np.zeros(shape))
    m_abs, moved = np.zeros(shape), np.zeros(shape)
    for step in range(1, steps + 1):
        # gradients over several decades, and of both signs, so m and v differ in shape
        grad = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 1, shape)).astype(np.float32)
        ops.adam_update(param, grad, m, v, step=step_array(step), **hyper)
        p64, v_before = ref[0], ref[2]
        ref = reference.adam_step(p64, grad.astype(np.float64), ref[1], v_before, step, **hyper)
        p_abs, m_abs, _ = reference.adam_step(p64, np.abs(grad.astype(np.float64)), m_abs,
                                              v_before, step, **hyper)
        moved += p64 - p_abs
    return (param, m, v), ref, (m_abs, moved)


def assert_adam_close(got, ref, scales, steps):
    param, m, v = got
    ref_p, ref_m, ref_v = ref
    m_abs, moved = scales
    assert (np.abs(m - ref_m) <= 1e-5 * m_abs).all()
    np.testing.assert_allclose(v, ref_v, rtol=1e-5)
    error = np.abs(param - ref_p)
    tolerance = 1e-5 * moved + steps * np.spacing(np.abs(param))
    assert (error <= tolerance).all(), (error - tolerance).max()


@pytest.mark.parametrize("hyper", HYPER, ids=["defaults", "lr1e-2_b0.5_0.9"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_adam_matches_reference_over_three_steps(shape, hyper):
    got, ref, scales = run_both(shape, hyper, steps=3, seed=sum(shape))
    assert_adam_close(got, ref, scales, steps=3)
    assert (scales[1] > 0).all()


def test_adam_late_step_bias_corrections():
    # after many steps the bias corrections tend to 1; step enters only through them
    shape = (50,)
    rng = np.random.default_rng(4)
    param = rng.standard_normal(shape).astype(np.float32)
    m = rng.standard_normal(shape).astype(np.float32) * 0.1
    v = rng.uniform(0.01, 1.0, shape).astype(np.float32)
    grad = rng.standard_normal(shape).astype(np.float32)
    p64, m64, v64 = param.astype(np.float64), m.astype(np.float64), v.astype(np.float64)
    ref = reference.adam_step(p64, grad.astype(np.float64), m64, v64, 12345)
    p_abs, m_abs, _ = reference.adam_step(p64, np.abs(grad.astype(np.float64)), np.abs(m64), v64,
                                          12345)
    ops.adam_update(param, grad, m, v, 1e-3, 0.9, 0.999, 1e-8, step_array(12345))
    assert_adam_close((param, m, v), ref, (m_abs, p64 - p_abs), steps=1)


def test_zero_gradient_from_rest_leaves_the_parameter():
    param = np.linspace(-1, 1, 9, dtype=np.float32)
    m, v = np.zeros_like(param), np.zeros_like(param)
    ops.adam_update(param, np.zeros_like(param), m, v, 1e-3, 0.9, 0.999, 1e-8, step_array(1))
    np.testing.assert_array_equal(param, np.linspace(-1, 1, 9, dtype=np.float32))
    assert not m.any() and not v.any()


def numpy_adam(param, grad, m, v, lr, beta1, beta2, eps, step):
    """PyTorch's formula written out in NumPy float32 (IEEE-rounded element-wise operations in
    the kernel's order, with its flush of subnormal moments), the corrections from the host's
    float64 arithmetic. Returns new (param, m, v)."""
    f = np.float32
    step_size = f(lr / (1.0 - beta1 ** float(step)))
    correction2 = f(math.sqrt(1.0 - beta2 ** float(step)))
    m = m + f(1.0 - beta1) * (grad - m)
    v = v + f(1.0 - beta2) * (grad * grad - v)
    tiny = np.finfo(np.float32).tiny
    m = np.where(np.abs(m) >= tiny, m, f(0.0))
    v = np.where(v >= tiny, v, f(0.0))
    denom = np.sqrt(v) / correction2 + f(eps)
    return param - step_size * (m / denom), m, v


@pytest.mark.parametrize("hyper", HYPER, ids=["defaults", "lr1e-2_b0.5_0.9"])
@pytest.mark.parametrize("shape", [(1,), (7, 300), (784, 300), (300, 784)], ids=str)
def test_adam_equals_the_formula_in_numpy_bit_for_bit(shape, hyper):
    # the corrections made from step[0] inside the @njit loop are the host's float64 -> float32
    # numbers, and the update is the same float32 operations in the same order
    rng_ = np.random.default_rng(len(shape))
    param = rng_.standard_normal(shape).astype(np.float32)
    m, v = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    expected = (param.copy(), m.copy(), v.copy())
    step = step_array(0)
    for t in [1, 2, 3, 4, 999, 12345, 10**6]:
        grad = (rng_.standard_normal(shape) * 10.0 ** rng_.uniform(-3, 1, shape)).astype(np.float32)
        step[0] = t
        ops.adam_update(param, grad, m, v, step=step, **hyper)
        expected = numpy_adam(*expected[:1], grad, *expected[1:], step=t, **hyper)
        assert int(step[0]) == t  # read, not written
        for got, want in zip((param, m, v), expected):
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_bias_corrections_body_equals_the_python_formula():
    # the shared body (CPU loop and kernel) gives the float32s the host computed in Python
    steps = list(range(1, 5001)) + [12345, 10**5 + 7, 10**6, 2**31 + 1, 2**40]
    for lr, beta1, beta2 in [(1e-3, 0.9, 0.999), (1e-2, 0.5, 0.9), (3e-4, 0.95, 0.9999)]:
        for step in steps:
            expected = (np.float32(lr / (1.0 - beta1 ** step)),
                        np.float32(math.sqrt(1.0 - beta2 ** step)))
            assert ops.adam_bias_corrections(lr, beta1, beta2, step) == expected, step


def test_the_multiply_by_the_inverse_correction_is_the_float32_division_for_every_significand():
    # adam_element's float32(float64(s) * (1 / float64(c))) against s / c in float32 (NumPy's
    # IEEE division), for every float32 significand of s in [1, 2) (the result only scales with
    # s's exponent; a second binade near sqrt(tiny) checks that), for the corrections of the
    # first steps and later ones at three beta2, and for random normal c. Breaking it (a
    # float32 reciprocal, s * float32(1 / c)) fails here.
    s = (np.arange(2 ** 23, dtype=np.uint32) | np.uint32(127 << 23)).view(np.float32)
    assert s[0] == 1.0 and s[-1] == np.nextafter(np.float32(2), np.float32(0))
    steps = list(range(1, 9)) + [50, 999, 12345]
    corrections = {np.float32(math.sqrt(1.0 - beta2 ** float(t)))
                   for beta2 in (0.999, 0.9, 0.9999) for t in steps}
    rng_ = np.random.default_rng(7)
    corrections |= set(np.float32(2.0) ** rng_.integers(-40, 1, 8).astype(np.float32)
                       * rng_.uniform(0.5, 1.0, 8).astype(np.float32))
    corrections.discard(np.float32(1.0))
    wide, got, want = np.empty(s.size), np.empty(s.size, np.float32), np.empty(s.size, np.float32)
    for index, c in enumerate(sorted(corrections)):
        inverse = np.float64(ops.inverse_correction(c))
        for scale in (np.float32(1.0), np.float32(2.0 ** -60))[:1 + (index % 8 == 0)]:
            scaled = s * scale
            wide[...] = scaled
            wide *= inverse  # in float64
            got[...] = wide
            np.divide(scaled, c, out=want)
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32),
                                          err_msg=f"c = {c!r}")
    assert ops.inverse_correction(np.float32(1.0)) == 1.0


ARRAYS = ["param", "grad", "m", "v"]


def valid_args(shape=(2, 3)):
    args = {name: np.zeros(shape, np.float32) for name in ARRAYS}
    args.update(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=step_array(1))
    return args


@pytest.mark.parametrize("op", [ops.adam_update, ops.adam_update_cuda], ids=lambda f: f.__name__)
@pytest.mark.parametrize("kwargs, message", [
    ({"grad": np.zeros(4, np.float32)}, "grad must have param's shape"),
    ({"m": np.zeros((2, 3), np.float64)}, "m must be float32"),
    ({"v": np.zeros((2, 6), np.float32)[:, ::2]}, "v must be C-contiguous"),
    ({"step": 1}, "step must be a 1-element 1-D int64 array"),
    ({"step": np.int64(1)}, "step must be a 1-element 1-D int64 array"),
    ({"step": np.ones(1, np.uint64)}, "step must be a 1-element 1-D int64 array"),
    ({"step": np.ones(1, np.int32)}, "step must be a 1-element 1-D int64 array"),
    ({"step": np.ones(1, np.float64)}, "step must be a 1-element 1-D int64 array"),
    ({"step": np.ones(2, np.int64)}, "step must be a 1-element 1-D int64 array"),
    ({"step": np.ones((), np.int64)}, "step must be a 1-element 1-D int64 array"),
    ({"step": np.ones((1, 1), np.int64)}, "step must be a 1-element 1-D int64 array"),
])
def test_bad_arguments_are_named(op, kwargs, message):
    args = valid_args()
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        op(**args)  # raises before any launch: no GPU needed


@pytest.mark.parametrize("step", [0, -3])
def test_cpu_twin_checks_the_step_value_in_its_loop(step):
    args = valid_args()
    args["grad"][...] = 1.0
    args["step"] = step_array(step)
    with pytest.raises(ValueError, match=r"step\[0\] must be >= 1"):
        ops.adam_update(**args)
    assert not args["param"].any() and not args["m"].any()


def test_launcher_refuses_a_host_step_array_on_a_gpu(monkeypatch):
    monkeypatch.setattr(_cuda, "cupy_usable", lambda: True)
    with pytest.raises(ValueError, match="step must be a device array"):
        ops.adam_update_cuda(**valid_args())


@pytest.mark.parametrize("shape", [(1,), (7, 300)], ids=str)
def test_launcher_passes_the_registered_types(shape, monkeypatch):
    # what the launcher would launch with must be a signature the PTX test compiles, on a grid
    # covering every element
    as_if_no_gpu(monkeypatch)
    launches = record_launches(monkeypatch, ops, "adam_kernel")
    ops.adam_update_cuda(**valid_args(shape))  # Python floats, as callers pass
    (config, types), = launches
    assert types in registered(ops)["adam_kernel"]
    assert covers(config, int(np.prod(shape)))


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_usable(), reason="needs CuPy and a CUDA GPU")
def test_cuda_matches_cpu_on_gpu():
    import cupy

    for shape in [(1,), (7, 300), (784, 300)]:
        rng = np.random.default_rng(1)
        cpu = [rng.standard_normal(shape).astype(np.float32) for _ in range(2)]
        cpu += [np.zeros(shape, np.float32), np.zeros(shape, np.float32)]
        gpu = [cupy.asarray(a) for a in cpu]
        d_step = cupy.zeros(1, dtype=cupy.int64)
        for step in (1, 2, 3):
            ops.adam_update(*cpu, 1e-3, 0.9, 0.999, 1e-8, step_array(step))
            d_step[...] = step
            ops.adam_update_cuda(*gpu, 1e-3, 0.9, 0.999, 1e-8, d_step)
        for got, expected in zip(gpu, cpu):
            # NVVM may fuse multiply-adds, and libdevice's pow may differ in the last bit
            np.testing.assert_allclose(cupy.asnumpy(got), expected, rtol=1e-6, atol=1e-7)
    for kernel, sigs in ops.CUDA_KERNELS:
        assert set(kernel.overloads) <= {tuple(s) for s in sigs}, (kernel, list(kernel.overloads))


def test_moments_below_the_smallest_normal_float32_are_flushed_to_zero():
    # A parameter whose gradient stays 0 must not leave subnormal moments (slow on x86).
    tiny = np.finfo(np.float32).tiny
    param = np.ones(4, np.float32)
    m = np.array([tiny * 1.05, -tiny * 1.05, 1e-3, 0.0], np.float32)
    v = np.array([tiny * 1.0005, tiny * 1.0005, 1e-3, 0.0], np.float32)
    ops.adam_update(param, np.zeros(4, np.float32), m, v, 1e-3, 0.9, 0.999, 1e-8, step_array(10))
    np.testing.assert_array_equal(m[:2], 0.0)   # 0.9 * 1.05 tiny < tiny
    np.testing.assert_array_equal(v[:2], 0.0)   # 0.999 * 1.0005 tiny < tiny
    assert m[2] == np.float32(0.9) * np.float32(1e-3) and v[2] > 0
    assert not np.any((np.abs(m) > 0) & (np.abs(m) < tiny))
