"""Block-wide sum for the row-reduction kernels (one CUDA block per row): a shared-memory tree.

  block_sum(scratch, value)   called from a kernel: the sum of `value` over the block's threads

The caller allocates the scratch in its kernel, ``cuda.shared.array(THREADS, numba.float32)``,
with THREADS a module-level power of two, and launches exactly THREADS threads per block (the
tree halves scratch.shape[0]). Every thread of the block must call it (it synchronises), and no
thread may have returned early. The result is visible to every thread; a second call on the same
scratch must come after a cuda.syncthreads() so no thread still reads scratch[0] when it is
overwritten. A tree sum of a few hundred float32 partials loses ~log2(THREADS) roundings, far
below the 1e-5 the kernels are held to, so no float64 is needed on the GPU.

It is ``@cuda.jit(device=True, inline='always')``, as kernels/_cuda.py prescribes for helpers
that use CUDA intrinsics: it takes an array, so it cannot be an @njit scalar body (the simulator
runs @njit code compiled for the CPU, where cuda.* does not exist), and without inline='always'
compile_ptx of a calling kernel asks the driver for the device's compute capability and fails on
a machine with no GPU.

No warp shuffles: the simulator has none, and at these sizes the tree is cheap next to the
launch.
"""
from ._cuda import cuda

__all__ = ["block_sum"]


@cuda.jit(device=True, inline="always")
def block_sum(scratch, value):
    """Sum of `value` over the threads of a block of scratch.shape[0] (a power of two) threads."""
    t = cuda.threadIdx.x
    scratch[t] = value
    cuda.syncthreads()
    stride = scratch.shape[0] // 2
    while stride > 0:
        if t < stride:
            scratch[t] += scratch[t + stride]
        cuda.syncthreads()
        stride //= 2
    return scratch[0]

