"""Branch-free float32 exp(-|o|) and log1p(e) for e in [0, 1]: scalar bodies that vectorise.

  exp_neg_abs(o)   exp(-|o|) in [0, 1] for any float32 o; 0 where the result would be
                   subnormal (|o| > A_MAX), nan for nan
  log1p_unit(e)    log1p(e) for float32 e in [0, 1] (nan for nan)

Why: glibc's expf/log1pf are scalar calls that LLVM cannot vectorise, so a loop over a row ran at
~6-9 ns per element. These bodies are plain float32 arithmetic, compares and selects (no libm,
no ldexp, no bit casts, which Numba cannot do on scalars), so LLVM vectorises a loop over them
(8 float32 lanes in ymm registers: on AVX-512 machines LLVM's tuning still prefers 256-bit
vectors), and the CUDA kernels inline the same bodies: CPU and GPU evaluate one formula (up to
where a multiply-add is fused: ~1 ulp). They are ``numba.njit(inline='always')`` scalar bodies
as kernels/_cuda.py prescribes, and run under the CUDA simulator and in compile_ptx.

exp_neg_abs: a = |o|, n = round(a / ln 2), r = a - n ln 2 in [-ln2/2, ln2/2] by Cody-Waite (ln 2
split in two, the high part with 15 significant bits so that n * _LN2_HI is exact for n < 512),
then exp(-a) = exp(-r) 2^-n: exp(-r) by Cephes' expf polynomial (1 + x + x^2 P5(x), minimax,
~1 ulp), and 2^-n exactly, as 2^(15 - n mod 16) (an int shift converted to float, which LLVM
builds in the exponent bits) times 2^-15 times 2^-16, 2^-32, 2^-64 selected by bits 4-6 of n
(Numba types int32 & int32 as int64; the selects stay float32 and 8 lanes wide). A_MAX =
87.33654 < 126 ln 2 keeps n <= 126 and every intermediate and result a normal float (subnormal
arithmetic is slow on x86); beyond it the true value is below 2^-126 = 1.2e-38 and the result 0.

log1p_unit: with s = e / (2 + e) in [0, 1/3], log1p(e) = 2 atanh(s) = 2s + 2s z P(z), z = s^2,
where P is a degree-3 minimax fit of (atanh(s)/s - 1)/z on [0, 1/9] (truncation 4.5e-9 relative,
0.07 ulp; the Taylor series 1/3, 1/5, ... would need 6 terms). The rest is rounding: 2 + e, the
division, the final add.

Measured against float64 (every 1e-4 in [-100, 100]; e in [0, 1] step 5e-7): exp_neg_abs within
0.99 ulp, log1p_unit within 1.92 ulp; softplus and sigmoid built on them (kernels/bce.py) within
2.72 and 2.25 ulp; tests/test_bce.py holds them to that.

Do not compile these bodies with fastmath 'reassoc' (or 'fast'): it would allow LLVM to fold
a - n ln2_hi - n ln2_lo into a - n (ln2_hi + ln2_lo) and lose the Cody-Waite split (up to ~60 ulp
near |o| = 87; today's LLVM happens not to, which is no promise). 'contract' (fused multiply-add)
is safe, and is what NVVM does by default on the GPU.
"""
import numba
import numpy as np

__all__ = ["exp_neg_abs", "log1p_unit", "A_MAX"]

_f = np.float32

A_MAX = _f(87.33654)  # the float32 below 126 ln 2 = 87.336544750: exp(-A_MAX) >= 2^-126
_LOG2E = _f(1.4426950408889634)
_LN2_HI = _f(0.693145751953125)  # 0x3f317200: 15 significant bits, n * _LN2_HI exact for n < 512
_LN2_LO = _f(1.4286068203094172e-06)  # ln 2 - _LN2_HI
_HALF = _f(0.5)
_ONE = _f(1.0)
_TWO = _f(2.0)
_ZERO = _f(0.0)

# Cephes expf: exp(x) = 1 + x + x^2 P(x) on [-ln2/2, ln2/2]
_E0 = _f(1.9875691500e-4)
_E1 = _f(1.3981999507e-3)
_E2 = _f(8.3334519073e-3)
_E3 = _f(4.1665795894e-2)
_E4 = _f(1.6666665459e-1)
_E5 = _f(5.0000001201e-1)

# (atanh(s)/s - 1) / s^2 ~ P(s^2) on s^2 in [0, 1/9]: degree-3 minimax (Lawson) fit
_L0 = _f(0.3333320915699005)
_L1 = _f(0.2001076340675354)
_L2 = _f(0.14000901579856873)
_L3 = _f(0.14006000757217407)

# 2^-n = 2^-(n mod 16) * 2^-16 [bit 4] * 2^-32 [bit 5] * 2^-64 [bit 6], n in [0, 126]
_I0, _I15, _I16, _I32, _I64 = (np.int32(k) for k in (0, 15, 16, 32, 64))
_I1 = np.int32(1)
_P15 = _f(2.0 ** -15)
_P16, _P32, _P64 = _f(2.0 ** -16), _f(2.0 ** -32), _f(2.0 ** -64)


@numba.njit(inline="always")
def exp_neg_abs(o):
    """exp(-|o|) for float32 o: in [0, 1], 0 for |o| > A_MAX, nan for nan."""
    a = abs(o)
    # n = round(a / ln 2) in [0, 126], from a copy of a clamped so that nan and huge values
    # convert safely (a float->int conversion of nan or >= 2^31 is undefined in LLVM)
    a_n = a if a < A_MAX else A_MAX
    k = np.int32(a_n * _LOG2E + _HALF)
    n = _f(k)
    r = (a - n * _LN2_HI) - n * _LN2_LO  # exact but for the last rounding; nan stays nan
    x = -r
    p = _E0 * x + _E1  # exp(x) for |x| <= ln2/2 (+ a rounding or two)
    p = p * x + _E2
    p = p * x + _E3
    p = p * x + _E4
    p = p * x + _E5
    p = p * (x * x) + x + _ONE
    # 2^-(n mod 16) = 2^(15 - n mod 16) * 2^-15: an int shift and an exact conversion (LLVM
    # builds it in the exponent bits); the three high bits of n select 2^-16, 2^-32, 2^-64.
    low = _f(np.int32(_I1 << np.int32(_I15 - (k & _I15)))) * _P15
    high = (_P64 if (k & _I64) != _I0 else _ONE) * ((_P32 if (k & _I32) != _I0 else _ONE)
                                                   * (_P16 if (k & _I16) != _I0 else _ONE))
    p = p * (low * high)  # every partial product >= the result >= 2^-126: no subnormals
    return _ZERO if a > A_MAX else p


@numba.njit(inline="always")
def log1p_unit(e):
    """log1p(e) for float32 e in [0, 1]."""
    s = e / (_TWO + e)
    z = s * s
    q = _L3 * z + _L2
    q = q * z + _L1
    q = q * z + _L0
    s2 = s + s
    return s2 + (s2 * z) * q
