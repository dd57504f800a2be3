"""Gradient estimators on the fast path: direct (one- and two-sided), Gumbel-softmax, exact.

Each `*_gradients(model, x, ...)` fills `model.grads` with the gradients of the mean loss over the
batch and returns that loss (a 0-d backend array: no host sync). They mirror, op for op, the
float64 functions of dvae_cupy/reference.py that the tests compare them with.
Gumbel noise for training step t is the counter-based stream (seed, t), so a CPU run and a GPU
run with the same seed see the same noise.
"""
from dataclasses import dataclass

import numpy as np

from .reference import check_positive

ESTIMATORS = ("direct", "gumbel-softmax", "exact")


@dataclass(frozen=True)
class EstimatorConfig:
    name: str = "direct"
    samples: int = 1                # M Gumbel samples per data point
    two_sided: bool = False         # direct: central difference in eps
    kl_backprop: bool = False       # direct: False is the published code (KL reported, not trained);
    # True adds the KL's exact gradient, which at the paper's eps outweighs the shrunk direct
    # estimate of the BCE gradient and collapses q(z|x) towards uniform (BENCHMARKS.md)
    straight_through: bool = False  # gumbel-softmax: decode the hard code, back-propagate the soft one

    def __post_init__(self):
        if self.name not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.name!r}")
        if int(self.samples) != self.samples or self.samples < 1:
            raise ValueError(f"samples (M) must be an integer >= 1, got {self.samples!r}")


def sample_codes(model, logits, seed, counter, samples):
    """Gumbel-max codes (R, N) int32 and the noise (R, N*K) used, R = B*M."""
    shape, buf = model.shape, model.buf
    rows = len(logits) * samples
    gumbel = buf("gumbel", (rows, shape.n_codes))
    model.ops.gumbel_noise(seed, counter, gumbel)
    codes = buf("codes", (rows, shape.n_latent), np.int32)
    model.ops.gumbel_argmax(logits, gumbel, shape.n_categories, samples, codes)
    return codes, gumbel


def _kl_and_grad(model, logits, grad_scale):
    """Per-sample KL to the uniform prior (B,), and dlogits initialised to grad_scale * dKL."""
    kl = model.buf("kl", (len(logits),))
    dlogits = model.buf("dlogits", logits.shape)
    model.ops.softmax_kl(logits, model.shape.n_categories, grad_scale, kl, dlogits)
    return kl, dlogits


def direct_gradients(model, x, seed, counter, eps, samples=1, two_sided=False, kl_backprop=True):
    """The paper's estimator: decoder by backprop at z_opt = argmax(h + g); encoder logits by
    (onehot(z_opt) - onehot(z_dir)) / eps with z_dir = argmax(h + g - eps L) over neighbours.
    `counter` and `eps` are numbers, or 1-element device arrays when a CUDA graph replays the step."""
    if np.isscalar(eps):
        check_positive("eps", eps)
    batch, rows = len(x), len(x) * samples
    logits = model.encode_logits(x)
    codes, gumbel = sample_codes(model, logits, seed, counter, samples)
    out = model.decode_codes(codes)
    recon = model.buf("recon", (rows,))
    dout = model.buf("dout", out.shape)
    model.ops.bce_rows(out, x, samples, 1.0 / rows, recon, dout)
    losses = model.candidate_losses(x, codes, samples, recon)
    kl, dlogits = _kl_and_grad(model, logits, 1.0 / batch if kl_backprop else 0.0)
    model.ops.direct_logit_grad(logits, gumbel, losses, codes, model.shape.n_categories, samples,
                                eps, 1.0 / batch, two_sided, dlogits)
    model.decoder_backward_codes(codes, dout)
    model.encoder_backward(x, dlogits)
    return recon.mean() + kl.mean()


def gumbel_softmax_gradients(model, x, seed, counter, tau, samples=1, straight_through=False):
    """The relaxed baseline: decode y = softmax((h + g) / tau) (or its arg max, straight-through)
    and back-propagate through y. Written with array ops: it is the baseline, not the hot path."""
    check_positive("tau", tau)
    xp, shape = model.xp, model.shape
    batch, rows = len(x), len(x) * samples
    logits = model.encode_logits(x)
    gumbel = model.buf("gumbel", (rows, shape.n_codes))
    model.ops.gumbel_noise(seed, counter, gumbel)
    scores = (xp.repeat(logits, samples, axis=0) + gumbel).reshape(rows, shape.n_latent, -1) / tau
    relaxed = xp.exp(scores - scores.max(axis=-1, keepdims=True))
    relaxed /= relaxed.sum(axis=-1, keepdims=True)
    codes = relaxed
    if straight_through:
        codes = (relaxed.argmax(axis=-1)[..., None] == xp.arange(shape.n_categories)).astype(np.float32)
    codes = xp.ascontiguousarray(codes.reshape(rows, -1), dtype=np.float32)
    out = model.decode_dense(codes)
    recon = model.buf("recon", (rows,))
    dout = model.buf("dout", out.shape)
    model.ops.bce_rows(out, x, samples, 1.0 / rows, recon, dout)
    dcodes = model.decoder_backward_dense(codes, dout).reshape(relaxed.shape)
    drelaxed = relaxed * (dcodes - (relaxed * dcodes).sum(axis=-1, keepdims=True)) / tau
    kl, dlogits = _kl_and_grad(model, logits, 1.0 / batch)
    dlogits += drelaxed.reshape(batch, samples, -1).sum(axis=1)
    model.encoder_backward(x, dlogits)
    return recon.mean() + kl.mean()


def exact_gradients(model, x):
    """N = 1: the exact gradient of E_q[L] + KL by enumerating the K codes (the unbiased baseline).
    All samples share the K codes, so the decoder runs on K rows and the batch enters by GEMMs."""
    xp, shape, p, g = model.xp, model.shape, model.params, model.grads
    if shape.n_latent != 1:
        raise ValueError(f"the exact estimator enumerates K codes and needs n_latent = 1, got {shape.n_latent}")
    batch = len(x)
    logits = model.encode_logits(x)
    losses = model.all_code_losses(x)                       # (B, K)
    q = xp.exp(logits - logits.max(axis=1, keepdims=True))
    q /= q.sum(axis=1, keepdims=True)
    expected = (q * losses).sum(axis=1)
    # Decoder: dL/d out_k = sum_b q_bk (sigmoid(out_k) - x_b) / B.
    hidden = model.buf("code_hidden", (shape.n_categories, shape.hidden))   # left by all_code_losses
    out = model.buf("code_out", (shape.n_categories, shape.pixels)) + p["dec_b2"]
    sigmoid = 0.5 * (1.0 + xp.tanh(0.5 * out))
    dout = (q.sum(axis=0)[:, None] * sigmoid - q.T @ x) / batch
    xp.matmul(hidden.T, dout.astype(np.float32), out=g["dec_w2"])
    xp.sum(dout, axis=0, out=g["dec_b2"])
    dhidden = (dout @ p["dec_w2"].T).astype(np.float32)
    model.ops.relu_backward(dhidden, hidden)
    g["dec_w1"][...] = dhidden                               # the K codes are the identity rows
    xp.sum(dhidden, axis=0, out=g["dec_b1"])
    kl, dlogits = _kl_and_grad(model, logits, 1.0 / batch)
    dlogits += q * (losses - expected[:, None]) / batch
    model.encoder_backward(x, dlogits)
    return expected.mean() + kl.mean()


def estimator_gradients(model, config, x, seed, counter, eps, tau):
    """Dispatch on the configured estimator; returns the batch's mean loss (0-d array)."""
    if config.name == "direct":
        return direct_gradients(model, x, seed, counter, eps, config.samples, config.two_sided,
                                config.kl_backprop)
    if config.name == "gumbel-softmax":
        return gumbel_softmax_gradients(model, x, seed, counter, tau, config.samples,
                                        config.straight_through)
    return exact_gradients(model, x)
