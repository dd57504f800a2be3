"""The on-disk kernel cache (kernels/_compile.py) is correct across edits: a second process loads
the compiled code, and editing a scalar body in ANOTHER file than the cached kernel's (the case
Numba's own cache misses) compiles afresh and changes the result. Run on a copy of kernels/ in a
temporary folder, in child processes."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from dvae_cupy.kernels import _compile

KERNELS = Path(__file__).resolve().parent.parent / "kernels"
PROGRAM = """
import numpy as np
from kernels_copy import bce
out = np.linspace(-3, 3, 64, dtype=np.float32).reshape(2, 32)
sums = np.zeros(2, np.float32)
bce.softplus_row_sums(out, np.zeros(32, np.float32), sums)
print(repr(sums.tolist()))
"""


def run(tmp_path):
    env = dict(os.environ, DVAE_CUPY_CACHE_DIR=str(tmp_path / "cache"), NUMBA_DEBUG_CACHE="1",
               PYTHONPATH=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    loaded = "data loaded" in result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1], loaded, sorted(p.name for p in (tmp_path / "cache").iterdir())


def test_an_edit_in_another_file_compiles_afresh(tmp_path):
    shutil.copytree(KERNELS, tmp_path / "kernels_copy", ignore=shutil.ignore_patterns("__pycache__"))
    first, loaded, folders = run(tmp_path)
    assert not loaded and len(folders) == 1
    second, loaded, again = run(tmp_path)
    assert loaded and second == first and again == folders   # the second process compiles nothing
    body = tmp_path / "kernels_copy" / "fastmath_f32.py"      # softplus_row_sums is in bce.py
    source = body.read_text()
    edited = source.replace("    return s2 + (s2 * z) * q", "    return s2 + (s2 * z) * q + np.float32(0.25)")
    assert edited != source
    body.write_text(edited)
    third, loaded, after = run(tmp_path)
    assert not loaded and len(after) == 2 and third != first


PRELOAD = """
import numpy as np
from kernels_copy import _numba_init, bce
def loaded():
    return {d.py_func.__name__: len(d.overloads) for d, _ in _numba_init.cached_kernels()}
before = loaded()
_numba_init.start_numba_init().join()
after = loaded()
out = np.linspace(-3, 3, 64, dtype=np.float32).reshape(2, 32)
sums = np.zeros(2, np.float32)
bce.softplus_row_sums(out, np.zeros(32, np.float32), sums)
print(repr((before, after, loaded(), sums.tolist())))
"""


def test_the_start_up_thread_loads_what_the_cache_holds(tmp_path):
    """kernels/_numba_init.py: a process whose cache is warm has every cached kernel's machine
    code loaded by the thread, before its first call, which then loads and compiles nothing."""
    shutil.copytree(KERNELS, tmp_path / "kernels_copy", ignore=shutil.ignore_patterns("__pycache__"))
    first, _, _ = run(tmp_path)  # fills the cache: softplus_row_sums' kernel
    env = dict(os.environ, DVAE_CUPY_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", PRELOAD], env=env, capture_output=True,
                            text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    before, after, after_call, sums = eval(result.stdout.strip().splitlines()[-1])
    assert not any(before.values())
    assert after["softplus_row_sum"] == 1 and after["_first_value"] == 1
    assert after_call == after                 # the first call found its code loaded
    assert repr(sums) == first


def _cache_folder(base, name, days_ago, marker=True):
    folder = base / name
    (folder / "kernels_0123").mkdir(parents=True)
    used = time.time() - days_ago * 86400
    if marker:
        (folder / _compile.USED_MARKER).touch()
        os.utime(folder / _compile.USED_MARKER, (used, used))
    os.utime(folder, (used, used))
    return folder


def test_a_new_cache_folder_removes_the_stale_ones_and_nothing_else(tmp_path):
    """_compile.open_cache_dir: the folders unused for STALE_DAYS go, and those beyond the
    KEEP_FOLDERS most recently used; a link, a file, other names and a fresh folder stay."""
    base = tmp_path / "cache"
    stale = _cache_folder(base, "kernels-" + "a" * 20, days_ago=_compile.STALE_DAYS + 1)
    unmarked = _cache_folder(base, "kernels-" + "b" * 20, days_ago=_compile.STALE_DAYS + 5, marker=False)
    recent = [_cache_folder(base, f"kernels-{i:020x}", days_ago=i + 1) for i in range(_compile.KEEP_FOLDERS)]
    mine = _cache_folder(base, "notes", days_ago=400)          # not a cache folder's name
    (base / ("kernels-" + "c" * 20)).write_text("a file")
    linked = tmp_path / "elsewhere"
    (linked / "kernels_0123").mkdir(parents=True)
    (base / ("kernels-" + "d" * 20)).symlink_to(linked)
    old = time.time() - 400 * 86400
    os.utime(base / ("kernels-" + "d" * 20), (old, old), follow_symlinks=False)

    new = base / ("kernels-" + "e" * 20)
    assert _compile.open_cache_dir(new) == new
    assert (new / _compile.USED_MARKER).exists()
    left = {p.name for p in base.iterdir()}
    assert stale.name not in left and unmarked.name not in left
    # with the new folder, the KEEP_FOLDERS - 1 most recently used stay; the oldest goes
    assert {p.name for p in recent[:-1]} <= left and recent[-1].name not in left
    assert {mine.name, "kernels-" + "c" * 20, "kernels-" + "d" * 20} <= left
    assert (linked / "kernels_0123").is_dir()

    # opening a folder that exists marks it used and removes nothing
    _cache_folder(base, "kernels-" + "f" * 20, days_ago=_compile.STALE_DAYS + 1)
    os.utime(new / _compile.USED_MARKER, (old, old))
    assert _compile.open_cache_dir(new) == new
    assert (base / ("kernels-" + "f" * 20)).is_dir()
    assert time.time() - (new / _compile.USED_MARKER).stat().st_mtime < 60


def test_a_cache_folder_that_cannot_be_written_turns_caching_off(tmp_path):
    """Rather than Numba's fallback beside the sources (blind to edits in other files)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert _compile.open_cache_dir(blocker / ("kernels-" + "0" * 20)) is None
    env = dict(os.environ, DVAE_CUPY_CACHE_DIR=str(blocker / "cache"))
    result = subprocess.run([sys.executable, "-c", "from dvae_cupy.kernels import _compile, bce; "
                             "print(_compile.CACHE, type(bce.softplus_row_sum._cache).__name__)"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "NullCache"]    # Numba's cache=False


def test_folders_used_within_the_hour_are_never_removed(tmp_path):
    """A process that started in one lately may still be compiling into it."""
    base = tmp_path / "cache"
    busy = [_cache_folder(base, f"kernels-{i:020x}", days_ago=(i + 1) / (24 * 60))  # i+1 minutes
            for i in range(_compile.KEEP_FOLDERS + 2)]
    _compile.open_cache_dir(base / ("kernels-" + "e" * 20))
    assert all(folder.is_dir() for folder in busy)
