"""The library API: a discrete VAE to train on the user's own arrays and embed in array pipelines.

    from dvae_cupy import DiscreteVAE
    vae = DiscreteVAE(n_latent=1, n_categories=10, epochs=10).fit(images)   # any (n, D) or (n, H, W)
    codes = vae.encode(images)                       # (n, N) int32, the most likely code
    probs = vae.decode(codes)                        # (n, D) pixel probabilities
    losses = vae.loss(images)                        # (n,) the paper's test loss per image
    vae = DiscreteVAE.load("runs/dvae/best.h5")      # a model dvae-train (or fit(out=...)) saved

`fit` is dvae-train's training (the same Trainer, options, schedules and results: see
config.py); with `out=` it writes the same run folder, else no files at all.

It follows the scikit-learn estimator protocol without importing scikit-learn: the constructor
only stores its arguments (get_params/set_params see them all), `fit(X, y=None)` returns self,
`transform(X)` gives codes (or one-hot codes with one_hot=True, for a linear model downstream),
`inverse_transform(codes)` pixel probabilities, `score(X)` minus the mean test loss (higher is
better). Fitted state ends in an underscore: model_, backend_, history_ (the per-epoch metrics;
a loaded model has those its file holds), image_shape_, n_features_in_.

Inputs: any array-like (NumPy arrays, memory maps, h5py datasets, lists, CuPy arrays on the GPU
backend, and anything with __dlpack__ such as a PyTorch or JAX tensor: taken without a copy where
the backend allows), shaped (n, D) or (n, H, W), with the data layer's pixels (data.py): uint8
(or any integer type) 0..255 or 0/1, bool, or floats in [0, 1]. Every method that takes images
accepts what fit accepts and gives the model the targets fit's evaluation gives it for x_valid
and x_test: an array whose values are all 0 or 1 as it is; any other (grey) array thresholded,
integers at >= 128 and floats at rint(p * 255) >= 128, i.e. p >= 0.5, whichever binarization
trained the model (the dynamic one draws its Bernoulli pixels for training batches only). With
binarization="none" grey input is refused, as fit refuses it. The evaluation methods read their
input in batches of eval_batch_size rows, so an h5py dataset or a memory map larger than memory
streams through in bounded memory (an integer array of 0/1 values is read twice: whether it is
0/1 or grey is a property of the whole array). An empty input (n = 0) gives an empty output of
the right shape from every method. Bad input (including scipy.sparse matrices) raises a
ValueError naming the argument. Outputs are the backend's arrays (NumPy on the CPU, CuPy on the
GPU).

Integer parameters (n_latent, n_categories, hidden, pixels, epochs, batch_size, gumbel_samples,
anneal_every, seed, eval_batch_size) may be given as integral floats (2.0) or NumPy integers and
are used as int; anything else is a ValueError naming the parameter, raised when it is used.
"""
import inspect
import json
import math
import numbers
import warnings

import numpy as np

from .backend import get_backend
from .checkpoint import load_checkpoint, save_checkpoint
from .config import BINARIZATIONS, TrainConfig
from .data import binarize_fixed, make_splits
from .errors import NotFittedError
from .evaluate import Evaluator, eval_seed
from .model import Model, categorical_probabilities

FIT_BINARIZATIONS = BINARIZATIONS + ("none",)  # "none": the data are already 0/1
# The integer parameters and their smallest values; n_categories and pixels may also be None.
INTEGER_PARAMS = {"n_latent": 1, "n_categories": 2, "hidden": 1, "pixels": 1, "epochs": 0,
                  "batch_size": 1, "gumbel_samples": 1, "anneal_every": 1, "seed": 0,
                  "eval_batch_size": 1}
OPTIONAL_PARAMS = ("n_categories", "pixels")
MACHINE_CHOICES = ("backend", "eval_batch_size", "cuda_graph", "progress")  # load: the caller's
PIXEL_RULE = "pixels must be uint8 0..255 or 0/1, bool, or floats in [0, 1]"  # data.py's rule


def one_hot(codes, n_categories, xp=np):
    """Integer codes (n, N) -> one-hot float32 (n, N * K), variable n in columns n*K .. n*K+K-1."""
    codes = xp.asarray(codes)
    return (codes[..., None] == xp.arange(n_categories)).reshape(len(codes), -1).astype(np.float32)


class DiscreteVAE:
    def __init__(self, n_latent=1, n_categories=None, hidden=300, pixels=None, *,
                 latent_structure="categorical", pairwise="attractive", estimator="direct",
                 epochs=10, batch_size=100, lr=1e-3, gumbel_samples=1, two_sided=False,
                 kl_backprop=False, straight_through=False, eps0=1.0, eps_anneal_rate=1e-5,
                 eps_min=0.1, tau0=1.0, tau_anneal_rate=1e-5, tau_min=0.5, anneal_every=500,
                 binarization="fixed", seed=0, backend="auto", eval_batch_size=1000,
                 cuda_graph=False, one_hot=False, progress=True):
        """Every argument is stored as given and checked when it is used (fit, or the first
        use of an unfitted model with `pixels` given): scikit-learn's clone relies on that.
        The training options are dvae-train's (README's options table); pixels = D is taken
        from the data by fit, or may be given for an untrained model. n_categories None is 10,
        or 2 for latent_structure="pairwise" (the paper's structured model)."""
        for name, value in locals().items():
            if name != "self":
                setattr(self, name, value)

    # -----------------------------------------------------------------------------------------
    # The estimator protocol.

    @classmethod
    def _param_names(cls):
        return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]

    def get_params(self, deep=True):
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        unknown = sorted(set(params) - set(self._param_names()))
        if unknown:
            raise ValueError(f"unknown parameter {', '.join(map(repr, unknown))} for DiscreteVAE; "
                             f"the parameters are {', '.join(self._param_names())}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __sklearn_tags__(self):
        """scikit-learn's description of this estimator (imported only when scikit-learn asks):
        an unsupervised transformer of non-negative 2-D arrays (pixels, in [0, 1])."""
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False),
                    transformer_tags=TransformerTags(preserves_dtype=[]),
                    input_tags=InputTags(positive_only=True), requires_fit=True)

    def __repr__(self):
        changed = {k: v for k, v in self.get_params().items()
                   if v != inspect.signature(type(self).__init__).parameters[k].default}
        return f"DiscreteVAE({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def train_config(self, out=None):
        """The TrainConfig of this estimator's parameters (validated)."""
        self._binarization()
        names = {f for f in TrainConfig.__dataclass_fields__}
        values = {k: v for k, v in self._checked_params().items() if k in names and k != "binarization"}
        return TrainConfig(**values, binarization="fixed", dataset="arrays",
                           out=None if out is None else str(out))

    def _checked_params(self):
        """get_params() with every integer parameter as an int (INTEGER_PARAMS), or a ValueError
        naming the first that is not an integer (an integral float counts) at its minimum."""
        params = {name: value.item() if isinstance(value, np.generic) else value  # NumPy scalars
                  for name, value in self.get_params().items()}                   # as Python's
        for name, minimum in INTEGER_PARAMS.items():
            if not (params[name] is None and name in OPTIONAL_PARAMS):
                params[name] = _check_count(params[name], name, minimum)
        params["seed"] = _check_seed(params["seed"], "seed")
        return params

    def _binarization(self):
        if self.binarization not in FIT_BINARIZATIONS:
            raise ValueError(f"binarization must be one of {FIT_BINARIZATIONS}, got {self.binarization!r}")
        return self.binarization

    # -----------------------------------------------------------------------------------------
    # Training.

    def fit(self, X, y=None, *, x_valid=None, x_test=None, out=None, resume=False, overwrite=False,
            **options):
        """Train on X (and validate on x_valid, test on x_test: split off X by the data layer's
        documented rule when not given) with dvae-train's training code; returns self.
        options: any constructor parameter, set for this and later fits (set_params).
        out: a run folder for checkpoints, metrics and pictures (none written when None), with
        dvae-train's rules: a folder holding a run is refused unless resume=True (continue it)
        or overwrite=True (replace it), and a folder another process uses is refused at once.
        y is ignored (the protocol's place for labels)."""
        from .train import Trainer

        if options:
            self.set_params(**options)
        splits = self._training_splits(X, x_valid, x_test)
        config = self.train_config(out)
        config = TrainConfig.from_dict({**config.__dict__, "binarization":
                                        "fixed" if splits.binarized else "dynamic"})
        if (resume or overwrite) and out is None:
            raise ValueError("resume=True and overwrite=True need out=, the run folder")
        for name, reason in config.ignored_options():
            warnings.warn(f"{name}={getattr(config, name)!r} has no effect here: {reason}",
                          UserWarning, stacklevel=2)
        trainer = Trainer(config, log=print if self.progress else _quiet, data=splits,
                          resume=resume, overwrite=overwrite)
        trainer.run()
        self._fitted(trainer.model, trainer.backend, splits.image_shape)
        self.history_ = list(trainer.metrics)
        self.fitted_config_ = config  # what save records, whatever set_params changes later
        return self

    def _training_splits(self, X, x_valid, x_test):
        arrays = {"train": ("X", X), "valid": ("x_valid", x_valid), "test": ("x_test", x_test)}
        splits = make_splits(**{k: _host_array_like(v, name) for k, (name, v) in arrays.items()},
                             image_shape=None, name="fit",
                             argument_names={k: name for k, (name, _) in arrays.items()})
        if self.binarization == "none" and not splits.binarized:
            raise ValueError("binarization='none' says the data are already 0/1, but X holds other "
                             "values; use binarization='fixed' or 'dynamic'")
        if self.binarization == "dynamic" and splits.binarized:
            raise ValueError("binarization='dynamic' draws Bernoulli(pixel) per batch, but X holds "
                             "only 0/1 values; use 'fixed' or 'none'")
        if self.binarization == "fixed" and not splits.binarized:
            for name in ("train", "valid", "test"):
                setattr(splits, name, binarize_fixed(splits.split(name)))
            splits.binarized = True
        return splits

    def _fitted(self, model, backend, image_shape):
        self.model_, self.backend_ = model, backend
        self.image_shape_ = image_shape
        self.n_features_in_ = model.shape.pixels
        self._evaluator = Evaluator(model)

    def fit_transform(self, X, y=None, **fit_options):
        return self.fit(X, y, **fit_options).transform(X)

    # -----------------------------------------------------------------------------------------
    # Saving and loading (dvae-train's checkpoint format; best.h5 and checkpoint.h5 both load).

    @classmethod
    def load(cls, path, backend="auto", eval_batch_size=1000):
        """The model saved in `path`: a checkpoint written by save, by fit(out=...) or by
        dvae-train (best.h5 or checkpoint.h5), with its parameters, its model and training
        options and image_shape_, and history_ the per-epoch metrics the file holds (dvae-train's
        and save's files hold those of the epochs that made these parameters; a file with none
        gives []). backend, eval_batch_size, cuda_graph and progress are this machine's choice,
        not the file's: the saved ones are not restored (a model trained on a GPU, in CUDA
        graphs or not, loads and trains where there is none, and no result depends on
        eval_batch_size); backend and eval_batch_size are load's arguments, the others keep
        their defaults. Raises FileNotFoundError for a missing file,
        CorruptFileError for a damaged one, ValueError for parameters that are not finite or
        that disagree with the saved config."""
        checkpoint = load_checkpoint(path)
        checkpoint.check_finite()
        config = checkpoint.config
        pixels = checkpoint.params["enc_w1"].shape[0]
        if config.get("pixels", pixels) != pixels:
            raise ValueError(f"{path}: the parameters are for {pixels} pixels but the checkpoint's "
                             f"config says {config['pixels']}")
        params = {k: v for k, v in config.items() if k in cls._param_names() and k not in MACHINE_CHOICES}
        params.update(pixels=pixels, backend=backend, eval_batch_size=eval_batch_size)
        vae = cls(**params)
        model = Model(vae.train_config().model_shape(pixels), get_backend(backend), seed=0)
        model.load_params(checkpoint.params)
        image_shape = config.get("image_shape")  # save()'s files
        if image_shape is None:                   # dvae-train's and fit(out=)'s checkpoints
            image_shape = (checkpoint.extra or {}).get("image_shape")
        vae._fitted(model, model.backend,
                    None if image_shape is None else tuple(int(n) for n in image_shape))
        vae.history_ = json.loads((checkpoint.extra or {}).get("metrics_json", "[]"))
        vae.fitted_config_ = vae.train_config()
        return vae

    def save(self, path):
        """The model as a checkpoint that load (and dvae-train's tools) read, with history_
        (dvae-train's "metrics_json" extra) when the model has one. The options saved are those
        the model was fitted (or loaded) with, even after set_params has changed n_latent, the
        estimator and the like for a next fit."""
        model = self._model()
        params = model.host_params()
        zeros = {k: np.zeros_like(v) for k, v in params.items()}
        options = self._checked_params()
        fitted = getattr(self, "fitted_config_", None)  # the options that made the model
        if fitted is not None:
            options.update({name: getattr(fitted, name) for name in options
                            if name in TrainConfig.__dataclass_fields__ and name not in MACHINE_CHOICES
                            and name != "binarization"})
        config = {k: v for k, v in options.items() if _json_value(v)}
        shape = model.shape  # the fitted model's, whatever set_params has changed since
        config.update(n_latent=shape.n_latent, n_categories=shape.n_categories, hidden=shape.hidden,
                      latent_structure=shape.structure, pairwise=shape.pairwise, pixels=shape.pixels,
                      image_shape=getattr(self, "image_shape_", None))
        history = getattr(self, "history_", None)
        extra = None if history is None else {"metrics_json": json.dumps(history)}
        save_checkpoint(path, params=params, optimizer={"m": zeros, "v": zeros}, step=0, epoch=0,
                        eps=0.0, rng_state={}, extra=extra, config=config)

    # -----------------------------------------------------------------------------------------
    # The fitted model, input checks and batching.

    def _model(self):
        if not hasattr(self, "model_"):
            if self.pixels is None:
                raise NotFittedError("this DiscreteVAE is not fitted yet: call fit(X) first, load a "
                                     "saved one, or give pixels= for an untrained model")
            params = self._checked_params()
            backend = get_backend(self.backend)
            shape = self.train_config().model_shape(params["pixels"])
            self._fitted(Model(shape, backend, seed=params["seed"]), backend, None)
        return self.model_

    @property
    def model(self):
        """The fitted (or, with pixels given, untrained) Model: parameters and fast passes."""
        return self._model()

    @property
    def shape(self):
        return self._model().shape

    def _batches(self, x, name):
        """(start, float32 0/1 device targets) over the rows of `x`, each batch read, checked and
        prepared as it comes (nothing holds the whole input), and the row count. The targets
        are those fit's evaluation gives x_valid and x_test (the module docstring's rule)."""
        model = self._model()
        x = _array_like(x, name, self.backend_)
        pixels = model.shape.pixels
        if len(x.shape) not in (2, 3) or math.prod(x.shape[1:]) != pixels:
            raise ValueError(f"{name} must have shape (n, {pixels}) or (n, H, W) with H*W = {pixels}, "
                             f"got {tuple(x.shape)}")
        kind = _pixel_kind(x, name)
        size = _check_count(self.eval_batch_size, "eval_batch_size", 1)
        binary_only = self._binarization() == "none"
        # Integers 0/1 are binary and any other integers grey levels (1 is then near black): a
        # property of the whole array, as in the data layer, so it is read (up to its first grey
        # level) before the batches. Floats need no such pass: p >= 0.5 maps 0 and 1 to themselves.
        grey_integers = kind == "i" and _holds_grey_integers(x, size)
        if grey_integers and binary_only:
            raise ValueError(_grey_but_none(name))

        def batches():
            for start in range(0, x.shape[0], size):
                yield start, self._targets(x[start:start + size], name, kind, grey_integers, binary_only)
        return batches(), x.shape[0]

    def _targets(self, block, name, kind, grey_integers, binary_only):
        """float32 (B, D) 0/1 targets of one block of pixels of `kind` (_pixel_kind)."""
        xp = self.backend_.xp
        block = xp.asarray(block)
        block = block.reshape(len(block), -1)
        if kind == "f":
            if not bool(xp.isfinite(block).all()):
                raise ValueError(f"{name} contains non-finite values (nan or inf)")
            low, high = (float(block.min()), float(block.max())) if block.size else (0.0, 0.0)
            if low < 0:
                raise ValueError(f"{name}: Negative values in data ({low}); float pixels must be in [0, 1]")
            if high > 1:
                raise ValueError(f"{name}: float pixels must be in [0, 1]; found {high}")
            if binary_only and not bool(((block == 0) | (block == 1)).all()):
                raise ValueError(_grey_but_none(name))
            # data.py's rint(p * 255) >= 128 (in float64) is p >= 0.5: for float16/32 p, 255 p
            # is exact in float64; a float64 p < 0.5 is <= 0.5 - 2**-54, and 255 times that
            # rounds below 127.5 (tests/test_fit.py compares the two at 0.5's neighbours)
            block = block >= 0.5
        elif kind == "i":
            low, high = (int(block.min()), int(block.max())) if block.size else (0, 0)
            if low < 0:
                raise ValueError(f"{name}: Negative values in data ({low}); integer pixels must be in 0..255")
            if high > 255:
                raise ValueError(f"{name}: integer pixels must be in 0..255; found {high}")
            if grey_integers:
                block = block >= 128
        return xp.ascontiguousarray(block, dtype=np.float32)

    def _collect(self, fn, batches, empty):
        """fn(batch, start) over the batches, concatenated (copies: fn returns views of reused
        work arrays); `empty` is the result for no rows."""
        xp = self.backend_.xp
        parts = [xp.array(fn(batch, start), copy=True) for start, batch in batches]
        return xp.concatenate(parts) if parts else empty

    def _codes(self, codes, name="codes"):
        xp, shape = self.backend_.xp, self.shape
        codes = xp.asarray(_array_like(codes, name, self.backend_)[:])
        if codes.dtype.kind not in "iu":
            raise ValueError(f"{name} must be integers, got dtype {codes.dtype}")
        if codes.ndim != 2 or codes.shape[1] != shape.n_latent:
            raise ValueError(f"{name} must have shape (n, {shape.n_latent}), got {tuple(codes.shape)}")
        if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= shape.n_categories):
            raise ValueError(f"{name} must lie in [0, {shape.n_categories})")
        return xp.ascontiguousarray(codes, dtype=np.int32)

    # -----------------------------------------------------------------------------------------
    # The model's functions.

    def _encoder_outputs(self, x):
        """The encoder's outputs (n, width) for x, batch by batch."""
        model, xp = self._model(), self.backend_.xp
        batches, n = self._batches(x, "x")
        encode = lambda b, _: model.encode(b, self._evaluator.workspace(len(b)).encoder)  # noqa: E731
        return self._collect(encode, batches, xp.zeros((0, model.shape.encoder_outputs), np.float32))

    def potentials(self, x):
        """The pairwise model's potentials of x: unary (n, N, 2) and pairwise (n, N(N-1)/2),
        pairs i < j in row-major order (softplus'd when attractive)."""
        model = self._model()
        if not model.shape.is_pairwise:
            raise ValueError("potentials() is for latent_structure='pairwise'; use logits()")
        xp, out = self.backend_.xp, self._encoder_outputs(x)
        ws = self._evaluator.workspace(max(1, len(out)))
        unary, pairwise = [], []
        for start in range(0, len(out), ws.batch):
            block = xp.ascontiguousarray(out[start:start + ws.batch])
            piece = self._evaluator.workspace(len(block)).structured
            u, p = model.pairwise_potentials(block, piece)
            unary.append(xp.array(u, copy=True)), pairwise.append(xp.array(p, copy=True))
        if not unary:
            return xp.zeros((0, model.shape.n_latent, 2), np.float32), xp.zeros((0, model.shape.n_pairs), np.float32)
        return xp.concatenate(unary).reshape(len(out), -1, 2), xp.concatenate(pairwise)

    def logits(self, x):
        """Encoder logits (n, N, K) (independent categoricals; the pairwise model has
        potentials instead: potentials())."""
        return self._logits(x, "x")

    def _logits(self, x, name):
        """logits(x), its errors naming the array `name` (the caller's parameter)."""
        model, xp = self._model(), self.backend_.xp
        if model.shape.is_pairwise:
            raise ValueError("the pairwise model's encoder gives potentials, not logits: use potentials()")
        batches, n = self._batches(x, name)
        encode = lambda b, _: model.encode(b, self._evaluator.workspace(len(b)).encoder)  # noqa: E731
        out = self._collect(encode, batches, xp.zeros((0, model.shape.n_codes), np.float32))
        return out.reshape(n, model.shape.n_latent, model.shape.n_categories)

    def posterior(self, x):
        """q(z|x): the categorical probabilities of every variable, (n, N, K) (independent
        categoricals only: the pairwise model's posterior has no closed form)."""
        if self._model().shape.is_pairwise:
            raise ValueError("posterior() is for latent_structure='categorical': the pairwise "
                             "model's posterior has no closed form; use potentials() for its "
                             "unary and pairwise potentials, or encode() for its most likely codes")
        logits = self.logits(x)
        return categorical_probabilities(self.backend_.xp, logits)

    def encode(self, x, sample=False, seed=0):
        """Codes (n, N) int32: the arg max of q(z|x), or with sample=True a Gumbel-max draw,
        image i's from the stream (seed, i) whatever the batching."""
        return self._encode(x, sample, seed, "x")

    def _encode(self, x, sample, seed, name):
        """encode(x, sample, seed), its errors naming the array `name`."""
        model = self._model()
        xp = self.backend_.xp
        if not sample and model.shape.is_pairwise:
            batches, _ = self._batches(x, name)
            return self._collect(lambda b, _: self._most_likely(b), batches,
                                 xp.zeros((0, model.shape.n_latent), np.int32))
        if not sample:
            return self._logits(x, name).argmax(axis=-1).astype(np.int32)
        seed = _check_seed(seed, "seed")
        batches, _ = self._batches(x, name)
        return self._collect(lambda b, start: self._sample_codes(b, seed, start), batches,
                             xp.zeros((0, self.shape.n_latent), np.int32))

    def _most_likely(self, x):
        model, ws = self.model_, self._evaluator.workspace(len(x))
        return model.most_likely_codes(model.encode(x, ws.encoder), ws)

    def _sample_codes(self, x, seed, start):
        model, ws = self.model_, self._evaluator.workspace(len(x))
        logits = model.encode(x, ws.encoder)
        if model.shape.is_pairwise:
            logits, pairwise = model.pairwise_potentials(logits, ws.structured)
        ws.counter[...] = start
        model.ops.sample_codes(logits, eval_seed(seed), ws.counter, model.shape.n_categories, 1,
                               True, ws.gumbel, ws.codes)
        if model.shape.is_pairwise:  # the structured arg max of the perturbed score
            model.ops.perturb_unaries(logits, ws.gumbel, 1, ws.structured.perturbed)
            model.structured_argmax(ws.structured.perturbed, pairwise, 1, ws.codes)
        return ws.codes

    def transform(self, X):
        """The codes of X (the arg max of q(z|x)): (n, N) int32, or one-hot (n, N*K) float32
        with one_hot=True."""
        codes = self._encode(X, False, 0, "X")
        return one_hot(codes, self.shape.n_categories, self.backend_.xp) if self.one_hot else codes

    def inverse_transform(self, codes):
        """Pixel probabilities (n, D) of codes (n, N), or of one-hot codes (n, N*K)."""
        shape = self._model().shape
        xp = self.backend_.xp
        codes = xp.asarray(_array_like(codes, "codes", self.backend_)[:])
        if codes.ndim == 2 and codes.shape[1] == shape.n_codes and shape.n_codes != shape.n_latent:
            codes = codes.reshape(len(codes), shape.n_latent, -1).argmax(axis=-1)
        return self.decode(codes)

    def decode(self, codes):
        """Pixel probabilities (n, D) of the decoder at integer codes (n, N)."""
        model, codes = self._model(), self._codes(codes)
        size = _check_count(self.eval_batch_size, "eval_batch_size", 1)
        batches = ((start, codes[start:start + size]) for start in range(0, len(codes), size))
        decode = lambda c, _: model.decode_probabilities(c, self._evaluator.workspace(len(c)).decoder)  # noqa: E731
        return self._collect(decode, batches, self.backend_.xp.zeros((0, model.shape.pixels), np.float32))

    def reconstruct(self, x):
        return self.decode(self.encode(x))

    def loss(self, x, seed=0):
        """The paper's test loss per image (n,): BCE at a Gumbel-max code + KL to the uniform
        prior (the pairwise model: BCE at the structured arg max of the Gumbel-perturbed score +
        the unary softmaxes' KL to uniform, as published)."""
        return self._loss(x, seed, "x")

    def _loss(self, x, seed, name):
        """loss(x, seed), its errors naming the array `name`."""
        seed = _check_seed(seed, "seed")
        batches, _ = self._batches(x, name)
        loss = lambda b, start: self._evaluator.sampled_loss(b, seed, start, per_image=True)  # noqa: E731
        return self._collect(loss, batches, self.backend_.xp.zeros(0, np.float32))

    def score(self, X, y=None):
        """Minus the mean test loss of X (higher is better, as scikit-learn expects): fit's
        test_loss, with its noise seed (the seed parameter) and its targets. fit draws the
        Gumbel noise by position in an eval_batch_size batch, score image i's from the stream
        (seed, i): the two agree exactly for single images and in expectation otherwise."""
        losses = self._loss(X, self._checked_params()["seed"], "X")
        if len(losses) == 0:
            raise ValueError("X is empty: a mean test loss needs at least one image")
        return -float(losses.mean())

    def nll(self, x, samples=100, seed=0):
        """Marginal -log p(x) per image: exact for N = 1, importance-sampled bound for N > 1
        independent categoricals (the pairwise model has no tractable one: ValueError)."""
        model, seed = self._model(), _check_seed(seed, "seed")
        samples = _check_count(samples, "samples", 1)
        rows = self.eval_batch_size if model.shape.n_latent == 1 else max(1, self.eval_batch_size // samples)
        batches, _ = self._batches(x, "x")
        batches = ((start + i, b[i:i + rows]) for start, b in batches for i in range(0, len(b), rows))
        nll = lambda b, start: self._evaluator.marginal_nll(b, seed, samples, start, per_image=True)  # noqa: E731
        return self._collect(nll, batches, self.backend_.xp.zeros(0, np.float64))

    def sample(self, n, seed=0):
        """n codes drawn from the uniform prior and their decoded pixel probabilities."""
        n, seed = _check_count(n, "n", 0), _check_seed(seed, "seed")
        rng = np.random.default_rng(seed)
        codes = rng.integers(0, self.shape.n_categories, size=(n, self.shape.n_latent))
        return self.backend_.xp.asarray(codes, dtype=np.int32), self.decode(codes)


# ---------------------------------------------------------------------------------------------
# Argument checks and array-likes.

def _quiet(*args):
    pass


def _json_value(value):
    return value is None or isinstance(value, (bool, int, float, str))


def _check_count(value, name, minimum):
    """value as an int >= minimum: an integer (not a bool) or an integral float, else a
    ValueError naming it."""
    integral = isinstance(value, numbers.Integral) or (
        isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer())
    if isinstance(value, bool) or not integral or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_seed(seed, name):
    seed = _check_count(seed, name, 0)
    if seed >= 2 ** 63:
        raise ValueError(f"{name} must be an integer in [0, 2**63), got {seed!r}")
    return seed


def _dlpack_view(x, backend):
    """A NumPy (or, on the GPU, CuPy) view of a DLPack tensor (PyTorch, JAX, ...), no copy."""
    if backend is not None and backend.on_device:
        return backend.xp.from_dlpack(x)
    try:
        return np.from_dlpack(x)
    except (BufferError, RuntimeError, TypeError) as error:
        raise ValueError(f"cannot read this {type(x).__name__} through DLPack on the CPU ({error}); "
                         "move it to host memory first") from error


def _array_like(x, name, backend=None):
    """x as something with .shape, .dtype and row slicing: arrays, memory maps and h5py datasets
    as they are (read batch by batch later), DLPack tensors as views, lists as NumPy."""
    if isinstance(x, np.ndarray) or type(x).__module__.startswith(("cupy", "h5py")):
        return x
    if hasattr(x, "nnz") and hasattr(x, "toarray"):  # scipy.sparse
        raise ValueError(f"{name}: sparse input is not supported (pixels are dense); pass "
                         f"{name}.toarray()")
    if hasattr(x, "__dlpack__"):
        return _dlpack_view(x, backend)
    if hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(x, "__getitem__"):
        return x
    try:
        array = np.asarray(x)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} is not an array ({type(x).__name__}: {error})") from error
    if array.dtype == object:
        raise ValueError(f"{name} is not a numeric array (ragged or mixed rows)")
    return array


def _pixel_kind(x, name):
    """"b" (bool), "i" (any integer type) or "f" (float) for an array-like of pixels, read from
    its dtype before any pixel is; other dtypes are refused as data.py refuses them."""
    try:
        dtype = np.dtype(x.dtype)
    except TypeError as error:
        raise ValueError(f"{name}: dtype {x.dtype!r} is not a NumPy dtype; {PIXEL_RULE}") from error
    if dtype.kind == "c":
        raise ValueError(f"{name}: Complex data not supported (dtype {dtype}); {PIXEL_RULE}")
    if dtype.kind not in "biuf":
        raise ValueError(f"{name}: dtype {dtype}; {PIXEL_RULE}")
    return "i" if dtype.kind == "u" else dtype.kind


def _holds_grey_integers(x, size):
    """True when the integer array-like x holds a value > 1, read `size` rows at a time up to
    the first such block (the range of every value is checked batch by batch later)."""
    for start in range(0, x.shape[0], size):
        block = x[start:start + size]
        block = block if type(block).__module__.startswith("cupy") else np.asarray(block)
        if block.size and int(block.max()) > 1:
            return True
    return False


def _grey_but_none(name):
    return (f"{name} holds grey levels (values other than 0 and 1), but binarization='none' says "
            "the data are already 0/1, and fit refuses such data; use binarization='fixed' or "
            "'dynamic'")


def _host_array_like(x, name):
    """Training data for the data layer: on the host (a DLPack tensor in device memory is
    copied: the data layer's checks and hold-out run on the host)."""
    if x is None:
        return None
    if type(x).__module__.startswith("cupy"):
        return x.get()
    x = _array_like(x, name)
    return x.get() if type(x).__module__.startswith("cupy") else x
