"""The TrainStep: one eager step's launches counted, and its memory owned and allocated once."""
import numpy as np
import pytest

from dvae_cupy.backend import cpu_backend
from dvae_cupy.estimators import EstimatorConfig
from dvae_cupy.launches import launches_of_one_step
from dvae_cupy.model import Model, ModelShape
from dvae_cupy.step import TrainStep

CPU = cpu_backend()


def launches_per_step(shape, estimator="direct"):
    return launches_of_one_step(shape, EstimatorConfig(estimator))


def test_an_eager_direct_step_is_at_most_26_launches_for_n1_k10():
    # 1 batch gather + 4 encoder + 1 sampling + 5 decoder on the K codes (the sampled codes are
    # among them) + 2 sampled losses and KL + 2 logit and sampled-code gradients + 4 decoder
    # backward + 5 encoder backward + 1 step end + 1 Adam
    counts = launches_per_step(ModelShape(1, 10))
    assert len(counts) <= 26, counts
    print(f"N=1,K=10: {len(counts)} launches: {counts}")


def test_an_eager_direct_step_is_at_most_28_launches_for_n20_k10():
    counts = launches_per_step(ModelShape(20, 10))  # one candidate chunk on a GPU; 5 of 4096 on a CPU
    chunks = counts.count("neighbour_hidden")
    assert len(counts) - 3 * (chunks - 1) <= 28, counts
    print(f"N=20,K=10: {len(counts)} launches with {chunks} candidate chunks: {counts}")


def test_the_count_sees_a_launch_added_to_the_step(monkeypatch):
    base = len(launches_per_step(ModelShape(1, 10)))
    original = Model.encode

    def encode_twice(self, x, encoder):
        original(self, x, encoder)
        return original(self, x, encoder)
    monkeypatch.setattr(Model, "encode", encode_twice)
    assert len(launches_per_step(ModelShape(1, 10))) == base + 4


@pytest.mark.parametrize("estimator, n_latent", [("direct", 1), ("direct", 3), ("exact", 1),
                                                 ("gumbel-softmax", 2)])
def test_the_step_allocates_its_workspace_once(estimator, n_latent):
    model = Model(ModelShape(n_latent, 4, hidden=8, pixels=12), CPU, seed=0)
    step = TrainStep(model, EstimatorConfig(estimator), 3, 5, 1e-2)
    before = {id(a): a.__array_interface__["data"][0] for a in step.workspace_arrays()}
    step.set_state(0, 0, 0.5)
    rng = np.random.default_rng(1)
    for _ in range(3):
        step.batch[...] = rng.uniform(size=step.batch.shape) > 0.5
        step()
    after = {id(a): a.__array_interface__["data"][0] for a in step.workspace_arrays()}
    assert before == after
    assert int(step.counter[0]) == step.step == 3 and int(step.adam_step[0]) == step.adam_steps == 3


def test_per_step_scalars_are_one_element_arrays_on_the_backend():
    step = TrainStep(Model(ModelShape(2, 3, 8, 10), CPU), EstimatorConfig(), 0, 4, 1e-3)
    for array, dtype in ((step.counter, np.uint64), (step.adam_step, np.int64), (step.eps, np.float32),
                         (step.loss_sum, np.float64)):
        assert isinstance(array, np.ndarray) and array.shape == (1,) and array.dtype == dtype
