"""A training run's options, declared once: the dataclass the trainer reads, the command line
(cli.py builds `dvae-train`'s parser from these fields), the config stored in every checkpoint,
and the options table in README.md (a test keeps it in step).

Each field's metadata says how it appears on the command line:
    help       the --help text (the parser appends the default); for a flag that turns a
               True default off (progress: --no-progress), it says what the flag does
    flags      the option strings, first the long one; default: --field-name
    choices    allowed values, where there is a fixed list
    group      the --help section
    resumable  True when a resumed run may change it (the others must match the checkpoint)
Fields without "help" are not options (none today).
"""
import math
import os
from dataclasses import dataclass, field, fields

import numpy as np

from .backend import BACKEND_NAMES
from .estimators import ESTIMATORS, EstimatorConfig
from .model import LATENT_STRUCTURES, ModelShape
from .reference import PAIRWISE_MODES

BINARIZATIONS = ("fixed", "dynamic")


def option(default, help, group, flags=None, choices=None, resumable=False):
    return field(default=default, metadata={"help": help, "group": group, "flags": flags,
                                            "choices": choices, "resumable": resumable})


@dataclass(frozen=True)
class TrainConfig:
    # data
    dataset: str = option("fashion-mnist", "fashion-mnist (embedded, the default), "
                          "fashion-mnist-idx, mnist, omniglot, or a path: a .npy or .npz file, an "
                          ".h5 file in our layout, or a folder of IDX files", "data")
    data_root: str | None = option(None, "folder of the IDX files (mnist, fashion-mnist-idx) or "
                                   "chardata.mat (omniglot)", "data")
    binarization: str = option("fixed", "fixed: pixel >= 128 once; dynamic: Bernoulli(pixel/255) "
                               "per batch (needs grey data)", "data", choices=BINARIZATIONS)
    train_subset: int | None = option(None, "train on the first n training images only", "data")
    eval_subset: int | None = option(None, "evaluate on the first n valid/test images only", "data")
    # model
    n_latent: int = option(1, "N, the number of categorical latent variables", "model",
                           flags=("--latent-vars", "-N"))
    n_categories: int | None = option(None, "K, the values of each latent variable (default 10; "
                                      "2, and only 2, for the pairwise model)", "model",
                                      flags=("--categories", "-K"))
    latent_structure: str = option("categorical", "categorical: N independent categoricals; "
                                   "pairwise: N binary variables with pairwise potentials (the "
                                   "paper's structured model)", "model", choices=LATENT_STRUCTURES)
    pairwise: str = option("attractive", "pairwise model: attractive (potentials >= 0, an exact "
                           "min-cut) or signed (either sign, exact by enumerating 2^N codes, N <= 20)",
                           "model", choices=PAIRWISE_MODES)
    hidden: int = option(300, "hidden units of the encoder's and the decoder's hidden layer", "model")
    # estimator
    estimator: str = option("direct", "the encoder's gradient estimator", "estimator",
                            choices=ESTIMATORS)
    gumbel_samples: int = option(1, "M, Gumbel samples per data point", "estimator",
                                 flags=("--gumbel-samples", "-M"))
    two_sided: bool = option(False, "direct: central difference in eps", "estimator")
    kl_backprop: bool = option(False, "direct: also back-propagate the KL's exact gradient (off, as "
                               "in the published code: at the paper's eps the direct estimate of "
                               "the BCE gradient is shrunk, the KL's is not, and the codes "
                               "collapse; see BENCHMARKS.md)", "estimator")
    straight_through: bool = option(False, "gumbel-softmax: decode the hard code, back-propagate "
                                    "the relaxed one", "estimator")
    # schedules: value = max(start * exp(-rate * step), minimum), updated every anneal_every steps
    eps0: float = option(1.0, "direct: eps at step 0", "estimator")
    eps_anneal_rate: float = option(1e-5, "direct: eps = max(eps0 exp(-rate step), eps_min)",
                                    "estimator")
    eps_min: float = option(0.1, "direct: the smallest eps", "estimator")
    tau0: float = option(1.0, "gumbel-softmax: temperature at step 0", "estimator")
    tau_anneal_rate: float = option(1e-5, "gumbel-softmax: tau = max(tau0 exp(-rate step), "
                                    "tau_min)", "estimator")
    tau_min: float = option(0.5, "gumbel-softmax: the smallest temperature", "estimator")
    anneal_every: int = option(500, "steps between updates of eps and tau", "estimator")
    # optimisation
    epochs: int = option(10, "train until this many epochs are done", "optimisation",
                         resumable=True)
    batch_size: int = option(100, "training images per step", "optimisation")
    lr: float = option(1e-3, "Adam's learning rate", "optimisation")
    seed: int = option(0, "every random choice of the run is a function of the seed", "optimisation")
    # evaluation and output
    eval_batch_size: int = option(1000, "images per evaluation batch", "run", resumable=True)
    nll_samples: int = option(100, "importance samples for the final test NLL bound when N > 1",
                              "run")
    backend: str = option("auto", "auto: the GPU when one is usable, else the CPU", "run",
                          choices=BACKEND_NAMES, resumable=True)
    cuda_graph: bool = option(False, "gpu: capture one training step as a CUDA graph and replay it "
                              "(direct and exact estimators; falls back to plain launches if "
                              "capture fails)", "run", resumable=True)
    out: str = option("runs/dvae", "output folder (checkpoints, metrics, pictures)", "run",
                      resumable=True)
    progress: bool = option(True, "do not show the progress bar", "run", flags=("--no-progress",),
                            resumable=True)

    def __post_init__(self):
        if self.n_categories is None:  # frozen: the resolved default is set once, here
            object.__setattr__(self, "n_categories", 2 if self.latent_structure == "pairwise" else 10)
        if self.latent_structure == "pairwise" and self.estimator != "direct":
            raise ValueError(f"the pairwise model is trained by the direct estimator, not "
                             f"{self.estimator!r}")
        self.model_shape()       # validates N, K, H and the structure
        self.estimator_config()  # validates the estimator's options
        if self.estimator == "exact" and self.n_latent != 1:
            raise ValueError("estimator 'exact' enumerates K codes and needs n_latent = 1")
        if self.binarization not in BINARIZATIONS:
            raise ValueError(f"binarization must be one of {BINARIZATIONS}, got {self.binarization!r}")
        if self.backend not in BACKEND_NAMES:
            raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {self.backend!r}")
        for name in ("epochs", "batch_size", "eval_batch_size", "nll_samples", "anneal_every"):
            minimum = 0 if name == "epochs" else 1
            _check_integer(name, getattr(self, name), minimum)
        for name in ("lr", "eps0", "eps_min", "tau0", "tau_min"):
            if not (_is_number(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)!r}")
        for name in ("eps_anneal_rate", "tau_anneal_rate"):
            if not (_is_number(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        for low, high in (("eps_min", "eps0"), ("tau_min", "tau0")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low)!r}) must be <= {high} "
                                 f"({getattr(self, high)!r}): the schedule anneals from {high} down to {low}")
        for name in ("train_subset", "eval_subset"):
            if getattr(self, name) is not None:
                _check_integer(name, getattr(self, name), 1)
        _check_integer("seed", self.seed, 0)
        if self.seed >= 2 ** 63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        for f in fields(self):
            if f.type is bool and not isinstance(getattr(self, f.name), (bool, np.bool_)):
                raise ValueError(f"{f.name} must be True or False, got {getattr(self, f.name)!r}")
            if f.type is bool:  # NumPy's bool as Python's: the checkpoint's config is JSON
                object.__setattr__(self, f.name, bool(getattr(self, f.name)))
        if isinstance(self.out, os.PathLike):
            object.__setattr__(self, "out", os.fspath(self.out))
        if self.out is not None and (not isinstance(self.out, str) or not self.out.strip()):
            raise ValueError(f"out must name a folder, got {self.out!r} (an empty name would "
                             f"write the run into the current folder: say '.' for that)")

    def ignored_options(self):
        """The fields set away from their defaults that this run does not use, each with why:
        [(field name, reason)]. Not an error (a sweep may set them for every run), but a user
        should hear of an option that does nothing."""
        rules = [(("two_sided", "kl_backprop", "eps0", "eps_anneal_rate", "eps_min"),
                  self.estimator == "direct", f"it applies to the direct estimator, not {self.estimator}"),
                 (("straight_through", "tau0", "tau_anneal_rate", "tau_min"),
                  self.estimator == "gumbel-softmax",
                  f"it applies to the gumbel-softmax estimator, not {self.estimator}"),
                 (("gumbel_samples", "anneal_every"), self.estimator != "exact",
                  "the exact estimator draws no samples and anneals nothing"),
                 (("pairwise",), self.latent_structure == "pairwise",
                  "it applies to --latent-structure pairwise"),
                 (("nll_samples",), self.n_latent > 1 and self.latent_structure == "categorical",
                  "the final NLL bound is for N > 1 independent categoricals only")]
        defaults = TrainConfig.__dataclass_fields__
        ignored = []
        for names, used, reason in rules:
            for name in names:
                if not used and getattr(self, name) != defaults[name].default:
                    ignored.append((name, reason))
        return ignored

    def model_shape(self, pixels=784):
        return ModelShape(self.n_latent, self.n_categories, self.hidden, pixels,
                          self.latent_structure, self.pairwise)

    def estimator_config(self):
        return EstimatorConfig(self.estimator, self.gumbel_samples, self.two_sided,
                               self.kl_backprop, self.straight_through)

    @classmethod
    def from_dict(cls, values):
        """A config from a dict such as a checkpoint's; keys that are not fields are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def resumable_fields():
    """The options a resumed run may change; all others must equal the checkpoint's."""
    return {f.name for f in fields(TrainConfig) if f.metadata.get("resumable")}


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_integer(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) and not (
            isinstance(value, float) and value.is_integer()) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
