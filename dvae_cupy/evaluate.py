"""Evaluation on the fast path: the paper's test loss, and the marginal likelihood.

- sampled_loss: BCE at a Gumbel-max code + KL(q || uniform), per image (the paper's test loss).
- marginal_nll: N = 1, exact -log p(x) = log K - logsumexp_k(-L_k); N > 1, the importance-sampled
  bound -log (1/S) sum_s p(x|z_s) p(z_s) / q(z_s|x) with z_s ~ q(z|x).
Each takes an EvalWorkspace (workspace.py) made for the batch and returns per-image values as a
backend array (views of the workspace, or new arrays: copy them before the next call). The
Evaluator keeps one workspace per batch shape and averages over whole data sets; it never
touches a training step's arrays.

Noise: evaluation has its own Philox seed (eval_seed), so it never overlaps the training noise.
`per_image=True` gives image i of a data set the stream (seed, counter0 + i), whatever batch it
falls in (the library API); `per_image=False` gives every row of a batch one stream (seed,
counter0) by position in the batch, as the trainer has always evaluated.
"""
import numpy as np

from .workspace import EvalWorkspace, workspace_arrays

EVAL_SEED_SALT = 0x5EED_E7A1  # keeps evaluation noise apart from training noise


def eval_seed(seed):
    return (int(seed) ^ EVAL_SEED_SALT) & 0xFFFF_FFFF_FFFF_FFFF


def _sample(model, ws, logits, seed, counter, samples, per_image):
    ws.counter[...] = counter
    model.ops.sample_codes(logits, seed, ws.counter, model.shape.n_categories, samples, per_image,
                           ws.gumbel, ws.codes)
    return ws.codes


def _code_losses(model, ws, x, codes, samples):
    """Decoder loss (R,) at codes (R, N) for x repeated `samples` times."""
    out = model.decode_codes(codes, ws.decoder)
    model.ops.bce_rows(out, model.params["dec_b2"], x, samples, 0.0, ws.recon, ws.dout)
    return ws.recon


def _kl(model, ws, logits):
    model.ops.softmax_kl(logits, model.shape.n_categories, 0.0, ws.kl, ws.dlogits)
    return ws.kl


def sampled_loss(model, ws, x, seed, counter=0, per_image=False):
    """(B,) BCE at a Gumbel-max code + KL to the uniform prior, per image of x (B, D). The
    pairwise model: BCE at the structured arg max of the perturbed score + the KL of the unary
    softmaxes to uniform (the published test loss; not the ELBO of the structured posterior)."""
    if model.shape.is_pairwise:
        return _structured_sampled_loss(model, ws, x, seed, counter, per_image)
    logits = model.encode(x, ws.encoder)
    codes = _sample(model, ws, logits, eval_seed(seed), counter, 1, per_image)
    return _code_losses(model, ws, x, codes, 1) + _kl(model, ws, logits)


def _structured_sampled_loss(model, ws, x, seed, counter, per_image):
    st = ws.structured
    unary, pairwise = model.pairwise_potentials(model.encode(x, ws.encoder), st)
    _sample(model, ws, unary, eval_seed(seed), counter, 1, per_image)  # the noise (of K = 2 "logits")
    model.ops.perturb_unaries(unary, ws.gumbel, 1, st.perturbed)
    codes = model.structured_argmax(st.perturbed, pairwise, 1, ws.codes)
    model.ops.softmax_kl(unary, 2, 0.0, ws.kl, st.kl_grad)
    return _code_losses(model, ws, x, codes, 1) + ws.kl


def _logsumexp(xp, a, axis):
    top = a.max(axis=axis, keepdims=True)
    return (top + xp.log(xp.exp(a - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def marginal_nll(model, ws, x, seed, samples=100, counter=0, per_image=False):
    """(B,) -log p(x): exact for N = 1 (ws needs no samples), else the bound with `samples` draws
    per image (ws made with samples = `samples`)."""
    xp, shape = model.xp, model.shape
    if shape.is_pairwise:
        raise ValueError("the pairwise model has no tractable marginal likelihood (its posterior "
                         "under unary-only Gumbel perturbations has no closed-form density)")
    if shape.n_latent == 1:
        losses = model.all_code_losses(x, ws.all_codes, 1, ws.losses)
        return np.log(shape.n_categories) - _logsumexp(xp, -losses, axis=1)
    logits = model.encode(x, ws.encoder)
    codes = _sample(model, ws, logits, eval_seed(seed) ^ 1, counter, samples, per_image)
    log_px_z = -_code_losses(model, ws, x, codes, samples).reshape(len(x), samples)
    scores = logits.reshape(len(x), 1, shape.n_latent, -1).astype(np.float64)
    log_q_all = scores - _logsumexp(xp, scores, axis=-1)[..., None]         # (B, 1, N, K)
    picked = codes.reshape(len(x), samples, -1, 1).astype(np.int64)         # (B, S, N, 1)
    log_q = xp.take_along_axis(log_q_all, picked, axis=-1)[..., 0].sum(axis=-1)
    log_weights = log_px_z - shape.n_latent * np.log(shape.n_categories) - log_q
    return np.log(samples) - _logsumexp(xp, log_weights, axis=1)


class Evaluator:
    """Evaluation of `model` in workspaces of its own, one per (batch, samples) it meets."""

    def __init__(self, model):
        self.model = model
        self._workspaces = {}

    def workspace(self, batch, samples=1):
        key = (int(batch), int(samples))
        if key not in self._workspaces:
            self._workspaces[key] = EvalWorkspace(self.model.xp, self.model.shape, *key)
        return self._workspaces[key]

    def sampled_loss(self, x, seed, counter=0, per_image=False):
        return sampled_loss(self.model, self.workspace(len(x)), x, seed, counter, per_image)

    def marginal_nll(self, x, seed, samples=100, counter=0, per_image=False):
        ws = self.workspace(len(x), samples if self.model.shape.n_latent > 1 else 1)
        return marginal_nll(self.model, ws, x, seed, samples, counter, per_image)

    def dataset_mean(self, per_image_values, batches):
        """Mean over a data set of per_image_values(x_batch) (a (B,) array), the data set given
        as an iterable of (B, D) target batches."""
        total, count = 0.0, 0
        for x in batches:
            total += float(per_image_values(x).sum())
            count += len(x)
        return total / count

    def nbytes(self):
        return sum(a.nbytes for ws in self._workspaces.values() for a in workspace_arrays(ws))
