"""kernels/rng.py's CUDA twins under the CUDA simulator, against the CPU twins.

How to write a simulator test (every tests/cudasim/test_<op>_cuda.py follows this one):
- the folder is collected only with NUMBA_ENABLE_CUDASIM=1; tests/test_cuda_simulator.py runs it
  in a child process, or run it directly: NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cudasim
- call the module's launcher (op_cuda) with NumPy arrays: the simulator treats host arrays as
  device arrays and the kernel's writes land in them; current_stream() is 0 here
- keep shapes small (each thread is a Python thread: a few thousand threads a second), and
  include n = 1 and an n that is not a multiple of the block size (a partly idle last block)
- compare integer outputs exactly, float outputs with a tolerance (math written in a kernel
  itself runs in float64 under the simulator, where the GPU uses float32 libdevice)
- a CUDA-vs-CPU comparison cannot see a bug in the scalar body both twins share: also check the
  CUDA path against something independent (here Random123's known answers)
Inside a simulated kernel the @njit scalar bodies run compiled for the CPU, so these tests check
indexing, bounds and launch plumbing; tests/test_ptx.py checks that the device compiler accepts
the same code.
"""
import numpy as np
import pytest

from dvae_cupy.kernels import rng
from dvae_cupy.kernels._cuda import as_device_view, cuda, current_stream, launch_1d

SEED = 0xDEADBEEF_0BADF00D  # both key words nonzero
STEP = 0x1_00000003  # both step words nonzero

# 1: one thread; 300: two blocks, the second partly idle; (7, 13): a 2-D output through the flat view
SHAPES = [(1,), (300,), (7, 13)]


KNOWN_ANSWERS = np.array([  # Random123 kat_vectors: counter[4], key[2] -> output[4]
    [0, 0, 0, 0, 0, 0, 0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8],
    [0xFFFFFFFF] * 6 + [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD],
    [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344, 0xA4093822, 0x299F31D0,
     0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1],
], dtype=np.uint32)


@cuda.jit
def _philox_known_answer_kernel(cases, out):
    # test-only kernel: the scalar body inside a CUDA kernel, one case per thread
    t = cuda.grid(1)
    if t < cases.shape[0]:
        x0, x1, x2, x3 = rng.philox4x32_10(cases[t, 0], cases[t, 1], cases[t, 2], cases[t, 3],
                                           cases[t, 4], cases[t, 5])
        out[t, 0] = x0
        out[t, 1] = x1
        out[t, 2] = x2
        out[t, 3] = x3


def test_philox_known_answers_in_kernel():
    out = np.zeros((len(KNOWN_ANSWERS), 4), dtype=np.uint32)
    _philox_known_answer_kernel[1, 32](KNOWN_ANSWERS, out)
    np.testing.assert_array_equal(out, KNOWN_ANSWERS[:, 6:])


def test_philox_bits_cuda_known_answer():
    # elements 0..3 of stream (seed 0, step 0) are Philox(counter 0, key 0)
    out = np.zeros(6, dtype=np.uint32)
    rng.philox_bits_cuda(0, 0, out)
    np.testing.assert_array_equal(out[:4], KNOWN_ANSWERS[0, 6:])


def test_plumbing_under_simulator():
    assert current_stream() == 0
    a = np.zeros(3, dtype=np.float32)
    assert as_device_view(a) is a
    assert launch_1d(300) == (2, 256)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_philox_bits_cuda_equal_cpu(shape):
    got = np.zeros(shape, dtype=np.uint32)
    rng.philox_bits_cuda(SEED, STEP, got)
    expected = np.empty(shape, dtype=np.uint32)
    rng.philox_bits(SEED, STEP, expected)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gumbel_noise_cuda_matches_cpu(shape):
    got = np.full(shape, np.nan, dtype=np.float32)
    rng.gumbel_noise_cuda(SEED, STEP, got)
    expected = np.empty(shape, dtype=np.float32)
    rng.gumbel_noise(SEED, STEP, expected)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_kernel_with_explicit_stream_and_other_stream_ids():
    # a given stream is used as is; (seed, step) select different streams
    a = np.zeros(50, dtype=np.uint32)
    b = np.zeros(50, dtype=np.uint32)
    rng.philox_bits_cuda(1, 0, a, stream=0)
    rng.philox_bits_cuda(1, 1, b, stream=0)
    assert np.count_nonzero(a == b) <= 1


def test_launch_of_1000_elements():
    # the brief's size: four blocks, the last partly idle
    got = np.zeros(1000, dtype=np.float32)
    rng.gumbel_noise_cuda(7, 3, got)
    expected = np.empty(1000, dtype=np.float32)
    rng.gumbel_noise(7, 3, expected)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# The step as a 1-element uint64 array read by the kernel, and the counter advanced on the device


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_step_array_launchers_equal_cpu(shape):
    step = np.array([STEP], dtype=np.uint64)
    bits = np.zeros(shape, dtype=np.uint32)
    rng.philox_bits_cuda(SEED, step, bits)
    expected_bits = np.empty(shape, dtype=np.uint32)
    rng.philox_bits(SEED, STEP, expected_bits)
    np.testing.assert_array_equal(bits, expected_bits)

    noise = np.full(shape, np.nan, dtype=np.float32)
    rng.gumbel_noise_cuda(SEED, step, noise)
    expected_noise = np.empty(shape, dtype=np.float32)
    rng.gumbel_noise(SEED, step, expected_noise)  # the CPU twin with the array too
    np.testing.assert_allclose(noise, expected_noise, rtol=1e-5, atol=1e-6)
    by_int = np.full(shape, np.nan, dtype=np.float32)
    rng.gumbel_noise_cuda(SEED, STEP, by_int)
    np.testing.assert_array_equal(noise, by_int)  # the same kernel arithmetic: identical
    assert int(step[0]) == STEP  # read, not written


@pytest.mark.parametrize("dtype", [np.uint64, np.int64])
def test_advance_counter_cuda(dtype):
    start = 2**53 + 1  # a float64 detour (uint64 + int literal) would lose the + 1
    counter = np.array([start], dtype=dtype)
    rng.advance_counter_cuda(counter)
    rng.advance_counter_cuda(counter, stream=0)
    assert counter.dtype == dtype and int(counter[0]) == start + 2


def test_replayed_sequence_matches_int_steps():
    # what a graph replay does: fill from the counter, then advance it on the device
    counter = np.array([7], dtype=np.uint64)
    got = np.zeros(300, dtype=np.uint32)
    for step in (7, 8, 9):
        rng.philox_bits_cuda(SEED, counter, got)
        expected = np.empty(300, dtype=np.uint32)
        rng.philox_bits(SEED, step, expected)
        np.testing.assert_array_equal(got, expected)
        rng.advance_counter_cuda(counter)
    assert int(counter[0]) == 10
