"""kernels/step_end.py's CUDA twin under the CUDA simulator, against the CPU twin.

One block of step_end.THREADS (256) threads: R = 1 (most threads idle) and R = 300 (threads
take two values each). The kernel sums in float64 where the CPU twin takes NumPy's float32
means: the loss agrees to float32 rounding; the counters exactly, the uint64 one wrapping.
"""
import warnings

import numpy as np
import pytest

from dvae_cupy.kernels import step_end


def scalars(loss, count, step):
    return (np.array([loss], np.float64), np.array([count], np.uint64),
            np.array([step], np.int64))


@pytest.mark.parametrize("R, B", [(1, 1), (300, 100)], ids=str)
def test_finish_step_cuda_matches_cpu(R, B):
    rng = np.random.default_rng(R)
    recon = (rng.standard_normal(R) * 30 + 200).astype(np.float32)
    kl = (rng.random(B) * 3).astype(np.float32)
    cpu, sim = scalars(10.0, 2**64 - 2, 2**53 + 1), scalars(10.0, 2**64 - 2, 2**53 + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the simulator's uint64 wrap warns
        for _ in range(2):  # the second call wraps the counter; the loss accumulates
            step_end.finish_step(recon, kl, *cpu)
            step_end.finish_step_cuda(recon, kl, *sim)
    assert sim[0][0] == pytest.approx(cpu[0][0], rel=1e-6)
    assert cpu[1][0] == sim[1][0] == 0 and cpu[2][0] == sim[2][0] == 2**53 + 3
