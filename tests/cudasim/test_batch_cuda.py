"""kernels/batch.py's CUDA twin under the CUDA simulator, against the CPU twin.

One thread per output element, the same IEEE float32 operations on every target: the outputs
must be equal bit for bit. Small shapes: one element, 300 elements (two blocks, the second
partly idle), and B = 0 (nothing to launch).
"""
import numpy as np
import pytest

from dvae_cupy.kernels import batch
from launches import record_launches


def counter(value):
    return np.array([value], np.uint64)


@pytest.mark.parametrize("mode", [batch.AS_IS, batch.THRESHOLD, batch.BERNOULLI],
                         ids=["as-is", "threshold", "bernoulli"])
@pytest.mark.parametrize("n, B, D, start", [(1, 1, 1, 0), (8, 3, 100, 5)], ids=str)
def test_gather_targets_cuda_equals_cpu(n, B, D, start, mode):
    images = np.random.default_rng(D).integers(0, 256, size=(n, D)).astype(np.uint8)
    order = np.random.default_rng(n).permutation(n).astype(np.int64)
    got = np.full((B, D), np.nan, np.float32)
    batch.gather_targets_cuda(images, order, start, mode, 2**63 + 9, counter(2**33 + 1), got)
    expected = np.full((B, D), np.nan, np.float32)
    batch.gather_targets(images, order, start, mode, 2**63 + 9, counter(2**33 + 1), expected)
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_empty_batch_launches_nothing(monkeypatch):
    launches = record_launches(monkeypatch, batch, "gather_targets_kernel")
    images, order = np.zeros((2, 3), np.uint8), np.arange(2, dtype=np.int64)
    for rows in (0, 1):
        batch.gather_targets_cuda(images, order, 1, batch.AS_IS, 0, counter(0),
                                  np.zeros((rows, 3), np.float32), stream=0)
        assert len(launches) == rows  # none for B = 0; the recorder stands in for B = 1
