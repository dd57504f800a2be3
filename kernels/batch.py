"""The training batch: images gathered from the data set by the epoch's order into a persistent
float32 buffer, each pixel turned into a target on the way.

  gather_targets(images uint8 (n,D), order int64 (m,), start, mode, seed, counter uint64[1],
                 out float32 (B,D))
      row i of out is image order[start + i] (start + B <= m), pixel p mapped by `mode`:
        AS_IS      float32(p)                            (data binarised already: 0/1)
        THRESHOLD  1.0 if p >= 128 else 0.0              (the fixed binarisation)
        BERNOULLI  1.0 if u < float32(p) / float32(255) else 0.0, with
                   u = (float32(bits >> 8) + 0.5) * 2**-24 and bits = rng.philox_word(seed,
                   counter[0], i*D + d)                  (dynamic binarisation)
      The BERNOULLI arithmetic is the trainer's former NumPy code (philox_bits into a (B, D)
      array, then the same float32 operations), bit for bit. The caller gives the seed of the
      binarisation stream, kept apart from the Gumbel noise's (e.g. seed ^ a salt).

  bernoulli_target   scalar body: BERNOULLI's target from a pixel and its random bits
  target_value       scalar body: one pixel's target, shared by every target
  bernoulli_targets  CPU body: BERNOULLI's targets, the batch's random words made first
  gather_targets_rows CPU @njit loop over the rows (it also checks each image index first; the
                     CUDA kernel cannot without a sync, so an index outside [0, n) reads out of
                     bounds)
  gather_targets     CPU twin: the launcher's arguments, checked, scalars cast
  gather_targets_kernel  CUDA, one thread per output element
  gather_targets_cuda    launcher, (..., stream=None): see kernels/_cuda.py

Every target computes the same IEEE float32 operations (a conversion, an add, a multiply by a
power of two, a division, a compare), so CPU, GPU and simulator agree bit for bit.
"""
import numba
import numpy as np
from numba import types

from ._compile import CACHE
from ._checks import check_array, check_scalar_array
from ._cuda import as_device_view, cuda, current_stream, launch_1d
from .rng import philox_run, philox_word

__all__ = ["gather_targets", "gather_targets_cuda", "AS_IS", "THRESHOLD", "BERNOULLI", "MODES",
           "CUDA_KERNELS"]

AS_IS, THRESHOLD, BERNOULLI = 0, 1, 2
MODES = {"as is": AS_IS, "threshold": THRESHOLD, "bernoulli": BERNOULLI}

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)
_HALF = np.float32(0.5)
_INV_2_24 = np.float32(2.0 ** -24)
_MAX_PIXEL = np.float32(255.0)
_SHIFT8 = np.uint64(8)
_THRESHOLD = np.uint8(128)


@numba.njit(inline="always")
def bernoulli_target(p, bits):
    """BERNOULLI's float32 target of uint8 pixel p from its 32 random bits."""
    u = (np.float32(bits >> _SHIFT8) + _HALF) * _INV_2_24
    return _ONE if u < np.float32(p) / _MAX_PIXEL else _ZERO


@numba.njit(inline="always")
def target_value(p, mode, seed, counter, i):
    """The float32 target of uint8 pixel p at flat output index i (used by BERNOULLI only)."""
    if mode == AS_IS:
        return np.float32(p)
    if mode == THRESHOLD:
        return _ONE if p >= _THRESHOLD else _ZERO
    return bernoulli_target(p, philox_word(seed, counter, i))


# ---------------------------------------------------------------------------------------------
# Argument checks (shape, dtype and flags only: no device sync)

def _check_gather(images, order, start, mode, seed, counter, out, device=False):
    """(start as int64, mode as int32, seed as uint64) after checking the arguments."""
    check_array("images", images, np.uint8, ndim=2)
    check_array("order", order, np.int64, ndim=1)
    check_array("out", out, np.float32, ndim=2)
    check_scalar_array("counter", counter, np.uint64, device)
    if out.shape[1] != images.shape[1]:
        raise ValueError(f"out must have images' {images.shape[1]} pixels per row, "
                         f"got shape {tuple(out.shape)}")
    if int(start) != start or start < 0 or start + out.shape[0] > order.shape[0]:
        raise ValueError(f"start must be an integer with 0 <= start and start + B <= len(order) "
                         f"= {order.shape[0]} (B = {out.shape[0]}), got {start!r}")
    if mode not in MODES.values():
        raise ValueError(f"mode must be one of {MODES} (batch.AS_IS, THRESHOLD, BERNOULLI), "
                         f"got {mode!r}")
    if int(seed) != seed or not 0 <= seed < 2 ** 64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return np.int64(start), np.int32(mode), np.uint64(seed)


# ---------------------------------------------------------------------------------------------
# CPU twin

@numba.njit(inline="always")
def bernoulli_targets(images, order, start, seed, counter, out):
    """out's BERNOULLI targets: the batch's random words first, in one flat run (rng.philox_run:
    a Philox block per 4 pixels, vectorised), then the targets row by row. The same bits as
    target_value per pixel, ~1.2 -> ~0.1 ms for a batch of 100 MNIST images on the CPU."""
    bits = np.empty(out.size, np.uint32)
    philox_run(seed, counter, bits)
    rows, pixels = out.shape
    for i in range(rows):
        source = images[order[start + i]]
        row = out[i]
        first = i * pixels
        for d in range(pixels):
            row[d] = bernoulli_target(source[d], bits[first + d])


@numba.njit(cache=CACHE)
def gather_targets_rows(images, order, start, mode, seed, counter, out):
    c = counter[0]
    rows, pixels = out.shape
    for i in range(rows):
        image = order[start + i]
        if image < 0 or image >= images.shape[0]:
            raise IndexError("gather_targets: order holds an image index outside [0, n)")
    if mode == BERNOULLI:
        bernoulli_targets(images, order, start, seed, c, out)
        return
    for i in range(rows):
        source = images[order[start + i]]
        row = out[i]
        for d in range(pixels):
            row[d] = target_value(source[d], mode, seed, c, 0)  # the index is BERNOULLI's only


def gather_targets(images, order, start, mode, seed, counter, out):
    """out[i] = the targets of image order[start + i] (see the module docstring); NumPy arrays."""
    start, mode, seed = _check_gather(images, order, start, mode, seed, counter, out)
    gather_targets_rows(images, order, start, mode, seed, counter, out)


# ---------------------------------------------------------------------------------------------
# CUDA twin: one thread per output element, i*D + d: neighbouring threads read neighbouring
# pixels of one image

@cuda.jit
def gather_targets_kernel(images, order, start, mode, seed, counter, out):
    t = cuda.grid(1)
    if t < out.size:
        pixels = out.shape[1]
        i = t // pixels
        d = t - i * pixels
        out[i, d] = target_value(images[order[start + i], d], mode, seed, counter[0], t)


CUDA_KERNELS = [
    (gather_targets_kernel, [(types.uint8[:, ::1], types.int64[::1], types.int64, types.int32,
                              types.uint64, types.uint64[::1], types.float32[:, ::1])]),
]


def gather_targets_cuda(images, order, start, mode, seed, counter, out, stream=None):
    """CUDA twin of gather_targets on CuPy/Numba device arrays (NumPy under the simulator);
    launched on `stream`, else CuPy's current stream. Does not synchronise."""
    start, mode, seed = _check_gather(images, order, start, mode, seed, counter, out, device=True)
    if out.size == 0:
        return
    blocks, threads = launch_1d(out.size)
    stream = current_stream() if stream is None else stream
    gather_targets_kernel[blocks, threads, stream](
        as_device_view(images), as_device_view(order), start, mode, seed,
        as_device_view(counter), as_device_view(out))
