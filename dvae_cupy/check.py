"""dvae-check: every kernel and every estimator step of a backend against the float64 reference.

What a user runs first on a new machine (`dvae-check`, or `dvae-check --backend cpu`): it prints
one row per (op, shape) with the largest error relative to the reference's scale, and exits 1 if
any row fails. The test suite runs the same checks on the CPU, and on the CUDA kernels under the
Numba CUDA simulator (NumPy arrays standing in for CuPy), so this file is itself tested.

Error = max |fast - reference| / max |reference|: float32 kernels against float64 truth.
Codes (arg max outputs) are compared exactly on inputs built without near-ties.
"""
import argparse
import sys
from dataclasses import dataclass

import numpy as np

from . import reference as ref
from .estimators import direct_gradients, exact_gradients, gumbel_softmax_gradients
from .evaluate import eval_seed, marginal_nll, sampled_loss
from .kernels import rng as cpu_rng
from .model import DVAE, ModelShape

FLOAT32_TOLERANCE = 2e-5     # one float32 op chain against float64, relative to the scale
STEP_TOLERANCE = 2e-4        # a whole training step: several GEMMs and reductions in float32


@dataclass(frozen=True)
class CheckResult:
    op: str
    shape: str
    error: float
    tolerance: float

    @property
    def passed(self):
        return bool(np.isfinite(self.error) and self.error <= self.tolerance)


def scaled_error(fast, truth):
    fast, truth = np.asarray(fast, np.float64), np.asarray(truth, np.float64)
    if fast.shape != truth.shape:
        return np.inf
    return float(np.max(np.abs(fast - truth), initial=0.0) / max(np.max(np.abs(truth), initial=0.0), 1e-30))


def exact_mismatch(fast, truth):
    """Fraction of differing entries (codes): 0 when equal."""
    fast, truth = np.asarray(fast), np.asarray(truth)
    return np.inf if fast.shape != truth.shape else float(np.mean(fast != truth))


# ---------------------------------------------------------------------------------------------
# Op checks: each takes (backend, rng, shape tuple) and returns (error, tolerance).

def _dev(backend, array, dtype=np.float32):
    return backend.xp.asarray(np.ascontiguousarray(array, dtype=dtype))


def check_bias_act(backend, rng, rows, cols):
    a, bias = rng.normal(size=(rows, cols)), rng.normal(size=cols)
    out = _dev(backend, a)
    backend.ops.bias_act(out, _dev(backend, bias), True)
    return scaled_error(backend.to_host(out), ref.relu(a.astype(np.float32) + bias.astype(np.float32)))


def check_relu_backward(backend, rng, rows, cols):
    grad, act = rng.normal(size=(rows, cols)), ref.relu(rng.normal(size=(rows, cols)))
    out = _dev(backend, grad)
    backend.ops.relu_backward(out, _dev(backend, act))
    return scaled_error(backend.to_host(out), grad.astype(np.float32) * (act > 0))


def _codes(rng, rows, n_latent, n_categories):
    return rng.integers(0, n_categories, size=(rows, n_latent)).astype(np.int32)


def check_gather_rows_sum(backend, rng, rows, n_latent, n_categories, hidden):
    weight, bias = rng.normal(size=(n_latent * n_categories, hidden)), rng.normal(size=hidden)
    codes = _codes(rng, rows, n_latent, n_categories)
    out = _dev(backend, np.zeros((rows, hidden)))
    backend.ops.gather_rows_sum(_dev(backend, weight), _dev(backend, bias), _dev(backend, codes, np.int32),
                                n_categories, out)
    truth = ref.onehot(codes, n_categories).reshape(rows, -1) @ weight + bias
    return scaled_error(backend.to_host(out), truth)


def check_scatter_rows_add(backend, rng, rows, n_latent, n_categories, hidden):
    grad_out, codes = rng.normal(size=(rows, hidden)), _codes(rng, rows, n_latent, n_categories)
    out = _dev(backend, np.full((n_latent * n_categories, hidden), 7.0))  # must be overwritten
    backend.ops.scatter_rows_add(_dev(backend, grad_out), _dev(backend, codes, np.int32), n_categories, out)
    truth = ref.onehot(codes, n_categories).reshape(rows, -1).T @ grad_out
    return scaled_error(backend.to_host(out), truth)


def check_adam_update(backend, rng, size):
    param, m, v = rng.normal(size=size), np.zeros(size), np.zeros(size)
    dev = [_dev(backend, a) for a in (param, m, v)]
    for step in (1, 2, 3):
        grad = rng.normal(size=size)
        backend.ops.adam_update(dev[0], _dev(backend, grad), dev[1], dev[2], 1e-2, 0.9, 0.999, 1e-8, step)
        param, m, v = ref.adam_step(param, grad, m, v, step, lr=1e-2)
    return scaled_error(backend.to_host(dev[0]), param)


def check_bce_rows(backend, rng, batch, samples, pixels):
    rows = batch * samples
    out, x = rng.normal(scale=4, size=(rows, pixels)), (rng.uniform(size=(batch, pixels)) > 0.5) * 1.0
    loss, grad = _dev(backend, np.zeros(rows)), _dev(backend, np.zeros((rows, pixels)))
    backend.ops.bce_rows(_dev(backend, out), _dev(backend, x), samples, 0.5, loss, grad)
    targets = np.repeat(x, samples, axis=0)
    return max(scaled_error(backend.to_host(loss), ref.bce_with_logits(out, targets)),
               scaled_error(backend.to_host(grad), 0.5 * ref.bce_with_logits_grad(out, targets)))


def check_softplus_row_sums(backend, rng, rows, pixels):
    out, bias = rng.normal(scale=4, size=(rows, pixels)), rng.normal(size=pixels)
    sums = _dev(backend, np.zeros(rows))
    backend.ops.softplus_row_sums(_dev(backend, out), _dev(backend, bias), sums)
    return scaled_error(backend.to_host(sums), ref.softplus(out + bias).sum(axis=1))


def check_softmax_kl(backend, rng, batch, n_latent, n_categories):
    logits = rng.normal(scale=3, size=(batch, n_latent * n_categories))
    kl, grad = _dev(backend, np.zeros(batch)), _dev(backend, np.zeros(logits.shape))
    backend.ops.softmax_kl(_dev(backend, logits), n_categories, 0.25, kl, grad)
    h = logits.reshape(batch, n_latent, n_categories)
    return max(scaled_error(backend.to_host(kl), ref.kl_uniform(h)),
               scaled_error(backend.to_host(grad), 0.25 * ref.kl_uniform_grad(h).reshape(batch, -1)))


def check_gumbel_noise(backend, rng, size):
    seed, step = int(rng.integers(2 ** 63)), int(rng.integers(2 ** 40))
    bits_fast = _dev(backend, np.zeros(size), np.uint32)
    backend.ops.philox_bits(seed, step, bits_fast)
    bits = np.zeros(size, np.uint32)
    cpu_rng.philox_bits(seed, step, bits)
    noise_fast = _dev(backend, np.zeros(size))
    backend.ops.gumbel_noise(seed, step, noise_fast)
    u = ((bits >> 9).astype(np.float64) + 0.5) * 2.0 ** -23
    error = scaled_error(backend.to_host(noise_fast), -np.log(-np.log(u)))
    return error + exact_mismatch(backend.to_host(bits_fast), bits)


def _separated_scores(rng, shape, gap=0.05):
    """Scores whose arg max is unambiguous in float32: distinct values at least `gap` apart."""
    ranks = np.argsort(rng.uniform(size=shape), axis=-1).astype(np.float64)
    return ranks * gap * 20 + rng.uniform(0, gap, size=shape)


def check_gumbel_argmax(backend, rng, batch, samples, n_latent, n_categories):
    logits = _separated_scores(rng, (batch, n_latent, n_categories))
    gumbel = _separated_scores(rng, (batch, samples, n_latent, n_categories)) * 0.5
    codes = _dev(backend, np.zeros((batch * samples, n_latent)), np.int32)
    backend.ops.gumbel_argmax(_dev(backend, logits.reshape(batch, -1)),
                              _dev(backend, gumbel.reshape(batch * samples, -1)), n_categories, samples, codes)
    truth = ref.gumbel_max(logits.astype(np.float32), gumbel.astype(np.float32))
    return exact_mismatch(backend.to_host(codes), truth.reshape(batch * samples, n_latent))


# ---------------------------------------------------------------------------------------------
# Whole estimator steps on a small model, with the same Gumbel noise as the reference.

def _small_model(backend, n_latent, n_categories, pixels=13, hidden=9, seed=0):
    model = DVAE(ModelShape(n_latent, n_categories, hidden, pixels), backend, seed=seed, candidate_chunk=7)
    params = {k: v.astype(np.float64) for k, v in model.host_params().items()}
    # A louder decoder, so that eps * L moves the arg max and the check compares something.
    params["dec_w2"] *= 6.0
    model.load_params(params)
    return model, {k: v.astype(np.float32).astype(np.float64) for k, v in params.items()}


def _noise(seed, counter, batch, samples, n_latent, n_categories):
    noise = np.zeros((batch * samples, n_latent * n_categories), np.float32)
    cpu_rng.gumbel_noise(seed, counter, noise)
    return noise.astype(np.float64).reshape(batch, samples, n_latent, n_categories)


def _grads_error(model, grads):
    host = {k: model.backend.to_host(v) for k, v in model.grads.items()}
    return max(scaled_error(host[name], grads[name]) for name in ref.PARAM_NAMES)


def check_direct_step(backend, rng, batch, samples, n_latent, n_categories, two_sided=False,
                      kl_backprop=True):
    model, params = _small_model(backend, n_latent, n_categories)
    x = (rng.uniform(size=(batch, model.shape.pixels)) > 0.5) * 1.0
    seed, counter, eps = 11, 5, 0.5
    loss = direct_gradients(model, _dev(backend, x), seed, counter, eps, samples, two_sided, kl_backprop)
    gumbel = _noise(seed, counter, batch, samples, n_latent, n_categories)
    ref_loss, grads, _ = ref.direct_estimator(params, x, n_categories, gumbel, eps, two_sided, kl_backprop)
    return max(scaled_error(float(loss), ref_loss), _grads_error(model, grads))


def check_candidate_losses(backend, rng, batch, samples, n_latent, n_categories):
    """All N*K neighbours' decoder losses (the direct estimator's inner loop), chunked."""
    model, params = _small_model(backend, n_latent, n_categories)
    x = (rng.uniform(size=(batch, model.shape.pixels)) > 0.5) * 1.0
    codes = _codes(rng, batch * samples, n_latent, n_categories)
    device_codes = _dev(backend, codes, np.int32)
    out = model.decode_codes(device_codes)  # candidates start from its pre-activation
    sampled = _dev(backend, np.zeros(len(codes)))
    model.ops.bce_rows(out, _dev(backend, x), samples, 0.0, sampled, _dev(backend, np.zeros(out.shape)))
    fast = model.candidate_losses(_dev(backend, x), device_codes, samples, sampled)
    truth = ref.candidate_losses(params, np.repeat(x, samples, axis=0), codes, n_categories)
    return scaled_error(backend.to_host(fast), truth.reshape(batch * samples, -1))


def check_gumbel_softmax_step(backend, rng, batch, samples, n_latent, n_categories, straight_through=False):
    model, params = _small_model(backend, n_latent, n_categories)
    x = (rng.uniform(size=(batch, model.shape.pixels)) > 0.5) * 1.0
    seed, counter, tau = 12, 3, 0.7
    loss = gumbel_softmax_gradients(model, _dev(backend, x), seed, counter, tau, samples, straight_through)
    gumbel = _noise(seed, counter, batch, samples, n_latent, n_categories)
    ref_loss, grads = ref.gumbel_softmax_estimator(params, x, n_categories, gumbel, tau, straight_through)
    return max(scaled_error(float(loss), ref_loss), _grads_error(model, grads))


def check_exact_step(backend, rng, batch, n_categories):
    model, params = _small_model(backend, 1, n_categories)
    x = (rng.uniform(size=(batch, model.shape.pixels)) > 0.5) * 1.0
    loss = exact_gradients(model, _dev(backend, x))
    ref_loss, grads = ref.exact_estimator(params, x, n_categories)
    return max(scaled_error(float(loss), ref_loss), _grads_error(model, grads))


def check_evaluation(backend, rng, batch, n_latent, n_categories, samples=4):
    model, params = _small_model(backend, n_latent, n_categories)
    x = (rng.uniform(size=(batch, model.shape.pixels)) > 0.5) * 1.0
    seed = 13
    fast = sampled_loss(model, _dev(backend, x), seed)
    truth = ref.sampled_loss(params, x, n_categories, _noise(eval_seed(seed), 0, batch, 1, n_latent, n_categories))
    error = scaled_error(backend.to_host(fast), truth)
    nll = backend.to_host(marginal_nll(model, _dev(backend, x), seed, samples))
    if n_latent == 1:
        truth = ref.marginal_nll_exact(params, x, n_categories)
    else:
        noise = _noise(eval_seed(seed) ^ 1, 0, batch, samples, n_latent, n_categories)
        truth = ref.marginal_nll_importance(params, x, n_categories, noise)
    return max(error, scaled_error(nll, truth))


def check_adam_on_model(backend, rng, n_latent, n_categories):
    model, params = _small_model(backend, n_latent, n_categories)
    grads = {k: rng.normal(size=v.shape) for k, v in params.items()}
    for name, g in grads.items():
        model.grads[name][...] = _dev(backend, g)
    model.adam_update(1e-2)
    expected = {k: ref.adam_step(params[k], grads[k], 0 * params[k], 0 * params[k], 1, lr=1e-2)[0] for k in params}
    return max(scaled_error(model.backend.to_host(model.params[k]), expected[k]) for k in expected)


# (op name, function, tolerance, list of shapes): shapes include batch 1, K = 2, N > 1, M > 1 and
# sizes that are not multiples of a CUDA block (256).
CHECKS = [
    ("gumbel_noise", check_gumbel_noise, FLOAT32_TOLERANCE, [(1,), (1000,), (4099,)]),
    ("bias_act", check_bias_act, FLOAT32_TOLERANCE, [(1, 1), (3, 300), (17, 7)]),
    ("relu_backward", check_relu_backward, 0.0, [(1, 1), (5, 300)]),
    ("gather_rows_sum", check_gather_rows_sum, FLOAT32_TOLERANCE, [(1, 1, 2, 5), (6, 3, 4, 300)]),
    ("scatter_rows_add", check_scatter_rows_add, FLOAT32_TOLERANCE, [(1, 1, 2, 5), (9, 3, 4, 257)]),
    ("adam_update", check_adam_update, FLOAT32_TOLERANCE, [(1,), (1000,)]),
    ("bce_rows", check_bce_rows, FLOAT32_TOLERANCE, [(1, 1, 1), (3, 2, 784), (2, 1, 300)]),
    ("softplus_row_sums", check_softplus_row_sums, FLOAT32_TOLERANCE, [(1, 5), (4, 784)]),
    ("softmax_kl", check_softmax_kl, FLOAT32_TOLERANCE, [(1, 1, 2), (5, 3, 10), (2, 20, 10)]),
    ("gumbel_argmax", check_gumbel_argmax, 0.0, [(1, 1, 1, 2), (4, 3, 5, 10)]),
    ("candidate_losses", check_candidate_losses, FLOAT32_TOLERANCE,
     [(3, 1, 1, 10), (1, 1, 1, 2), (3, 2, 3, 4), (2, 1, 5, 2)]),
    ("direct_step", check_direct_step, STEP_TOLERANCE, [(5, 1, 1, 10), (4, 2, 3, 2), (1, 1, 2, 4)]),
    ("direct_step_two_sided", lambda b, r, *s: check_direct_step(b, r, *s, two_sided=True),
     STEP_TOLERANCE, [(4, 2, 2, 3)]),
    ("direct_step_published", lambda b, r, *s: check_direct_step(b, r, *s, kl_backprop=False),
     STEP_TOLERANCE, [(5, 1, 1, 10), (4, 1, 3, 2)]),
    ("gumbel_softmax_step", check_gumbel_softmax_step, STEP_TOLERANCE, [(4, 2, 2, 3), (3, 1, 1, 5)]),
    ("gumbel_softmax_st_step", lambda b, r, *s: check_gumbel_softmax_step(b, r, *s, straight_through=True),
     STEP_TOLERANCE, [(4, 1, 2, 3)]),
    ("exact_step", check_exact_step, STEP_TOLERANCE, [(5, 10), (1, 2)]),
    ("evaluation", check_evaluation, STEP_TOLERANCE, [(4, 1, 6), (3, 2, 3)]),
    ("adam_on_model", check_adam_on_model, FLOAT32_TOLERANCE, [(2, 3)]),
]


def run_checks(backend, seed=0, only=None):
    results = []
    for op, fn, tolerance, shapes in CHECKS:
        if only and op not in only:
            continue
        for shape in shapes:
            rng = np.random.default_rng([seed, len(results)])
            results.append(CheckResult(op, "x".join(map(str, shape)), fn(backend, rng, *shape), tolerance))
    return results


def format_table(results):
    lines = [f"{'op':<24}{'shape':<14}{'max error':>12}{'tolerance':>12}  result"]
    for r in results:
        lines.append(f"{r.op:<24}{r.shape:<14}{r.error:>12.2e}{r.tolerance:>12.1e}  "
                     f"{'pass' if r.passed else 'FAIL'}")
    failed = sum(not r.passed for r in results)
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)


def check_main(argv=None):
    from .backend import get_backend, gpu_unavailable_reason
    from .errors import GPUUnavailableError

    parser = argparse.ArgumentParser(prog="dvae-check", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("auto", "cpu", "gpu"), default="auto",
                        help="auto: the GPU when one is usable, else the CPU kernels")
    parser.add_argument("--only", nargs="*", help="run only these ops")
    args = parser.parse_args(argv)
    try:
        backend = get_backend(args.backend)
    except GPUUnavailableError as error:  # names the failing piece (gpu_probe); no traceback
        print(f"dvae-check: error: {error}", file=sys.stderr)
        return 2
    where = backend.name
    if backend.name == "gpu":
        import cupy

        where = f"gpu ({cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()})"
    elif args.backend == "auto":
        where = f"cpu (no GPU: {gpu_unavailable_reason()})"
    print(f"dvae-check: kernels on {where} against the float64 reference")
    results = run_checks(backend, only=args.only)
    print(format_table(results))
    return 0 if all(r.passed for r in results) else 1
