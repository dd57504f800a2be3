"""dvae-check: every kernel and every estimator step of a backend against the float64 reference.

What a user runs first on a new machine (`dvae-check`, or `dvae-check --backend cpu`): it prints
one row per (op, shape) with the largest error relative to the reference's scale, and exits 1 if
any row fails. The test suite runs the same checks on the CPU, and on the CUDA kernels under the
Numba CUDA simulator (NumPy arrays standing in for CuPy), so this file is itself tested.

`dvae-check --bench` is the workbench (llm.c's dev/cuda style): each kernel op is also run at
the shapes of a real training step and timed there (median of many launches after a warm-up,
the device synchronised around each), beside its check at that shape. The whole-step checks
(direct_step, structured_step, ...) are checks only: benchmarks/bench_step.py times steps.

Each check builds its inputs once and returns a Case: `run()` launches the op (no host sync),
`error()` compares its result with the reference. Error = max |fast - reference| / max
|reference|: float32 kernels against float64 truth. Codes (arg max outputs) are compared exactly
on inputs built without near-ties.
"""
import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

from . import reference as ref
from .estimators import (batch_loss, direct_gradients, exact_gradients,
                         gumbel_softmax_gradients, structured_direct_gradients)
from .evaluate import eval_seed, marginal_nll, sampled_loss
from .kernels import rng as cpu_rng
from .kernels.batch import AS_IS, BERNOULLI, THRESHOLD
from .model import Model, ModelShape, Pruning
from .workspace import EvalWorkspace, TrainWorkspace

FLOAT32_TOLERANCE = 2e-5     # one float32 op chain against float64, relative to the scale
STEP_TOLERANCE = 2e-4        # a whole training step: several GEMMs and reductions in float32


@dataclass(frozen=True)
class CheckResult:
    op: str
    shape: str
    error: float
    tolerance: float
    milliseconds: float | None = None   # --bench: median time of one run

    @property
    def passed(self):
        return bool(np.isfinite(self.error) and self.error <= self.tolerance)


@dataclass
class Case:
    run: object     # () -> None: the op on the backend, no host sync
    error: object   # () -> float: its result against the reference (after run)


def scaled_error(fast, truth):
    fast, truth = np.asarray(fast, np.float64), np.asarray(truth, np.float64)
    if fast.shape != truth.shape:
        return np.inf
    return float(np.max(np.abs(fast - truth), initial=0.0) / max(np.max(np.abs(truth), initial=0.0), 1e-30))


def exact_mismatch(fast, truth):
    """Fraction of differing entries (codes): 0 when equal."""
    fast, truth = np.asarray(fast), np.asarray(truth)
    return np.inf if fast.shape != truth.shape else float(np.mean(fast != truth))


def _dev(backend, array, dtype=np.float32):
    return backend.xp.asarray(np.ascontiguousarray(array, dtype=dtype))


def _scalar(backend, value, dtype):
    """A 1-element array on the backend: how per-step scalars reach the kernels."""
    return backend.xp.asarray(np.array([value], dtype=dtype))


def _codes(rng, rows, n_latent, n_categories):
    return rng.integers(0, n_categories, size=(rows, n_latent)).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# Op checks: each takes (backend, rng, *shape) and returns a Case.

def check_bias_act(backend, rng, rows, cols):
    a, bias = rng.normal(size=(rows, cols)), rng.normal(size=cols)
    source, out, device_bias = _dev(backend, a), _dev(backend, a), _dev(backend, bias)

    def run():
        out[...] = source
        backend.ops.bias_act(out, device_bias, True)
    return Case(run, lambda: scaled_error(backend.to_host(out),
                                          ref.relu(a.astype(np.float32) + bias.astype(np.float32))))


def check_relu_backward(backend, rng, rows, cols):
    grad, act = rng.normal(size=(rows, cols)), ref.relu(rng.normal(size=(rows, cols)))
    source, out, device_act = _dev(backend, grad), _dev(backend, grad), _dev(backend, act)
    grad_bias = _dev(backend, np.full(cols, 7.0))  # must be overwritten

    def run():
        out[...] = source
        backend.ops.relu_backward(out, device_act, grad_bias)

    def error():
        masked = grad.astype(np.float32).astype(np.float64) * (act > 0)
        return max(scaled_error(backend.to_host(out), masked),
                   scaled_error(backend.to_host(grad_bias), masked.sum(axis=0)))
    return Case(run, error)


def check_gather_rows_sum(backend, rng, rows, n_latent, n_categories, hidden):
    weight, bias = rng.normal(size=(n_latent * n_categories, hidden)), rng.normal(size=hidden)
    codes = _codes(rng, rows, n_latent, n_categories)
    args = (_dev(backend, weight), _dev(backend, bias), _dev(backend, codes, np.int32))
    pre, act = _dev(backend, np.zeros((rows, hidden))), _dev(backend, np.zeros((rows, hidden)))

    def error():
        truth = ref.onehot(codes, n_categories).reshape(rows, -1) @ weight + bias
        return max(scaled_error(backend.to_host(pre), truth),
                   scaled_error(backend.to_host(act), ref.relu(truth)))
    return Case(lambda: backend.ops.gather_rows_sum(*args, n_categories, pre, act), error)


def check_scatter_rows_add(backend, rng, rows, n_latent, n_categories, hidden):
    grad_out, act = rng.normal(size=(rows, hidden)), ref.relu(rng.normal(size=(rows, hidden)))
    codes = _codes(rng, rows, n_latent, n_categories)
    args = (_dev(backend, grad_out), _dev(backend, act), _dev(backend, codes, np.int32))
    grad_weight = _dev(backend, np.full((n_latent * n_categories, hidden), 7.0))  # overwritten
    grad_bias = _dev(backend, np.full(hidden, 7.0))

    def error():
        masked = grad_out * (act > 0)
        truth = ref.onehot(codes, n_categories).reshape(rows, -1).T @ masked
        return max(scaled_error(backend.to_host(grad_weight), truth),
                   scaled_error(backend.to_host(grad_bias), masked.sum(axis=0)))
    return Case(lambda: backend.ops.scatter_rows_add(*args, n_categories, grad_weight, grad_bias), error)


def check_adam_update(backend, rng, size, steps):
    """`steps` Adam updates (steps 1, 2, ...: the bias corrections move) of one array."""
    param, m, v = rng.normal(size=size), np.zeros(size), np.zeros(size)
    dev = [_dev(backend, a) for a in (param, m, v)]
    grads = [rng.normal(size=size) for _ in range(steps)]
    device_grads = [_dev(backend, g) for g in grads]
    step_arrays = [_scalar(backend, step, np.int64) for step in range(1, steps + 1)]

    def run():
        for grad, step in zip(device_grads, step_arrays):
            backend.ops.adam_update(dev[0], grad, dev[1], dev[2], 1e-2, 0.9, 0.999, 1e-8, step)

    def error():
        p, mm, vv = param, m, v
        for step, grad in enumerate(grads, start=1):
            p, mm, vv = ref.adam_step(p, grad, mm, vv, step, lr=1e-2)
        return scaled_error(backend.to_host(dev[0]), p)
    return Case(run, error)


def check_bce_rows(backend, rng, batch, samples, pixels):
    rows = batch * samples
    out, x = rng.normal(scale=4, size=(rows, pixels)), (rng.uniform(size=(batch, pixels)) > 0.5) * 1.0
    bias = rng.normal(size=pixels)
    args = (_dev(backend, out), _dev(backend, bias), _dev(backend, x))
    loss, grad = _dev(backend, np.zeros(rows)), _dev(backend, np.zeros((rows, pixels)))

    def error():
        logits, targets = out + bias.astype(np.float32), np.repeat(x, samples, axis=0)
        return max(scaled_error(backend.to_host(loss), ref.bce_with_logits(logits, targets)),
                   scaled_error(backend.to_host(grad), 0.5 * ref.bce_with_logits_grad(logits, targets)))
    return Case(lambda: backend.ops.bce_rows(*args, samples, 0.5, loss, grad), error)


def check_sampled_code_grads(backend, rng, batch, samples, n_categories, pixels):
    """N = 1: dBCE/dlogits of the K codes summed over the rows that sampled each, and the rows'
    losses read from the (R, K) candidate losses."""
    rows = batch * samples
    code_out, bias = rng.normal(scale=4, size=(n_categories, pixels)), rng.normal(size=pixels)
    x, codes = _binary_images(rng, batch, pixels), _codes(rng, rows, 1, n_categories)
    losses = rng.uniform(50, 300, size=(rows, n_categories))
    args = [_dev(backend, a) for a in (code_out, bias, x)] + [_dev(backend, codes, np.int32)]
    device_losses = _dev(backend, losses)
    grad, sampled = _dev(backend, np.zeros((n_categories, pixels))), _dev(backend, np.zeros(rows))

    def run():
        backend.ops.sampled_code_grads(*args, samples, 1.0 / rows, grad)
        backend.ops.sampled_code_losses(device_losses, args[3], sampled)

    def error():
        logits = (code_out.astype(np.float32) + bias.astype(np.float32)).astype(np.float64)
        targets = np.repeat(x, samples, axis=0)
        truth = ref.onehot(codes, n_categories)[:, 0].T @ (
            ref.bce_with_logits_grad(logits[codes[:, 0]], targets) / rows)
        rows_truth = losses.astype(np.float32)[np.arange(rows), codes[:, 0]]
        return max(scaled_error(backend.to_host(grad), truth),
                   exact_mismatch(backend.to_host(sampled), rows_truth))
    return Case(run, error)


def check_softplus_row_sums(backend, rng, rows, pixels):
    out, bias = rng.normal(scale=4, size=(rows, pixels)), rng.normal(size=pixels)
    args, sums = (_dev(backend, out), _dev(backend, bias)), _dev(backend, np.zeros(rows))
    return Case(lambda: backend.ops.softplus_row_sums(*args, sums),
                lambda: scaled_error(backend.to_host(sums), ref.softplus(out + bias).sum(axis=1)))


def check_softmax_kl(backend, rng, batch, n_latent, n_categories):
    logits = rng.normal(scale=3, size=(batch, n_latent * n_categories))
    device_logits = _dev(backend, logits)
    kl, grad = _dev(backend, np.zeros(batch)), _dev(backend, np.zeros(logits.shape))

    def error():
        h = logits.reshape(batch, n_latent, n_categories)
        return max(scaled_error(backend.to_host(kl), ref.kl_uniform(h)),
                   scaled_error(backend.to_host(grad), 0.25 * ref.kl_uniform_grad(h).reshape(batch, -1)))
    return Case(lambda: backend.ops.softmax_kl(device_logits, n_categories, 0.25, kl, grad), error)


def _gumbel_truth(bits):
    u = ((bits >> 9).astype(np.float64) + 0.5) * 2.0 ** -23
    return -np.log(-np.log(u))


def check_gumbel_noise(backend, rng, size):
    seed, step = int(rng.integers(2 ** 63)), int(rng.integers(2 ** 40))
    counter = _scalar(backend, step, np.uint64)
    bits_fast, noise_fast = _dev(backend, np.zeros(size), np.uint32), _dev(backend, np.zeros(size))

    def run():
        backend.ops.philox_bits(seed, counter, bits_fast)
        backend.ops.gumbel_noise(seed, counter, noise_fast)

    def error():
        bits = np.zeros(size, np.uint32)
        cpu_rng.philox_bits(seed, np.array([step], np.uint64), bits)
        return (scaled_error(backend.to_host(noise_fast), _gumbel_truth(bits))
                + exact_mismatch(backend.to_host(bits_fast), bits))
    return Case(run, error)


def _separated_scores(rng, shape, gap=0.05):
    """Scores whose arg max is unambiguous in float32: distinct values at least `gap` apart."""
    ranks = np.argsort(rng.uniform(size=shape), axis=-1).astype(np.float64)
    return ranks * gap * 20 + rng.uniform(0, gap, size=shape)


def check_sample_codes(backend, rng, batch, samples, n_latent, n_categories, per_image=False):
    """Gumbel-max codes and the noise they used: the noise against the Philox stream's exact
    values (float32 against float64), plus the fraction of codes that differ from the
    reference's arg max of logits + that noise (any differing code fails the tolerance)."""
    logits = _separated_scores(rng, (batch, n_latent, n_categories)) * 10
    rows, seed, step = batch * samples, int(rng.integers(2 ** 63)), int(rng.integers(2 ** 40))
    device_logits, counter = _dev(backend, logits.reshape(batch, -1)), _scalar(backend, step, np.uint64)
    gumbel = _dev(backend, np.zeros((rows, n_latent * n_categories)))
    codes = _dev(backend, np.zeros((rows, n_latent)), np.int32)

    def error():
        width = n_latent * n_categories
        if per_image:  # image b's draws: stream (seed, step + b), elements m*NK + c
            bits = np.zeros((batch, samples * width), np.uint32)
            for b in range(batch):
                cpu_rng.philox_bits(seed, np.array([step + b], np.uint64), bits[b])
        else:
            bits = np.zeros(rows * width, np.uint32)
            cpu_rng.philox_bits(seed, np.array([step], np.uint64), bits)
        noise = backend.to_host(gumbel)
        error = scaled_error(noise, _gumbel_truth(bits).reshape(rows, width))
        z = ref.gumbel_max(logits.astype(np.float32), noise.reshape(batch, samples, n_latent, n_categories))
        return error + exact_mismatch(backend.to_host(codes), z.reshape(rows, n_latent))
    return Case(lambda: backend.ops.sample_codes(device_logits, seed, counter, n_categories, samples,
                                                 per_image, gumbel, codes), error)


def check_gather_targets(backend, rng, rows, pixels, mode):
    images = rng.integers(0, 256 if mode != AS_IS else 2, size=(3 * rows + 1, pixels)).astype(np.uint8)
    order = rng.permutation(len(images)).astype(np.int64)
    start, seed, step = rows, int(rng.integers(2 ** 63)), int(rng.integers(2 ** 40))
    args = (_dev(backend, images, np.uint8), _dev(backend, order, np.int64), start, mode, seed,
            _scalar(backend, step, np.uint64))
    out = _dev(backend, np.full((rows, pixels), 7.0))

    def error():
        pixels_ = images[order[start:start + rows]].astype(np.float64)
        if mode == AS_IS:
            truth = pixels_
        elif mode == THRESHOLD:
            truth = (pixels_ >= 128) * 1.0
        else:
            bits = np.zeros((rows, pixels), np.uint32)
            cpu_rng.philox_bits(seed, np.array([step], np.uint64), bits)
            truth = (((bits >> 8) + 0.5) * 2.0 ** -24 < pixels_ / 255) * 1.0
        return exact_mismatch(backend.to_host(out), truth)
    return Case(lambda: backend.ops.gather_targets(*args, out), error)


def check_finish_step(backend, rng, rows, batch):
    recon, kl = rng.uniform(50, 300, size=rows), rng.uniform(0, 3, size=batch)
    args = (_dev(backend, recon), _dev(backend, kl))
    loss_sum = _scalar(backend, 10.0, np.float64)
    counter, adam_step = _scalar(backend, 2 ** 40, np.uint64), _scalar(backend, 7, np.int64)

    def error():
        expected = 10.0 + recon.astype(np.float32).mean() + kl.astype(np.float32).mean()
        counters = [int(backend.to_host(counter)[0]), int(backend.to_host(adam_step)[0])]
        return scaled_error(backend.to_host(loss_sum)[0], expected) + exact_mismatch(counters, [2 ** 40 + 1, 8])
    return Case(lambda: backend.ops.finish_step(*args, loss_sum, counter, adam_step), error)


# ---------------------------------------------------------------------------------------------
# Whole estimator steps on a small model, with the same Gumbel noise as the reference.

def _small_model(backend, n_latent, n_categories, pixels=13, hidden=9, seed=0):
    model = Model(ModelShape(n_latent, n_categories, hidden, pixels), backend, seed=seed)
    params = {k: v.astype(np.float64) for k, v in model.host_params().items()}
    # A louder decoder, so that eps * L moves the arg max and the check compares something.
    params["dec_w2"] *= 6.0
    model.load_params(params)
    return model, {k: v.astype(np.float32).astype(np.float64) for k, v in params.items()}


def _noise(seed, counter, batch, samples, n_latent, n_categories):
    noise = np.zeros((batch * samples, n_latent * n_categories), np.float32)
    cpu_rng.gumbel_noise(seed, np.array([counter], np.uint64), noise)
    return noise.astype(np.float64).reshape(batch, samples, n_latent, n_categories)


def _grads_error(model, grads):
    host = {k: model.backend.to_host(v) for k, v in model.grads.items()}
    return max(scaled_error(host[name], grads[name]) for name in ref.PARAM_NAMES)


def _binary_images(rng, batch, pixels):
    return (rng.uniform(size=(batch, pixels)) > 0.5) * 1.0


def check_direct_step(backend, rng, batch, samples, n_latent, n_categories, two_sided=False,
                      kl_backprop=False, real=False, prune=False):
    """A whole direct step; real=True at the paper's H = 300, D = 784 with cache-sized chunks,
    else on a small model with candidate chunks of 7 rows (so that chunking is exercised);
    prune=True skips the neighbours that cannot be z_dir (the CPU's kernels/neighbour_pruning.py).
    On the CPU the encoder's backward runs on the active rows, as in training
    (kernels/active_rows.py)."""
    model_shape, chunk = ({"pixels": 784, "hidden": 300}, 4096) if real else ({}, 7)
    model, params = _small_model(backend, n_latent, n_categories, **model_shape)
    x = _binary_images(rng, batch, model.shape.pixels)
    ws = TrainWorkspace(backend.xp, model.shape, "direct", batch, samples, candidate_chunk=chunk,
                        prune=prune, active_rows=backend.name == "cpu")  # as the trainer runs it
    seed, counter, eps = 11, 5, 0.5
    device_x, result = _dev(backend, x), {}
    scalars = _scalar(backend, counter, np.uint64), _scalar(backend, eps, np.float32)

    def run():
        result["arrays"] = direct_gradients(model, ws, device_x, seed, *scalars, samples, two_sided,
                                            kl_backprop, prune)

    def error():
        gumbel = _noise(seed, counter, batch, samples, n_latent, n_categories)
        ref_loss, grads, _ = ref.direct_estimator(params, x, n_categories, gumbel, eps, two_sided, kl_backprop)
        return max(scaled_error(batch_loss(*result["arrays"]), ref_loss), _grads_error(model, grads))
    return Case(run, error)


def _small_pairwise_model(backend, n_latent, mode, pixels=13, hidden=9, seed=0):
    shape = ModelShape(n_latent, 2, hidden, pixels, structure="pairwise", pairwise=mode)
    model = Model(shape, backend, seed=seed)
    params = {k: v.astype(np.float64) for k, v in model.host_params().items()}
    params["dec_w2"] *= 6.0    # a louder decoder: eps * L moves the arg max
    params["enc_w2"] *= 4.0    # stronger potentials: the pairwise terms matter
    model.load_params(params)
    return model, {k: v.astype(np.float32).astype(np.float64) for k, v in params.items()}


def check_structured_step(backend, rng, batch, samples, n_latent, mode="attractive", two_sided=False,
                          prune=False):
    """A whole direct step of the pairwise binary model against reference.structured_direct_estimator;
    prune=True decodes only the neighbours z_dir can need (the CPU's kernels/structured_pruning.py)."""
    model, params = _small_pairwise_model(backend, n_latent, mode)
    x = _binary_images(rng, batch, model.shape.pixels)
    ws = TrainWorkspace(backend.xp, model.shape, "direct", batch, samples, candidate_chunk=7,
                        prune=prune, active_rows=backend.name == "cpu")  # as the trainer runs it
    seed, counter, eps = 11, 5, 0.5
    device_x, result = _dev(backend, x), {}
    scalars = _scalar(backend, counter, np.uint64), _scalar(backend, eps, np.float32)

    def run():
        result["arrays"] = structured_direct_gradients(model, ws, device_x, seed, *scalars, samples,
                                                       two_sided, prune)

    def error():
        gumbel = _noise(seed, counter, batch, samples, n_latent, 2)
        ref_loss, grads, info = ref.structured_direct_estimator(params, x, n_latent, gumbel, eps, mode,
                                                                two_sided)
        codes = exact_mismatch(backend.to_host(ws.codes), info["z_opt"].reshape(batch * samples, -1))
        return max(scaled_error(batch_loss(*result["arrays"]), ref_loss), _grads_error(model, grads)) + codes
    return Case(run, error)


def check_structured_argmax(backend, rng, batch, samples, n_latent, mode):
    """The exact solvers against brute-force enumeration, on potentials with a clear winner."""
    shape = ModelShape(n_latent, 2, structure="pairwise", pairwise=mode)
    model = Model(shape, backend, seed=0)
    rows, pairs = batch * samples, shape.n_pairs
    while True:
        unary = rng.normal(scale=2, size=(rows, 2 * n_latent))
        pairwise = rng.normal(scale=2, size=(batch, pairs))
        pairwise = np.abs(pairwise) if mode == "attractive" else pairwise
        scores = ref.all_code_scores(unary.reshape(rows, n_latent, 2),
                                     np.repeat(pairwise, samples, axis=0))
        top2 = np.sort(scores, axis=-1)[:, -2:]
        if np.min(top2[:, 1] - top2[:, 0]) > 1e-3:
            break
    args = (_dev(backend, unary), _dev(backend, pairwise))
    codes = _dev(backend, np.zeros((rows, n_latent)), np.int32)

    def error():
        truth = ref.structured_argmax_enumerate(unary.reshape(rows, n_latent, 2),
                                                np.repeat(pairwise, samples, axis=0))
        return exact_mismatch(backend.to_host(codes), truth)
    return Case(lambda: model.structured_argmax(*args, samples, codes), error)


def check_candidate_losses(backend, rng, batch, samples, n_latent, n_categories):
    """All N*K neighbours' decoder losses (the direct estimator's inner loop), chunked."""
    model, params = _small_model(backend, n_latent, n_categories)
    x = _binary_images(rng, batch, model.shape.pixels)
    codes = _codes(rng, batch * samples, n_latent, n_categories)
    ws = TrainWorkspace(backend.xp, model.shape, "direct", batch, samples, candidate_chunk=7)
    device_x, device_codes = _dev(backend, x), _dev(backend, codes, np.int32)

    def run():
        if ws.decoder is not None:  # N > 1: candidates start from the sampled code's pre-activation
            out = model.decode_codes(device_codes, ws.decoder)
            model.ops.bce_rows(out, model.params["dec_b2"], device_x, samples, 0.0, ws.recon, ws.dout)
        model.candidate_losses(device_x, device_codes, samples, ws.recon, ws.decoder, ws.candidates,
                               ws.losses)

    def error():
        truth = ref.candidate_losses(params, np.repeat(x, samples, axis=0), codes, n_categories)
        return scaled_error(backend.to_host(ws.losses), truth.reshape(batch * samples, -1))
    return Case(run, error)


def check_candidate_losses_pruned(backend, rng, batch, samples, n_latent, n_categories):
    """The neighbours' losses with pruning (the CPU's kernels/neighbour_pruning.py): every kept
    loss against the reference's, every skipped one +inf, and every skipped neighbour losing the
    perturbed arg max to its sampled value with the reference's loss (the error counts the
    skipped ones that would not)."""
    model, params = _small_model(backend, n_latent, n_categories)
    x = _binary_images(rng, batch, model.shape.pixels)
    rows, nk = batch * samples, n_latent * n_categories
    codes = _codes(rng, rows, n_latent, n_categories)
    logits, gumbel = rng.normal(scale=3, size=(batch, nk)), rng.gumbel(size=(rows, nk))
    eps = 0.5
    ws = TrainWorkspace(backend.xp, model.shape, "direct", batch, samples, candidate_chunk=7,
                        prune=True)
    device = [_dev(backend, x), _dev(backend, codes, np.int32)]
    pruning = Pruning(_dev(backend, logits), _dev(backend, gumbel), _scalar(backend, eps, np.float32),
                      1.0 / rows)

    def run():
        out = model.decode_codes(device[1], ws.decoder)
        model.ops.bce_rows(out, model.params["dec_b2"], device[0], samples, 1.0 / rows, ws.recon,
                           ws.dout)
        model.decoder_hidden_grad(ws.decoder, ws.dout)
        model.candidate_losses(*device, samples, ws.recon, ws.decoder, ws.candidates, ws.losses,
                               pruning)

    def error():
        truth = ref.candidate_losses(params, np.repeat(x, samples, axis=0), codes,
                                     n_categories).reshape(rows, nk)
        got = backend.to_host(ws.losses).astype(np.float64)
        kept = np.isfinite(got)
        values = (np.repeat(logits.astype(np.float32), samples, axis=0).astype(np.float64)
                  + gumbel.astype(np.float32) - eps * truth).reshape(rows, n_latent, n_categories)
        sampled = np.take_along_axis(values, codes[..., None], axis=2)
        could_win = (values >= sampled).reshape(rows, nk)
        wrong = np.mean((~kept & ((got != np.inf) | could_win)))
        return max(scaled_error(np.where(kept, got, truth), truth), wrong)
    return Case(run, error)


def check_gumbel_softmax_step(backend, rng, batch, samples, n_latent, n_categories, straight_through=False):
    model, params = _small_model(backend, n_latent, n_categories)
    x = _binary_images(rng, batch, model.shape.pixels)
    ws = TrainWorkspace(backend.xp, model.shape, "gumbel-softmax", batch, samples)
    seed, counter, tau = 12, 3, 0.7
    device_x, device_counter, result = _dev(backend, x), _scalar(backend, counter, np.uint64), {}

    def run():
        result["arrays"] = gumbel_softmax_gradients(model, ws, device_x, seed, device_counter, tau,
                                                    samples, straight_through)

    def error():
        gumbel = _noise(seed, counter, batch, samples, n_latent, n_categories)
        ref_loss, grads = ref.gumbel_softmax_estimator(params, x, n_categories, gumbel, tau, straight_through)
        return max(scaled_error(batch_loss(*result["arrays"]), ref_loss), _grads_error(model, grads))
    return Case(run, error)


def check_exact_step(backend, rng, batch, n_categories):
    model, params = _small_model(backend, 1, n_categories)
    x = _binary_images(rng, batch, model.shape.pixels)
    ws = TrainWorkspace(backend.xp, model.shape, "exact", batch)
    device_x, result = _dev(backend, x), {}

    def run():
        result["arrays"] = exact_gradients(model, ws, device_x)

    def error():
        ref_loss, grads = ref.exact_estimator(params, x, n_categories)
        return max(scaled_error(batch_loss(*result["arrays"]), ref_loss), _grads_error(model, grads))
    return Case(run, error)


def check_evaluation(backend, rng, batch, n_latent, n_categories, samples=4):
    model, params = _small_model(backend, n_latent, n_categories)
    x = _binary_images(rng, batch, model.shape.pixels)
    seed, device_x, result = 13, _dev(backend, x), {}
    loss_ws = EvalWorkspace(backend.xp, model.shape, batch)
    nll_ws = EvalWorkspace(backend.xp, model.shape, batch, samples if n_latent > 1 else 1)

    def run():
        result["loss"] = backend.to_host(sampled_loss(model, loss_ws, device_x, seed))
        result["nll"] = backend.to_host(marginal_nll(model, nll_ws, device_x, seed, samples))

    def error():
        noise = _noise(eval_seed(seed), 0, batch, 1, n_latent, n_categories)
        error = scaled_error(result["loss"], ref.sampled_loss(params, x, n_categories, noise))
        if n_latent == 1:
            truth = ref.marginal_nll_exact(params, x, n_categories)
        else:
            noise = _noise(eval_seed(seed) ^ 1, 0, batch, samples, n_latent, n_categories)
            truth = ref.marginal_nll_importance(params, x, n_categories, noise)
        return max(error, scaled_error(result["nll"], truth))
    return Case(run, error)


def check_adam_on_model(backend, rng, n_latent, n_categories):
    model, params = _small_model(backend, n_latent, n_categories)
    grads = {k: rng.normal(size=v.shape) for k, v in params.items()}
    for name, g in grads.items():
        model.grads[name][...] = _dev(backend, g)
    first_step = _scalar(backend, 1, np.int64)

    def error():
        expected = {k: ref.adam_step(params[k], grads[k], 0 * params[k], 0 * params[k], 1, lr=1e-2)[0]
                    for k in params}
        return max(scaled_error(model.backend.to_host(model.params[k]), expected[k]) for k in expected)
    return Case(lambda: model.adam_update(1e-2, first_step), error)


# (op name, check, tolerance, shapes, bench shapes): shapes include batch 1, K = 2, N > 1, M > 1
# and sizes that are not multiples of a CUDA block (256); bench shapes are a real step's
# (batch 100, H = 300, D = 784, N = 1 or 20, K = 10).
CHECKS = [
    ("gumbel_noise", check_gumbel_noise, FLOAT32_TOLERANCE, [(1,), (1000,), (4099,)], [(20000,)]),
    ("sample_codes", check_sample_codes, FLOAT32_TOLERANCE, [(1, 1, 1, 2), (4, 3, 5, 10)],
     [(100, 1, 1, 10), (100, 1, 20, 10)]),
    ("sample_codes_per_image", lambda b, r, *s: check_sample_codes(b, r, *s, per_image=True), FLOAT32_TOLERANCE,
     [(3, 2, 2, 3), (1, 1, 1, 2)], []),
    ("gather_targets", lambda b, r, *s: check_gather_targets(b, r, *s, AS_IS), 0.0,
     [(1, 1), (7, 30)], [(100, 784)]),
    ("gather_targets_threshold", lambda b, r, *s: check_gather_targets(b, r, *s, THRESHOLD), 0.0,
     [(5, 9)], []),
    ("gather_targets_bernoulli", lambda b, r, *s: check_gather_targets(b, r, *s, BERNOULLI), 0.0,
     [(1, 1), (6, 33)], [(100, 784)]),
    ("bias_act", check_bias_act, FLOAT32_TOLERANCE, [(1, 1), (3, 300), (17, 7)], [(100, 300)]),
    ("relu_backward", check_relu_backward, FLOAT32_TOLERANCE, [(1, 1), (5, 300)], [(100, 300)]),
    ("gather_rows_sum", check_gather_rows_sum, FLOAT32_TOLERANCE, [(1, 1, 2, 5), (6, 3, 4, 300)],
     [(100, 1, 10, 300), (100, 20, 10, 300)]),
    ("scatter_rows_add", check_scatter_rows_add, FLOAT32_TOLERANCE, [(1, 1, 2, 5), (9, 3, 4, 257)],
     [(100, 1, 10, 300), (100, 20, 10, 300)]),
    ("adam_update", check_adam_update, FLOAT32_TOLERANCE, [(1, 3), (1000, 3)], [(478_294, 1)]),
    ("bce_rows", check_bce_rows, FLOAT32_TOLERANCE, [(1, 1, 1), (3, 2, 784), (2, 1, 300)], [(100, 1, 784)]),
    ("sampled_code_grads", check_sampled_code_grads, FLOAT32_TOLERANCE,
     [(1, 1, 2, 1), (5, 3, 10, 784), (7, 1, 50, 33)], [(100, 1, 10, 784)]),
    ("softplus_row_sums", check_softplus_row_sums, FLOAT32_TOLERANCE, [(1, 5), (4, 784)], [(4096, 784)]),
    ("softmax_kl", check_softmax_kl, FLOAT32_TOLERANCE, [(1, 1, 2), (5, 3, 10), (2, 20, 10)],
     [(100, 1, 10), (100, 20, 10)]),
    ("finish_step", check_finish_step, FLOAT32_TOLERANCE, [(1, 1), (300, 100)], [(100, 100)]),
    ("candidate_losses", check_candidate_losses, FLOAT32_TOLERANCE,
     [(3, 1, 1, 10), (1, 1, 1, 2), (3, 2, 3, 4), (2, 1, 5, 2)], []),
    ("candidate_losses_pruned", check_candidate_losses_pruned, FLOAT32_TOLERANCE,
     [(3, 2, 3, 4), (2, 1, 5, 2), (4, 1, 6, 10)], []),
    ("direct_step", check_direct_step, STEP_TOLERANCE, [(5, 1, 1, 10), (4, 2, 3, 2), (1, 1, 2, 4)], []),
    ("direct_step_pruned", lambda b, r, *s: check_direct_step(b, r, *s, prune=True),
     STEP_TOLERANCE, [(4, 2, 3, 2), (5, 1, 6, 10)], [(100, 1, 20, 10)]),
    ("direct_step_two_sided", lambda b, r, *s: check_direct_step(b, r, *s, two_sided=True),
     STEP_TOLERANCE, [(4, 2, 2, 3)], []),
    ("direct_step_kl_backprop", lambda b, r, *s: check_direct_step(b, r, *s, kl_backprop=True),
     STEP_TOLERANCE, [(5, 1, 1, 10), (4, 1, 3, 2)], []),
    ("direct_step_real", lambda b, r, *s: check_direct_step(b, r, *s, real=True),
     STEP_TOLERANCE, [(6, 1, 2, 10)], [(100, 1, 1, 10), (100, 1, 20, 10)]),
    ("gumbel_softmax_step", check_gumbel_softmax_step, STEP_TOLERANCE, [(4, 2, 2, 3), (3, 1, 1, 5)], []),
    ("gumbel_softmax_st_step", lambda b, r, *s: check_gumbel_softmax_step(b, r, *s, straight_through=True),
     STEP_TOLERANCE, [(4, 1, 2, 3)], []),
    ("exact_step", check_exact_step, STEP_TOLERANCE, [(5, 10), (1, 2)], []),
    ("evaluation", check_evaluation, STEP_TOLERANCE, [(4, 1, 6), (3, 2, 3)], []),
    ("adam_on_model", check_adam_on_model, FLOAT32_TOLERANCE, [(2, 3)], []),
    ("pairwise_mincut_argmax", lambda b, r, *s: check_structured_argmax(b, r, *s, "attractive"), 0.0,
     [(5, 2, 2), (3, 1, 7)], [(100, 1, 15)]),
    ("pairwise_enumeration_argmax", lambda b, r, *s: check_structured_argmax(b, r, *s, "signed"), 0.0,
     [(5, 2, 2), (3, 1, 7)], [(100, 1, 15)]),
    ("structured_step", check_structured_step, STEP_TOLERANCE, [(4, 1, 3), (3, 2, 5)], []),
    ("structured_step_signed", lambda b, r, *s: check_structured_step(b, r, *s, mode="signed"),
     STEP_TOLERANCE, [(4, 1, 3), (3, 2, 4)], []),
    ("structured_step_two_sided", lambda b, r, *s: check_structured_step(b, r, *s, two_sided=True),
     STEP_TOLERANCE, [(4, 2, 3)], []),
    ("structured_step_pruned", lambda b, r, *s: check_structured_step(b, r, *s, prune=True),
     STEP_TOLERANCE, [(4, 1, 3), (3, 2, 5)], []),
    ("structured_pruned_signed",
     lambda b, r, *s: check_structured_step(b, r, *s, mode="signed", prune=True),
     STEP_TOLERANCE, [(3, 2, 4)], []),
]
CHECK_NAMES = [name for name, *_ in CHECKS]
# Checks of what only the CPU does (pruning the neighbours: the host sizes each chunk); a
# backend without the ops runs none of them.
CPU_ONLY_CHECKS = {"candidate_losses_pruned": "select_neighbours",
                   "direct_step_pruned": "select_neighbours",
                   "structured_step_pruned": "list_flipped_neighbours",
                   "structured_pruned_signed": "list_flipped_neighbours"}


def _time(backend, case, repeats, warmup=3):
    for _ in range(warmup):
        case.run()
    times = []
    for _ in range(repeats):
        backend.synchronize()
        started = time.perf_counter()
        case.run()
        backend.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def run_checks(backend, seed=0, only=None, bench=False, repeats=50):
    """One CheckResult per (op, shape); with bench=True the bench shapes too, timed."""
    if only:
        unknown = sorted(set(only) - set(CHECK_NAMES))
        if unknown:
            raise ValueError(f"unknown check {', '.join(map(repr, unknown))}; "
                             f"the checks are: {', '.join(CHECK_NAMES)}")
    results = []
    for op, make_case, tolerance, shapes, bench_shapes in CHECKS:
        if only and op not in only:
            continue
        if op in CPU_ONLY_CHECKS and not hasattr(backend.ops, CPU_ONLY_CHECKS[op]):
            continue
        timed = [(shape, True) for shape in bench_shapes] if bench else []
        for shape, timing in [(shape, False) for shape in shapes] + timed:
            rng = np.random.default_rng([seed, len(results)])
            case = make_case(backend, rng, *shape)
            case.run()
            error = case.error()  # before timing: some ops accumulate (Adam, finish_step)
            milliseconds = _time(backend, case, repeats) if timing else None
            results.append(CheckResult(op, "x".join(map(str, shape)), error, tolerance, milliseconds))
    return results


def format_table(results):
    timed = any(r.milliseconds is not None for r in results)
    op_width = max([len("op")] + [len(r.op) for r in results]) + 2      # columns that fit the
    shape_width = max([len("shape")] + [len(r.shape) for r in results]) + 2  # longest entry
    lines = [f"{'op':<{op_width}}{'shape':<{shape_width}}{'max error':>12}{'tolerance':>12}  result"
             + ("   ms/run" if timed else "")]
    for r in results:
        ms = f"{r.milliseconds:>9.4f}" if r.milliseconds is not None else ""
        lines.append(f"{r.op:<{op_width}}{r.shape:<{shape_width}}{r.error:>12.2e}"
                     f"{r.tolerance:>12.1e}  {'pass' if r.passed else 'FAIL'}  {ms}".rstrip())
    failed = sum(not r.passed for r in results)
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)


def check_main(argv=None):
    from .backend import get_backend, gpu_unavailable_reason
    from .errors import GPUUnavailableError

    parser = argparse.ArgumentParser(prog="dvae-check", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("auto", "cpu", "gpu"), default="auto",
                        help="auto: the GPU when one is usable, else the CPU kernels")
    parser.add_argument("--only", nargs="+", choices=CHECK_NAMES, metavar="CHECK",
                        help="run only these checks: " + ", ".join(CHECK_NAMES))
    parser.add_argument("--bench", action="store_true",
                        help="also time each kernel op at a real training step's shapes "
                             "(the whole-step checks are not timed: benchmarks/bench_step.py "
                             "times steps)")
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
    results = run_checks(backend, only=args.only, bench=args.bench)
    print(format_table(results))
    return 0 if all(r.passed for r in results) else 1
