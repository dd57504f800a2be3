"""The on-disk cache of the CPU kernels' compiled code, correct across edits.

Numba's own cache (cache=True) checks only the source file of the function it compiled, so an
edit to a scalar body it inlined from another file (fastmath_f32.py's exp, rng.py's Philox)
would leave a stale machine-code cache in use. Here every cached kernel compiles into a folder
named by a digest of all of kernels/'s sources, the installed package's version and Numba's:
an installed package compiles once per machine, and any edit to any kernel file compiles anew
into a new folder. Each process marks its folder as used (a `last-used` file's time); a process
that makes a new folder removes the other digests' folders that no process has used for
STALE_DAYS, and any beyond the KEEP_FOLDERS most recently used, but none used within the last
IN_USE_SECONDS (an upgrade, or a developer's edits, would otherwise leave a few MB behind each
time). A removed folder only costs a process that wants it later a compilation.

    DVAE_CUPY_CACHE_DIR     where the folders go (default: $XDG_CACHE_HOME/dvae_cupy or
                            ~/.cache/dvae_cupy)
    DVAE_CUPY_KERNEL_CACHE  0 turns caching off (every process compiles, as Numba does by default);
                            so does a folder that cannot be written

kernels/__init__.py imports every kernel module inside `caching_into(CACHE_FOLDER)`, so
Numba picks the folder when it decorates each function (its locator reads numba.config.CACHE_DIR
then) and other packages' caches are left where they were. CUDA kernels are not cached here:
they compile lazily at their first launch, on a GPU only.
"""
import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numba
from numba.core import config

KERNELS = Path(__file__).resolve().parent
STALE_DAYS = 30
KEEP_FOLDERS = 8                 # the folder in use included
IN_USE_SECONDS = 3600            # never removed within an hour of a process's start there
USED_MARKER = "last-used"
FOLDER_NAME = re.compile(r"kernels-[0-9a-f]{20}")


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


def open_cache_dir(folder):
    """Mark `folder` (a kernel_cache_dir()) as used now, making it if need be, and when it is new
    remove the stale folders beside it. Returns `folder`, or None where it cannot be written."""
    try:
        new = not folder.is_dir()
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()    # writable, as Numba will test it
        with contextlib.suppress(OSError):            # another user's marker in a shared cache
            (folder / USED_MARKER).touch(mode=0o666)
    except OSError:
        return None
    if new:
        try:
            remove_stale_folders(folder.parent, keep=folder)
        except OSError:     # a tidy-up: it never stops the kernels from loading
            pass
    return folder


def usable_cache_dir():
    """The folder the kernels cache into, marked as used (open_cache_dir), or None: caching is
    off (DVAE_CUPY_KERNEL_CACHE=0) or the folder cannot be written. Then every process compiles:
    without a folder set, Numba would cache beside the sources, where an edit to another file
    is not noticed."""
    if os.environ.get("DVAE_CUPY_KERNEL_CACHE", "1") == "0":
        return None
    return open_cache_dir(kernel_cache_dir())


def last_used(folder):
    """When a process last used `folder`: its marker's time, else (folders made before the
    marker) the folder's own, which moves whenever Numba adds a subfolder."""
    marker = folder / USED_MARKER
    return (marker if marker.exists() else folder).stat().st_mtime


def remove_stale_folders(base, keep, now=None):
    """Remove base's kernel-cache folders other than `keep` that were last used more than
    STALE_DAYS ago, or that are not among the KEEP_FOLDERS most recently used (`keep` counts as
    one), except those a process started in within IN_USE_SECONDS (it may be compiling into
    one now). Only real folders named kernels-<20 hex digits> are touched: never a link, a
    file or anything else a user keeps there."""
    now = time.time() if now is None else now
    others = []
    for path in base.iterdir():
        if path != keep and FOLDER_NAME.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
            try:
                others.append((last_used(path), path.name, path))
            except OSError:                         # removed meanwhile by another process
                pass
    others.sort(reverse=True)                       # the most recently used first
    for index, (used, _, path) in enumerate(others):
        in_use = now - used < IN_USE_SECONDS  # a process started lately may be writing there
        if not in_use and (index >= KEEP_FOLDERS - 1 or now - used > STALE_DAYS * 86400):
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def caching_into(folder):
    """Numba functions decorated with cache=True inside this block cache into `folder` (None:
    leave Numba's setting as it is; the kernels then have cache=False)."""
    if folder is None:
        yield
        return
    previous = config.CACHE_DIR
    config.CACHE_DIR = str(folder)
    try:
        yield
    finally:
        config.CACHE_DIR = previous


CACHE_FOLDER = usable_cache_dir()    # once per process, when kernels/ is first imported
CACHE = CACHE_FOLDER is not None     # the kernels' cache= flag
