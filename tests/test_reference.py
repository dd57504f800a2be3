"""The float64 reference against finite differences, against the paper's two theorems, and
against plain loops. Everything fast in the project is later checked against this module."""
import numpy as np
import pytest
from scipy import stats

from dvae_cupy import reference as ref

# Small shapes, awkward ones included: N > 1, K = 2, batch 1.
SHAPES = [  # (batch, pixels, hidden, n_latent, n_categories)
    (4, 7, 5, 1, 3),
    (3, 6, 4, 3, 2),
    (1, 5, 6, 2, 4),
]
FD_STEP = 1e-6
FD_TOLERANCE = 1e-6  # central differences in float64: truncation ~h^2, rounding ~1e-10/h


def make_problem(shape, seed=0, n_samples=2):
    batch, pixels, hidden, n_latent, n_categories = shape
    rng = np.random.default_rng(seed)
    params = ref.init_params(pixels, hidden, n_latent, n_categories, rng)
    x = (rng.uniform(size=(batch, pixels)) > 0.5).astype(np.float64)
    gumbel = ref.gumbel_noise(rng, (batch, n_samples, n_latent, n_categories))
    return params, x, gumbel


def relative_error(analytic, numeric):
    """max |a - n| over the array, relative to the array's largest finite-difference entry."""
    scale = max(np.max(np.abs(numeric)), 1e-12)
    return np.max(np.abs(analytic - numeric)) / scale


def finite_difference(f, params, name):
    """Central differences of the scalar f(params) with respect to every entry of params[name]."""
    grad = np.zeros_like(params[name])
    for index in np.ndindex(grad.shape):
        saved = params[name][index]
        params[name][index] = saved + FD_STEP
        up = f(params)
        params[name][index] = saved - FD_STEP
        down = f(params)
        params[name][index] = saved
        grad[index] = (up - down) / (2 * FD_STEP)
    return grad


def assert_matches_finite_differences(f, grads, params, names):
    for name in names:
        numeric = finite_difference(f, params, name)
        err = relative_error(grads[name], numeric)
        assert err < FD_TOLERANCE, f"{name}: relative error {err:.2e}"


# ---------------------------------------------------------------------------------------------
# Finite differences against every hand-written gradient that is a true derivative.

@pytest.mark.parametrize("shape", SHAPES)
def test_decoder_gradients_match_finite_differences(shape):
    params, x, gumbel = make_problem(shape)
    n_categories = shape[-1]
    z = ref.gumbel_max(ref.encoder_forward(params, x, n_categories)[0], gumbel)

    def mean_decoder_loss(p):
        return ref._decoder_at_codes(p, x, z, n_categories)[0].mean()

    _, grads = ref._decoder_at_codes(params, x, z, n_categories)
    assert_matches_finite_differences(mean_decoder_loss, grads, params, ref.DECODER_PARAMS)


@pytest.mark.parametrize("shape", SHAPES)
def test_direct_estimator_decoder_gradients_match_finite_differences(shape):
    # The decoder part of the direct estimator is a true gradient at the fixed code z_opt.
    params, x, gumbel = make_problem(shape)
    n_categories = shape[-1]
    _, grads, _ = ref.direct_estimator(params, x, n_categories, gumbel, eps=0.5)

    def loss(p):
        return ref.direct_estimator(p, x, n_categories, gumbel, eps=0.5)[0]

    assert_matches_finite_differences(loss, grads, params, ref.DECODER_PARAMS)


@pytest.mark.parametrize("shape", SHAPES)
def test_encoder_gradients_given_upstream_logit_gradient(shape):
    params, x, _ = make_problem(shape)
    n_categories = shape[-1]
    upstream = np.random.default_rng(1).normal(size=(shape[0], shape[3], n_categories))

    def pairing(p):
        return np.sum(upstream * ref.encoder_forward(p, x, n_categories)[0])

    _, cache = ref.encoder_forward(params, x, n_categories)
    grads = ref.encoder_backward(params, cache, upstream)
    assert_matches_finite_differences(pairing, grads, params, ref.ENCODER_PARAMS)


@pytest.mark.parametrize("shape", SHAPES)
def test_kl_gradient_matches_finite_differences(shape):
    logits = {"h": np.random.default_rng(2).normal(size=(shape[0], shape[3], shape[4])) * 2}
    grads = {"h": ref.kl_uniform_grad(logits["h"])}
    assert_matches_finite_differences(lambda p: ref.kl_uniform(p["h"]).sum(), grads, logits, ["h"])


def test_kl_is_zero_at_uniform_and_log_k_at_a_point_mass():
    uniform = np.zeros((1, 2, 5))
    assert ref.kl_uniform(uniform) == pytest.approx(0.0, abs=1e-12)
    point_mass = np.array([[[1e4, 0.0, 0.0, 0.0, 0.0]]])
    assert ref.kl_uniform(point_mass) == pytest.approx(np.log(5), rel=1e-9)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_gumbel_softmax_objective_gradients(shape, tau):
    params, x, gumbel = make_problem(shape)
    n_categories = shape[-1]
    _, grads = ref.gumbel_softmax_estimator(params, x, n_categories, gumbel, tau)

    def loss(p):
        return ref.gumbel_softmax_estimator(p, x, n_categories, gumbel, tau)[0]

    assert_matches_finite_differences(loss, grads, params, ref.PARAM_NAMES)


@pytest.mark.parametrize("shape", [s for s in SHAPES if s[3] == 1] + [(2, 6, 5, 1, 2)])
def test_exact_estimator_gradients(shape):
    params, x, _ = make_problem(shape)
    n_categories = shape[-1]
    _, grads = ref.exact_estimator(params, x, n_categories)

    def loss(p):
        return ref.exact_estimator(p, x, n_categories)[0]

    assert_matches_finite_differences(loss, grads, params, ref.PARAM_NAMES)


def test_straight_through_decodes_the_hard_code():
    params, x, gumbel = make_problem(SHAPES[1], n_samples=1)
    n_categories = SHAPES[1][-1]
    loss, grads = ref.gumbel_softmax_estimator(params, x, n_categories, gumbel, 0.7, straight_through=True)
    logits = ref.encoder_forward(params, x, n_categories)[0]
    z = ref.gumbel_max(logits, gumbel)[:, 0]
    expected = np.mean(ref.decoder_loss(params, x, z, n_categories) + ref.kl_uniform(logits))
    assert loss == pytest.approx(expected, rel=1e-12)
    # Its decoder gradients are the true ones at that hard code.
    _, dec_grads = ref._decoder_at_codes(params, x, z[:, None], n_categories)
    for name in ref.DECODER_PARAMS:
        np.testing.assert_allclose(grads[name], dec_grads[name], rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# Theorem 2: Gumbel-max codes are distributed as softmax(h).

def gumbel_max_frequencies(noise, logits, draws):
    codes = ref.gumbel_max(logits[None, None], noise.reshape(1, draws, 1, -1))
    return np.bincount(codes.ravel(), minlength=logits.shape[-1])


def test_theorem2_gumbel_max_frequencies_match_softmax():
    rng = np.random.default_rng(3)
    logits = np.array([1.5, -0.5, 0.0, 2.0, -2.0])
    draws = 200_000
    expected = ref.softmax(logits) * draws
    counts = gumbel_max_frequencies(ref.gumbel_noise(rng, (draws, 5)), logits, draws)
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    # The same test rejects noise of the wrong law, so it can see a broken sampler.
    uniform = rng.uniform(size=(draws, 5))
    wrong = gumbel_max_frequencies(uniform, logits, draws)
    assert stats.chisquare(wrong, expected).pvalue < 1e-9


def test_sample_codes_draws_m_codes_per_point():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(3, 2, 4))
    codes, noise = ref.sample_codes(logits, rng, n_samples=5)
    assert codes.shape == (3, 5, 2) and noise.shape == (3, 5, 2, 4)
    np.testing.assert_array_equal(codes, np.argmax(logits[:, None] + noise, axis=-1))


# ---------------------------------------------------------------------------------------------
# Theorem 1, N = 1: E_g[direct estimate] = (softmax(h) - softmax(h - eps L)) / eps at a fixed eps,
# which tends to the exact gradient J_softmax(h)^T L as eps -> 0.

THEOREM1_SHAPE = (3, 6, 5, 1, 4)


def batched_means(values, groups):
    """Splits the draws axis (1) into groups; returns the mean and its standard error."""
    chunks = np.stack(np.array_split(values, groups, axis=1))
    per_group = chunks.mean(axis=2)
    return per_group.mean(axis=0), per_group.std(axis=0, ddof=1) / np.sqrt(groups)


def sharper_decoder(params, gain=4.0):
    """Scales the decoder's output layer so that the K codes' losses differ by O(1) or more."""
    return dict(params, dec_w2=params["dec_w2"] * gain, dec_b2=params["dec_b2"] * gain)


def test_theorem1_direct_estimate_mean_matches_closed_form():
    params, x, _ = make_problem(THEOREM1_SHAPE, seed=5)
    params = sharper_decoder(params)
    n_categories, eps, draws, groups = THEOREM1_SHAPE[-1], 0.3, 40_000, 40
    rng = np.random.default_rng(6)
    gumbel = ref.gumbel_noise(rng, (len(x), draws, 1, n_categories))
    _, grads, info = ref.direct_estimator(params, x, n_categories, gumbel, eps, kl_backprop=False)
    logits, losses = info["logits"], info["losses"][:, 0]
    expected = ref.direct_expected_logit_grad(logits, losses, eps)

    # Per-draw estimates, to get a standard error for the mean.
    z_dir = ref.perturbed_argmax(logits, gumbel, info["losses"], eps)
    per_draw = (ref.onehot(info["z_opt"], n_categories) - ref.onehot(z_dir, n_categories)) / eps
    mean, stderr = batched_means(per_draw, groups)
    z_scores = np.abs(mean - expected) / np.maximum(stderr, 1e-12)
    assert np.max(z_scores) < 5, f"max z-score {np.max(z_scores):.1f}"
    # The closed form is not trivially close to zero: the test compares something.
    assert np.max(np.abs(expected)) > 20 * np.max(stderr)

    # Encoder parameter gradients: linear in the logit gradient, so the same check applies.
    _, cache = ref.encoder_forward(params, x, n_categories)
    expected_enc = ref.encoder_backward(params, cache, expected / len(x))
    per_group = [ref.encoder_backward(params, cache, chunk.mean(axis=1) / len(x))
                 for chunk in np.array_split(per_draw, groups, axis=1)]
    for name in ref.ENCODER_PARAMS:
        stacked = np.stack([g[name] for g in per_group])
        se = stacked.std(axis=0, ddof=1) / np.sqrt(groups)
        z = np.abs(grads[name] - expected_enc[name]) / np.maximum(se, 1e-12)
        assert np.max(z) < 5, f"{name}: max z-score {np.max(z):.1f}"


def test_theorem1_closed_form_tends_to_exact_gradient_linearly():
    params, x, _ = make_problem(THEOREM1_SHAPE, seed=7)
    n_categories = THEOREM1_SHAPE[-1]
    logits = ref.encoder_forward(params, x, n_categories)[0][:, 0]
    losses = ref.all_code_losses(params, x, n_categories)
    exact = ref.exact_logit_grad(logits, losses)
    epsilons = [0.02, 0.01, 0.005, 0.0025]
    errors = [np.max(np.abs(ref.direct_expected_logit_grad(logits, losses, e) - exact)) for e in epsilons]
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert np.all((ratios > 1.8) & (ratios < 2.2)), f"error ratios {ratios} (linear in eps gives 2)"
    assert errors[-1] < 0.01 * np.max(np.abs(exact))
    # The exact gradient, through the encoder, is what the exact estimator returns.
    _, exact_grads = ref.exact_estimator(params, x, n_categories)
    _, cache = ref.encoder_forward(params, x, n_categories)
    dlogits = (exact[:, None] + ref.kl_uniform_grad(logits[:, None])) / len(x)
    for name, value in ref.encoder_backward(params, cache, dlogits).items():
        np.testing.assert_allclose(exact_grads[name], value, rtol=1e-10, atol=1e-14)


def test_two_sided_estimate_mean_matches_its_closed_form():
    # E[onehot(z_dir(s))] = softmax(h - s L), so the two-sided mean is a central difference.
    params, x, _ = make_problem(THEOREM1_SHAPE, seed=8)
    n_categories, eps, draws = THEOREM1_SHAPE[-1], 0.2, 40_000
    gumbel = ref.gumbel_noise(np.random.default_rng(9), (len(x), draws, 1, n_categories))
    logits = ref.encoder_forward(params, x, n_categories)[0]
    losses = np.broadcast_to(ref.all_code_losses(params, x, n_categories)[:, None, None], gumbel.shape)
    z_opt = ref.gumbel_max(logits, gumbel)
    estimate = ref.direct_logit_grad(logits, gumbel, z_opt, losses, eps, two_sided=True)
    h, L = logits[:, 0], losses[:, 0, 0]
    expected = (ref.softmax(h + eps * L) - ref.softmax(h - eps * L)) / (2 * eps)
    # Bounded per-draw values (|v| <= 1/eps): a loose 5-sigma bound from the worst-case variance.
    bound = 5 * (1 / eps) / np.sqrt(draws)
    assert np.max(np.abs(estimate[:, 0] - expected)) < bound


# ---------------------------------------------------------------------------------------------
# N > 1: the vectorised direct estimator equals a plain loop over samples, variables and values.

def loop_direct_logit_grad(params, x, logits, gumbel, n_categories, eps):
    batch, n_samples, n_latent, _ = gumbel.shape
    losses = np.zeros(gumbel.shape)
    dlogits = np.zeros(logits.shape)
    for b in range(batch):
        for m in range(n_samples):
            z_opt = [int(np.argmax(logits[b, n] + gumbel[b, m, n])) for n in range(n_latent)]
            for n in range(n_latent):
                for k in range(n_categories):
                    code = list(z_opt)
                    code[n] = k
                    losses[b, m, n, k] = ref.decoder_loss(params, x[b:b + 1], np.array([code]), n_categories)[0]
                z_dir = int(np.argmax(logits[b, n] + gumbel[b, m, n] - eps * losses[b, m, n]))
                dlogits[b, n, z_opt[n]] += 1 / (eps * n_samples)
                dlogits[b, n, z_dir] -= 1 / (eps * n_samples)
    return losses, dlogits


@pytest.mark.parametrize("shape", [(3, 6, 4, 3, 2), (2, 5, 4, 2, 4), (1, 4, 3, 4, 3)])
def test_vectorised_direct_estimator_equals_plain_loop(shape):
    params, x, gumbel = make_problem(shape, seed=10, n_samples=3)
    params = sharper_decoder(params, gain=8.0)
    n_categories, eps = shape[-1], 5.0
    _, grads, info = ref.direct_estimator(params, x, n_categories, gumbel, eps, kl_backprop=False)
    losses, dlogits = loop_direct_logit_grad(params, x, info["logits"], gumbel, n_categories, eps)
    # The perturbation moves the arg max for some variables, so the comparison is not 0 == 0.
    assert np.count_nonzero(dlogits) >= 2
    np.testing.assert_allclose(info["losses"], losses, rtol=1e-12)
    _, cache = ref.encoder_forward(params, x, n_categories)
    for name, value in ref.encoder_backward(params, cache, dlogits / len(x)).items():
        np.testing.assert_allclose(grads[name], value, rtol=1e-10, atol=1e-14)
    # With the KL back-propagated, its analytic gradient is added on top.
    _, grads_kl, _ = ref.direct_estimator(params, x, n_categories, gumbel, eps, kl_backprop=True)
    kl_part = ref.encoder_backward(params, cache, ref.kl_uniform_grad(info["logits"]) / len(x))
    for name in ref.ENCODER_PARAMS:
        np.testing.assert_allclose(grads_kl[name], grads[name] + kl_part[name], rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Evaluation.

def test_exact_marginal_nll_is_below_the_importance_bound_and_the_sampled_loss():
    shape = (4, 7, 5, 1, 3)
    params, x, _ = make_problem(shape, seed=11)
    n_categories = shape[-1]
    exact = ref.marginal_nll_exact(params, x, n_categories)
    # Brute force: -log sum_k (1/K) exp(-L_k).
    losses = ref.all_code_losses(params, x, n_categories)
    np.testing.assert_allclose(exact, -np.log(np.mean(np.exp(-losses), axis=1)), rtol=1e-12)
    gumbel = ref.gumbel_noise(np.random.default_rng(12), (4, 20_000, 1, n_categories))
    bound = ref.marginal_nll_importance(params, x, n_categories, gumbel)
    np.testing.assert_allclose(bound, exact, rtol=1e-3)  # many samples: the bound is tight
    # The ELBO-style test loss is an upper bound on the NLL in expectation over codes.
    sampled = np.mean([ref.sampled_loss(params, x, n_categories, gumbel[:, i:i + 1]) for i in range(200)], 0)
    assert np.all(sampled > exact - 1e-9)


# ---------------------------------------------------------------------------------------------
# Bad input: a ValueError naming the argument, never a silent wrong result.

def test_bad_inputs_raise_value_errors_naming_the_argument():
    params, x, gumbel = make_problem(SHAPES[1])
    k = SHAPES[1][-1]
    with pytest.raises(ValueError, match="eps"):
        ref.direct_estimator(params, x, k, gumbel, eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        ref.direct_estimator(params, x, k, gumbel, eps=-1.0)
    with pytest.raises(ValueError, match="tau"):
        ref.gumbel_softmax_estimator(params, x, k, gumbel, tau=0.0)
    with pytest.raises(ValueError, match="x must have shape"):
        ref.direct_estimator(params, x[:, :-1], k, gumbel, eps=1.0)
    with pytest.raises(ValueError, match=r"x \(targets\)"):
        ref.direct_estimator(params, x * 2, k, gumbel, eps=1.0)
    bad_x = x.copy()
    bad_x[0, 0] = np.nan
    with pytest.raises(ValueError, match="x contains non-finite"):
        ref.direct_estimator(params, bad_x, k, gumbel, eps=1.0)
    with pytest.raises(ValueError, match="gumbel must have shape"):
        ref.direct_estimator(params, x, k, gumbel[:, :, :, :1], eps=1.0)
    bad_gumbel = gumbel.copy()
    bad_gumbel[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="gumbel contains non-finite"):
        ref.direct_estimator(params, x, k, bad_gumbel, eps=1.0)
    with pytest.raises(ValueError, match="n_categories"):
        ref.init_params(5, 4, 2, 1, np.random.default_rng())
    with pytest.raises(ValueError, match="n_latent"):
        ref.init_params(5, 4, 0, 3, np.random.default_rng())
    with pytest.raises(ValueError, match="n_categories"):
        ref.direct_estimator(params, x, 4, gumbel, eps=1.0)  # 6 codes are not a multiple of 4
    bad_params = dict(params, dec_b2=params["dec_b2"][:-1])
    with pytest.raises(ValueError, match="dec_b2"):
        ref.direct_estimator(bad_params, x, k, gumbel, eps=1.0)
    nan_params = dict(params, enc_w1=params["enc_w1"] * np.nan)
    with pytest.raises(ValueError, match="enc_w1"):
        ref.direct_estimator(nan_params, x, k, gumbel, eps=1.0)
    with pytest.raises(ValueError, match="n_latent = 1"):
        ref.exact_estimator(params, x, k)
    with pytest.raises(ValueError, match="n_samples"):
        ref.sample_codes(np.zeros((2, 3, 4)), np.random.default_rng(), n_samples=0)


def test_adam_step_matches_the_written_out_update():
    rng = np.random.default_rng(13)
    param, grad = rng.normal(size=5), rng.normal(size=5)
    m, v = np.zeros(5), np.zeros(5)
    for step in (1, 2):
        new_param, m_new, v_new = ref.adam_step(param, grad, m, v, step, lr=0.01)
        np.testing.assert_allclose(m_new, 0.9 * m + 0.1 * grad)
        np.testing.assert_allclose(v_new, 0.999 * v + 0.001 * grad ** 2)
        m_hat, v_hat = m_new / (1 - 0.9 ** step), v_new / (1 - 0.999 ** step)
        np.testing.assert_allclose(new_param, param - 0.01 * m_hat / (np.sqrt(v_hat) + 1e-8), rtol=1e-12)
        param, m, v = new_param, m_new, v_new
    # The first step of Adam moves every entry by about lr, whatever the gradient's scale.
    first, _, _ = ref.adam_step(np.zeros(3), np.array([1e-3, 1.0, -1e3]), np.zeros(3), np.zeros(3), 1, lr=0.01)
    np.testing.assert_allclose(np.abs(first), 0.01, rtol=1e-4)
