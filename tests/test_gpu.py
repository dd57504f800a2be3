"""On a real CUDA GPU (skipped, saying so, where there is none): every dvae-check row on the GPU
backend, and whole training steps on the GPU against the CPU path with the same seed and noise."""
import numpy as np
import pytest

from dvae_cupy import check
from dvae_cupy.backend import get_backend, gpu_unavailable_reason
from dvae_cupy.estimators import EstimatorConfig, estimator_gradients
from dvae_cupy.model import DVAE, ModelShape

REASON = gpu_unavailable_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=f"no usable GPU: {REASON}")]


@pytest.mark.parametrize("op", [name for name, *_ in check.CHECKS])
def test_gpu_backend_matches_reference(op):
    results = check.run_checks(get_backend("gpu"), only=[op])
    failed = [r for r in results if not r.passed]
    assert results and not failed, check.format_table(failed)


@pytest.mark.parametrize("n_latent, n_categories, estimator", [
    (1, 10, "direct"), (20, 10, "direct"), (3, 4, "gumbel-softmax"), (1, 10, "exact")])
def test_gpu_training_steps_follow_the_cpu_steps(n_latent, n_categories, estimator):
    rng = np.random.default_rng(0)
    x = (rng.uniform(size=(100, 784)) > 0.5).astype(np.float32)
    models = {name: DVAE(ModelShape(n_latent, n_categories), get_backend(name), seed=3) for name in ("cpu", "gpu")}
    config = EstimatorConfig(estimator)
    for step in range(5):
        for name, model in models.items():
            estimator_gradients(model, config, model.backend.asarray(x), 9, step, 0.5, 0.8)
            model.adam_update(1e-3)
    cpu, gpu = models["cpu"].host_params(), models["gpu"].host_params()
    for name in cpu:
        scale = np.max(np.abs(cpu[name]))
        assert np.max(np.abs(gpu[name] - cpu[name])) <= 1e-3 * scale, name
