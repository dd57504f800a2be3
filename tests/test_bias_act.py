"""kernels/bias_act.py on the CPU: bias_act and relu_backward against the float64 reference.

a + b rounds once to float32 and max / the mask are exact, so the float32 twins must equal the
float64 reference rounded to float32 exactly (a stronger check than an rtol ~1e-5 comparison).
The CUDA twins run under the simulator (tests/cudasim/test_bias_act_cuda.py), compile to PTX
(tests/test_ptx.py) and, where a GPU is present, are compared here (test_cuda_matches_cpu_on_gpu).
"""
import numpy as np
import pytest
from numba import typeof

from dvae_cupy import reference
from dvae_cupy.kernels import bias_act as ops
from dvae_cupy.kernels._cuda import cupy_usable

# (R, C): a single element, one row, the model's H = 300 (not a multiple of 256), odd sizes
SHAPES = [(1, 1), (1, 300), (7, 300), (100, 300), (3, 7), (257, 13)]


def random_inputs(shape, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape).astype(np.float32)
    bias = rng.standard_normal(shape[1]).astype(np.float32)
    return a, bias


@pytest.mark.parametrize("relu", [True, False], ids=["relu", "linear"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bias_act_matches_reference(shape, relu):
    a, bias = random_inputs(shape, seed=shape[0] * 1000 + shape[1])
    pre = a.astype(np.float64) + bias.astype(np.float64)
    expected = reference.relu(pre) if relu else pre
    ops.bias_act(a, bias, relu)
    np.testing.assert_allclose(a, expected, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(a, expected.astype(np.float32))  # one rounding: exact
    if relu:
        assert (a >= 0).all() and (a.size < 100 or (a == 0).any())


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_relu_backward_matches_reference(shape):
    a, bias = random_inputs(shape, seed=7 + shape[0])
    pre = a + bias
    act = pre.copy()
    ops.bias_act(act, np.zeros_like(bias), True)
    grad = np.random.default_rng(shape[1]).standard_normal(shape).astype(np.float32)
    expected = grad.astype(np.float64) * (pre > 0)  # decoder_backward's mask, on the pre-activation
    ops.relu_backward(grad, act)
    np.testing.assert_array_equal(grad, expected.astype(np.float32))


def test_relu_edge_values():
    a = np.array([[-0.0, 0.0, -1e-30, 1e-30, -np.inf, np.inf, np.nan]], dtype=np.float32)
    ops.bias_act(a, np.zeros(7, dtype=np.float32), True)
    np.testing.assert_array_equal(a[0, :6], np.array([0, 0, 0, 1e-30, 0, np.inf], np.float32))
    assert np.isnan(a[0, 6])  # propagates, as np.maximum does
    grad = np.full_like(a, 2.0)
    ops.relu_backward(grad, a)
    np.testing.assert_array_equal(grad[0], [0, 0, 0, 2, 0, 2, 0])


def test_zero_rows_is_a_no_op():
    a = np.empty((0, 5), dtype=np.float32)
    ops.bias_act(a, np.ones(5, dtype=np.float32), True)
    ops.relu_backward(a, a.copy())


@pytest.mark.parametrize("call, message", [
    (lambda: ops.bias_act(np.zeros((2, 3)), np.zeros(3, np.float32), True), "a must be float32"),
    (lambda: ops.bias_act(np.zeros(6, np.float32), np.zeros(3, np.float32), True), "a must be 2-D"),
    (lambda: ops.bias_act(np.zeros((2, 3), np.float32), np.zeros(4, np.float32), True),
     "bias must have shape"),
    (lambda: ops.bias_act(np.zeros((2, 6), np.float32)[:, ::2], np.zeros(3, np.float32), True),
     "a must be C-contiguous"),
    (lambda: ops.relu_backward(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32)),
     "act must have grad's shape"),
    (lambda: ops.relu_backward(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.int32)),
     "act must be float32"),
])
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


class LaunchRecorder:
    """Stands in for a @cuda.jit kernel: records the launch configuration and arguments."""

    def __init__(self):
        self.launches = []

    def __getitem__(self, config):
        return lambda *args: self.launches.append((config, args))


@pytest.mark.parametrize("shape", [(1, 1), (7, 300)], ids=str)
def test_launchers_pass_the_registered_types(shape, monkeypatch):
    # the launchers run here (no GPU: host arrays pass through as_device_view, stream 0); what they
    # would launch with must be a signature the PTX test compiles, on a grid covering every element
    registry = {kernel.py_func.__name__: [tuple(s) for s in sigs] for kernel, sigs in ops.CUDA_KERNELS}
    a, bias = random_inputs(shape, seed=1)
    for name, launch in [("bias_act_kernel", lambda: ops.bias_act_cuda(a, bias, 1)),
                         ("relu_backward_kernel", lambda: ops.relu_backward_cuda(a, a.copy()))]:
        recorder = LaunchRecorder()
        monkeypatch.setattr(ops, name, recorder)
        launch()
        (config, args), = recorder.launches
        assert tuple(typeof(x) for x in args) in registry[name]
        blocks, threads, stream = config
        assert blocks * threads >= a.size > (blocks - 1) * threads and stream == 0


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_usable(), reason="needs CuPy and a CUDA GPU")
def test_cuda_matches_cpu_on_gpu():
    import cupy

    for shape in [(1, 1), (7, 300), (100, 300), (257, 13)]:
        for relu in (True, False):
            a, bias = random_inputs(shape, seed=shape[1])
            got = cupy.asarray(a)
            ops.bias_act_cuda(got, cupy.asarray(bias), relu)
            ops.bias_act(a, bias, relu)
            np.testing.assert_array_equal(cupy.asnumpy(got), a)
            grad = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
            got_grad = cupy.asarray(grad)
            ops.relu_backward_cuda(got_grad, cupy.asarray(a))
            ops.relu_backward(grad, a)
            np.testing.assert_array_equal(cupy.asnumpy(got_grad), grad)
    for kernel, sigs in ops.CUDA_KERNELS:
        assert set(kernel.overloads) <= {tuple(s) for s in sigs}, (kernel, list(kernel.overloads))
