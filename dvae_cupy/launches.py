"""Counting a step's launches without a GPU: a backend whose ops and launching array functions
log their calls. On a GPU each op is one kernel launch and each of the array functions below
one CuPy kernel or cuBLAS call, so the log of one eager step is its launch sequence (tests
check it; benchmarks/bench_step.py prints its length). Array operators (a + b) are not seen:
the direct estimator's hot path uses none."""
from .backend import Backend

# Array functions that are one launch each on a GPU.
LAUNCHING_XP = frozenset({"matmul", "sum", "add", "subtract", "multiply", "maximum", "repeat", "exp"})


class Intercepting:
    """A namespace (xp or ops) whose callables named in `names` (all when None) run through
    `around(name, target, args, kwargs)`, which calls target and returns its result; everything
    else passes through. Counting here, and the benchmarks' timers, are made of it."""

    def __init__(self, namespace, around, names=None):
        self._namespace, self._around, self._names = namespace, around, names

    def __getattr__(self, name):
        target = getattr(self._namespace, name)
        if not callable(target) or (self._names is not None and name not in self._names):
            return target
        around = self._around

        def call(*args, **kwargs):
            return around(name, target, args, kwargs)
        return call


class Counting(Intercepting):
    """Calls of `names` (all callables when None) append their name to `log`."""

    def __init__(self, namespace, log, names=None):
        def count(name, target, args, kwargs):
            log.append(name)
            return target(*args, **kwargs)
        super().__init__(namespace, count, names)


def counting_backend(backend, log):
    """`backend` with its ops and launching array functions logged into the list `log`."""
    return Backend(backend.name, Counting(backend.xp, log, LAUNCHING_XP), Counting(backend.ops, log))


def launches_of_one_step(shape, estimator_config, batch_size=100, chunk=None):
    """The launch sequence (op and array-function names) of one eager training step on the CPU
    kernels, batch gather included, for a model of `shape`; `chunk` candidate rows at once
    (N > 1; default the CPU's). Without the CPU's pruning of neighbours and its gather of the
    encoder backward's active rows, as a GPU runs it."""
    import numpy as np

    from .backend import cpu_backend
    from .model import Model
    from .step import TrainStep

    log = []
    backend = counting_backend(cpu_backend(), log)
    step = TrainStep(Model(shape, backend, seed=0), estimator_config, 0, batch_size, 1e-3, chunk,
                     prune=False, active_rows=False)
    step.set_state(0, 0, 1.0)
    images = (np.random.default_rng(0).uniform(size=(batch_size, shape.pixels)) > 0.5).astype(np.uint8)
    order = np.arange(batch_size, dtype=np.int64)
    for _ in range(2):  # the second step is the one counted
        log.clear()
        backend.ops.gather_targets(images, order, 0, 0, 0, step.counter, step.batch)
        step()
    return log
