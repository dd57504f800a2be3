"""kernels/rng.py on the CPU: Philox4x32-10 against Random123's known answers and an independent
vectorised NumPy Philox; Gumbel noise against float64 from the same bits, and its distribution.
The CUDA twins are checked under the simulator (tests/cudasim/test_rng_cuda.py), compiled to PTX
(tests/test_ptx.py) and, where a GPU is present, on it (test_cuda_matches_cpu_on_gpu below).
"""
import math

import numpy as np
import pytest

from dvae_cupy.kernels import rng
from dvae_cupy.kernels import _cuda
from dvae_cupy.kernels._cuda import cupy_usable, launch_1d
from launches import as_if_no_gpu, covers, record_launches, registered

# ---------------------------------------------------------------------------------------------
# Independent NumPy Philox4x32-10 (uint64 arrays holding 32-bit words)

M32 = np.uint64(0xFFFFFFFF)


def numpy_philox4x32_10(ctr, key):
    """ctr: 4 uint64 arrays, key: 2 uint64 arrays (32-bit values). Returns 4 uint64 arrays."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) & M32 for c in ctr)
    k0, k1 = (np.asarray(k, dtype=np.uint64) & M32 for k in key)
    for r in range(10):
        if r:
            k0 = (k0 + np.uint64(0x9E3779B9)) & M32
            k1 = (k1 + np.uint64(0xBB67AE85)) & M32
        p0 = np.uint64(0xD2511F53) * c0
        p1 = np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & M32,
                          (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & M32)
    return c0, c1, c2, c3


def numpy_philox_words(seed, counter, idx):
    """The documented stream layout: word i % 4 of Philox(counter(i // 4, step), key(seed))."""
    idx = np.asarray(idx, dtype=np.uint64)
    seed, counter = np.uint64(seed), np.uint64(counter)
    block = idx >> np.uint64(2)
    ones = np.ones_like(idx)
    words = numpy_philox4x32_10(
        (block & M32, block >> np.uint64(32), ones * (counter & M32),
         ones * (counter >> np.uint64(32))),
        (ones * (seed & M32), ones * (seed >> np.uint64(32))))
    return np.choose((idx & np.uint64(3)).astype(np.intp), words).astype(np.uint32)


def float64_gumbel(bits):
    u = ((bits.astype(np.uint64) >> np.uint64(9)).astype(np.float64) + 0.5) * 2.0 ** -23
    return -np.log(-np.log(u))


# (seed, counter) pairs: small, and with both high words set to exercise every counter/key word
STREAMS = [(0, 0), (12345, 7), (0xDEADBEEF_0BADF00D, 0x1_00000003)]


def counter(value):
    return np.array([value], np.uint64)


# ---------------------------------------------------------------------------------------------
# Philox


@pytest.mark.parametrize("ctr, key, expected", [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
], ids=["zeros", "ones", "pi"])
def test_philox_known_answers(ctr, key, expected):
    assert tuple(int(w) for w in rng.philox4x32_10(*ctr, *key)) == expected
    words = numpy_philox4x32_10([np.uint64(c) for c in ctr], [np.uint64(k) for k in key])
    assert tuple(int(w) for w in words) == expected  # the test's own Philox is right too


@pytest.mark.parametrize("seed, step", STREAMS)
def test_philox_bits_match_numpy(seed, step):
    n = 4099  # not a multiple of 4: the last Philox block is partly used
    out = np.empty(n, dtype=np.uint32)
    rng.philox_bits(seed, counter(step), out)
    np.testing.assert_array_equal(out, numpy_philox_words(seed, step, np.arange(n)))


def test_philox_word_high_counter_words():
    # indices past 2**34 put bits in the counter's second word; too large to fill an array
    idx = np.array([2**32 - 1, 2**32, 2**34 + 5, 2**40 + 2, 2**63 + 1], dtype=np.uint64)
    seed, step = STREAMS[2]
    got = [rng.philox_word(np.uint64(seed), np.uint64(step), np.uint64(i)) for i in idx]
    np.testing.assert_array_equal(np.array(got, dtype=np.uint32), numpy_philox_words(seed, step, idx))


def test_streams_differ():
    n = 1000
    outs = {}
    for seed, step in [(1, 0), (1, 1), (2, 0), (2**32 + 1, 0), (1, 2**32)]:
        outs[seed, step] = np.empty(n, dtype=np.uint32)
        rng.philox_bits(seed, counter(step), outs[seed, step])
    keys = list(outs)
    for a in range(len(keys)):
        for b in range(a + 1, len(keys)):
            # independent 32-bit streams agree on ~n / 2**32 positions
            assert np.count_nonzero(outs[keys[a]] == outs[keys[b]]) <= 1, (keys[a], keys[b])


def test_same_stream_is_reproducible_in_any_shape():
    flat = np.empty(6 * 7 * 5, dtype=np.uint32)
    cube = np.empty((6, 7, 5), dtype=np.uint32)
    rng.philox_bits(9, counter(4), flat)
    rng.philox_bits(9, counter(4), cube)
    np.testing.assert_array_equal(cube.ravel(), flat)


def test_counter_is_read_at_each_call():
    # the value in the array at the call decides the stream, exactly (2**53 + k: no float detour);
    # the op reads the counter and never writes it
    c = counter(2**53 + 1)
    bits = np.empty(50, np.uint32)
    noise = np.empty(50, np.float32)
    for value in (2**53 + 1, 2**53 + 2, 2**64 - 1):
        c[0] = value
        rng.philox_bits(3, c, bits)
        np.testing.assert_array_equal(bits, numpy_philox_words(3, value, np.arange(50)))
        rng.gumbel_noise(3, c, noise)
        np.testing.assert_allclose(noise, float64_gumbel(bits), rtol=1e-6, atol=1e-6)
        assert int(c[0]) == value


# ---------------------------------------------------------------------------------------------
# Gumbel


@pytest.mark.parametrize("seed, step", STREAMS)
def test_gumbel_matches_float64_from_same_bits(seed, step):
    n = 5003
    g = np.empty(n, dtype=np.float32)
    rng.gumbel_noise(seed, counter(step), g)
    expected = float64_gumbel(numpy_philox_words(seed, step, np.arange(n)))
    # two float32 logs: ~1e-7 relative each; atol covers g near 0 (u near 1/e)
    np.testing.assert_allclose(g, expected, rtol=1e-6, atol=1e-6)


def test_gumbel_extreme_bits_are_finite():
    lo = rng.gumbel_from_bits(np.uint32(0))
    hi = rng.gumbel_from_bits(np.uint32(0xFFFFFFFF))
    assert np.isfinite(lo) and np.isfinite(hi)
    assert lo == pytest.approx(-math.log(-math.log(2.0 ** -24)), rel=1e-6)  # -2.81
    assert hi == pytest.approx(-math.log(-math.log1p(-(2.0 ** -24))), rel=1e-6)  # 16.6


def test_gumbel_distribution():
    stats = pytest.importorskip("scipy.stats")
    g = np.empty((1000, 1000), dtype=np.float32)  # any shape: filled through the flat view
    rng.gumbel_noise(2024, counter(11), g)
    assert g.dtype == np.float32 and np.isfinite(g).all()
    x = g.ravel().astype(np.float64)
    n = x.size
    # standard errors: mean sqrt(pi^2/6 / n) = 1.3e-3; variance sqrt((mu4 - s^4) / n) = 3.4e-3
    assert abs(x.mean() - np.euler_gamma) < 6e-3
    assert abs(x.var() - np.pi ** 2 / 6) < 2e-2
    ks = stats.kstest(x, "gumbel_r")
    assert ks.pvalue > 1e-3, ks  # a fixed seed: deterministic, not flaky
    assert ks.statistic < 2.0 / math.sqrt(n)


# ---------------------------------------------------------------------------------------------
# The fronts: checks, launch types


OPS = ["philox_bits", "gumbel_noise", "philox_bits_cuda", "gumbel_noise_cuda"]


def out_for(op, shape=8):
    return np.zeros(shape, np.uint32 if op.startswith("philox") else np.float32)


@pytest.mark.parametrize("op", OPS)
def test_non_contiguous_output_is_rejected(op):
    out = out_for(op, (10, 10))[:, ::2]
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        getattr(rng, op)(1, counter(1), out)


@pytest.mark.parametrize("op", OPS)
def test_output_of_the_wrong_dtype_is_rejected(op):
    out = np.zeros(8, np.float64)
    with pytest.raises(ValueError, match="out must be"):
        getattr(rng, op)(1, counter(1), out)


BAD_COUNTERS = [3, np.uint64(3), np.zeros(1, np.int64), np.zeros(1, np.uint32),
                np.zeros(1, np.float64), np.zeros(2, np.uint64), np.zeros((1, 1), np.uint64),
                np.zeros((), np.uint64)]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("bad", BAD_COUNTERS, ids=repr)
def test_bad_counters_are_named(op, bad):
    out = out_for(op)
    with pytest.raises(ValueError, match="counter must be a 1-element 1-D uint64 array"):
        getattr(rng, op)(1, bad, out)  # raises before any launch: no GPU needed
    assert not out.any()


def test_launchers_refuse_host_counters_on_a_gpu(monkeypatch):
    # with a GPU in use, Numba would copy a NumPy array to the device and back: a hidden sync
    monkeypatch.setattr(_cuda, "cupy_usable", lambda: True)
    with pytest.raises(ValueError, match="counter must be a device array"):
        rng.gumbel_noise_cuda(1, counter(0), np.zeros(4, np.float32))


@pytest.mark.parametrize("op, dtype", [("philox_bits", np.uint32), ("gumbel_noise", np.float32)])
def test_launch_arguments_type_as_registered(monkeypatch, op, dtype):
    # what the launchers pass (an np.uint64 seed, the uint64 counter array, a 1-D C-contiguous
    # output) is what test_ptx compiles, on a grid covering every element
    name = op + "_kernel"
    launches = record_launches(monkeypatch, rng, name)
    as_if_no_gpu(monkeypatch)
    getattr(rng, op + "_cuda")(0xDEADBEEF_0BADF00D, counter(2**40 + 3), np.empty((3, 100), dtype),
                               stream=0)
    (config, launched), = launches
    assert launched in registered(rng)[name], (name, launched)
    assert covers(config, 300)


def test_launch_1d():
    assert launch_1d(1) == (1, 256)
    assert launch_1d(256) == (1, 256)
    assert launch_1d(257) == (2, 256)
    assert launch_1d(0) == (1, 256)
    assert launch_1d(1000, threads=128) == (8, 128)


# ---------------------------------------------------------------------------------------------
# Real GPU (runs wherever CuPy sees one)


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_usable(), reason="needs CuPy and a CUDA GPU")
def test_cuda_matches_cpu_on_gpu():
    import cupy

    seed = 0xDEADBEEF_0BADF00D
    for shape in [(1,), (1000,), (33, 257), (100, 20, 10)]:
        bits = cupy.empty(shape, dtype=cupy.uint32)
        noise = cupy.empty(shape, dtype=cupy.float32)
        d_counter = cupy.array([5], dtype=cupy.uint64)
        rng.philox_bits_cuda(seed, d_counter, bits)
        rng.gumbel_noise_cuda(seed, d_counter, noise)
        cpu_bits = np.empty(shape, dtype=np.uint32)
        cpu_noise = np.empty(shape, dtype=np.float32)
        rng.philox_bits(seed, counter(5), cpu_bits)
        rng.gumbel_noise(seed, counter(5), cpu_noise)
        np.testing.assert_array_equal(cupy.asnumpy(bits), cpu_bits)
        np.testing.assert_allclose(cupy.asnumpy(noise), cpu_noise, rtol=2e-6, atol=2e-6)
        # the counter is read on the device at each launch
        d_counter[...] = 2**53 + 1
        rng.philox_bits_cuda(seed, d_counter, bits)
        rng.philox_bits(seed, counter(2**53 + 1), cpu_bits)
        np.testing.assert_array_equal(cupy.asnumpy(bits), cpu_bits)
    kat = cupy.zeros(4, dtype=cupy.uint32)
    rng.philox_bits_cuda(0, cupy.zeros(1, cupy.uint64), kat)  # Philox(counter 0, key 0)
    assert [int(w) for w in cupy.asnumpy(kat)] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    # the launchers compile exactly the signatures registered for the PTX test
    for kernel, sigs in rng.CUDA_KERNELS:
        registered_sigs = {tuple(s) for s in sigs}
        assert set(kernel.overloads) <= registered_sigs, (kernel, list(kernel.overloads))
