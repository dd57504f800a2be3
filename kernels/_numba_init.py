"""Numba's one-time start in a process, begun early in a thread: its CPU target, and the
kernels the cache holds.

The first call of any @njit function in a process, compiled or loaded from the kernel cache,
makes Numba initialise its CPU target: its typing and lowering registries, its NumPy support,
and SciPy's BLAS bindings where SciPy is installed (~0.5 s on a 2-core machine, once per
process; no cache can keep it). Then each kernel's first call loads its machine code from the
cache (~10 ms each, 13 in an N = 1 step). Paid at the first training step, both lengthened the
first epoch by a third to three fifths. Here a thread does both while the caller does other work
(reading the data set, hashing it, building the model): the loads are every signature the
cache folder's indexes list for a kernel of this package (what this machine has run before),
and none of it runs inside an epoch.

    initialising = start_numba_init()   # returns at once
    ...                                 # other work
    initialising.join()                 # before the first kernel call that must not wait

Numba's compiler lock serialises this with any other compilation or cache load, so a kernel
called before the join waits for the lock and is correct either way. An error here (a broken
cache folder, say) is left for that first real call to raise with its own traceback.
"""
import importlib
import pkgutil
import threading

import numpy as np
from numba import njit

from ._compile import CACHE


@njit(cache=CACHE)
def _first_value(values):
    return values[0]


def cached_kernels():
    """(dispatcher, signatures) of every cached @njit kernel of this package: the signatures
    its cache index lists for its current code (an entry for older code would compile).
    Numba's internals (its cache index), so imported here: a Numba that moved them only skips
    the preload (_initialise), it cannot break the package's import."""
    from numba.core.caching import FunctionCache
    from numba.core.registry import CPUDispatcher

    package = __name__.rpartition(".")[0]
    found = []
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        module = importlib.import_module(f"{package}.{info.name}")
        for value in vars(module).values():
            if (isinstance(value, CPUDispatcher) and value.py_func.__module__ == module.__name__
                    and isinstance(value._cache, FunctionCache)):
                cache, codegen = value._cache, value.targetctx.codegen()
                keys = cache._cache_file._load_index()
                found.append((value, [key[0] for key in keys if cache._index_key(key[0], codegen) == key]))
    return found


def _initialise():
    try:
        _first_value(np.zeros(1, np.float32))
        for dispatcher, signatures in cached_kernels():
            for signature in signatures:
                dispatcher.compile(signature)  # a cache load: the key is the index's
    except Exception:  # noqa: BLE001 -- the caller's first kernel call reports it
        pass


def start_numba_init():
    """Start Numba's CPU-target initialisation and the cached kernels' loads in a daemon
    thread; returns the thread."""
    thread = threading.Thread(target=_initialise, name="dvae-cupy-numba-init", daemon=True)
    thread.start()
    return thread
