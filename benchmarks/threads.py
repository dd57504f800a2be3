"""Thread counts of a benchmark, put in the environment before NumPy (its BLAS), Numba and torch
load: they read these variables once, at import."""
import os

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def set_thread_count(environ, threads):
    """Every thread variable of `environ` (os.environ, or a child's env dict) set to `threads`."""
    for name in THREAD_VARIABLES:
        environ[name] = str(threads)


def pin_threads(argv, default=None):
    """The value after `--threads` in argv, else `default`, set in os.environ (nothing is set
    when both are absent); returns it as an int, or None."""
    threads = argv[argv.index("--threads") + 1] if "--threads" in argv else default
    if threads is None:
        return None
    set_thread_count(os.environ, threads)
    return int(threads)
