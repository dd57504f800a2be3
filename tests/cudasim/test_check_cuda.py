"""The GPU backend's orchestration, unchanged, with the CUDA kernels under the simulator and
NumPy arrays standing in for CuPy: every dvae-check row against the float64 reference."""
import numpy as np
import pytest

from dvae_cupy import check
from dvae_cupy.backend import cuda_backend

SIMULATED_GPU = cuda_backend(np)


@pytest.mark.parametrize("op", [name for name in check.CHECK_NAMES
                                if name not in check.CPU_ONLY_CHECKS])
def test_cuda_kernels_under_simulator_match_reference(op):
    results = check.run_checks(SIMULATED_GPU, only=[op])
    assert results, f"no check ran for {op}"
    failed = [r for r in results if not r.passed]
    assert not failed, check.format_table(failed)
