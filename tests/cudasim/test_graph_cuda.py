"""The CUDA-graph step's orchestration with the CUDA kernels under the simulator: a TrainStep
replayed by the stand-in capture (device scalars read from 1-element arrays) must give exactly
the eager steps of the same kernels."""
import numpy as np

from dvae_cupy.backend import cuda_backend
from dvae_cupy.estimators import EstimatorConfig
from dvae_cupy.graph import CallingCapture, GraphedStep
from dvae_cupy.model import Model, ModelShape
from dvae_cupy.step import TrainStep

SIMULATED_GPU = cuda_backend(np)


def run(runner, step, xs):
    step.set_state(0, 0, 0.7)
    for x in xs:
        step.batch[...] = x
        runner()


def test_replayed_direct_steps_equal_eager_steps_on_cuda_kernels():
    shape, config = ModelShape(2, 3, hidden=6, pixels=10), EstimatorConfig("direct")
    rng = np.random.default_rng(0)
    xs = [(rng.uniform(size=(3, 10)) > 0.5).astype(np.float32) for _ in range(4)]
    eager = TrainStep(Model(shape, SIMULATED_GPU, seed=2), config, 4, 3, 1e-2)
    run(eager, eager, xs)
    step = TrainStep(Model(shape, SIMULATED_GPU, seed=2), config, 4, 3, 1e-2)
    graphed = GraphedStep(step, capture=CallingCapture(), warmup=1)
    run(graphed, step, xs)
    assert graphed.graph is not None and int(step.counter[0]) == 4
    for name, value in eager.model.host_params().items():
        np.testing.assert_array_equal(step.model.host_params()[name], value, err_msg=name)
