"""kernels/bias_act.py on the CPU: bias_act and relu_backward against the float64 reference, and
relu_backward's bias sums against np.sum(axis=0) bit for bit (the call it replaces).

a + b rounds once to float32 and max / the mask are exact, so the float32 twins must equal the
float64 reference rounded to float32 exactly (a stronger check than an rtol ~1e-5 comparison).
The bias sums are float32 sums of R terms: within R * 2**-24 * sum|terms| of the float64 sums.
The CUDA twins run under the simulator (tests/cudasim/test_bias_act_cuda.py), compile to PTX
(tests/test_ptx.py) and, where a GPU is present, are compared here (test_cuda_matches_cpu_on_gpu).
"""
import numpy as np
import pytest

from dvae_cupy import reference
from dvae_cupy.kernels import bias_act as ops
from dvae_cupy.kernels._cuda import cupy_usable
from launches import as_if_no_gpu, covers, record_launches, registered

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


def masked_case(shape, seed):
    """(grad, act, pre): a random gradient and a post-ReLU activation with zeros and positives."""
    a, bias = random_inputs(shape, seed)
    pre = a + bias
    act = pre.copy()
    ops.bias_act(act, np.zeros_like(bias), True)
    grad = np.random.default_rng(seed + 1).standard_normal(shape).astype(np.float32)
    return grad, act, pre


def run_relu_backward(grad, act):
    """(masked grad, grad_bias) from the op; grad_bias pre-filled with nan (an output)."""
    grad = grad.copy()
    grad_bias = np.full(grad.shape[1], np.nan, np.float32)
    ops.relu_backward(grad, act, grad_bias)
    return grad, grad_bias


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_relu_backward_matches_reference(shape):
    grad, act, pre = masked_case(shape, seed=7 + shape[0])
    expected = grad.astype(np.float64) * (pre > 0)  # decoder_backward's mask, on the pre-activation
    got, grad_bias = run_relu_backward(grad, act)
    np.testing.assert_array_equal(got, expected.astype(np.float32))
    exact = expected.sum(axis=0)
    bound = shape[0] * 2.0 ** -24 * np.abs(expected).sum(axis=0)
    assert (np.abs(grad_bias - exact) <= bound).all()
    assert shape[0] < 3 or (got == 0).any()


@pytest.mark.parametrize("shape", SHAPES[1:] + [(100, 200), (100, 2), (1000, 17)], ids=str)
def test_relu_backward_bias_sums_are_numpy_sums_bit_for_bit(shape):
    # the sequence it replaces: the mask, then np.sum(grad, axis=0, out=grad_bias), which adds a
    # C-contiguous (R, C > 1) float32 array row by row from row 0 (not pairwise)
    grad, act, _ = masked_case(shape, seed=shape[1])
    grad = (grad * 10.0 ** np.random.default_rng(1).uniform(-4, 4, shape)).astype(np.float32)
    masked = np.where(act > 0, grad, np.float32(0.0))
    expected = np.empty(shape[1], np.float32)
    np.sum(masked, axis=0, out=expected)
    got, grad_bias = run_relu_backward(grad, act)
    np.testing.assert_array_equal(got.view(np.uint32), masked.view(np.uint32))
    np.testing.assert_array_equal(grad_bias.view(np.uint32), expected.view(np.uint32))


def test_relu_edge_values():
    a = np.array([[-0.0, 0.0, -1e-30, 1e-30, -np.inf, np.inf, np.nan]], dtype=np.float32)
    ops.bias_act(a, np.zeros(7, dtype=np.float32), True)
    np.testing.assert_array_equal(a[0, :6], np.array([0, 0, 0, 1e-30, 0, np.inf], np.float32))
    assert np.isnan(a[0, 6])  # propagates, as np.maximum does
    grad, grad_bias = run_relu_backward(np.full_like(a, 2.0), a)
    np.testing.assert_array_equal(grad[0], [0, 0, 0, 2, 0, 2, 0])
    np.testing.assert_array_equal(grad_bias, [0, 0, 0, 2, 0, 2, 0])


def test_zero_rows():
    a = np.empty((0, 5), dtype=np.float32)
    ops.bias_act(a, np.ones(5, dtype=np.float32), True)
    _, grad_bias = run_relu_backward(a, a.copy())
    np.testing.assert_array_equal(grad_bias, np.zeros(5, np.float32))  # np.sum of no rows


def _good():
    return np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32), np.zeros(3, np.float32)


@pytest.mark.parametrize("call, message", [
    (lambda: ops.bias_act(np.zeros((2, 3)), np.zeros(3, np.float32), True), "a must be float32"),
    (lambda: ops.bias_act(np.zeros(6, np.float32), np.zeros(3, np.float32), True), "a must be 2-D"),
    (lambda: ops.bias_act(np.zeros((2, 3), np.float32), np.zeros(4, np.float32), True),
     "bias must have shape"),
    (lambda: ops.bias_act(np.zeros((2, 6), np.float32)[:, ::2], np.zeros(3, np.float32), True),
     "a must be C-contiguous"),
    (lambda: ops.relu_backward(_good()[0], np.zeros((3, 2), np.float32), _good()[2]),
     "act must have grad's shape"),
    (lambda: ops.relu_backward(_good()[0], np.zeros((2, 3), np.int32), _good()[2]),
     "act must be float32"),
    (lambda: ops.relu_backward(*_good()[:2], np.zeros(4, np.float32)), "grad_bias must have shape"),
    (lambda: ops.relu_backward(*_good()[:2], np.zeros(3, np.float64)), "grad_bias must be float32"),
    (lambda: ops.relu_backward(*_good()[:2], np.zeros((1, 3), np.float32)), "grad_bias must be 1-D"),
    (lambda: ops.relu_backward(np.zeros((2, 6), np.float32)[:, ::2], *_good()[1:]),
     "grad must be C-contiguous"),
])
@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_bad_arguments_are_named(call, message, target, monkeypatch):
    if target == "cuda":  # the launchers share the fronts' checks: call them instead
        monkeypatch.setattr(ops, "bias_act", ops.bias_act_cuda)
        monkeypatch.setattr(ops, "relu_backward", ops.relu_backward_cuda)
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("shape", [(1, 1), (7, 300), (100, 300)], ids=str)
def test_launchers_pass_the_registered_types(shape, monkeypatch):
    # what they would launch with must be a signature the PTX test compiles, on a grid with a
    # thread per element (bias_act) or per column (relu_backward)
    as_if_no_gpu(monkeypatch)
    a, bias = random_inputs(shape, seed=1)
    for name, launch, needed in [
            ("bias_act_kernel", lambda: ops.bias_act_cuda(a, bias, 1), a.size),
            ("relu_backward_kernel", lambda: ops.relu_backward_cuda(a, a.copy(), bias), shape[1])]:
        launches = record_launches(monkeypatch, ops, name)
        launch()
        (config, types), = launches
        assert types in registered(ops)[name]
        assert covers(config, needed)


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
            got_bias = cupy.full(shape[1], cupy.nan, dtype=cupy.float32)
            ops.relu_backward_cuda(got_grad, cupy.asarray(a), got_bias)
            grad_bias = np.empty(shape[1], np.float32)
            ops.relu_backward(grad, a, grad_bias)
            np.testing.assert_array_equal(cupy.asnumpy(got_grad), grad)
            np.testing.assert_array_equal(cupy.asnumpy(got_bias), grad_bias)  # same order
    for kernel, sigs in ops.CUDA_KERNELS:
        assert set(kernel.overloads) <= {tuple(s) for s in sigs}, (kernel, list(kernel.overloads))
