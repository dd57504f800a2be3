"""Where a structured (or any) TrainStep's time goes, op by op, on the CPU (not a test); the
unstructured step inside the real loop is benchmarks/profile_step.py's.

    python benchmarks/profile_structured.py [--threads 2] [-N 15] [-K 2] [--structure pairwise]
                                      [--pairwise attractive|signed] [--steps 100] [--warmup 10]
                                      [--checkpoint best.h5] [--eps 1.0] [--prune auto|on|off]

Runs TrainSteps on the embedded Fashion-MNIST (batch 100, direct estimator) on a backend whose
ops and matrix products time each call, the way dvae_cupy/launches.py counts them: every
`backend.ops.<name>` call and every `xp.matmul` (named by its operand shapes) is one row, with
its calls per step, median and minimum ms per call, and ms per step (the sum over the timed
steps / steps). What no row covers (Python between the calls, the array functions that are not
timed) is the "rest" row. The median is what a step pays on a machine that other work shares;
the minimum is what the op costs when it has the cores to itself.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_step import machine_name  # noqa: E402
from threads import set_thread_count  # noqa: E402


def timing(log):
    """An Intercepting `around` that logs (name, seconds, rows) of each call into `log`; matmul
    calls are named by their operand shapes."""
    def around(name, target, args, kwargs):
        started = time.perf_counter()
        result = target(*args, **kwargs)
        seconds = time.perf_counter() - started
        if name == "matmul":
            inner = ", ".join(str(n) for n in args[0].shape[1:])
            log.append((f"matmul {tuple(args[0].shape)} @ {tuple(args[1].shape)}", seconds,
                        args[0].shape[0], f"{inner}) @ {tuple(args[1].shape)}"))
        else:
            log.append((name, seconds, None, None))
        return result
    return around


def fold_varying_rows(log, sampled_rows):
    """The products whose row count varies from call to call (the neighbours a pruned step
    decodes) as one row per shape: "matmul (C, a) @ (a, b), C = lo..hi". A product on the
    sampled rows (the decoder at z_opt, of that shape too) keeps its own row."""
    rows_seen = {}
    for _, _, rows, rest in log:
        if rest is not None and rows != sampled_rows:
            rows_seen.setdefault(rest, set()).add(rows)
    folded = []
    for label, seconds, rows, rest in log:
        if rest is not None and rows != sampled_rows and len(rows_seen[rest]) > 3:
            counts = rows_seen[rest]
            label = f"matmul (C, {rest}, C = {min(counts)}..{max(counts)}"
        folded.append((label, seconds))
    return folded


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent-vars", "-N", type=int, default=15)
    parser.add_argument("--categories", "-K", type=int, default=2)
    parser.add_argument("--structure", default="pairwise", choices=("categorical", "pairwise"))
    parser.add_argument("--pairwise", default="attractive", choices=("attractive", "signed"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="BLAS/Numba threads")
    parser.add_argument("--checkpoint", default=None,
                        help="start from this checkpoint's parameters (a trained model: how many "
                             "neighbours pruning skips depends on them); its shape is used")
    parser.add_argument("--eps", type=float, default=1.0, help="the direct estimator's eps")
    parser.add_argument("--prune", choices=("auto", "on", "off"), default="auto",
                        help="the neighbours' pruning (TrainStep's prune: auto = where it can)")
    args = parser.parse_args(argv)
    if args.threads:
        set_thread_count(os.environ, args.threads)
    import numpy as np

    from dvae_cupy.api import DiscreteVAE
    from dvae_cupy.backend import Backend, cpu_backend
    from dvae_cupy.data import load_dataset
    from dvae_cupy.estimators import EstimatorConfig
    from dvae_cupy.launches import Intercepting
    from dvae_cupy.model import Model, ModelShape
    from dvae_cupy.step import TrainStep

    log = []
    plain = cpu_backend()
    backend = Backend(plain.name, Intercepting(plain.xp, timing(log), {"matmul"}),
                      Intercepting(plain.ops, timing(log)))
    if args.checkpoint:
        trained = DiscreteVAE.load(args.checkpoint, backend="cpu").model
        shape, params = trained.shape, trained.params
    else:
        shape = ModelShape(args.latent_vars, args.categories, structure=args.structure,
                           pairwise=args.pairwise)
    model = Model(shape, backend, seed=0)
    if args.checkpoint:
        model.load_params(params)
    prune = {"auto": None, "on": True, "off": False}[args.prune]
    step = TrainStep(model, EstimatorConfig("direct"), 0, args.batch_size, 1e-3, prune=prune)
    step.set_state(0, 0, args.eps)
    images = load_dataset("fashion-mnist").train.astype(np.float32)
    batches = len(images) // args.batch_size
    step_times = []
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            log.clear()
        j = i % batches
        step.batch[...] = images[j * args.batch_size:(j + 1) * args.batch_size]
        started = time.perf_counter()
        step()
        if i >= args.warmup:
            step_times.append(time.perf_counter() - started)
    calls = {}
    for label, seconds in fold_varying_rows(log, args.batch_size):
        calls.setdefault(label, []).append(seconds)
    step_ms = 1e3 * sum(step_times) / args.steps
    what = f"pairwise {shape.pairwise}" if shape.is_pairwise else "categorical"
    what += f", eps {args.eps:g}, pruning {'on' if step.prune else 'off'}"
    if args.checkpoint:
        what += f", from {args.checkpoint}"
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"# {machine_name()}, {os.cpu_count()} CPUs, threads={args.threads or 'all'}; "
          f"N={shape.n_latent} K={shape.n_categories} {what}, batch {args.batch_size}; "
          f"{args.steps} steps after {args.warmup} warm-up; load average {load}")
    print(f"# step: mean {step_ms:.2f} ms, median {1e3 * statistics.median(step_times):.2f} ms, "
          f"min {1e3 * min(step_times):.2f} ms")
    print("| op | calls/step | median ms | min ms | ms/step | share |")
    print("|---|---|---|---|---|---|")
    rows = sorted(calls.items(), key=lambda item: -sum(item[1]))
    covered = 0.0
    for label, seconds in rows:
        per_step = 1e3 * sum(seconds) / args.steps
        covered += per_step
        print(f"| {label} | {len(seconds) / args.steps:g} | {1e3 * statistics.median(seconds):.3f} | "
              f"{1e3 * min(seconds):.3f} | {per_step:.3f} | {per_step / step_ms:.0%} |")
    rest = step_ms - covered
    print(f"| rest (Python between the calls, untimed array functions) | | | | {rest:.3f} | "
          f"{rest / step_ms:.0%} |")


if __name__ == "__main__":
    main()
