"""The rows of the encoder's backward that carry gradient, gathered so that the backward's
products run on them alone (the CPU's only: the host reads their count).

The direct estimator's dL/dlogits row of an image is (onehot(z_opt) - onehot(z_dir)) / eps, plus
the KL's gradient only with --kl-backprop: it is all zeros wherever z_dir = z_opt, which is most
images of a batch (79 % of the rows over a first epoch at N = 1, K = 10, 94 % by the sixth).
Such a row adds exact zeros to every sum of the backward (x^T dH, hidden^T dlogits, the bias
sums), so those sums are the same numbers over the other rows alone.

  gather_active_rows(dout (B,W), limit, rows int64 (B,), sources, outs) -> count
      rows[:count] = the indices of dout's rows with any element != 0 (NaN counts: it must reach
      the gradients), ascending. When count <= limit, row i < count of each array of the tuple
      `outs` is that row of the same-shaped array of `sources` (float32 (B, *) each); otherwise
      (too many rows for the gather to pay) nothing is gathered. A single active row is paired
      with a neighbouring zero row (count 2, still ascending): NumPy sends a one-row product to
      gemv, which adds in another order than gemm, and the zero row adds exact zeros.

Why the bits are those of the whole batch's products: a float32 sum that starts at +0 never
becomes -0, and adding an exact zero to it changes nothing, so a sum over the rows in order, with
the zero rows' terms skipped, is the same chain of roundings. That holds for the sums over the
batch (x^T dH, hidden^T dlogits, the bias sums) with OpenBLAS's sgemm, whose micro-kernels add
each output's terms in order of the summed index (tests/test_active_rows.py checks it on this
machine's BLAS, and whole steps with and without the gather bit for bit). It does not hold for
a product whose rows are the batch's: OpenBLAS picks another kernel for a few rows of
dlogits @ W^T, which adds its W columns in another order, so the model computes dH on the whole
batch and gathers its rows too. A BLAS that splits the summed index differently could round
the last bit differently, never the estimator's codes.
"""
import numba
import numpy as np

from ._checks import check_array
from ._compile import CACHE

__all__ = ["gather_active_rows"]


@numba.njit(cache=CACHE)
def _active_rows(dout, rows):
    """rows[:count] = dout's rows with any element != 0, ascending; returns count."""
    count = 0
    for r in range(dout.shape[0]):
        for j in range(dout.shape[1]):
            if dout[r, j] != 0:  # True for NaN too
                rows[count] = r
                count += 1
                break
    if count == 1 and dout.shape[0] > 1:  # a second row keeps NumPy on gemm (module docstring)
        r = rows[0]
        if r + 1 < dout.shape[0]:
            rows[1] = r + 1
        else:
            rows[0], rows[1] = r - 1, r
        count = 2
    return count


@numba.njit(cache=CACHE)
def _gather(source, rows, count, out):
    for i in range(count):
        out[i, :] = source[rows[i], :]


_FLOAT32 = np.dtype(np.float32)


def _fits(array, batch):
    return (getattr(array, "dtype", None) is _FLOAT32 and len(array.shape) == 2
            and array.shape[0] == batch and array.flags["C_CONTIGUOUS"])


def _check(dout, rows, sources, outs):
    """Each argument's fault, named (run only when the quick test in gather_active_rows fails)."""
    check_array("dout", dout, np.float32, ndim=2)
    batch = dout.shape[0]
    check_array("rows", rows, np.int64, shape=(batch,))
    if len(sources) != len(outs):
        raise ValueError("sources and outs must pair up, got %d and %d arrays"
                         % (len(sources), len(outs)))
    for i, (source, out) in enumerate(zip(sources, outs)):
        check_array("sources[%d]" % i, source, np.float32, ndim=2)
        check_array("outs[%d]" % i, out, np.float32, ndim=2)
        if source.shape[0] != batch:
            raise ValueError("sources[%d] must have dout's %d rows, got shape %s"
                             % (i, batch, tuple(source.shape)))
        if out.shape != source.shape:
            raise ValueError("outs[%d] must have shape %s, got %s"
                             % (i, tuple(source.shape), tuple(out.shape)))


def gather_active_rows(dout, limit, rows, sources, outs):
    """See the module docstring. dout float32 (B, W), rows int64 (B,), limit an int, sources
    and outs tuples of float32 C-contiguous 2-D arrays, outs[i] of sources[i]'s shape, each of
    B rows; returns count. One quick test of all the arguments, the named checks only when it
    fails (the checks of 9 arrays cost what the gather does, every step)."""
    shape = getattr(dout, "shape", ())
    batch = shape[0] if len(shape) == 2 else None
    fine = (batch is not None and _fits(dout, batch) and getattr(rows, "dtype", None) == np.int64
            and rows.shape == (batch,) and len(sources) == len(outs)
            and all(_fits(a, batch) and _fits(b, batch) and a.shape == b.shape
                    for a, b in zip(sources, outs)))
    if not fine:
        _check(dout, rows, sources, outs)
    count = _active_rows(dout, rows)
    if count <= limit:
        for source, out in zip(sources, outs):
            _gather(source, rows, count, out)
    return count
