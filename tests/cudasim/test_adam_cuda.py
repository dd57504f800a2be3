"""kernels/adam.py's CUDA twin under the CUDA simulator, against the CPU twin.

Both run the same scalar body (adam_element); the simulator may evaluate it in other precision
than the compiled CPU loop, so float outputs are compared with rtol 1e-6. Small sizes (a simulated
thread is a Python thread): one element, 300 (two blocks, the second partly idle), a 3-D array.
"""
import numpy as np
import pytest

from dvae_cupy.kernels import adam as ops
from dvae_cupy.kernels import rng as rngmod

SHAPES = [(1,), (300,), (2, 3, 5)]


@pytest.mark.parametrize("hyper", [(1e-3, 0.9, 0.999, 1e-8), (1e-2, 0.5, 0.9, 1e-6)],
                         ids=["defaults", "other"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_adam_update_cuda_matches_cpu_over_three_steps(shape, hyper):
    rng = np.random.default_rng(sum(shape))
    cpu = [rng.standard_normal(shape).astype(np.float32), None,
           np.zeros(shape, np.float32), np.zeros(shape, np.float32)]
    sim = [a.copy() if a is not None else None for a in cpu]
    for step in (1, 2, 3):
        grad = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 1, shape)).astype(np.float32)
        cpu[1], sim[1] = grad, grad.copy()
        ops.adam_update(*cpu, *hyper, step)
        ops.adam_update_cuda(*sim, *hyper, step)
    for got, expected in zip(sim, cpu):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(sim[1], cpu[1])  # grad is read only


def test_late_step_and_explicit_stream():
    rng = np.random.default_rng(9)
    arrays = [rng.standard_normal(20).astype(np.float32) for _ in range(3)]
    arrays.append(rng.uniform(0.01, 1.0, 20).astype(np.float32))
    sim = [a.copy() for a in arrays]
    ops.adam_update(*arrays, 1e-3, 0.9, 0.999, 1e-8, 10**6)
    ops.adam_update_cuda(*sim, 1e-3, 0.9, 0.999, 1e-8, 10**6, stream=0)
    for got, expected in zip(sim, arrays):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12)


def test_empty_arrays_launch_nothing():
    arrays = [np.empty((0, 3), np.float32) for _ in range(4)]
    ops.adam_update_cuda(*arrays, 1e-3, 0.9, 0.999, 1e-8, 1)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_adam_update_cuda_with_step_array_matches_cpu(shape):
    # the step as a 1-element int64 array, advanced on the device before each update as a graph
    # replay does; the kernel makes the bias corrections from it (once per block: 300 elements
    # are two blocks, each computing its own)
    hyper = (1e-3, 0.9, 0.999, 1e-8)
    rng = np.random.default_rng(sum(shape) + 1)
    cpu = [rng.standard_normal(shape).astype(np.float32), None,
           np.zeros(shape, np.float32), np.zeros(shape, np.float32)]
    by_int = [a.copy() if a is not None else None for a in cpu]
    by_array = [a.copy() if a is not None else None for a in cpu]
    step_array = np.zeros(1, np.int64)
    for step in (1, 2, 3, 12345):
        grad = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 1, shape)).astype(np.float32)
        cpu[1], by_int[1], by_array[1] = grad, grad.copy(), grad.copy()
        step_array[0] = step - 1
        rngmod.advance_counter_cuda(step_array)
        ops.adam_update(*cpu, *hyper, step)
        ops.adam_update_cuda(*by_int, *hyper, step)
        ops.adam_update_cuda(*by_array, *hyper, step_array)
        assert int(step_array[0]) == step
    for got, same_kernel_int, expected in zip(by_array, by_int, cpu):
        np.testing.assert_array_equal(got, same_kernel_int)  # array step == int step, identically
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12)


def test_step_array_with_empty_arrays_launches_nothing():
    arrays = [np.empty((0, 3), np.float32) for _ in range(4)]
    ops.adam_update_cuda(*arrays, 1e-3, 0.9, 0.999, 1e-8, np.ones(1, np.int64))
