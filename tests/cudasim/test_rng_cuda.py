"""kernels/rng.py's CUDA twins under the CUDA simulator, against the CPU twins.

How to write a simulator test (every tests/cudasim/test_<op>_cuda.py follows this one):
- the folder is collected only with NUMBA_ENABLE_CUDASIM=1; tests/test_cuda_simulator.py runs it
  in a child process, or run it directly: NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cudasim
- call the module's launcher (op_cuda) with NumPy arrays: the simulator treats host arrays as
  device arrays and the kernel's writes land in them; current_stream() is 0 here
- per-step scalars (counters, Adam's step, eps) are 1-element NumPy arrays here
- keep shapes small (each thread is a Python thread: a few thousand threads a second), and
  include n = 1 and an n that is not a multiple of the block size (a partly idle last block)
- compare integer outputs exactly, float outputs with a tolerance (math written in a kernel
  itself runs in float64 under the simulator, where the GPU uses float32 libdevice)
- a "launches nothing" test patches the module's kernel with tests/launches.py's recorder and
  checks both that the empty call records no launch and that a non-empty call records one
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
from launches import record_launches

SEED = 0xDEADBEEF_0BADF00D  # both key words nonzero
COUNTER = 0x1_00000003  # both counter words nonzero

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


def counter(value):
    return np.array([value], np.uint64)


def test_philox_bits_cuda_known_answer():
    # elements 0..3 of stream (seed 0, counter 0) are Philox(counter 0, key 0)
    out = np.zeros(6, dtype=np.uint32)
    rng.philox_bits_cuda(0, counter(0), out)
    np.testing.assert_array_equal(out[:4], KNOWN_ANSWERS[0, 6:])


def test_plumbing_under_simulator():
    assert current_stream() == 0
    a = np.zeros(3, dtype=np.float32)
    assert as_device_view(a) is a
    assert launch_1d(300) == (2, 256)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_philox_bits_cuda_equal_cpu(shape):
    got = np.zeros(shape, dtype=np.uint32)
    rng.philox_bits_cuda(SEED, counter(COUNTER), got)
    expected = np.empty(shape, dtype=np.uint32)
    rng.philox_bits(SEED, counter(COUNTER), expected)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gumbel_noise_cuda_matches_cpu(shape):
    got = np.full(shape, np.nan, dtype=np.float32)
    rng.gumbel_noise_cuda(SEED, counter(COUNTER), got)
    expected = np.empty(shape, dtype=np.float32)
    rng.gumbel_noise(SEED, counter(COUNTER), expected)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_counter_is_read_at_each_launch():
    # what a graph replay sees: the counter's value at the launch (advanced between launches),
    # never written by the op; a given stream is used as is
    c = counter(7)
    got = np.zeros(300, dtype=np.uint32)
    previous = None
    for value in (7, 8, 2**64 - 1):
        c[0] = value
        rng.philox_bits_cuda(SEED, c, got, stream=0)
        expected = np.empty(300, dtype=np.uint32)
        rng.philox_bits(SEED, counter(value), expected)
        np.testing.assert_array_equal(got, expected)
        assert int(c[0]) == value
        if previous is not None:
            assert np.count_nonzero(got == previous) <= 1  # another stream
        previous = got.copy()


@pytest.mark.parametrize("op, dtype", [("philox_bits", np.uint32), ("gumbel_noise", np.float32)])
def test_empty_output_launches_nothing(monkeypatch, op, dtype):
    launches = record_launches(monkeypatch, rng, op + "_kernel")
    getattr(rng, op + "_cuda")(SEED, counter(1), np.empty((0, 3), dtype))
    assert launches == []
    getattr(rng, op + "_cuda")(SEED, counter(1), np.empty((1, 3), dtype))
    assert len(launches) == 1  # the recorder does stand in for the kernel
