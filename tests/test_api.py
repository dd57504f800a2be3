"""The library API: shapes, agreement with the reference, save/load, and clear errors."""
import numpy as np
import pytest

from dvae_cupy import DiscreteVAE
from dvae_cupy import reference as ref

PIXELS = 20


@pytest.fixture(scope="module")
def vae():
    return DiscreteVAE(n_latent=2, n_categories=3, hidden=8, pixels=PIXELS, seed=1, backend="cpu", eval_batch_size=7)


def images(n, seed=0):
    return (np.random.default_rng(seed).uniform(size=(n, PIXELS)) > 0.5).astype(np.float64)


def params64(vae):
    return {k: v.astype(np.float64) for k, v in vae.model.host_params().items()}


def test_encode_decode_agree_with_the_reference_across_batches(vae):
    x = images(17)  # 17 = 2 full batches of 7 and a partial one
    logits = ref.encoder_forward(params64(vae), x, 3)[0]
    np.testing.assert_allclose(vae.logits(x), logits, rtol=1e-4, atol=1e-5)
    codes = vae.encode(x)
    assert codes.shape == (17, 2) and codes.dtype == np.int32
    np.testing.assert_array_equal(codes, logits.argmax(axis=-1))
    out, _ = ref.decoder_forward(params64(vae), ref.onehot(codes, 3).reshape(17, -1))
    np.testing.assert_allclose(vae.decode(codes), ref.sigmoid(out), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(vae.reconstruct(x), ref.sigmoid(out), rtol=1e-4, atol=1e-6)


def test_sampled_codes_follow_q(vae):
    x = np.repeat(images(1), 3000, axis=0)
    draws = np.concatenate([vae.encode(x, sample=True, seed=s) for s in range(3)])
    q = ref.softmax(ref.encoder_forward(params64(vae), x[:1], 3)[0][0])
    for n in range(2):
        frequencies = np.bincount(draws[:, n], minlength=3) / len(draws)
        np.testing.assert_allclose(frequencies, q[n], atol=0.02)


def test_loss_and_nll_match_the_reference(vae):
    x = images(5)
    nll = vae.nll(x, samples=4000, seed=3)
    # The importance-sampled bound with many samples approaches the brute-force marginal.
    p = params64(vae)
    codes = np.array([[a, b] for a in range(3) for b in range(3)])
    losses = np.stack([ref.decoder_loss(p, x, np.repeat(c[None], 5, axis=0), 3) for c in codes], axis=1)
    exact = np.log(9) - ref.logsumexp(-losses, axis=1)
    np.testing.assert_allclose(nll, exact, rtol=2e-3)
    # The test loss (BCE at a sampled code + KL) bounds the NLL from above in expectation.
    assert vae.loss(x).shape == (5,)
    # Its expectation is the negative ELBO, sum_z q(z|x) L(z) + KL, which is >= the NLL.
    logits = ref.encoder_forward(p, x, 3)[0]
    q = ref.softmax(logits)
    q_codes = np.stack([q[:, 0, a] * q[:, 1, b] for a, b in codes], axis=1)
    elbo_loss = np.sum(q_codes * losses, axis=1) + ref.kl_uniform(logits)
    assert np.all(elbo_loss >= exact)
    draws = np.stack([vae.loss(x, seed=s) for s in range(400)])
    stderr = draws.std(axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - elbo_loss) < 5 * stderr + 1e-4)


def test_sample_decodes_prior_codes(vae):
    codes, probabilities = vae.sample(4, seed=2)
    assert codes.shape == (4, 2) and probabilities.shape == (4, PIXELS)
    np.testing.assert_allclose(probabilities, vae.decode(codes))
    assert np.all((probabilities > 0) & (probabilities < 1))


def test_save_and_load_round_trip(vae, tmp_path):
    vae.save(tmp_path / "vae.h5")
    loaded = DiscreteVAE.load(tmp_path / "vae.h5", backend="cpu")
    for name, value in vae.model.host_params().items():
        np.testing.assert_array_equal(loaded.model.host_params()[name], value)
    np.testing.assert_array_equal(loaded.encode(images(6)), vae.encode(images(6)))


def test_bad_inputs_name_the_problem(vae, tmp_path):
    with pytest.raises(ValueError, match=r"x must have shape \(n, 20\)"):
        vae.encode(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="non-finite"):
        vae.encode(np.full((1, PIXELS), np.nan))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vae.loss(np.full((1, PIXELS), 2.0))
    with pytest.raises(ValueError, match="codes must lie"):
        vae.decode(np.array([[0, 3]]))
    with pytest.raises(ValueError, match="codes must be integers"):
        vae.decode(np.array([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="n_categories"):  # checked at first use, not by __init__
        DiscreteVAE(n_categories=1, pixels=4, backend="cpu").encode(np.zeros((1, 4)))
    with pytest.raises(FileNotFoundError):
        DiscreteVAE.load(tmp_path / "missing.h5")


def test_errors_name_the_parameter_the_caller_passed(vae):
    # transform and score take X (scikit-learn's name), the model's functions x
    bad = np.zeros((3, 5))
    with pytest.raises(ValueError, match=r"^X must have shape"):
        vae.transform(bad)
    with pytest.raises(ValueError, match=r"^X contains non-finite"):
        vae.score(np.full((1, PIXELS), np.nan))
    with pytest.raises(ValueError, match=r"^x must have shape"):
        vae.loss(bad)


@pytest.mark.parametrize("arrays, message", [
    ({"X": np.zeros((3, 5, 2, 2, 2))}, r"^X: shape \(3, 5, 2, 2, 2\)"),
    ({"x_valid": np.zeros((3, 7))}, r"X has 20, x_valid has 7"),
    ({"x_test": -np.ones((3, PIXELS))}, r"^x_test: Negative values"),
])
def test_fit_errors_name_x_x_valid_and_x_test(arrays, message):
    model = DiscreteVAE(n_latent=2, n_categories=3, hidden=8, pixels=PIXELS, backend="cpu",
                        progress=False)
    X = arrays.pop("X", images(30))
    with pytest.raises(ValueError, match=message):
        model.fit(X, epochs=1, batch_size=10, **arrays)


def test_posterior_of_the_pairwise_model_says_posterior():
    vae = DiscreteVAE(n_latent=3, latent_structure="pairwise", hidden=8, pixels=PIXELS, backend="cpu")
    with pytest.raises(ValueError, match=r"posterior\(\) is for latent_structure='categorical'"):
        vae.posterior(images(2))
    assert vae.potentials(images(2))[0].shape == (2, 3, 2)


@pytest.mark.parametrize("name, value", [
    ("n_latent", 2.5), ("n_latent", "2"), ("n_latent", None), ("n_categories", float("nan")),
    ("hidden", "a"), ("hidden", None), ("pixels", "a"), ("pixels", 20.5), ("epochs", True),
    ("batch_size", "50"), ("gumbel_samples", 1.5), ("anneal_every", None), ("seed", -1.0),
    ("seed", 2.0 ** 64), ("eval_batch_size", 0.5), ("eval_batch_size", float("inf")),
])
def test_a_bad_integer_parameter_is_a_value_error_naming_it(name, value):
    params = {"pixels": PIXELS, "backend": "cpu", name: value}
    with pytest.raises(ValueError, match=rf"{name} must be an integer"):
        DiscreteVAE(**params).encode(images(2))


def test_integral_floats_are_used_as_ints_by_an_untrained_model(vae):
    params = {**vae.get_params(), "n_latent": 2.0, "n_categories": 3.0, "hidden": 8.0,
              "pixels": float(PIXELS), "seed": 1.0, "eval_batch_size": 7.0}
    floats = DiscreteVAE(**params)
    assert floats.shape == vae.shape and type(floats.shape.n_latent) is int
    np.testing.assert_array_equal(floats.logits(images(9)), vae.logits(images(9)))


def sparse_matrix(dense):
    from scipy import sparse  # in the test extra, not a core dependency
    return sparse.csr_matrix(dense)


@pytest.mark.parametrize("x, message", [
    (lambda: np.full((2, PIXELS), 256), "x: integer pixels must be in 0..255; found 256"),
    (lambda: np.full((2, PIXELS), -1), r"x: Negative values in data \(-1\)"),
    (lambda: np.zeros((2, PIXELS), "U1"), "x: dtype <U1; pixels must be uint8 0..255"),
    (lambda: sparse_matrix(np.eye(2, PIXELS)), r"x: sparse input is not supported .* x.toarray\(\)"),
])
def test_bad_pixels_are_a_value_error_naming_x(vae, x, message):
    with pytest.raises(ValueError, match=message):
        vae.encode(x())
