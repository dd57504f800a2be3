"""Runs tests/cudasim/ (every CUDA kernel under the Numba CUDA simulator) in a child process.

The simulator has to be enabled before numba.cuda is imported, which this process has already
done without it (for the compile_ptx tests), hence the child process.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SIMULATOR_ON

HERE = Path(__file__).parent


@pytest.mark.skipif(SIMULATOR_ON, reason="already inside the simulator run")
def test_cuda_kernels_under_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / "cudasim")],
        env=env, capture_output=True, text=True, cwd=HERE.parent,
    )
    print(result.stdout[-20000:])
    print(result.stderr[-5000:])
    assert result.returncode == 0, "CUDA simulator tests failed:\n" + result.stdout[-20000:]
