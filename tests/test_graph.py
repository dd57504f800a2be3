"""The CUDA-graph step's orchestration on the CPU: a stand-in capture records the TrainStep and
replays it by calling it, with the changing scalars (Gumbel counter, Adam step, eps) read from
1-element arrays as the graph reads them from device memory. Replays must equal eager steps,
and the arrays a captured step touches must stay where they were captured."""
import weakref

import numpy as np
import pytest

from dvae_cupy.backend import Backend, cpu_backend
from dvae_cupy.config import TrainConfig
from dvae_cupy.estimators import EstimatorConfig
from dvae_cupy.graph import CallingCapture, GraphedStep
from dvae_cupy.model import Model, ModelShape
from dvae_cupy.step import TrainStep
from dvae_cupy.train import Trainer

CPU = cpu_backend()


def batches(n, batch=8, pixels=30, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.uniform(size=(batch, pixels)) > 0.5).astype(np.float32) for _ in range(n)]


def run_steps(runner, step, xs, eps_of_step):
    step.set_state(0, 0, eps_of_step(0))
    for i, x in enumerate(xs):
        step.set_eps(eps_of_step(i))
        step.batch[...] = x
        runner()


class FailingCapture(CallingCapture):
    def capture(self, body):
        raise RuntimeError("operation not permitted when stream is capturing")


@pytest.mark.parametrize("shape, estimator", [
    (ModelShape(3, 4, hidden=16, pixels=30), "direct"),
    (ModelShape(1, 5, hidden=16, pixels=30), "exact"),
])
@pytest.mark.parametrize("capture", [CallingCapture, FailingCapture])
def test_replayed_steps_equal_eager_steps(shape, estimator, capture):
    config = EstimatorConfig(estimator)
    xs = batches(7)
    eps_of_step = lambda step: 1.0 if step < 4 else 0.5  # noqa: E731  the schedule moves mid-run
    eager = TrainStep(Model(shape, CPU, seed=1), config, 5, 8, 1e-2)
    run_steps(eager, eager, xs, eps_of_step)
    step, messages = TrainStep(Model(shape, CPU, seed=1), config, 5, 8, 1e-2), []
    graphed = GraphedStep(step, capture=capture(), warmup=2, log=messages.append)
    run_steps(graphed, step, xs, eps_of_step)
    if capture is FailingCapture:
        assert graphed.graph is None and "capture failed" in messages[0]
    else:
        assert graphed.graph is not None and graphed.eager_steps == 2  # 5 replays
    assert int(step.counter[0]) == 7 and int(step.adam_step[0]) == 7
    assert step.step == 7 and step.adam_steps == 7
    for name, value in eager.model.host_params().items():
        np.testing.assert_array_equal(step.model.host_params()[name], value, err_msg=name)
    assert float(step.loss_sum[0]) == float(eager.loss_sum[0])


def test_graphs_refuse_gumbel_softmax():
    step = TrainStep(Model(ModelShape(1, 3, 8, 10), CPU), EstimatorConfig("gumbel-softmax"), 0, 4, 1e-3)
    with pytest.raises(ValueError, match="CUDA graphs support"):
        GraphedStep(step, capture=CallingCapture())


def test_trainer_with_graph_equals_trainer_without(tmp_path):
    base = dict(train_subset=400, eval_subset=100, hidden=32, n_latent=2, n_categories=3,
                batch_size=50, epochs=2, backend="cpu", progress=False, eps_anneal_rate=0.05,
                anneal_every=3)
    plain = Trainer(TrainConfig(out=str(tmp_path / "plain"), **base), log=lambda *a: None)
    plain.run()
    graphed = Trainer(TrainConfig(out=str(tmp_path / "graph"), cuda_graph=True, **base),
                      log=lambda *a: None, graph_capture=CallingCapture())
    graphed.run()
    assert graphed.runner.graph is not None
    for name, value in plain.model.host_params().items():
        np.testing.assert_array_equal(graphed.model.host_params()[name], value, err_msg=name)
    assert [m["train_loss"] for m in graphed.metrics] == [m["train_loss"] for m in plain.metrics]


def test_cuda_graph_option_needs_the_gpu_backend(tmp_path):
    with pytest.raises(ValueError, match="needs the gpu backend"):
        Trainer(TrainConfig(cuda_graph=True, backend="cpu", out=str(tmp_path)))


# ---------------------------------------------------------------------------------------------
# A captured graph keeps the addresses of every array its launches touched. The stand-in below
# records, for each launch of the captured body (an op or an xp function), the data pointers of
# its array arguments, and holds weak references to the arrays: a replay that touches another
# address, or an array that has been freed since the capture, fails the test.

def _data_pointer(array):
    return array.__array_interface__["data"][0]


class _Recorder:
    """Wraps a namespace (xp or ops); while `active`, each call logs its arrays' pointers."""

    def __init__(self, namespace, log):
        self._namespace, self._log = namespace, log

    def __getattr__(self, name):
        target = getattr(self._namespace, name)
        if not callable(target):
            return target

        def call(*args, **kwargs):
            arrays = [a for a in (*args, *kwargs.values()) if isinstance(a, np.ndarray)]
            self._log.append((name, [(_data_pointer(a), weakref.ref(a.base if a.base is not None else a))
                                     for a in arrays]))
            return target(*args, **kwargs)
        return call


class RecordingCapture(CallingCapture):
    def __init__(self, log):
        self.log, self.captured = log, None

    def capture(self, body):
        self.log.clear()
        body()  # stands in for the capture: records what a real capture would bake in
        self.captured = list(self.log)
        return body

    def launch(self, graph):
        for name, arrays in self.captured:
            for pointer, ref in arrays:
                assert ref() is not None, f"{name}: an array the graph captured was freed"
        self.log.clear()
        graph()
        replay = [(name, [pointer for pointer, _ in arrays]) for name, arrays in self.log]
        assert replay == [(name, [pointer for pointer, _ in arrays]) for name, arrays in self.captured], \
            "a replay touched arrays at addresses the capture did not record"


@pytest.mark.parametrize("n_latent", [1, 3])
def test_a_captured_step_keeps_its_arrays_through_evaluation(tmp_path, n_latent):
    log = []
    recording = Backend("cpu", _Recorder(np, log), _Recorder(CPU.ops, log))
    config = TrainConfig(train_subset=300, eval_subset=200, hidden=16, n_latent=n_latent,
                         n_categories=4, batch_size=50, epochs=2, backend="cpu", progress=False,
                         cuda_graph=True, out=str(tmp_path), anneal_every=3, eps_anneal_rate=0.05)
    trainer = Trainer(config, log=lambda *a: None, graph_capture=RecordingCapture(log))
    trainer.backend = recording
    trainer.model.backend, trainer.model.xp, trainer.model.ops = recording, recording.xp, recording.ops
    trainer.run()  # two epochs: evaluations, checkpoints, pictures and eps moves between replays
    assert trainer.runner.graph is not None and trainer.runner.capture_strategy.captured
    assert trainer.step == 12
