"""Float64 NumPy reference of the whole model: the ground truth every fast path is checked against.

Reads like the paper (Lorberbom, Gane, Jaakkola, Hazan, NeurIPS 2019), top to bottom:
parameters, encoder, decoder, loss, hand-derived backward passes, Gumbel-max sampling, and the
three gradient estimators (direct, Gumbel-softmax, exact enumeration). No speed tricks, no
autodiff: one-hot codes are materialised and multiplied densely, candidates are decoded one by one.

Shapes and names used throughout:
    B batch, D pixels, H hidden units, N latent variables, K categories, M Gumbel samples per point.
    x       (B, D)      targets in [0, 1]
    logits  (B, N, K)   encoder output h_phi(x)
    gumbel  (B, M, N, K) standard Gumbel noise
    z       (B, N) or (B, M, N) integer codes in [0, K)
    params  dict of the 8 arrays in PARAM_NAMES; weights are (fan_in, fan_out), y = x @ W + b.
The loss of one sample is BCE-with-logits summed over pixels plus KL(q(z|x) || uniform) summed over
the N variables; losses and gradients are means over the batch (and over the M samples).
This module imports NumPy only and nothing else of ours, so that it stays an independent truth.
"""
import numpy as np

PARAM_NAMES = ("enc_w1", "enc_b1", "enc_w2", "enc_b2", "dec_w1", "dec_b1", "dec_w2", "dec_b2")
ENCODER_PARAMS = PARAM_NAMES[:4]
DECODER_PARAMS = PARAM_NAMES[4:]


# ---------------------------------------------------------------------------------------------
# Input checks: every public function fails loudly, naming the argument, rather than computing
# a silent wrong result.

def check_latent_shape(n_latent, n_categories):
    if int(n_latent) != n_latent or n_latent < 1:
        raise ValueError(f"n_latent must be an integer >= 1, got {n_latent!r}")
    if int(n_categories) != n_categories or n_categories < 2:
        raise ValueError(f"n_categories must be an integer >= 2, got {n_categories!r}")


def check_finite(name, array):
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains non-finite values (nan or inf)")


def check_positive(name, value):
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_targets(x, pixels):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != pixels or x.shape[0] < 1:
        raise ValueError(f"x must have shape (batch >= 1, {pixels}), got {x.shape}")
    check_finite("x", x)
    if x.min() < 0 or x.max() > 1:
        raise ValueError("x (targets) must lie in [0, 1]")
    return x


def check_params(params, n_categories):
    """Checks the 8 arrays agree with each other; returns (pixels, hidden, n_latent)."""
    missing = [name for name in PARAM_NAMES if name not in params]
    if missing:
        raise ValueError(f"params is missing {missing}")
    pixels, hidden = np.shape(params["enc_w1"])
    n_codes = np.shape(params["enc_w2"])[1]
    if n_codes % n_categories:
        raise ValueError(f"enc_w2 has {n_codes} columns, not a multiple of n_categories={n_categories}")
    expected = {
        "enc_w1": (pixels, hidden), "enc_b1": (hidden,),
        "enc_w2": (hidden, n_codes), "enc_b2": (n_codes,),
        "dec_w1": (n_codes, hidden), "dec_b1": (hidden,),
        "dec_w2": (hidden, pixels), "dec_b2": (pixels,),
    }
    for name, shape in expected.items():
        if np.shape(params[name]) != shape:
            raise ValueError(f"params[{name!r}] has shape {np.shape(params[name])}, expected {shape}")
        check_finite(f"params[{name!r}]", params[name])
    n_latent = n_codes // n_categories
    check_latent_shape(n_latent, n_categories)
    return pixels, hidden, n_latent


def check_gumbel(gumbel, batch, n_latent, n_categories):
    gumbel = np.asarray(gumbel, dtype=np.float64)
    if gumbel.ndim != 4 or gumbel.shape[0] != batch or gumbel.shape[2:] != (n_latent, n_categories) \
            or gumbel.shape[1] < 1:
        raise ValueError(f"gumbel must have shape ({batch}, M >= 1, {n_latent}, {n_categories}), "
                         f"got {gumbel.shape}")
    check_finite("gumbel", gumbel)
    return gumbel


# ---------------------------------------------------------------------------------------------
# Parameters: like a standard linear layer, W and b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

def init_params(pixels, hidden, n_latent, n_categories, rng):
    check_latent_shape(n_latent, n_categories)
    n_codes = n_latent * n_categories
    layers = {"enc_w1": (pixels, hidden), "enc_w2": (hidden, n_codes),
              "dec_w1": (n_codes, hidden), "dec_w2": (hidden, pixels)}
    params = {}
    for w_name, (fan_in, fan_out) in layers.items():
        bound = 1.0 / np.sqrt(fan_in)
        params[w_name] = rng.uniform(-bound, bound, size=(fan_in, fan_out))
        params[w_name.replace("w", "b")] = rng.uniform(-bound, bound, size=fan_out)
    return {name: params[name] for name in PARAM_NAMES}


# ---------------------------------------------------------------------------------------------
# Building blocks and their derivatives.

def relu(a):
    return np.maximum(a, 0.0)


def sigmoid(a):
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def softplus(a):
    return np.logaddexp(0.0, a)


def softmax(h):
    e = np.exp(h - h.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(h):
    shifted = h - h.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax_backward(q, dq):
    """Vector-Jacobian product of softmax along the last axis: J^T dq = q * (dq - <q, dq>)."""
    return q * (dq - np.sum(q * dq, axis=-1, keepdims=True))


def onehot(z, n_categories):
    """(..., N) integer codes -> (..., N, K) one-hot float64."""
    return (np.asarray(z)[..., None] == np.arange(n_categories)).astype(np.float64)


def bce_with_logits(out, x):
    """Per-sample BCE-with-logits summed over pixels: sum_d softplus(o) - x o."""
    return np.sum(softplus(out) - x * out, axis=-1)


def bce_with_logits_grad(out, x):
    return sigmoid(out) - x


def kl_uniform(logits):
    """Per-sample KL(softmax(h_n) || uniform(K)) summed over the N variables: (B, N, K) -> (B,)."""
    log_q = log_softmax(logits)
    n_categories = logits.shape[-1]
    return np.sum(np.exp(log_q) * log_q, axis=(-2, -1)) + logits.shape[-2] * np.log(n_categories)


def kl_uniform_grad(logits):
    """d KL / d h = q * (log q - sum_k q log q), per variable."""
    log_q = log_softmax(logits)
    q = np.exp(log_q)
    return q * (log_q - np.sum(q * log_q, axis=-1, keepdims=True))


# ---------------------------------------------------------------------------------------------
# Encoder h_phi: D -> H (ReLU) -> N*K logits.

def encoder_forward(params, x, n_categories):
    pre = x @ params["enc_w1"] + params["enc_b1"]
    hidden = relu(pre)
    logits = hidden @ params["enc_w2"] + params["enc_b2"]
    cache = (x, pre, hidden)
    return logits.reshape(len(x), -1, n_categories), cache


def encoder_backward(params, cache, dlogits):
    """Gradients of the 4 encoder arrays given the upstream gradient of the logits (B, N, K)."""
    x, pre, hidden = cache
    dlogits = dlogits.reshape(len(x), -1)
    dhidden = (dlogits @ params["enc_w2"].T) * (pre > 0)
    return {
        "enc_w1": x.T @ dhidden, "enc_b1": dhidden.sum(axis=0),
        "enc_w2": hidden.T @ dlogits, "enc_b2": dlogits.sum(axis=0),
    }


# ---------------------------------------------------------------------------------------------
# Decoder f_theta: code (one-hot, or relaxed, N*K) -> H (ReLU) -> D Bernoulli logits.

def decoder_forward(params, codes):
    """codes: (R, N*K) one-hot rows (or relaxed ones); returns pixel logits (R, D) and a cache."""
    pre = codes @ params["dec_w1"] + params["dec_b1"]
    hidden = relu(pre)
    out = hidden @ params["dec_w2"] + params["dec_b2"]
    return out, (codes, pre, hidden)


def decoder_backward(params, cache, dout):
    """Gradients of the 4 decoder arrays and of the code input, given dL/d(pixel logits)."""
    codes, pre, hidden = cache
    dhidden = (dout @ params["dec_w2"].T) * (pre > 0)
    grads = {
        "dec_w1": codes.T @ dhidden, "dec_b1": dhidden.sum(axis=0),
        "dec_w2": hidden.T @ dout, "dec_b2": dout.sum(axis=0),
    }
    return grads, dhidden @ params["dec_w1"].T


def decoder_loss(params, x, z, n_categories):
    """Per-sample decoder loss L(z) = BCE(f_theta(onehot z), x): x (B, D), z (B, N) -> (B,)."""
    codes = onehot(z, n_categories).reshape(len(z), -1)
    out, _ = decoder_forward(params, codes)
    return bce_with_logits(out, x)


def candidate_losses(params, x, z, n_categories):
    """L[b, n, k] = decoder loss of sample b at its code z[b] with variable n set to k.

    The published method's coordinate-wise search: N*K neighbouring codes per sample,
    materialised as one-hot rows and decoded densely (the reference keeps it that plain).
    """
    batch, n_latent = z.shape
    neighbours = np.repeat(z[:, None, None, :], n_latent, axis=1).repeat(n_categories, axis=2)
    for n in range(n_latent):
        neighbours[:, n, :, n] = np.arange(n_categories)
    flat = neighbours.reshape(-1, n_latent)
    targets = np.repeat(x, n_latent * n_categories, axis=0)
    return decoder_loss(params, targets, flat, n_categories).reshape(batch, n_latent, n_categories)


# ---------------------------------------------------------------------------------------------
# Gumbel-max sampling (Theorem 2): argmax_k (h_k + g_k) is distributed as softmax(h).

def gumbel_noise(rng, shape):
    u = rng.uniform(np.finfo(np.float64).tiny, 1.0, size=shape)
    return -np.log(-np.log(u))


def gumbel_max(logits, gumbel):
    """logits (B, N, K), gumbel (B, M, N, K) -> codes (B, M, N)."""
    return np.argmax(logits[:, None] + gumbel, axis=-1)


def sample_codes(logits, rng, n_samples=1):
    """Draws M codes per data point; returns (codes (B, M, N), the Gumbel noise used)."""
    if int(n_samples) != n_samples or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    batch, n_latent, n_categories = logits.shape
    gumbel = gumbel_noise(rng, (batch, n_samples, n_latent, n_categories))
    return gumbel_max(logits, gumbel), gumbel


# ---------------------------------------------------------------------------------------------
# The shared start of every estimator: checks, encoder, and the decoder at the sampled codes.

def _prepare(params, x, n_categories, gumbel):
    pixels, _, n_latent = check_params(params, n_categories)
    x = check_targets(x, pixels)
    gumbel = check_gumbel(gumbel, len(x), n_latent, n_categories)
    logits, enc_cache = encoder_forward(params, x, n_categories)
    return x, gumbel, logits, enc_cache


def _decoder_at_codes(params, x, z_opt, n_categories):
    """Mean decoder loss over (B, M) codes and its decoder gradients."""
    batch, n_samples, n_latent = z_opt.shape
    codes = onehot(z_opt, n_categories).reshape(batch * n_samples, -1)
    targets = np.repeat(x, n_samples, axis=0)
    out, cache = decoder_forward(params, codes)
    losses = bce_with_logits(out, targets).reshape(batch, n_samples)
    dout = bce_with_logits_grad(out, targets) / (batch * n_samples)
    grads, _ = decoder_backward(params, cache, dout)
    return losses, grads


def _finish(params, logits, enc_cache, dlogits, dec_grads, recon, kl):
    grads = dict(encoder_backward(params, enc_cache, dlogits), **dec_grads)
    grads = {name: grads[name] for name in PARAM_NAMES}
    return float(np.mean(recon + kl)), grads


# ---------------------------------------------------------------------------------------------
# The direct estimator (Theorem 1): grad_h E[L(z_opt)] ~ (onehot(z_opt) - onehot(z_dir)) / eps,
# z_opt = argmax(h + g), z_dir = argmax(h + g - eps L) over coordinate-wise neighbours.

def perturbed_argmax(logits, gumbel, losses, eps):
    """z_dir = argmax_k (h + g - eps L), per variable: all (B, M, N, K) -> (B, M, N)."""
    return np.argmax(logits[:, None] + gumbel - eps * losses, axis=-1)


def direct_logit_grad(logits, gumbel, z_opt, losses, eps, two_sided=False):
    """The direct estimate of d E[L] / d logits for each sample, averaged over its M draws.

    One-sided: (onehot(z_opt) - onehot(z_dir(eps))) / eps. Two-sided:
    (onehot(z_dir(-eps)) - onehot(z_dir(+eps))) / (2 eps). Returns (B, N, K), not yet / B.
    """
    n_categories = logits.shape[-1]
    z_plus = perturbed_argmax(logits, gumbel, losses, eps)
    if two_sided:
        z_minus = perturbed_argmax(logits, gumbel, losses, -eps)
        estimate = (onehot(z_minus, n_categories) - onehot(z_plus, n_categories)) / (2 * eps)
    else:
        estimate = (onehot(z_opt, n_categories) - onehot(z_plus, n_categories)) / eps
    return estimate.mean(axis=1)


def direct_estimator(params, x, n_categories, gumbel, eps, two_sided=False, kl_backprop=False):
    """Loss and gradients of all 8 arrays with the direct estimator for the encoder.

    kl_backprop=False reproduces the published code, which reports the KL but does not
    back-propagate it. Returns (mean loss, grads dict, info dict with z_opt, losses, logits).
    """
    check_positive("eps", eps)
    x, gumbel, logits, enc_cache = _prepare(params, x, n_categories, gumbel)
    batch, n_samples = gumbel.shape[:2]
    z_opt = gumbel_max(logits, gumbel)
    recon, dec_grads = _decoder_at_codes(params, x, z_opt, n_categories)
    losses = candidate_losses(params, np.repeat(x, n_samples, axis=0),
                              z_opt.reshape(batch * n_samples, -1), n_categories)
    losses = losses.reshape(gumbel.shape)
    dlogits = direct_logit_grad(logits, gumbel, z_opt, losses, eps, two_sided)
    if kl_backprop:
        dlogits = dlogits + kl_uniform_grad(logits)
    loss, grads = _finish(params, logits, enc_cache, dlogits / batch, dec_grads,
                          recon.mean(axis=1), kl_uniform(logits))
    return loss, grads, {"z_opt": z_opt, "losses": losses, "logits": logits}


def direct_expected_logit_grad(logits, losses, eps):
    """N = 1 closed form of E_g[direct estimate] at a fixed eps: (softmax(h) - softmax(h - eps L)) / eps."""
    return (softmax(logits) - softmax(logits - eps * losses)) / eps


def exact_logit_grad(logits, losses):
    """d/dh sum_k softmax(h)_k L_k = J_softmax(h)^T L: the limit of the above as eps -> 0."""
    return softmax_backward(softmax(logits), losses)


# ---------------------------------------------------------------------------------------------
# Gumbel-softmax (the paper's baseline): y = softmax((h + g) / tau) is decoded as a relaxed code.
# Straight-through decodes onehot(argmax y) but back-propagates through y.

def gumbel_softmax_estimator(params, x, n_categories, gumbel, tau, straight_through=False):
    check_positive("tau", tau)
    x, gumbel, logits, enc_cache = _prepare(params, x, n_categories, gumbel)
    batch, n_samples = gumbel.shape[:2]
    relaxed = softmax((logits[:, None] + gumbel) / tau)
    codes = onehot(relaxed.argmax(axis=-1), n_categories) if straight_through else relaxed
    targets = np.repeat(x, n_samples, axis=0)
    out, cache = decoder_forward(params, codes.reshape(batch * n_samples, -1))
    recon = bce_with_logits(out, targets).reshape(batch, n_samples).mean(axis=1)
    dout = bce_with_logits_grad(out, targets) / (batch * n_samples)
    dec_grads, dcodes = decoder_backward(params, cache, dout)
    drelaxed = softmax_backward(relaxed, dcodes.reshape(relaxed.shape)) / tau
    dlogits = drelaxed.sum(axis=1) + kl_uniform_grad(logits) / batch
    return _finish(params, logits, enc_cache, dlogits, dec_grads, recon, kl_uniform(logits))


# ---------------------------------------------------------------------------------------------
# Exact enumeration (N = 1 only): E_q[L] = sum_k q_k L_k, the unbiased baseline.

def all_code_losses(params, x, n_categories):
    """N = 1: L[b, k] = decoder loss of sample b at code k, for all K codes."""
    codes = np.tile(np.arange(n_categories), len(x))[:, None]
    return decoder_loss(params, np.repeat(x, n_categories, axis=0), codes,
                        n_categories).reshape(len(x), n_categories)


def exact_estimator(params, x, n_categories):
    pixels, _, n_latent = check_params(params, n_categories)
    if n_latent != 1:
        raise ValueError(f"the exact estimator enumerates K codes and needs n_latent = 1, got {n_latent}")
    x = check_targets(x, pixels)
    batch = len(x)
    logits, enc_cache = encoder_forward(params, x, n_categories)
    q = softmax(logits[:, 0])
    codes = np.tile(np.eye(n_categories), (batch, 1))
    targets = np.repeat(x, n_categories, axis=0)
    out, cache = decoder_forward(params, codes)
    losses = bce_with_logits(out, targets).reshape(batch, n_categories)
    dout = bce_with_logits_grad(out, targets) * q.reshape(-1, 1) / batch
    dec_grads, _ = decoder_backward(params, cache, dout)
    dlogits = (softmax_backward(q, losses)[:, None] + kl_uniform_grad(logits)) / batch
    return _finish(params, logits, enc_cache, dlogits, dec_grads,
                   np.sum(q * losses, axis=1), kl_uniform(logits))


# ---------------------------------------------------------------------------------------------
# Evaluation.

def sampled_loss(params, x, n_categories, gumbel):
    """The paper's test loss per sample: BCE at a Gumbel-max code (first draw) + KL: (B,)."""
    x, gumbel, logits, _ = _prepare(params, x, n_categories, gumbel)
    z = gumbel_max(logits, gumbel[:, :1])[:, 0]
    return decoder_loss(params, x, z, n_categories) + kl_uniform(logits)


def logsumexp(a, axis):
    top = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.sum(np.exp(a - top), axis=axis))


def marginal_nll_exact(params, x, n_categories):
    """N = 1: -log p(x) = -log sum_k (1/K) exp(-L_k), exactly, per sample: (B,)."""
    pixels, _, n_latent = check_params(params, n_categories)
    if n_latent != 1:
        raise ValueError(f"the exact marginal likelihood needs n_latent = 1, got {n_latent}")
    x = check_targets(x, pixels)
    return np.log(n_categories) - logsumexp(-all_code_losses(params, x, n_categories), axis=1)


def marginal_nll_importance(params, x, n_categories, gumbel):
    """Importance-sampled bound, q(z|x) as proposal with S = M draws per sample: (B,).

    -log (1/S) sum_s p(x|z_s) p(z_s) / q(z_s|x), an upper bound on -log p(x) in expectation
    that tightens as S grows; the uniform prior gives log p(z) = -N log K.
    """
    x, gumbel, logits, _ = _prepare(params, x, n_categories, gumbel)
    batch, n_samples, n_latent = gumbel.shape[:3]
    z = gumbel_max(logits, gumbel)
    log_q = np.take_along_axis(log_softmax(logits)[:, None], z[..., None], axis=-1)[..., 0].sum(-1)
    log_px_z = -np.stack([decoder_loss(params, x, z[:, s], n_categories) for s in range(n_samples)], 1)
    log_weights = log_px_z - n_latent * np.log(n_categories) - log_q
    return np.log(n_samples) - logsumexp(log_weights, axis=1)


# ---------------------------------------------------------------------------------------------
# The optimiser: Adam as PyTorch defines it (bias-corrected moments, eps added outside the sqrt).

ADAM_DEFAULTS = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}


def adam_step(param, grad, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam update at 1-based step `step`; returns new (param, m, v), inputs untouched."""
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    denom = np.sqrt(v) / np.sqrt(1 - beta2 ** step) + eps
    return param - (lr / (1 - beta1 ** step)) * m / denom, m, v
