"""A real disk filling up (a tmpfs, root only) under a whole dvae-train run and under the Python
API's save, in child processes, as a user meets it: one line naming the file, exit status 1 (or
an OSError in Python), no traceback, no "Exception ignored" from h5py's destructors, no crash at
exit, the previous files sound, and a --resume that completes once there is space again.

These were HDF5 failing inside its own writes (audit F1: exit status 139 and hundreds of lines);
the HDF5 file is now built in memory and only its finished bytes meet the disk (atomic_hdf5.py).
The fake-writer tests in test_faults_files.py cover the other errnos."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
from tmpfs_disks import pages, resize, tmpfs, used_bytes

from dvae_cupy.checkpoint import checkpoint_problem, load_checkpoint

RUN = ["--train-subset", "1500", "--eval-subset", "200", "--hidden", "32", "--latent-vars", "3",
       "--categories", "4", "--batch-size", "50", "--backend", "cpu", "--no-progress",
       "--seed", "7"]  # test_faults_runs.py's small run
# What must never reach a user: Python's and h5py's tracebacks, HDF5's own messages, a crash.
NEVER = ("Traceback", "Exception ignored", "Segmentation", "HDF5-DIAG", "slist", "errno =")


def disk_full_message(path, existed=True):
    """The one line a full disk must end in, for a write of `path` (a file that was there
    before, or a new one)."""
    return (f"cannot write {path}: disk full (no space left on device); "
            f"{os.path.basename(path)} was {'not changed' if existed else 'not created'}")


def train(args):
    """Run dvae-train in a child process: (exit status, stdout and stderr together)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "dvae_cupy.cli", *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600)
    return done.returncode, done.stdout


def assert_clean(output):
    for text in NEVER:
        assert text not in output, output


@pytest.fixture
def disk(tmp_path):
    with tmpfs(tmp_path / "disk", "64m") as point:
        yield point


@pytest.mark.slow
def test_a_disk_that_fills_up_during_a_run_ends_in_one_line_and_resumes(disk):
    # Measure what epoch 1 leaves on the disk (best.h5, checkpoint.h5, metrics, pictures), then
    # give a fresh run that much plus half a checkpoint: epoch 1 fits, and epoch 2's first
    # replacement (best.h5 or checkpoint.h5, written beside the old one) runs out mid-file.
    measured = disk / "measure"
    code, output = train([*RUN, "--epochs", "1", "--out", str(measured)])
    assert code == 0, output
    epoch_one = used_bytes(disk)
    checkpoint_pages = pages((measured / "checkpoint.h5").stat().st_size)
    subprocess.run(["rm", "-r", str(measured)], check=True)
    resize(disk, epoch_one + checkpoint_pages // 2 * os.sysconf("SC_PAGE_SIZE"))

    out = disk / "run"
    code, output = train([*RUN, "--epochs", "3", "--out", str(out)])
    assert code == 1, output
    assert_clean(output)
    errors = [line for line in output.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0] == output.splitlines()[-1], output
    assert errors[0] in (f"dvae-train: error: {disk_full_message(out / name)}"
                         for name in ("best.h5", "checkpoint.h5")), output
    assert "epoch   1" in output and "epoch   2" not in output
    for name in ("checkpoint.h5", "best.h5"):  # epoch 1's files, sound, no temporaries beside
        assert checkpoint_problem(out / name) is None
        assert load_checkpoint(out / name).epoch == 1
    assert not [p for p in os.listdir(out) if ".tmp-" in p]

    resize(disk, 64 * 2**20)  # space again: the run continues where it stopped
    code, output = train([*RUN, "--epochs", "3", "--out", str(out), "--resume"])
    assert code == 0, output
    assert_clean(output)
    assert "resumed from" in output and "at epoch 1" in output
    assert load_checkpoint(out / "checkpoint.h5").epoch == 3
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


SAVE_ON_A_FULL_DISK = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np
    from dvae_cupy import DiscreteVAE
    from dvae_cupy.data import write_dataset

    disk, roomy = Path(sys.argv[1]), Path(sys.argv[2])
    untrained = DiscreteVAE(hidden=32, n_latent=3, n_categories=4, pixels=784, backend="cpu")
    untrained.save(roomy / "model.h5")
    vae = DiscreteVAE.load(roomy / "model.h5", backend="cpu")
    grey = np.random.default_rng(0).integers(0, 256, (600, 784), dtype=np.uint8)  # incompressible
    for what, write in (("model", lambda: vae.save(disk / "x.h5")),
                        ("data set", lambda: write_dataset(disk / "data.h5", grey))):
        try:
            write()
        except OSError as err:
            print(f"{what}: OSError errno {err.errno}: {err}")
        else:
            print(f"{what}: saved")
    vae.save(roomy / "again.h5")  # the session goes on working
    print("done")
""")


def test_saving_onto_a_full_disk_raises_one_oserror_and_the_interpreter_exits_cleanly(tmp_path):
    # A 256 KiB disk: the model's checkpoint (~600 KB) and the data set (~470 KB) each run out
    # of space part way through.
    point = tmp_path / "disk"
    with tmpfs(point, "256k"):
        child = subprocess.run([sys.executable, "-c", SAVE_ON_A_FULL_DISK, str(point),
                                str(tmp_path)], capture_output=True, text=True, timeout=300)
        assert child.returncode == 0, child.stdout + child.stderr
        assert_clean(child.stdout + child.stderr)
        assert child.stderr == ""
        assert child.stdout.splitlines() == [
            f"model: OSError errno 28: {disk_full_message(point / 'x.h5', existed=False)}",
            f"data set: OSError errno 28: {disk_full_message(point / 'data.h5', existed=False)}",
            "done"]
        assert os.listdir(point) == []  # no temporary left behind
    assert checkpoint_problem(tmp_path / "again.h5") is None
