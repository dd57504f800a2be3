"""DiscreteVAE under scikit-learn (a test-only dependency): clone, a Pipeline that classifies
Fashion-MNIST from the codes, and scikit-learn's own estimator checks where they apply.

scikit-learn's checks make their data with N(0, 1) or uniform(0, 10) values; a Bernoulli decoder
over pixels takes values in [0, 1] only, and refuses the rest with a ValueError (as it must), so
the checks that fit on such data cannot pass: they are listed in NEEDS_PIXELS with that reason,
and what they check is checked below on pixel data instead (fit returns self, fitting is
idempotent, n_features_in_, order and subset invariance, read-only memory maps, F-ordered
input, pipelines). check_dtype_object is refused on purpose: object arrays are not pixels."""
import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

from dvae_cupy import DiscreteVAE  # noqa: E402
from dvae_cupy.data import load_dataset  # noqa: E402

SMALL = dict(n_latent=4, n_categories=5, hidden=16, epochs=1, batch_size=50, backend="cpu", progress=False)
NEEDS_PIXELS = {
    "check_estimators_overwrite_params", "check_dont_overwrite_parameters",
    "check_estimators_fit_returns_self", "check_readonly_memmap_input",
    "check_n_features_in_after_fitting", "check_estimators_dtypes", "check_pipeline_consistency",
    "check_estimators_pickle", "check_f_contiguous_array_estimator",
    "check_transformer_data_not_an_array", "check_transformer_general",
    "check_methods_sample_order_invariance", "check_methods_subset_invariance",
    "check_fit2d_1sample", "check_fit2d_1feature", "check_dict_unchanged", "check_fit_idempotent",
    "check_fit_check_is_fitted", "check_n_features_in", "check_fit2d_predict1d",
}
REFUSED = {"check_dtype_object": "object arrays are not pixels"}


def pixels(n, d=20, seed=0):
    return (np.random.default_rng(seed).uniform(size=(n, d)) > 0.5).astype(np.float32)


def test_scikit_learns_checks_that_apply_pass():
    expected = {name: "needs pixel data in [0, 1]; checked on pixels in this file" for name in NEEDS_PIXELS}
    expected.update(REFUSED)
    vae = DiscreteVAE(**{**SMALL, "batch_size": 4})  # its data sets have a few dozen rows
    results = check_estimator(vae, expected_failed_checks=expected, on_fail=None)
    unexpected = [(r["check_name"], str(r["exception"])[:200]) for r in results
                  if r["status"] == "failed" and r["check_name"] not in expected]
    passed = sorted({r["check_name"] for r in results if r["status"] == "passed"})
    print(f"{len(passed)} scikit-learn checks pass: {passed}")
    assert not unexpected
    assert len(passed) >= 20


def test_clone_and_params():
    vae = DiscreteVAE(**SMALL, seed=4)
    copy = clone(vae)
    assert copy.get_params() == vae.get_params() and copy is not vae
    assert copy.set_params(epochs=3).epochs == 3 and vae.epochs == 1


def test_the_protocol_on_pixel_data(tmp_path):
    x = pixels(300)
    vae = DiscreteVAE(**SMALL)
    before = dict(vars(vae))
    assert vae.fit(x) is vae and vae.n_features_in_ == 20
    assert {k: v for k, v in vars(vae).items() if not k.endswith("_") and not k.startswith("_")} == before
    again = clone(vae).fit(x)
    np.testing.assert_array_equal(again.transform(x), vae.transform(x))   # idempotent per seed
    order = np.random.default_rng(1).permutation(len(x))
    np.testing.assert_array_equal(vae.transform(x[order]), vae.transform(x)[order])
    np.testing.assert_array_equal(vae.transform(x[:17]), vae.transform(x)[:17])
    # loss draws image i's noise from the stream (seed, i): a row's value depends on its
    # position, not on how the rows are batched
    np.testing.assert_array_equal(vae.set_params(eval_batch_size=7).loss(x), vae.set_params(eval_batch_size=1000).loss(x))
    np.save(tmp_path / "x.npy", x)
    readonly = np.load(tmp_path / "x.npy", mmap_mode="r")
    np.testing.assert_array_equal(vae.transform(readonly), vae.transform(x))
    np.testing.assert_array_equal(vae.transform(np.asfortranarray(x)), vae.transform(x))
    assert vae.transform(x.tolist()).shape == (300, 4)
    one_hot = clone(vae).set_params(one_hot=True).fit(x)
    assert one_hot.transform(x).shape == (300, 20)
    np.testing.assert_allclose(one_hot.inverse_transform(one_hot.transform(x[:5])),
                               one_hot.inverse_transform(vae.transform(x[:5])))
    assert vae.score(x) == pytest.approx(-float(vae.loss(x).mean()))


def test_a_pipeline_classifies_fashion_mnist_from_the_codes():
    data = load_dataset("fashion-mnist")
    train, test = data.train[:4000], data.test[:2000]
    labels_train, labels_test = data.labels["train"][:4000], data.labels["test"][:2000]
    pipeline = Pipeline([
        ("vae", DiscreteVAE(n_latent=20, n_categories=10, epochs=2, one_hot=True, backend="cpu",
                            progress=False)),
        ("clf", LogisticRegression(max_iter=300)),
    ])
    pipeline.fit(train, labels_train)
    accuracy = float(np.mean(pipeline.predict(test) == labels_test))
    print(f"Fashion-MNIST, 4000 training images, 2 epochs, N=20 K=10 one-hot codes -> logistic "
          f"regression: test accuracy {accuracy:.3f}")
    assert accuracy > 0.5  # chance is 0.1


def test_the_readme_library_example_runs(tmp_path, monkeypatch):
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = readme.split("<!-- library-example -->")[1].split("<!-- /library-example -->")[0]
    code = code.strip().removeprefix("```python").removesuffix("```")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVAE_CUPY_BACKEND", "cpu")
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "model.h5").exists()
