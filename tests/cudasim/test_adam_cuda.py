"""kernels/adam.py's CUDA twin under the CUDA simulator, against the CPU twin.

Both run the same scalar body (adam_element); the simulator may evaluate it in other precision
than the compiled CPU loop, so float outputs are compared with rtol 1e-6. Small sizes (a simulated
thread is a Python thread): one element, 300 (two blocks, the second partly idle, each making
its own bias corrections from step[0]), a 3-D array.
"""
import numpy as np
import pytest

from dvae_cupy.kernels import adam as ops
from launches import record_launches

SHAPES = [(1,), (300,), (2, 3, 5)]


@pytest.mark.parametrize("hyper", [(1e-3, 0.9, 0.999, 1e-8), (1e-2, 0.5, 0.9, 1e-6)],
                         ids=["defaults", "other"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_adam_update_cuda_matches_cpu(shape, hyper):
    # the step advanced in its array between updates, as a graph replay sees it; a late step too
    rng = np.random.default_rng(sum(shape))
    cpu = [rng.standard_normal(shape).astype(np.float32), None,
           np.zeros(shape, np.float32), np.zeros(shape, np.float32)]
    sim = [a.copy() if a is not None else None for a in cpu]
    step = np.zeros(1, np.int64)
    for t in (1, 2, 3, 10**6):
        grad = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 1, shape)).astype(np.float32)
        cpu[1], sim[1] = grad, grad.copy()
        step[0] = t
        ops.adam_update(*cpu, *hyper, step)
        ops.adam_update_cuda(*sim, *hyper, step, stream=0 if t == 2 else None)
        assert int(step[0]) == t  # read, not written
    for got, expected in zip(sim, cpu):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(sim[1], cpu[1])  # grad is read only


def test_empty_arrays_launch_nothing(monkeypatch):
    launches = record_launches(monkeypatch, ops, "adam_kernel")
    arrays = [np.empty((0, 3), np.float32) for _ in range(4)]
    ops.adam_update_cuda(*arrays, 1e-3, 0.9, 0.999, 1e-8, np.ones(1, np.int64))
    assert launches == []
    arrays = [np.zeros((1, 3), np.float32) for _ in range(4)]
    ops.adam_update_cuda(*arrays, 1e-3, 0.9, 0.999, 1e-8, np.ones(1, np.int64))
    assert len(launches) == 1  # the recorder does stand in for the kernel
