import os
import sys
import threading
import traceback

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("tests/cudasim runs only with NUMBA_ENABLE_CUDASIM=1", allow_module_level=True)

from numba.core import types  # noqa: E402
from numba.np import numpy_support  # noqa: E402
from numba.cuda.simulator.kernelapi import FakeCUDAShared  # noqa: E402

_simulators_shared_array = FakeCUDAShared.array
_first_allocation = threading.Lock()


def _shared_array_made_once(self, shape, dtype, alignment=None):
    """The simulator's cuda.shared.array, with its first allocation at a source line made under
    a lock. The simulator's own checks its per-block dict and then fills it, unlocked: two
    threads of one block can both find the line missing and get different arrays, so their
    "shared" memory is not shared (numba-cuda 0.30.4; reproduced: 1 block in 400 of a kernel
    that writes shared[t] = t and reads it back after syncthreads, at a 1 us switch interval).
    The enumeration kernel's brute-force test failed once in CI this way. Same keying as the
    simulator's: the calling source file and line."""
    if alignment is not None or shape == 0:  # unkeyed cases: the simulator's own code
        return _simulators_shared_array(self, shape, dtype, alignment)
    if isinstance(dtype, types.Type):
        dtype = numpy_support.as_dtype(dtype)
    caller = tuple(traceback.extract_stack(sys._getframe(1), limit=1)[-1])[0:2]
    with _first_allocation:
        array = self._allocations.get(caller)
        if array is None:
            array = self._allocations[caller] = np.empty(shape, dtype)
    return array


@pytest.fixture(autouse=True, scope="session")
def shared_arrays_really_shared():
    FakeCUDAShared.array = _shared_array_made_once
    yield
    FakeCUDAShared.array = _simulators_shared_array


@pytest.fixture(scope="module")
def quick_thread_switches():
    """The simulator's threads hand the GIL round at every syncthreads: a shorter switch
    interval than Python's 5 ms makes those hand-overs several times faster (the pairwise
    solvers' many-thread blocks use it)."""
    saved = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(saved)
