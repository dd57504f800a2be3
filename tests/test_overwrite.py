"""dvae-train --overwrite and a diverging run never lose the work already in the folder: the
previous run is set aside for the new run's first save and deleted only once that save is
complete, so bad input, a divergence, Ctrl-C or a failed write before then leave it as it was,
and the message says what the folder holds. Runs dvae-train's main in this process on a small
model (a few seconds each); the Ctrl-C case in a child process."""
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dvae_cupy import checkpoint
from dvae_cupy.cli import train_main, train_parser
from dvae_cupy.config import TrainConfig
from dvae_cupy.run_folder import LOCK_FILE, SET_ASIDE_PREFIX
from dvae_cupy.train import Trainer

SMALL = ["--train-subset", "300", "--eval-subset", "100", "--hidden", "16", "--latent-vars", "2",
         "--categories", "3", "--batch-size", "50", "--backend", "cpu", "--no-progress",
         "--seed", "3", "--epochs", "1"]


def files(folder):
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.name != LOCK_FILE}


@pytest.fixture
def finished_run(tmp_path, capsys):
    folder = tmp_path / "run"
    assert train_main([*SMALL, "--out", str(folder)]) == 0
    capsys.readouterr()
    return folder


@pytest.mark.parametrize("bad", [["--dataset", "/nonexistent/images.npy"], ["--batch-size", "5000"],
                                 ["--backend", "gpu"]])
def test_overwrite_with_bad_input_leaves_the_previous_run_as_it_was(finished_run, capsys, bad):
    before = files(finished_run)
    assert set(before) >= {"checkpoint.h5", "best.h5", "metrics.jsonl"}
    assert train_main([*SMALL, "--overwrite", "--out", str(finished_run), *bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dvae-train: error: ") and err.count("\n") == 1
    assert files(finished_run) == before


def test_overwrite_replaces_the_run_when_it_saves_its_first_checkpoint(finished_run, capsys):
    before = files(finished_run)
    assert train_main([*SMALL, "--seed", "4", "--overwrite", "--out", str(finished_run)]) == 0
    out = capsys.readouterr().out
    assert f"--overwrite: the previous run in {finished_run} (epoch 1," in out
    assert f"--overwrite: removed the previous run in {finished_run}: deleted best.h5, checkpoint.h5" in out
    assert out.index("is deleted once this run") < out.index("removed the previous run")
    after = files(finished_run)
    assert len(after["metrics.jsonl"].splitlines()) == 1      # the new run's epoch only
    for name in ("checkpoint.h5", "best.h5", "metrics.jsonl"):
        assert after[name] != before[name], name
    assert not [p for p in finished_run.iterdir() if p.name.startswith(SET_ASIDE_PREFIX)]


def test_a_first_save_that_fails_puts_the_previous_run_back(finished_run, capsys, monkeypatch):
    before = files(finished_run)
    real = checkpoint.atomic_hdf5
    written = []

    def full_at_the_second_file(path, **options):  # best.h5 is written, checkpoint.h5 is not
        written.append(path)
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, **options)
    monkeypatch.setattr(checkpoint, "atomic_hdf5", full_at_the_second_file)
    assert train_main([*SMALL, "--seed", "4", "--overwrite", "--out", str(finished_run)]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert files(finished_run) == before
    assert sorted(p.name for p in finished_run.iterdir()) == sorted([*before, LOCK_FILE])


def test_ctrl_c_before_the_first_save_keeps_the_previous_run(finished_run):
    before = files(finished_run)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    long_run = [*SMALL, "--train-subset", "20000", "--hidden", "300", "--latent-vars", "20",
                "--categories", "10"]                                   # a first epoch of seconds
    process = subprocess.Popen([sys.executable, "-m", "dvae_cupy.cli", *long_run, "--overwrite",
                                "--out", str(finished_run)], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for line in process.stdout:                                         # training has started
        if line.startswith("training on"):
            break
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    output = line + process.communicate(timeout=300)[0]
    assert process.returncode == 130, output
    assert (f"stopped, nothing saved; this --overwrite run had not saved its first epoch, so the "
            f"previous run in {finished_run} is as it was") in output
    assert files(finished_run) == before


def test_divergence_before_the_first_checkpoint_says_nothing_was_saved(tmp_path, capsys):
    folder = tmp_path / "diverged"
    assert train_main([*SMALL, "--lr", "1000", "--out", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "training stopped; nothing was saved: it came before the first checkpoint" in err
    assert files(folder) == {}


def test_divergence_of_an_overwrite_run_keeps_the_previous_run(finished_run, capsys):
    before = files(finished_run)
    assert train_main([*SMALL, "--lr", "1000", "--overwrite", "--out", str(finished_run)]) == 1
    err = capsys.readouterr().err
    assert (f"training stopped; nothing was saved, and the previous run in {finished_run} is as "
            f"it was") in err
    assert files(finished_run) == before


def test_divergence_after_a_checkpoint_names_the_files_that_hold_it(finished_run):
    args = vars(train_parser().parse_args([*SMALL, "--epochs", "2", "--out", str(finished_run)]))
    trainer = Trainer(TrainConfig.from_dict(args), log=lambda line: None, resume=True)
    try:
        assert trainer.kept_files() == (f"; {finished_run / 'checkpoint.h5'} and "
                                        f"{finished_run / 'best.h5'} hold the last states saved "
                                        f"before it")
    finally:
        trainer.close()
