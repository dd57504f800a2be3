"""Test-suite wiring.

The CUDA simulator (NUMBA_ENABLE_CUDASIM=1) must be switched on before numba.cuda is first
imported, and compile_ptx does not exist under it, so the two cannot share a process:
tests/cudasim/ is collected only when the simulator is on; in a normal run
tests/test_cuda_simulator.py runs that folder in a child process with the variable set.
"""
import os

SIMULATOR_ON = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"

collect_ignore = [] if SIMULATOR_ON else ["cudasim"]
