"""Evaluation on the fast path: the paper's test loss, and the marginal likelihood.

- sampled_loss: BCE at a Gumbel-max code + KL(q || uniform), per sample (the paper's test loss).
- marginal_nll: N = 1, exact -log p(x) = log K - logsumexp_k(-L_k); N > 1, the importance-sampled
  bound -log (1/S) sum_s p(x|z_s) p(z_s) / q(z_s|x) with z_s ~ q(z|x).
Each returns per-sample values as a backend array; `dataset_mean` batches a whole split.
The evaluation noise uses its own Philox seed, so it never overlaps the training noise.
"""
import numpy as np

from .estimators import sample_codes

EVAL_SEED_SALT = 0x5EED_E7A1  # keeps evaluation noise apart from training noise


def eval_seed(seed):
    return (int(seed) ^ EVAL_SEED_SALT) & 0xFFFF_FFFF_FFFF_FFFF


def _kl(model, logits):
    kl = model.buf("eval_kl", (len(logits),))
    dlogits = model.buf("eval_dlogits", logits.shape)
    model.ops.softmax_kl(logits, model.shape.n_categories, 0.0, kl, dlogits)
    return kl


def _code_losses(model, x, codes, samples):
    """Decoder loss (R,) at codes (R, N) for x repeated `samples` times."""
    out = model.decode_codes(codes)
    recon = model.buf("eval_recon", (len(codes),))
    dout = model.buf("eval_dout", out.shape)
    model.ops.bce_rows(out, x, samples, 0.0, recon, dout)
    return recon


def sampled_loss(model, x, seed, counter=0):
    logits = model.encode_logits(x)
    codes, _ = sample_codes(model, logits, eval_seed(seed), counter, 1)
    return _code_losses(model, x, codes, 1) + _kl(model, logits)


def _logsumexp(xp, a, axis):
    top = a.max(axis=axis, keepdims=True)
    return (top + xp.log(xp.exp(a - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def marginal_nll(model, x, seed, samples=100, counter=0):
    xp, shape = model.xp, model.shape
    if shape.n_latent == 1:
        return np.log(shape.n_categories) - _logsumexp(xp, -model.all_code_losses(x), axis=1)
    logits = model.encode_logits(x)
    codes, _ = sample_codes(model, logits, eval_seed(seed) ^ 1, counter, samples)
    log_px_z = -_code_losses(model, x, codes, samples).reshape(len(x), samples)
    scores = logits.reshape(len(x), 1, shape.n_latent, -1).astype(np.float64)
    log_q_all = scores - _logsumexp(xp, scores, axis=-1)[..., None]         # (B, 1, N, K)
    picked = codes.reshape(len(x), samples, -1, 1).astype(np.int64)         # (B, S, N, 1)
    log_q = xp.take_along_axis(log_q_all, picked, axis=-1)[..., 0].sum(axis=-1)
    log_weights = log_px_z - shape.n_latent * np.log(shape.n_categories) - log_q
    return np.log(samples) - _logsumexp(xp, log_weights, axis=1)


def dataset_mean(per_sample_fn, model, images, batch_size, to_float32):
    """Mean over a whole split of per_sample_fn(model, x_batch), batching internally."""
    total = 0.0
    for start in range(0, len(images), batch_size):
        x = to_float32(images[start:start + batch_size])
        total += float(per_sample_fn(model, x).sum())
    return total / len(images)
