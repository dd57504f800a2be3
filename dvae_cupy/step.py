"""One training step that owns its memory: the estimator's gradients, the loss bookkeeping and
Adam, on the batch gathered into its workspace.

    step = TrainStep(model, EstimatorConfig("direct"), seed=0, batch_size=100, lr=1e-3)
    step.set_state(step=0, adam_steps=0, eps=1.0)
    ops.gather_targets(..., step.batch)     # the caller fills the batch buffer in place
    step()                                  # one step, eagerly; loss added to step.loss_sum

Everything the step reads or writes is allocated here, once: the workspace (workspace.py) and
the per-step scalars, which are 1-element arrays on the backend on every target (the CPU
included), so that a CUDA graph can capture `step.run` as it is and replay it (graph.py):
    counter    uint64[1]   the Gumbel-noise counter = training steps done (advanced by the step)
    adam_step  int64[1]    Adam updates done (advanced by the step just before its update)
    eps        float32[1]  the direct estimator's eps (the caller moves it with set_eps)
    loss_sum   float64[1]  the sum of the batch losses since the caller last zeroed it
The host keeps mirrors of the two counters (`step`, `adam_steps`), so reading them never syncs.
"""
import contextlib

import numpy as np

from .estimators import can_gather_active_rows, can_prune, estimator_gradients
from .workspace import TrainWorkspace, workspace_arrays

CPU_CANDIDATE_CHUNK = 4096        # rows: the (chunk x D) float32 block stays ~12 MB, cache-sized
GPU_CANDIDATE_BYTES = 1 << 30     # at most 1 GiB of candidate rows at once on a GPU ...
GPU_FREE_MEMORY_SHARE = 16        # ... and at most 1/16 of the free memory


def candidate_chunk(backend, shape, rows):
    """Candidate rows decoded at once (N > 1). On the CPU a cache-sized block; on a GPU as many
    as the memory allows, so a step is one chunk (one launch each) wherever it fits."""
    free = backend.free_memory_bytes()
    if free is None:
        return CPU_CANDIDATE_CHUNK
    row_bytes = 4 * (shape.hidden + shape.pixels + 1)
    total = max(1, rows * shape.n_latent * (shape.n_categories - 1))
    return int(max(CPU_CANDIDATE_CHUNK, min(total, min(GPU_CANDIDATE_BYTES, free // GPU_FREE_MEMORY_SHARE) // row_bytes)))


def _where_possible(requested, possible, refusal):
    """An on-where-it-can option: None -> `possible`; True where not possible -> ValueError
    (`refusal`); otherwise the bool asked for."""
    if requested and not possible:
        raise ValueError(refusal)
    return possible if requested is None else bool(requested)


class TrainStep:
    """A training step of `model` with `estimator_config`, on batches of `batch_size` images."""

    def __init__(self, model, estimator_config, seed, batch_size, lr, chunk=None, prune=None,
                 active_rows=None):
        """prune: skip the direct estimator's N > 1 neighbours that cannot be z_dir(+eps)
        (kernels/neighbour_pruning.py, for the pairwise model kernels/structured_pruning.py;
        z_dir is unchanged). None: wherever it can (the CPU,
        one-sided, N > 1: estimators.can_prune); True where it cannot is an error.
        active_rows: run the encoder's backward on the rows of dlogits that are not all zero
        (kernels/active_rows.py; the same gradients bit for bit). None: wherever it can (the
        CPU, the direct estimator: estimators.can_gather_active_rows); True where it cannot is
        an error."""
        xp = model.xp
        self.model, self.config, self.seed, self.lr = model, estimator_config, int(seed), lr
        samples = estimator_config.samples
        self.prune = _where_possible(
            prune, can_prune(model.backend, model.shape, estimator_config),
            "prune needs the cpu backend and the one-sided direct estimator with N > 1 "
            "(independent categoricals or the pairwise model)")
        self.active_rows = _where_possible(
            active_rows, can_gather_active_rows(model.backend, estimator_config),
            "active_rows needs the cpu backend and the direct estimator")
        if chunk is None:
            chunk = candidate_chunk(model.backend, model.shape, batch_size * samples)
        self.workspace = TrainWorkspace(xp, model.shape, estimator_config.name, batch_size,
                                        samples, chunk, self.prune, self.active_rows)
        self.counter = xp.zeros(1, dtype=np.uint64)
        self.adam_step = xp.zeros(1, dtype=np.int64)
        self.eps = xp.ones(1, dtype=np.float32)
        self.loss_sum = xp.zeros(1, dtype=np.float64)
        self.tau = 1.0    # Gumbel-softmax's temperature: a host number (that estimator is not graphed)
        self.step = 0
        self.adam_steps = 0

    @property
    def batch(self):
        """The (B, D) float32 buffer the next step trains on: fill it in place."""
        return self.workspace.x

    def set_state(self, step, adam_steps, eps):
        """Host -> device copies of the counters and eps (on the current stream)."""
        self.step, self.adam_steps = int(step), int(adam_steps)
        self.counter[...] = self.step
        self.adam_step[...] = self.adam_steps
        self.set_eps(eps)

    def set_eps(self, eps):
        self.eps[...] = eps

    def run(self):
        """The step's work on the device, and nothing on the host: what a CUDA graph captures."""
        model, ws = self.model, self.workspace
        recon, kl = estimator_gradients(model, self.config, ws, ws.x, self.seed, self.counter,
                                        self.eps, self.tau, self.prune)
        model.ops.finish_step(recon, kl, self.loss_sum, self.counter, self.adam_step)
        model.adam_update(self.lr, self.adam_step)

    def count(self):
        """Advance the host's mirrors of the counters, as run() advanced the device's."""
        self.step += 1
        self.adam_steps += 1

    def __call__(self):
        """One step, eagerly."""
        self.run()
        self.count()

    def stream(self):
        """The stream context batches must be made in: the current one, for eager steps."""
        return contextlib.nullcontext()

    def workspace_arrays(self):
        """Every array the step owns: its workspace and its per-step scalars."""
        return workspace_arrays(self.workspace) + [self.counter, self.adam_step, self.eps, self.loss_sum]

    def nbytes(self):
        return sum(a.nbytes for a in self.workspace_arrays())

