"""Steps with and without pruning from the same state, for the pruning tests (both models)."""
import numpy as np

from dvae_cupy.backend import cpu_backend
from dvae_cupy.estimators import EstimatorConfig
from dvae_cupy.model import Model
from dvae_cupy.step import TrainStep
from dvae_cupy.workspace import TrainWorkspace


def step_pair(gradients, shape, batch, samples, chunk, seed, decoder_scale, encoder_scale, eps,
              x_density=0.4):
    """Two direct steps, pruned then unpruned, of `gradients` (estimators.direct_gradients or
    structured_direct_gradients) from the same parameters and batch. The decoder's and the
    encoder's output weights are scaled up: louder losses and stronger potentials move the arg
    max. Returns ([(workspace, model) pruned, (workspace, model) unpruned], x, eps array)."""
    rng = np.random.default_rng(seed)
    params = Model(shape, cpu_backend(), seed=seed).host_params()
    params["dec_w2"] *= decoder_scale
    params["enc_w2"] *= encoder_scale
    x = (rng.random((batch, shape.pixels)) < x_density).astype(np.float32)
    counter, eps_array = np.array([seed], np.uint64), np.array([eps], np.float32)
    runs = []
    for prune in (True, False):
        model = Model(shape, cpu_backend(), seed=0)
        model.load_params(params)
        ws = TrainWorkspace(np, shape, "direct", batch, samples, candidate_chunk=chunk, prune=prune)
        gradients(model, ws, x, 5, counter, eps_array, samples, prune=prune)
        runs.append((ws, model))
    return runs, x, eps_array


def real_steps_both_ways(shape, steps=4, seed=1):
    """`steps` TrainSteps of batch 100 on Fashion-MNIST from one initial model, pruned and
    unpruned: ((model, step) pruned, (model, step) unpruned)."""
    from dvae_cupy.data import load_dataset

    images = load_dataset("fashion-mnist").train[:steps * 100].astype(np.float32)
    runs = []
    for prune in (True, False):
        model = Model(shape, cpu_backend(), seed=seed)
        step = TrainStep(model, EstimatorConfig(), seed, 100, 1e-3, prune=prune)
        step.set_state(0, 0, 1.0)
        for i in range(steps):
            step.batch[...] = images[i * 100:(i + 1) * 100]
            step()
        runs.append((model, step))
    return runs


def assert_real_steps_bit_identical(shape):
    """real_steps_both_ways(shape): the pruned steps end with the unpruned steps' parameters bit
    for bit, and skipped more neighbours than they decoded."""
    (pruned, pruned_step), (unpruned, _) = real_steps_both_ways(shape)
    np.testing.assert_array_equal(pruned.flat_params.view(np.uint32),
                                  unpruned.flat_params.view(np.uint32))
    nb = pruned_step.workspace.candidates
    assert nb.skipped > nb.decoded
