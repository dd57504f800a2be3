"""The on-disk kernel cache (kernels/_compile.py) is correct across edits: a second process loads
the compiled code, and editing a scalar body in ANOTHER file than the cached kernel's (the case
Numba's own cache misses) compiles afresh and changes the result. Run on a copy of kernels/ in a
temporary folder, in child processes."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

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
