"""Does the binary input pay as gathers over its active pixels? (issue 14; not a test)

    python benchmarks/sparse_input.py [--threads 2] [--calls 300]

The encoder's two big products at batch 100, x (100, 784) 0/1 and H = 300: the forward x @ W1
and the weight gradient x^T @ dH, each by OpenBLAS's sgemm (what the step runs) and as sums of
W1's rows over each image's active pixels (per-image lists) and of dH's rows over each pixel's
active images (per-pixel lists), plain @njit loops over contiguous rows of 300. Timed on a batch
of Fashion-MNIST (the fixed binarisation) and on the same batch with a random part of the active
pixels dropped, for sparser data; building the two lists from x is timed on its own. Between
calls a 7.6 MB array (the size Adam sweeps each step) is rewritten, so each call starts with
caches as the training loop leaves them. Medians of --calls calls; prints a Markdown table
naming the machine.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


from threads import pin_threads  # noqa: E402

THREADS = pin_threads(sys.argv, default="2")

import time  # noqa: E402

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from bench_step import machine_name  # noqa: E402


@njit(cache=False)
def active_lists(x, row_starts, row_pixels, column_starts, column_images, counts):
    """Per-image active pixels (row_starts, row_pixels) and per-pixel active images; False if
    x holds a value other than 0 and 1."""
    images, pixels = x.shape
    n, binary = 0, True
    for d in range(pixels + 1):
        counts[d] = 0
    for b in range(images):
        row_starts[b] = n
        for d in range(pixels):
            v = x[b, d]
            binary &= (v == 0.0) | (v == 1.0)
            row_pixels[n] = d
            n += v != 0.0
    row_starts[images] = n
    for i in range(n):
        counts[row_pixels[i] + 1] += 1
    for d in range(pixels):
        counts[d + 1] += counts[d]
    for d in range(pixels + 1):
        column_starts[d] = counts[d]
    for b in range(images):
        for i in range(row_starts[b], row_starts[b + 1]):
            d = row_pixels[i]
            column_images[counts[d]] = b
            counts[d] += 1
    return binary


@njit(fastmath=True, cache=False)
def rows_sum(starts, members, rows, out):
    """out[i] = sum of rows[members[j]] for j in starts[i]:starts[i+1], four rows at a time."""
    width = out.shape[1]
    for i in range(out.shape[0]):
        target = out[i]
        for j in range(width):
            target[j] = 0.0
        k, end = starts[i], starts[i + 1]
        while k + 4 <= end:
            r0, r1, r2, r3 = rows[members[k]], rows[members[k + 1]], rows[members[k + 2]], rows[members[k + 3]]
            for j in range(width):
                target[j] += (r0[j] + r1[j]) + (r2[j] + r3[j])
            k += 4
        while k < end:
            r0 = rows[members[k]]
            for j in range(width):
                target[j] += r0[j]
            k += 1


def median_us(call, calls, sweep):
    times = []
    for _ in range(2 * calls):
        np.multiply(sweep, np.float32(1.0000001), out=sweep)
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return float(np.median(times[calls:])) * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    from dvae_cupy.data import load_dataset

    rng = np.random.default_rng(0)
    images = load_dataset("fashion-mnist").train
    batch, pixels, hidden = 100, images.shape[1], 300
    full = images[rng.choice(len(images), batch, replace=False)].astype(np.float32)
    w1 = (rng.standard_normal((pixels, hidden)) * 0.05).astype(np.float32)
    dh = np.maximum(rng.standard_normal((batch, hidden)), 0).astype(np.float32)
    sweep = np.ones(4 * 477794, np.float32)
    row_starts, column_starts = np.empty(batch + 1, np.int64), np.empty(pixels + 1, np.int64)
    row_pixels, column_images = np.empty(batch * pixels, np.int32), np.empty(batch * pixels, np.int32)
    counts = np.empty(pixels + 1, np.int64)
    hidden_blas, hidden_sum = np.empty((batch, hidden), np.float32), np.empty((batch, hidden), np.float32)
    grad_blas, grad_sum = np.empty((pixels, hidden), np.float32), np.empty((pixels, hidden), np.float32)

    print(f"## Binary input as gathers over active pixels ({machine_name()}, {os.cpu_count()} "
          f"cores, {args.threads} threads; batch {batch}, H = {hidden}; median of {args.calls} "
          f"calls, caches swept between calls)\n")
    print("| active pixels | sgemm x @ W1 us | sum over active pixels us | sgemm x^T @ dH us | "
          "sum over active images us | building both lists us | gathers + lists / sgemm |")
    print("|---|---|---|---|---|---|---|")
    for keep in (1.0, 0.4, 0.15):
        x = (full * (rng.random(full.shape) < keep)).astype(np.float32)
        lists = lambda: active_lists(x, row_starts, row_pixels, column_starts, column_images, counts)  # noqa: E731
        assert lists()
        rows_sum(row_starts, row_pixels, w1, hidden_sum)
        rows_sum(column_starts, column_images, dh, grad_sum)
        np.testing.assert_allclose(hidden_sum, x @ w1, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(grad_sum, x.T @ dh, rtol=1e-4, atol=1e-4)
        times = [median_us(call, args.calls, sweep) for call in (
            lambda: np.matmul(x, w1, out=hidden_blas),
            lambda: rows_sum(row_starts, row_pixels, w1, hidden_sum),
            lambda: np.matmul(x.T, dh, out=grad_blas),
            lambda: rows_sum(column_starts, column_images, dh, grad_sum),
            lists)]
        ratio = (times[1] + times[3] + times[4]) / (times[0] + times[2])
        print(f"| {100 * x.mean():.1f} % | " + " | ".join(f"{t:.0f}" for t in times) + f" | {ratio:.2f} |")


if __name__ == "__main__":
    main()
