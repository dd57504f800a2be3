"""The training loop: eps schedule, Adam, metrics, checkpoints, resume, pictures.

Every random choice is a pure function of (seed, step) or (seed, epoch): the epoch's shuffle is
a permutation drawn from numpy's generator seeded with (seed, epoch); the Gumbel noise of step t
and the dynamic binarisation of step t are Philox streams (see kernels/rng.py). So a checkpoint
needs no generator state beyond the counters, and a resumed run repeats an uninterrupted one.

Files in the output folder:
    checkpoint.h5   the latest state (atomic; written each epoch and on Ctrl-C)
    best.h5         the parameters with the best validation loss so far
    metrics.jsonl   one JSON object per epoch
    reconstructions.png, codes.png (N = 1: the decoder's image for each category)
"""
import json
import math
import signal
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from . import evaluate, images
from .atomic import atomic_path
from .backend import get_backend
from .checkpoint import load_checkpoint, save_checkpoint
from .data import load_dataset
from .estimators import EstimatorConfig, estimator_gradients
from .model import DVAE, ModelShape
from .progress import Progress

BINARIZE_SALT = 0xB1_7A_12E  # keeps the dynamic-binarisation stream apart from the Gumbel noise


@dataclass(frozen=True)
class TrainConfig:
    # data
    dataset: str = "fashion-mnist"
    data_root: str | None = None
    binarization: str = "fixed"
    train_subset: int | None = None    # use only the first n training images (quick runs, tests)
    eval_subset: int | None = None     # evaluate on only the first n valid/test images
    # model
    n_latent: int = 1
    n_categories: int = 10
    hidden: int = 300
    # estimator
    estimator: str = "direct"
    gumbel_samples: int = 1
    two_sided: bool = False
    kl_backprop: bool = False          # the published code's choice; see EstimatorConfig
    straight_through: bool = False
    # schedules: value = max(start * exp(-rate * step), minimum), updated every anneal_every steps
    eps0: float = 1.0
    eps_anneal_rate: float = 1e-5
    eps_min: float = 0.1
    tau0: float = 1.0
    tau_anneal_rate: float = 1e-5
    tau_min: float = 0.5
    anneal_every: int = 500
    # optimisation
    epochs: int = 10
    batch_size: int = 100
    lr: float = 1e-3
    seed: int = 0
    # evaluation and output
    eval_batch_size: int = 1000
    nll_samples: int = 100             # importance samples for the N > 1 bound
    backend: str = "auto"
    cuda_graph: bool = False           # GPU: replay each training step as one captured CUDA graph
    out: str = "runs/dvae"
    progress: bool = True

    def __post_init__(self):
        ModelShape(self.n_latent, self.n_categories, self.hidden)  # validates N, K, H
        self.estimator_config()                                    # validates estimator options
        if self.estimator == "exact" and self.n_latent != 1:
            raise ValueError("estimator 'exact' enumerates K codes and needs n_latent = 1")
        if self.binarization not in ("fixed", "dynamic"):
            raise ValueError(f"binarization must be 'fixed' or 'dynamic', got {self.binarization!r}")
        for name in ("epochs", "batch_size", "eval_batch_size", "nll_samples", "anneal_every"):
            value = getattr(self, name)
            if int(value) != value or value < (0 if name == "epochs" else 1):
                raise ValueError(f"{name} must be an integer >= {0 if name == 'epochs' else 1}, got {value!r}")
        for name in ("lr", "eps0", "eps_min", "tau0", "tau_min"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)!r}")
        for name in ("eps_anneal_rate", "tau_anneal_rate"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        for name in ("train_subset", "eval_subset"):
            value = getattr(self, name)
            if value is not None and (int(value) != value or value < 1):
                raise ValueError(f"{name} must be None or an integer >= 1, got {value!r}")
        if int(self.seed) != self.seed or not 0 <= self.seed < 2 ** 63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")

    def model_shape(self):
        return ModelShape(self.n_latent, self.n_categories, self.hidden)

    def estimator_config(self):
        return EstimatorConfig(self.estimator, self.gumbel_samples, self.two_sided,
                               self.kl_backprop, self.straight_through)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# Options that may differ between a run and its resumption; all others must match.
RESUMABLE_CHANGES = {"epochs", "out", "progress", "backend", "eval_batch_size", "cuda_graph"}


def annealed(start, rate, minimum, step, every):
    """max(start * exp(-rate * step'), minimum) with step' = step rounded down to a multiple of `every`."""
    return max(start * math.exp(-rate * (step // every * every)), minimum)


class Trainer:
    def __init__(self, config, log=print, graph_capture=None):
        self.config = config
        self.log = log
        self.backend = get_backend(config.backend)
        self.model = DVAE(config.model_shape(), self.backend, seed=config.seed)
        self.data = load_dataset(config.dataset, config.binarization, config.data_root)
        xp = self.backend.xp
        # The data set lives on the device for the whole run, as uint8 (0/1, or grey levels).
        self.train_images = xp.asarray(self.data.train[:config.train_subset])
        self.valid_images = xp.asarray(self.data.valid[:config.eval_subset])
        self.test_images = xp.asarray(self.data.test[:config.eval_subset])
        if len(self.train_images) < config.batch_size:
            raise ValueError(f"batch_size {config.batch_size} exceeds the {len(self.train_images)} training images")
        self.out = Path(config.out)
        self.step = 0
        self.epoch = 0            # completed epochs
        self.step_in_epoch = 0    # steps done in the current epoch (non-zero after Ctrl-C)
        self.best_valid = math.inf
        self.metrics = []
        self.graphed = self._graphed_step(graph_capture)
        self.loss_sum = self.graphed.loss_sum if self.graphed else xp.zeros((), dtype=np.float64)

    def _graphed_step(self, capture):
        c = self.config
        if not c.cuda_graph:
            return None
        if self.backend.name != "gpu" and capture is None:
            raise ValueError("--cuda-graph needs the gpu backend")
        from .graph import GraphedStep

        return GraphedStep(self.model, c.estimator_config(), c.seed, c.batch_size, c.lr,
                           capture=capture, log=self.log)

    # -----------------------------------------------------------------------------------------
    # Batches: gathered, shuffled and binarised on the device.

    @property
    def steps_per_epoch(self):
        return len(self.train_images) // self.config.batch_size

    def epoch_order(self, epoch):
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.train_images))
        return self.backend.xp.asarray(order)

    def to_float32(self, pixels, counter=None):
        """uint8 pixels -> float32 targets: as they are when binarised, else Bernoulli(p / 255)
        with the Philox stream of `counter` (dynamic binarisation)."""
        xp = self.backend.xp
        if self.data.binarized:
            return pixels.astype(np.float32)
        if counter is None:  # evaluation of grey data: the fixed threshold
            return (pixels >= 128).astype(np.float32)
        bits = xp.empty(pixels.shape, dtype=np.uint32)
        self.backend.ops.philox_bits(self.config.seed ^ BINARIZE_SALT, counter, bits)
        uniform = ((bits >> 8).astype(np.float32) + 0.5) * np.float32(2.0 ** -24)
        return (uniform < pixels.astype(np.float32) / 255).astype(np.float32)

    # -----------------------------------------------------------------------------------------
    # The loop.

    def current_eps(self):
        c = self.config
        return annealed(c.eps0, c.eps_anneal_rate, c.eps_min, self.step, c.anneal_every)

    def current_tau(self):
        c = self.config
        return annealed(c.tau0, c.tau_anneal_rate, c.tau_min, self.step, c.anneal_every)

    def train_step(self, x):
        """One step on batch x; its loss is added to self.loss_sum on the device (no sync)."""
        if self.graphed is not None:
            if self.step % self.config.anneal_every == 0:  # the only steps where eps can move
                self.graphed.set_eps(self.current_eps())
            self.graphed(x)
        else:
            self.loss_sum += estimator_gradients(self.model, self.config.estimator_config(), x,
                                                 self.config.seed, self.step, self.current_eps(),
                                                 self.current_tau())
            self.model.adam_update(self.config.lr)
        self.step += 1

    def run(self):
        """Train to config.epochs; returns the list of per-epoch metrics.

        Ctrl-C (SIGINT) is taken between two steps, never inside one: the step finishes, a
        checkpoint is saved, and KeyboardInterrupt is raised for the caller to exit on."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.graphed is not None:
            self.graphed.set_state(self.step, self.model.adam_steps, self.current_eps())
        with _interrupt_flag() as interrupted, _current_stream(self.graphed):
            while self.epoch < self.config.epochs:
                if not self.run_epoch(interrupted):
                    self.save_checkpoint()
                    self.log(f"interrupted at step {self.step}: checkpoint saved to "
                             f"{self.out / 'checkpoint.h5'}; continue with --resume")
                    raise KeyboardInterrupt
        return self.metrics

    def run_epoch(self, interrupted=lambda: False):
        """One pass over the training split; False if interrupted before its end."""
        c = self.config
        order = self.epoch_order(self.epoch)
        started = time.perf_counter()
        self.loss_sum[...] = 0
        first_step = self.step_in_epoch
        report_every = max(1, min(200, self.steps_per_epoch // 20))
        with Progress(self.steps_per_epoch, f"epoch {self.epoch + 1}/{c.epochs}",
                      enabled=c.progress) as bar:
            bar.update(first_step)
            while self.step_in_epoch < self.steps_per_epoch:
                rows = order[self.step_in_epoch * c.batch_size:(self.step_in_epoch + 1) * c.batch_size]
                self.train_step(self.to_float32(self.train_images[rows], self.step))
                self.step_in_epoch += 1
                if self.step_in_epoch % report_every == 0:  # the only host sync inside an epoch
                    done = self.step_in_epoch - first_step
                    bar.update(report_every, loss=float(self.loss_sum) / done)
                if interrupted():
                    return False
        self.finish_epoch(float(self.loss_sum) / max(1, self.steps_per_epoch - first_step),
                          time.perf_counter() - started)
        return True

    def finish_epoch(self, train_loss, seconds):
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss became {train_loss} in epoch {self.epoch + 1}; "
                                     "try a smaller --lr")
        self.epoch += 1
        self.step_in_epoch = 0
        record = {"epoch": self.epoch, "step": self.step, "eps": self.current_eps(),
                  "train_loss": train_loss, "seconds": seconds}
        record.update(self.evaluate())
        self.metrics.append(record)
        if record["valid_loss"] < self.best_valid:
            self.best_valid = record["valid_loss"]
            self.save_checkpoint(self.out / "best.h5")
        # The checkpoint first: it holds every metrics line, so resume can rewrite the file.
        self.save_checkpoint()
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        self.write_pictures()
        nll = f" test_nll {record['test_nll']:.2f}" if "test_nll" in record else ""
        self.log(f"epoch {self.epoch:3d}  train {train_loss:.2f}  valid {record['valid_loss']:.2f}  "
                 f"test {record['test_loss']:.2f}{nll}  ({seconds:.1f} s)")

    def evaluate(self):
        c, model = self.config, self.model
        batch = c.eval_batch_size
        results = {
            "valid_loss": evaluate.dataset_mean(lambda m, x: evaluate.sampled_loss(m, x, c.seed), model,
                                                self.valid_images, batch, self.to_float32),
            "test_loss": evaluate.dataset_mean(lambda m, x: evaluate.sampled_loss(m, x, c.seed), model,
                                               self.test_images, batch, self.to_float32),
        }
        if c.n_latent == 1:  # exact and cheap; the N > 1 bound is computed by evaluate_nll()
            results["test_nll"] = evaluate.dataset_mean(lambda m, x: evaluate.marginal_nll(m, x, c.seed),
                                                        model, self.test_images, batch, self.to_float32)
        return results

    def evaluate_nll(self, samples=None):
        """The marginal NLL on the test split: exact for N = 1, importance-sampled for N > 1."""
        c = self.config
        samples = samples or c.nll_samples
        batch = max(1, c.eval_batch_size // samples) if c.n_latent > 1 else c.eval_batch_size
        return evaluate.dataset_mean(lambda m, x: evaluate.marginal_nll(m, x, c.seed, samples),
                                     self.model, self.test_images, batch, self.to_float32)

    # -----------------------------------------------------------------------------------------
    # Checkpoints.

    def save_checkpoint(self, path=None):
        model = self.model
        save_checkpoint(
            path or self.out / "checkpoint.h5",
            params=model.host_params(),
            optimizer={"m": {k: self.backend.to_host(v) for k, v in model.adam_m.items()},
                       "v": {k: self.backend.to_host(v) for k, v in model.adam_v.items()}},
            step=self.step, epoch=self.epoch, eps=self.current_eps(),
            rng_state={"scheme": "philox4x32-10(seed, step); shuffle default_rng([seed, epoch])",
                       "seed": self.config.seed, "step": self.step},
            config=asdict(self.config),
            extra={"step_in_epoch": self.step_in_epoch, "adam_steps": model.adam_steps,
                   "best_valid": self.best_valid, "metrics_json": json.dumps(self.metrics)},
        )

    def resume(self, path=None):
        path = Path(path or self.out / "checkpoint.h5")
        checkpoint = load_checkpoint(path)
        checkpoint.check_finite()
        saved = TrainConfig.from_dict(checkpoint.config)
        changed = [f.name for f in fields(TrainConfig) if f.name not in RESUMABLE_CHANGES
                   and getattr(saved, f.name) != getattr(self.config, f.name)]
        if changed:
            raise ValueError(f"cannot resume from {path}: the run was started with different "
                             + ", ".join(f"{n}={getattr(saved, n)!r} (now {getattr(self.config, n)!r})"
                                         for n in changed))
        extra = checkpoint.extra or {}
        self.model.load_params(checkpoint.params, checkpoint.optimizer["m"], checkpoint.optimizer["v"],
                               int(extra.get("adam_steps", checkpoint.step)))
        self.step, self.epoch = checkpoint.step, checkpoint.epoch
        self.step_in_epoch = int(extra.get("step_in_epoch", 0))
        self.best_valid = float(extra.get("best_valid", math.inf))
        self.metrics = json.loads(extra.get("metrics_json", "[]"))
        # metrics.jsonl may hold an epoch the checkpoint does not (a crash between the two writes).
        self.out.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in self.metrics))
        self.log(f"resumed from {path} at epoch {self.epoch}, step {self.step}")

    # -----------------------------------------------------------------------------------------
    # Pictures a person would rather look at than read.

    def write_pictures(self):
        model, xp = self.model, self.backend.xp
        originals = self.to_float32(self.test_images[:20])
        logits = model.encode_logits(originals)
        codes = logits.reshape(len(originals), model.shape.n_latent, -1).argmax(axis=-1).astype(np.int32)
        probabilities = 1.0 / (1.0 + xp.exp(-model.decode_codes(xp.ascontiguousarray(codes))))
        grid = images.reconstruction_grid(self.backend.to_host(originals),
                                          self.backend.to_host(probabilities), columns=10)
        images.write_png(self.out / "reconstructions.png", grid)
        if model.shape.n_latent == 1:
            codes = xp.arange(model.shape.n_categories, dtype=np.int32)[:, None]
            category = 1.0 / (1.0 + xp.exp(-model.decode_codes(codes)))
            picture = self.backend.to_host(category).reshape(-1, 28, 28)
            images.write_png(self.out / "codes.png", images.image_grid(picture, columns=10))


class _interrupt_flag:
    """Context manager: SIGINT sets a flag (returned as a callable) instead of raising mid-step."""

    def __enter__(self):
        self.flag = False
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave SIGINT alone
            self.previous = None
        return lambda: self.flag

    def _handle(self, signum, frame):
        self.flag = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _current_stream(graphed):
    """The graph's stream as CuPy's current stream for the loop (batches ordered with replays)."""
    import contextlib

    if graphed is None or graphed.stream is None:
        return contextlib.nullcontext()
    return graphed.stream


def _write_atomic(path, text):
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def train(config, resume=False, log=print):
    """Build a Trainer, optionally resume it from its output folder, and run it."""
    trainer = Trainer(config, log=log)
    if resume:
        trainer.resume()
    trainer.run()
    return trainer
