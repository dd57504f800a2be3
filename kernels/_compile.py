"""The on-disk cache of the CPU kernels' compiled code, correct across edits.

Numba's own cache (cache=True) checks only the source file of the function it compiled, so an
edit to a scalar body it inlined from another file (fastmath_f32.py's exp, rng.py's Philox)
would leave a stale machine-code cache in use. Here every cached kernel compiles into a folder
named by a digest of all of kernels/'s sources, the installed package's version and Numba's:
an installed package compiles once per machine, and any edit to any kernel file compiles anew
(into a new folder; old folders stay until removed, a few MB each).

    DVAE_CUPY_CACHE_DIR     where the folders go (default: $XDG_CACHE_HOME/dvae_cupy or
                            ~/.cache/dvae_cupy)
    DVAE_CUPY_KERNEL_CACHE  0 turns caching off (every process compiles, as Numba does by default)

kernels/__init__.py imports every kernel module inside `caching_into(kernel_cache_dir())`, so
Numba picks the folder when it decorates each function (its locator reads numba.config.CACHE_DIR
then) and other packages' caches are left where they were. CUDA kernels are not cached here:
they compile lazily at their first launch, on a GPU only.
"""
import contextlib
import hashlib
import os
from importlib import metadata
from pathlib import Path

import numba
from numba.core import config

CACHE = os.environ.get("DVAE_CUPY_KERNEL_CACHE", "1") != "0"
KERNELS = Path(__file__).resolve().parent


def source_digest():
    """sha256 (hex) of every kernels/*.py (names and bytes), the package's version and Numba's."""
    digest = hashlib.sha256()
    for path in sorted(KERNELS.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    try:
        version = metadata.version("dvae-cupy")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        version = "source"
    digest.update(f"dvae-cupy {version}; numba {numba.__version__}".encode())
    return digest.hexdigest()


def kernel_cache_dir():
    base = os.environ.get("DVAE_CUPY_CACHE_DIR")
    if not base:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dvae_cupy"
    return Path(base) / f"kernels-{source_digest()[:20]}"


@contextlib.contextmanager
def caching_into(folder):
    """Numba functions decorated with cache=True inside this block cache into `folder`."""
    previous = config.CACHE_DIR
    config.CACHE_DIR = str(folder)
    try:
        yield
    finally:
        config.CACHE_DIR = previous
