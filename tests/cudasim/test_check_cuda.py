"""The GPU backend's orchestration, unchanged, with the CUDA kernels under the simulator and
NumPy arrays standing in for CuPy: every dvae-check row against the float64 reference."""
import numpy as np
import pytest

from dvae_cupy import check
from dvae_cupy.backend import cuda_backend

SIMULATED_GPU = cuda_backend(np)


# direct_step_real runs the paper's H = 300, D = 784: ~50 s of simulated threads for what the
# small-model rows already cover; it runs on the CPU (tests/test_check.py) and on a real GPU.
SIMULATED = [name for name in check.CHECK_NAMES
             if name != "direct_step_real" and name not in check.CPU_ONLY_CHECKS]


@pytest.mark.parametrize("op", SIMULATED)
def test_cuda_kernels_under_simulator_match_reference(op):
    results = check.run_checks(SIMULATED_GPU, only=[op])
    assert results, f"no check ran for {op}"
    failed = [r for r in results if not r.passed]
    assert not failed, check.format_table(failed)
