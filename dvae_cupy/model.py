"""The discrete VAE's parameters, gradients and Adam state, and its fast forward/backward passes.

Written once against `backend.xp` and `backend.ops` (see backend.py): the same code runs on the
CPU (NumPy + @njit kernels) and the GPU (CuPy + CUDA kernels). float32 throughout. Every pass
takes the arrays it reads and writes as arguments (the workspaces of dvae_cupy/workspace.py)
and returns what it computed; it allocates nothing but the small temporaries named where they
occur.

Layouts (see kernels/ for the ops): logits (B, N*K); Gumbel noise and candidate losses (R, N*K)
with R = B*M rows, row r = b*M + m; codes (R, N) int32. Weights are (fan_in, fan_out).
The gradients the passes produce are the reference's (dvae_cupy/reference.py), in float32.
"""
from dataclasses import dataclass

import numpy as np

from . import reference
from .kernels.candidates import candidate_count
from .reference import PARAM_NAMES


LATENT_STRUCTURES = ("categorical", "pairwise")


@dataclass(frozen=True)
class ModelShape:
    n_latent: int = 1        # N latent variables
    n_categories: int = 10   # K values each (2 for the pairwise model)
    hidden: int = 300        # H units in each MLP's hidden layer
    pixels: int = 784        # D
    structure: str = "categorical"  # independent categoricals, or the pairwise binary model
    pairwise: str = "attractive"    # pairwise model: potentials >= 0 (min-cut) or any sign (enumeration)

    def __post_init__(self):
        reference.check_latent_shape(self.n_latent, self.n_categories)
        for name in ("hidden", "pixels"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.structure not in LATENT_STRUCTURES:
            raise ValueError(f"latent_structure must be one of {LATENT_STRUCTURES}, got {self.structure!r}")
        if self.is_pairwise:
            if self.n_categories != 2:
                raise ValueError(f"the pairwise model's latent variables are binary: n_categories "
                                 f"(--categories, -K) is 2, got {self.n_categories}")
            try:
                reference.check_pairwise_model(self.n_latent, self.pairwise)
            except ValueError as error:  # in the option's name
                message = str(error).replace("n_vars", "n_latent (--latent-vars, -N)")
                raise ValueError(message.replace("mode must", "pairwise (--pairwise) must", 1)) from None

    @property
    def is_pairwise(self):
        return self.structure == "pairwise"

    @property
    def n_codes(self):
        """Width of the decoder's one-hot input: N*K."""
        return self.n_latent * self.n_categories

    @property
    def n_pairs(self):
        return reference.pair_count(self.n_latent) if self.is_pairwise else 0

    @property
    def encoder_outputs(self):
        """Width of the encoder's output: N*K logits, or (pairwise) N*2 unary potentials and
        then N(N-1)/2 pairwise pre-activations, pairs i < j in row-major order."""
        return self.n_codes + self.n_pairs


class Model:
    """Parameters, gradients and Adam moments on one backend, with the model's fast passes."""

    def __init__(self, shape, backend, seed=0):
        self.shape = shape
        self.backend = backend
        self.xp, self.ops = backend.xp, backend.ops
        rng = np.random.default_rng(seed)
        if shape.is_pairwise:
            host = reference.init_structured_params(shape.pixels, shape.hidden, shape.n_latent,
                                                    shape.pairwise, rng)
        else:
            host = reference.init_params(shape.pixels, shape.hidden, shape.n_latent,
                                         shape.n_categories, rng)
        # Each of params, grads and the two Adam moments is one flat buffer with the 8 arrays as
        # views into it, so that one Adam launch updates everything.
        sizes = [host[name].size for name in PARAM_NAMES]
        self.flat_params, self.params = self._flat_buffer(sizes)
        self.flat_grads, self.grads = self._flat_buffer(sizes)
        self.flat_m, self.adam_m = self._flat_buffer(sizes)
        self.flat_v, self.adam_v = self._flat_buffer(sizes)
        for name in PARAM_NAMES:
            self.params[name][...] = backend.asarray(host[name])

    def _flat_buffer(self, sizes):
        flat = self.xp.zeros(sum(sizes), dtype=np.float32)
        views, offset = {}, 0
        for name, size in zip(PARAM_NAMES, sizes):
            views[name] = flat[offset:offset + size].reshape(self.param_shapes[name])
            offset += size
        return flat, views

    @property
    def param_shapes(self):
        s = self.shape
        return {"enc_w1": (s.pixels, s.hidden), "enc_b1": (s.hidden,),
                "enc_w2": (s.hidden, s.encoder_outputs), "enc_b2": (s.encoder_outputs,),
                "dec_w1": (s.n_codes, s.hidden), "dec_b1": (s.hidden,),
                "dec_w2": (s.hidden, s.pixels), "dec_b2": (s.pixels,)}

    def nbytes(self):
        """Bytes of the parameters, gradients and Adam moments."""
        return sum(a.nbytes for a in (self.flat_params, self.flat_grads, self.flat_m, self.flat_v))

    # -----------------------------------------------------------------------------------------
    # Parameters in and out (host NumPy dicts), for checkpoints and the reference comparisons.

    def host_params(self):
        return {name: self.backend.to_host(p) for name, p in self.params.items()}

    def host_adam_moments(self):
        return ({k: self.backend.to_host(v) for k, v in self.adam_m.items()},
                {k: self.backend.to_host(v) for k, v in self.adam_v.items()})

    def load_params(self, params, adam_m=None, adam_v=None):
        if self.shape.is_pairwise:
            reference.check_structured_params(params, self.shape.n_latent)
        else:
            reference.check_params(params, self.shape.n_categories)
        for target, source in ((self.params, params), (self.adam_m, adam_m), (self.adam_v, adam_v)):
            for name in PARAM_NAMES:
                value = 0.0 if source is None else self.backend.asarray(source[name])
                target[name][...] = value

    # -----------------------------------------------------------------------------------------
    # A dense two-layer MLP, inputs -> H (ReLU) -> outputs: the encoder, and the decoder on
    # relaxed codes. `prefix` names the parameters.

    def _mlp_forward(self, inputs, prefix, arrays, output_bias):
        p, xp = self.params, self.xp
        xp.matmul(inputs, p[f"{prefix}_w1"], out=arrays.hidden)
        self.ops.bias_act(arrays.hidden, p[f"{prefix}_b1"], True)
        xp.matmul(arrays.hidden, p[f"{prefix}_w2"], out=arrays.out)
        if output_bias:
            self.ops.bias_act(arrays.out, p[f"{prefix}_b2"], False)
        return arrays.out

    def _mlp_backward(self, inputs, arrays, dout, prefix):
        """Fills the 4 gradients of `prefix` from dL/d(outputs) at _mlp_forward's `arrays`, and
        dL/d(inputs) into arrays.dinputs when there is one."""
        p, xp = self.params, self.xp
        xp.matmul(dout, p[f"{prefix}_w2"].T, out=arrays.dhidden)
        self._mlp_weight_grads(inputs, arrays.hidden, arrays.dhidden, dout, prefix)
        if arrays.dinputs is not None:
            xp.matmul(arrays.dhidden, p[f"{prefix}_w1"].T, out=arrays.dinputs)

    def _mlp_weight_grads(self, inputs, hidden, dhidden, dout, prefix):
        """The 4 gradients of `prefix`, sums over the rows of inputs, hidden (post-ReLU), dhidden
        (dL/d hidden, masked here by the ReLU) and dout (dL/d outputs)."""
        g, xp = self.grads, self.xp
        xp.matmul(hidden.T, dout, out=g[f"{prefix}_w2"])
        xp.sum(dout, axis=0, out=g[f"{prefix}_b2"])
        self.ops.relu_backward(dhidden, hidden, g[f"{prefix}_b1"])
        xp.matmul(inputs.T, dhidden, out=g[f"{prefix}_w1"])

    # Encoder: x (B, D) -> logits (B, N*K), or the pairwise model's potentials (B, 2N + P).

    def encode(self, x, encoder):
        """The encoder's output (B, encoder_outputs), written into encoder.out (an MLPArrays for
        B rows): the logits, or the pairwise model's unary potentials and pair pre-activations."""
        return self._mlp_forward(x, "enc", encoder, output_bias=True)

    def pairwise_potentials(self, enc_out, pairwise):
        """Pairwise model: the encoder's output split into unary (B, 2N) and pairwise (B, P)
        potentials (softplus of the pre-activations when attractive): a PairwiseArrays."""
        shape = self.shape
        self.ops.split_potentials(enc_out, shape.n_latent, shape.pairwise == "attractive",
                                  pairwise.unary, pairwise.pairwise)
        return pairwise.unary, pairwise.pairwise

    def most_likely_codes(self, enc_out, ws):
        """The arg max code of each image (B, N) int32, into ws.codes (an evaluation workspace):
        per variable for independent categoricals, the structured arg max of the unperturbed
        score for the pairwise model."""
        rows = len(enc_out)
        if self.shape.is_pairwise:
            unary, pairwise = self.pairwise_potentials(enc_out, ws.structured)
            return self.structured_argmax(unary, pairwise, 1, ws.codes[:rows])
        ws.codes[:rows] = enc_out.reshape(rows, self.shape.n_latent, -1).argmax(axis=-1)
        return ws.codes[:rows]

    def structured_argmax(self, scores, pairwise, samples, codes):
        """codes (R, N) = arg max_z sum_i scores[r, 2i + z_i] + sum_{i<j} pairwise[r // M, ij] z_i z_j,
        exactly: a min-cut for attractive potentials, enumeration of the 2^N codes for signed."""
        solve = self.ops.mincut_argmax if self.shape.pairwise == "attractive" else self.ops.enumeration_argmax
        solve(scores, pairwise, samples, codes)
        return codes

    def structured_argmax_listed(self, scores, pairwise, samples, rows, count, codes):
        """structured_argmax for rows[:count] only (the CPU: the pruning's re-solves)."""
        attractive = self.shape.pairwise == "attractive"
        solve = self.ops.mincut_argmax_listed if attractive else self.ops.enumeration_argmax_listed
        solve(scores, pairwise, samples, rows, count, codes)
        return codes

    def encoder_backward(self, x, encoder, dlogits, active=None):
        """Fills the 4 encoder gradients from dL/dlogits (B, N*K), at encode's `encoder`.
        active (an ActiveRowArrays, the CPU): the sums over the batch run on the rows of dlogits
        that are not all zero, gathered, when there are at most active.limit of them; the same
        numbers, bit for bit, without the zero rows' terms (kernels/active_rows.py). dH is made
        on the whole batch either way: BLAS adds a few rows' products in another order."""
        if active is None:
            self._mlp_backward(x, encoder, dlogits, "enc")
            return
        self.xp.matmul(dlogits, self.params["enc_w2"].T, out=encoder.dhidden)
        batch = (dlogits, encoder.hidden, encoder.dhidden, x)
        gathered = (active.dout, active.hidden, active.dhidden, active.inputs)
        count = self.ops.gather_active_rows(dlogits, active.limit, active.rows, batch, gathered)
        dout, hidden, dhidden, inputs = (
            [a[:count] for a in gathered] if count <= active.limit else batch)
        active.seen += len(dlogits)
        active.gathered += len(dout)
        self._mlp_weight_grads(inputs, hidden, dhidden, dout, "enc")

    # -----------------------------------------------------------------------------------------
    # Decoder on integer codes: the first layer is a gather-sum of N rows, never a dense GEMM.

    def decode_codes(self, codes, decoder):
        """codes (R, N) int32 -> decoder.out (R, D), the pixel logits WITHOUT dec_b2 (the loss
        kernels add it); decoder.pre and decoder.hidden hold the first layer."""
        p = self.params
        self.ops.gather_rows_sum(p["dec_w1"], p["dec_b1"], codes, self.shape.n_categories,
                                 decoder.pre, decoder.hidden)
        self.xp.matmul(decoder.hidden, p["dec_w2"], out=decoder.out)
        return decoder.out

    def decoder_hidden_grad(self, decoder, dout):
        """decoder.dhidden = dL/d(hidden) = dout @ dec_w2^T at decode_codes' codes, from dL/d(pixel
        logits) (R, D): before the candidates, whose pruning uses it (the tangent of the loss)."""
        self.xp.matmul(dout, self.params["dec_w2"].T, out=decoder.dhidden)

    def decoder_backward_codes(self, codes, decoder, dout):
        """Fills the 4 decoder gradients from dL/d(pixel logits) (R, D) at decode_codes' codes and
        decoder_hidden_grad's decoder.dhidden."""
        g, xp = self.grads, self.xp
        xp.matmul(decoder.hidden.T, dout, out=g["dec_w2"])
        xp.sum(dout, axis=0, out=g["dec_b2"])
        self.ops.scatter_rows_add(decoder.dhidden, decoder.hidden, codes, self.shape.n_categories,
                                  g["dec_w1"], g["dec_b1"])

    def decode_probabilities(self, codes, decoder):
        """Pixel probabilities (R, D) at integer codes (a new array; decoder.out holds the logits)."""
        out = self.decode_codes(codes, decoder)
        self.ops.bias_act(out, self.params["dec_b2"], False)
        return pixel_probabilities(self.xp, out)

    # -----------------------------------------------------------------------------------------
    # Decoder on dense (relaxed) codes, for Gumbel-softmax: y (R, N*K) -> pixel logits (R, D),
    # without dec_b2 (bce_rows adds it).

    def decode_dense(self, codes, dense):
        return self._mlp_forward(codes, "dec", dense, output_bias=False)

    def decoder_backward_dense(self, codes, dense, dout):
        """Fills the decoder gradients; returns dL/dcodes (R, N*K) (dense.dinputs)."""
        self._mlp_backward(codes, dense, dout, "dec")
        return dense.dinputs

    # -----------------------------------------------------------------------------------------
    # Candidate losses of the direct estimator: (R, N*K), column n*K+k = the decoder loss with
    # variable n set to k and the others at the sampled code.

    def candidate_losses(self, x, codes, samples, sampled_losses, decoder, candidates, losses,
                         pruning=None):
        """Fills `losses` (R, N*K). sampled_losses (R,): the decoder loss at each sampled code,
        also the loss of the neighbour that keeps the sampled value; decoder: decode_codes'
        arrays at `codes` (N > 1 neighbours start from its pre-activation).
        pruning (N > 1, the CPU): a Pruning; the neighbours that cannot be z_dir(+eps) are not
        decoded and get +inf (kernels/neighbour_pruning.py). It needs decoder.dhidden
        (decoder_hidden_grad) and candidates allocated with prune=True."""
        if self.shape.n_latent == 1:
            self.all_code_losses(x, candidates, samples, losses)
            return losses
        self._neighbour_linear_parts(x, samples, candidates)
        if pruning is None:
            self._neighbour_losses(codes, decoder.pre, candidates, losses)
        else:
            self._pruned_neighbour_losses(codes, samples, sampled_losses, decoder, candidates,
                                          losses, pruning)
        self.ops.store_sampled_losses(sampled_losses, codes, self.shape.n_categories, losses)
        return losses

    def pruned_structured_direct_codes(self, x, codes, samples, sampled_losses, decoder,
                                       neighbours, losses, structured, eps, grad_scale):
        """The pairwise model's z_dir(+eps) into structured.codes_dir, decoding only the
        neighbours it can need (kernels/structured_pruning.py): the same codes as
        candidate_losses, shift_unaries and structured_argmax. `losses` ends with the decoded
        neighbours' losses and the other neighbours' lower bounds. The CPU, one-sided; needs
        decoder.dhidden (decoder_hidden_grad) and neighbours allocated with prune=True."""
        p, ops, nb, st = self.params, self.ops, neighbours, structured
        self._neighbour_linear_parts(x, samples, nb)
        ops.prune_rows(decoder.hidden, decoder.dhidden, p["dec_w2"], p["dec_b2"], grad_scale,
                       nb.margin_w, nb.margin_m, nb.v_z)
        ops.neighbour_loss_bounds(decoder.pre, p["dec_w1"], codes, nb.u, decoder.dhidden,
                                  nb.margin_w, nb.margin_m, nb.v_z, sampled_losses, grad_scale,
                                  nb.hidden[:1], losses, nb.decoded_mask)
        trial = st.codes_dir
        ops.shift_unaries(st.perturbed, losses, eps, False, st.shifted)
        ops.single_flip_codes(st.shifted, st.pairwise, samples, codes, trial)
        decoded, _ = self._decode_flipped_neighbours(codes, trial, decoder, nb, losses)
        ops.shift_unaries(st.perturbed, losses, eps, False, st.shifted)
        self.structured_argmax(st.shifted, st.pairwise, samples, trial)
        while True:  # decode what the solved rows flip undecoded, then solve those rows again
            count, rows = self._decode_flipped_neighbours(codes, trial, decoder, nb, losses)
            decoded += count
            if rows == 0:
                break
            ops.shift_unaries(st.perturbed, losses, eps, False, st.shifted)
            self.structured_argmax_listed(st.shifted, st.pairwise, samples, nb.rows, rows, trial)
        total = candidate_count(len(codes), self.shape.n_latent, 2)
        nb.decoded += decoded
        nb.skipped += total - decoded
        return trial

    def _decode_flipped_neighbours(self, codes, trial, decoder, nb, losses):
        """The exact losses of the neighbours `trial` flips that are not decoded yet, into
        `losses`; returns (how many, how many rows: nb.rows[:rows])."""
        p, ops = self.params, self.ops
        total = candidate_count(len(codes), self.shape.n_latent, 2)
        start = rows = decoded = 0
        while start < total:
            count, start, rows = ops.list_flipped_neighbours(
                decoder.pre, p["dec_w1"], codes, trial, nb.u, start, nb.hidden, nb.linear,
                nb.ids, nb.decoded_mask, nb.rows, rows)
            self._listed_neighbour_losses(codes, nb, count, losses)
            decoded += count
        return decoded, rows

    def _listed_neighbour_losses(self, codes, nb, count, losses):
        """The losses of the `count` neighbours listed in nb.hidden/linear/ids (by
        select_neighbours or list_flipped_neighbours): the H x D product, then the softplus sums."""
        if count:
            p = self.params
            out = nb.out[:count]
            self.xp.matmul(nb.hidden[:count], p["dec_w2"], out=out)
            self.ops.store_listed_candidate_losses(out, p["dec_b2"], nb.linear[:count],
                                                   nb.linear_b2, codes, self.shape.n_categories,
                                                   nb.ids[:count], losses)

    def all_code_losses(self, x, all_codes, samples, losses):
        """N = 1: losses[b*M + m, k] = L(x_b, code k) for all K codes. The K codes are shared by
        the whole batch, so the decoder runs once per category and L = S_k - x_b . out_k is one
        small GEMM. all_codes: an AllCodeArrays; losses (B*samples, K)."""
        p, xp = self.params, self.xp
        out = self.decode_codes(all_codes.codes, all_codes.decoder)  # without the bias
        xp.matmul(x, out.T, out=all_codes.xo)
        xp.matmul(x, p["dec_b2"], out=all_codes.xb2)
        self.ops.code_losses(out, p["dec_b2"], all_codes.xo, all_codes.xb2, samples, losses)
        return losses

    def _neighbour_linear_parts(self, x, samples, neighbours):
        """N > 1: the x-linear part of a neighbour's BCE is (W2 x_b) . h' + x_b . b2 (O(H) per
        neighbour): u = x @ W2^T and x @ b2, one row per sampled code."""
        p, xp = self.params, self.xp
        u, linear_b2 = neighbours.u, neighbours.linear_b2
        if samples == 1:
            xp.matmul(x, p["dec_w2"].T, out=u)
            xp.matmul(x, p["dec_b2"], out=linear_b2)
        else:  # one row per sampled code: x's row repeated M times (temporaries, M > 1 only)
            u[...] = xp.repeat(x @ p["dec_w2"].T, samples, axis=0)
            linear_b2[...] = xp.repeat(x @ p["dec_b2"], samples)

    def _neighbour_losses(self, codes, pre, neighbours, losses):
        """N > 1: a neighbour's pre-activation is a - W1[n, z_n] + W1[n, k] (O(H)); only sum
        softplus(out') needs the H x D product, done in chunks of candidate rows so memory stays
        bounded. The K-1 values other than the sampled one are the candidates
        (kernels/candidates.py)."""
        p, xp, ops, k = self.params, self.xp, self.ops, self.shape.n_categories
        total = candidate_count(len(codes), self.shape.n_latent, k)
        chunk = neighbours.chunk
        for start in range(0, total, chunk):
            count = min(chunk, total - start)
            hidden, out, linear = neighbours.hidden[:count], neighbours.out[:count], neighbours.linear[:count]
            ops.neighbour_hidden(pre, p["dec_w1"], codes, k, neighbours.u, start, count, hidden,
                                 linear)
            xp.matmul(hidden, p["dec_w2"], out=out)
            ops.store_candidate_losses(out, p["dec_b2"], linear, neighbours.linear_b2, codes, k,
                                       start, losses)

    def _pruned_neighbour_losses(self, codes, samples, sampled_losses, decoder, neighbours, losses,
                                 pruning):
        """_neighbour_losses without the neighbours that cannot be z_dir(+eps): each chunk is
        filled with kept neighbours only (select_neighbours), the skipped ones' losses are +inf."""
        p, ops, k = self.params, self.ops, self.shape.n_categories
        nb = neighbours
        ops.prune_rows(decoder.hidden, decoder.dhidden, p["dec_w2"], p["dec_b2"],
                       pruning.grad_scale, nb.margin_w, nb.margin_m, nb.v_z)
        total = candidate_count(len(codes), self.shape.n_latent, k)
        start = kept = 0
        while start < total:
            count, start = ops.select_neighbours(
                decoder.pre, p["dec_w1"], codes, k, nb.u, decoder.dhidden, nb.margin_w,
                nb.margin_m, nb.v_z, sampled_losses, pruning.logits, pruning.gumbel, samples,
                pruning.eps, pruning.grad_scale, start, nb.hidden, nb.linear, nb.ids, losses)
            self._listed_neighbour_losses(codes, nb, count, losses)
            kept += count
        nb.decoded += kept
        nb.skipped += total - kept

    def decoder_backward_all_codes(self, weights, x, all_codes):
        """N = 1, the exact estimator: fills the 4 decoder gradients of sum_b sum_k weights[b, k]
        L(x_b, code k) / B, from all_code_losses' arrays. dL/d out_k = sum_b w_bk (sigmoid(o_k)
        - x_b) / B, with o_k the K codes' logits. Written with array ops (temporaries): the
        exact estimator is the baseline, not the hot path."""
        xp, p = self.xp, self.params
        decoder, batch = all_codes.decoder, len(x)
        sigmoid = pixel_probabilities(xp, decoder.out + p["dec_b2"])
        dout = ((weights.sum(axis=0)[:, None] * sigmoid - weights.T @ x) / batch).astype(np.float32)
        self._decoder_backward_k_codes(all_codes, dout)

    def decoder_backward_sampled_codes(self, x, codes, samples, grad_scale, all_codes):
        """N = 1, the direct estimator: fills the 4 decoder gradients of grad_scale * sum_r
        L(x_{r // M}, codes[r]), from all_code_losses' arrays. Every sampled code is one of the
        K codes, so dL/d(logits) is summed per code into all_codes.dout (K, D) and the products
        run on K rows, not on the B*M sampled rows."""
        self.ops.sampled_code_grads(all_codes.decoder.out, self.params["dec_b2"], x, codes,
                                    samples, grad_scale, all_codes.dout)
        self._decoder_backward_k_codes(all_codes, all_codes.dout)

    def _decoder_backward_k_codes(self, all_codes, dout):
        """The decoder gradients from dL/d(logits) (K, D) of the K codes, at all_code_losses'
        arrays."""
        xp, p, g = self.xp, self.params, self.grads
        decoder = all_codes.decoder
        xp.matmul(decoder.hidden.T, dout, out=g["dec_w2"])
        xp.sum(dout, axis=0, out=g["dec_b2"])
        # dhidden^T = dec_w2 @ dout^T: OpenBLAS runs this (H, D) @ (D, K) product into a C-ordered
        # (H, K) about twice as fast as (K, D) @ (D, H)^T (10 codes: ~70 against ~135 us)
        xp.matmul(p["dec_w2"], dout.T, out=all_codes.dhidden_t)
        decoder.dhidden[...] = all_codes.dhidden_t.T
        # the K codes are the identity rows: the scatter puts row k of dhidden into dec_w1[k]
        self.ops.scatter_rows_add(decoder.dhidden, decoder.hidden, all_codes.codes,
                                  self.shape.n_categories, g["dec_w1"], g["dec_b1"])

    # -----------------------------------------------------------------------------------------
    # The optimiser.

    def adam_update(self, lr, adam_step, beta1=0.9, beta2=0.999, eps=1e-8):
        """One Adam step on all 8 arrays at once (they share flat buffers). `adam_step`: a
        1-element int64 array on the backend holding the 1-based step of this update."""
        self.ops.adam_update(self.flat_params, self.flat_grads, self.flat_m, self.flat_v,
                             lr, beta1, beta2, eps, adam_step)


@dataclass(frozen=True)
class Pruning:
    """What pruning the direct estimator's neighbours needs besides the decoder's arrays: the
    arg max's inputs (logits (B, N*K), the Gumbel noise (R, N*K), eps float32[1]) and the scale
    bce_rows applied to the sampled rows' gradient (dhidden's scale)."""
    logits: object
    gumbel: object
    eps: object
    grad_scale: float


def categorical_probabilities(xp, logits):
    """softmax over the last axis (each variable's K values), stabilised by the maximum: the one
    softmax of the array code (the kernels have their own)."""
    q = xp.exp(logits - logits.max(axis=-1, keepdims=True))
    q /= q.sum(axis=-1, keepdims=True)
    return q


def pixel_probabilities(xp, logits):
    """sigmoid(logits) on any backend, written as the reference writes it, 0.5 (1 + tanh(o / 2)):
    no overflow for any o. The one sigmoid of the array code (the kernels have their own)."""
    return 0.5 * (1.0 + xp.tanh(0.5 * logits))
