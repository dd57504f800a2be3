"""ms per training step, launches per step and peak memory of dvae_cupy's fast path (not a test).

    python benchmarks/bench_step.py [--backend cpu|gpu] [--steps 50] [--warmup 10] [--threads 2]
    python benchmarks/bench_step.py --backend gpu --cuda-graph       # replays of one captured step
    python benchmarks/bench_step.py --backend gpu --compare-graph    # eager and graph side by side

Times whole TrainSteps (estimator gradients, loss bookkeeping, Adam) at batch 100 on the embedded
Fashion-MNIST, median over `--steps` after `--warmup`, for N=1,K=10 and N=20,K=10 (or --configs).
The batch is gathered into the step's buffer before the clock starts, so this is the bare step;
benchmarks/compare.py times whole epochs as a user sees them. Launches: the ops and launching
array calls of one eager step (dvae_cupy/launches.py). Peak memory on the CPU is the tracemalloc
peak of NumPy allocations during the timed steps plus the model's and the step's arrays; on the
GPU it is CuPy's memory-pool high-water mark. --compare-graph also reports whether capture
succeeded and the largest parameter difference between graph replays and eager steps after the
same steps from the same start (0 when the replays are exact).
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


def _setup(backend, n_latent, n_categories, estimator, batch_size, images, cuda_graph):
    from dvae_cupy.estimators import EstimatorConfig
    from dvae_cupy.graph import GraphedStep
    from dvae_cupy.model import Model, ModelShape
    from dvae_cupy.step import TrainStep

    model = Model(ModelShape(n_latent, n_categories, pixels=images.shape[1]), backend, seed=0)
    step = TrainStep(model, EstimatorConfig(estimator), 0, batch_size, 1e-3)
    runner = GraphedStep(step, log=lambda *a: None) if cuda_graph else step
    return model, step, runner


def time_config(backend, n_latent, n_categories, steps, warmup, batch_size, estimator, images,
                cuda_graph=False):
    """(median ms per step, peak bytes, the model, the runner) for one configuration."""
    import numpy as np

    xp = backend.xp
    model, step, runner = _setup(backend, n_latent, n_categories, estimator, batch_size, images,
                                 cuda_graph)
    order = xp.arange(len(images), dtype=np.int64)
    times = []
    backend.synchronize_device()
    with runner.stream():
        step.set_state(0, 0, 1.0)
        for i in range(warmup + steps):
            if i == warmup and not backend.on_device:
                tracemalloc.start()  # after the warm-up: persistent arrays are counted below, once
            backend.ops.gather_targets(images, order, i * batch_size % (len(images) - batch_size + 1),
                                       0, 0, step.counter, step.batch)
            backend.synchronize()
            started = time.perf_counter()
            runner()
            backend.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - started)
    persistent = model.nbytes() + step.nbytes()
    if backend.on_device:
        peak = xp.get_default_memory_pool().total_bytes()
    else:
        peak = tracemalloc.get_traced_memory()[1] + persistent
        tracemalloc.stop()
    return float(np.median(times)) * 1e3, peak, model, runner


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
    parser.add_argument("--compare-graph", action="store_true",
                        help="gpu: eager and graph steps side by side, with their parameter difference")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
        os.environ["NUMBA_NUM_THREADS"] = str(args.threads)
    import numpy as np

    from dvae_cupy.backend import get_backend
    from dvae_cupy.data import load_dataset
    from dvae_cupy.estimators import EstimatorConfig
    from dvae_cupy.launches import launches_of_one_step
    from dvae_cupy.model import ModelShape

    backend = get_backend(args.backend)
    if (args.cuda_graph or args.compare_graph) and backend.name != "gpu":
        parser.error("--cuda-graph and --compare-graph need --backend gpu")
    where = machine_name() if backend.name == "cpu" else _gpu_name()
    data = load_dataset("fashion-mnist")
    images = backend.xp.asarray(data.train[:args.batch_size * (args.steps + args.warmup)])
    mode = "eager vs CUDA graph" if args.compare_graph else ("CUDA graph" if args.cuda_graph else "eager")
    print(f"dvae_cupy {args.estimator} training step ({mode}), batch {args.batch_size}, {backend.name}: "
          f"{where}, {os.cpu_count()} cores, threads={args.threads or 'all'}; median of {args.steps} "
          f"after {args.warmup} warm-up")
    if args.compare_graph:
        print(f"{'N':>4}{'K':>5}{'eager ms':>10}{'graph ms':>10}{'capture':>10}{'max |dparam|':>14}")
    else:
        print(f"{'N':>4}{'K':>5}{'ms/step':>10}{'steps/s':>10}{'peak MB':>10}{'launches':>10}")
    for pair in args.configs:
        n_latent, n_categories = map(int, pair.split("x"))
        common = (backend, n_latent, n_categories, args.steps, args.warmup, args.batch_size,
                  args.estimator, images)
        if args.compare_graph:
            eager_ms, _, eager, _ = time_config(*common)
            graph_ms, _, graphed, runner = time_config(*common, cuda_graph=True)
            captured = "ok" if runner.graph is not None else "FAILED"
            a, b = eager.host_params(), graphed.host_params()
            difference = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
            print(f"{n_latent:>4}{n_categories:>5}{eager_ms:>10.3f}{graph_ms:>10.3f}{captured:>10}"
                  f"{difference:>14.3g}")
            if runner.failed:
                print(f"     capture failed: {runner.failed}")
            continue
        ms, peak, _, runner = time_config(*common, cuda_graph=args.cuda_graph)
        candidates = runner.step.workspace.candidates if args.cuda_graph else runner.workspace.candidates
        chunk = getattr(candidates, "chunk", None)  # the candidate chunk this backend uses (N > 1)
        launches = len(launches_of_one_step(ModelShape(n_latent, n_categories),
                                            EstimatorConfig(args.estimator), args.batch_size, chunk))
        print(f"{n_latent:>4}{n_categories:>5}{ms:>10.3f}{1e3 / ms:>10.1f}{peak / 2**20:>10.1f}"
              f"{launches:>10}")
        if args.cuda_graph and runner.failed:
            print(f"     (graph capture failed: {runner.failed}; these steps ran without it)")


def _gpu_name():
    import cupy

    return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()


if __name__ == "__main__":
    main()
