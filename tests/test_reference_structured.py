"""The reference's pairwise binary model ("Structured latents" in dvae_cupy/reference.py)
against plain loops, finite differences and Theorem 1 of the paper's supplement."""
import itertools

import numpy as np
import pytest

from dvae_cupy import reference as ref

MODES = ref.PAIRWISE_MODES


def softplus(a):
    return np.logaddexp(0.0, a)


# ---------------------------------------------------------------------------------------------
# Pair indexing and the score

@pytest.mark.parametrize("N", [1, 2, 3, 7])
def test_pair_order_is_row_major(N):
    pairs = list(itertools.combinations(range(N), 2))  # (0,1), (0,2), ..., (1,2), ...
    first, second = ref.pair_indices(N)
    assert list(zip(first, second)) == pairs and ref.pair_count(N) == len(pairs)
    assert [ref.pair_index(i, j, N) for i, j in pairs] == list(range(len(pairs)))
    assert ref.structured_output_width(N) == 2 * N + len(pairs)


def test_all_code_scores_equal_the_score_written_out():
    rng = np.random.default_rng(0)
    N = 5
    unary, pairwise = rng.normal(size=(3, N, 2)), rng.normal(size=(3, ref.pair_count(N)))
    scores = ref.all_code_scores(unary, pairwise)
    for s in range(3):
        for c, z in enumerate(ref.all_binary_codes(N)):
            plain = sum(unary[s, i, z[i]] for i in range(N)) + sum(
                pairwise[s, ref.pair_index(i, j, N)] * z[i] * z[j]
                for i in range(N) for j in range(i + 1, N))
            assert np.isclose(scores[s, c], plain, rtol=1e-13, atol=1e-13)
            assert np.isclose(ref.structured_score(unary[s], pairwise[s], z), plain, rtol=1e-13)
    assert all(int("".join(map(str, z[::-1])), 2) == c  # code number c = sum_i z_i 2^i
               for c, z in enumerate(ref.all_binary_codes(N)))


# ---------------------------------------------------------------------------------------------
# The vectorised estimator against a plain loop over samples, variables and values

def loop_argmax(unary, pairwise):
    """Brute force by a loop over the codes in number order (strict >: the first maximum)."""
    N = len(unary)
    best, best_code = -np.inf, None
    for c in range(2 ** N):
        z = [(c >> i) & 1 for i in range(N)]
        score = sum(unary[i][z[i]] for i in range(N))
        for i in range(N):
            for j in range(i + 1, N):
                score += pairwise[ref.pair_index(i, j, N)] * z[i] * z[j]
        if score > best:
            best, best_code = score, z
    return np.array(best_code)


def loop_estimator(params, x, N, gumbel, eps, mode, two_sided):
    """The structured direct estimator written sample by sample."""
    B, M = gumbel.shape[:2]
    enc_out, enc_cache = ref.encoder_forward(params, x, 1)
    enc_out = enc_out[..., 0]
    d_out = np.zeros_like(enc_out)
    dec_grads = {name: np.zeros_like(params[name]) for name in ref.DECODER_PARAMS}
    total = 0.0
    for b in range(B):
        unary = enc_out[b, :2 * N].reshape(N, 2)
        pre = enc_out[b, 2 * N:]
        pairwise = softplus(pre) if mode == "attractive" else pre
        q = np.exp(unary) / np.exp(unary).sum(axis=1, keepdims=True)
        kl = float(np.sum(q * np.log(q * 2)))
        recon = 0.0
        for m in range(M):
            perturbed = unary + gumbel[b, m]
            z_opt = loop_argmax(perturbed, pairwise)
            recon += ref.decoder_loss(params, x[b:b + 1], z_opt[None], 2)[0] / M
            out, cache = ref.decoder_forward(params, ref.onehot(z_opt, 2).reshape(1, -1))
            grads, _ = ref.decoder_backward(params, cache,
                                            ref.bce_with_logits_grad(out, x[b:b + 1]) / (B * M))
            for name in dec_grads:
                dec_grads[name] += grads[name]
            losses = np.zeros((N, 2))
            for i in range(N):
                for k in range(2):
                    z = z_opt.copy()
                    z[i] = k
                    losses[i, k] = ref.decoder_loss(params, x[b:b + 1], z[None], 2)[0]
            z_plus = loop_argmax(perturbed - eps * losses, pairwise)
            base = loop_argmax(perturbed + eps * losses, pairwise) if two_sided else z_opt
            scale = (2 * eps if two_sided else eps) * M * B
            for i in range(N):
                for k in range(2):
                    d_out[b, 2 * i + k] += (int(base[i] == k) - int(z_plus[i] == k)) / scale
            for p, (i, j) in enumerate(itertools.combinations(range(N), 2)):
                slope = 1 / (1 + np.exp(-pre[p])) if mode == "attractive" else 1.0
                d_out[b, 2 * N + p] += (base[i] * base[j] - z_plus[i] * z_plus[j]) * slope / scale
        total += (recon + kl) / B
    grads = dict(ref.encoder_backward(params, enc_cache, d_out), **dec_grads)
    return total, grads, d_out


@pytest.mark.parametrize("two_sided", [False, True], ids=["one-sided", "two-sided"])
@pytest.mark.parametrize("mode", MODES)
def test_vectorised_estimator_equals_the_plain_loop(mode, two_sided):
    rng = np.random.default_rng([7, two_sided])
    B, M, N, D, H = 3, 2, 4, 9, 6
    params = ref.init_structured_params(D, H, N, mode, rng)
    params["dec_w1"] *= 20  # loss differences between codes large enough for eps L to move z
    x = (rng.uniform(size=(B, D)) > 0.5).astype(np.float64)
    gumbel = ref.gumbel_noise(rng, (B, M, N, 2))
    eps = 0.5
    loss, grads, info = ref.structured_direct_estimator(params, x, N, gumbel, eps, mode,
                                                        two_sided)
    loop_loss, loop_grads, loop_d_out = loop_estimator(params, x, N, gumbel, eps, mode,
                                                       two_sided)
    assert np.count_nonzero(loop_d_out[:, :2 * N]) > 0  # the test moves some codes
    assert np.count_nonzero(loop_d_out[:, 2 * N:]) > 0
    assert loss == pytest.approx(loop_loss, rel=1e-12)
    for name in ref.PARAM_NAMES:
        np.testing.assert_allclose(grads[name], loop_grads[name], rtol=1e-10, atol=1e-12,
                                   err_msg=name)
    assert set(info) >= {"z_opt", "z_dir", "losses", "enc_out", "unary", "pairwise"}
    assert ("z_dir_minus" in info) == two_sided


@pytest.mark.parametrize("mode", MODES)
def test_decoder_gradients_match_finite_differences(mode):
    # z_opt does not depend on the decoder, so the reported loss is smooth in its parameters
    # and the decoder gradient is its true derivative
    rng = np.random.default_rng(8)
    B, M, N, D, H = 2, 2, 3, 6, 5
    params = ref.init_structured_params(D, H, N, mode, rng)
    x = (rng.uniform(size=(B, D)) > 0.5).astype(np.float64)
    gumbel = ref.gumbel_noise(rng, (B, M, N, 2))
    _, grads, _ = ref.structured_direct_estimator(params, x, N, gumbel, 0.5, mode)
    step = 1e-6
    for name in ref.DECODER_PARAMS:
        numeric = np.zeros_like(params[name])
        for index in np.ndindex(numeric.shape):
            saved = params[name][index]
            params[name][index] = saved + step
            up = ref.structured_direct_estimator(params, x, N, gumbel, 0.5, mode)[0]
            params[name][index] = saved - step
            down = ref.structured_direct_estimator(params, x, N, gumbel, 0.5, mode)[0]
            params[name][index] = saved
            numeric[index] = (up - down) / (2 * step)
        scale = np.abs(numeric).max()
        assert np.abs(grads[name] - numeric).max() / scale < 1e-6, name


@pytest.mark.parametrize("mode", MODES)
def test_reported_loss_is_bce_at_z_opt_plus_the_unary_kl(mode):
    rng = np.random.default_rng(9)
    B, N, D, H = 4, 3, 8, 5
    params = ref.init_structured_params(D, H, N, mode, rng)
    x = (rng.uniform(size=(B, D)) > 0.5).astype(np.float64)
    gumbel = ref.gumbel_noise(rng, (B, 1, N, 2))
    loss, _, info = ref.structured_direct_estimator(params, x, N, gumbel, 0.5, mode)
    per_sample = ref.structured_sampled_loss(params, x, N, gumbel, mode)
    bce = ref.decoder_loss(params, x, info["z_opt"][:, 0], 2)
    q = ref.softmax(info["unary"])
    kl = np.sum(q * np.log(2 * q), axis=(1, 2))
    np.testing.assert_allclose(per_sample, bce + kl, rtol=1e-12)
    assert loss == pytest.approx(per_sample.mean(), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Theorem 1 under this low-dimensional perturbation (N <= 3, every code decoded)

def code_statistics(N):
    """(2^N, 2N + P): the gradient of h(z) in (unaries, pairwise potentials) at every code."""
    codes = ref.all_binary_codes(N)
    onehots = ref.onehot(codes, 2).reshape(len(codes), 2 * N)
    return np.concatenate([onehots, ref.pair_statistics(codes)], axis=1)


def theorem1_errors(N, mode, seed, draws, epsilons, delta=0.05):
    """Relative max-norm errors of the mean direct estimate (one- and two-sided, all codes)
    against common-random-number central differences of E_gamma[f(z_opt)], per eps."""
    rng = np.random.default_rng(seed)
    params = ref.init_structured_params(784, 300, N, mode, rng)
    x = (rng.uniform(size=(1, 784)) < 0.3).astype(np.float64)
    codes = ref.all_binary_codes(N)
    f = ref.decoder_loss(params, np.repeat(x, len(codes), axis=0), codes, 2)  # exact f(z)
    pre = rng.normal(size=ref.pair_count(N))
    unary = rng.normal(size=(N, 2))
    pairwise = softplus(pre) if mode == "attractive" else pre
    stats = code_statistics(N)
    gamma = rng.gumbel(size=(draws, N, 2))
    perturbed = ref.all_code_scores(unary + gamma, pairwise)  # h(z) + sum_i gamma_i(z_i)
    z_opt = perturbed.argmax(axis=1)
    fd = np.array([(f[(perturbed + delta * s).argmax(1)] - f[(perturbed - delta * s).argmax(1)])
                   .mean() / (2 * delta) for s in stats.T])
    scale = np.abs(fd).max()
    one, two = {}, {}
    for eps in epsilons:
        z_plus = (perturbed - eps * f).argmax(axis=1)
        z_minus = (perturbed + eps * f).argmax(axis=1)
        one[eps] = np.abs((stats[z_opt] - stats[z_plus]).mean(0) / eps - fd).max() / scale
        two[eps] = np.abs((stats[z_minus] - stats[z_plus]).mean(0) / (2 * eps) - fd).max() / scale
    return one, two


@pytest.mark.slow
@pytest.mark.parametrize("N, mode, seed", [(2, "attractive", 0), (3, "attractive", 1),
                                           (3, "signed", 2)])
def test_theorem_1_holds_for_the_pairwise_model(N, mode, seed):
    # ~5 s each. Measured (1M draws, three noise seeds; relative max-norm error against the
    # finite differences): one-sided 0.44-0.91 at eps = 1, 0.11-0.33 at 0.3, 0.035-0.11 at 0.1,
    # 0.007-0.052 at 0.03 (O(eps) bias, then Monte Carlo noise); two-sided 0.07-0.36 at eps = 1,
    # 0.003-0.05 at 0.3, 0.003-0.02 at 0.1 (O(eps^2)). Tolerances leave ~1.5x the worst seen.
    one, two = theorem1_errors(N, mode, seed, 1_000_000, [1.0, 0.3, 0.1, 0.03])
    assert one[1.0] > 0.3  # the bias at a large eps is real: the limit matters
    assert one[0.3] < one[1.0] / 2 and one[0.1] < one[0.3] / 2  # shrinking ~linearly in eps
    assert one[0.1] < 0.17 and one[0.03] < 0.08
    assert two[0.3] < 0.08 and two[0.1] < 0.04
    assert two[0.3] < one[0.3]


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors naming the argument

def test_model_options_are_checked():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="n_vars must be an integer >= 2 for a pairwise model"):
        ref.init_structured_params(5, 3, 1, "attractive", rng)
    with pytest.raises(ValueError, match=r"n_vars must be <= 20 with signed .* 2\*\*n_vars"):
        ref.check_pairwise_model(21, "signed")
    ref.check_pairwise_model(21, "attractive")  # min-cut has no such limit
    with pytest.raises(ValueError, match="mode must be one of"):
        ref.check_pairwise_model(4, "ilp")


def test_potentials_are_checked():
    unary, pairwise = np.zeros((2, 3, 2)), np.ones((2, 3))
    for solver in (ref.structured_argmax_mincut, ref.structured_argmax_enumerate):
        bad = unary.copy()
        bad[0, 1, 0] = np.nan
        with pytest.raises(ValueError, match="unary contains non-finite"):
            solver(bad, pairwise)
        bad = pairwise.copy()
        bad[1, 2] = np.inf
        with pytest.raises(ValueError, match="pairwise contains non-finite"):
            solver(unary, bad)
        with pytest.raises(ValueError, match=r"pairwise must have shape \(\.\.\., 3\)"):
            solver(unary, np.ones((2, 2)))
    with pytest.raises(ValueError, match="pairwise must be >= 0 for the min-cut"):
        ref.structured_argmax_mincut(unary, -pairwise)
    with pytest.raises(ValueError, match="N must be <= 20"):
        ref.structured_argmax_enumerate(np.zeros((21, 2)), np.zeros(210))
    with pytest.raises(ValueError, match="enc_out must have shape"):
        ref.structured_potentials(np.zeros((2, 8)), 3, "signed")


def test_estimator_arguments_are_checked():
    rng = np.random.default_rng(1)
    params = ref.init_structured_params(5, 3, 3, "attractive", rng)
    x = np.ones((2, 5))
    gumbel = np.zeros((2, 1, 3, 2))
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        ref.structured_direct_estimator(params, x, 3, gumbel, 0.0, "attractive")
    with pytest.raises(ValueError, match=r"params\['enc_w2'\] has shape"):
        ref.structured_direct_estimator(params, x, 4, np.zeros((2, 1, 4, 2)), 0.5, "attractive")
    with pytest.raises(ValueError, match="gumbel must have shape"):
        ref.structured_direct_estimator(params, x, 3, np.zeros((2, 1, 3, 3)), 0.5, "attractive")
    params["enc_b2"][0] = np.nan
    with pytest.raises(ValueError, match=r"params\['enc_b2'\] contains non-finite"):
        ref.structured_direct_estimator(params, x, 3, gumbel, 0.5, "attractive")
