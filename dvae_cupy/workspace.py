"""The work arrays of a training step and of an evaluation, each allocated once per batch shape.

In the style of llm.c's ActivationTensors: every array a pass reads or writes is a named field of
a workspace owned by one role (a TrainStep, an Evaluator), handed to the model's passes
explicitly, so a reader sees what a step holds and no function finds its input "left by" another.
Evaluation has its own workspace and never touches the training one (a captured CUDA graph keeps
pointers into the training arrays, so they must never be reallocated while it lives).

Sizes: B batch, M Gumbel samples per image (R = B*M rows), N latent variables, K values each,
H hidden units, D pixels, C candidate rows decoded at once (N > 1).
All arrays float32 unless said otherwise.
"""
from dataclasses import dataclass

import numpy as np

from .kernels.candidates import candidate_count


@dataclass
class MLPArrays:
    """A two-layer MLP (inputs -> H, ReLU -> width) on `rows` inputs: the encoder, or the decoder
    on relaxed codes (Gumbel-softmax).
        hidden   (rows, H)       post-ReLU hidden layer (forward)
        out      (rows, width)   output, with the output bias for the encoder and without it for
                                 the decoder (bce_rows adds it)
        dhidden  (rows, H)       dL/d hidden, then masked by the ReLU (backward)
        dinputs  (rows, inputs)  dL/d inputs (the dense decoder's backward), or None
    """
    hidden: object
    out: object
    dhidden: object
    dinputs: object = None

    @classmethod
    def allocate(cls, xp, rows, hidden, width, inputs=None):
        return cls(xp.zeros((rows, hidden), np.float32), xp.zeros((rows, width), np.float32),
                   xp.zeros((rows, hidden), np.float32),
                   None if inputs is None else xp.zeros((rows, inputs), np.float32))


@dataclass
class CodeDecoderArrays:
    """The decoder at integer codes (one-hot, so the first layer is a gather of N rows).
        pre      (rows, H)   first layer's pre-activation (the N > 1 candidates start from it)
        hidden   (rows, H)   relu(pre)
        out      (rows, D)   hidden @ dec_w2, WITHOUT the output bias (bce_rows adds it)
        dhidden  (rows, H)   dL/d hidden (backward)
    """
    pre: object
    hidden: object
    out: object
    dhidden: object

    @classmethod
    def allocate(cls, xp, rows, hidden, pixels):
        return cls(*(xp.zeros(shape, np.float32)
                     for shape in ((rows, hidden), (rows, hidden), (rows, pixels), (rows, hidden))))


@dataclass
class AllCodeArrays:
    """N = 1: every one of the K codes decoded once per step (they are shared by the batch), and
    the candidate losses L[b, k] = S_k - x_b . out_k as one small GEMM. The sampled codes are
    K codes too, so the decoder's backward runs on these K rows.
        codes    (K, 1) int32   0 .. K-1, the K codes
        decoder  CodeDecoderArrays for the K codes
        xo       (B, K)         x @ out^T
        xb2      (B,)           x @ dec_b2
        dout     (K, D)         dL/d (the K codes' logits), summed over the rows at each code
        dhidden_t (H, K)        dout @ dec_w2^T, transposed (the layout BLAS computes fastest)
    """
    codes: object
    decoder: CodeDecoderArrays
    xo: object
    xb2: object
    dout: object
    dhidden_t: object

    @classmethod
    def allocate(cls, xp, batch, n_categories, hidden, pixels):
        return cls(xp.arange(n_categories, dtype=np.int32).reshape(n_categories, 1),
                   CodeDecoderArrays.allocate(xp, n_categories, hidden, pixels),
                   xp.zeros((batch, n_categories), np.float32), xp.zeros(batch, np.float32),
                   xp.zeros((n_categories, pixels), np.float32),
                   xp.zeros((hidden, n_categories), np.float32))


@dataclass
class NeighbourArrays:
    """N > 1: the N*(K-1) neighbours of each sampled code (kernels/candidates.py), decoded in
    chunks of at most C rows.
        u          (R, H)   x @ dec_w2^T, one row per sampled code (the x-linear BCE part)
        linear_b2  (R,)     x @ dec_b2, one per sampled code
        hidden     (C, H)   a chunk's neighbour hidden layers
        out        (C, D)   hidden @ dec_w2 (without the bias)
        linear     (C,)     u . hidden, per candidate
    With pruning (kernels/neighbour_pruning.py; the CPU), else None:
        ids        (C,) int32  the number of the neighbour in each row of a chunk
        margin_w   (R, H)   per-row weights of the rounding margin
        margin_m   (R,) float64   per-row constant of the margin
        v_z        (R,) float64   the tangent at the sampled code, dhidden . hidden
        decoded_mask (R, N) uint8  the pairwise model's: which neighbours a step has decoded
        rows       (R,) int32  the pairwise model's: the rows a pruning round re-solves
        (kernels/structured_pruning.py)
    and two host counts over the arrays' life: `decoded` and `skipped` neighbours.
    """
    u: object
    linear_b2: object
    hidden: object
    out: object
    linear: object
    ids: object = None
    margin_w: object = None
    margin_m: object = None
    v_z: object = None
    decoded_mask: object = None
    rows: object = None
    decoded: int = 0
    skipped: int = 0

    @classmethod
    def allocate(cls, xp, rows, n_latent, hidden, pixels, chunk, prune=False):
        arrays = cls(xp.zeros((rows, hidden), np.float32), xp.zeros(rows, np.float32),
                     xp.zeros((chunk, hidden), np.float32), xp.zeros((chunk, pixels), np.float32),
                     xp.zeros(chunk, np.float32))
        if prune:
            arrays.ids = xp.zeros(chunk, np.int32)
            arrays.margin_w = xp.zeros((rows, hidden), np.float32)
            arrays.margin_m, arrays.v_z = xp.zeros(rows), xp.zeros(rows)
            arrays.decoded_mask = xp.zeros((rows, n_latent), np.uint8)
            arrays.rows = xp.zeros(rows, np.int32)
        return arrays

    @property
    def chunk(self):
        return len(self.linear)


@dataclass
class ActiveRowArrays:
    """The CPU's encoder backward: its sums over the batch on the rows of dlogits that are not
    all zero, gathered (kernels/active_rows.py; the direct estimator: an image whose z_dir is
    z_opt has none). Each step uses the first `count` rows:
        rows     (B,) int64   the active rows' indices in the batch, ascending
        dout     (B, W)       their dlogits rows
        hidden   (B, H)       their encoder hidden layers (post-ReLU)
        dhidden  (B, H)       their dL/d hidden (made on the whole batch), then ReLU-masked
        inputs   (B, D)       their images
        limit    int          the most rows gathered: with more, the backward runs on the whole
                              batch (gathering 9 rows in 10 costs about what it saves)
    and two host counts over the arrays' life: the batch rows the backward has `seen` and those
    it `gathered` (ran on).
    """
    rows: object
    dout: object
    hidden: object
    dhidden: object
    inputs: object
    limit: int
    seen: int = 0
    gathered: int = 0

    @classmethod
    def allocate(cls, xp, batch, width, hidden, inputs):
        return cls(xp.zeros(batch, np.int64), xp.zeros((batch, width), np.float32),
                   xp.zeros((batch, hidden), np.float32), xp.zeros((batch, hidden), np.float32),
                   xp.zeros((batch, inputs), np.float32), (9 * batch) // 10)


@dataclass
class PairwiseArrays:
    """The pairwise binary model's potentials and arg maxes (kernels/pairwise_*.py), for B
    images and R = B*M perturbed rows.
        unary       (B, 2N)  unary potentials phi_i(k), column 2i + k
        pairwise    (B, P)   pairwise potentials phi_ij, pairs i < j in row-major order
        kl_grad     (B, 2N)  softmax_kl's scratch (the unary KL is reported, not trained)
        perturbed   (R, 2N)  unary + Gumbel noise
        shifted     (R, 2N)  perturbed -/+ eps * candidate losses (direct estimator)
        codes_dir   (R, N) int32   z_dir(+eps)
        codes_minus (R, N) int32   z_dir(-eps) (two-sided)
    """
    unary: object
    pairwise: object
    kl_grad: object
    perturbed: object
    shifted: object
    codes_dir: object
    codes_minus: object

    @classmethod
    def allocate(cls, xp, shape, batch, samples):
        rows, nk = batch * samples, shape.n_codes
        return cls(xp.zeros((batch, nk), np.float32), xp.zeros((batch, shape.n_pairs), np.float32),
                   xp.zeros((batch, nk), np.float32), xp.zeros((rows, nk), np.float32),
                   xp.zeros((rows, nk), np.float32), xp.zeros((rows, shape.n_latent), np.int32),
                   xp.zeros((rows, shape.n_latent), np.int32))


def shared_code_decoder(shape):
    """True where the direct estimator decodes only the K codes (N = 1, independent categoricals):
    the sampled codes are among them, so no sampled row is decoded on its own."""
    return shape.n_latent == 1 and not shape.is_pairwise


def candidate_arrays(xp, shape, batch, samples, chunk, prune=False):
    """The candidate work arrays of the direct estimator for `shape` (AllCodeArrays for N = 1,
    NeighbourArrays of at most `chunk` rows for N > 1, with pruning's arrays if `prune`)."""
    if shape.n_latent == 1:
        return AllCodeArrays.allocate(xp, batch, shape.n_categories, shape.hidden, shape.pixels)
    total = candidate_count(batch * samples, shape.n_latent, shape.n_categories)
    return NeighbourArrays.allocate(xp, batch * samples, shape.n_latent, shape.hidden, shape.pixels,
                                    max(1, min(total, chunk)), prune)


class TrainWorkspace:
    """Every array one training step of `estimator` reads or writes (see the module docstring
    for the sizes), allocated once:
        x          (B, D)      the batch's targets, gathered into place before each step
        encoder    MLPArrays   encoder.out (B, N*K) are the logits
        dlogits    (B, N*K)    dL/d logits
        kl         (B,)        KL(q(z|x) || uniform) per image
        gumbel     (R, N*K)    the step's Gumbel noise
        codes      (R, N) int32  the sampled codes z_opt (direct) or hard codes (straight-through)
        decoder    CodeDecoderArrays at `codes` (direct, N > 1: with N = 1 the K codes'
                               decoder in `candidates` serves the sampled codes too)
        recon      (R,)        the decoder loss per sampled row
        dout       (R, D)      dL/d (decoder logits) (not for the direct estimator at N = 1)
        losses     (R, N*K)    direct: the candidate losses L[r, n*K + k]; exact: (B, K)
        candidates AllCodeArrays (N = 1: direct and exact) or NeighbourArrays (direct, N > 1)
        dense      MLPArrays   gumbel-softmax: the decoder on relaxed codes (dinputs (R, N*K))
        structured PairwiseArrays  the pairwise model's potentials and arg maxes (direct)
        active     ActiveRowArrays  with `active_rows` (the CPU, direct): the encoder backward
                               on the rows of dlogits that are not all zero
    Arrays an estimator does not use are None. `prune`: the direct estimator's N > 1 neighbours
    get pruning's arrays (NeighbourArrays). For the pairwise model the encoder's output and
    dlogits are (B, 2N + P): unary potentials, then pair pre-activations.
    """

    def __init__(self, xp, shape, estimator, batch, samples=1, candidate_chunk=4096, prune=False,
                 active_rows=False):
        rows, nk, h, d = batch * samples, shape.n_codes, shape.hidden, shape.pixels
        self.batch, self.samples = batch, samples
        self.x = xp.zeros((batch, d), np.float32)
        self.encoder = MLPArrays.allocate(xp, batch, h, shape.encoder_outputs)
        self.dlogits = xp.zeros((batch, shape.encoder_outputs), np.float32)
        self.kl = xp.zeros(batch, np.float32)
        self.gumbel = self.codes = self.decoder = self.recon = self.dout = None
        self.losses = self.candidates = self.dense = None
        self.structured = PairwiseArrays.allocate(xp, shape, batch, samples) if shape.is_pairwise else None
        self.active = (ActiveRowArrays.allocate(xp, batch, shape.encoder_outputs, h, d)
                       if active_rows else None)
        shared_codes = estimator == "direct" and shared_code_decoder(shape)
        if estimator in ("direct", "gumbel-softmax"):
            self.gumbel = xp.zeros((rows, nk), np.float32)
            self.recon = xp.zeros(rows, np.float32)
            if not shared_codes:
                self.dout = xp.zeros((rows, d), np.float32)
        if estimator == "direct":
            self.codes = xp.zeros((rows, shape.n_latent), np.int32)
            if not shared_codes:
                self.decoder = CodeDecoderArrays.allocate(xp, rows, h, d)
            self.losses = xp.zeros((rows, nk), np.float32)
            self.candidates = candidate_arrays(xp, shape, batch, samples, candidate_chunk, prune)
        elif estimator == "exact":
            self.losses = xp.zeros((batch, nk), np.float32)
            self.candidates = candidate_arrays(xp, shape, batch, 1, candidate_chunk)
        elif estimator == "gumbel-softmax":
            self.dense = MLPArrays.allocate(xp, rows, h, d, inputs=nk)

    def nbytes(self):
        return sum(a.nbytes for a in workspace_arrays(self))


class EvalWorkspace:
    """The arrays of one evaluation batch of `batch` images with `samples` Gumbel draws each
    (R = batch * samples rows): the test loss (samples = 1) or the importance-sampled NLL bound.
        x          (B, D)       the batch's targets
        encoder    MLPArrays    encoder.out are the logits
        kl, dlogits (B,), (B, N*K)   KL per image; dlogits is softmax_kl's scratch (grad_scale 0)
        gumbel     (R, N*K), codes (R, N) int32, decoder CodeDecoderArrays at the codes
        recon      (R,), dout (R, D)   decoder loss per row; dout is bce_rows' scratch
        all_codes  AllCodeArrays, N = 1 (the exact NLL), else None
        losses     (B, K)       N = 1: the loss of every code
        structured PairwiseArrays, the pairwise model, else None
        counter    uint64[1]    the Philox counter of the batch's noise
    """

    def __init__(self, xp, shape, batch, samples=1):
        rows, nk, h, d = batch * samples, shape.n_codes, shape.hidden, shape.pixels
        self.batch, self.samples = batch, samples
        self.x = xp.zeros((batch, d), np.float32)
        self.encoder = MLPArrays.allocate(xp, batch, h, shape.encoder_outputs)
        self.kl = xp.zeros(batch, np.float32)
        self.dlogits = xp.zeros((batch, shape.encoder_outputs), np.float32)
        self.structured = PairwiseArrays.allocate(xp, shape, batch, samples) if shape.is_pairwise else None
        self.gumbel = xp.zeros((rows, nk), np.float32)
        self.codes = xp.zeros((rows, shape.n_latent), np.int32)
        self.decoder = CodeDecoderArrays.allocate(xp, rows, h, d)
        self.recon = xp.zeros(rows, np.float32)
        self.dout = xp.zeros((rows, d), np.float32)
        self.all_codes = self.losses = None
        if shape.n_latent == 1:
            self.all_codes = AllCodeArrays.allocate(xp, batch, shape.n_categories, h, d)
            self.losses = xp.zeros((batch, shape.n_categories), np.float32)
        self.counter = xp.zeros(1, np.uint64)


def workspace_arrays(workspace):
    """Every array held by a workspace, its array groups included (for memory accounting and the
    test that a captured graph's arrays stay in place)."""
    found = []
    for value in vars(workspace).values():
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            found.append(value)
        elif hasattr(value, "__dataclass_fields__"):
            found.extend(workspace_arrays(value))
    return found
