"""Where one training step's time goes inside the real loop (Trainer.run_epoch), per call.

    python benchmarks/profile_step.py [--configs 1x10 20x10] [--steps 300] [--repeats 3]

Runs Trainer.run_epoch on the embedded Fashion-MNIST (batch 100, no run folder) with its backend's
`xp.matmul`/`xp.sum` and every `ops.*` call wrapped by a timer, keyed by the calling function and
the argument shapes (so each GEMM has its own row: "(100,784)@(784,300)", a transposed operand
marked ^T). Each row is ms per step, median over `--repeats` epochs of `--steps` steps; "Python and
the rest" is the epoch's time per step minus every timed call (the loop, the step's Python, the
timers' own cost). The epoch is also timed with no timers, beside it. Ops' rows include their
Python fronts (argument checks); `--split-checks` times the @njit part of each op alone as well.

The matrix-product floor: the step's GEMM flops (counted from the shapes actually called) over
this machine's float32 sgemm rate, measured here at each of the step's own shapes (gemm_rates):
the floor is the sum over the step's products of flops / the rate at that shape, and the "large
GEMM" floor divides the total flops by the rate of one 4096x300x784 product.
Not a test; prints Markdown tables naming the machine.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _pin_threads(argv):
    threads = argv[argv.index("--threads") + 1] if "--threads" in argv else "2"
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[name] = threads
    return int(threads)


THREADS = _pin_threads(sys.argv)

import numpy as np  # noqa: E402

from bench_step import machine_name  # noqa: E402


def _shape(a):
    s = "(" + ",".join(str(d) for d in a.shape) + ")"
    if a.ndim == 2 and not a.flags["C_CONTIGUOUS"] and a.flags["F_CONTIGUOUS"]:
        s += "^T"
    return s


class Timed:
    """A namespace whose callables in `names` (all when None) add their wall time to
    `totals[key]`, key = (calling function, name, argument shapes)."""

    def __init__(self, namespace, totals, flops, names=None):
        self._namespace, self._totals, self._flops, self._names = namespace, totals, flops, names

    def __getattr__(self, name):
        target = getattr(self._namespace, name)
        if not callable(target) or (self._names is not None and name not in self._names):
            return target
        totals, flops = self._totals, self._flops

        def call(*args, **kwargs):
            caller = sys._getframe(1).f_code.co_name
            arrays = [a for a in args if hasattr(a, "shape") and getattr(a, "ndim", 0) >= 1][:2]
            if name == "matmul":
                key = (caller, "matmul", "@".join(_shape(a) for a in arrays))
            else:
                key = (caller, name, _shape(arrays[0]) if arrays else "")
            started = time.perf_counter()
            result = target(*args, **kwargs)
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - started
            if name == "matmul":
                a, b = arrays
                n = b.shape[1] if b.ndim == 2 else 1
                flops[key] = (2 * a.shape[0] * a.shape[1] * n, a.shape, b.shape)
            return result
        return call


def make_trainer(n, k, steps, seed=0):
    from dvae_cupy.config import TrainConfig
    from dvae_cupy.train import Trainer

    config = TrainConfig(n_latent=n, n_categories=k, train_subset=steps * 100, eval_subset=100,
                         out=None, progress=False, backend="cpu", seed=seed)
    trainer = Trainer(config, log=lambda *a: None)
    trainer.finish_epoch = lambda loss, seconds: None  # the loop only: no evaluation, no files
    return trainer


def instrument(trainer, totals, flops):
    from dvae_cupy.backend import Backend

    backend = trainer.backend
    timed = Backend(backend.name, Timed(backend.xp, totals, flops, {"matmul", "sum", "repeat"}),
                    Timed(backend.ops, totals, flops))
    trainer.backend = trainer.model.backend = timed
    trainer.model.xp, trainer.model.ops = timed.xp, timed.ops


def epoch_seconds(trainer):
    started = time.perf_counter()
    trainer.run_epoch()
    trainer.epoch_loss_sum = 0.0
    trainer.step_in_epoch = 0  # what finish_epoch would have done
    return time.perf_counter() - started


def gemm_rates(shapes, repeats=30):
    """{(a shape, b shape): float32 flops/s of np.matmul at that shape, C-contiguous operands}."""
    rates = {}
    rng = np.random.default_rng(0)
    for a_shape, b_shape in shapes:
        a = rng.random(a_shape, dtype=np.float32)
        b = rng.random(b_shape, dtype=np.float32)
        out = a @ b
        for _ in range(5):
            np.matmul(a, b, out=out)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            np.matmul(a, b, out=out)
            times.append(time.perf_counter() - started)
        n = b_shape[1] if len(b_shape) == 2 else 1
        rates[(a_shape, b_shape)] = 2 * a_shape[0] * a_shape[1] * n / float(np.median(times))
    return rates


def profile(n, k, steps, repeats):
    """(rows [(label, ms/step)], loop ms/step timed, loop ms/step untimed, flops {key: ...})."""
    plain = make_trainer(n, k, steps)
    epoch_seconds(plain)  # warm-up: compilation, BLAS threads, caches
    plain_times = []
    trainer = make_trainer(n, k, steps)
    totals, flops = {}, {}
    instrument(trainer, totals, flops)
    epoch_seconds(trainer)
    timed_times, runs = [], []
    for _ in range(repeats):  # alternate: timed epoch, untimed epoch
        totals.clear()
        timed_times.append(epoch_seconds(trainer) / steps)
        runs.append(dict(totals))
        plain_times.append(epoch_seconds(plain) / steps)
    keys = sorted(runs[0], key=lambda key: -runs[0][key])
    rows = [(key, float(np.median([r[key] for r in runs])) / steps) for key in keys]
    return rows, float(np.median(timed_times)), float(np.median(plain_times)), flops


def label(key):
    caller, name, shapes = key
    return f"{name} {shapes} ({caller})" if name == "matmul" else f"{name} {shapes}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=["1x10", "20x10"])
    parser.add_argument("--steps", type=int, default=200, help="steps per epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"## Profile of a training step in Trainer.run_epoch ({machine_name()}, {os.cpu_count()} "
          f"cores, {THREADS} threads; batch 100; median of {args.repeats} epochs of {args.steps} "
          f"steps)\n")
    for pair in args.configs:
        n, k = map(int, pair.split("x"))
        rows, timed_ms, plain_ms, flops = profile(n, k, args.steps, args.repeats)
        shapes = {(f[1], f[2]) for f in flops.values()}
        rates = gemm_rates(shapes)
        large = gemm_rates([((4096, 300), (300, 784))])[((4096, 300), (300, 784))]
        total_flops = sum(f[0] for f in flops.values())
        floor_ms = 1e3 * sum(f[0] / rates[(f[1], f[2])] for f in flops.values())
        print(f"### N={n}, K={k}: {plain_ms * 1e3:.2f} ms per step in the loop with no timers "
              f"({timed_ms * 1e3:.2f} ms timed)\n")
        print("| call | ms/step | share | GFLOP/s achieved | sgemm GFLOP/s alone at this shape |")
        print("|---|---|---|---|---|")
        accounted = 0.0
        for key, seconds in rows:
            accounted += seconds
            extra = " | |"
            if key in flops:
                f, a, b = flops[key]
                extra = f" | {f / seconds / 1e9:.0f} | {rates[(a, b)] / 1e9:.0f} |"
            print(f"| {label(key)} | {seconds * 1e3:.3f} | {seconds / timed_ms:.0%}{extra}")
        rest = timed_ms - accounted
        print(f"| Python and the rest | {rest * 1e3:.3f} | {rest / timed_ms:.0%} | | |\n")
        print(f"GEMM flops per step {total_flops / 1e6:.1f} M; floor at each shape's own sgemm "
              f"rate {floor_ms:.2f} ms = {floor_ms / (plain_ms * 1e3):.0%} of the loop's step; at "
              f"the large-GEMM rate ({large / 1e9:.0f} GFLOP/s, 4096x300 @ 300x784) "
              f"{1e3 * total_flops / large:.2f} ms = {total_flops / large / plain_ms:.0%}\n",
              flush=True)


if __name__ == "__main__":
    main()
