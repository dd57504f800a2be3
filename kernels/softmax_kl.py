"""KL(q(z|x) || uniform) of the encoder's categorical posteriors, and its gradient in the logits.

  softmax_kl(logits (B,NK), K, grad_scale, kl (B,), grad (B,NK))
      per sample b and variable n, with q = softmax of the K logits in columns n*K .. n*K+K-1:
      kl[b] = sum_n [ sum_k q_k log q_k + log K ]
      grad[b, n*K+k] = grad_scale * q_k (log q_k - sum_j q_j log q_j)   (OVERWRITES grad)
      grad must not be logits: it holds exp(h - max h) while a variable is processed, which
      saves two of three exps per logit (0.37 -> 0.16 ms at B=100, N=20, K=10 on the CPU).

  shifted_exp, log_prob, kl_grad     scalar bodies, shared by every target
  softmax_kl_njit                    CPU @njit loop (callable from @njit code)
  softmax_kl                         CPU twin: the launcher's arguments, checked
  softmax_kl_kernel                  CUDA: one block per sample, one thread per variable
  softmax_kl_cuda                    launcher (see kernels/_cuda.py for the pattern)

Stability: log q_k = (h_k - max h) - log sum_j exp(h_j - max h) is formed by subtraction, never
as log(q_k), so a logit 160 below the maximum gives q_k = 0 (underflow) and q_k log q_k = 0, not
0 * -inf. Each variable's KL is non-negative and is added as such, so the sum over n has no
cancellation; the cancellation inside one variable (sum q log q against log K, near-uniform q)
costs ~1e-7 absolute, the float32 floor.

Precision: per-variable sums over k are float32 on every target (K terms of one sign: ~K/2 ulp
at worst). The sum over n is float64 on the CPU and a float32 tree on the GPU.
"""
import math

import numba
import numpy as np
from numba import types

from ._compile import CACHE
from ._cuda import as_device_view, cuda, current_stream
from ._checks import check_array
from ._reduce import block_sum

# One block per sample: the per-sample KL sum over its N variables is then a deterministic tree
# sum in shared memory (no atomics, no second pass), and each thread owns whole variables, so
# the softmax over K needs no communication. 32 threads cover N <= 32 in one pass (a larger N
# loops). B*N*K is ~1e4-1e5 elements: the launch, not this layout, sets the time.
THREADS = 32

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)

# ---------------------------------------------------------------------------------------------
# Scalar bodies (float32; the casts keep the simulator, whose math returns float64, in step)


@numba.njit(inline="always")
def shifted_exp(h, h_max):
    """exp(h - max): a softmax numerator in (0, 1]."""
    return np.float32(math.exp(h - h_max))


@numba.njit(inline="always")
def log_prob(h, h_max, log_sum):
    """log q = (h - max) - log sum exp(h - max): finite even where q underflows to 0."""
    return (h - h_max) - log_sum


@numba.njit(inline="always")
def kl_grad(q, log_q, neg_entropy, grad_scale):
    """grad_scale * q (log q - sum_j q_j log q_j), the KL gradient in the logit of q."""
    return grad_scale * (q * (log_q - neg_entropy))


# ---------------------------------------------------------------------------------------------
# Argument checks, shared by the CPU twin and the launcher


def _check_array(name, array, ndim):
    check_array(name, array, np.float32, ndim=ndim)


def _check_softmax_kl(logits, n_categories, kl, grad):
    """(B, K) after checking the arguments of softmax_kl."""
    for name, array, ndim in (("logits", logits, 2), ("kl", kl, 1), ("grad", grad, 2)):
        _check_array(name, array, ndim)
    batch, width = logits.shape
    k = int(n_categories)
    if k < 1 or width % k:
        raise ValueError("K must be >= 1 and divide the %d logit columns, got %r"
                         % (width, n_categories))
    if tuple(kl.shape) != (batch,):
        raise ValueError("kl must have shape %s, got %s" % ((batch,), tuple(kl.shape)))
    if grad is logits:
        raise ValueError("grad must not be logits (it is scratch before the logits are read)")
    if tuple(grad.shape) != (batch, width):
        raise ValueError("grad must have shape %s, got %s" % ((batch, width), tuple(grad.shape)))
    return batch, k


# ---------------------------------------------------------------------------------------------
# CPU twin


@numba.njit(cache=CACHE)
def softmax_kl_njit(logits, n_categories, grad_scale, kl, grad):
    """The loop of softmax_kl on C-contiguous float32 arrays."""
    batch, width = logits.shape
    log_k = np.float32(math.log(n_categories))
    for b in range(batch):
        h = logits[b]
        g = grad[b]
        total = 0.0
        for start in range(0, width, n_categories):
            stop = start + n_categories
            h_max = h[start]
            for j in range(start + 1, stop):
                h_max = max(h_max, h[j])
            exp_sum = _ZERO
            for j in range(start, stop):  # grad holds exp(h - max) until the last pass
                g[j] = shifted_exp(h[j], h_max)
                exp_sum += g[j]
            log_sum = np.float32(math.log(exp_sum))
            inv_sum = _ONE / exp_sum
            neg_entropy = _ZERO
            for j in range(start, stop):
                neg_entropy += (g[j] * inv_sum) * log_prob(h[j], h_max, log_sum)
            for j in range(start, stop):
                g[j] = kl_grad(g[j] * inv_sum, log_prob(h[j], h_max, log_sum), neg_entropy,
                               grad_scale)
            total += neg_entropy + log_k
        kl[b] = total


def softmax_kl(logits, n_categories, grad_scale, kl, grad):
    """CPU twin of softmax_kl_cuda on NumPy float32 arrays (see the module docstring)."""
    _, k = _check_softmax_kl(logits, n_categories, kl, grad)
    softmax_kl_njit(logits, np.int64(k), np.float32(grad_scale), kl, grad)


# ---------------------------------------------------------------------------------------------
# CUDA twin: block b owns sample b; thread t owns variables t, t + THREADS, ... (the same
# per-variable loops as the CPU twin), then the block's tree sums the variables' KL terms.
# Every thread reaches block_sum (no early return): the grid is exactly one block per sample.


@cuda.jit
def softmax_kl_kernel(logits, n_categories, grad_scale, kl, grad):
    """Sample b = blockIdx.x of softmax_kl."""
    b = cuda.blockIdx.x
    t = cuda.threadIdx.x
    log_k = np.float32(math.log(np.float32(n_categories)))
    partial = _ZERO
    for n in range(t, logits.shape[1] // n_categories, THREADS):
        start = n * n_categories
        stop = start + n_categories
        h_max = logits[b, start]
        for j in range(start + 1, stop):
            h_max = max(h_max, logits[b, j])
        exp_sum = _ZERO
        for j in range(start, stop):  # grad holds exp(h - max) until the last pass
            grad[b, j] = shifted_exp(logits[b, j], h_max)
            exp_sum += grad[b, j]
        log_sum = np.float32(math.log(exp_sum))
        inv_sum = _ONE / exp_sum
        neg_entropy = _ZERO
        for j in range(start, stop):
            neg_entropy += (grad[b, j] * inv_sum) * log_prob(logits[b, j], h_max, log_sum)
        for j in range(start, stop):
            grad[b, j] = kl_grad(grad[b, j] * inv_sum, log_prob(logits[b, j], h_max, log_sum),
                                 neg_entropy, grad_scale)
        partial += neg_entropy + log_k
    total = block_sum(cuda.shared.array(THREADS, numba.float32), partial)
    if t == 0:
        kl[b] = total


CUDA_KERNELS = [
    (softmax_kl_kernel, [(types.float32[:, ::1], types.int32, types.float32, types.float32[::1],
                          types.float32[:, ::1])]),
]


def softmax_kl_cuda(logits, n_categories, grad_scale, kl, grad, stream=None):
    """CUDA twin of softmax_kl: float32 CuPy/Numba device arrays (NumPy under the simulator);
    launched on `stream`, else CuPy's current stream. Does not synchronise."""
    batch, k = _check_softmax_kl(logits, n_categories, kl, grad)
    if batch == 0:
        return
    stream = current_stream() if stream is None else stream
    softmax_kl_kernel[batch, THREADS, stream](
        as_device_view(logits), np.int32(k), np.float32(grad_scale), as_device_view(kl),
        as_device_view(grad))
