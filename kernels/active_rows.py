"""The rows of the encoder's backward that carry gradient, gathered so that the backward's
products run on them alone (the CPU's only: the host reads their count).

The direct estimator's dL/dlogits row of an image is (onehot(z_opt) - onehot(z_dir)) / eps, plus
the KL's gradient only with --kl-backprop: it is all zeros wherever z_dir = z_opt, which is most
images of a batch (79 % of the rows over a first epoch at N = 1, K = 10, 94 % by the sixth).
Such a row adds exact zeros to every sum of the backward (x^T dH, hidden^T dlogits, the bias
sums), so those sums are the same numbers over the other rows alone.

  gather_active_rows(dout (B,W), hidden (B,H), inputs (B,D), limit, rows int64 (B,),
                     dout_out (B,W), hidden_out (B,H), inputs_out (B,D)) -> count
      rows[:count] = the indices of dout's rows with any element != 0 (NaN counts: it must reach
      the gradients), ascending. When count <= limit, row i < count of each *_out is that row
      of its source; otherwise (too many rows for the gather to pay) nothing is gathered.
      A single active row is paired with a neighbouring zero row (count 2, still ascending):
      NumPy sends a one-row product to gemv, which adds in another order than gemm, and the
      zero row adds exact zeros.

Why the bits are those of the full products: a float32 sum that starts at +0 never becomes -0,
and adding an exact zero to it changes nothing, so a sum over the rows in order, with the zero
rows' terms skipped, is the same chain of roundings. That holds for OpenBLAS's sgemm, whose
micro-kernels add each output's terms in order of the summed index (tests/test_active_rows.py
checks it on this machine's BLAS, and the step with and without the gather bit for bit); a BLAS
that splits the summed index differently could round the last bit differently, never the
estimator's codes.
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


@numba.njit(cache=CACHE)
def _gather_active_rows(dout, hidden, inputs, limit, rows, dout_out, hidden_out, inputs_out):
    count = _active_rows(dout, rows)
    if count <= limit:
        _gather(dout, rows, count, dout_out)
        _gather(hidden, rows, count, hidden_out)
        _gather(inputs, rows, count, inputs_out)
    return count


def gather_active_rows(dout, hidden, inputs, limit, rows, dout_out, hidden_out, inputs_out):
    """See the module docstring. float32 C-contiguous 2-D arrays of one row count B (each *_out
    its source's shape), rows int64 (B,), limit an int; returns count."""
    batch = dout.shape[0] if hasattr(dout, "shape") else None
    for name, array in (("dout", dout), ("hidden", hidden), ("inputs", inputs),
                        ("dout_out", dout_out), ("hidden_out", hidden_out),
                        ("inputs_out", inputs_out)):
        check_array(name, array, np.float32, ndim=2)
        if array.shape[0] != batch:
            raise ValueError("%s must have dout's %d rows, got shape %s"
                             % (name, batch, tuple(array.shape)))
    for name, source, out in (("dout_out", dout, dout_out), ("hidden_out", hidden, hidden_out),
                              ("inputs_out", inputs, inputs_out)):
        if out.shape != source.shape:
            raise ValueError("%s must have shape %s, got %s"
                             % (name, tuple(source.shape), tuple(out.shape)))
    check_array("rows", rows, np.int64, shape=(batch,))
    return _gather_active_rows(dout, hidden, inputs, int(limit), rows, dout_out, hidden_out,
                               inputs_out)
