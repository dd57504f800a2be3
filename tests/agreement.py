"""Do two backends compute the same training step? A comparison that rounding cannot fail and a
real bug cannot pass (used by tests/test_gpu.py on a GPU, and proven on the CPU by
tests/test_agreement.py against a backend that rounds differently and backends with bugs).

One step's gradients. Both backends start from the same float32 parameters and batch, and the
same Gumbel noise (a Philox stream: identical bits on every target). Rounding can move a
gradient in two ways:
- continuously: a float32 sum in another order differs by a few units of its terms' rounding.
  The tolerance is derived from the rounding the float32 path actually has: for each array,
  TOLERANCE_FACTOR times the first backend's own error against the float64 reference at the
  same inputs, plus a floor of FLOOR_ULPS float32 units of the array's scale (for arrays the
  float32 path gets exactly right). Two float32 paths each within e of the truth differ by at
  most 2e; the factor allows for another summation order (a tree instead of a loop, fused
  multiply-adds) making the second path's error a few times the first's.
- discontinuously: an arg max (z_opt, z_dir) whose two best scores are within rounding of each
  other can flip, changing a gradient by a whole 1/eps. Inputs are chosen so that every arg max
  has a clear winner (a margin of MARGIN in float64, far above float32 rounding); a draw that
  fails this is replaced by the next seed, and the codes must then agree exactly.
A few steps with Adam would amplify rounding (Adam turns a 1e-9 gradient into a full learning
rate step), so the parameters are compared after a few steps of Adam with a large epsilon
(ADAM_EPS = 1: updates are lr * m / (sqrt(v) + 1), about lr * g, like SGD), where a difference
in the gradients moves the parameters by at most lr times that difference per step, plus the
two ulps by which two float32 roundings of nearly equal new values can differ.
"""
import numpy as np

from dvae_cupy import reference as ref
from dvae_cupy.estimators import EstimatorConfig, estimator_gradients
from dvae_cupy.model import Model
from dvae_cupy.step import TrainStep

TOLERANCE_FACTOR = 8
FLOOR_ULPS = 64
MARGIN = 1e-3
ADAM_EPS = 1.0
LR = 1e-3
EPS, TAU, SEED = 0.5, 0.8, 9


def _float64(params):
    return {k: v.astype(np.float64) for k, v in params.items()}


def _batch(pixels, batch, seed):
    return (np.random.default_rng(seed).uniform(size=(batch, pixels)) > 0.5).astype(np.float32)


class Run:
    """A TrainStep on `backend` from given float32 parameters."""

    def __init__(self, backend, shape, estimator, params, batch):
        self.backend = backend
        self.model = Model(shape, backend, seed=0)
        self.model.load_params(params)
        self.config = EstimatorConfig(estimator)
        self.step = TrainStep(self.model, self.config, SEED, batch, LR)
        self.step.set_state(0, 0, EPS)
        self.step.tau = TAU

    def gradients(self, x, step_index=0):
        step = self.step
        step.counter[...] = step_index
        step.batch[...] = self.backend.asarray(x)
        ws = step.workspace
        estimator_gradients(self.model, self.config, ws, ws.x, SEED, step.counter, step.eps, TAU)
        grads = {k: self.backend.to_host(v) for k, v in self.model.grads.items()}
        codes = None if ws.codes is None else self.backend.to_host(ws.codes).copy()
        return grads, codes

    def sgd_like_update(self, step_index):
        self.step.adam_step[...] = step_index + 1
        self.model.adam_update(LR, self.step.adam_step, eps=ADAM_EPS)


def clear_winners(params, x, n_categories, step_index, samples=1):
    """True when every arg max of the direct step (z_opt and z_dir) wins by MARGIN (float64)."""
    from dvae_cupy.kernels import rng

    batch = len(x)
    logits = ref.encoder_forward(params, x.astype(np.float64), n_categories)[0]
    n_latent = logits.shape[1]
    noise = np.zeros((batch * samples, n_latent * n_categories), np.float32)
    rng.gumbel_noise(SEED, np.array([step_index], np.uint64), noise)
    gumbel = noise.astype(np.float64).reshape(batch, samples, n_latent, n_categories)
    scores = logits[:, None] + gumbel
    z = ref.gumbel_max(logits, gumbel)
    losses = ref.candidate_losses(params, np.repeat(x, samples, axis=0).astype(np.float64),
                                  z.reshape(batch * samples, -1), n_categories).reshape(gumbel.shape)
    for candidate in (scores, scores - EPS * losses, scores + EPS * losses):
        top2 = np.sort(candidate, axis=-1)[..., -2:]
        if np.min(top2[..., 1] - top2[..., 0]) < MARGIN:
            return False
    return True


def problem(shape, estimator, batch, first_seed=0):
    """(float32 params, batch) whose arg maxes all have clear winners, trying seeds in order."""
    for seed in range(first_seed, first_seed + 50):
        params = Model(shape, _cpu(), seed=seed).host_params()
        x = _batch(shape.pixels, batch, seed)
        if estimator != "direct" or clear_winners(_float64(params), x, shape.n_categories, 0):
            return params, x
    raise AssertionError("no draw without near-ties in 50 seeds")


def _cpu():
    from dvae_cupy.backend import cpu_backend

    return cpu_backend()


def gradient_tolerances(params, x, shape, estimator, grads32):
    """Per array: TOLERANCE_FACTOR x the float32 path's own error against float64 + a floor."""
    truth = reference_gradients(_float64(params), x.astype(np.float64), shape, estimator)
    tolerances = {}
    for name, g in grads32.items():
        scale = max(float(np.max(np.abs(truth[name]))), 1e-30)
        own_error = float(np.max(np.abs(g - truth[name])))
        tolerances[name] = TOLERANCE_FACTOR * own_error + FLOOR_ULPS * np.finfo(np.float32).eps * scale
    return tolerances


def reference_gradients(params, x, shape, estimator):
    from dvae_cupy.kernels import rng

    k, batch = shape.n_categories, len(x)
    noise = np.zeros((batch, shape.n_codes), np.float32)
    rng.gumbel_noise(SEED, np.array([0], np.uint64), noise)
    gumbel = noise.astype(np.float64).reshape(batch, 1, shape.n_latent, k)
    if estimator == "direct":
        return ref.direct_estimator(params, x, k, gumbel, EPS)[1]
    if estimator == "gumbel-softmax":
        return ref.gumbel_softmax_estimator(params, x, k, gumbel, TAU)[1]
    return ref.exact_estimator(params, x, k)[1]


def compare_one_step(first, second, shape, estimator, batch=20):
    """Failures (a list of messages; empty when the backends agree) of one step's gradients."""
    params, x = problem(shape, estimator, batch)
    grads_a, codes_a = Run(first, shape, estimator, params, batch).gradients(x)
    grads_b, codes_b = Run(second, shape, estimator, params, batch).gradients(x)
    failures = []
    if codes_a is not None and not np.array_equal(codes_a, codes_b):
        failures.append(f"codes differ in {int(np.sum(codes_a != codes_b))} places")
    tolerances = gradient_tolerances(params, x, shape, estimator, grads_a)
    for name, tolerance in tolerances.items():
        difference = float(np.max(np.abs(grads_a[name] - grads_b[name])))
        if not difference <= tolerance:
            failures.append(f"{name}: differs by {difference:.3g} > tolerance {tolerance:.3g}")
    return failures


def compare_a_few_steps(first, second, shape, estimator, steps=3, batch=20):
    """Failures of the parameters after `steps` SGD-like (ADAM_EPS) steps on one batch and one
    noise draw: each step's gradient difference (bounded as in compare_one_step) moves a
    parameter by at most LR times it. A draw whose arg maxes lose their clear winners on the way
    (the parameters move) is replaced by the next seed."""
    for first_seed in range(0, 200, 10):
        params, x = problem(shape, estimator, batch, first_seed)
        runs = [Run(first, shape, estimator, params, batch), Run(second, shape, estimator, params, batch)]
        budget, clear = {name: 0.0 for name in params}, True
        for step_index in range(steps):
            current = runs[0].model.host_params()
            if estimator == "direct" and not clear_winners(_float64(current), x, shape.n_categories, 0):
                clear = False
                break
            grads = [run.gradients(x)[0] for run in runs]
            tolerances = gradient_tolerances(current, x, shape, estimator, grads[0])
            for name in budget:
                # the gradient difference moves a parameter by at most LR times it; each run
                # then rounds the new parameter to float32, which can part them by an ulp more
                ulp = float(np.spacing(np.float32(np.max(np.abs(current[name])))))
                budget[name] += LR * tolerances[name] + 2 * ulp
            for run in runs:
                run.sgd_like_update(step_index)
        if clear:
            break
    else:
        raise AssertionError("no draw kept clear arg max winners for the whole run")
    final = [run.model.host_params() for run in runs]
    failures = []
    for name, allowed in budget.items():
        difference = float(np.max(np.abs(final[0][name] - final[1][name])))
        if not difference <= allowed:
            failures.append(f"{name}: parameters differ by {difference:.3g} > {allowed:.3g}")
    return failures
