"""Counter-based random numbers: Philox4x32-10 and the Gumbel(0, 1) noise of the training step.

Every random number is a pure function of (seed, step, element index i), so the CPU and the GPU
produce the same bits, in any launch shape, with no generator state to carry or checkpoint:
  counter = (i // 4 low 32 bits, i // 4 high 32 bits, step low, step high)
  key     = (seed low 32 bits, seed high 32 bits)
  bits    = word i % 4 of Philox4x32-10(counter, key)
Callers that need two independent fills in one step must give them different seeds (e.g. a
stream id folded into the seed), never overlapping index ranges of one fill.

`step` is a number, or a 1-element 1-D uint64 array holding it (NumPy for the CPU twins and the
simulator, CuPy/Numba device array on the GPU) that the kernel reads at run time: a CUDA graph
bakes kernel arguments in at capture, so a step that changes between replays must live in device
memory. Both forms give the same bits for the same value. advance_counter(_cuda) adds 1 to such a
counter (uint64 or int64) on the device, e.g. at the end of each replay.

  philox4x32_10(c0..c3, k0, k1)  scalar body: the 4 output words (Random123's algorithm)
  philox_word(seed, step, i)     scalar body: the 32-bit word for element i
  gumbel_at(seed, step, i)       scalar body: float32 Gumbel(0, 1) for element i
  philox_bits_flat / gumbel_noise_flat       CPU @njit loops over a 1-D uint32 / float32 array
  philox_bits / gumbel_noise                 CPU twins of the launchers: any shape, any int seed
  philox_bits_kernel / gumbel_noise_kernel   CUDA, one thread per element
  *_step_array_flat / *_step_array_kernel    the same, reading step from step[0] (1-element uint64)
  philox_bits_cuda / gumbel_noise_cuda       launchers (see kernels/_cuda.py for the pattern)
  advance_counter / advance_counter_cuda     counter[0] += 1 for a 1-element uint64/int64 array
  scalar_array(name, value, dtype, device)   the fronts' check of a scalar given as an array

The raw bits agree exactly on every target; Gumbel values may differ by an ulp between CPU libm
and CUDA libdevice, so compare those with a tolerance (and expect rare arg max ties to differ).
NumPy's Philox is the 4x64 variant and CuPy's depends on the device: neither matches this one.
"""
import math
import numbers

import numba
import numpy as np
from numba import types

from ._cuda import as_device_view, cuda, cupy_usable, current_stream, flat_view, launch_1d

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


@numba.njit
def philox_bits_step_array_flat(seed, step, out):
    """philox_bits_flat with the step read from step[0] (a 1-element uint64 array)."""
    philox_bits_flat(seed, step[0], out)


@numba.njit
def gumbel_noise_step_array_flat(seed, step, out):
    """gumbel_noise_flat with the step read from step[0] (a 1-element uint64 array)."""
    gumbel_noise_flat(seed, step[0], out)


def philox_bits(seed, step, out):
    """Fill uint32 NumPy `out` (any shape, C-contiguous) with the raw Philox words of (seed, step);
    `step` is an int or a 1-element uint64 NumPy array."""
    steps = scalar_array("step", step, np.uint64)
    if steps is None:
        philox_bits_flat(np.uint64(seed), np.uint64(step), flat_view(out))
    else:
        philox_bits_step_array_flat(np.uint64(seed), steps, flat_view(out))


def gumbel_noise(seed, step, out):
    """Fill float32 NumPy `out` (any shape, C-contiguous) with Gumbel(0, 1) noise of (seed, step);
    `step` is an int or a 1-element uint64 NumPy array."""
    steps = scalar_array("step", step, np.uint64)
    if steps is None:
        gumbel_noise_flat(np.uint64(seed), np.uint64(step), flat_view(out))
    else:
        gumbel_noise_step_array_flat(np.uint64(seed), steps, flat_view(out))


# ---------------------------------------------------------------------------------------------
# Scalars given as 1-element arrays (for CUDA graphs: read by the kernel at run time)

def scalar_array(name, value, dtype, device=False):
    """None when `value` is a number (Python or NumPy scalar): the caller passes it by value.
    Otherwise `value` itself, checked to be a 1-element 1-D array of `dtype` (ValueError naming
    `name` if not). Reads only shape and dtype: no device sync. With device=True (the launchers)
    a NumPy array is refused where a GPU is in use (outside the simulator): Numba would copy it
    to the device and back around the launch, a hidden host sync."""
    if isinstance(value, (numbers.Number, np.generic)) or not hasattr(value, "dtype"):
        return None
    dtype = np.dtype(dtype)
    if tuple(value.shape) != (1,) or np.dtype(value.dtype) != dtype:
        raise ValueError(f"{name} given as an array must be a 1-element 1-D {dtype.name} array, "
                         f"got shape {tuple(value.shape)} and dtype {value.dtype}")
    if device and isinstance(value, np.ndarray) and cupy_usable():
        raise ValueError(f"{name} must be a device array (CuPy or Numba) on the GPU, "
                         f"not a NumPy array (its copies would synchronise)")
    return value


_COUNTER_DTYPES = (np.dtype(np.uint64), np.dtype(np.int64))


def _check_counter(counter, device=False):
    dtype = getattr(counter, "dtype", None)
    if dtype is None or isinstance(counter, np.generic) or np.dtype(dtype) not in _COUNTER_DTYPES:
        raise ValueError(f"counter must be a 1-element 1-D uint64 or int64 array, "
                         f"got {type(counter).__name__} of dtype {dtype}")
    scalar_array("counter", counter, dtype, device)


def advance_counter(counter):
    """CPU twin of advance_counter_cuda: counter[0] += 1 in place, for a 1-element 1-D uint64 or
    int64 NumPy array (uint64 wraps at 2**64 as on the GPU)."""
    _check_counter(counter)
    counter += counter.dtype.type(1)


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


@cuda.jit
def philox_bits_step_array_kernel(seed, step, out):
    """philox_bits_kernel with the step read from step[0] at run time."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = np.uint32(philox_word(seed, step[0], i))


@cuda.jit
def gumbel_noise_step_array_kernel(seed, step, out):
    """gumbel_noise_kernel with the step read from step[0] at run time."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = gumbel_at(seed, step[0], i)


@cuda.jit
def advance_counter_kernel(counter, one):
    """counter[0] += one, by one thread. `one` is passed with the counter's type, so the add
    stays in that integer type whatever Numba's rules for mixing uint64 with a literal int
    (float64 in some versions: a large counter would lose its low bits)."""
    if cuda.grid(1) == 0:
        counter[0] += one


_STEP = types.uint64[::1]
CUDA_KERNELS = [
    (philox_bits_kernel, [(types.uint64, types.uint64, types.uint32[::1])]),
    (gumbel_noise_kernel, [(types.uint64, types.uint64, types.float32[::1])]),
    (philox_bits_step_array_kernel, [(types.uint64, _STEP, types.uint32[::1])]),
    (gumbel_noise_step_array_kernel, [(types.uint64, _STEP, types.float32[::1])]),
    (advance_counter_kernel, [(types.uint64[::1], types.uint64), (types.int64[::1], types.int64)]),
]


def _launch_flat(kernel, step_array_kernel, seed, step, out, stream):
    steps = scalar_array("step", step, np.uint64, device=True)
    flat = flat_view(out)
    if flat.size == 0:
        return
    blocks, threads = launch_1d(flat.size)
    stream = current_stream() if stream is None else stream
    if steps is None:
        kernel[blocks, threads, stream](np.uint64(seed), np.uint64(step), as_device_view(flat))
    else:
        step_array_kernel[blocks, threads, stream](np.uint64(seed), as_device_view(steps),
                                                   as_device_view(flat))


def philox_bits_cuda(seed, step, out, stream=None):
    """CUDA twin of philox_bits: `out` is a uint32 CuPy/Numba device array (NumPy under the
    simulator), `step` an int or a 1-element uint64 device array read by the kernel; launched on
    `stream`, else CuPy's current stream. Does not synchronise."""
    _launch_flat(philox_bits_kernel, philox_bits_step_array_kernel, seed, step, out, stream)


def gumbel_noise_cuda(seed, step, out, stream=None):
    """CUDA twin of gumbel_noise: `out` is a float32 CuPy/Numba device array (NumPy under the
    simulator), `step` an int or a 1-element uint64 device array read by the kernel; launched on
    `stream`, else CuPy's current stream. Does not synchronise."""
    _launch_flat(gumbel_noise_kernel, gumbel_noise_step_array_kernel, seed, step, out, stream)


def advance_counter_cuda(counter, stream=None):
    """counter[0] += 1 on the device (one thread) for a 1-element 1-D uint64 or int64 CuPy/Numba
    device array (NumPy under the simulator); launched on `stream`, else CuPy's current stream.
    Does not synchronise: a CUDA graph can run it at the end of each replay."""
    _check_counter(counter, device=True)
    stream = current_stream() if stream is None else stream
    advance_counter_kernel[1, 1, stream](as_device_view(counter), counter.dtype.type(1))
