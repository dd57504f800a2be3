"""The CUDA-graph step's orchestration on the CPU: a stand-in capture records the step and
replays it by calling it, with the changing scalars (Gumbel counter, Adam step, eps) read from
1-element arrays as the graph reads them from device memory. Replays must equal plain steps."""
import numpy as np
import pytest

from dvae_cupy.backend import get_backend
from dvae_cupy.estimators import EstimatorConfig, estimator_gradients
from dvae_cupy.graph import CallingCapture, GraphedStep
from dvae_cupy.model import DVAE, ModelShape
from dvae_cupy.train import TrainConfig, Trainer

CPU = get_backend("cpu")


def batches(n, batch=8, pixels=30, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.uniform(size=(batch, pixels)) > 0.5).astype(np.float32) for _ in range(n)]


def eager_run(shape, config, xs, eps_of_step, seed=5):
    model = DVAE(shape, CPU, seed=1)
    losses = []
    for step, x in enumerate(xs):
        losses.append(float(estimator_gradients(model, config, x, seed, step, eps_of_step(step), None)))
        model.adam_update(1e-2)
    return model, sum(losses)


class FailingCapture(CallingCapture):
    def capture(self, body):
        raise RuntimeError("operation not permitted when stream is capturing")


@pytest.mark.parametrize("shape, estimator", [
    (ModelShape(3, 4, hidden=16, pixels=30), "direct"),
    (ModelShape(1, 5, hidden=16, pixels=30), "exact"),
])
@pytest.mark.parametrize("capture", [CallingCapture, FailingCapture])
def test_replayed_steps_equal_plain_steps(shape, estimator, capture):
    config = EstimatorConfig(estimator)
    xs = batches(7)
    eps_of_step = lambda step: 1.0 if step < 4 else 0.5  # the schedule moves mid-run
    expected, expected_loss = eager_run(shape, config, xs, eps_of_step)
    model = DVAE(shape, CPU, seed=1)
    messages = []
    graphed = GraphedStep(model, config, 5, 8, 1e-2, capture=capture(), warmup=2, log=messages.append)
    graphed.set_state(0, 0, 1.0)
    for step, x in enumerate(xs):
        graphed.set_eps(eps_of_step(step))
        graphed(x)
    if capture is FailingCapture:
        assert graphed.graph is None and "capture failed" in messages[0]
    else:
        assert graphed.graph is not None and graphed.eager_steps == 2  # 5 replays
    assert int(graphed.counter[0]) == 7 and int(graphed.adam_step[0]) == 7 and model.adam_steps == 7
    for name, value in expected.host_params().items():
        np.testing.assert_array_equal(model.host_params()[name], value, err_msg=name)
    assert float(graphed.loss_sum) == pytest.approx(expected_loss, rel=1e-12)


def test_graphs_refuse_gumbel_softmax():
    with pytest.raises(ValueError, match="CUDA graphs support"):
        GraphedStep(DVAE(ModelShape(1, 3, 8, 10), CPU), EstimatorConfig("gumbel-softmax"), 0, 4, 1e-3,
                    capture=CallingCapture())


def test_trainer_with_graph_equals_trainer_without(tmp_path):
    base = dict(train_subset=400, eval_subset=100, hidden=32, n_latent=2, n_categories=3,
                batch_size=50, epochs=2, backend="cpu", progress=False, eps_anneal_rate=0.05,
                anneal_every=3)
    plain = Trainer(TrainConfig(out=str(tmp_path / "plain"), **base), log=lambda *a: None)
    plain.run()
    graphed = Trainer(TrainConfig(out=str(tmp_path / "graph"), cuda_graph=True, **base),
                      log=lambda *a: None, graph_capture=CallingCapture())
    graphed.run()
    assert graphed.graphed.graph is not None
    for name, value in plain.model.host_params().items():
        np.testing.assert_array_equal(graphed.model.host_params()[name], value, err_msg=name)
    assert [m["train_loss"] for m in graphed.metrics] == pytest.approx([m["train_loss"] for m in plain.metrics])


def test_cuda_graph_option_needs_the_gpu_backend(tmp_path):
    with pytest.raises(ValueError, match="needs the gpu backend"):
        Trainer(TrainConfig(cuda_graph=True, backend="cpu", out=str(tmp_path)))
