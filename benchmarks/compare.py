"""dvae_cupy against the PyTorch peer (torch_peer.py), side by side, in one process.

    python benchmarks/compare.py speed   [--threads 2] [--configs 1x10 1x50 20x10]
    python benchmarks/compare.py quality [--epochs 10] [--seeds 0 1 2]
    python benchmarks/compare.py figure1 [--epochs 10] [--ks 10 20 30 40 50] [--png figure1.png]
    python benchmarks/compare.py scaling [--threads 2]

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
Every table names the machine. Needs the `bench` extra (torch; matplotlib for the PNG).
"""
import argparse
import os
import sys


def _pin_threads(argv):
    """Thread counts must be set before NumPy/BLAS and torch load: the same count for both."""
    if "--threads" in argv:
        threads = argv[argv.index("--threads") + 1]
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ[name] = threads


_pin_threads(sys.argv)

import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from floor import step_floor  # noqa: E402

from dvae_cupy.backend import get_backend  # noqa: E402
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

class OurStepper:
    def __init__(self, backend, n_latent, n_categories, seed, batch_size=100):
        self.backend = backend
        self.model = Model(ModelShape(n_latent, n_categories), backend, seed=seed)
        self.step = TrainStep(self.model, EstimatorConfig("direct"), seed, batch_size, 1e-3)
        self.step.set_state(0, 0, 1.0)

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


def _worker(connection, who, backend_name, n_latent, n_categories, seed, threads, batch_size):
    """One side of the race in its own process, so that neither side's idle BLAS/OpenMP threads
    (which spin for a while after each call) steal the cores from the other."""
    images, _ = train_images()
    batches = [images[i * batch_size:(i + 1) * batch_size] for i in range(100)]
    if who == "ours":
        backend = get_backend(backend_name)
        stepper = OurStepper(backend, n_latent, n_categories, seed, batch_size)
        batches = [backend.asarray(b) for b in batches]
        peak = stepper.peak_bytes
    else:
        from torch_peer import TorchPeer

        peer = TorchPeer(n_latent, n_categories, seed=seed, threads=threads,
                         device="cuda" if backend_name == "gpu" else "cpu")  # the same device as ours
        stepper, peak = peer.train_step, peer.peak_memory_bytes
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


def race(args, n_latent, n_categories):
    """Ours and the peer, each in a worker process, alternating blocks of steps on the same batch
    sequence; returns {name: (per-step seconds, peak bytes)}."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    workers = {}
    for who in ("ours", "peer"):
        mine, theirs = context.Pipe()
        process = context.Process(target=_worker, args=(theirs, who, args.backend, n_latent, n_categories,
                                                        args.seed, args.threads, args.batch_size))
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
        stepper = OurStepper(backend, n, k, 0)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("speed", "quality", "figure1", "plot", "scaling"))
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
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--ks", type=int, nargs="*", default=[10, 20, 30, 40, 50])
    parser.add_argument("--png", default="benchmarks/figure1.png")
    args = parser.parse_args()
    {"speed": speed, "quality": quality, "figure1": figure1, "plot": plot_figure1,
     "scaling": scaling}[args.what](args)


if __name__ == "__main__":
    main()
