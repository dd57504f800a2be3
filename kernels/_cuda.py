"""Shared CUDA plumbing for the kernel modules: launch shape, stream, device-array views.

The pattern every module in kernels/ follows (kernels/rng.py is the worked example):

1. Scalar bodies. The per-element (or per-row) arithmetic is a function decorated
   ``numba.njit(inline='always')`` that takes and returns scalars only. The same body is then
   called from the CPU ``@numba.njit`` loop, from the CUDA kernel, under the CUDA simulator and
   by ``numba.cuda.compile_ptx``. No arrays in or out: the simulator cannot hand arrays to @njit
   code. Keep every integer in one type (e.g. uint64 with ``np.uint64`` constants): Numba types
   ``uint64 op int64`` as float64.
   Device-only helpers that need CUDA intrinsics (threadIdx, shared arrays, syncthreads) are
   ``@cuda.jit(device=True, inline='always')``: without inline='always' compile_ptx needs a GPU
   (CudaSupportError at driver init), and an @njit body that uses ``cuda.*`` fails under the
   simulator (it runs @njit bodies compiled for the CPU).
2. CPU twin: ``op_flat(args..., out)`` is ``@numba.njit`` and loops over a 1-D ``out`` (other
   @njit code may call it); ``op(args..., out)`` is a plain Python front with exactly the
   launcher's arguments: it casts scalars as the launcher does and passes ``flat_view(out)``.
   Decorate the @njit functions Python calls with ``cache=CACHE`` (from kernels/_compile.py):
   they cache into a folder keyed by a digest of all kernel sources, which notices edits to
   scalar bodies imported from other files (Numba's own cache would not).
3. CUDA twin: ``op_kernel`` is ``@cuda.jit`` WITHOUT a signature, so it compiles lazily at the
   first launch and the package imports on machines with no GPU. One thread per element,
   bounds-checked against ``out.size``.
4. Launcher: ``op_cuda(args..., out, stream=None)`` takes a CuPy array (on a GPU), a NumPy array
   (under the simulator) or an already wrapped Numba device array; it flattens with
   ``flat_view``, wraps with ``as_device_view``, casts scalars to the exact types registered in
   CUDA_KERNELS (e.g. ``np.uint64(seed)``) and launches ``kernel[launch_1d(n) + (stream,)]`` on
   ``current_stream()`` unless a stream is given. It returns nothing and never synchronises.
5. Registry: the module defines ``CUDA_KERNELS = [(kernel, [signature, ...]), ...]`` listing
   every ``@cuda.jit`` kernel it defines with the Numba signatures the project launches it with
   (float32[::1] arrays, int32 indices, uint32/uint64 seeds). tests/test_ptx.py compiles each to
   PTX for sm_80 and sm_90 and fails if a module-level kernel is missing from the list.
6. Tests: tests/test_<op>.py compares the CPU twin to the float64 reference;
   tests/cudasim/test_<op>_cuda.py runs the launcher under NUMBA_ENABLE_CUDASIM=1 on NumPy
   arrays (small n, including n = 1 and n not a multiple of the block size) and compares with
   the CPU twin; real-GPU tests are marked ``@pytest.mark.gpu`` and skip without CuPy.

This module holds only the helpers those launchers share; it defines no kernels.

Launch costs it keeps down (docs: /work/shared/DESIGN.md, "GPU launch overhead"): one Numba
stream wrapper per CuPy stream (current_stream), one device-array view per persistent buffer
(as_device_view), and no low-occupancy warning per launch (below).
"""
import functools
import os

from numba import config
from numba import cuda  # importable with no GPU; re-exported for the kernel modules
from numba.cuda.core import config as cuda_config

# Our grids are small by design (one block per row of a batch of 100, one block for a scalar
# update), and numba-cuda warns (NumbaPerformanceWarning, "Grid size N will likely result in GPU
# under-utilization") on every launch of fewer than 128 blocks. The one switch for it is
# numba-cuda's CUDA_LOW_OCCUPANCY_WARNINGS, read at each launch: set here, once, for the process.
# The variable is set too, so that numba-cuda's config reload (on a change of NUMBA_* variables)
# keeps it off; NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=1 in the environment turns the warning back on.
os.environ.setdefault("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "0")
cuda_config.CUDA_LOW_OCCUPANCY_WARNINGS = int(os.environ["NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS"])

__all__ = ["cuda", "launch_1d", "current_stream", "as_device_view", "flat_view", "cupy_usable"]

DEFAULT_THREADS = 256


def launch_1d(n, threads=DEFAULT_THREADS):
    """(blocks, threads) covering n elements, one thread each; at least one block."""
    return max(1, (int(n) + threads - 1) // threads), threads


@functools.lru_cache(maxsize=None)
def cupy_usable():
    """True when CuPy imports and sees a GPU, and the simulator is off (it takes host arrays)."""
    if config.ENABLE_CUDASIM:
        return False
    try:
        import cupy
    except ImportError:
        return False
    try:
        return bool(cupy.is_available())
    except Exception:  # a broken driver/runtime install reads as "no GPU"
        return False


def current_stream():
    """Numba stream for CuPy's current stream, so our launches order with CuPy's work (and join a
    CUDA-graph capture on it); 0 (Numba's default stream) without CuPy, e.g. under the simulator.
    CuPy's null stream has ptr 0 and is the legacy default stream, which is what 0 means here.
    The wrapper is made once per (device, stream pointer) and reused (see _stream_wrapper)."""
    if not cupy_usable():
        return 0
    import cupy

    stream = cupy.cuda.get_current_stream()
    return _stream_wrapper(stream.device_id, stream.ptr) if stream.ptr else 0


_STREAM_CACHE_SIZE = 64  # a run uses one or two streams (eager, graph capture)
_stream_wrappers = {}


def _stream_wrapper(device_id, ptr):
    """numba.cuda.external_stream(ptr), made once: making one costs a context lookup and a Python
    object per launch. An external stream only names the handle (Numba never destroys it), so a
    wrapper stays right for as long as that handle is a stream, also one that CuPy made anew at
    a freed stream's address. Bounded, oldest out first, for programs that make many streams."""
    key = (device_id, ptr)
    wrapper = _stream_wrappers.get(key)
    if wrapper is None:
        wrapper = cuda.external_stream(ptr)
        if len(_stream_wrappers) >= _STREAM_CACHE_SIZE:
            _stream_wrappers.pop(next(iter(_stream_wrappers)))
        _stream_wrappers[key] = wrapper
    return wrapper


def as_device_view(array):
    """A Numba device-array view of a CuPy array, made without a stream sync; NumPy arrays (the
    simulator's inputs) and Numba device arrays come back unchanged. Passing CuPy arrays to a
    launch re-converts them every time (slowly, and with a stream sync by default), so views of
    the model's persistent buffers are made once and kept (see _cached_view)."""
    if config.ENABLE_CUDASIM or getattr(array, "__cuda_ndarray__", False):
        return array
    interface = getattr(array, "__cuda_array_interface__", None)
    if interface is None:
        return array  # a host array: only the simulator accepts it, and it needs no wrapping
    key = (interface["data"][0], interface["shape"], interface["strides"], interface["typestr"])
    return _cached_view(key, array)


# A run's persistent buffers (parameters, gradients and Adam moments with their per-array views,
# and the named work arrays of one batch size) come to about 100 (pointer, shape) keys; 256
# holds a training and an evaluation batch size at once. Past that the oldest views go, so that
# views of transient arrays cannot pin more than 256 arrays' memory (1024 pinned ~320 MB of
# batch temporaries at batch 100).
_VIEW_CACHE_SIZE = 256


_views = {}  # insertion-ordered: least recently used first


def _cached_view(key, array):
    """The view for (pointer, shape, strides, dtype). A view holds its CuPy array, so the memory
    cannot be freed and reused under a cached key; the cache is bounded (oldest out first) so
    that transient arrays are released."""
    view = _views.pop(key, None)
    if view is None:
        view = cuda.as_cuda_array(array, sync=False)
        if len(_views) >= _VIEW_CACHE_SIZE:
            _views.pop(next(iter(_views)))
    _views[key] = view  # re-inserted: most recently used last
    return view


def flat_view(array):
    """The 1-D C-order view of a contiguous NumPy, CuPy or Numba device array (never a copy:
    a kernel writing into a copy would silently lose its output)."""
    if not array.flags["C_CONTIGUOUS"]:
        raise ValueError("kernel output must be C-contiguous, got strides %s" % (array.strides,))
    if len(array.shape) == 1:
        return array  # already flat (the model's flat buffers): a reshape costs 0.4 us a call
    return array.reshape(array.size)
