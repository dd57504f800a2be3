"""A few real training steps with and without pruning, for the pruning tests (both models)."""
import numpy as np

from dvae_cupy.backend import cpu_backend
from dvae_cupy.estimators import EstimatorConfig
from dvae_cupy.model import Model
from dvae_cupy.step import TrainStep


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
