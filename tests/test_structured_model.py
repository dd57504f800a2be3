"""The pairwise binary model wired into the product: it learns, it replays as a graph, its
options are checked, and dvae-train / the library take it like the categorical model."""
import numpy as np
import pytest

from dvae_cupy import DiscreteVAE
from dvae_cupy.backend import cpu_backend
from dvae_cupy.cli import train_main
from dvae_cupy.config import TrainConfig
from dvae_cupy.estimators import EstimatorConfig
from dvae_cupy.graph import CallingCapture, GraphedStep
from dvae_cupy.model import Model, ModelShape
from dvae_cupy.step import TrainStep
from dvae_cupy.train import Trainer


@pytest.mark.parametrize("mode", ["attractive", "signed"])
def test_the_pairwise_model_learns(tmp_path, mode):
    config = TrainConfig(latent_structure="pairwise", pairwise=mode, n_latent=8, train_subset=4000,
                         eval_subset=500, epochs=3, backend="cpu", out=str(tmp_path), progress=False)
    trainer = Trainer(config, log=lambda *a: None)
    before = trainer.evaluate()["test_loss"]
    metrics = trainer.run()
    assert metrics[-1]["test_loss"] < 0.75 * before
    assert (tmp_path / "pairwise.png").stat().st_size > 0


def test_structured_replays_equal_eager_steps():
    shape = ModelShape(4, 2, hidden=16, pixels=30, structure="pairwise", pairwise="signed")
    rng = np.random.default_rng(0)
    xs = [(rng.uniform(size=(8, 30)) > 0.5).astype(np.float32) for _ in range(5)]
    steps = []
    for graphed in (False, True):
        step = TrainStep(Model(shape, cpu_backend(), seed=1), EstimatorConfig(two_sided=True), 5, 8, 1e-2)
        runner = GraphedStep(step, capture=CallingCapture(), warmup=1) if graphed else step
        step.set_state(0, 0, 0.5)
        for x in xs:
            step.batch[...] = x
            runner()
        steps.append(step)
    for name, value in steps[0].model.host_params().items():
        np.testing.assert_array_equal(steps[1].model.host_params()[name], value, err_msg=name)


@pytest.mark.parametrize("args, message", [
    (["--latent-structure", "pairwise", "-N", "1"], "--latent-vars must be an integer >= 2"),
    (["--latent-structure", "pairwise", "-N", "21", "--pairwise", "signed"], "<= 20 with signed"),
    (["--latent-structure", "pairwise", "-N", "5", "-K", "3"], "binary: --categories is 2"),
    (["--latent-structure", "pairwise", "-N", "5", "--estimator", "exact"], "direct estimator"),
])
def test_bad_pairwise_options_name_the_option(tmp_path, capsys, args, message):
    import re

    assert train_main([*args, "--out", str(tmp_path), "--backend", "cpu", "--no-progress"]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_non_finite_potentials_are_refused():
    model = Model(ModelShape(3, 2, structure="pairwise"), cpu_backend())
    unary, pairwise = np.zeros((2, 6), np.float32), np.full((2, 3), np.nan, np.float32)
    with pytest.raises(ValueError, match="pairwise"):
        model.structured_argmax(unary, pairwise, 1, np.zeros((2, 3), np.int32))


def test_the_library_takes_the_pairwise_model(tmp_path):
    x = (np.random.default_rng(0).uniform(size=(300, 20)) > 0.5).astype(np.float32)
    vae = DiscreteVAE(n_latent=4, latent_structure="pairwise", hidden=16, epochs=1, batch_size=50,
                      backend="cpu", progress=False).fit(x)
    assert vae.n_categories is None and vae.shape.n_categories == 2
    unary, pairwise = vae.potentials(x[:7])
    assert unary.shape == (7, 4, 2) and pairwise.shape == (7, 6) and np.all(pairwise >= 0)
    codes = vae.encode(x[:7])
    from dvae_cupy import reference as ref
    np.testing.assert_array_equal(codes, ref.structured_argmax_enumerate(unary, pairwise))
    vae.save(tmp_path / "m.h5")
    assert DiscreteVAE.load(tmp_path / "m.h5", backend="cpu").latent_structure == "pairwise"
    with pytest.raises(ValueError, match="no tractable marginal"):
        vae.nll(x[:2])


def test_an_unknown_pairwise_mode_names_the_option():
    with pytest.raises(ValueError, match=r"^pairwise \(--pairwise\) must be one of \('attractive', "
                                         r"'signed'\), got 'bogus'$"):
        DiscreteVAE(latent_structure="pairwise", n_latent=5, pairwise="bogus").fit(
            np.zeros((200, 784), np.float32))
