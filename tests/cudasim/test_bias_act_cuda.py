"""kernels/bias_act.py's CUDA twins under the CUDA simulator, against the CPU twins.

The results are exact on every target (one float32 rounding, then max / a mask; the bias sums
add the rows in the same order), so the launchers' outputs must equal the CPU twins' bit for
bit. Shapes stay small (a simulated thread is a Python thread): one element, (3, 7), 300
elements or columns (two blocks, the second partly idle), and R = 0.
"""
import numpy as np
import pytest

from dvae_cupy.kernels import bias_act as ops
from launches import record_launches

SHAPES = [(1, 1), (3, 7), (1, 300), (2, 150), (20, 3)]


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


@pytest.mark.parametrize("shape", SHAPES + [(0, 4)], ids=str)
def test_relu_backward_cuda_equals_cpu(shape):
    act, bias = random_inputs(shape, seed=1)
    ops.bias_act(act, bias, True)
    grad = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    got, got_bias = grad.copy(), np.full(shape[1], np.nan, np.float32)
    ops.relu_backward_cuda(got, act, got_bias)
    expected_bias = np.full(shape[1], np.nan, np.float32)
    ops.relu_backward(grad, act, expected_bias)
    np.testing.assert_array_equal(got, grad)
    np.testing.assert_array_equal(got_bias.view(np.uint32), expected_bias.view(np.uint32))
    assert (got == 0).any() or act.size < 10


def test_edge_values_and_explicit_stream():
    a = np.array([[-0.0, 0.0, -1e-30, 1e-30, -np.inf, np.inf, np.nan]], dtype=np.float32)
    expected = a.copy()
    ops.bias_act(expected, np.zeros(7, np.float32), True)
    ops.bias_act_cuda(a, np.zeros(7, np.float32), True, stream=0)
    np.testing.assert_array_equal(a, expected)  # nan == nan here
    grad = np.full_like(a, 2.0)
    grad_bias = np.full(7, np.nan, np.float32)
    ops.relu_backward_cuda(grad, a, grad_bias, stream=0)
    np.testing.assert_array_equal(grad[0], [0, 0, 0, 2, 0, 2, 0])
    np.testing.assert_array_equal(grad_bias, [0, 0, 0, 2, 0, 2, 0])


def test_zero_rows_launch_nothing(monkeypatch):
    # bias_act has nothing to do for R = 0; relu_backward still launches (grad_bias = 0) unless
    # there are no columns either
    bias_act = record_launches(monkeypatch, ops, "bias_act_kernel")
    relu_backward = record_launches(monkeypatch, ops, "relu_backward_kernel")
    ops.bias_act_cuda(np.empty((0, 4), np.float32), np.ones(4, np.float32), True)
    ops.relu_backward_cuda(np.empty((3, 0), np.float32), np.empty((3, 0), np.float32),
                           np.empty(0, np.float32))
    assert bias_act == [] and relu_backward == []
    a = np.ones((1, 4), np.float32)
    ops.bias_act_cuda(a, np.ones(4, np.float32), True)
    ops.relu_backward_cuda(np.empty((0, 4), np.float32), np.empty((0, 4), np.float32),
                           np.empty(4, np.float32))
    assert len(bias_act) == 1 and len(relu_backward) == 1  # the recorders do stand in
