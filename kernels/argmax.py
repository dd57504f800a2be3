"""Gumbel-max sampling and the direct estimator's perturbed arg max (reference: gumbel_max,
perturbed_argmax and direct_logit_grad in dvae_cupy/reference.py).

Layouts (.notes/kernel_api.md): logits (B, NK), gumbel and losses (R, NK) with R = B*M and row
r = b*M + m, codes (R, N) int32; variable n's K values are columns n*K .. n*K+K-1.

  gumbel_argmax(logits, gumbel, K, M, codes)
      codes[r, n] = argmax_k logits[r // M, n*K+k] + gumbel[r, n*K+k]
  direct_logit_grad(logits, gumbel, losses, codes, K, M, eps, grad_scale, two_sided, grad)
      ADDS the direct estimate, grad_scale * mean over the M draws of
      one-sided (onehot(z_opt) - onehot(z_dir(+eps))) / eps, or
      two-sided (onehot(z_dir(-eps)) - onehot(z_dir(+eps))) / (2 eps),
      with z_opt = codes[r, n] and z_dir(eps) = argmax_k (h + g - eps L).

`eps` is a number, or a 1-element 1-D float32 array holding it (NumPy for the CPU twin and the
simulator, a CuPy/Numba device array on the GPU) that the kernel reads at run time, so that a
CUDA graph can replay the op while the eps schedule moves. Both forms give identical outputs for
the same float32 eps: the weight of one draw, grad_scale / (eps M) (or / (2 eps M)), is computed
by one scalar body (direct_step) in float64 from the float32 eps, then rounded to float32, on
the host for a number and in the kernel for an array. The launcher checks only the array's dtype
and shape; eps > 0 is checked for a number, and by the CPU twin for an array (host memory).

Ties go to the first maximal index (np.argmax) on every target. Each op is
  <op>_at / <op>_at_cuda  one body, compiled twice: @njit(inline) for the CPU loop and a CUDA
                          device function for the kernel (the simulator cannot pass arrays into
                          @njit code, so an array-taking body cannot be a plain @njit helper)
  <op>_loop               CPU @njit loop over all (r, n) / (b, n), no allocation
  <op>                    CPU twin: the launcher's arguments, checked, scalars cast
  <op>_kernel             CUDA, one thread per (r, n) / (b, n): no atomics
  direct_logit_grad_eps_array_loop / _kernel   the same, eps read from eps[0]
  <op>_cuda               launcher (see kernels/_cuda.py), never synchronises
"""
import math

import numba
import numpy as np
from numba import types

from ._cuda import as_device_view, cuda, current_stream, launch_1d
from ._checks import check_array
from .rng import scalar_array

__all__ = ["gumbel_argmax", "gumbel_argmax_cuda", "direct_logit_grad", "direct_logit_grad_cuda",
           "CUDA_KERNELS"]


# ---------------------------------------------------------------------------------------------
# Argument checks (Python level, once per call; never in the hot loop). They read only shape,
# dtype and flags, so they cost no device sync on CuPy or Numba device arrays.

def _check_array(name, array, dtype, shape):
    check_array(name, array, dtype, shape=shape)


def _check_count(name, value, minimum):
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_sampling(logits, gumbel, K, M, codes):
    """Checks the arrays common to both ops agree with K and M; returns (B, R, N)."""
    K = _check_count("K", K, 1)
    M = _check_count("M", M, 1)
    if len(logits.shape) != 2 or logits.shape[0] < 1 or logits.shape[1] < 1 \
            or logits.shape[1] % K:
        raise ValueError(f"logits must have shape (B >= 1, N*K) with K={K}, "
                         f"got {tuple(logits.shape)}")
    B, NK = logits.shape
    N, R = NK // K, B * M
    _check_array("logits", logits, np.float32, (B, NK))
    _check_array("gumbel", gumbel, np.float32, (R, NK))
    _check_array("codes", codes, np.int32, (R, N))
    return B, R, N


# ---------------------------------------------------------------------------------------------
# Shared bodies. Written once as plain functions, compiled for the CPU loop (@njit, inlined) and
# as CUDA device functions (which take arrays on every target, the simulator included).

def _gumbel_argmax_at(logits, gumbel, K, M, r, n, codes):
    """codes[r, n] = first k maximising logits[r // M, n*K+k] + gumbel[r, n*K+k]."""
    b = r // M
    c0 = n * K
    best = logits[b, c0] + gumbel[r, c0]
    arg = 0
    for k in range(1, K):
        value = logits[b, c0 + k] + gumbel[r, c0 + k]
        if value > best:  # strict: ties keep the first index
            best = value
            arg = k
    codes[r, n] = arg


def _direct_logit_grad_at(logits, gumbel, losses, codes, K, M, eps, step, two_sided, b, n, grad):
    """grad[b, n*K:(n+1)*K] += the direct estimate over b's M draws; `step` is the weight of one
    draw's +1/-1 (grad_scale / (eps M), or / (2 eps M) two-sided). One pass over the K values
    finds both z_dir(+eps) = argmax (h + g) - eps L and z_dir(-eps) = argmax (h + g) + eps L."""
    c0 = n * K
    for m in range(M):
        r = b * M + m
        shifted = logits[b, c0] + gumbel[r, c0]
        moved = eps * losses[r, c0]
        best_plus = shifted - moved  # z_dir(+eps): towards lower loss
        best_minus = shifted + moved  # z_dir(-eps): towards higher loss
        z_plus = 0
        z_minus = 0
        for k in range(1, K):
            shifted = logits[b, c0 + k] + gumbel[r, c0 + k]
            moved = eps * losses[r, c0 + k]
            if shifted - moved > best_plus:
                best_plus = shifted - moved
                z_plus = k
            if shifted + moved > best_minus:
                best_minus = shifted + moved
                z_minus = k
        z_up = z_minus if two_sided else codes[r, n]
        if z_up != z_plus:  # equal: +step - step, skipped so grad is not touched by rounding
            grad[b, c0 + z_up] += step
            grad[b, c0 + z_plus] -= step


@numba.njit(inline="always", error_model="numpy")
def direct_step(grad_scale, eps, M, two_sided):
    """float32 weight of one draw's +1/-1: grad_scale / (eps M), or / (2 eps M) two-sided,
    computed in float64 from float64 grad_scale, float32 eps and int32 M, then rounded once.
    Every operation is an IEEE-rounded float64 * or / (no fusable multiply-add), so the host,
    the simulator and the GPU get the same float32."""
    denominator = (2.0 if two_sided else 1.0) * np.float64(eps) * np.float64(M)
    return np.float32(grad_scale / denominator)


gumbel_argmax_at = numba.njit(inline="always")(_gumbel_argmax_at)
gumbel_argmax_at_cuda = cuda.jit(device=True, inline="always")(_gumbel_argmax_at)
direct_logit_grad_at = numba.njit(inline="always")(_direct_logit_grad_at)
direct_logit_grad_at_cuda = cuda.jit(device=True, inline="always")(_direct_logit_grad_at)


# ---------------------------------------------------------------------------------------------
# CPU twins: @njit loops (callable from other @njit code with the cast scalars) and Python
# fronts with the launchers' arguments.

@numba.njit
def gumbel_argmax_loop(logits, gumbel, K, M, codes):
    for r in range(codes.shape[0]):
        for n in range(codes.shape[1]):
            gumbel_argmax_at(logits, gumbel, K, M, r, n, codes)


@numba.njit
def direct_logit_grad_loop(logits, gumbel, losses, codes, K, M, eps, step, two_sided, grad):
    for b in range(grad.shape[0]):
        for n in range(codes.shape[1]):
            direct_logit_grad_at(logits, gumbel, losses, codes, K, M, eps, step, two_sided, b, n,
                                 grad)


@numba.njit
def direct_logit_grad_eps_array_loop(logits, gumbel, losses, codes, K, M, eps, grad_scale,
                                     two_sided, grad):
    """direct_logit_grad_loop with eps read from eps[0] (1-element float32) and the step made
    from it by direct_step, as the kernel does."""
    e = eps[0]
    direct_logit_grad_loop(logits, gumbel, losses, codes, K, M, e,
                           direct_step(grad_scale, e, M, two_sided), two_sided, grad)


def _direct_scalars(K, M, eps, grad_scale, two_sided, device=False):
    """(eps array or None, scalars as the kernel takes them). For a number eps:
    (K, M, eps, step, two_sided) with eps rounded to float32 and step = direct_step(...); for an
    array eps: (K, M, eps array, grad_scale as float64, two_sided), the kernel making the step."""
    if not math.isfinite(grad_scale):
        raise ValueError(f"grad_scale must be finite, got {grad_scale!r}")
    eps_array = scalar_array("eps", eps, np.float32, device)
    K, M, two_sided, grad_scale = np.int32(K), np.int32(M), bool(two_sided), float(grad_scale)
    if eps_array is not None:
        return eps_array, (K, M, eps_array, np.float64(grad_scale), two_sided)
    if not (math.isfinite(eps) and eps > 0 and np.float32(eps) > 0
            and math.isfinite(np.float32(eps))):
        raise ValueError(f"eps must be a finite number > 0 (in float32 too), got {eps!r}")
    eps = np.float32(eps)
    # Numba returns a float32 to Python as a float: exact, re-typed float32 for the signature
    step = np.float32(direct_step(grad_scale, eps, M, two_sided))
    return None, (K, M, eps, step, two_sided)


def _check_direct(logits, gumbel, losses, codes, K, M, grad):
    _check_sampling(logits, gumbel, K, M, codes)
    _check_array("losses", losses, np.float32, gumbel.shape)
    _check_array("grad", grad, np.float32, logits.shape)


def gumbel_argmax(logits, gumbel, K, M, codes):
    """CPU Gumbel-max: codes[r, n] = argmax_k logits[r//M, n*K+k] + gumbel[r, n*K+k]."""
    _check_sampling(logits, gumbel, K, M, codes)
    gumbel_argmax_loop(logits, gumbel, np.int32(K), np.int32(M), codes)


def direct_logit_grad(logits, gumbel, losses, codes, K, M, eps, grad_scale, two_sided, grad):
    """CPU: adds grad_scale * the direct estimate of d E[L] / d logits into `grad` (B, NK)."""
    _check_direct(logits, gumbel, losses, codes, K, M, grad)
    eps_array, scalars = _direct_scalars(K, M, eps, grad_scale, two_sided)
    if eps_array is None:
        direct_logit_grad_loop(logits, gumbel, losses, codes, *scalars, grad)
        return
    e = float(eps_array[0])  # host memory here: checked like a number
    if not (math.isfinite(e) and e > 0):
        raise ValueError(f"eps must be a finite number > 0, got eps[0] = {e!r}")
    direct_logit_grad_eps_array_loop(logits, gumbel, losses, codes, *scalars, grad)


# ---------------------------------------------------------------------------------------------
# CUDA twins: one thread per (r, n) for sampling, per (b, n) for the gradient (a thread owns its
# K columns of grad, so there are no atomics and the sum over m is in a fixed order).

@cuda.jit
def gumbel_argmax_kernel(logits, gumbel, K, M, codes):
    i = cuda.grid(1)
    N = codes.shape[1]
    if i < codes.shape[0] * N:
        gumbel_argmax_at_cuda(logits, gumbel, K, M, i // N, i % N, codes)


@cuda.jit
def direct_logit_grad_kernel(logits, gumbel, losses, codes, K, M, eps, step, two_sided, grad):
    i = cuda.grid(1)
    N = codes.shape[1]
    if i < grad.shape[0] * N:
        direct_logit_grad_at_cuda(logits, gumbel, losses, codes, K, M, eps, step, two_sided,
                                  i // N, i % N, grad)


@cuda.jit
def direct_logit_grad_eps_array_kernel(logits, gumbel, losses, codes, K, M, eps, grad_scale,
                                       two_sided, grad):
    """direct_logit_grad_kernel with eps read from eps[0] at run time and the step made from it
    (direct_step, float64 then float32) by each thread."""
    i = cuda.grid(1)
    N = codes.shape[1]
    if i < grad.shape[0] * N:
        e = eps[0]
        direct_logit_grad_at_cuda(logits, gumbel, losses, codes, K, M, e,
                                  direct_step(grad_scale, e, M, two_sided), two_sided,
                                  i // N, i % N, grad)


_F32 = types.float32[:, ::1]
_I32 = types.int32[:, ::1]
CUDA_KERNELS = [
    (gumbel_argmax_kernel, [(_F32, _F32, types.int32, types.int32, _I32)]),
    (direct_logit_grad_kernel, [(_F32, _F32, _F32, _I32, types.int32, types.int32,
                                 types.float32, types.float32, types.boolean, _F32)]),
    (direct_logit_grad_eps_array_kernel, [(_F32, _F32, _F32, _I32, types.int32, types.int32,
                                           types.float32[::1], types.float64, types.boolean,
                                           _F32)]),
]


def gumbel_argmax_cuda(logits, gumbel, K, M, codes, stream=None):
    """CUDA twin of gumbel_argmax on CuPy/Numba device arrays (NumPy under the simulator);
    launched on `stream`, else CuPy's current stream. Does not synchronise."""
    B, R, N = _check_sampling(logits, gumbel, K, M, codes)
    blocks, threads = launch_1d(R * N)
    stream = current_stream() if stream is None else stream
    gumbel_argmax_kernel[blocks, threads, stream](
        as_device_view(logits), as_device_view(gumbel), np.int32(K), np.int32(M),
        as_device_view(codes))


def direct_logit_grad_cuda(logits, gumbel, losses, codes, K, M, eps, grad_scale, two_sided, grad,
                           stream=None):
    """CUDA twin of direct_logit_grad (adds into `grad`); `eps` is a number or a 1-element
    float32 device array read by the kernel (its value is not checked: no host sync). Launched
    on `stream`, else CuPy's current stream. Does not synchronise."""
    _check_direct(logits, gumbel, losses, codes, K, M, grad)
    eps_array, scalars = _direct_scalars(K, M, eps, grad_scale, two_sided, device=True)
    kernel = direct_logit_grad_kernel
    if eps_array is not None:
        kernel = direct_logit_grad_eps_array_kernel
        scalars = scalars[:2] + (as_device_view(eps_array),) + scalars[3:]
    blocks, threads = launch_1d(grad.shape[0] * codes.shape[1])
    stream = current_stream() if stream is None else stream
    kernel[blocks, threads, stream](
        as_device_view(logits), as_device_view(gumbel), as_device_view(losses),
        as_device_view(codes), *scalars, as_device_view(grad))
