"""tests/agreement.py's backend comparison, proven on the CPU: it accepts a backend that only
rounds differently (matrix products and sums accumulated in float64) and rejects backends with
a real bug (a wrong sign, a dropped term). tests/test_gpu.py applies it to the GPU."""
import numpy as np
import pytest

from agreement import compare_a_few_steps, compare_one_step
from dvae_cupy.backend import Backend, cpu_backend
from dvae_cupy.model import ModelShape

CPU = cpu_backend()
CASES = [("direct", ModelShape(3, 4, hidden=64, pixels=784)),
         ("exact", ModelShape(1, 5, hidden=64, pixels=784)),
         ("gumbel-softmax", ModelShape(2, 3, hidden=64, pixels=784))]


class Float64Accumulation:
    """NumPy, but matrix products and sums accumulate in float64 before rounding to float32."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def matmul(a, b, out=None):
        result = np.matmul(np.asarray(a, np.float64), np.asarray(b, np.float64))
        if out is None:
            return result.astype(np.float32)
        out[...] = result
        return out

    @staticmethod
    def sum(a, axis=None, out=None, **kwargs):
        result = np.sum(np.asarray(a, np.float64), axis=axis, **kwargs)
        if out is None:
            return result.astype(a.dtype)
        out[...] = result
        return out


class Ops:
    """The CPU ops with some replaced."""

    def __init__(self, **replaced):
        self._replaced = replaced

    def __getattr__(self, name):
        return self._replaced.get(name) or getattr(CPU.ops, name)


def wrong_sign():
    def direct_logit_grad(logits, gumbel, losses, codes, k, m, eps, scale, two_sided, grad):
        CPU.ops.direct_logit_grad(logits, gumbel, losses, codes, k, m, eps, -scale, two_sided, grad)

    def softmax_kl(logits, k, scale, kl, grad):
        CPU.ops.softmax_kl(logits, k, -scale, kl, grad)
    return Backend("cpu", np, Ops(direct_logit_grad=direct_logit_grad, softmax_kl=softmax_kl))


def dropped_term():
    def scatter_rows_add(grad_out, hidden, codes, k, grad_weight, grad_bias):
        CPU.ops.scatter_rows_add(grad_out, hidden, codes, k, grad_weight, grad_bias)
        grad_bias[...] = 0  # the decoder's first-layer bias gradient dropped

    def relu_backward(grad, act, grad_bias):
        CPU.ops.relu_backward(grad, act, grad_bias)
        grad_bias[...] = 0
    return Backend("cpu", np, Ops(scatter_rows_add=scatter_rows_add, relu_backward=relu_backward))


ROUNDED_DIFFERENTLY = Backend("cpu", Float64Accumulation(), CPU.ops)


@pytest.mark.parametrize("estimator, shape", CASES, ids=[c[0] for c in CASES])
def test_other_rounding_agrees(estimator, shape):
    assert compare_one_step(CPU, ROUNDED_DIFFERENTLY, shape, estimator) == []
    assert compare_a_few_steps(CPU, ROUNDED_DIFFERENTLY, shape, estimator) == []


@pytest.mark.parametrize("bug", [wrong_sign, dropped_term])
@pytest.mark.parametrize("estimator, shape", CASES, ids=[c[0] for c in CASES])
def test_a_real_bug_disagrees(estimator, shape, bug):
    buggy = bug()
    assert compare_one_step(CPU, buggy, shape, estimator)
    assert compare_a_few_steps(CPU, buggy, shape, estimator)


def test_the_rounding_change_is_real():
    """Float64 accumulation does change the gradients' bits (else the test above proves nothing)."""
    from agreement import Run, problem

    shape = CASES[0][1]
    params, x = problem(shape, "direct", 20)
    a = Run(CPU, shape, "direct", params, 20).gradients(x)[0]
    b = Run(ROUNDED_DIFFERENTLY, shape, "direct", params, 20).gradients(x)[0]
    assert any(not np.array_equal(a[k], b[k]) for k in a)
