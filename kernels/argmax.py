"""Gumbel-max sampling and the direct estimator's perturbed arg max (reference: gumbel_max,
perturbed_argmax and direct_logit_grad in dvae_cupy/reference.py).

Layouts: logits (B, NK), gumbel and losses (R, NK) with R = B*M and row r = b*M + m, codes
(R, N) int32; variable n's K values are columns n*K .. n*K+K-1.

  sample_codes(logits, seed, counter, K, M, per_image, gumbel, codes)
      writes the Gumbel noise and the Gumbel-max codes in one pass:
      per_image=False (training):   gumbel[r, c] = gumbel_at(seed, counter[0], r*NK + c),
                                    exactly rng.gumbel_noise's layout
      per_image=True (evaluation, the library API: an image's noise does not depend on the batch
                                    it is in): gumbel[r, c] = gumbel_at(seed, counter[0] + r // M,
                                    (r % M)*NK + c), i.e. image b of the batch uses stream
                                    counter[0] + b
      codes[r, n] = first k maximising logits[r // M, n*K+k] + gumbel[r, n*K+k]
  direct_logit_grad(logits, gumbel, losses, codes, K, M, eps, grad_scale, two_sided, grad)
      ADDS the direct estimate, grad_scale * mean over the M draws of
      one-sided (onehot(z_opt) - onehot(z_dir(+eps))) / eps, or
      two-sided (onehot(z_dir(-eps)) - onehot(z_dir(+eps))) / (2 eps),
      with z_opt = codes[r, n] and z_dir(eps) = argmax_k (h + g - eps L).

`counter` (uint64) and `eps` (float32) are 1-element 1-D arrays (NumPy for the CPU twins and the
simulator, CuPy/Numba device arrays on the GPU) read by the kernel at run time, so a CUDA graph
replays the ops while the counter and the eps schedule move. The weight of one draw,
grad_scale / (eps M) (or / (2 eps M)), is made from eps[0] by one scalar body (direct_step: float64
from float64 grad_scale and float32 eps, then rounded to float32) inside the CPU loop and by each
CUDA thread. The CPU twin checks eps[0] > 0 inside its @njit loop; the launcher cannot (no sync).

Ties go to the first maximal index (np.argmax) on every target. The pieces:
  noise_stream            scalar body: the (Philox stream, first index) of row r's noise
  pick_code(_cuda), direct_logit_grad_at(_cuda)
                          one body each, compiled twice: @njit(inline) for the CPU loop and a
                          CUDA device function for the kernel (the simulator cannot pass arrays
                          into @njit code, so an array-taking body cannot be a plain @njit helper)
  direct_step             scalar body: the float32 weight of one draw
  <op>_loop               CPU @njit loops, no allocation: sample_codes fills all the noise in
                          flat loops first (vectorised), then picks the codes
  <op>                    CPU twin: the launcher's arguments, checked, scalars cast
  <op>_kernel             CUDA, one thread per (r, n) / (b, n): no atomics; sample_codes' thread
                          computes its K noise values inline (rng.gumbel_at)
  <op>_cuda               launcher, (..., stream=None): see kernels/_cuda.py; never synchronises
"""
import math

import numba
import numpy as np
from numba import types

from ._compile import CACHE
from ._checks import check_array, check_scalar_array
from ._cuda import as_device_view, cuda, current_stream, launch_1d
from .rng import gumbel_at, gumbel_run

__all__ = ["sample_codes", "sample_codes_cuda", "direct_logit_grad", "direct_logit_grad_cuda",
           "direct_step", "CUDA_KERNELS"]


# ---------------------------------------------------------------------------------------------
# Argument checks (Python level, once per call; never in the hot loop). They read only shape,
# dtype and flags, so they cost no device sync on CuPy or Numba device arrays.

def _check_array(name, array, dtype, shape):
    check_array(name, array, dtype, shape=shape)


def _check_count(name, value, minimum):
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_layout(logits, gumbel, K, M, codes):
    """Checks the arrays common to both ops agree with K and M; returns (K, M) as int32."""
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
    return np.int32(K), np.int32(M)


def _check_sampling(logits, seed, counter, K, M, gumbel, codes, device=False):
    """(seed as uint64, K, M as int32) after checking sample_codes' arguments."""
    check_scalar_array("counter", counter, np.uint64, device)
    K, M = _check_layout(logits, gumbel, K, M, codes)
    if int(seed) != seed or not 0 <= seed < 2 ** 64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return np.uint64(seed), K, M


def _check_direct(logits, gumbel, losses, codes, K, M, eps, grad_scale, grad, device=False):
    """(K, M as int32, grad_scale as float64) after checking direct_logit_grad's arguments."""
    K, M = _check_layout(logits, gumbel, K, M, codes)
    _check_array("losses", losses, np.float32, gumbel.shape)
    _check_array("grad", grad, np.float32, logits.shape)
    check_scalar_array("eps", eps, np.float32, device)
    if not math.isfinite(grad_scale):
        raise ValueError(f"grad_scale must be finite, got {grad_scale!r}")
    return K, M, np.float64(grad_scale)


# ---------------------------------------------------------------------------------------------
# Shared bodies. Written once as plain functions, compiled for the CPU loop (@njit, inlined) and
# as CUDA device functions (which take arrays on every target, the simulator included).

def _noise_stream(counter, M, per_image, r, NK):
    """(stream, first index) of row r's noise, for the kernel: per image, stream counter + b with
    indices from the draw m = r % M (batch-independent); for training, stream counter with
    indices r*NK + c (rng.gumbel_noise's layout). `counter` is the value counter[0]. The CPU
    loop writes the same layout as flat runs."""
    if per_image:
        b = r // M
        return counter + np.uint64(b), (r - b * M) * NK  # uint64 + uint64: wraps, no float detour
    return counter, r * NK


noise_stream = numba.njit(inline="always")(_noise_stream)


def _pick_code(logits, gumbel, K, M, r, n, codes):
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
    Every operation is an IEEE-rounded float64 * or / (no fusable multiply-add), so the CPU,
    the simulator and the GPU get the same float32."""
    denominator = (2.0 if two_sided else 1.0) * np.float64(eps) * np.float64(M)
    return np.float32(grad_scale / denominator)


pick_code = numba.njit(inline="always")(_pick_code)
pick_code_cuda = cuda.jit(device=True, inline="always")(_pick_code)
direct_logit_grad_at = numba.njit(inline="always")(_direct_logit_grad_at)
direct_logit_grad_at_cuda = cuda.jit(device=True, inline="always")(_direct_logit_grad_at)


# ---------------------------------------------------------------------------------------------
# CPU twins: @njit loops (callable from other @njit code with the cast scalars) and Python
# fronts with the launchers' arguments. The per-step scalars are read here, in @njit code.

@numba.njit(cache=CACHE)
def sample_codes_loop(logits, seed, counter, K, M, per_image, gumbel, codes):
    """The noise first, in long flat runs (rng.gumbel_run: the whole array for training, as
    rng.gumbel_noise_flat; each image's M*NK values per image), then the codes. Per (r, n), as the
    kernel does it, ran 1.6-1.9x slower here at N = 1: rows of K = 10 are too short to vectorise.
    The values are noise_stream's layout."""
    c = counter[0]
    flat = gumbel.reshape(gumbel.size)
    if per_image:
        per = M * logits.shape[1]
        for b in range(logits.shape[0]):
            gumbel_run(seed, c + np.uint64(b), flat, b * per, per)
    else:
        gumbel_run(seed, c, flat, 0, flat.size)
    for r in range(codes.shape[0]):
        for n in range(codes.shape[1]):
            pick_code(logits, gumbel, K, M, r, n, codes)


@numba.njit(cache=CACHE)
def direct_logit_grad_loop(logits, gumbel, losses, codes, K, M, eps, grad_scale, two_sided, grad):
    e = eps[0]
    if not (e > 0 and e < np.inf):  # nan fails both
        raise ValueError("eps[0] must be a finite number > 0")
    step = direct_step(grad_scale, e, M, two_sided)
    for b in range(grad.shape[0]):
        for n in range(codes.shape[1]):
            direct_logit_grad_at(logits, gumbel, losses, codes, K, M, e, step, two_sided, b, n,
                                 grad)


def sample_codes(logits, seed, counter, K, M, per_image, gumbel, codes):
    """CPU: the Gumbel noise of (seed, counter[0]) into `gumbel` and the Gumbel-max codes."""
    seed, K, M = _check_sampling(logits, seed, counter, K, M, gumbel, codes)
    sample_codes_loop(logits, seed, counter, K, M, bool(per_image), gumbel, codes)


def direct_logit_grad(logits, gumbel, losses, codes, K, M, eps, grad_scale, two_sided, grad):
    """CPU: adds grad_scale * the direct estimate of d E[L] / d logits into `grad` (B, NK)."""
    K, M, grad_scale = _check_direct(logits, gumbel, losses, codes, K, M, eps, grad_scale, grad)
    direct_logit_grad_loop(logits, gumbel, losses, codes, K, M, eps, grad_scale, bool(two_sided),
                           grad)


# ---------------------------------------------------------------------------------------------
# CUDA twins: one thread per (r, n) for sampling, per (b, n) for the gradient (a thread owns its
# K columns of grad, so there are no atomics and the sum over m is in a fixed order).

@cuda.jit
def sample_codes_kernel(logits, seed, counter, K, M, per_image, gumbel, codes):
    """Thread (r, n) computes its K noise values inline (rng.gumbel_at), writes them, and picks
    the code from them (read back from its own writes)."""
    i = cuda.grid(1)
    N = codes.shape[1]
    if i < codes.shape[0] * N:
        r, n = i // N, i % N
        stream, first = noise_stream(counter[0], M, per_image, r, logits.shape[1])
        c0 = n * K
        for k in range(K):
            gumbel[r, c0 + k] = gumbel_at(seed, stream, first + c0 + k)
        pick_code_cuda(logits, gumbel, K, M, r, n, codes)


@cuda.jit
def direct_logit_grad_kernel(logits, gumbel, losses, codes, K, M, eps, grad_scale, two_sided,
                             grad):
    """Each thread reads eps[0] and makes the step from it (direct_step, float64 then float32)."""
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
    (sample_codes_kernel, [(_F32, types.uint64, types.uint64[::1], types.int32, types.int32,
                            types.boolean, _F32, _I32)]),
    (direct_logit_grad_kernel, [(_F32, _F32, _F32, _I32, types.int32, types.int32,
                                 types.float32[::1], types.float64, types.boolean, _F32)]),
]


def sample_codes_cuda(logits, seed, counter, K, M, per_image, gumbel, codes, stream=None):
    """CUDA twin of sample_codes on CuPy/Numba device arrays (NumPy under the simulator);
    launched on `stream`, else CuPy's current stream. Does not synchronise."""
    seed, K, M = _check_sampling(logits, seed, counter, K, M, gumbel, codes, device=True)
    blocks, threads = launch_1d(codes.shape[0] * codes.shape[1])  # B >= 1: never empty
    stream = current_stream() if stream is None else stream
    sample_codes_kernel[blocks, threads, stream](
        as_device_view(logits), seed, as_device_view(counter), K, M, bool(per_image),
        as_device_view(gumbel), as_device_view(codes))


def direct_logit_grad_cuda(logits, gumbel, losses, codes, K, M, eps, grad_scale, two_sided, grad,
                           stream=None):
    """CUDA twin of direct_logit_grad (adds into `grad`); `eps` a 1-element float32 device array
    read by the kernel (its value is not checked: no host sync). Launched on `stream`, else
    CuPy's current stream. Does not synchronise."""
    K, M, grad_scale = _check_direct(logits, gumbel, losses, codes, K, M, eps, grad_scale, grad,
                                     device=True)
    blocks, threads = launch_1d(grad.shape[0] * codes.shape[1])
    stream = current_stream() if stream is None else stream
    direct_logit_grad_kernel[blocks, threads, stream](
        as_device_view(logits), as_device_view(gumbel), as_device_view(losses),
        as_device_view(codes), K, M, as_device_view(eps), grad_scale, bool(two_sided),
        as_device_view(grad))
