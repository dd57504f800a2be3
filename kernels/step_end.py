"""The end of a training step: its loss added to the epoch's sum, its counters advanced, all in
device memory so that a CUDA-graph replay needs no host work.

  finish_step(recon (R,), kl (B,), loss_sum float64[1], counter uint64[1], adam_step int64[1])
      loss_sum[0] += float64(mean(recon) + mean(kl))
      counter[0] += 1      (the Philox counter of the next step's noise; uint64, wraps at 2**64)
      adam_step[0] += 1    (Adam's 1-based step of the next update)

The CPU twin is NumPy's own arithmetic, np.float64(recon.mean() + kl.mean()): float32 means
(NumPy's pairwise float32 sums, divided in float64 and rounded to float32, as ndarray.mean does),
added in float32, then widened, exactly what the trainer accumulated before this op existed. It
sums with np.add.reduce (ndarray.mean's own sum) and does the rest in one @njit call: mean()'s
Python wrapper and two np.add calls cost 40 us of a 2 ms N = 1 step in the training loop.
The CUDA kernel is one block of THREADS threads: each thread adds a strided slice of recon and
of kl in float64, two float64 shared-memory tree sums (kernels/_reduce.py) give the totals, and
thread 0, after both sums, adds float64(sum_recon / R + sum_kl / B) to loss_sum and advances
the counters. float64 throughout:
more accurate than the CPU's float32 means, so the two agree to float32 rounding (~1e-7
relative), not bit for bit. R and B must be >= 1 (a mean of nothing is not a loss).

  float32_mean       scalar body: ndarray.mean's float32 result from its float32 sum
  add_step_loss      CPU @njit: the loss from the two sums, added; the counters advanced
  finish_step        CPU twin: the two NumPy sums, then add_step_loss
  finish_step_kernel CUDA, one block
  finish_step_cuda   launcher, (..., stream=None): see kernels/_cuda.py
"""
import numba
import numpy as np
from numba import types

from ._checks import check_array, check_scalar_array
from ._compile import CACHE
from ._cuda import as_device_view, cuda, current_stream
from ._reduce import block_sum

__all__ = ["finish_step", "finish_step_cuda", "THREADS", "CUDA_KERNELS"]

THREADS = 256  # a power of two (the tree sum); R = B*M and B are a few hundred at most

_ONE_U64 = np.uint64(1)  # typed constants: uint64 + a literal int would be float64 in Numba
_ONE_I64 = np.int64(1)


def _check(recon, kl, loss_sum, counter, adam_step, device=False):
    check_array("recon", recon, np.float32, ndim=1)
    check_array("kl", kl, np.float32, ndim=1)
    if recon.shape[0] < 1 or kl.shape[0] < 1:
        raise ValueError(f"recon and kl must each hold at least one value, got shapes "
                         f"{tuple(recon.shape)} and {tuple(kl.shape)}")
    check_scalar_array("loss_sum", loss_sum, np.float64, device)
    check_scalar_array("counter", counter, np.uint64, device)
    check_scalar_array("adam_step", adam_step, np.int64, device)


@numba.njit(inline="always")
def float32_mean(total, count):
    """ndarray.mean of `count` float32 values summing to `total` (float32): NumPy divides the
    float32 sum by an intp count, which promotes to float64, then rounds back to float32."""
    return np.float32(np.float64(total) / count)


@numba.njit(cache=CACHE)
def add_step_loss(recon_sum, recon_count, kl_sum, kl_count, loss_sum, counter, adam_step):
    """loss_sum[0] += float64(mean(recon) + mean(kl)) from the float32 sums (the float32 add is
    the trainer's); the counters advanced (uint64 + uint64 wraps at 2**64 without a warning)."""
    loss_sum[0] += np.float64(float32_mean(recon_sum, recon_count) + float32_mean(kl_sum, kl_count))
    counter[0] += _ONE_U64
    adam_step[0] += _ONE_I64


def finish_step(recon, kl, loss_sum, counter, adam_step):
    """loss_sum[0] += float64(recon.mean() + kl.mean()); counter[0] += 1; adam_step[0] += 1, on
    NumPy arrays."""
    _check(recon, kl, loss_sum, counter, adam_step)
    add_step_loss(np.add.reduce(recon), recon.shape[0], np.add.reduce(kl), kl.shape[0], loss_sum,
                  counter, adam_step)


@cuda.jit
def finish_step_kernel(recon, kl, loss_sum, counter, adam_step):
    t = cuda.threadIdx.x
    partial = 0.0
    for i in range(t, recon.shape[0], THREADS):
        partial += np.float64(recon[i])
    scratch = cuda.shared.array(THREADS, numba.float64)
    recon_sum = block_sum(scratch, partial)
    cuda.syncthreads()  # every thread has read scratch[0] before the second sum overwrites it
    partial = 0.0
    for i in range(t, kl.shape[0], THREADS):
        partial += np.float64(kl[i])
    kl_sum = block_sum(scratch, partial)
    if t == 0:
        loss_sum[0] += recon_sum / recon.shape[0] + kl_sum / kl.shape[0]
        counter[0] += _ONE_U64
        adam_step[0] += _ONE_I64


_VEC = types.float32[::1]
CUDA_KERNELS = [
    (finish_step_kernel, [(_VEC, _VEC, types.float64[::1], types.uint64[::1],
                           types.int64[::1])]),
]


def finish_step_cuda(recon, kl, loss_sum, counter, adam_step, stream=None):
    """CUDA twin of finish_step on CuPy/Numba device arrays (NumPy under the simulator);
    launched on `stream`, else CuPy's current stream. Does not synchronise."""
    _check(recon, kl, loss_sum, counter, adam_step, device=True)
    stream = current_stream() if stream is None else stream
    finish_step_kernel[1, THREADS, stream](as_device_view(recon), as_device_view(kl),
                                           as_device_view(loss_sum), as_device_view(counter),
                                           as_device_view(adam_step))
