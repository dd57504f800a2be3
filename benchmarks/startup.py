"""What a process pays before its work, with the on-disk kernel cache (not a test).

    python benchmarks/startup.py [--threads 2] [--epochs 3] [--processes 5]

Everything runs in fresh child processes on an empty cache folder of its own
(DVAE_CUPY_CACHE_DIR), so the machine's own cache is neither used nor touched:

1. Training: dvae-train on the embedded Fashion-MNIST (N=1, K=10, batch 100, 500 steps per
   epoch) three times into the same cache. The first process compiles the kernels inside its
   first epoch; the others load them (kernels/_numba_init.py: before the first epoch, beside
   the data's loading). Each epoch's training seconds (metrics.jsonl) are printed, each
   process's first epoch against the median of its later ones (the aim: within 10%), and the
   whole process's seconds (interpreter start to exit: imports, Numba's start-up, data,
   evaluations and files included).
2. Loading a model: `DiscreteVAE.load(best.h5)` + `encode` of 100 images in a fresh process,
   median of --processes processes: the seconds of the import, of load + encode, and of the
   whole process (interpreter start included), with the cache warm and with it off
   (DVAE_CUPY_KERNEL_CACHE=0: every process compiles what it uses).
Prints Markdown tables naming the machine.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_step import machine_name  # noqa: E402
from threads import set_thread_count  # noqa: E402

ENCODE = """
import sys, time
started = time.perf_counter()
import numpy as np
from dvae_cupy import DiscreteVAE
imported = time.perf_counter()
images = np.load(sys.argv[2])
model = DiscreteVAE.load(sys.argv[1], backend="cpu")
codes = model.encode(images)
done = time.perf_counter()
assert codes.shape[0] == len(images)
print(imported - started, done - imported)
"""


def child_env(cache, threads, cache_on=True):
    env = dict(os.environ, DVAE_CUPY_CACHE_DIR=str(cache),
               DVAE_CUPY_KERNEL_CACHE="1" if cache_on else "0")
    set_thread_count(env, threads)
    return env


def train(folder, env, epochs):
    """(epoch training seconds, whole process seconds) of one dvae-train process."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "dvae_cupy.cli", "--epochs", str(epochs), "--eval-subset",
               "1000", "--backend", "cpu", "--no-progress", "--seed", "0", "--out", str(folder)]
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    whole = time.perf_counter() - started
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["seconds"] for line in lines], whole


def encode_process(model, images, env):
    """(import s, load + encode s, whole process s) of one fresh process."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", ENCODE, str(model), str(images)], env=env,
                            check=True, capture_output=True, text=True)
    whole = time.perf_counter() - started
    imported, work = (float(v) for v in result.stdout.split())
    return imported, work, whole


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--processes", type=int, default=5)
    args = parser.parse_args()
    import numpy as np

    from dvae_cupy.data import load_dataset

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        cache, env = scratch / "cache", child_env(scratch / "cache", args.threads)
        images = scratch / "images.npy"
        np.save(images, np.asarray(load_dataset().test[:100]))
        print(f"# {machine_name()}, {os.cpu_count()} CPUs, {args.threads} threads; "
              f"{time.strftime('%Y-%m-%d')}\n")
        print("| process | cache | epoch seconds | first / median of the later | whole process s |")
        print("|---|---|---|---|---|")
        for name, state in (("first", "empty"), ("second", "warm"), ("third", "warm")):
            seconds, whole = train(scratch / name, env, args.epochs)
            later = statistics.median(seconds[1:])
            print(f"| {name} | {state} | {', '.join(f'{s:.2f}' for s in seconds)} | "
                  f"{seconds[0] / later:.2f} | {whole:.2f} |")
        model = scratch / "first" / "best.h5"
        print(f"\n`DiscreteVAE.load` + `encode` of 100 images in a fresh process, median of "
              f"{args.processes}:\n")
        print("| kernel cache | import s | load + encode s | whole process s |")
        print("|---|---|---|---|")
        for label, on in (("warm", True), ("off (compile per process)", False)):
            results = [encode_process(model, images, child_env(cache, args.threads, on))
                       for _ in range(args.processes)]
            medians = [statistics.median(column) for column in zip(*results)]
            print(f"| {label} | " + " | ".join(f"{m:.2f}" for m in medians) + " |")
        print(f"\ncache folder: {sum(1 for _ in cache.rglob('*'))} files, "
              f"{sum(p.stat().st_size for p in cache.rglob('*') if p.is_file()) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
