"""The matrix-product floor of a direct training step: the flops of its matrix products over this
machine's float32 sgemm rate, measured at each product's own shape (not a test).

The products counted are those of the published algorithm's step (what the PyTorch peer runs,
minus its one-hot GEMMs): the encoder forward and x^T dH (B x D x H each), the decoder forward at
z_opt, dW2 and dhidden (B x H x D each), the three N*K-wide ones (B x H x N*K), and the
candidates: for N > 1 the B*N*(K-1) neighbours' H x D product and x @ W2^T (B x D x H), for N = 1
the K codes' (K x H x D) and x @ out^T (B x D x K). The decoder's first layer is a gather, not a
product. Where our step does less (N = 1 decodes K rows instead of B; pruned neighbours are not
decoded) it can run below this floor: the floor is the work of the method, not of our shortcuts.

    rate = sgemm_rate(m, k, n)             # flop/s of np.matmul (m x k) @ (k x n), float32
    floor_s, flops = step_floor(100, 20, 10)
"""
import statistics
import time

import numpy as np


def step_products(batch, n_latent, n_categories, hidden=300, pixels=784):
    """[(m, k, n, how many, role)]: the step's products as (m x k) @ (k x n); role "mlps" or
    "candidates"."""
    nk = n_latent * n_categories
    products = [(batch, pixels, hidden, 2, "mlps"), (batch, hidden, pixels, 3, "mlps"),
                (batch, hidden, nk, 3, "mlps")]
    if n_latent > 1:
        products += [(batch * n_latent * (n_categories - 1), hidden, pixels, 1, "candidates"),
                     (batch, pixels, hidden, 1, "candidates")]
    else:
        products += [(n_categories, hidden, pixels, 1, "candidates"),
                     (batch, pixels, n_categories, 1, "candidates")]
    return products


def sgemm_rate(m, k, n, seconds=0.2):
    """Median flop/s of np.matmul at (m x k) @ (k x n), C-contiguous float32, into a kept output,
    after a warm-up; at least 5 timed calls, more while under `seconds`."""
    rng = np.random.default_rng(0)
    a = rng.random((m, k), dtype=np.float32)
    b = rng.random((k, n), dtype=np.float32)
    out = np.empty((m, n), np.float32)
    for _ in range(3):
        np.matmul(a, b, out=out)
    times, started = [], time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - started < seconds and len(times) < 200):
        t = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - t)
    return 2.0 * m * k * n / statistics.median(times)


def step_floor(batch, n_latent, n_categories, hidden=300, pixels=784, rates=None, role=None):
    """(floor seconds, flops) of one step (of its products of `role` only, if given); `rates`
    {(m, k, n): flop/s} caches measurements."""
    rates = {} if rates is None else rates
    seconds = flops = 0.0
    for m, k, n, count, kind in step_products(batch, n_latent, n_categories, hidden, pixels):
        if role is not None and kind != role:
            continue
        if (m, k, n) not in rates:
            rates[(m, k, n)] = sgemm_rate(m, k, n)
        seconds += count * 2.0 * m * k * n / rates[(m, k, n)]
        flops += count * 2.0 * m * k * n
    return seconds, flops
