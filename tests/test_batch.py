"""kernels/batch.py on the CPU: gather_targets against the trainer's former NumPy code (the
sequence it replaces: fancy-index the images, then astype / a threshold / Philox bits turned
into Bernoulli draws), bit for bit, in each mode; and the draws' frequencies against p / 255.
The CUDA twin runs under the simulator (tests/cudasim/test_batch_cuda.py), compiles to PTX
(tests/test_ptx.py) and, where a GPU is present, is compared here.
"""
import inspect

import numpy as np
import pytest

from dvae_cupy.kernels import _cuda, batch, rng
from dvae_cupy.kernels._cuda import cupy_usable
from launches import as_if_no_gpu, covers, record_launches, registered

SALT = 0xB1_7A_12E  # the trainer's binarisation salt (any seed will do: the op takes the seed)


def counter(value):
    return np.array([value], np.uint64)


def gathered(images, order, start, mode, seed, step, batch_size):
    out = np.full((batch_size, images.shape[1]), np.nan, np.float32)
    batch.gather_targets(images, order, start, mode, seed, counter(step), out)
    return out


def former_targets(images, rows, mode, seed, step):
    """The trainer's code before this op (Trainer.to_float32 on images[rows])."""
    pixels = images[rows]
    if mode == batch.AS_IS:
        return pixels.astype(np.float32)
    if mode == batch.THRESHOLD:
        return (pixels >= 128).astype(np.float32)
    bits = np.empty(pixels.shape, dtype=np.uint32)
    rng.philox_bits(seed, counter(step), bits)
    uniform = ((bits >> 8).astype(np.float32) + 0.5) * np.float32(2.0 ** -24)
    return (uniform < pixels.astype(np.float32) / 255).astype(np.float32)


def grey_images(n, D, seed=0):
    images = np.random.default_rng(seed).integers(0, 256, size=(n, D)).astype(np.uint8)
    edges = np.array([0, 127, 128, 255], np.uint8)  # the threshold's edges and the extremes
    images.ravel()[:min(4, images.size)] = edges[:images.size]
    return images


# (n images, B, D, start): the model's batch of 100 x 784 from a 1000-image set at the end of the
# order; one image of one pixel; B not a multiple of anything
CASES = [(1000, 100, 784, 900), (1000, 100, 784, 0), (1, 1, 1, 0), (10, 7, 13, 3)]


@pytest.mark.parametrize("mode", [batch.AS_IS, batch.THRESHOLD, batch.BERNOULLI],
                         ids=["as-is", "threshold", "bernoulli"])
@pytest.mark.parametrize("n, B, D, start", CASES, ids=str)
def test_gather_targets_is_the_former_trainer_code_bit_for_bit(n, B, D, start, mode):
    images = grey_images(n, D, seed=n + D)
    if mode == batch.AS_IS:
        images = (images >= 128).astype(np.uint8)  # binarised data sets store 0/1
    order = np.random.default_rng(B).permutation(n).astype(np.int64)
    for seed, step in [(0 ^ SALT, 0), (12345 ^ SALT, 7), (2**63 + 5, 2**33 + 1)]:
        got = gathered(images, order, start, mode, seed, step, B)
        expected = former_targets(images, order[start:start + B], mode, seed, step)
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_bernoulli_targets_have_the_pixel_probabilities():
    # every grey level 256 times per draw, 40 draws: the frequency of 1 is p / 255 within 5 sigma
    images = np.repeat(np.arange(256, dtype=np.uint8)[None], 256, axis=0)
    order = np.arange(256, dtype=np.int64)
    ones = sum(gathered(images, order, 0, batch.BERNOULLI, 99, step, 256) for step in range(40))
    frequency = ones.sum(axis=0) / (40 * 256)
    p = np.arange(256) / 255
    assert frequency[0] == 0 and frequency[255] == 1
    np.testing.assert_array_less(np.abs(frequency - p), 5 * np.sqrt(p * (1 - p) / 10240) + 1e-12)


def test_bernoulli_draws_change_with_the_counter_and_the_seed():
    images = np.full((3, 500), 128, np.uint8)
    order = np.arange(3, dtype=np.int64)
    a = gathered(images, order, 0, batch.BERNOULLI, 1, 5, 3)
    b = gathered(images, order, 0, batch.BERNOULLI, 1, 6, 3)
    c = gathered(images, order, 0, batch.BERNOULLI, 2, 5, 3)
    assert 0.3 < np.mean(a != b) < 0.7 and 0.3 < np.mean(a != c) < 0.7


def test_order_index_out_of_range_is_refused_on_the_cpu():
    images = np.zeros((4, 3), np.uint8)
    out = np.zeros((2, 3), np.float32)
    for bad in (4, -1):
        with pytest.raises(IndexError, match="outside"):
            batch.gather_targets(images, np.array([0, bad], np.int64), 0, batch.AS_IS, 0,
                                 counter(0), out)


ARGS = ["images", "order", "start", "mode", "seed", "counter", "out"]


def valid_args(n=5, m=5, D=4, B=3, start=2):
    return dict(images=np.zeros((n, D), np.uint8), order=np.arange(m, dtype=np.int64),
                start=start, mode=batch.BERNOULLI, seed=1, counter=counter(0),
                out=np.zeros((B, D), np.float32))


BAD_ARGS = [
    ("images", np.zeros((5, 4), np.float32), "images must be uint8"),
    ("images", np.zeros(20, np.uint8), "images must be 2-D"),
    ("order", np.arange(5, dtype=np.int32), "order must be int64"),
    ("order", np.zeros((5, 1), np.int64), "order must be 1-D"),
    ("order", np.arange(10, dtype=np.int64)[::2], "order must be C-contiguous"),
    ("out", np.zeros((3, 4), np.float64), "out must be float32"),
    ("out", np.zeros((3, 5), np.float32), "out must have images' 4 pixels"),
    ("start", 3, "start"),  # 3 + 3 > 5
    ("start", -1, "start"),
    ("start", 1.5, "start"),
    ("mode", 3, "mode must be one of"),
    ("seed", -1, "seed"),
    ("seed", 2**64, "seed"),
    ("counter", 0, "counter must be a 1-element 1-D uint64 array"),
    ("counter", np.zeros(1, np.int64), "counter must be a 1-element 1-D uint64 array"),
]


@pytest.mark.parametrize("op", [batch.gather_targets, batch.gather_targets_cuda],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("bad", BAD_ARGS, ids=lambda b: f"{b[0]}-{b[2][:20]}")
def test_bad_arguments_are_named(op, bad):
    name, value, match = bad
    args = valid_args()
    args[name] = value
    with pytest.raises(ValueError, match=match):
        op(*[args[n] for n in ARGS])  # raises before any launch: no GPU needed


def test_cpu_twin_and_launcher_take_the_same_arguments():
    assert list(inspect.signature(batch.gather_targets).parameters) == ARGS
    assert list(inspect.signature(batch.gather_targets_cuda).parameters) == ARGS + ["stream"]


def test_launcher_refuses_a_host_counter_on_a_gpu(monkeypatch):
    monkeypatch.setattr(_cuda, "cupy_usable", lambda: True)
    with pytest.raises(ValueError, match="counter must be a device array"):
        batch.gather_targets_cuda(*[valid_args()[n] for n in ARGS])


@pytest.mark.parametrize("mode", [batch.AS_IS, batch.THRESHOLD, batch.BERNOULLI])
def test_launcher_passes_the_registered_types(monkeypatch, mode):
    as_if_no_gpu(monkeypatch)
    args = valid_args(n=1000, m=1000, D=784, B=100, start=900)
    args["mode"] = mode
    launches = record_launches(monkeypatch, batch, "gather_targets_kernel")
    batch.gather_targets_cuda(*[args[n] for n in ARGS], stream=0)
    (config, types), = launches
    assert types in registered(batch)["gather_targets_kernel"]
    assert covers(config, 100 * 784)


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_usable(), reason="needs CuPy and a CUDA GPU")
def test_cuda_matches_cpu_on_gpu():
    import cupy

    for n, B, D, start in CASES:
        images = grey_images(n, D)
        order = np.random.default_rng(1).permutation(n).astype(np.int64)
        for mode in (batch.AS_IS, batch.THRESHOLD, batch.BERNOULLI):
            expected = gathered(images, order, start, mode, 7, 2**33 + 3, B)
            got = cupy.full((B, D), cupy.nan, dtype=cupy.float32)
            batch.gather_targets_cuda(cupy.asarray(images), cupy.asarray(order), start, mode, 7,
                                      cupy.array([2**33 + 3], cupy.uint64), got)
            np.testing.assert_array_equal(cupy.asnumpy(got), expected)  # IEEE float32: exact
    for kernel, sigs in batch.CUDA_KERNELS:
        assert set(kernel.overloads) <= {tuple(s) for s in sigs}, (kernel, list(kernel.overloads))
