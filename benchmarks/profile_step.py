"""Where one training step's time goes inside the real loop (Trainer.run_epoch), per call.

    python benchmarks/profile_step.py [--configs 1x10 20x10] [--steps 300] [--repeats 3]

Runs Trainer.run_epoch on the embedded Fashion-MNIST (batch 100, no run folder) with its backend's
`xp.matmul`/`xp.sum` and every `ops.*` call wrapped by a timer, keyed by the calling function and
the argument shapes (so each GEMM has its own row: "(100,784)@(784,300)", a transposed operand
marked ^T). Each row is ms per step, median over `--repeats` epochs of `--steps` steps; "Python and
the rest" is the epoch's time per step minus every timed call (the loop, the step's Python, the
timers' own cost). The epoch is also timed with no timers, beside it. Ops' rows include their
Python fronts (argument checks).

The matrix-product floor is benchmarks/floor.py's: the method's products at this machine's
float32 sgemm rate at each product's shape. The GEMM rows also show the rate each product got in
the loop beside np.matmul's alone at that shape (chunked products, rows C, at 4096 rows).
Not a test; prints Markdown tables naming the machine.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


from threads import pin_threads  # noqa: E402

THREADS = pin_threads(sys.argv, default="2")

import numpy as np  # noqa: E402

from bench_step import machine_name  # noqa: E402


CHUNK_LOOPS = {"_neighbour_losses", "_pruned_neighbour_losses"}  # rows vary: shown as C


def _shape(a, chunk=False, active=False):
    """The key's text for array `a`: C marks a chunk's varying rows, A the encoder backward's
    active rows (their row axis is the last one of a transposed view)."""
    dims = [str(d) for d in a.shape]
    if chunk and dims:
        dims[0] = "C"
    if active and dims:
        dims[0 if a.flags["C_CONTIGUOUS"] else -1] = "A"
    s = "(" + ",".join(dims) + ")"
    if a.ndim == 2 and not a.flags["C_CONTIGUOUS"] and a.flags["F_CONTIGUOUS"]:
        s += "^T"
    return s


def timed(totals, flops, active_buffers=()):
    """An Intercepting `around` (dvae_cupy/launches.py) that adds each call's wall time to
    `totals[key]`, key = (calling function, name, argument shapes), and a matrix product's flops
    to `flops[key]`. Views of `active_buffers` (the workspace's ActiveRowArrays) have rows A."""
    active_ids = {id(a) for a in active_buffers}

    def is_active(a):
        return id(a) in active_ids or id(getattr(a, "base", None)) in active_ids

    def around(name, target, args, kwargs):
        caller = sys._getframe(2).f_code.co_name  # 0: here, 1: Intercepting's call, 2: its caller
        chunk = caller in CHUNK_LOOPS
        arrays = [a for a in args if hasattr(a, "shape") and getattr(a, "ndim", 0) >= 1][:2]
        if name == "matmul":
            key = (caller, "matmul", "@".join(_shape(a, chunk and i == 0, is_active(a))
                                              for i, a in enumerate(arrays)))
        else:
            key = (caller, name, _shape(arrays[0], chunk, is_active(arrays[0])) if arrays else "")
        started = time.perf_counter()
        result = target(*args, **kwargs)
        totals[key] = totals.get(key, 0.0) + time.perf_counter() - started
        if name == "matmul":
            a, b = arrays
            n = b.shape[1] if b.ndim == 2 else 1
            shape = ((4096,) + a.shape[1:] if chunk else a.shape, b.shape)  # a rate to use
            done, _ = flops.get(key, (0, shape))
            flops[key] = (done + 2 * a.shape[0] * a.shape[1] * n, shape)
        return result
    return around


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
    from dvae_cupy.launches import Intercepting

    active = trainer.train_step.workspace.active
    buffers = [] if active is None else [active.rows, active.dout, active.hidden, active.dhidden,
                                         active.inputs]
    backend, around = trainer.backend, timed(totals, flops, buffers)
    timing = Backend(backend.name, Intercepting(backend.xp, around, {"matmul", "sum", "repeat"}),
                     Intercepting(backend.ops, around))
    trainer.backend = trainer.model.backend = timing
    trainer.model.xp, trainer.model.ops = timing.xp, timing.ops


def epoch_seconds(trainer):
    started = time.perf_counter()
    trainer.run_epoch()
    trainer.epoch_loss_sum = 0.0
    trainer.step_in_epoch = 0  # what finish_epoch would have done
    return time.perf_counter() - started


def profile(n, k, steps, repeats):
    """(rows [(key, s/step)], loop s/step timed, loop s/steps untimed (each a list over the
    repeats), GEMM flops per step {key: (flops, shape for its rate)}, the timed trainer's
    ActiveRowArrays or None)."""
    plain = make_trainer(n, k, steps)
    epoch_seconds(plain)  # warm-up: compilation, BLAS threads, caches
    trainer = make_trainer(n, k, steps)
    totals, flops = {}, {}
    instrument(trainer, totals, flops)
    epoch_seconds(trainer)
    timed_times, plain_times, runs = [], [], []
    for _ in range(repeats):  # alternate: timed epoch, untimed epoch
        totals.clear()
        flops.clear()
        timed_times.append(epoch_seconds(trainer) / steps)
        runs.append(dict(totals))
        plain_times.append(epoch_seconds(plain) / steps)
    keys = sorted(runs[0], key=lambda key: -runs[0][key])
    rows = [(key, float(np.median([r.get(key, 0.0) for r in runs])) / steps) for key in keys]
    per_step = {key: (f / steps, shape) for key, (f, shape) in flops.items()}
    return rows, timed_times, plain_times, per_step, trainer.train_step.workspace.active


def label(key):
    caller, name, shapes = key
    return f"{name} {shapes} ({caller})" if name == "matmul" else f"{name} {shapes}"


def main():
    from floor import sgemm_rate, step_floor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=["1x10", "20x10"])
    parser.add_argument("--steps", type=int, default=200, help="steps per epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"## Profile of a training step in Trainer.run_epoch ({machine_name()}, {os.cpu_count()} "
          f"cores, {THREADS} threads; batch 100; median of {args.repeats} epochs of {args.steps} "
          f"steps; load average {os.getloadavg()[0]:.1f} at the start)\n")
    rates = {}
    for pair in args.configs:
        n, k = map(int, pair.split("x"))
        rows, timed, plain, flops, active = profile(n, k, args.steps, args.repeats)
        timed_s, plain_s = float(np.median(timed)), float(np.median(plain))
        print(f"### N={n}, K={k}: {plain_s * 1e3:.2f} ms per step in the loop with no timers "
              f"(epochs {', '.join(f'{t * 1e3:.2f}' for t in plain)}); {timed_s * 1e3:.2f} ms "
              f"timed\n")
        print("| call | ms/step | share | GFLOP/s here | sgemm GFLOP/s alone at its shape |")
        print("|---|---|---|---|---|")
        accounted = 0.0
        for key, seconds in rows:
            accounted += seconds
            extra = " | |"
            if key in flops:
                f, (a, b) = flops[key]
                shape = (a[0], a[1], b[1] if len(b) == 2 else 1)
                rates.setdefault(shape, sgemm_rate(*shape))
                extra = f" | {f / seconds / 1e9:.0f} | {rates[shape] / 1e9:.0f} |"
            print(f"| {label(key)} | {seconds * 1e3:.3f} | {seconds / timed_s:.0%}{extra}")
        rest = timed_s - accounted
        print(f"| Python and the rest (loop, step, timers) | {rest * 1e3:.3f} | "
              f"{rest / timed_s:.0%} | | |\n")
        floor_s, floor_flops = step_floor(100, n, k, rates=rates)
        done = sum(f for f, _ in flops.values())
        print(f"Matrix-product floor (benchmarks/floor.py: the method's products, {floor_flops / 1e6:.0f} "
              f"MFLOP, at this machine's sgemm rate at each shape): {floor_s * 1e3:.2f} ms = "
              f"{floor_s / plain_s:.0%} of the loop's step. GEMM flops our step ran: "
              f"{done / 1e6:.0f} MFLOP.\n", flush=True)
        if active is not None and active.seen:
            print(f"The encoder's sums over the batch ran on {active.gathered / active.seen:.1%} "
                  f"of its {active.seen} rows over the timed trainer's epochs, A rows a step "
                  f"(kernels/active_rows.py).\n", flush=True)


if __name__ == "__main__":
    main()
