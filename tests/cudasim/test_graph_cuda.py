"""The CUDA-graph step's orchestration with the CUDA kernels under the simulator: the device-scalar
kernels (Gumbel counter, Adam step, eps read from 1-element arrays) replayed by the stand-in
capture must give exactly the steps of the plain launches."""
import numpy as np

from dvae_cupy.backend import Backend, _load_ops
from dvae_cupy.estimators import EstimatorConfig, estimator_gradients
from dvae_cupy.graph import CallingCapture, GraphedStep
from dvae_cupy.model import DVAE, ModelShape

SIMULATED_GPU = Backend("gpu", np, _load_ops("_cuda"))


def test_replayed_direct_steps_equal_plain_steps_on_cuda_kernels():
    shape, config = ModelShape(2, 3, hidden=6, pixels=10), EstimatorConfig("direct")
    rng = np.random.default_rng(0)
    xs = [(rng.uniform(size=(3, 10)) > 0.5).astype(np.float32) for _ in range(4)]
    plain = DVAE(shape, SIMULATED_GPU, seed=2)
    for step, x in enumerate(xs):
        estimator_gradients(plain, config, x, 4, step, 0.7, None)
        plain.adam_update(1e-2)
    model = DVAE(shape, SIMULATED_GPU, seed=2)
    graphed = GraphedStep(model, config, 4, 3, 1e-2, capture=CallingCapture(), warmup=1)
    graphed.set_state(0, 0, 0.7)
    for x in xs:
        graphed(x)
    assert graphed.graph is not None and int(graphed.counter[0]) == 4
    for name, value in plain.host_params().items():
        np.testing.assert_array_equal(model.host_params()[name], value, err_msg=name)
