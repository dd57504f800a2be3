"""ms per training step and peak memory of dvae_cupy's fast path (not a test).

    python benchmarks/bench_step.py [--backend cpu|gpu] [--steps 50] [--warmup 10] [--threads 2]

Times full training steps (estimator gradients + Adam) at batch 100 on the embedded
Fashion-MNIST, median over `--steps` after `--warmup`, for N=1,K=10 and N=20,K=10 (or --configs).
Peak memory on the CPU is the tracemalloc peak of NumPy allocations during the timed steps plus
the model's persistent arrays; on the GPU it is CuPy's memory-pool high-water mark.
"""
import argparse
import os
import platform
import subprocess
import time
import tracemalloc


def machine_name():
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_config(backend, n_latent, n_categories, steps, warmup, batch_size, estimator, cuda_graph=False):
    import numpy as np

    from dvae_cupy.data import load_dataset
    from dvae_cupy.estimators import EstimatorConfig, estimator_gradients
    from dvae_cupy.model import DVAE, ModelShape

    data = load_dataset("fashion-mnist")
    xp = backend.xp
    images = xp.asarray(data.train[: batch_size * (steps + warmup)], dtype=np.float32)
    model = DVAE(ModelShape(n_latent, n_categories), backend, seed=0)
    config = EstimatorConfig(estimator)
    graphed = None
    if cuda_graph:  # one captured step replayed (dvae_cupy/graph.py); its warm-up is within ours
        from dvae_cupy.graph import GraphedStep

        graphed = GraphedStep(model, config, 0, batch_size, 1e-3)
        graphed.set_state(0, 0, 1.0)
        stream = graphed.stream
        stream.__enter__()
    times = []
    for step in range(warmup + steps):
        x = images[step * batch_size:(step + 1) * batch_size]
        if step == warmup and backend.name == "cpu":
            tracemalloc.start()  # after the warm-up: its buffers are counted below, once
        backend.synchronize()
        started = time.perf_counter()
        if graphed is not None:
            graphed(x)
            graphed.stream.synchronize()
        else:
            estimator_gradients(model, config, x, 0, step, 1.0, 1.0)
            model.adam_update(1e-3)
        backend.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - started)
    persistent = sum(a.nbytes for a in (model.flat_params, model.flat_grads, model.flat_m, model.flat_v))
    persistent += model.buf.nbytes()  # the work buffers, made in the warm-up steps
    if graphed is not None:
        stream.__exit__(None, None, None)
        if graphed.failed:
            print(f"(graph capture failed: {graphed.failed}; these steps ran without it)")
    if backend.name == "cpu":
        peak = tracemalloc.get_traced_memory()[1] + persistent
        tracemalloc.stop()
    else:
        peak = xp.get_default_memory_pool().total_bytes()
    return float(np.median(times)) * 1e3, peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="BLAS/Numba threads (default: all)")
    parser.add_argument("--estimator", default="direct")
    parser.add_argument("--configs", nargs="*", default=["1x10", "20x10"], help="NxK pairs")
    parser.add_argument("--cuda-graph", action="store_true", help="gpu: replay one captured step")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
        os.environ["NUMBA_NUM_THREADS"] = str(args.threads)
    from dvae_cupy.backend import get_backend

    backend = get_backend(args.backend)
    where = machine_name() if backend.name == "cpu" else _gpu_name()
    if args.cuda_graph and backend.name != "gpu":
        parser.error("--cuda-graph needs --backend gpu")
    graph_note = ", CUDA graph" if args.cuda_graph else ""
    print(f"dvae_cupy {args.estimator} training step{graph_note}, batch {args.batch_size}, {backend.name}: {where}, "
          f"{os.cpu_count()} cores, threads={args.threads or 'all'}; median of {args.steps} after {args.warmup} warm-up")
    print(f"{'N':>4}{'K':>5}{'ms/step':>10}{'steps/s':>10}{'peak MB':>10}")
    for pair in args.configs:
        n_latent, n_categories = map(int, pair.split("x"))
        ms, peak = time_config(backend, n_latent, n_categories, args.steps, args.warmup, args.batch_size,
                               args.estimator, args.cuda_graph)
        print(f"{n_latent:>4}{n_categories:>5}{ms:>10.2f}{1e3 / ms:>10.1f}{peak / 2**20:>10.1f}")


def _gpu_name():
    import cupy

    return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()


if __name__ == "__main__":
    main()
