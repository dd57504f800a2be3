"""One training step captured in a CUDA graph and replayed (`dvae-train --cuda-graph`, GPU only).

At batch 100 a step is a few dozen small launches and the GPU waits on the launch overhead; a
graph replays them all with one launch. A graph bakes in every kernel argument, so what changes
from step to step lives in device memory instead:
    x          the batch, copied into a fixed buffer before each replay
    counter    the Gumbel-noise counter (= the training step), advanced by a kernel in the graph
    adam_step  Adam's step count, advanced by a kernel in the graph before the update
    eps        the direct estimator's eps, rewritten from the host when the schedule moves it
The step allocates its temporaries from a private CuPy memory pool that nothing else uses, so
the addresses the graph recorded stay reserved for it between replays.

The first `warmup` steps run eagerly (they compile the kernels and fill the pool), then one step
is captured; every step after that is a replay. Capture can fail (an op that cannot be captured,
an old driver); the step then says why and stays eager, so training never depends on it.

The capture mechanism is a small strategy object, so the orchestration (counters, eps, warm-up,
replay) is tested on the CPU with a stand-in that records the step and replays it by calling it.
"""
import contextlib

import numpy as np

from .estimators import estimator_gradients

GRAPH_ESTIMATORS = ("direct", "exact")  # Gumbel-softmax's tau is a host scalar in array ops


class CupyStreamCapture:
    """Real CUDA graphs: capture on a private non-blocking stream, launch on it."""

    def __init__(self):
        import cupy

        self.cupy = cupy
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pool = cupy.cuda.MemoryPool()

    def allocator(self):
        return self.cupy.cuda.using_allocator(self.pool.malloc)

    def current(self):
        """The capture stream as CuPy's current stream: every launch of the step goes there."""
        return self.stream

    def capture(self, body):
        self.stream.begin_capture()
        try:
            body()
        finally:
            graph = self.stream.end_capture()
        return graph

    def launch(self, graph):
        graph.launch(stream=self.stream)


class CallingCapture:
    """A stand-in for tests on the CPU: 'capturing' keeps the body, 'launching' calls it."""

    stream = None

    def allocator(self):
        return contextlib.nullcontext()

    def current(self):
        return contextlib.nullcontext()

    def capture(self, body):
        return body

    def launch(self, graph):
        graph()


class GraphedStep:
    """Runs training steps of `model` (estimator gradients + Adam) as replays of one graph."""

    def __init__(self, model, estimator_config, seed, batch_size, lr, capture=None, warmup=2,
                 log=print):
        if estimator_config.name not in GRAPH_ESTIMATORS:
            raise ValueError(f"CUDA graphs support the estimators {GRAPH_ESTIMATORS}, "
                             f"not {estimator_config.name!r}")
        xp = model.xp
        self.model, self.config, self.seed, self.lr = model, estimator_config, seed, lr
        self.capture_strategy = capture or CupyStreamCapture()
        self.warmup, self.log = warmup, log
        self.x = xp.zeros((batch_size, model.shape.pixels), dtype=np.float32)
        self.counter = xp.zeros(1, dtype=np.uint64)
        self.adam_step = xp.zeros(1, dtype=np.int64)
        self.eps = xp.ones(1, dtype=np.float32)
        self.loss_sum = xp.zeros((), dtype=np.float64)
        self.eager_steps = 0
        self.graph = None
        self.failed = None  # why capture failed, if it did

    @property
    def stream(self):
        """Run the training loop with this stream current, so batches are made in order with it."""
        return self.capture_strategy.stream

    def set_state(self, step, adam_steps, eps):
        """Host -> device copies of the changing scalars (outside the graph)."""
        self.counter[...] = step
        self.adam_step[...] = adam_steps
        self.set_eps(eps)

    def set_eps(self, eps):
        self.eps[...] = eps

    def _body(self):
        loss = estimator_gradients(self.model, self.config, self.x, self.seed, self.counter,
                                   self.eps, None)
        self.model.ops.advance_counter(self.adam_step)
        self.model.adam_update(self.lr, step=self.adam_step)
        self.model.ops.advance_counter(self.counter)
        self.loss_sum += loss

    def __call__(self, x_batch):
        """One training step on x_batch (B, D) float32; its loss is added to `loss_sum`."""
        strategy = self.capture_strategy
        with strategy.current(), strategy.allocator():
            self.x[...] = x_batch
            if self.graph is None and self.failed is None and self.eager_steps >= self.warmup:
                self._capture()
            if self.graph is not None:
                self.capture_strategy.launch(self.graph)
            else:
                self._body()
                self.eager_steps += 1
        self.model.adam_steps += 1  # the host's mirror of adam_step

    def _capture(self):
        try:
            self.graph = self.capture_strategy.capture(self._body)
        except Exception as error:  # stay eager, say why
            self.failed = f"{type(error).__name__}: {error}"
            self.log(f"CUDA graph capture failed, training continues without it: {self.failed}")
