"""ms per batch of the pairwise model's two exact arg max solvers on the CPU (not a test).

    python benchmarks/bench_structured.py [--sizes 5 8 10 12 15 18 20] [--batch 100]
                                          [--repeats 5] [--threads 2]

For each N, one batch of R = batch rows (M = 1) of perturbed unaries like a training step's:
unaries ~ normal(0, 1.5) + Gumbel, and for z_dir's solve the same minus eps * L with L ~ 200 +
3 normal, eps = 1 (the schedule's start); attractive pairwise potentials softplus(normal(0, 1)).
Both solvers get the same potentials (the enumeration also solves attractive ones; it is the
solver of the signed mode), and their codes are checked to agree. The time is the median over
--repeats calls after one warm-up call (Numba compiles there), of the CPU twins
(kernels/pairwise_mincut.py, kernels/pairwise_enumeration.py); two such solves make a training
step's arg max cost. Memory is what each call holds beyond its inputs and outputs: the work
arrays the CPU loops allocate (computed from their sizes in the code, float64 and int32), and
the shared memory a CUDA block of the kernel uses (fixed at compile time).
"""
import argparse
import os
import statistics
import time

import numpy as np

from bench_step import machine_name  # noqa: E402 (this folder is on sys.path when run as a script)


def batch_potentials(rng, rows, N, shifted):
    P = N * (N - 1) // 2
    unary = 1.5 * rng.normal(size=(rows, 2 * N)) + rng.gumbel(size=(rows, 2 * N))
    if shifted:
        unary -= 200 + 3 * rng.normal(size=(rows, 2 * N))
    pairwise = np.logaddexp(0.0, rng.normal(size=(rows, P)))
    return unary.astype(np.float32), pairwise.astype(np.float32)


def median_ms(solve, unary, pairwise, codes, repeats):
    solve(unary, pairwise, 1, codes)  # warm-up (compiles on the first size)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        solve(unary, pairwise, 1, codes)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 8, 10, 12, 15, 18, 20])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="NUMBA_NUM_THREADS (the solvers are single-threaded loops)")
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["NUMBA_NUM_THREADS"] = str(args.threads)
    from dvae_cupy.kernels import pairwise_enumeration, pairwise_mincut

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {machine_name()}, {os.cpu_count()} CPUs, load average {load:.2f} at start; "
          f"batch {args.batch} rows, median of {args.repeats} calls, ms per batch")
    print(f"{'N':>3} {'solve':>6} | {'min-cut ms':>10} {'enumeration ms':>14} | "
          f"{'min-cut work':>12} {'enum. work':>10} | {'min-cut smem':>12} {'enum. smem':>10}")
    rng = np.random.default_rng(0)
    for N in args.sizes:
        P = N * (N - 1) // 2
        # the arrays mincut_argmax_loop / enumeration_argmax_loop allocate, and the kernels'
        # cuda.shared arrays (as ptxas reports them for sm_90)
        low = pairwise_enumeration.LOW_CODES
        mincut_work = 8 * (2 * N + 2 * P) + 4 * 2 * (N + 2)
        enum_work = 8 * (N + N * N + low + N + low)
        V = pairwise_mincut.MINCUT_MAX_VARS
        mincut_smem = 8 * (2 * V + V * (V - 1)) + 4 * 2 * (V + 2) + 4 * 4
        E, T = pairwise_enumeration.ENUMERATION_MAX_VARS, 1 << pairwise_enumeration.LOG2_THREADS
        enum_smem = 8 * (E + E * E + T + low) + 4 * (T + 1)
        for shifted, label in ((False, "z_opt"), (True, "z_dir")):
            unary, pairwise = batch_potentials(rng, args.batch, N, shifted)
            a = np.empty((args.batch, N), np.int32)
            b = np.empty((args.batch, N), np.int32)
            t_mincut = median_ms(pairwise_mincut.mincut_argmax, unary, pairwise, a, args.repeats)
            t_enum = median_ms(pairwise_enumeration.enumeration_argmax, unary, pairwise, b,
                               args.repeats)
            if not np.array_equal(a, b):
                print(f"   (N={N}: {np.count_nonzero((a != b).any(1))} rows differ: near ties)")
            print(f"{N:>3} {label:>6} | {t_mincut:>10.3f} {t_enum:>14.3f} | "
                  f"{mincut_work:>10} B {enum_work:>8} B | {mincut_smem:>10} B {enum_smem:>8} B",
                  flush=True)


if __name__ == "__main__":
    main()
