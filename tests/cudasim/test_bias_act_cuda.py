"""kernels/bias_act.py's CUDA twins under the CUDA simulator, against the CPU twins.

The results are exact on every target (one float32 rounding, then max / a mask), so the
launchers' outputs must equal the CPU twins' bit for bit. Shapes stay small (a simulated thread
is a Python thread): one element, (3, 7), and 300 elements (two blocks, the second partly idle).
"""
import numpy as np
import pytest

from dvae_cupy.kernels import bias_act as ops

SHAPES = [(1, 1), (3, 7), (1, 300), (2, 150)]


def random_inputs(shape, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape).astype(np.float32),
            rng.standard_normal(shape[1]).astype(np.float32))


@pytest.mark.parametrize("relu", [True, False], ids=["relu", "linear"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bias_act_cuda_equals_cpu(shape, relu):
    a, bias = random_inputs(shape, seed=shape[1])
    got = a.copy()
    ops.bias_act_cuda(got, bias, relu)
    ops.bias_act(a, bias, relu)
    np.testing.assert_array_equal(got, a)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_relu_backward_cuda_equals_cpu(shape):
    act, bias = random_inputs(shape, seed=1)
    ops.bias_act(act, bias, True)
    grad = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    got = grad.copy()
    ops.relu_backward_cuda(got, act)
    ops.relu_backward(grad, act)
    np.testing.assert_array_equal(got, grad)
    assert (got == 0).any() or act.size < 10


def test_edge_values_and_explicit_stream():
    a = np.array([[-0.0, 0.0, -1e-30, 1e-30, -np.inf, np.inf, np.nan]], dtype=np.float32)
    expected = a.copy()
    ops.bias_act(expected, np.zeros(7, np.float32), True)
    ops.bias_act_cuda(a, np.zeros(7, np.float32), True, stream=0)
    np.testing.assert_array_equal(a, expected)  # nan == nan here
    grad = np.full_like(a, 2.0)
    ops.relu_backward_cuda(grad, a, stream=0)
    np.testing.assert_array_equal(grad[0], [0, 0, 0, 2, 0, 2, 0])


def test_zero_rows_launch_nothing():
    a = np.empty((0, 4), np.float32)
    ops.bias_act_cuda(a, np.ones(4, np.float32), True)
    ops.relu_backward_cuda(a, a.copy())
