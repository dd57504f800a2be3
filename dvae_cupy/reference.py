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
    return _init_layers(layers, rng)


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


# ---------------------------------------------------------------------------------------------
# Structured latents: the pairwise binary model
#
# The published structured model (Lorberbom et al., and the authors' run_structured_maxflow.py):
# N binary variables z in {0, 1}^N, each one-hot over K = 2 values, so the decoder is the
# unstructured decoder with K = 2 (2N inputs). The encoder's last layer has 2N + P outputs,
# P = N(N-1)/2: unary potentials phi_i(k) in column 2i + k, then one pairwise pre-activation per
# pair i < j in row-major pair order (0,1), (0,2), ..., (0,N-1), (1,2), ... . Pairwise potentials
# are softplus(pre) >= 0 ("attractive": the arg max is a minimum cut, exact) or pre itself
# ("signed": the arg max is found by enumerating all 2^N codes, N <= 20). The score of a code is
#     h(z) = sum_i phi_i(z_i) + sum_{i<j} phi_ij z_i z_j,
# Gumbel noise perturbs the unaries only (one Gumbel per variable and value), and
#     z_opt = arg max_z h(z) + sum_i gamma_i(z_i).
# Direct gradient: the coordinate-wise candidate losses L_i(k) (candidate_losses with K = 2)
# times eps are subtracted from the perturbed unaries, z_dir is the structured arg max of that,
# and the gradient of each potential is its statistic at z_opt minus at z_dir, over eps:
# onehot(z)_i(k) for phi_i(k), z_i z_j for phi_ij (then times softplus' = sigmoid in attractive
# mode). The reported loss is the BCE at z_opt plus the KL of each variable's softmax over its
# two unaries to uniform; the KL is not back-propagated (as published). It is NOT the ELBO of
# the structured posterior, which has no tractable density under this low-dimensional
# perturbation: it is the published figure, kept for comparison.
#
# Layouts: enc_out (B, 2N+P); unary (..., N, 2); pairwise (..., P); codes z (..., N) in {0, 1};
# gumbel (B, M, N, 2) as for the unstructured model with K = 2. Code number c = sum_i z_i 2^i
# (variable 0 is the lowest bit): enumeration ties go to the smallest c.

PAIRWISE_MODES = ("attractive", "signed")
SIGNED_MAX_VARS = 20  # signed potentials are solved by enumerating 2^N codes per sample


def pair_count(n_vars):
    """P = N(N-1)/2 pairs i < j."""
    return n_vars * (n_vars - 1) // 2


def pair_indices(n_vars):
    """(first, second): pair p is (first[p], second[p]), i < j, in row-major pair order."""
    return np.triu_indices(n_vars, k=1)


def pair_index(i, j, n_vars):
    """Column p of pair (i, j), i < j, in row-major pair order: the rows above i hold
    (N-1) + (N-2) + ... + (N-i) = i N - i (i+1) / 2 pairs."""
    return i * n_vars - i * (i + 1) // 2 + (j - i - 1)


def structured_output_width(n_vars):
    """Width of the encoder's last layer: 2N unaries and P pairwise pre-activations."""
    return 2 * n_vars + pair_count(n_vars)


def check_pairwise_model(n_vars, mode):
    """The model-level options: mode, N >= 2 (a pairwise model needs a pair), N <= 20 signed."""
    if mode not in PAIRWISE_MODES:
        raise ValueError(f"mode must be one of {PAIRWISE_MODES}, got {mode!r}")
    if int(n_vars) != n_vars or n_vars < 2:
        raise ValueError(f"n_vars must be an integer >= 2 for a pairwise model (it needs at "
                         f"least one pair i < j), got {n_vars!r}")
    if mode == "signed" and n_vars > SIGNED_MAX_VARS:
        raise ValueError(f"n_vars must be <= {SIGNED_MAX_VARS} with signed pairwise potentials: "
                         f"their exact arg max enumerates all 2**n_vars codes per sample "
                         f"(2**{int(n_vars)} here), got {n_vars!r}")


def _init_layers(layers, rng):
    """PyTorch's nn.Linear default, in the order the layers are given: weight then bias of
    each, U(-1/sqrt(fan_in), 1/sqrt(fan_in)); returned in PARAM_NAMES order."""
    params = {}
    for w_name, (fan_in, fan_out) in layers.items():
        bound = 1.0 / np.sqrt(fan_in)
        params[w_name] = rng.uniform(-bound, bound, size=(fan_in, fan_out))
        params[w_name.replace("w", "b")] = rng.uniform(-bound, bound, size=fan_out)
    return {name: params[name] for name in PARAM_NAMES}


def init_structured_params(pixels, hidden, n_vars, mode, rng):
    """The 8 arrays of the pairwise model, initialised as init_params does: the encoder's last
    layer has 2N + P outputs, the decoder reads 2N one-hot inputs."""
    check_pairwise_model(n_vars, mode)
    layers = {"enc_w1": (pixels, hidden), "enc_w2": (hidden, structured_output_width(n_vars)),
              "dec_w1": (2 * n_vars, hidden), "dec_w2": (hidden, pixels)}
    return _init_layers(layers, rng)


def check_structured_params(params, n_vars):
    """Checks the 8 arrays fit a pairwise model of n_vars variables; returns (pixels, hidden)."""
    missing = [name for name in PARAM_NAMES if name not in params]
    if missing:
        raise ValueError(f"params is missing {missing}")
    pixels, hidden = np.shape(params["enc_w1"])
    width = structured_output_width(n_vars)
    expected = {
        "enc_w1": (pixels, hidden), "enc_b1": (hidden,),
        "enc_w2": (hidden, width), "enc_b2": (width,),
        "dec_w1": (2 * n_vars, hidden), "dec_b1": (hidden,),
        "dec_w2": (hidden, pixels), "dec_b2": (pixels,),
    }
    for name, shape in expected.items():
        if np.shape(params[name]) != shape:
            raise ValueError(f"params[{name!r}] has shape {np.shape(params[name])}, expected "
                             f"{shape} for a pairwise model of n_vars={n_vars}")
        check_finite(f"params[{name!r}]", params[name])
    return pixels, hidden


def check_potentials(unary, pairwise, attractive=False):
    """unary (..., N, 2) and pairwise (..., P) as float64, finite, P = N(N-1)/2, leading dims
    broadcastable; pairwise >= 0 where `attractive`. Returns (unary, pairwise, N)."""
    unary = np.asarray(unary, dtype=np.float64)
    pairwise = np.asarray(pairwise, dtype=np.float64)
    if unary.ndim < 2 or unary.shape[-1] != 2 or unary.shape[-2] < 1:
        raise ValueError(f"unary must have shape (..., N >= 1, 2), got {unary.shape}")
    n_vars = unary.shape[-2]
    if pairwise.ndim < 1 or pairwise.shape[-1] != pair_count(n_vars):
        raise ValueError(f"pairwise must have shape (..., {pair_count(n_vars)}) for N={n_vars} "
                         f"(one potential per pair i < j), got {pairwise.shape}")
    try:
        np.broadcast_shapes(unary.shape[:-2], pairwise.shape[:-1])
    except ValueError:
        raise ValueError(f"unary {unary.shape} and pairwise {pairwise.shape} have leading "
                         f"dimensions that do not broadcast") from None
    check_finite("unary", unary)
    check_finite("pairwise", pairwise)
    if attractive and np.any(pairwise < 0):
        raise ValueError("pairwise must be >= 0 for the min-cut arg max (attractive potentials)")
    return unary, pairwise, n_vars


def structured_potentials(enc_out, n_vars, mode):
    """enc_out (B, 2N+P) -> unary (B, N, 2), pairwise (B, P): softplus(pre) or pre."""
    check_pairwise_model(n_vars, mode)
    enc_out = np.asarray(enc_out, dtype=np.float64)
    width = structured_output_width(n_vars)
    if enc_out.ndim != 2 or enc_out.shape[1] != width:
        raise ValueError(f"enc_out must have shape (B, {width}) for n_vars={n_vars}, "
                         f"got {enc_out.shape}")
    check_finite("enc_out", enc_out)
    unary = enc_out[:, :2 * n_vars].reshape(len(enc_out), n_vars, 2)
    pre = enc_out[:, 2 * n_vars:]
    return unary, (softplus(pre) if mode == "attractive" else pre)


def pair_statistics(z):
    """z_i z_j for every pair, row-major: (..., N) -> (..., P)."""
    first, second = pair_indices(np.shape(z)[-1])
    return np.asarray(z)[..., first] * np.asarray(z)[..., second]


def structured_score(unary, pairwise, z):
    """h(z) = sum_i unary[..., i, z_i] + sum_{i<j} pairwise[..., p(i,j)] z_i z_j (broadcast)."""
    z = np.asarray(z)
    unary_part = np.take_along_axis(unary, z[..., None], axis=-1)[..., 0].sum(axis=-1)
    return unary_part + np.sum(pairwise * pair_statistics(z), axis=-1)


def binary_codes(start, stop, n_vars):
    """Codes number start .. stop-1 as (stop - start, N) integers: z_i = bit i of c."""
    return (np.arange(start, stop)[:, None] >> np.arange(n_vars)) & 1


def all_binary_codes(n_vars):
    """(2^N, N) integer codes: row c has z_i = bit i of c."""
    return binary_codes(0, 2 ** n_vars, n_vars)


def code_scores(unary, pairwise, codes):
    """Scores of the given codes (C, N) for each set: (..., N, 2), (..., P) -> (..., C).
    h is linear in the statistics (onehot(z), z_i z_j), so all codes are one matrix product."""
    unary, pairwise, n_vars = check_potentials(unary, pairwise)
    unary_stats = np.stack([1 - codes, codes], axis=-1).reshape(len(codes), 2 * n_vars)
    lead = np.broadcast_shapes(unary.shape[:-2], pairwise.shape[:-1])
    flat_unary = unary.reshape(unary.shape[:-2] + (2 * n_vars,))
    return (np.broadcast_to(flat_unary @ unary_stats.T, lead + (len(codes),))
            + pairwise @ pair_statistics(codes).T)


def all_code_scores(unary, pairwise):
    """Scores of all 2^N codes (row c of all_binary_codes): (..., N, 2), (..., P) -> (..., 2^N)."""
    return code_scores(unary, pairwise, all_binary_codes(np.shape(unary)[-2]))


def structured_argmax_enumerate(unary, pairwise):
    """Exact arg max of h by scoring every one of the 2^N codes (any sign of pairwise): the
    truth both fast solvers are checked against. Ties go to the smallest code number c.
    unary (..., N, 2), pairwise (..., P) -> codes (..., N). Codes are scored in blocks (and
    sets in groups) so that memory stays ~32 MiB at any N <= 20."""
    unary, pairwise, n_vars = check_potentials(unary, pairwise)
    if n_vars > SIGNED_MAX_VARS:
        raise ValueError(f"enumeration scores 2**N codes: N must be <= {SIGNED_MAX_VARS}, "
                         f"got N={n_vars}")
    lead = np.broadcast_shapes(unary.shape[:-2], pairwise.shape[:-1])
    unary = np.broadcast_to(unary, lead + unary.shape[-2:]).reshape(-1, n_vars, 2)
    pairwise = np.broadcast_to(pairwise, lead + pairwise.shape[-1:]).reshape(len(unary), -1)
    block = 2 ** min(n_vars, 14)
    group = max(1, 2 ** 22 // block)
    best = np.zeros(len(unary), dtype=np.int64)
    for first in range(0, len(unary), group):
        sets = slice(first, first + group)
        best_score = np.full(len(unary[sets]), -np.inf)
        for start in range(0, 2 ** n_vars, block):
            scores = code_scores(unary[sets], pairwise[sets],
                                 binary_codes(start, start + block, n_vars))
            top = np.argmax(scores, axis=-1)  # the first maximum: the smallest code
            top_score = scores[np.arange(len(top)), top]
            wins = top_score > best_score  # strict: an earlier (smaller) code keeps a tie
            best[first + np.flatnonzero(wins)] = start + top[wins]
            best_score[wins] = top_score[wins]
    return ((best[:, None] >> np.arange(n_vars)) & 1).reshape(lead + (n_vars,))


def max_flow_source_side(capacity, source, sink):
    """Edmonds-Karp maximum flow on a dense capacity matrix: augment along a shortest residual
    path (breadth-first search) until none is left. Returns a boolean mask of the nodes
    reachable from the source in the final residual graph: the source side of a minimum cut
    (the smallest one, when several cuts are minimal)."""
    residual = np.array(capacity, dtype=np.float64)
    while True:
        parent = np.full(len(residual), -1)
        parent[source] = source
        queue = [source]
        while queue and parent[sink] < 0:
            u = queue.pop(0)
            for v in np.flatnonzero((residual[u] > 0) & (parent < 0)):
                parent[v] = u
                queue.append(v)
        if parent[sink] < 0:  # no augmenting path: the search reached all it could
            return parent >= 0
        path = [sink]
        while path[-1] != source:
            path.append(parent[path[-1]])
        edges = list(zip(path[:0:-1], path[-2::-1]))  # (u, v) from source to sink
        bottleneck = min(residual[u, v] for u, v in edges)
        for u, v in edges:
            residual[u, v] -= bottleneck
            residual[v, u] += bottleneck


def mincut_argmax_one(unary, pairwise):
    """Exact arg max of h for one sample with pairwise >= 0, by a minimum s-t cut.

    With a_i = phi_i(1) - phi_i(0), h(z) = const + sum_i a_i z_i + sum_{i<j} w_ij z_i z_j.
    Since z_i z_j = (z_i + z_j)/2 - [z_i != z_j]/2, maximising h is minimising
        E(z) = sum_i c_i z_i + sum_{i<j} (w_ij / 2) [z_i != z_j],
        c_i = -(a_i + sum_{j != i} w_ij / 2),
    a cut energy when every w_ij >= 0 (that is why attractive potentials are exact). Graph on
    N + 2 nodes: node i on the source side means z_i = 1. A cut pays the capacity of the edges
    from the source side to the sink side, so
        c_i >= 0: edge i -> sink, capacity c_i       (paid iff z_i = 1)
        c_i <  0: edge source -> i, capacity -c_i    (paid iff z_i = 0: E shifts by the constant c_i)
        i < j:    edges i -> j and j -> i, capacity w_ij / 2 each (one is paid iff z_i != z_j).
    The cut's capacity is E(z) up to a constant; the minimum cut is the arg max of h.
    (The authors' code builds the mirror image, z_i = 1 on the sink side, with PyMaxflow.)"""
    n_vars = len(unary)
    source, sink = n_vars, n_vars + 1
    capacity = np.zeros((n_vars + 2, n_vars + 2))
    c = -(unary[:, 1] - unary[:, 0])
    for p, (i, j) in enumerate(zip(*pair_indices(n_vars))):
        capacity[i, j] = capacity[j, i] = pairwise[p] / 2
        c[i] -= pairwise[p] / 2
        c[j] -= pairwise[p] / 2
    for i in range(n_vars):
        if c[i] >= 0:
            capacity[i, sink] = c[i]
        else:
            capacity[source, i] = -c[i]
    return max_flow_source_side(capacity, source, sink)[:n_vars].astype(np.int64)


def structured_argmax_mincut(unary, pairwise):
    """Exact arg max of h for pairwise >= 0 (attractive), one minimum cut per sample.
    unary (..., N, 2), pairwise (..., P) -> codes (..., N). Under ties it returns the maximiser
    with the fewest ones (the smallest source side), which need not be the smallest code."""
    unary, pairwise, n_vars = check_potentials(unary, pairwise, attractive=True)
    lead = np.broadcast_shapes(unary.shape[:-2], pairwise.shape[:-1])
    unary = np.broadcast_to(unary, lead + unary.shape[-2:]).reshape(-1, n_vars, 2)
    pairwise = np.broadcast_to(pairwise, lead + pairwise.shape[-1:]).reshape(len(unary), -1)
    codes = [mincut_argmax_one(u, w) for u, w in zip(unary, pairwise)]
    return np.array(codes, dtype=np.int64).reshape(lead + (n_vars,))


def structured_argmax(unary, pairwise, mode):
    """The exact solver of each mode: min-cut (attractive) or enumeration (signed)."""
    if mode not in PAIRWISE_MODES:
        raise ValueError(f"mode must be one of {PAIRWISE_MODES}, got {mode!r}")
    if mode == "attractive":
        return structured_argmax_mincut(unary, pairwise)
    return structured_argmax_enumerate(unary, pairwise)


def structured_direct_output_grad(enc_out, gumbel, losses, z_opt, n_vars, eps, mode,
                                  two_sided=False):
    """The direct estimate of d E[L] / d enc_out per sample, averaged over its M draws (not yet
    / B): (B, 2N+P), with the z_dir codes it used.

    z_dir(eps) = structured arg max of (unary + gumbel - eps L) with the same pairwise terms;
    one-sided: (stat(z_opt) - stat(z_dir(eps))) / eps; two-sided:
    (stat(z_dir(-eps)) - stat(z_dir(eps))) / (2 eps); stat = onehot(z) for the unaries and
    z_i z_j for the pairs, whose gradient is then multiplied by softplus'(pre) = sigmoid(pre)
    in attractive mode. gumbel, losses (B, M, N, 2), z_opt (B, M, N).
    Returns (grad, z_dir(eps), z_dir(-eps) or None)."""
    check_positive("eps", eps)
    unary, pairwise = structured_potentials(enc_out, n_vars, mode)
    batch = len(unary)
    perturbed = unary[:, None] + gumbel
    z_plus = structured_argmax(perturbed - eps * losses, pairwise[:, None], mode)
    z_minus = structured_argmax(perturbed + eps * losses, pairwise[:, None], mode) \
        if two_sided else None
    base = z_minus if two_sided else z_opt
    scale = 2 * eps if two_sided else eps
    d_unary = (onehot(base, 2) - onehot(z_plus, 2)).mean(axis=1) / scale
    d_pairwise = (pair_statistics(base) - pair_statistics(z_plus)).mean(axis=1) / scale
    if mode == "attractive":
        d_pairwise = d_pairwise * sigmoid(np.asarray(enc_out, dtype=np.float64)[:, 2 * n_vars:])
    return np.concatenate([d_unary.reshape(batch, 2 * n_vars), d_pairwise], axis=1), z_plus, z_minus


def structured_direct_estimator(params, x, n_vars, gumbel, eps, mode, two_sided=False):
    """Loss and gradients of all 8 arrays of the pairwise model, direct estimator for the encoder.

    The loss is the published one: mean over samples of the BCE at z_opt (mean over the M
    draws) plus the KL of the unary softmaxes to uniform, which is reported and not
    back-propagated. Returns (loss, grads, info) with info holding z_opt, z_dir (and z_dir_minus
    when two-sided), the candidate losses, enc_out, unary and pairwise potentials, recon, kl."""
    check_positive("eps", eps)
    check_pairwise_model(n_vars, mode)
    pixels, _ = check_structured_params(params, n_vars)
    x = check_targets(x, pixels)
    gumbel = check_gumbel(gumbel, len(x), n_vars, 2)
    batch, n_samples = gumbel.shape[:2]
    enc_out, enc_cache = encoder_forward(params, x, 1)  # one column per output: (B, 2N+P, 1)
    enc_out = enc_out[..., 0]
    unary, pairwise = structured_potentials(enc_out, n_vars, mode)
    z_opt = structured_argmax(unary[:, None] + gumbel, pairwise[:, None], mode)
    recon, dec_grads = _decoder_at_codes(params, x, z_opt, 2)
    losses = candidate_losses(params, np.repeat(x, n_samples, axis=0),
                              z_opt.reshape(batch * n_samples, n_vars), 2).reshape(gumbel.shape)
    d_out, z_dir, z_dir_minus = structured_direct_output_grad(
        enc_out, gumbel, losses, z_opt, n_vars, eps, mode, two_sided)
    kl = kl_uniform(unary)
    loss, grads = _finish(params, enc_out, enc_cache, d_out / batch, dec_grads,
                          recon.mean(axis=1), kl)
    info = {"z_opt": z_opt, "z_dir": z_dir, "losses": losses, "enc_out": enc_out,
            "unary": unary, "pairwise": pairwise, "recon": recon, "kl": kl}
    if two_sided:
        info["z_dir_minus"] = z_dir_minus
    return loss, grads, info


def structured_sampled_loss(params, x, n_vars, gumbel, mode):
    """The published test loss per sample: BCE at the structured arg max of the first draw plus
    the KL of the unary softmaxes to uniform: (B,). Not the ELBO of the structured posterior."""
    check_pairwise_model(n_vars, mode)
    pixels, _ = check_structured_params(params, n_vars)
    x = check_targets(x, pixels)
    gumbel = check_gumbel(gumbel, len(x), n_vars, 2)
    enc_out, _ = encoder_forward(params, x, 1)
    unary, pairwise = structured_potentials(enc_out[..., 0], n_vars, mode)
    z = structured_argmax(unary + gumbel[:, 0], pairwise, mode)
    return decoder_loss(params, x, z, 2) + kl_uniform(unary)
