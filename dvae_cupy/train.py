"""The training loop: batches, eps schedule, metrics, checkpoints, resume, pictures.

Every random choice is a pure function of (seed, step) or (seed, epoch): the epoch's shuffle is
a permutation drawn from numpy's generator seeded with (seed, epoch); the Gumbel noise of step t
and the dynamic binarisation of step t are Philox streams (see kernels/rng.py). So a checkpoint
needs no generator state beyond the counters, and a resumed run repeats an uninterrupted one.

The step itself (gradients, Adam, its memory) is a TrainStep (step.py), replayed as a CUDA graph
with --cuda-graph (graph.py); the trainer fills the step's batch buffer in place, moves eps, and
reads the loss sum only when it reports.

Files in the output folder:
    checkpoint.h5   the latest state (atomic; written each epoch and on Ctrl-C)
    best.h5         the parameters with the best validation loss so far
    metrics.jsonl   one JSON object per epoch
    reconstructions.png, codes.png (N = 1: the decoder's image for each category)
    curves.png      train/valid/test loss per epoch
    pairwise.png    the pairwise model: its mean pairwise potentials, an N x N heat map
"""
import json
import math
import signal
import statistics
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from . import images
from .atomic import append_text, atomic_path
from .backend import get_backend
from .checkpoint import checkpoint_problem, load_checkpoint, save_checkpoint
from .config import TrainConfig, resumable_fields
from .data import load_dataset
from .errors import CorruptFileError, RunInterrupted, TrainingDiverged
from .evaluate import Evaluator
from .graph import GraphedStep
from .kernels._numba_init import start_numba_init
from .kernels.batch import AS_IS, BERNOULLI, THRESHOLD
from .model import Model
from .progress_bar import progress_bar
from .run_folder import (discard_set_aside, prepare_run_folder, restore_set_aside, run_files,
                         set_aside_run)
from .step import TrainStep

BINARIZE_SALT = 0xB1_7A_12E  # keeps the dynamic-binarisation stream apart from the Gumbel noise


def annealed(start, rate, minimum, step, every):
    """max(start * exp(-rate * step'), minimum) with step' = step rounded down to a multiple of `every`."""
    return max(start * math.exp(-rate * (step // every * every)), minimum)


class Trainer:
    def __init__(self, config, log=print, graph_capture=None, data=None, resume=False,
                 overwrite=False):
        """data: a data.Splits to train on (the library's fit); None loads config.dataset.
        config.out None: a run that writes no files (fit without out=). Otherwise the run
        folder is checked, locked and prepared first (run_folder.py: a fresh run into a folder
        that holds a run is refused unless overwrite=True, which deletes that run once this
        one has saved its first epoch; resume=True continues it)."""
        self.config = config
        self.log = log
        self.out = None if config.out is None else Path(config.out)
        self.run_lock = (None if self.out is None else
                         prepare_run_folder(self.out, resume=resume, overwrite=overwrite, log=log))
        try:
            # --overwrite deletes the previous run only once this one has saved its first epoch
            self.replacing = self.run_lock is not None and overwrite and bool(run_files(self.out))
            self._build(graph_capture, data)
            if resume:
                self.resume()
        except BaseException:
            self.close()
            raise

    def close(self):
        """Release the run folder's lock (the run is over, or never started)."""
        if self.run_lock is not None:
            self.run_lock.release()
            self.run_lock = None

    def _build(self, graph_capture, data):
        # Numba's one-time start-up (~0.5 s) runs beside the data's loading and hashing, and is
        # over before the first epoch's clock starts (kernels/_numba_init.py); joined on errors
        # too, so that no thread is inside Numba when the interpreter exits
        numba_init = start_numba_init()
        try:
            self._build_parts(graph_capture, data)
        finally:
            numba_init.join()

    def _build_parts(self, graph_capture, data):
        config = self.config
        self.backend = get_backend(config.backend)
        self.data = data if data is not None else load_dataset(config.dataset, config.binarization,
                                                                config.data_root)
        self.data_digest = self.data.content_digest()  # how a resumed run recognises its data
        pixels = self.data.pixels
        self.model = Model(config.model_shape(pixels), self.backend, seed=config.seed)
        xp = self.backend.xp
        # The data set lives on the device for the whole run, as uint8 (0/1, or grey levels).
        self.train_images = xp.asarray(self.data.train[:config.train_subset])
        self.valid_images = xp.asarray(self.data.valid[:config.eval_subset])
        self.test_images = xp.asarray(self.data.test[:config.eval_subset])
        for option, wanted, split in (("train_subset", config.train_subset, "train"),
                                      ("eval_subset", config.eval_subset, "valid"),
                                      ("eval_subset", config.eval_subset, "test")):
            held = len(self.data.split(split))
            if wanted is not None and wanted > held:
                self.log(f"note: {option}={wanted} is more than the {held} {split} images: "
                         f"using all {held}")
        if len(self.train_images) < config.batch_size:
            raise ValueError(f"batch_size {config.batch_size} exceeds the {len(self.train_images)} training images")
        # How pixels become targets: 0/1 data as they are; grey data by a Bernoulli draw per
        # training batch (dynamic binarisation) and by the fixed threshold for evaluation.
        self.train_mode = AS_IS if self.data.binarized else BERNOULLI
        self.eval_mode = AS_IS if self.data.binarized else THRESHOLD
        self.epoch = 0            # completed epochs
        self.step_in_epoch = 0    # steps done in the current epoch (non-zero after Ctrl-C)
        self.epoch_loss_sum = 0.0  # the loss sum of those steps, carried through an interruption
        self.guard = DivergenceGuard(self.kept_files)
        self.best_valid = math.inf
        self.metrics = []
        self.train_step = TrainStep(self.model, config.estimator_config(), config.seed,
                                    config.batch_size, config.lr)
        self.runner = self._runner(graph_capture)
        self.evaluator = Evaluator(self.model)

    def _runner(self, capture):
        """The callable that runs one step: the TrainStep itself, or its graph replays."""
        c = self.config
        if not c.cuda_graph:
            return self.train_step
        if self.backend.name != "gpu" and capture is None:
            raise ValueError("--cuda-graph needs the gpu backend")
        return GraphedStep(self.train_step, capture=capture, log=self.log)

    @property
    def step(self):
        """Training steps done."""
        return self.train_step.step

    @property
    def image_shape(self):
        """(H, W) of the data set's images, or None when it has only a pixel count."""
        return self.data.image_shape

    # -----------------------------------------------------------------------------------------
    # Batches: gathered, shuffled and binarised on the device, into buffers made once.

    @property
    def steps_per_epoch(self):
        return len(self.train_images) // self.config.batch_size

    def epoch_order(self, epoch):
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.train_images))
        return self.backend.xp.asarray(order)

    def gather_batch(self, order, index):
        """Batch `index` of the epoch's `order` into the step's batch buffer, binarised for the
        step about to run (its counter is the Philox counter of the dynamic binarisation)."""
        c = self.config
        self.backend.ops.gather_targets(self.train_images, order, index * c.batch_size,
                                        self.train_mode, c.seed ^ BINARIZE_SALT,
                                        self.train_step.counter, self.train_step.batch)

    def eval_batches(self, images, batch_size=None):
        """The targets of `images`, in order, as (n, D) float32 batches in evaluation buffers."""
        xp, ops = self.backend.xp, self.backend.ops
        batch_size = batch_size or self.config.eval_batch_size
        identity = xp.arange(len(images), dtype=np.int64)
        for start in range(0, len(images), batch_size):
            rows = min(batch_size, len(images) - start)
            x = self.evaluator.workspace(rows).x
            ops.gather_targets(images, identity, start, self.eval_mode, 0,
                               self.train_step.counter, x)
            yield x

    # -----------------------------------------------------------------------------------------
    # The loop.

    def current_eps(self):
        c = self.config
        return annealed(c.eps0, c.eps_anneal_rate, c.eps_min, self.step, c.anneal_every)

    def current_tau(self):
        c = self.config
        return annealed(c.tau0, c.tau_anneal_rate, c.tau_min, self.step, c.anneal_every)

    def train_on(self, order, index):
        """One step on batch `index` of `order`; its loss is added to the step's loss sum on
        the device (no sync)."""
        if self.step % self.config.anneal_every == 0:  # the only steps where eps and tau move
            self.train_step.set_eps(self.current_eps())
            self.train_step.tau = self.current_tau()
        self.gather_batch(order, index)
        self.runner()

    def run(self):
        """Train to config.epochs; returns the list of per-epoch metrics.

        Ctrl-C (SIGINT) and SIGTERM are taken between two steps, never inside one: the step
        finishes, a checkpoint is saved, and RunInterrupted is raised for the caller to exit on.
        A run already past config.epochs says so and does nothing. The run folder's lock is
        released when run returns or raises."""
        try:
            return self._run()
        finally:
            self.close()

    def _run(self):
        if self.epoch >= self.config.epochs:
            where = f"the run in {self.out}" if self.out else "the run"
            self.log(f"nothing to do: {where} has done {self.epoch} epochs and --epochs is "
                     f"{self.config.epochs}; ask for more epochs to continue it")
            return self.metrics
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
        # The data set and parameters were uploaded on the default stream; a graph's loop runs
        # on its own stream, which would not wait for them.
        self.backend.synchronize_device()
        with _interrupt_flag() as interrupted, self.runner.stream():
            step = self.train_step
            step.set_state(step.step, step.adam_steps, self.current_eps())
            step.tau = self.current_tau()
            while self.epoch < self.config.epochs:
                if not self.run_epoch(interrupted):
                    name = signal.Signals(interrupted()).name
                    if self.out is None:
                        message = f"{name} at step {self.step}: stopped (no run folder to save to)"
                    elif self.replacing:  # the usual "wrong options" Ctrl-C: keep the old run
                        message = (f"{name} at step {self.step}: stopped, nothing saved; this "
                                   f"--overwrite run had not saved its first epoch, so the "
                                   f"previous run in {self.out} is as it was")
                    else:
                        self.save_checkpoint()
                        message = (f"{name} at step {self.step}: checkpoint saved to "
                                   f"{self.out / 'checkpoint.h5'}; continue with --resume")
                    self.log(message)
                    raise RunInterrupted(interrupted(), message)
        return self.metrics

    def run_epoch(self, interrupted=lambda: False):
        """One pass over the training split; False if interrupted before its end."""
        c = self.config
        order = self.epoch_order(self.epoch)
        started = time.perf_counter()
        loss_sum = self.train_step.loss_sum
        loss_sum[...] = self.epoch_loss_sum  # an interrupted epoch's steps before the interruption
        report_every = max(1, min(200, self.steps_per_epoch // 20))
        reported, reported_sum = self.step_in_epoch, self.epoch_loss_sum
        with progress_bar(self.steps_per_epoch, f"epoch {self.epoch + 1}/{c.epochs}",
                          enabled=c.progress, initial=self.step_in_epoch) as bar:
            while self.step_in_epoch < self.steps_per_epoch:
                self.train_on(order, self.step_in_epoch)
                self.step_in_epoch += 1
                first_of_run = self.guard.empty
                if first_of_run or self.step_in_epoch % report_every == 0:
                    total = float(loss_sum[0])  # the only host sync inside an epoch
                    self.guard.check((total - reported_sum) / (self.step_in_epoch - reported), self.step)
                    reported, reported_sum = self.step_in_epoch, total
                    bar.set_postfix(loss=f"{total / self.step_in_epoch:.2f}", refresh=False)
                    bar.update(self.step_in_epoch - bar.n)
                if interrupted():
                    self.epoch_loss_sum = float(loss_sum[0])
                    return False
        self.epoch_loss_sum = 0.0
        self.finish_epoch(float(loss_sum[0]) / self.steps_per_epoch, time.perf_counter() - started)
        return True

    def finish_epoch(self, train_loss, seconds):
        self.guard.check(train_loss, self.step)
        self.epoch += 1
        self.step_in_epoch = 0
        record = {"epoch": self.epoch, "step": self.step, "eps": self.current_eps(),
                  "train_loss": train_loss, "seconds": seconds}
        record.update(self.evaluate())
        self.metrics.append(record)
        improved = record["valid_loss"] < self.best_valid
        self.best_valid = min(self.best_valid, record["valid_loss"])
        if self.out is not None:
            self.save_run_files(record, improved)
        nll = f" test_nll {record['test_nll']:.2f}" if "test_nll" in record else ""
        self.log(f"epoch {self.epoch:3d}  train {train_loss:.2f}  valid {record['valid_loss']:.2f}  "
                 f"test {record['test_loss']:.2f}{nll}  ({seconds:.1f} s)")

    def save_run_files(self, record, improved):
        """The epoch's files: best.h5 (when the validation loss improved), checkpoint.h5, the
        metrics line, the pictures. The first save of an --overwrite run sets the previous run
        aside, and deletes it only once all of them are written (else puts it back)."""
        if not self.replacing:
            self._write_run_files(record, improved)
            return
        aside = set_aside_run(self.out)
        try:
            self._write_run_files(record, improved)
        except BaseException:
            try:
                restore_set_aside(self.out, aside)
            except OSError as err:
                self.log(f"could not put the previous run back from {aside} ({err}): its files "
                         f"are there")
            raise
        self.replacing = False
        removed = discard_set_aside(aside)
        self.log(f"--overwrite: removed the previous run in {self.out}: deleted {', '.join(removed)}")

    def _write_run_files(self, record, improved):
        if improved:
            self.save_checkpoint(self.out / "best.h5")
        # The checkpoint first: it holds every metrics line, so resume can rewrite the file.
        self.save_checkpoint()
        append_text(self.out / "metrics.jsonl", json.dumps(record) + "\n")
        self.write_pictures()

    def evaluate(self):
        evaluator, seed = self.evaluator, self.config.seed
        loss = lambda x: evaluator.sampled_loss(x, seed)  # noqa: E731
        results = {"valid_loss": evaluator.dataset_mean(loss, self.eval_batches(self.valid_images)),
                   "test_loss": evaluator.dataset_mean(loss, self.eval_batches(self.test_images))}
        if self.config.n_latent == 1:  # exact and cheap; the N > 1 bound is computed by evaluate_nll()
            nll = lambda x: evaluator.marginal_nll(x, seed)  # noqa: E731
            results["test_nll"] = evaluator.dataset_mean(nll, self.eval_batches(self.test_images))
        return results

    def evaluate_nll(self, samples=None):
        """The marginal NLL on the test split: exact for N = 1, importance-sampled for N > 1."""
        c = self.config
        samples = samples or c.nll_samples
        batch = max(1, c.eval_batch_size // samples) if c.n_latent > 1 else c.eval_batch_size
        nll = lambda x: self.evaluator.marginal_nll(x, c.seed, samples)  # noqa: E731
        return self.evaluator.dataset_mean(nll, self.eval_batches(self.test_images, batch))

    # -----------------------------------------------------------------------------------------
    # Checkpoints.

    def save_checkpoint(self, path=None):
        m, v = self.model.host_adam_moments()
        save_checkpoint(
            path or self.out / "checkpoint.h5",
            params=self.model.host_params(), optimizer={"m": m, "v": v},
            step=self.step, epoch=self.epoch, eps=self.current_eps(),
            rng_state={"scheme": "philox4x32-10(seed, step); shuffle default_rng([seed, epoch])",
                       "seed": self.config.seed, "step": self.step},
            config=asdict(self.config),
            extra={"step_in_epoch": self.step_in_epoch, "epoch_loss_sum": self.epoch_loss_sum,
                   "adam_steps": self.train_step.adam_steps, "data_digest": self.data_digest,
                   "best_valid": self.best_valid, "metrics_json": json.dumps(self.metrics),
                   "image_shape": (None if self.image_shape is None
                                   else np.asarray(self.image_shape, dtype=np.int64))},
        )

    def kept_files(self):
        """What a run that stops on a fault leaves in its folder, for the message: "" without one."""
        if self.out is None:
            return ""
        if self.replacing:
            return f"; nothing was saved, and the previous run in {self.out} is as it was"
        files = [str(self.out / name) for name in ("checkpoint.h5", "best.h5")
                 if (self.out / name).exists()]
        if not files:
            return "; nothing was saved: it came before the first checkpoint"
        return f"; {' and '.join(files)} hold{'s' * (len(files) == 1)} the last states saved before it"

    def resume(self, path=None):
        path = Path(path or self.out / "checkpoint.h5")
        problem = checkpoint_problem(path)
        if problem is not None:  # a damaged checkpoint is never used
            best = path.parent / "best.h5"
            hint = (f"; {best} is sound (the best epoch so far): copy it over {path} to resume "
                    f"from there" if best.exists() and checkpoint_problem(best) is None else "")
            raise CorruptFileError(f"cannot resume: {problem}{hint}")
        checkpoint = load_checkpoint(path)
        checkpoint.check_finite()
        saved = TrainConfig.from_dict(checkpoint.config)
        extra = checkpoint.extra or {}
        may_change = resumable_fields()
        if "data_digest" in extra:  # the data is recognised by its content, not by its path
            may_change |= {"dataset", "data_root"}
            if extra["data_digest"] != self.data_digest:
                raise ValueError(f"cannot resume from {path}: the data set is not the one the run "
                                 f"was trained on (content digest {self.data_digest[:12]}..., the "
                                 f"run's {extra['data_digest'][:12]}...)")
        changed = [f.name for f in fields(TrainConfig) if f.name not in may_change
                   and getattr(saved, f.name) != getattr(self.config, f.name)]
        if changed:
            raise ValueError(f"cannot resume from {path}: the run was started with different "
                             + ", ".join(f"{n}={getattr(saved, n)!r} (now {getattr(self.config, n)!r})"
                                         for n in changed))
        self.model.load_params(checkpoint.params, checkpoint.optimizer["m"], checkpoint.optimizer["v"])
        self.train_step.step = checkpoint.step
        self.train_step.adam_steps = int(extra.get("adam_steps", checkpoint.step))
        self.epoch = checkpoint.epoch
        self.step_in_epoch = int(extra.get("step_in_epoch", 0))
        self.epoch_loss_sum = float(extra.get("epoch_loss_sum", 0.0))
        self.best_valid = float(extra.get("best_valid", math.inf))
        self.metrics = json.loads(extra.get("metrics_json", "[]"))
        # metrics.jsonl may hold an epoch the checkpoint does not (a crash between the two writes).
        self.out.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in self.metrics))
        self.log(f"resumed from {path} at epoch {self.epoch}, step {self.step}")

    # -----------------------------------------------------------------------------------------
    # Pictures a person would rather look at than read.

    def write_pictures(self):
        model, host = self.model, self.backend.to_host
        originals = next(self.eval_batches(self.test_images[:20]))
        ws = self.evaluator.workspace(len(originals))
        enc_out = model.encode(originals, ws.encoder)
        codes = model.most_likely_codes(enc_out, ws)
        probabilities = model.decode_probabilities(codes, ws.decoder)
        shape = images.picture_shape(model.shape.pixels, self.image_shape)
        grid = images.reconstruction_grid(host(originals), host(probabilities), image_shape=shape)
        images.write_png(self.out / "reconstructions.png", grid)
        if model.shape.n_latent == 1:
            all_codes = ws.all_codes
            category = model.decode_probabilities(all_codes.codes, all_codes.decoder)
            images.write_png(self.out / "codes.png", images.image_grid(host(category), image_shape=shape))
        images.write_loss_curves(self.out / "curves.png", self.metrics)
        if model.shape.is_pairwise:  # the potentials of the pictured images, averaged
            n = model.shape.n_latent
            matrix = np.zeros((n, n))
            matrix[np.triu_indices(n, 1)] = host(ws.structured.pairwise).mean(axis=0)
            images.write_heatmap(self.out / "pairwise.png", matrix,
                                 title=f"mean pairwise potential phi_ij ({model.shape.pairwise})")


class DivergenceGuard:
    """Stops a run whose loss is non-finite or has grown by more than GROWTH times the median
    of the losses seen so far in this process (the first step's included, so a run that blows
    up at once is caught too). Nothing is saved from a diverged state: the last checkpoint and
    best.h5 stay as they were. `kept()` gives the end of the message: what the folder holds."""

    GROWTH = 100.0

    def __init__(self, kept=lambda: ""):
        self.kept, self.history = kept, []

    @property
    def empty(self):
        return not self.history

    def check(self, loss, step):
        if not math.isfinite(loss):
            self._stop(f"the training loss became {loss} at step {step}")
        if self.history and loss > self.GROWTH * statistics.median(self.history):
            self._stop(f"the training loss grew to {loss:.4g} at step {step}, over "
                       f"{self.GROWTH:g} times its median so far ({statistics.median(self.history):.4g})")
        self.history.append(loss)

    def _stop(self, what):
        raise TrainingDiverged(f"{what}: training stopped{self.kept()} (try a smaller learning rate)")


class _interrupt_flag:
    """Context manager: SIGINT and SIGTERM set a flag instead of raising mid-step; it returns a
    callable that gives the signal's number once one has arrived (else 0)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.signum, self.previous = 0, {}
        for signum in self.SIGNALS:
            try:
                self.previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave the signals alone
                pass
        return lambda: self.signum

    def _handle(self, signum, frame):
        self.signum = self.signum or signum

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _write_atomic(path, text):
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
