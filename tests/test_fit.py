"""DiscreteVAE.fit and the scikit-learn protocol: the same training as dvae-train, users' data of
any shape from arrays and files, DLPack tensors, streaming evaluation, and clear errors."""
import json
import tracemalloc

import h5py
import numpy as np
import pytest

from dvae_cupy import DiscreteVAE
from dvae_cupy.cli import train_main
from dvae_cupy.config import TrainConfig
from dvae_cupy.data import load_dataset, write_dataset
from dvae_cupy.errors import NotFittedError
from dvae_cupy.train import Trainer

SMALL = dict(hidden=16, epochs=2, batch_size=50, backend="cpu", progress=False)


def binary_images(n, shape, seed=0):
    return (np.random.default_rng(seed).uniform(size=(n, *shape)) > 0.6).astype(np.uint8)


@pytest.fixture(scope="module")
def fashion():
    data = load_dataset("fashion-mnist")
    return data.train[:1000], data.valid[:300], data.test[:300], data.labels


def test_fit_is_dvae_train(fashion, tmp_path):
    train, valid, test, _ = fashion
    options = dict(n_latent=2, n_categories=3, seed=3, **SMALL)
    vae = DiscreteVAE(**options).fit(train, x_valid=valid, x_test=test, out=tmp_path / "fit")
    config = TrainConfig(train_subset=1000, eval_subset=300, out=str(tmp_path / "cli"),
                         **{k: v for k, v in options.items()})
    trainer = Trainer(config, log=lambda *a: None)
    trainer.run()
    strip = lambda metrics: [{k: v for k, v in m.items() if k != "seconds"} for m in metrics]  # noqa: E731
    assert strip(vae.history_) == strip(trainer.metrics)  # bit-identical floats
    for name, value in trainer.model.host_params().items():
        np.testing.assert_array_equal(vae.model_.host_params()[name], value, err_msg=name)
    assert (tmp_path / "fit" / "checkpoint.h5").exists() and (tmp_path / "fit" / "curves.png").exists()


def test_fit_without_out_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    vae = DiscreteVAE(**SMALL).fit(binary_images(300, (6, 5)))
    assert list(tmp_path.iterdir()) == []
    assert len(vae.history_) == 2 and vae.n_features_in_ == 30 and vae.image_shape_ == (6, 5)


@pytest.mark.parametrize("image_shape", [(16, 16), (20, 12)])
def test_users_images_of_any_shape_through_fit_and_dvae_train(tmp_path, image_shape):
    images = binary_images(400, image_shape)
    files = {"h5": tmp_path / "x.h5", "npy": tmp_path / "x.npy", "npz": tmp_path / "x.npz"}
    write_dataset(files["h5"], images, image_shape=image_shape)
    np.save(files["npy"], images)
    np.savez(files["npz"], train=images)
    for kind, path in files.items():
        out = tmp_path / f"run-{kind}"
        assert train_main(["--dataset", str(path), "--epochs", "1", "--hidden", "16", "--batch-size",
                           "50", "--backend", "cpu", "--no-progress", "--out", str(out)]) == 0
        loaded = DiscreteVAE.load(out / "best.h5", backend="cpu")
        assert loaded.encode(images.reshape(400, -1)[:7]).shape == (7, 1)
    vae = DiscreteVAE(**SMALL).fit(images)
    vae.save(tmp_path / "fit.h5")
    again = DiscreteVAE.load(tmp_path / "fit.h5", backend="cpu")
    assert again.image_shape_ == image_shape
    np.testing.assert_array_equal(again.encode(images[:9]), vae.encode(images[:9]))


def test_binarization_options(tmp_path):
    grey = np.random.default_rng(1).uniform(size=(300, 12))
    with pytest.raises(ValueError, match="binarization='none'"):
        DiscreteVAE(binarization="none", **SMALL).fit(grey)
    with pytest.raises(ValueError, match="binarization='dynamic'"):
        DiscreteVAE(binarization="dynamic", **SMALL).fit(binary_images(300, (12,)))
    fixed = DiscreteVAE(binarization="fixed", **SMALL).fit(grey)
    threshold = DiscreteVAE(binarization="none", **SMALL).fit((grey >= 0.5).astype(np.float32))
    for name, value in fixed.model_.host_params().items():  # fixed = thresholded once at 0.5
        np.testing.assert_array_equal(threshold.model_.host_params()[name], value)
    dynamic = DiscreteVAE(binarization="dynamic", **SMALL).fit(grey)
    assert np.isfinite(dynamic.history_[-1]["train_loss"])


def test_fit_resumes_a_run_folder(tmp_path):
    images = binary_images(300, (10,))
    whole = DiscreteVAE(**{**SMALL, "epochs": 3}).fit(images)
    part = DiscreteVAE(**SMALL).fit(images, out=tmp_path)
    part.fit(images, out=tmp_path, resume=True, epochs=3)
    for name, value in whole.model_.host_params().items():
        np.testing.assert_array_equal(part.model_.host_params()[name], value)
    assert [m["epoch"] for m in part.history_] == [1, 2, 3]


# ---------------------------------------------------------------------------------------------
# Array-likes: DLPack tensors without copies, h5py datasets and memory maps streamed.

@pytest.fixture(scope="module")
def fitted():
    return DiscreteVAE(n_latent=2, n_categories=4, **SMALL).fit(binary_images(400, (24,)))


def test_a_torch_tensor_is_read_through_dlpack_without_a_copy(fitted):
    torch = pytest.importorskip("torch")
    from dvae_cupy.api import _array_like

    x = np.random.default_rng(2).uniform(size=(30, 24)).astype(np.float32)
    tensor = torch.from_numpy(x.copy())
    view = _array_like(tensor, "x")
    assert np.shares_memory(view, tensor.numpy())  # no copy on the way in
    np.testing.assert_array_equal(fitted.encode(tensor), fitted.encode(x))
    np.testing.assert_array_equal(fitted.loss(tensor), fitted.loss(x))
    trained = DiscreteVAE(**SMALL).fit(torch.from_numpy(binary_images(300, (24,))))
    assert trained.n_features_in_ == 24


def test_a_jax_array_is_read_through_dlpack(fitted):
    jnp = pytest.importorskip("jax.numpy", reason="JAX is not installed (an optional test dependency)")
    x = np.random.default_rng(2).uniform(size=(30, 24)).astype(np.float32)
    np.testing.assert_array_equal(fitted.encode(jnp.asarray(x)), fitted.encode(x))


def test_evaluation_streams_an_h5py_dataset_in_bounded_memory(fitted, tmp_path):
    peaks = {}
    for n in (2_000, 20_000):
        with h5py.File(tmp_path / f"x{n}.h5", "w") as f:
            f.create_dataset("x", data=np.random.default_rng(n).uniform(size=(n, 24)).astype(np.float32))
        with h5py.File(tmp_path / f"x{n}.h5", "r") as f:
            fitted.encode(f["x"][:10])  # warm-up: the evaluation workspaces exist before tracing
            tracemalloc.start()
            codes = fitted.encode(f["x"])
            losses = fitted.loss(f["x"])
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert codes.shape == (n, 2) and losses.shape == (n,)
        # the outputs grow with n (and are concatenated once); everything else must not
        peaks[n] = peak - 2 * (codes.nbytes + losses.nbytes)
    print(f"peak beyond the outputs: {peaks}")
    assert peaks[20_000] < 1.5 * peaks[2_000] + 2 ** 20


def test_a_memory_map_is_read_in_batches(fitted, tmp_path):
    x = np.random.default_rng(3).uniform(size=(2500, 24)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    np.testing.assert_array_equal(fitted.transform(mapped), fitted.transform(x))
    np.testing.assert_array_equal(fitted.nll(mapped[:50], samples=8), fitted.nll(x[:50], samples=8))


# ---------------------------------------------------------------------------------------------
# One behaviour for bad and empty input.

def test_empty_input_gives_empty_output_from_every_method(fitted):
    empty = np.zeros((0, 24))
    assert fitted.encode(empty).shape == (0, 2) and fitted.encode(empty, sample=True).shape == (0, 2)
    assert fitted.logits(empty).shape == (0, 2, 4) and fitted.loss(empty).shape == (0,)
    assert fitted.nll(empty).shape == (0,) and fitted.decode(np.zeros((0, 2), int)).shape == (0, 24)
    assert fitted.transform(empty).shape == (0, 2) and fitted.sample(0)[1].shape == (0, 24)
    with pytest.raises(ValueError, match="X is empty"):
        fitted.score(empty)


@pytest.mark.parametrize("call, message", [
    (lambda v: v.nll(np.zeros((2, 24)), samples=0), "samples must be an integer >= 1"),
    (lambda v: v.loss(np.zeros((2, 24)), seed=-1), "seed must be an integer >= 0"),
    (lambda v: v.encode(np.zeros((2, 24)), sample=True, seed=2 ** 64), r"seed must be an integer in \[0, 2\*\*63\)"),
    (lambda v: v.encode(np.zeros((2, 24), complex)), "Complex data not supported"),
    (lambda v: v.encode(np.zeros((2, 3, 4, 2))), r"x must have shape \(n, 24\)"),
    (lambda v: v.encode(np.zeros(24)), r"x must have shape \(n, 24\)"),
    (lambda v: v.encode(np.zeros((2, 23))), r"x must have shape \(n, 24\)"),
    (lambda v: v.loss(np.full((2, 24), np.nan)), "non-finite"),
    (lambda v: v.loss(np.full((2, 24), np.inf)), "non-finite"),
    (lambda v: v.encode(np.full((2, 24), 1.5)), r"\[0, 1\]"),
    (lambda v: v.encode(np.full((2, 24), -0.5)), "Negative values"),
    (lambda v: v.decode(np.array([[0, 4]])), "codes must lie"),
    (lambda v: v.decode(np.array([[0.0, 1.0]])), "codes must be integers"),
    (lambda v: v.sample(-1), "n must be an integer >= 0"),
    (lambda v: v.set_params(n_latnet=3), "unknown parameter 'n_latnet'"),
])
def test_bad_input_is_a_value_error_naming_the_argument(fitted, call, message):
    with pytest.raises(ValueError, match=message):
        call(fitted)


def test_bad_training_input(tmp_path):
    with pytest.raises(ValueError, match="Complex data not supported"):
        DiscreteVAE(**SMALL).fit(np.zeros((300, 4), complex))
    with pytest.raises(ValueError, match="Negative values"):
        DiscreteVAE(**SMALL).fit(np.full((300, 4), -1.0))
    with pytest.raises(ValueError, match="binarization must be one of"):
        DiscreteVAE(binarization="sometimes", **SMALL).fit(binary_images(300, (4,)))
    with pytest.raises(TypeError, match="sparse input is not supported"):
        from scipy import sparse
        DiscreteVAE(**SMALL).fit(sparse.csr_matrix(np.eye(300, 4)))
    with pytest.raises(NotFittedError, match="not fitted yet"):
        DiscreteVAE().encode(np.zeros((1, 4)))


def test_load_refuses_parameters_that_disagree_with_the_config(fitted, tmp_path):
    from dvae_cupy.checkpoint import load_checkpoint, save_checkpoint

    fitted.save(tmp_path / "m.h5")
    saved = load_checkpoint(tmp_path / "m.h5")
    save_checkpoint(tmp_path / "m.h5", params=saved.params, optimizer=saved.optimizer, step=0,
                    epoch=0, eps=0.0, rng_state={}, config={**saved.config, "pixels": 784})
    with h5py.File(tmp_path / "m.h5", "r") as f:  # a sound file whose config disagrees
        assert json.loads(f.attrs["config"])["pixels"] == 784
    with pytest.raises(ValueError, match="for 24 pixels but the checkpoint's config says 784"):
        DiscreteVAE.load(tmp_path / "m.h5", backend="cpu")
