"""Counter-based random numbers: Philox4x32-10 and the Gumbel(0, 1) noise of the training step.

Every random number is a pure function of (seed, counter, element index i), so the CPU and the
GPU produce the same bits, in any launch shape, with no generator state to carry or checkpoint:
  Philox counter = (i // 4 low 32 bits, i // 4 high 32 bits, counter low, counter high)
  key            = (seed low 32 bits, seed high 32 bits)
  bits           = word i % 4 of Philox4x32-10(Philox counter, key)
Callers that need two independent fills in one step must give them different seeds (e.g. a
stream id folded into the seed), never overlapping index ranges of one fill.

`counter` is always a 1-element 1-D uint64 array (NumPy for the CPU twins and the simulator,
CuPy/Numba device array on the GPU) that the kernel reads at run time: a CUDA graph bakes scalar
arguments in at capture, so a counter that moves between replays must live in memory (it is
advanced by kernels/step_end.py's finish_step). The seed is a plain number.

  philox4x32_10(c0..c3, k0, k1)   scalar body: the 4 output words (Random123's algorithm)
  philox_block(seed, counter, b)  scalar body: the 4 words of elements 4b .. 4b + 3
  philox_word(seed, counter, i)   scalar body: the 32-bit word for element i
  gumbel_at(seed, counter, i)     scalar body: float32 Gumbel(0, 1) for element i (also inlined
                                  by argmax.sample_codes' kernel)
  philox_run(seed, counter, out)  CPU body: philox_word for a whole uint32 array, a block per 4
  gumbel_run(seed, counter, out, start, count)
                                  CPU body: gumbel_at for a run of elements, a block per 4
  philox_bits_flat / gumbel_noise_flat       CPU @njit loops over a 1-D uint32 / float32 array
  philox_bits(seed, counter, out)            CPU twins: any shape, any int seed in [0, 2**64)
  gumbel_noise(seed, counter, out)
  philox_bits_kernel / gumbel_noise_kernel   CUDA, one thread per element
  philox_bits_cuda / gumbel_noise_cuda       launchers, (..., stream=None): see kernels/_cuda.py

The raw bits agree exactly on every target; Gumbel values may differ by an ulp between CPU libm
and CUDA libdevice, so compare those with a tolerance (and expect rare arg max ties to differ).
NumPy's Philox is the 4x64 variant and CuPy's depends on the device: neither matches this one.
"""
import math

import numba
import numpy as np
from numba import types

from ._compile import CACHE
from ._checks import check_array, check_scalar_array
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
def philox_block(seed, counter, block):
    """The 4 words (as uint64) of elements 4*block .. 4*block + 3 of the stream (seed, counter)."""
    seed = np.uint64(seed)
    counter = np.uint64(counter)
    block = np.uint64(block)
    return philox4x32_10(block & _MASK32, block >> _SHIFT32, counter & _MASK32,
                         counter >> _SHIFT32, seed & _MASK32, seed >> _SHIFT32)


@numba.njit(inline="always")
def philox_word(seed, counter, i):
    """The 32-bit word (as uint64) for element i of the stream (seed, counter)."""
    x0, x1, x2, x3 = philox_block(seed, counter, np.uint64(i) >> np.uint64(2))
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
def gumbel_at(seed, counter, i):
    """Gumbel(0, 1) float32 noise for element i of the stream (seed, counter)."""
    return gumbel_from_bits(philox_word(seed, counter, i))


@numba.njit(inline="always")
def philox_run(seed, counter, out):
    """out[j] = philox_word(seed, counter, j) for the whole 1-D uint32 `out`, for the CPU loops:
    one Philox block per 4 words, the full blocks' stores written out, so that LLVM vectorises
    the blocks (philox_word per element makes a block per word and keeps one)."""
    full = out.size - out.size % 4
    for first in range(0, full, 4):
        x0, x1, x2, x3 = philox_block(seed, counter, first // 4)
        out[first] = x0
        out[first + 1] = x1
        out[first + 2] = x2
        out[first + 3] = x3
    if full < out.size:
        words = philox_block(seed, counter, full // 4)
        for w in range(out.size - full):
            out[full + w] = words[w]


@numba.njit(inline="always")
def gumbel_run(seed, counter, out, start, count):
    """out[start + j] = gumbel_at(seed, counter, j) for 0 <= j < count, for the CPU loops: one
    Philox block per 4 values, where gumbel_at makes a block per value and keeps one of its
    words (the noise of an N = 1 step: 36 -> 19 us on the CPU; a GPU thread makes one value).
    The full blocks' four stores are written out: a loop over the words ran 1.2x slower."""
    full = count - count % 4
    for first in range(0, full, 4):
        x0, x1, x2, x3 = philox_block(seed, counter, first // 4)
        out[start + first] = gumbel_from_bits(x0)
        out[start + first + 1] = gumbel_from_bits(x1)
        out[start + first + 2] = gumbel_from_bits(x2)
        out[start + first + 3] = gumbel_from_bits(x3)
    if full < count:
        words = philox_block(seed, counter, full // 4)
        for w in range(count - full):
            out[start + full + w] = gumbel_from_bits(words[w])


# ---------------------------------------------------------------------------------------------
# CPU twins: an @njit loop over a 1-D array (callable from other @njit code), and a Python front
# with the launcher's signature that casts the seed (Numba cannot type a Python int >= 2**63),
# checks the counter and takes the flat view (an error, not a silent copy, for a non-contiguous
# array). The counter is read inside the loop's @njit code, never on the host.
# cache=CACHE: the on-disk cache keyed by all kernel sources (kernels/_compile.py).

@numba.njit(cache=CACHE)
def philox_bits_flat(seed, counter, out):
    """out[i] = Philox word i of (seed, counter[0]), for 1-D uint32 `out`."""
    philox_run(seed, counter[0], out)


@numba.njit(cache=CACHE)
def gumbel_noise_flat(seed, counter, out):
    """out[i] = Gumbel(0, 1) noise for element i of (seed, counter[0]), for 1-D float32 `out`."""
    gumbel_run(seed, counter[0], out, 0, out.size)


def _check_fill(counter, out, dtype, device=False):
    check_scalar_array("counter", counter, np.uint64, device)
    check_array("out", out, dtype)
    return flat_view(out)


def philox_bits(seed, counter, out):
    """Fill uint32 NumPy `out` (any shape, C-contiguous) with the raw Philox words of
    (seed, counter[0]); `counter` a 1-element uint64 NumPy array."""
    philox_bits_flat(np.uint64(seed), counter, _check_fill(counter, out, np.uint32))


def gumbel_noise(seed, counter, out):
    """Fill float32 NumPy `out` (any shape, C-contiguous) with Gumbel(0, 1) noise of
    (seed, counter[0]); `counter` a 1-element uint64 NumPy array."""
    gumbel_noise_flat(np.uint64(seed), counter, _check_fill(counter, out, np.float32))


# ---------------------------------------------------------------------------------------------
# CUDA twins: one thread per element of the flat array, each reading counter[0]

@cuda.jit
def philox_bits_kernel(seed, counter, out):
    """out[i] = Philox word i of (seed, counter[0])."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = np.uint32(philox_word(seed, counter[0], i))


@cuda.jit
def gumbel_noise_kernel(seed, counter, out):
    """out[i] = Gumbel(0, 1) noise for element i of (seed, counter[0])."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = gumbel_at(seed, counter[0], i)


_COUNTER = types.uint64[::1]
CUDA_KERNELS = [
    (philox_bits_kernel, [(types.uint64, _COUNTER, types.uint32[::1])]),
    (gumbel_noise_kernel, [(types.uint64, _COUNTER, types.float32[::1])]),
]


def _launch_flat(kernel, seed, counter, out, dtype, stream):
    flat = _check_fill(counter, out, dtype, device=True)
    if flat.size == 0:
        return
    blocks, threads = launch_1d(flat.size)
    stream = current_stream() if stream is None else stream
    kernel[blocks, threads, stream](np.uint64(seed), as_device_view(counter), as_device_view(flat))


def philox_bits_cuda(seed, counter, out, stream=None):
    """CUDA twin of philox_bits: `out` a uint32 CuPy/Numba device array (NumPy under the
    simulator), `counter` a 1-element uint64 device array read by the kernel; launched on
    `stream`, else CuPy's current stream. Does not synchronise."""
    _launch_flat(philox_bits_kernel, seed, counter, out, np.uint32, stream)


def gumbel_noise_cuda(seed, counter, out, stream=None):
    """CUDA twin of gumbel_noise: `out` a float32 CuPy/Numba device array (NumPy under the
    simulator), `counter` a 1-element uint64 device array read by the kernel; launched on
    `stream`, else CuPy's current stream. Does not synchronise."""
    _launch_flat(gumbel_noise_kernel, seed, counter, out, np.float32, stream)
