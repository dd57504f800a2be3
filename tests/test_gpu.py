"""On a real CUDA GPU (skipped, saying so, where there is none): every dvae-check row on the GPU
backend, and whole training steps on the GPU against the CPU path with the same seed and noise,
compared by tests/agreement.py (rounding cannot fail it, a real bug cannot pass it: proven on
the CPU by tests/test_agreement.py)."""
import pytest

from agreement import compare_a_few_steps, compare_one_step
from dvae_cupy import check
from dvae_cupy.backend import cpu_backend, get_backend, gpu_unavailable_reason
from dvae_cupy.model import ModelShape

REASON = gpu_unavailable_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=f"no usable GPU: {REASON}")]


@pytest.mark.parametrize("op", check.CHECK_NAMES)
def test_gpu_backend_matches_reference(op):
    results = check.run_checks(get_backend("gpu"), only=[op])
    failed = [r for r in results if not r.passed]
    assert results and not failed, check.format_table(failed)


@pytest.mark.parametrize("n_latent, n_categories, estimator", [
    (1, 10, "direct"), (20, 10, "direct"), (3, 4, "gumbel-softmax"), (1, 10, "exact")])
def test_gpu_training_steps_follow_the_cpu_steps(n_latent, n_categories, estimator):
    shape = ModelShape(n_latent, n_categories)
    gpu, cpu = get_backend("gpu"), cpu_backend()
    assert compare_one_step(cpu, gpu, shape, estimator) == []
    assert compare_a_few_steps(cpu, gpu, shape, estimator) == []
