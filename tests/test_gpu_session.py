"""benchmarks/gpu_session.sh as a dry run (no GPU here), and the GPU-only parts of
benchmarks/gpu_probe.py on fakes, so that the one prepared device run cannot fail on a typo.

The dry run uses the same from-the-tree shim that a failed offline install falls back to, so it
also proves that kernels/ and data/ import as dvae_cupy.kernels and dvae_cupy.embedded from it.
"""
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import SIMULATOR_ON

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_session.sh"
MAX_FILES = 6

pytestmark = pytest.mark.skipif(SIMULATOR_ON, reason="runs the real probe, not the simulator")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and coreutils' timeout")
    out = tmp_path_factory.mktemp("gpu_session_out")
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "CUDA_HOME", "PYTHONPATH")}
    env.update(PYTHON=sys.executable, GPU_SESSION_DRY_RUN="1", TMPDIR=str(out.parent))
    started = time.perf_counter()
    done = subprocess.run(["bash", str(SCRIPT), str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=240)
    return done, out, time.perf_counter() - started


def read(out, name):
    path = out / name
    assert path.is_file(), f"{name} was not written; files: {sorted(p.name for p in out.iterdir())}"
    return path.read_text()


@pytest.mark.slow  # the dry run: ~10 s idle, shared by the four dry-run tests
def test_dry_run_finishes_quickly_and_says_nothing_ran_on_a_gpu(dry_run):
    done, out, seconds = dry_run
    assert done.returncode == 0, done.stdout + done.stderr
    summary = read(out, "summary.txt")
    assert "DRY RUN" in summary and "nothing ran on a GPU" in summary, summary
    assert "step probe: exit 0" in summary, summary
    for skipped in ("bench", "tests", "race"):
        assert f"step {skipped}: skipped (dry run" in summary
    assert seconds < 90, f"the dry run took {seconds:.0f} s"


@pytest.mark.slow
def test_dry_run_writes_at_most_six_files_none_nested(dry_run):
    _, out, _ = dry_run
    entries = list(out.iterdir())
    assert len(entries) <= MAX_FILES and all(p.is_file() for p in entries), entries


@pytest.mark.slow
def test_dry_run_probe_ran_from_the_tree_shim(dry_run):
    _, out, _ = dry_run
    probe = read(out, "probe.txt")
    kernels_line = next(line for line in probe.splitlines() if "dvae_cupy.kernels from" in line)
    assert "dvae_cupy_tree_shim" in kernels_line, kernels_line
    assert "fashion_mnist.h5 (present)" in probe
    assert "PTX .version for sm_90" in probe and "verdict" in probe


@pytest.mark.slow
def test_dry_run_dvae_check_refuses_the_gpu_in_one_line(dry_run):
    _, out, _ = dry_run
    summary, check = read(out, "summary.txt"), read(out, "check.txt")
    assert "step dvae-check: exit 2" in summary, summary
    errors = [line for line in check.splitlines() if line.startswith("dvae-check: error: ")]
    assert len(errors) == 1 and "not usable" in errors[0], check
    assert "Traceback" not in check


# ---------------------------------------------------------------------------------------------
# gpu_probe.py's GPU-only sections, on fakes.

@pytest.fixture(scope="module")
def probe_script():
    spec = importlib.util.spec_from_file_location("gpu_probe_script", REPO / "benchmarks" / "gpu_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_kernel_module_is_in_the_probe_registry(probe_script):
    modules = {module for module, *_ in probe_script.registered_kernels()}
    assert {"adam", "argmax", "bce", "bias_act", "candidates", "onehot_linear", "rng",
            "softmax_kl"} <= modules, modules


def test_kernel_table_reports_resources_and_failures(probe_script, monkeypatch, capsys):
    class Loaded:
        regs_per_thread, shared_mem_per_block, local_mem_per_thread = 40, 512, 0

    class Kernel:
        def __init__(self, error=None):
            self.error = error

        def compile(self, signature):
            if self.error:
                raise self.error
            return Loaded()

    monkeypatch.setattr(probe_script, "registered_kernels", lambda: [
        ("bce", "bce_rows_kernel", Kernel(), ()),
        ("adam", "adam_kernel", Kernel(RuntimeError("LinkerError: ERROR_OUTDATED_LIBRARY\nlog")), ())])
    assert probe_script.load_every_kernel() is False
    out = capsys.readouterr().out
    assert "bce.bce_rows_kernel" in out and "  40" in out and "512" in out
    assert "adam.adam_kernel" in out and "FAILED: RuntimeError: LinkerError: ERROR_OUTDATED_LIBRARY" in out


def test_op_launches_report_errors_against_the_reference(probe_script, monkeypatch, capsys):
    from dvae_cupy import backend, check

    monkeypatch.setattr(backend, "get_backend", lambda name: backend.cpu_backend())
    broken = ("broken_op", lambda b, rng, n: 1 / 0, 1e-5, [(1,)], [])
    monkeypatch.setattr(check, "CHECKS", [c for c in check.CHECKS if c[0] == "bias_act"] + [broken])
    assert probe_script.launch_every_op() is False
    out = capsys.readouterr().out
    assert "bias_act" in out and "ok" in out and "broken_op" in out and "ZeroDivisionError" in out


def test_launch_overhead_section_runs(probe_script, monkeypatch, capsys):
    import numba.cuda

    from dvae_cupy import gpu_probe
    from dvae_cupy.kernels import _cuda
    from test_gpu_probe import DeviceArray, FakeKernel, fake_cupy

    cupy = fake_cupy()
    cupy.zeros = lambda n, dtype: np.zeros(n, dtype=dtype).view(DeviceArray)
    cupy.add = np.add
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setattr(gpu_probe, "probe_kernel", lambda: FakeKernel())
    monkeypatch.setattr(numba.cuda, "as_cuda_array", lambda array, sync=True: array)
    monkeypatch.setattr(_cuda, "current_stream", lambda: 0)
    monkeypatch.setattr(probe_script, "LAUNCH_RUNS", 3)
    monkeypatch.setattr(probe_script, "LAUNCHES_PER_RUN", 5)
    probe_script.print_launch_overhead()
    out = capsys.readouterr().out
    for name in ("our launcher path", "bare Numba launch", "CuPy element-wise"):
        assert name in out and " us" in out
