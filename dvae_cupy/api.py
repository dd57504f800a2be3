"""A small library API for embedding a trained discrete VAE in array pipelines.

    from dvae_cupy import DiscreteVAE
    vae = DiscreteVAE.load("runs/dvae/best.h5")      # or DiscreteVAE(n_latent=1, n_categories=10)
    codes = vae.encode(images)                       # (n, N) int32, the most likely code
    probs = vae.decode(codes)                        # (n, D) pixel probabilities
    losses = vae.loss(images)                        # (n,) the paper's test loss per image
    codes, probs = vae.sample(16, seed=1)            # codes from the uniform prior, decoded

Inputs are any arrays with the NumPy array protocol (NumPy, h5py datasets, lists, ...) or, on
the GPU backend, CuPy arrays; outputs are the backend's arrays (NumPy on the CPU, CuPy on the
GPU). Work is batched internally (`batch_size`), so inputs may be as large as host memory allows.
"""
import numpy as np

from .backend import get_backend
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluate import Evaluator, eval_seed
from .model import Model, ModelShape


class DiscreteVAE:
    def __init__(self, n_latent=1, n_categories=10, hidden=300, pixels=784, seed=0, backend="auto",
                 batch_size=1000):
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.backend = get_backend(backend)
        self.model = Model(ModelShape(n_latent, n_categories, hidden, pixels), self.backend, seed=seed)
        self.batch_size = int(batch_size)
        self.evaluator = Evaluator(self.model)

    @property
    def shape(self):
        return self.model.shape

    # -----------------------------------------------------------------------------------------
    # Saving and loading (the checkpoint format of dvae-train; best.h5 and checkpoint.h5 both load).

    @classmethod
    def load(cls, path, backend="auto", batch_size=1000):
        checkpoint = load_checkpoint(path)
        checkpoint.check_finite()
        config = checkpoint.config
        pixels = checkpoint.params["enc_w1"].shape[0]
        vae = cls(config["n_latent"], config["n_categories"], config["hidden"], pixels,
                  backend=backend, batch_size=batch_size)
        vae.model.load_params(checkpoint.params)
        return vae

    def save(self, path):
        shape = self.shape
        zeros = {k: np.zeros_like(v) for k, v in self.model.host_params().items()}
        save_checkpoint(path, params=self.model.host_params(), optimizer={"m": zeros, "v": zeros},
                        step=0, epoch=0, eps=0.0, rng_state={}, extra=None,
                        config={"n_latent": shape.n_latent, "n_categories": shape.n_categories,
                                "hidden": shape.hidden})

    # -----------------------------------------------------------------------------------------
    # Input checks and batching.

    def _images(self, x):
        """Any array-like (n, D) in [0, 1] -> this backend's float32 array, checked."""
        xp = self.backend.xp
        x = xp.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.shape.pixels:
            raise ValueError(f"x must have shape (n, {self.shape.pixels}), got {tuple(x.shape)}")
        if not bool(xp.isfinite(x).all()):
            raise ValueError("x contains non-finite values (nan or inf)")
        if x.size and (float(x.min()) < 0 or float(x.max()) > 1):
            raise ValueError("x must hold pixel values in [0, 1]")
        return x

    def _codes(self, codes):
        xp = self.backend.xp
        codes = xp.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.shape.n_latent:
            raise ValueError(f"codes must have shape (n, {self.shape.n_latent}), got {tuple(codes.shape)}")
        if codes.dtype.kind not in "iu":
            raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
        if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= self.shape.n_categories):
            raise ValueError(f"codes must lie in [0, {self.shape.n_categories})")
        return xp.ascontiguousarray(codes, dtype=np.int32)

    def _batched(self, fn, array, batch_size=None):
        """fn(chunk, start) over chunks of the rows, `start` the chunk's first row: random draws
        use the per-image streams (seed, start + i), so every image gets its own noise whatever
        the batch size."""
        xp, size = self.backend.xp, batch_size or self.batch_size
        # Copies: fn returns views of the model's reused work buffers.
        parts = [xp.array(fn(array[i:i + size], i), copy=True) for i in range(0, len(array), size)]
        return xp.concatenate(parts) if parts else fn(array[:0], 0)

    # -----------------------------------------------------------------------------------------
    # The model's functions.

    def logits(self, x):
        """Encoder logits (n, N, K)."""
        x = self._images(x)
        encode = lambda b, _: self.model.encode(b, self.evaluator.workspace(len(b)).encoder)  # noqa: E731
        return self._batched(encode, x).reshape(len(x), self.shape.n_latent, -1)

    def encode(self, x, sample=False, seed=0):
        """Codes (n, N) int32: the arg max of q(z|x), or with sample=True a Gumbel-max draw."""
        x = self._images(x)
        if not sample:
            return self.logits(x).argmax(axis=-1).astype(np.int32)
        return self._batched(lambda b, start: self._sample_codes(b, seed, start), x)

    def _sample_codes(self, x, seed, start):
        model, ws = self.model, self.evaluator.workspace(len(x))
        logits = model.encode(x, ws.encoder)
        ws.counter[...] = start
        model.ops.sample_codes(logits, eval_seed(seed), ws.counter, self.shape.n_categories, 1, True,
                               ws.gumbel, ws.codes)
        return ws.codes

    def decode(self, codes):
        """Pixel probabilities (n, D) of the decoder at integer codes (n, N)."""
        codes = self._codes(codes)
        decode = lambda c, _: self.model.decode_probabilities(c, self.evaluator.workspace(len(c)).decoder)  # noqa: E731
        return self._batched(decode, codes)

    def reconstruct(self, x):
        return self.decode(self.encode(x))

    def loss(self, x, seed=0):
        """The paper's test loss per image (n,): BCE at a Gumbel-max code + KL to the uniform prior."""
        x = self._images(x)
        loss = lambda b, start: self.evaluator.sampled_loss(b, seed, start, per_image=True)  # noqa: E731
        return self._batched(loss, x)

    def nll(self, x, samples=100, seed=0):
        """Marginal -log p(x) per image: exact for N = 1, importance-sampled bound for N > 1."""
        x = self._images(x)
        rows = self.batch_size if self.shape.n_latent == 1 else max(1, self.batch_size // samples)
        nll = lambda b, start: self.evaluator.marginal_nll(b, seed, samples, start, per_image=True)  # noqa: E731
        return self._batched(nll, x, rows)

    def sample(self, n, seed=0):
        """n codes drawn from the uniform prior and their decoded pixel probabilities."""
        if int(n) != n or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        rng = np.random.default_rng(seed)
        codes = rng.integers(0, self.shape.n_categories, size=(int(n), self.shape.n_latent))
        return self.backend.xp.asarray(codes, dtype=np.int32), self.decode(codes)
