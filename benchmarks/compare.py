"""dvae_cupy against the PyTorch peer (torch_peer.py), side by side, in one process.

    python benchmarks/compare.py speed   [--threads 2] [--configs 1x10 1x50 20x10]
    python benchmarks/compare.py quality [--epochs 10] [--seeds 0 1 2]
    python benchmarks/compare.py figure1 [--epochs 10] [--ks 10 20 30 40 50] [--png figure1.png]
    python benchmarks/compare.py scaling [--threads 2]
    python benchmarks/compare.py structured-speed   [--threads 2] [--sizes 15] [--trained ckpt.h5]
                                 [--sides pairwise-attractive peer-structured
                                          peer-structured-published]
    python benchmarks/compare.py structured-scaling [--threads 2] [--sizes 5 8 10 12 15 18 20]
                                 [--sides ...]
    python benchmarks/compare.py structured-quality [--epochs 30] [--seeds 0 1 2]

speed    ms per training step two ways, each side in its own process, the two alternating, with
         the same N, K, batch size, seed and thread count:
         in the loop: whole epochs of --loop-steps steps as a user sees them: ours the epoch time
           dvae-train prints (Trainer.run_epoch: shuffle, batch gather and binarisation, step, loss
           bookkeeping; evaluation excluded, no progress bar), the peer's its own training loop
           (a shuffle per epoch, the batch by fancy indexing, train_step) / steps; --loop-blocks
           epochs each, median and range;
         bare: the step alone on the same batches (median over --steps after --warmup);
         and peak memory, the ratio peer / ours, and both sides' fraction of the step's
         matrix-product floor (benchmarks/floor.py, at this machine's measured sgemm rates).
quality  test loss of ours and of the peer after the same epochs on Fashion-MNIST (N=1, K=10),
         over several seeds: mean and standard deviation.
figure1  the paper's Figure 1 for Fashion-MNIST: test loss against K (N = 1) for the direct
         estimator and for straight-through Gumbel-softmax, the same epochs each; a table and a PNG.
scaling  our ms per step against N*K and batch size, beside the arithmetic floor: the FLOPs of the
         candidate products over this machine's measured float32 GEMM rate.
structured-speed    the pairwise binary model (N binary variables, K = 2): ms per training step
         of ours (attractive: min-cut; signed: enumeration) against the published structured
         algorithm (torch_peer_structured.py: PyMaxflow per sample), raced as `speed` races,
         on the same batches; peak memory of a step; the ratio peer / ours against each peer
         that raced: peer-structured (its per-sample work vectorised) and, with --sides,
         peer-structured-published (the published code's per-sample Python loops, the same
         codes and gradients). --trained ckpt.h5:
         ours starts from that trained model at its eps (how many neighbours pruning leaves
         undecoded depends on the model: an untrained one's step is the fastest).
structured-scaling  the same race of the structured sides at each N, beside the ms per batch
         of our two CPU solvers alone (bench_structured.py's potentials), a ratio per structured
         peer raced; fewer steps per N suit it (--steps 20).
structured-quality  test loss on Fashion-MNIST after the same epochs of the pairwise model
         (attractive) and of the unstructured N x 2 model, both ours, direct estimator,
         default options otherwise, several seeds: per-epoch curves, mean and spread.
Every table names the machine. Needs the `bench` extra (torch; matplotlib for the PNG).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from threads import pin_threads  # noqa: E402

pin_threads(sys.argv)  # before NumPy/BLAS and torch load: the same count for both sides

import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

from floor import step_floor  # noqa: E402

from dvae_cupy.backend import get_backend  # noqa: E402
from dvae_cupy.checkpoint import load_checkpoint  # noqa: E402
from dvae_cupy.data import load_dataset  # noqa: E402
from dvae_cupy.config import TrainConfig  # noqa: E402
from dvae_cupy.estimators import EstimatorConfig  # noqa: E402
from dvae_cupy.model import Model, ModelShape  # noqa: E402
from dvae_cupy.step import TrainStep  # noqa: E402
from dvae_cupy.train import Trainer  # noqa: E402


def machine(backend):
    if backend.name == "gpu":
        import cupy

        return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def threads_note(args):
    return f"{args.threads} threads (BLAS/OpenMP; torch.set_num_threads for the peer)"


def train_images():
    data = load_dataset("fashion-mnist")
    return data.train.astype(np.float32), data.test.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# speed

def trained_start(path, shape):
    """(parameters, eps) of the checkpoint at `path`, a model of `shape` (else SystemExit)."""
    checkpoint = load_checkpoint(path)
    theirs = TrainConfig.from_dict(checkpoint.config).model_shape(checkpoint.params["enc_w1"].shape[0])
    if theirs != shape:
        raise SystemExit(f"--trained {path}: a model of {theirs}, not {shape}")
    return checkpoint.params, checkpoint.eps


class OurStepper:
    def __init__(self, backend, n_latent, n_categories, seed, batch_size=100,
                 structure="categorical", pairwise="attractive", trained=None):
        """trained: a checkpoint path whose model (the same shape) the steps start from, at its
        eps: what a step costs later in training (pruning's share depends on the model)."""
        self.backend = backend
        shape = ModelShape(n_latent, n_categories, structure=structure, pairwise=pairwise)
        self.model = Model(shape, backend, seed=seed)
        self.step = TrainStep(self.model, EstimatorConfig("direct"), seed, batch_size, 1e-3)
        eps = 1.0
        if trained is not None:
            params, eps = trained_start(trained, shape)
            self.model.load_params(params)
        self.step.set_state(0, 0, eps)

    def __call__(self, x):
        self.step.batch[...] = x
        self.step()
        self.backend.synchronize()

    def peak_bytes(self, x):
        if self.backend.name == "gpu":
            return self.backend.xp.get_default_memory_pool().total_bytes()
        tracemalloc.start()
        self(x)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak + self.model.nbytes() + self.step.nbytes()  # persistent arrays, made before tracing


# The sides a race can run: ours with a model shape, or a peer (the published algorithm).
OUR_SIDES = {"ours": {}, "pairwise-attractive": {"structure": "pairwise", "pairwise": "attractive"},
             "pairwise-signed": {"structure": "pairwise", "pairwise": "signed"}}
PEER_SIDES = ("peer", "peer-structured", "peer-structured-published")
SIDES = tuple(OUR_SIDES) + PEER_SIDES


def _make_side(who, backend_name, n_latent, n_categories, seed, threads, batch_size, trained=None):
    """(step function on one batch, peak-bytes function, batch converter) of one side; trained:
    our side's starting checkpoint (OurStepper), the peers' start untrained."""
    if who in OUR_SIDES:
        backend = get_backend(backend_name)
        stepper = OurStepper(backend, n_latent, n_categories, seed, batch_size, **OUR_SIDES[who],
                             trained=trained)
        return stepper, stepper.peak_bytes, backend.asarray
    device = "cuda" if backend_name == "gpu" else "cpu"  # the same device as ours
    if who == "peer":
        from torch_peer import TorchPeer

        peer = TorchPeer(n_latent, n_categories, seed=seed, threads=threads, device=device)
    elif who in ("peer-structured", "peer-structured-published"):
        from torch_peer_structured import TorchPeerStructured

        peer = TorchPeerStructured(n_latent, seed=seed, threads=threads, device=device,
                                   published_loops=who == "peer-structured-published")
    else:
        raise ValueError(f"unknown side {who!r}: one of {SIDES}")
    return peer.train_step, peer.peak_memory_bytes, lambda batch: batch


def _worker(connection, who, backend_name, n_latent, n_categories, seed, threads, batch_size,
            trained=None):
    """One side of the race in its own process, so that neither side's idle BLAS/OpenMP threads
    (which spin for a while after each call) steal the cores from the other."""
    images, _ = train_images()
    stepper, peak, convert = _make_side(who, backend_name, n_latent, n_categories, seed, threads,
                                        batch_size, trained)
    batches = [convert(images[i * batch_size:(i + 1) * batch_size]) for i in range(100)]
    while True:
        command, start, stop = connection.recv()
        if command == "quit":
            return
        if command == "peak":
            connection.send(peak(batches[0]))
            continue
        times = []
        for i in range(start, stop):
            started = time.perf_counter()
            stepper(batches[i % len(batches)])
            times.append(time.perf_counter() - started)
        connection.send(times)


def peer_epoch(peer, images, seed, epoch, steps, batch_size):
    """The peer's own training loop for one epoch of `steps` steps: the published code's
    shuffled minibatches (here a permutation and NumPy fancy indexing instead of torchvision's
    DataLoader); returns its seconds."""
    started = time.perf_counter()
    order = np.random.default_rng([seed, epoch]).permutation(len(images))
    for i in range(steps):
        peer.train_step(images[order[i * batch_size:(i + 1) * batch_size]])
    return time.perf_counter() - started


def our_trainer(backend_name, n_latent, n_categories, seed, batch_size, steps):
    """dvae-train's Trainer on the first steps * batch_size training images (one epoch = `steps`
    steps), no run folder; each epoch's seconds (the figure dvae-train prints) are appended to
    the returned list instead of evaluating. Returns (trainer, seconds list)."""
    config = TrainConfig(n_latent=n_latent, n_categories=n_categories, seed=seed,
                         batch_size=batch_size, train_subset=steps * batch_size,
                         eval_subset=batch_size, backend=backend_name, out=None, progress=False)
    trainer = Trainer(config, log=lambda *a: None)
    seconds = []

    def finish_epoch(train_loss, epoch_seconds):  # the epoch's bookkeeping, minus evaluation
        trainer.guard.check(train_loss, trainer.step)
        trainer.epoch += 1
        trainer.step_in_epoch = 0
        seconds.append(epoch_seconds)
    trainer.finish_epoch = finish_epoch
    trainer.train_step.set_state(0, 0, trainer.current_eps())  # as Trainer.run does first
    return trainer, seconds


def _loop_worker(connection, who, backend_name, n_latent, n_categories, seed, threads, batch_size,
                 steps):
    """One side of the in-loop race: each command runs one epoch of `steps` steps and answers
    its seconds per step."""
    if who == "ours":
        trainer, seconds = our_trainer(backend_name, n_latent, n_categories, seed, batch_size, steps)

        def epoch(_):
            trainer.run_epoch()
            return seconds[-1] / steps
    else:
        from torch_peer import TorchPeer

        images, _ = train_images()
        images = images[:steps * batch_size]
        peer = TorchPeer(n_latent, n_categories, seed=seed, threads=threads,
                         device="cuda" if backend_name == "gpu" else "cpu")

        def epoch(index):
            return peer_epoch(peer, images, seed, index, steps, batch_size) / steps
    index = 0
    while connection.recv() != "quit":
        connection.send(epoch(index))
        index += 1


def loop_race(args, n_latent, n_categories, steps):
    """{name: per-step seconds of each timed epoch}: ours and the peer in worker processes,
    alternating whole epochs after one warm-up epoch each."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    workers = {}
    for who in ("ours", "peer"):
        mine, theirs = context.Pipe()
        process = context.Process(target=_loop_worker, args=(
            theirs, who, args.backend, n_latent, n_categories, args.seed, args.threads,
            args.batch_size, steps))
        process.start()
        workers[who] = (mine, process)
    for connection, _ in workers.values():  # warm-up epoch, one side at a time
        connection.send("run")
        connection.recv()
    times = {who: [] for who in workers}
    for _ in range(args.loop_blocks):
        for who, (connection, _) in workers.items():
            connection.send("run")
            times[who].append(connection.recv())
    for connection, process in workers.values():
        connection.send("quit")
        process.join()
    return times


def race(args, n_latent, n_categories, sides=("ours", "peer")):
    """Each side (ours and the peer by default) in a worker process, alternating blocks of steps
    on the same batch sequence; returns {side: (per-step seconds, peak bytes)}."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    workers = {}
    for who in sides:
        mine, theirs = context.Pipe()
        process = context.Process(target=_worker, args=(theirs, who, args.backend, n_latent, n_categories,
                                                        args.seed, args.threads, args.batch_size,
                                                        getattr(args, "trained", None)))
        process.start()
        workers[who] = (mine, process)
    for connection, _ in workers.values():  # warm-up, one side at a time
        connection.send(("run", 0, args.warmup))
        connection.recv()
    times = {who: [] for who in workers}
    for start in range(args.warmup, args.warmup + args.steps, args.block):
        stop = min(start + args.block, args.warmup + args.steps)
        for who, (connection, _) in workers.items():
            connection.send(("run", start, stop))
            times[who] += connection.recv()
    results = {}
    for who, (connection, process) in workers.items():
        connection.send(("peak", 0, 0))
        results[who] = (times[who], connection.recv())
        connection.send(("quit", 0, 0))
        process.join()
    return results


def speed(args):
    backend = get_backend(args.backend)
    import torch

    print(f"## Training-step speed: dvae_cupy vs the PyTorch peer ({backend.name}: {machine(backend)}; "
          f"{args.threads} threads each: BLAS/OpenMP and torch.set_num_threads; load average "
          f"{os.getloadavg()[0]:.1f} at the start)\n")
    print(f"batch {args.batch_size}, direct estimator, each side in its own process; in the loop: "
          f"{args.loop_blocks} alternating epochs of --loop-steps steps each after one warm-up epoch "
          f"(median, and the range in brackets); bare: median of {args.steps} steps after "
          f"{args.warmup} warm-up, alternating in blocks of {args.block} steps on the same batches; "
          f"floor: the step's matrix products at this machine's sgemm rates (benchmarks/floor.py), "
          f"and each side's floor / its ms per step; torch {torch.__version__}\n")
    print("| N | K | floor ms | in loop: ours ms/step | peer ms/step | peer/ours | ours floor fraction "
          "| peer floor fraction | bare: ours ms/step | peer ms/step | peer/ours | ours floor fraction "
          "| ours peak MB | peer peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rates = {}
    for pair in args.configs:
        n_latent, n_categories = map(int, pair.split("x"))
        steps = args.loop_steps or (20 if n_latent > 1 else 100)
        loop = loop_race(args, n_latent, n_categories, steps)
        results = race(args, n_latent, n_categories)
        floor_ms = 1e3 * step_floor(args.batch_size, n_latent, n_categories, rates=rates)[0]
        (ours_times, ours_peak), (peer_times, peer_peak) = results["ours"], results["peer"]
        ours_ms, peer_ms = 1e3 * statistics.median(ours_times), 1e3 * statistics.median(peer_times)
        ours_loop, peer_loop = (1e3 * statistics.median(loop[w]) for w in ("ours", "peer"))

        def spread(who):
            return f"[{1e3 * min(loop[who]):.2f}-{1e3 * max(loop[who]):.2f}]"
        print(f"| {n_latent} | {n_categories} | {floor_ms:.2f} | {ours_loop:.2f} {spread('ours')} | "
              f"{peer_loop:.2f} {spread('peer')} | {peer_loop / ours_loop:.1f}x | "
              f"{floor_ms / ours_loop:.0%} | {floor_ms / peer_loop:.0%} | {ours_ms:.2f} | "
              f"{peer_ms:.2f} | {peer_ms / ours_ms:.1f}x | {floor_ms / ours_ms:.0%} | "
              f"{ours_peak / 2**20:.1f} | {peer_peak / 2**20:.1f} |", flush=True)


# ---------------------------------------------------------------------------------------------
# quality and figure 1

def train_ours(estimator, n_categories, epochs, seed, backend, **options):
    config = TrainConfig(estimator=estimator, n_categories=n_categories, epochs=epochs, seed=seed,
                         backend=backend, progress=False, out=os.path.join("runs", "bench",
                         f"{estimator}-K{n_categories}-s{seed}"), **options)
    trainer = Trainer(config, log=lambda *a: None, overwrite=True)  # a fresh run each time
    metrics = trainer.run()
    return metrics[-1]["test_loss"], sum(m["seconds"] for m in metrics)


def train_peer(n_categories, epochs, seed, threads):
    from torch_peer import TorchPeer

    images, test = train_images()
    images = images[:50_000]
    peer = TorchPeer(1, n_categories, seed=seed, threads=threads)
    seconds = sum(peer_epoch(peer, images, seed, epoch, len(images) // 100, 100)
                  for epoch in range(epochs))
    return peer.test_loss(test), seconds


def quality(args):
    backend = get_backend(args.backend)
    print(f"## Quality parity on Fashion-MNIST (N=1, K=10, {args.epochs} epochs of 500 steps, seeds "
          f"{args.seeds}; test loss = BCE at a sampled code + KL, per image, on the 10k test images; "
          f"{machine(backend)}; {threads_note(args)})\n")
    runs = {
        "dvae_cupy, direct (default: KL reported, not back-propagated, as published)":
            lambda seed: train_ours("direct", 10, args.epochs, seed, args.backend),
        "dvae_cupy, direct with --kl-backprop":
            lambda seed: train_ours("direct", 10, args.epochs, seed, args.backend, kl_backprop=True),
        "PyTorch peer (the published algorithm)":
            lambda seed: train_peer(10, args.epochs, seed, args.threads),
    }
    results = {name: [] for name in runs}
    for seed in args.seeds:
        for name, run in runs.items():
            results[name].append(run(seed))
            print(f"seed {seed}: {name}: test loss {results[name][-1][0]:.2f} "
                  f"({results[name][-1][1]:.0f} s training)", flush=True)
    print("\n| | test loss, mean | std | per seed | training seconds, mean |")
    print("|---|---|---|---|---|")
    for name, pairs in results.items():
        losses, seconds = np.array([p[0] for p in pairs]), [p[1] for p in pairs]
        spread = losses.std(ddof=1) if len(losses) > 1 else 0.0
        print(f"| {name} | {losses.mean():.2f} | {spread:.2f} | {', '.join(f'{v:.2f}' for v in losses)} | "
              f"{np.mean(seconds):.0f} |")


def figure1(args):
    backend = get_backend(args.backend)
    print(f"## Figure 1, Fashion-MNIST: test loss against K (N = 1), {args.epochs} epochs each "
          f"(the paper trains 300); seed {args.seeds[0]}; {machine(backend)}\n")
    rows = []
    print("| K | direct | Gumbel-softmax (straight-through) |")
    print("|---|---|---|")
    for k in args.ks:
        direct, _ = train_ours("direct", k, args.epochs, args.seeds[0], args.backend)
        gumbel, _ = train_ours("gumbel-softmax", k, args.epochs, args.seeds[0], args.backend,
                               straight_through=True)
        rows.append((k, direct, gumbel))
        print(f"| {k} | {direct:.2f} | {gumbel:.2f} |", flush=True)
    import json

    with open(args.png.replace(".png", ".json"), "w") as f:
        json.dump({"epochs": args.epochs, "seed": args.seeds[0], "rows": rows}, f)
    plot_figure1(args)


def plot_figure1(args):
    """The PNG from the JSON that figure1 saves beside it (so it can be redrawn without training)."""
    import json

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(matplotlib is not installed: no PNG; pip install matplotlib)")
        return
    with open(args.png.replace(".png", ".json")) as f:
        saved = json.load(f)
    ks, direct, gumbel = zip(*saved["rows"])
    args.epochs = saved["epochs"]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot(ks, direct, "o-", label="direct (ours)")
    ax.plot(ks, gumbel, "s--", label="Gumbel-softmax ST")
    ax.set_xlabel("K (categories, N = 1)")
    ax.set_ylabel("test loss (BCE + KL)")
    ax.set_title(f"Fashion-MNIST, {args.epochs} epochs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.png)
    print(f"\nplot written to {args.png}")


# ---------------------------------------------------------------------------------------------
# scaling

def scaling(args):
    backend = get_backend("cpu")
    images, _ = train_images()
    rates = {}
    print(f"## Scaling of our step ({machine(backend)}; {threads_note(args)}); float32 sgemm rates "
          f"measured at each product's shape\n")
    print("floor = the step's matrix products (benchmarks/floor.py) at this machine's sgemm rate "
          "at each shape. The MLPs: encoder forward and dW1 (2 x B x D x H x 2), decoder forward, "
          "dW2 and dhidden (3 x B x H x D x 2), plus the small N*K-wide ones; the candidates: "
          "B x N x (K-1) rows x H x D x 2 and x @ W2^T for N > 1, K x H x D x 2 + B x K x D x 2 "
          "for N = 1. Everything else (Adam, the fused kernels) is memory-bound and not in the "
          "floor; our step does less than these products where it can (N = 1: K decoder rows; "
          "N > 1: pruned neighbours), so it can run below the floor.\n")
    print("| N | K | N*K | batch | ms/step | floor ms, all products | of which candidates | floor / step |")
    print("|---|---|---|---|---|---|---|---|")
    for pair, batch in [("1x10", 100), ("1x50", 100), ("5x10", 100), ("10x10", 100), ("20x10", 100),
                        ("20x10", 25), ("20x10", 50), ("20x10", 200), ("1x10", 25), ("1x10", 400)]:
        n, k = map(int, pair.split("x"))
        stepper = OurStepper(backend, n, k, 0, batch_size=batch)
        data = [images[i * batch:(i + 1) * batch] for i in range(20)]
        times = []
        for i in range(5 + args.steps):
            started = time.perf_counter()
            stepper(data[i % len(data)])
            if i >= 5:
                times.append(time.perf_counter() - started)
        ms = 1e3 * statistics.median(times)
        floor_ms = 1e3 * step_floor(batch, n, k, rates=rates)[0]
        candidates_ms = 1e3 * step_floor(batch, n, k, rates=rates, role="candidates")[0]
        print(f"| {n} | {k} | {n * k} | {batch} | {ms:.2f} | {floor_ms:.2f} | {candidates_ms:.2f} | "
              f"{floor_ms / ms:.0%} |", flush=True)


# ---------------------------------------------------------------------------------------------
# structured latents: the pairwise binary model against the published structured algorithm

STRUCTURED_SIDES = ("pairwise-attractive", "pairwise-signed", "peer-structured")  # the default
# The structured peers, in the order of the ratio columns: per-sample work vectorised, as published.
STRUCTURED_PEERS = ("peer-structured", "peer-structured-published")
SIDE_LABELS = {"pairwise-attractive": "ours, pairwise attractive (min-cut)",
               "pairwise-signed": "ours, pairwise signed (enumeration)",
               "peer-structured": "peer, published structured, per-sample work vectorised "
                                  "(PyMaxflow per sample)",
               "peer-structured-published": "peer, published structured as published (its "
                                            "per-sample Python loops)",
               "ours": "ours, unstructured N x 2", "peer": "peer, published unstructured N x 2"}


def _percentile_ms(times, q):
    return 1e3 * float(np.percentile(times, q))


def _peers_of(side):
    """The (vectorised, as-published) peers a side's ratios are taken against: for the N x 2
    model the unstructured peer (its candidates vectorised) and no as-published one."""
    return ("peer", None) if side in ("ours", "peer") else STRUCTURED_PEERS


def _ratio(medians, peer, side):
    """'{peer / side}x' of two medians, '-' where the peer did not race."""
    return f"{medians[peer] / medians[side]:.1f}x" if peer in medians else "-"


def _load():
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def structured_speed(args):
    backend = get_backend(args.backend)
    import torch

    print(f"## Training-step speed, the pairwise binary model: dvae_cupy vs the published "
          f"structured algorithm ({backend.name}: {machine(backend)}; {threads_note(args)})\n")
    print(f"batch {args.batch_size}, K = 2, direct estimator, median of {args.steps} steps after "
          f"{args.warmup} warm-up; each side in its own process, alternating in blocks of "
          f"{args.block} steps on the same Fashion-MNIST batches; torch {torch.__version__}; "
          f"ours from {args.trained or 'an untrained model (eps 1)'}; "
          f"load average at start {_load()}. Ratios: the vectorised peer's median (per-sample "
          f"work vectorised; for the unstructured N x 2 rows, torch_peer.py) and the as-published "
          f"peer's (the published code's per-sample Python loops) over this side's; '-': that "
          f"peer did not race\n")
    print("| N | side | ms/step | p10 - p90 | steps/s | peak MB | vectorised peer / this | "
          "as-published peer / this |")
    print("|---|---|---|---|---|---|---|---|")
    for n_latent in args.sizes:
        if args.trained:  # here, before the workers start: a worker's exit would hang the race
            for who in args.sides:
                if who in OUR_SIDES:
                    trained_start(args.trained, ModelShape(n_latent, 2, **OUR_SIDES[who]))
        results = race(args, n_latent, 2, sides=args.sides)
        medians = {who: 1e3 * statistics.median(times) for who, (times, _) in results.items()}
        for who, (times, peak) in results.items():
            ratios = " | ".join(_ratio(medians, peer, who) for peer in _peers_of(who))
            print(f"| {n_latent} | {SIDE_LABELS[who]} | {medians[who]:.2f} | "
                  f"{_percentile_ms(times, 10):.1f} - {_percentile_ms(times, 90):.1f} | "
                  f"{1e3 / medians[who]:.0f} | {peak / 2**20:.1f} | {ratios} |", flush=True)
    print(f"\nload average at the end {_load()}")


def solver_ms(n_latent, batch, repeats):
    """{(solver, solve): ms per batch} of our two CPU solvers alone, on bench_structured.py's
    training-like potentials (z_opt: perturbed unaries; z_dir: shifted by eps L)."""
    from bench_structured import batch_potentials, median_ms
    from dvae_cupy.kernels import pairwise_enumeration, pairwise_mincut

    rng = np.random.default_rng(n_latent)
    times = {}
    for shifted, solve in ((False, "z_opt"), (True, "z_dir")):
        unary, pairwise = batch_potentials(rng, batch, n_latent, shifted)
        codes = np.empty((batch, n_latent), np.int32)
        for name, solver in (("min-cut", pairwise_mincut.mincut_argmax),
                             ("enumeration", pairwise_enumeration.enumeration_argmax)):
            times[name, solve] = median_ms(solver, unary, pairwise, codes, repeats)
    return times


def structured_scaling(args):
    backend = get_backend("cpu")
    sides = [s for s in STRUCTURED_SIDES + STRUCTURED_PEERS[1:] if s in args.sides]
    peers = [s for s in STRUCTURED_PEERS if s in sides] or ["peer-structured"]  # ratio columns
    print(f"## Scaling of the pairwise model against N ({machine(backend)}; {threads_note(args)}; "
          f"load average at start {_load()})\n")
    print(f"Solvers: our CPU kernels alone, ms per batch of {args.batch_size} rows (median of 5 "
          f"calls), z_opt / z_dir potentials as bench_structured.py draws them. Steps: ms per "
          f"training step (median of {args.steps} after {args.warmup} warm-up, raced as "
          f"structured-speed races) and the peak memory of a step (ours: tracemalloc peak of one "
          f"step + the model's and the step's arrays, as bench_step.py; peer: torch's allocator "
          f"peak in one step).\n")
    short = {"pairwise-attractive": "attractive", "pairwise-signed": "signed",
             "peer-structured": "vectorised peer", "peer-structured-published": "as-published peer"}
    head = " | ".join(f"{short[s]} ms/step" for s in sides)
    ratio_head = " | ".join(f"{short[p]} / {short[s]}" for p in peers
                            for s in ("pairwise-attractive", "pairwise-signed"))
    mems = " | ".join(f"{short[s]} peak MB" for s in sides)
    print(f"| N | min-cut ms/batch | enumeration ms/batch | {head} | {ratio_head} | {mems} |")
    print("|---" * (3 + 2 * len(sides) + 2 * len(peers)) + "|")
    for n_latent in args.sizes:
        solvers = solver_ms(n_latent, args.batch_size, 5)
        results = race(args, n_latent, 2, sides=sides)
        medians = {who: 1e3 * statistics.median(times) for who, (times, _) in results.items()}
        ratios = " | ".join(_ratio(medians, p, s) if s in medians else "-" for p in peers
                            for s in ("pairwise-attractive", "pairwise-signed"))
        steps = " | ".join(f"{medians[s]:.2f}" for s in sides)
        peaks = " | ".join(f"{results[s][1] / 2**20:.1f}" for s in sides)
        mincut, enumeration = (f"{solvers[name, 'z_opt']:.2f} / {solvers[name, 'z_dir']:.2f}"
                               for name in ("min-cut", "enumeration"))
        print(f"| {n_latent} | {mincut} | {enumeration} | {steps} | {ratios} | {peaks} |",
              flush=True)
    print(f"\nload average at the end {_load()}")


def train_structured(side, n_latent, epochs, seed, backend, reuse):
    """Our model of `side` ("pairwise-attractive", "pairwise-signed" or "ours": N x 2
    categorical) trained with the defaults otherwise; returns its per-epoch metrics. With
    `reuse`, a run folder that already holds `epochs` epochs of metrics is read, not retrained."""
    import json
    import shutil

    shape = OUR_SIDES[side]
    out = os.path.join("runs", "bench", f"structured-{side}-N{n_latent}-e{epochs}-s{seed}")
    metrics_file = os.path.join(out, "metrics.jsonl")
    if reuse and os.path.exists(metrics_file):
        with open(metrics_file) as f:
            metrics = [json.loads(line) for line in f if line.strip()]
        if len(metrics) == epochs:
            return metrics, out
    config = TrainConfig(n_latent=n_latent, n_categories=2, epochs=epochs, seed=seed,
                         backend=backend, progress=False, out=out,
                         latent_structure=shape.get("structure", "categorical"),
                         pairwise=shape.get("pairwise", "attractive"))
    shutil.rmtree(out, ignore_errors=True)
    return Trainer(config, log=lambda *a: None).run(), out


def structured_quality(args):
    import json
    import shutil

    backend = get_backend(args.backend)
    print(f"## Quality on Fashion-MNIST: the pairwise model against the unstructured N x 2 model "
          f"(N = {args.sizes[0]}, both ours, direct estimator, default options otherwise; "
          f"{args.epochs} epochs of 500 steps; seeds {args.seeds}; test loss = BCE at the arg max "
          f"of one Gumbel draw + unary KL, per image, on the 10k test images; {machine(backend)}; "
          f"{threads_note(args)})\n", flush=True)
    n_latent, runs = args.sizes[0], {side: [] for side in args.models}
    for seed in args.seeds:
        for side in args.models:
            metrics, out = train_structured(side, n_latent, args.epochs, seed, args.backend,
                                            args.reuse)
            runs[side].append(metrics)
            curve = [m["test_loss"] for m in metrics]
            print(f"seed {seed}: {SIDE_LABELS[side]}: test loss {curve[0]:.2f} after epoch 1 -> "
                  f"{curve[-1]:.2f} after {len(curve)} ({sum(m['seconds'] for m in metrics):.0f} s "
                  f"training, {out})", flush=True)
            if args.heatmap and side.startswith("pairwise") and seed == args.seeds[0]:
                shutil.copyfile(os.path.join(out, "pairwise.png"), args.heatmap)
    with open(args.json, "w") as f:
        json.dump({"n_latent": n_latent, "epochs": args.epochs, "seeds": args.seeds,
                   "machine": machine(backend), "threads": args.threads,
                   "test_loss": {side: [[m["test_loss"] for m in run] for run in metrics]
                                 for side, metrics in runs.items()}}, f)
    shown = sorted({e for e in (1, 5, 10, 20, 30, args.epochs) if e <= args.epochs})
    print(f"\n| model | test loss after {args.epochs} epochs, mean | std | per seed | "
          + " | ".join(f"mean after {e}" for e in shown) + " | training s, mean |")
    print("|---" * (5 + len(shown)) + "|")
    for side, metrics in runs.items():
        curves = np.array([[m["test_loss"] for m in run] for run in metrics])
        final = curves[:, -1]
        spread = final.std(ddof=1) if len(final) > 1 else 0.0
        seconds = np.mean([sum(m["seconds"] for m in run) for run in metrics])
        print(f"| {SIDE_LABELS[side]} | {final.mean():.2f} | {spread:.2f} | "
              f"{', '.join(f'{v:.2f}' for v in final)} | "
              + " | ".join(f"{curves[:, e - 1].mean():.2f}" for e in shown) + f" | {seconds:.0f} |")
    if len(args.models) == 2:
        a, b = (np.array([run[-1]["test_loss"] for run in runs[s]]) for s in args.models)
        if len(a) == len(b):
            d = a - b
            spread = d.std(ddof=1) if len(d) > 1 else 0.0
            print(f"\n{args.models[0]} - {args.models[1]}, paired by seed: mean {d.mean():.2f}, "
                  f"std {spread:.2f}, per seed {', '.join(f'{v:.2f}' for v in d)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("speed", "quality", "figure1", "plot", "scaling",
                                         "structured-speed", "structured-scaling",
                                         "structured-quality"))
    parser.add_argument("--backend", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--configs", nargs="*", default=["1x10", "1x50", "20x10"])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument("--loop-steps", type=int, default=None,
                        help="speed: steps per timed epoch in the loop (default 100; 20 for N > 1)")
    parser.add_argument("--loop-blocks", type=int, default=5,
                        help="speed: timed epochs per side in the loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None,
                        help="quality, figure1: 10; structured-quality: 30 (the paper's)")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--ks", type=int, nargs="*", default=[10, 20, 30, 40, 50])
    parser.add_argument("--png", default="benchmarks/figure1.png")
    parser.add_argument("--sizes", type=int, nargs="*", default=None,
                        help="structured-*: N values (default 15; structured-scaling: 5 8 10 "
                             "12 15 18 20)")
    parser.add_argument("--sides", nargs="*", choices=SIDES, default=list(STRUCTURED_SIDES),
                        help="structured-speed/-scaling: the sides raced (default: "
                             "pairwise-attractive pairwise-signed peer-structured); "
                             "peer-structured-published is the structured peer doing the "
                             "published code's per-sample Python loops, peer-structured the "
                             "same algorithm with that work vectorised; ours / peer: the "
                             "unstructured N x 2 model (structured-speed only)")
    parser.add_argument("--models", nargs="*", choices=tuple(OUR_SIDES),
                        default=["pairwise-attractive", "ours"],
                        help="structured-quality: our models trained (ours = unstructured N x 2)")
    parser.add_argument("--reuse", action="store_true",
                        help="structured-quality: read the run folders that already hold "
                             "--epochs epochs instead of training them again")
    parser.add_argument("--json", default="benchmarks/structured_quality.json")
    parser.add_argument("--trained", default=None,
                        help="structured-speed: our side's steps start from this checkpoint (the "
                             "same N and structure; race only the sides it fits) at its eps, so "
                             "the figure is a trained model's step; the peer starts untrained")
    parser.add_argument("--heatmap", default=None,
                        help="structured-quality: copy the first seed's pairwise.png here")
    args = parser.parse_args()
    if args.sizes is None:
        args.sizes = [5, 8, 10, 12, 15, 18, 20] if args.what == "structured-scaling" else [15]
    if args.epochs is None:
        args.epochs = 30 if args.what == "structured-quality" else 10
    commands = {"speed": speed, "quality": quality, "figure1": figure1, "plot": plot_figure1,
                "scaling": scaling, "structured-speed": structured_speed,
                "structured-scaling": structured_scaling, "structured-quality": structured_quality}
    commands[args.what](args)


if __name__ == "__main__":
    main()
