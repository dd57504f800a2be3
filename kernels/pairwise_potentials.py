"""The pairwise model's potentials from the encoder output, and their Gumbel and eps*L shifts:
the inputs of the structured arg max solvers (kernels/pairwise_mincut.py,
kernels/pairwise_enumeration.py). Reference: structured_potentials and the perturbations in
structured_direct_estimator (dvae_cupy/reference.py).

  split_potentials(enc_out, N, attractive, unary, pairwise)
      unary[b, c] = enc_out[b, c]                                   c < 2N   (B, 2N)
      pairwise[b, p] = softplus(enc_out[b, 2N + p]) if attractive else enc_out[b, 2N + p]  (B, P)
  perturb_unaries(unary, gumbel, M, perturbed)
      perturbed[r, c] = unary[r // M, c] + gumbel[r, c]                       (R, 2N), z_opt's
  shift_unaries(perturbed, losses, eps, negate, shifted)
      shifted[r, c] = perturbed[r, c] - eps[0] * losses[r, c]     (z_dir(+eps)'s; negate: + eps L,
                                                                   z_dir(-eps)'s)
eps is a 1-element 1-D float32 array, read by the kernel (NumPy on the CPU and under the
simulator, a device array on a GPU). The unary copy is contiguous, so the KL of the unary
softmaxes is kernels/softmax_kl.py's with K = 2.

Precision: softplus is float64 then rounded once (NumPy's ufuncs on the CPU, libdevice on the
GPU: each within an ulp of float64, so the same float32 but for a float64 value within an ulp of
a float32 rounding boundary); the shift is float64 from float32 operands (the product of two
float32 is exact in float64, so a fused multiply-add changes nothing) rounded once: the CPU and
the GPU give the same floats, and so the same arg max codes.

  softplus_f64, shift          scalar bodies (every target)
  softplus_f64_rows            the CPU's softplus_f64 over an array (NumPy float64 ufuncs)
  *_loop / *_kernel            CPU @njit loops and CUDA kernels, one thread per output element
  split_potentials, perturb_unaries, shift_unaries            CPU twins (arguments checked)
  split_potentials_cuda, perturb_unaries_cuda, shift_unaries_cuda   launchers, no sync
"""
import math

import numba
import numpy as np
from numba import types

from ._compile import CACHE
from ._checks import check_array
from ._cuda import as_device_view, cuda, current_stream, launch_1d
from ._pairwise import check_count, check_eps_array, check_eps_value, pair_count
from ._checks import check_scalar_array

__all__ = ["split_potentials", "split_potentials_cuda", "perturb_unaries",
           "perturb_unaries_cuda", "shift_unaries", "shift_unaries_cuda", "CUDA_KERNELS"]


# ---------------------------------------------------------------------------------------------
# Checks (shape, dtype, flags: no device sync)

def _check_split(enc_out, N, unary, pairwise):
    N = check_count("N", N, 1)
    width = 2 * N + pair_count(N)
    if len(enc_out.shape) != 2 or enc_out.shape[1] != width or enc_out.shape[0] < 1:
        raise ValueError(f"enc_out must have shape (B >= 1, 2N + N(N-1)/2 = {width}) for N={N}, "
                         f"got {tuple(enc_out.shape)}")
    B = enc_out.shape[0]
    check_array("enc_out", enc_out, np.float32, shape=(B, width))
    check_array("unary", unary, np.float32, shape=(B, 2 * N))
    check_array("pairwise", pairwise, np.float32, shape=(B, pair_count(N)))


def _check_perturb(unary, gumbel, M, perturbed):
    M = check_count("M", M, 1)
    if len(unary.shape) != 2 or unary.shape[0] < 1:
        raise ValueError(f"unary must have shape (B >= 1, 2N), got {tuple(unary.shape)}")
    B, width = unary.shape
    check_array("unary", unary, np.float32, shape=(B, width))
    check_array("gumbel", gumbel, np.float32, shape=(B * M, width))
    check_array("perturbed", perturbed, np.float32, shape=(B * M, width))


def _check_shift(perturbed, losses, eps, shifted):
    check_eps_array(eps)
    if len(perturbed.shape) != 2:
        raise ValueError(f"perturbed must be 2-D (R, 2N), got {tuple(perturbed.shape)}")
    check_array("perturbed", perturbed, np.float32, shape=perturbed.shape)
    check_array("losses", losses, np.float32, shape=perturbed.shape)
    check_array("shifted", shifted, np.float32, shape=perturbed.shape)


# ---------------------------------------------------------------------------------------------
# Scalar bodies

@numba.njit(inline="always")
def softplus_f64(x):
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|), in float64, for a float32 x."""
    x = np.float64(x)
    return (x if x > 0.0 else 0.0) + math.log1p(math.exp(-abs(x)))


@numba.njit(inline="always")
def shift(value, eps, loss, negate):
    """value -/+ eps * loss in float64 (eps * loss is exact there), rounded once to float32."""
    moved = np.float64(eps) * np.float64(loss)
    return np.float32(np.float64(value) + moved if negate else np.float64(value) - moved)


# ---------------------------------------------------------------------------------------------
# CPU twins

def softplus_f64_rows(pre, out):
    """out = float32(softplus_f64(pre)) elementwise, as NumPy float64 ufuncs: they run in vector
    lanes where libm's exp and log1p, which an @njit loop calls one element at a time, do not
    (100 x 105 potentials: ~50 against ~210 us). Both are within an ulp of the float64 value,
    so the float32 results agree but for a float64 value within an ulp of a float32 rounding
    boundary."""
    x = pre.astype(np.float64)
    tail = np.log1p(np.exp(-np.abs(x)))
    out[...] = np.maximum(x, 0.0) + tail


@numba.njit(cache=CACHE)
def perturb_unaries_loop(unary, gumbel, M, perturbed):
    for r in range(perturbed.shape[0]):
        for c in range(perturbed.shape[1]):
            perturbed[r, c] = unary[r // M, c] + gumbel[r, c]


@numba.njit(cache=CACHE)
def shift_unaries_loop(perturbed, losses, eps, negate, shifted):
    e = eps[0]
    for r in range(shifted.shape[0]):
        for c in range(shifted.shape[1]):
            shifted[r, c] = shift(perturbed[r, c], e, losses[r, c], negate)


def split_potentials(enc_out, N, attractive, unary, pairwise):
    """CPU: the unary copy (B, 2N) and the pairwise potentials (B, P) of the encoder output."""
    _check_split(enc_out, N, unary, pairwise)
    N = int(N)
    unary[...] = enc_out[:, :2 * N]
    if attractive:
        softplus_f64_rows(enc_out[:, 2 * N:], pairwise)
    else:
        pairwise[...] = enc_out[:, 2 * N:]


def perturb_unaries(unary, gumbel, M, perturbed):
    """CPU: perturbed (R, 2N) = unary[r // M] + gumbel[r]."""
    _check_perturb(unary, gumbel, M, perturbed)
    perturb_unaries_loop(unary, gumbel, np.int32(M), perturbed)


def shift_unaries(perturbed, losses, eps, negate, shifted):
    """CPU: shifted = perturbed - eps[0] * losses (negate: + eps[0] * losses)."""
    _check_shift(perturbed, losses, eps, shifted)
    check_eps_value(eps)
    shift_unaries_loop(perturbed, losses, eps, bool(negate), shifted)


# ---------------------------------------------------------------------------------------------
# CUDA twins: one thread per output element

@cuda.jit
def split_potentials_kernel(enc_out, N, attractive, unary, pairwise):
    i = cuda.grid(1)
    width = enc_out.shape[1]
    if i < enc_out.shape[0] * width:
        b, c = i // width, i % width
        if c < 2 * N:
            unary[b, c] = enc_out[b, c]
        else:
            pre = enc_out[b, c]
            pairwise[b, c - 2 * N] = np.float32(softplus_f64(pre)) if attractive else pre


@cuda.jit
def perturb_unaries_kernel(unary, gumbel, M, perturbed):
    i = cuda.grid(1)
    width = perturbed.shape[1]
    if i < perturbed.shape[0] * width:
        r, c = i // width, i % width
        perturbed[r, c] = unary[r // M, c] + gumbel[r, c]


@cuda.jit
def shift_unaries_kernel(perturbed, losses, eps, negate, shifted):
    i = cuda.grid(1)
    width = shifted.shape[1]
    if i < shifted.shape[0] * width:
        r, c = i // width, i % width
        shifted[r, c] = shift(perturbed[r, c], eps[0], losses[r, c], negate)


_F32 = types.float32[:, ::1]
CUDA_KERNELS = [
    (split_potentials_kernel, [(_F32, types.int32, types.boolean, _F32, _F32)]),
    (perturb_unaries_kernel, [(_F32, _F32, types.int32, _F32)]),
    (shift_unaries_kernel, [(_F32, _F32, types.float32[::1], types.boolean, _F32)]),
]


def split_potentials_cuda(enc_out, N, attractive, unary, pairwise, stream=None):
    """CUDA twin of split_potentials. Does not synchronise."""
    _check_split(enc_out, N, unary, pairwise)
    stream = current_stream() if stream is None else stream
    blocks, threads = launch_1d(enc_out.size)
    split_potentials_kernel[blocks, threads, stream](
        as_device_view(enc_out), np.int32(N), bool(attractive), as_device_view(unary),
        as_device_view(pairwise))


def perturb_unaries_cuda(unary, gumbel, M, perturbed, stream=None):
    """CUDA twin of perturb_unaries. Does not synchronise."""
    _check_perturb(unary, gumbel, M, perturbed)
    stream = current_stream() if stream is None else stream
    blocks, threads = launch_1d(perturbed.size)
    perturb_unaries_kernel[blocks, threads, stream](
        as_device_view(unary), as_device_view(gumbel), np.int32(M), as_device_view(perturbed))


def shift_unaries_cuda(perturbed, losses, eps, negate, shifted, stream=None):
    """CUDA twin of shift_unaries; eps is a 1-element float32 device array (its value is not
    checked: no sync). Does not synchronise."""
    _check_shift(perturbed, losses, eps, shifted)
    check_scalar_array("eps", eps, np.float32, device=True)  # refuses a NumPy eps on a real GPU
    stream = current_stream() if stream is None else stream
    blocks, threads = launch_1d(shifted.size)
    shift_unaries_kernel[blocks, threads, stream](
        as_device_view(perturbed), as_device_view(losses), as_device_view(eps), bool(negate),
        as_device_view(shifted))
