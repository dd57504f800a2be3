"""benchmarks/compare.py's structured race sides (structured-speed, structured-scaling): a smoke
run of one tiny step each, checking that each side is the model its name says. The figures
themselves are measured by the benchmark, not here. The peer side skips without torch or
PyMaxflow (bench-only dependencies)."""
import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import compare  # noqa: E402

N, BATCH = 3, 10


def tiny_batch():
    return (np.random.default_rng(0).uniform(size=(BATCH, 784)) > 0.5).astype(np.float32)


@pytest.mark.parametrize("side, mode", [("pairwise-attractive", "attractive"),
                                        ("pairwise-signed", "signed")])
def test_our_structured_sides_step_the_pairwise_model(side, mode):
    stepper, peak, convert = compare._make_side(side, "cpu", N, 2, 0, 1, BATCH)
    shape = stepper.model.shape
    assert (shape.structure, shape.pairwise, shape.n_latent, shape.n_categories) == \
        ("pairwise", mode, N, 2)
    before = stepper.model.host_params()["enc_w2"].copy()
    stepper(convert(tiny_batch()))
    assert stepper.step.step == 1
    assert not np.array_equal(stepper.model.host_params()["enc_w2"], before)  # Adam moved it
    assert peak(convert(tiny_batch())) > stepper.model.nbytes() + stepper.step.nbytes()


def test_the_structured_peer_side_is_the_published_algorithm():
    pytest.importorskip("torch", reason="the PyTorch peer needs torch")
    pytest.importorskip("maxflow", reason="the structured peer needs PyMaxflow")
    from torch_peer_structured import TorchPeerStructured

    stepper, _, convert = compare._make_side("peer-structured", "cpu", N, 2, 0, 1, BATCH)
    assert isinstance(stepper.__self__, TorchPeerStructured) and stepper.__self__.N == N
    assert math.isfinite(stepper(convert(tiny_batch())))  # (its peak: torch's profiler, slow)


def test_an_unknown_side_is_named():
    with pytest.raises(ValueError, match="unknown side 'pairwise-other'"):
        compare._make_side("pairwise-other", "cpu", N, 2, 0, 1, BATCH)
