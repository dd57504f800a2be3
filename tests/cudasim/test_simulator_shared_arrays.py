"""The simulator's shared arrays, as conftest.py fixes them: two threads of a block that reach
one cuda.shared.array line together get the same array."""
import threading
import time

import numpy as np
from numba.cuda.simulator.kernelapi import FakeCUDAShared


def test_two_threads_at_one_shared_array_line_get_one_array(monkeypatch):
    # np.empty made slow holds the first thread between its lookup and its store: the
    # simulator's own code then gives the second thread a second array.
    real_empty = np.empty

    def slow_empty(*args, **kwargs):
        time.sleep(0.05)
        return real_empty(*args, **kwargs)
    monkeypatch.setattr(np, "empty", slow_empty)
    shared, got = FakeCUDAShared(0), []

    def allocate():
        got.append(shared.array(8, np.float64))
    threads = [threading.Thread(target=allocate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got[0] is got[1]
