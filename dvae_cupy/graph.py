"""A TrainStep captured in a CUDA graph and replayed (`dvae-train --cuda-graph`, GPU only).

At batch 100 a step is a few dozen small launches and the GPU waits on the launch overhead; a
graph replays them all with one launch. A graph bakes in every kernel argument, which is why
the TrainStep keeps everything that changes from step to step in device memory: the batch in its
workspace (filled in place before each replay), the Gumbel counter and Adam's step (advanced
inside the step), eps (rewritten by the caller when the schedule moves it). The graph is a
capture of the very `TrainStep.run` that eager steps call; there is no second copy of the step.

The step's own temporaries (the exact estimator's) come from a private CuPy memory pool that
nothing else uses, so the addresses the graph recorded stay reserved for it between replays.
The first `warmup` steps run eagerly (they compile the kernels and fill the pool), then one step
is captured; every step after that is a replay. Capture can fail (an op that cannot be captured,
an old driver); the step then says why and stays eager, so training never depends on it.

The capture mechanism is a small strategy object, so the orchestration (counters, eps, warm-up,
replay) is tested on the CPU with a stand-in that records the step and replays it by calling it.
"""
import contextlib

GRAPH_ESTIMATORS = ("direct", "exact")  # Gumbel-softmax's tau is a host number in array ops


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

    def allocator(self):
        return contextlib.nullcontext()

    def current(self):
        return contextlib.nullcontext()

    def capture(self, body):
        return body

    def launch(self, graph):
        graph()


class GraphedStep:
    """Runs a TrainStep as replays of one captured graph; call it as the step is called."""

    def __init__(self, step, capture=None, warmup=2, log=print):
        if step.config.name not in GRAPH_ESTIMATORS:
            raise ValueError(f"CUDA graphs support the estimators {GRAPH_ESTIMATORS}, "
                             f"not {step.config.name!r}")
        self.step = step
        self.capture_strategy = capture or CupyStreamCapture()
        self.warmup, self.log = warmup, log
        self.eager_steps = 0
        self.graph = None
        self.failed = None  # why capture failed, if it did

    def stream(self):
        """Run the training loop inside this context, so batches are made in order with the
        replays (and set_state's copies land on the stream the replays read them on)."""
        return self.capture_strategy.current()

    def __call__(self):
        """One training step on step.batch; its loss is added to step.loss_sum."""
        strategy = self.capture_strategy
        with strategy.allocator():
            if self.graph is None and self.failed is None and self.eager_steps >= self.warmup:
                self._capture()
            if self.graph is not None:
                strategy.launch(self.graph)
            else:
                self.step.run()
                self.eager_steps += 1
        self.step.count()

    def _capture(self):
        try:
            self.graph = self.capture_strategy.capture(self.step.run)
        except Exception as error:  # stay eager, say why
            self.failed = f"{type(error).__name__}: {error}"
            self.log(f"CUDA graph capture failed, training continues without it: {self.failed}")
