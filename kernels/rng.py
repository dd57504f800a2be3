"""Counter-based random numbers: Philox4x32-10 and the Gumbel(0, 1) noise of the training step.

Every random number is a pure function of (seed, step, element index i), so the CPU and the GPU
produce the same bits, in any launch shape, with no generator state to carry or checkpoint:
  counter = (i // 4 low 32 bits, i // 4 high 32 bits, step low, step high)
  key     = (seed low 32 bits, seed high 32 bits)
  bits    = word i % 4 of Philox4x32-10(counter, key)
Callers that need two independent fills in one step must give them different seeds (e.g. a
stream id folded into the seed), never overlapping index ranges of one fill.

  philox4x32_10(c0..c3, k0, k1)  scalar body: the 4 output words (Random123's algorithm)
  philox_word(seed, step, i)     scalar body: the 32-bit word for element i
  gumbel_at(seed, step, i)       scalar body: float32 Gumbel(0, 1) for element i
  philox_bits_flat / gumbel_noise_flat       CPU @njit loops over a 1-D uint32 / float32 array
  philox_bits / gumbel_noise                 CPU twins of the launchers: any shape, any int seed
  philox_bits_kernel / gumbel_noise_kernel   CUDA, one thread per element
  philox_bits_cuda / gumbel_noise_cuda       launchers (see kernels/_cuda.py for the pattern)

The raw bits agree exactly on every target; Gumbel values may differ by an ulp between CPU libm
and CUDA libdevice, so compare those with a tolerance (and expect rare arg max ties to differ).
NumPy's Philox is the 4x64 variant and CuPy's depends on the device: neither matches this one.
"""
import math

import numba
import numpy as np
from numba import types

from ._cuda import as_device_view, cuda, current_stream, flat_view, launch_1d

# ---------------------------------------------------------------------------------------------
# Philox4x32-10 (Salmon et al., SC'11; constants from Random123's philox.h)
# All words are uint64 holding 32-bit values: 32x32-bit products are exact in 64 bits, so the
# high/low halves are a shift and a mask. Every constant is np.uint64 because Numba types
# uint64 <op> int64 as float64.

_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_M0 = np.uint64(0xD2511F53)  # multipliers
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)  # Weyl key increments (golden ratio, sqrt(3) - 1)
_W1 = np.uint64(0xBB67AE85)


@numba.njit(inline="always")
def _philox_round(c0, c1, c2, c3, k0, k1):
    p0 = _M0 * c0  # hi/lo of a 32x32 product: exact in uint64
    p1 = _M1 * c2
    return ((p1 >> _SHIFT32) ^ c1 ^ k0, p1 & _MASK32,
            (p0 >> _SHIFT32) ^ c3 ^ k1, p0 & _MASK32)


@numba.njit(inline="always")
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of counter (c0, c1, c2, c3) under key (k0, k1): four 32-bit words as uint64."""
    c0 = np.uint64(c0) & _MASK32
    c1 = np.uint64(c1) & _MASK32
    c2 = np.uint64(c2) & _MASK32
    c3 = np.uint64(c3) & _MASK32
    k0 = np.uint64(k0) & _MASK32
    k1 = np.uint64(k1) & _MASK32
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1)
    for _ in range(9):  # 10 rounds, the key bumped before each of the last 9
        k0 = (k0 + _W0) & _MASK32
        k1 = (k1 + _W1) & _MASK32
        c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1)
    return c0, c1, c2, c3


@numba.njit(inline="always")
def philox_word(seed, step, i):
    """The 32-bit word (as uint64) for element i of the stream (seed, step)."""
    seed = np.uint64(seed)
    step = np.uint64(step)
    block = np.uint64(i) >> np.uint64(2)
    x0, x1, x2, x3 = philox4x32_10(block & _MASK32, block >> _SHIFT32,
                                   step & _MASK32, step >> _SHIFT32,
                                   seed & _MASK32, seed >> _SHIFT32)
    word = np.uint64(i) & np.uint64(3)
    if word == 0:
        return x0
    if word == 1:
        return x1
    if word == 2:
        return x2
    return x3


# ---------------------------------------------------------------------------------------------
# Gumbel(0, 1) from 32 random bits
# u = (top 23 bits + 1/2) / 2**23 lies in [2**-24, 1 - 2**-24] and is exact in float32 (at most
# 24 significant bits). With 24 bits, (2**24 - 1 + 1/2) / 2**24 = 1 - 2**-25 would round to 1.0.
# Hence log(u) is finite and strictly negative (u != 1 and log is accurate to an ulp, far from
# underflow: |log(1 - 2**-24)| ~ 6e-8), -log(u) lies in [6e-8, 16.7], and
# g = -log(-log(u)) lies in [-2.82, 16.7]: never inf or nan.

_HALF = np.float32(0.5)
_INV_2_23 = np.float32(2.0 ** -23)


@numba.njit(inline="always")
def gumbel_from_bits(bits):
    """Standard Gumbel float32 from a 32-bit word (held in any unsigned integer)."""
    u = (np.float32(np.uint64(bits) >> np.uint64(9)) + _HALF) * _INV_2_23
    return np.float32(-math.log(-math.log(u)))


@numba.njit(inline="always")
def gumbel_at(seed, step, i):
    """Gumbel(0, 1) float32 noise for element i of the stream (seed, step)."""
    return gumbel_from_bits(philox_word(seed, step, i))


# ---------------------------------------------------------------------------------------------
# CPU twins: an @njit loop over a 1-D array (callable from other @njit code), and a Python front
# with the launcher's signature that casts the seeds (Numba cannot type a Python int >= 2**63)
# and takes the flat view (an error, not a silent copy, for a non-contiguous array).
# No cache=True: Numba's cache would not notice a change to a scalar body imported from elsewhere.

@numba.njit
def philox_bits_flat(seed, step, out):
    """out[i] = Philox word i of (seed, step), for 1-D uint32 `out`."""
    for i in range(out.size):
        out[i] = np.uint32(philox_word(seed, step, i))


@numba.njit
def gumbel_noise_flat(seed, step, out):
    """out[i] = Gumbel(0, 1) noise for element i of (seed, step), for 1-D float32 `out`."""
    for i in range(out.size):
        out[i] = gumbel_at(seed, step, i)


def philox_bits(seed, step, out):
    """Fill uint32 NumPy `out` (any shape, C-contiguous) with the raw Philox words of (seed, step)."""
    philox_bits_flat(np.uint64(seed), np.uint64(step), flat_view(out))


def gumbel_noise(seed, step, out):
    """Fill float32 NumPy `out` (any shape, C-contiguous) with Gumbel(0, 1) noise of (seed, step)."""
    gumbel_noise_flat(np.uint64(seed), np.uint64(step), flat_view(out))


# ---------------------------------------------------------------------------------------------
# CUDA twins: one thread per element of the flat array

@cuda.jit
def philox_bits_kernel(seed, step, out):
    """out[i] = Philox word i of (seed, step)."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = np.uint32(philox_word(seed, step, i))


@cuda.jit
def gumbel_noise_kernel(seed, step, out):
    """out[i] = Gumbel(0, 1) noise for element i of (seed, step)."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = gumbel_at(seed, step, i)


CUDA_KERNELS = [
    (philox_bits_kernel, [(types.uint64, types.uint64, types.uint32[::1])]),
    (gumbel_noise_kernel, [(types.uint64, types.uint64, types.float32[::1])]),
]


def _launch_flat(kernel, seed, step, out, stream):
    flat = flat_view(out)
    if flat.size == 0:
        return
    blocks, threads = launch_1d(flat.size)
    stream = current_stream() if stream is None else stream
    kernel[blocks, threads, stream](np.uint64(seed), np.uint64(step), as_device_view(flat))


def philox_bits_cuda(seed, step, out, stream=None):
    """CUDA twin of philox_bits: `out` is a uint32 CuPy/Numba device array (NumPy under the
    simulator); launched on `stream`, else CuPy's current stream. Does not synchronise."""
    _launch_flat(philox_bits_kernel, seed, step, out, stream)


def gumbel_noise_cuda(seed, step, out, stream=None):
    """CUDA twin of gumbel_noise: `out` is a float32 CuPy/Numba device array (NumPy under the
    simulator); launched on `stream`, else CuPy's current stream. Does not synchronise."""
    _launch_flat(gumbel_noise_kernel, seed, step, out, stream)
