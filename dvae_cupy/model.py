"""The discrete VAE's parameters, Adam state and fast forward/backward passes, built from kernels.

Written once against `backend.xp` and `backend.ops` (see backend.py): the same code runs on the
CPU (NumPy + @njit kernels) and the GPU (CuPy + CUDA kernels). float32 throughout; every buffer
is allocated once per batch shape and reused, so a training step allocates nothing.

Layouts (see kernels/ for the ops): logits (B, N*K); Gumbel noise and candidate losses (R, N*K)
with R = B*M rows, row r = b*M + m; codes (R, N) int32. Weights are (fan_in, fan_out).
The gradients the passes produce are the reference's (dvae_cupy/reference.py), in float32.
"""
from dataclasses import asdict, dataclass

import numpy as np

from . import reference
from .kernels.candidates import candidate_count
from .reference import PARAM_NAMES

# Candidate rows decoded at once for N > 1: bounds the (rows x D) workspace to ~12 MB.
DEFAULT_CANDIDATE_CHUNK = 4096


@dataclass(frozen=True)
class ModelShape:
    n_latent: int = 1        # N categorical variables
    n_categories: int = 10   # K values each
    hidden: int = 300        # H units in each MLP's hidden layer
    pixels: int = 784        # D

    def __post_init__(self):
        reference.check_latent_shape(self.n_latent, self.n_categories)
        for name in ("hidden", "pixels"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")

    @property
    def n_codes(self):
        return self.n_latent * self.n_categories

    def as_dict(self):
        return asdict(self)


class Buffers:
    """Named work arrays, allocated on first use and reused while the shape stays the same."""

    def __init__(self, xp):
        self.xp = xp
        self._arrays = {}

    def __call__(self, name, shape, dtype=np.float32):
        array = self._arrays.get(name)
        if array is None or array.shape != tuple(shape) or array.dtype != dtype:
            array = self.xp.empty(shape, dtype=dtype)
            self._arrays[name] = array
        return array

    def nbytes(self):
        return sum(a.nbytes for a in self._arrays.values())


class DVAE:
    """Parameters, gradients and Adam moments on one backend, with the model's fast passes."""

    def __init__(self, shape, backend, seed=0, candidate_chunk=DEFAULT_CANDIDATE_CHUNK):
        self.shape = shape
        self.backend = backend
        self.xp, self.ops = backend.xp, backend.ops
        rng = np.random.default_rng(seed)
        host = reference.init_params(shape.pixels, shape.hidden, shape.n_latent, shape.n_categories, rng)
        # Each of params, grads and the two Adam moments is one flat buffer with the 8 arrays as
        # views into it, so that one Adam launch updates everything.
        sizes = [host[name].size for name in PARAM_NAMES]
        self.flat_params, self.params = self._flat_buffer(sizes)
        self.flat_grads, self.grads = self._flat_buffer(sizes)
        self.flat_m, self.adam_m = self._flat_buffer(sizes)
        self.flat_v, self.adam_v = self._flat_buffer(sizes)
        for name in PARAM_NAMES:
            self.params[name][...] = backend.asarray(host[name])
        self.adam_steps = 0
        self.candidate_chunk = int(candidate_chunk)
        self.buf = Buffers(self.xp)

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
                "enc_w2": (s.hidden, s.n_codes), "enc_b2": (s.n_codes,),
                "dec_w1": (s.n_codes, s.hidden), "dec_b1": (s.hidden,),
                "dec_w2": (s.hidden, s.pixels), "dec_b2": (s.pixels,)}

    # -----------------------------------------------------------------------------------------
    # Parameters in and out (host NumPy dicts), for checkpoints and the reference comparisons.

    def host_params(self):
        return {name: self.backend.to_host(p) for name, p in self.params.items()}

    def load_params(self, params, adam_m=None, adam_v=None, adam_steps=0):
        reference.check_params(params, self.shape.n_categories)
        for target, source in ((self.params, params), (self.adam_m, adam_m), (self.adam_v, adam_v)):
            for name in PARAM_NAMES:
                value = 0.0 if source is None else self.backend.asarray(source[name])
                target[name][...] = value
        self.adam_steps = int(adam_steps)

    # -----------------------------------------------------------------------------------------
    # A dense two-layer MLP, inputs -> H (ReLU) -> outputs: the encoder, and the decoder on
    # relaxed codes. `prefix` names the parameters, `scratch` the work buffers (the decoder on
    # integer codes keeps its own).

    def _mlp_forward(self, inputs, prefix, scratch, width):
        p, buf, xp = self.params, self.buf, self.xp
        hidden = buf(f"{scratch}_hidden", (len(inputs), self.shape.hidden))
        xp.matmul(inputs, p[f"{prefix}_w1"], out=hidden)
        self.ops.bias_act(hidden, p[f"{prefix}_b1"], True)
        out = buf(f"{scratch}_out", (len(inputs), width))
        xp.matmul(hidden, p[f"{prefix}_w2"], out=out)
        self.ops.bias_act(out, p[f"{prefix}_b2"], False)
        return out

    def _mlp_backward(self, inputs, dout, prefix, scratch, input_grad=False):
        """Fills the 4 gradients of `prefix` from dL/d(outputs), using _mlp_forward's buffers;
        returns dL/d(inputs) if asked."""
        p, g, buf, xp = self.params, self.grads, self.buf, self.xp
        hidden = buf(f"{scratch}_hidden", (len(inputs), self.shape.hidden))
        xp.matmul(hidden.T, dout, out=g[f"{prefix}_w2"])
        xp.sum(dout, axis=0, out=g[f"{prefix}_b2"])
        dhidden = buf(f"{scratch}_dhidden", hidden.shape)
        xp.matmul(dout, p[f"{prefix}_w2"].T, out=dhidden)
        self.ops.relu_backward(dhidden, hidden)
        xp.matmul(inputs.T, dhidden, out=g[f"{prefix}_w1"])
        xp.sum(dhidden, axis=0, out=g[f"{prefix}_b1"])
        if not input_grad:
            return None
        dinputs = buf(f"{scratch}_dinputs", inputs.shape)
        xp.matmul(dhidden, p[f"{prefix}_w1"].T, out=dinputs)
        return dinputs

    # Encoder: x (B, D) -> logits (B, N*K).

    def encode_logits(self, x):
        return self._mlp_forward(x, "enc", "enc", self.shape.n_codes)

    def encoder_backward(self, x, dlogits):
        """Fills the 4 encoder gradients from dL/dlogits (B, N*K); uses encode_logits' buffers."""
        self._mlp_backward(x, dlogits, "enc", "enc")

    # -----------------------------------------------------------------------------------------
    # Decoder on integer codes: the first layer is a gather-sum of N rows, never a dense GEMM.

    def decode_codes(self, codes):
        """codes (R, N) int32 -> pixel logits (R, D); keeps the pre-activation for candidates."""
        p, buf, xp = self.params, self.buf, self.xp
        rows = len(codes)
        pre = buf("dec_pre", (rows, self.shape.hidden))
        self.ops.gather_rows_sum(p["dec_w1"], p["dec_b1"], codes, self.shape.n_categories, pre)
        hidden = buf("dec_hidden", pre.shape)
        xp.maximum(pre, 0, out=hidden)
        out = buf("dec_out", (rows, self.shape.pixels))
        xp.matmul(hidden, p["dec_w2"], out=out)
        self.ops.bias_act(out, p["dec_b2"], False)
        return out

    def decoder_backward_codes(self, codes, dout):
        """Fills the 4 decoder gradients from dL/d(pixel logits) at decode_codes' codes."""
        p, g, buf, xp = self.params, self.grads, self.buf, self.xp
        hidden = buf("dec_hidden", (len(codes), self.shape.hidden))
        xp.matmul(hidden.T, dout, out=g["dec_w2"])
        xp.sum(dout, axis=0, out=g["dec_b2"])
        dhidden = buf("dec_dhidden", hidden.shape)
        xp.matmul(dout, p["dec_w2"].T, out=dhidden)
        self.ops.relu_backward(dhidden, hidden)
        self.ops.scatter_rows_add(dhidden, codes, self.shape.n_categories, g["dec_w1"])
        xp.sum(dhidden, axis=0, out=g["dec_b1"])

    # -----------------------------------------------------------------------------------------
    # Decoder on dense (relaxed) codes, for Gumbel-softmax: y (R, N*K) -> pixel logits (R, D).

    def decode_dense(self, codes):
        return self._mlp_forward(codes, "dec", "dense", self.shape.pixels)

    def decoder_backward_dense(self, codes, dout):
        """Fills the decoder gradients; returns dL/dcodes (R, N*K)."""
        return self._mlp_backward(codes, dout, "dec", "dense", input_grad=True)

    # -----------------------------------------------------------------------------------------
    # Candidate losses of the direct estimator: (R, N*K), column n*K+k = the decoder loss with
    # variable n set to k and the others at the sampled code.

    def candidate_losses(self, x, codes, samples, sampled_losses):
        """sampled_losses (R,): the decoder loss at each sampled code, which is also the loss of
        the neighbour that keeps the sampled value (decode_codes must have run at `codes`)."""
        losses = self.buf("losses", (len(codes), self.shape.n_codes))
        if self.shape.n_latent == 1:
            per_point = self.all_code_losses(x)
            losses.reshape(len(x), samples, -1)[...] = per_point[:, None, :]
        else:
            self._neighbour_losses(x, codes, samples, losses)
            self.ops.store_sampled_losses(sampled_losses, codes, self.shape.n_categories, losses)
        return losses

    def all_code_losses(self, x):
        """N = 1: L[b, k] for all K codes. The K codes are shared by the whole batch, so the
        decoder runs once per category and L = S_k - x_b . out_k is one small GEMM."""
        p, buf, xp = self.params, self.buf, self.xp
        hidden = self.code_hidden()
        out = buf("code_out", (self.shape.n_categories, self.shape.pixels))
        xp.matmul(hidden, p["dec_w2"], out=out)  # without the bias, which the sums add
        softplus_sums = buf("code_softplus", (self.shape.n_categories,))
        self.ops.softplus_row_sums(out, p["dec_b2"], softplus_sums)
        losses = buf("code_losses", (len(x), self.shape.n_categories))
        xp.matmul(x, out.T, out=losses)
        losses += (x @ p["dec_b2"])[:, None]
        xp.subtract(softplus_sums, losses, out=losses)
        return losses

    def code_hidden(self):
        """N = 1: the decoder's hidden layer for each of the K codes, relu(W1[k] + b1): (K, H)."""
        hidden = self.buf("code_hidden", (self.shape.n_categories, self.shape.hidden))
        self.xp.add(self.params["dec_w1"], self.params["dec_b1"], out=hidden)
        self.xp.maximum(hidden, 0, out=hidden)
        return hidden

    def _neighbour_losses(self, x, codes, samples, losses):
        """N > 1: a neighbour's pre-activation is a - W1[n, z_n] + W1[n, k] (O(H)); the x-linear
        part of its BCE is (W2 x_b) . h' + x_b . b2 (O(H)); only sum softplus(out') needs the
        H x D product, done in chunks of candidate rows so memory stays bounded. The K-1 values
        other than the sampled one are the candidates (kernels/candidates.py)."""
        p, buf, xp, ops = self.params, self.buf, self.xp, self.ops
        rows, hidden_units = len(codes), self.shape.hidden
        linear_w2 = buf("cand_u", (len(x), hidden_units))
        xp.matmul(x, p["dec_w2"].T, out=linear_w2)
        linear_b2 = x @ p["dec_b2"]
        if samples > 1:
            linear_w2 = xp.repeat(linear_w2, samples, axis=0)
            linear_b2 = xp.repeat(linear_b2, samples)
        pre = buf("dec_pre", (rows, hidden_units))  # left by decode_codes at these codes
        k = self.shape.n_categories
        total = candidate_count(rows, self.shape.n_latent, k)
        chunk = min(total, self.candidate_chunk)
        hidden = buf("cand_hidden", (chunk, hidden_units))
        out = buf("cand_out", (chunk, self.shape.pixels))
        linear = buf("cand_linear", (chunk,))
        softplus_sums = buf("cand_softplus", (chunk,))
        for start in range(0, total, chunk):
            count = min(chunk, total - start)
            ops.neighbour_hidden(pre, p["dec_w1"], codes, k, linear_w2, start, count,
                                 hidden[:count], linear[:count])
            xp.matmul(hidden[:count], p["dec_w2"], out=out[:count])
            ops.softplus_row_sums(out[:count], p["dec_b2"], softplus_sums[:count])
            ops.store_candidate_losses(softplus_sums[:count], linear[:count], linear_b2, codes, k,
                                       start, losses)

    # -----------------------------------------------------------------------------------------
    # The optimiser.

    def adam_update(self, lr, beta1=0.9, beta2=0.999, eps=1e-8, step=None):
        """One Adam step on all 8 arrays at once (they share flat buffers). `step` (1-based) is
        the host's count by default; a 1-element device array when a CUDA graph replays it."""
        if step is None:
            self.adam_steps += 1
            step = self.adam_steps
        self.ops.adam_update(self.flat_params, self.flat_grads, self.flat_m, self.flat_v,
                             lr, beta1, beta2, eps, step)
