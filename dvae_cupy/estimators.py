"""Gradient estimators on the fast path: direct (one- and two-sided), Gumbel-softmax, exact.

Each `*_gradients(model, workspace, x, ...)` fills `model.grads` with the gradients of the mean
loss over the batch x, using the arrays of `workspace` (a TrainWorkspace made for the estimator
and the batch), and returns the two arrays whose means make the batch's loss: the decoder loss
per row (R,) and the KL per image (B,) (no host sync). They mirror, op for op, the float64
functions of dvae_cupy/reference.py that the tests compare them with.
`counter` (uint64[1]) and `eps` (float32[1]) are 1-element arrays on the backend: the Gumbel
noise of training step t is the counter-based stream (seed, t), so a CPU run and a GPU run with
the same seed see the same noise, and a CUDA graph replays the step while both move.
"""
from dataclasses import dataclass

import numpy as np

from .model import Pruning, categorical_probabilities
from .workspace import shared_code_decoder

ESTIMATORS = ("direct", "gumbel-softmax", "exact")


@dataclass(frozen=True)
class EstimatorConfig:
    name: str = "direct"
    gumbel_samples: int = 1         # M Gumbel samples per data point
    two_sided: bool = False         # direct: central difference in eps
    kl_backprop: bool = False       # direct: False is the published code (KL reported, not trained);
    # True adds the KL's exact gradient, which at the paper's eps outweighs the shrunk direct
    # estimate of the BCE gradient and collapses q(z|x) towards uniform (BENCHMARKS.md)
    straight_through: bool = False  # gumbel-softmax: decode the hard code, back-propagate the soft one

    def __post_init__(self):
        if self.name not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.name!r}")
        if int(self.gumbel_samples) != self.gumbel_samples or self.gumbel_samples < 1:
            raise ValueError(f"gumbel_samples (M) must be an integer >= 1, got {self.gumbel_samples!r}")

    @property
    def samples(self):
        """M as the workspaces count it: the exact estimator enumerates, so it draws none."""
        return 1 if self.name == "exact" else self.gumbel_samples


def direct_gradients(model, ws, x, seed, counter, eps, samples=1, two_sided=False, kl_backprop=False,
                     prune=False):
    """The paper's estimator: decoder by backprop at z_opt = argmax(h + g); encoder logits by
    (onehot(z_opt) - onehot(z_dir)) / eps with z_dir = argmax(h + g - eps L) over neighbours.
    N = 1: the sampled codes are among the K codes the candidates decode, so the decoder runs on
    those K rows only, forward and backward (workspace.shared_code_decoder).
    prune (N > 1, one-sided, the CPU; ws made with prune=True): neighbours that cannot be
    z_dir(+eps) are not decoded and their losses are +inf (kernels/neighbour_pruning.py); z_dir
    and every gradient are bit for bit the unpruned ones."""
    if prune and two_sided:
        raise ValueError("pruning finds the neighbours that cannot be z_dir(+eps); the two-sided "
                         "estimator's z_dir(-eps) needs them all: prune=False")
    ops, k = model.ops, model.shape.n_categories
    batch, rows = len(x), len(x) * samples
    logits = model.encode(x, ws.encoder)
    ops.sample_codes(logits, seed, counter, k, samples, False, ws.gumbel, ws.codes)
    shared = shared_code_decoder(model.shape)
    if shared:
        model.all_code_losses(x, ws.candidates, samples, ws.losses)
        ops.sampled_code_losses(ws.losses, ws.codes, ws.recon)
    else:
        out = model.decode_codes(ws.codes, ws.decoder)
        ops.bce_rows(out, model.params["dec_b2"], x, samples, 1.0 / rows, ws.recon, ws.dout)
        model.decoder_hidden_grad(ws.decoder, ws.dout)
        pruning = Pruning(logits, ws.gumbel, eps, 1.0 / rows) if prune else None
        model.candidate_losses(x, ws.codes, samples, ws.recon, ws.decoder, ws.candidates, ws.losses,
                               pruning)
    ops.softmax_kl(logits, k, 1.0 / batch if kl_backprop else 0.0, ws.kl, ws.dlogits)
    ops.direct_logit_grad(logits, ws.gumbel, ws.losses, ws.codes, k, samples, eps, 1.0 / batch,
                          two_sided, ws.dlogits)
    if shared:
        model.decoder_backward_sampled_codes(x, ws.codes, samples, 1.0 / rows, ws.candidates)
    else:
        model.decoder_backward_codes(ws.codes, ws.decoder, ws.dout)
    model.encoder_backward(x, ws.encoder, ws.dlogits, ws.active)
    return ws.recon, ws.kl


def structured_direct_gradients(model, ws, x, seed, counter, eps, samples=1, two_sided=False,
                                prune=False):
    """The direct estimator of the pairwise binary model (the published structured algorithm):
    z_opt = arg max_z h(x, z) + Gumbel noise on the unaries, the coordinate-wise candidate
    losses L_i(k) subtracted (times eps) from the perturbed unaries, z_dir their structured arg
    max, and the encoder's unary and pairwise gradients (stat(z_opt) - stat(z_dir)) / eps,
    through the softplus when attractive. The unary KL is reported, not back-propagated, as
    published. Returns (decoder loss per row, unary KL per image).
    prune (one-sided, the CPU; ws made with prune=True): the neighbours z_dir cannot need are
    not decoded (kernels/structured_pruning.py); z_dir and every gradient are the unpruned ones."""
    if prune and two_sided:
        raise ValueError("pruning bounds the losses from below for z_dir(+eps); the two-sided "
                         "estimator's z_dir(-eps) needs them all: prune=False")
    ops, shape, st = model.ops, model.shape, ws.structured
    batch, rows = len(x), len(x) * samples
    enc_out = model.encode(x, ws.encoder)
    unary, pairwise = model.pairwise_potentials(enc_out, st)
    # sample_codes writes the step's Gumbel noise (its categorical codes are replaced below)
    ops.sample_codes(unary, seed, counter, 2, samples, False, ws.gumbel, ws.codes)
    ops.perturb_unaries(unary, ws.gumbel, samples, st.perturbed)
    z_opt = model.structured_argmax(st.perturbed, pairwise, samples, ws.codes)
    out = model.decode_codes(z_opt, ws.decoder)
    ops.bce_rows(out, model.params["dec_b2"], x, samples, 1.0 / rows, ws.recon, ws.dout)
    model.decoder_hidden_grad(ws.decoder, ws.dout)
    if prune:
        z_dir = model.pruned_structured_direct_codes(x, z_opt, samples, ws.recon, ws.decoder,
                                                     ws.candidates, ws.losses, st, eps, 1.0 / rows)
    else:
        model.candidate_losses(x, z_opt, samples, ws.recon, ws.decoder, ws.candidates, ws.losses)
        ops.shift_unaries(st.perturbed, ws.losses, eps, False, st.shifted)
        z_dir = model.structured_argmax(st.shifted, pairwise, samples, st.codes_dir)
    ops.softmax_kl(unary, 2, 0.0, ws.kl, st.kl_grad)
    base = z_opt
    if two_sided:
        ops.shift_unaries(st.perturbed, ws.losses, eps, True, st.shifted)
        base = model.structured_argmax(st.shifted, pairwise, samples, st.codes_minus)
    ops.pairwise_direct_grad(enc_out, base, z_dir, eps, 1.0 / batch, samples,
                             shape.pairwise == "attractive", two_sided, ws.dlogits)
    model.decoder_backward_codes(z_opt, ws.decoder, ws.dout)
    model.encoder_backward(x, ws.encoder, ws.dlogits, ws.active)
    return ws.recon, ws.kl


def gumbel_softmax_gradients(model, ws, x, seed, counter, tau, samples=1, straight_through=False):
    """The relaxed baseline: decode y = softmax((h + g) / tau) (or its arg max, straight-through)
    and back-propagate through y. Written with array ops (temporaries): it is the baseline, not
    the hot path, and cannot be captured in a CUDA graph (tau is a host number)."""
    if not (np.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
    xp, shape, ops = model.xp, model.shape, model.ops
    batch, rows = len(x), len(x) * samples
    logits = model.encode(x, ws.encoder)
    ops.gumbel_noise(seed, counter, ws.gumbel)
    scores = (xp.repeat(logits, samples, axis=0) + ws.gumbel).reshape(rows, shape.n_latent, -1) / tau
    relaxed = categorical_probabilities(xp, scores)
    codes = relaxed
    if straight_through:
        codes = (relaxed.argmax(axis=-1)[..., None] == xp.arange(shape.n_categories)).astype(np.float32)
    codes = xp.ascontiguousarray(codes.reshape(rows, -1), dtype=np.float32)
    out = model.decode_dense(codes, ws.dense)
    ops.bce_rows(out, model.params["dec_b2"], x, samples, 1.0 / rows, ws.recon, ws.dout)
    dcodes = model.decoder_backward_dense(codes, ws.dense, ws.dout).reshape(relaxed.shape)
    drelaxed = relaxed * (dcodes - (relaxed * dcodes).sum(axis=-1, keepdims=True)) / tau
    ops.softmax_kl(logits, shape.n_categories, 1.0 / batch, ws.kl, ws.dlogits)
    ws.dlogits += drelaxed.reshape(batch, samples, -1).sum(axis=1)
    model.encoder_backward(x, ws.encoder, ws.dlogits)
    return ws.recon, ws.kl


def exact_gradients(model, ws, x):
    """N = 1: the exact gradient of E_q[L] + KL by enumerating the K codes (the unbiased baseline).
    All samples share the K codes, so the decoder runs on K rows and the batch enters by GEMMs.
    Returns E_q[L] per image (B,) in place of the sampled rows' losses."""
    xp, shape = model.xp, model.shape
    if shape.n_latent != 1:
        raise ValueError(f"the exact estimator enumerates K codes and needs n_latent = 1, got {shape.n_latent}")
    batch = len(x)
    logits = model.encode(x, ws.encoder)
    losses = model.all_code_losses(x, ws.candidates, 1, ws.losses)   # (B, K)
    q = categorical_probabilities(xp, logits)                       # N = 1: (B, K)
    expected = (q * losses).sum(axis=1)
    model.decoder_backward_all_codes(q, x, ws.candidates)
    model.ops.softmax_kl(logits, shape.n_categories, 1.0 / batch, ws.kl, ws.dlogits)
    ws.dlogits += q * (losses - expected[:, None]) / batch
    model.encoder_backward(x, ws.encoder, ws.dlogits)
    return expected, ws.kl


def estimator_gradients(model, config, ws, x, seed, counter, eps, tau, prune=False):
    """Dispatch on the configured estimator; returns (decoder loss per row, KL per image).
    prune: the direct estimator's pruning of its N > 1 neighbours (direct_gradients)."""
    if config.name == "direct" and model.shape.is_pairwise:
        return structured_direct_gradients(model, ws, x, seed, counter, eps, config.gumbel_samples,
                                           config.two_sided, prune)
    if config.name == "direct":
        return direct_gradients(model, ws, x, seed, counter, eps, config.gumbel_samples,
                                config.two_sided, config.kl_backprop, prune)
    if config.name == "gumbel-softmax":
        return gumbel_softmax_gradients(model, ws, x, seed, counter, tau, config.gumbel_samples,
                                        config.straight_through)
    return exact_gradients(model, ws, x)


def can_prune(backend, shape, config):
    """Whether the direct estimator's neighbours can be pruned here: the CPU (the host sizes each
    chunk), one-sided, N > 1 (independent categoricals or the pairwise model)."""
    return (backend.name == "cpu" and config.name == "direct" and not config.two_sided
            and shape.n_latent > 1)


def can_gather_active_rows(backend, config):
    """Whether the encoder's backward can run on the rows of dlogits that are not all zero
    (kernels/active_rows.py): the CPU (the host reads their count), the direct estimator (the
    other estimators' rows are never zero)."""
    return backend.name == "cpu" and config.name == "direct"


def batch_loss(recon, kl):
    """The batch's mean loss from an estimator's two arrays, as a host float (a device sync)."""
    return float(recon.mean() + kl.mean())
