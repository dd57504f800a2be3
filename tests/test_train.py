"""The trainer end to end on the CPU: it learns, it resumes exactly, it fails clearly."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dvae_cupy.checkpoint import load_checkpoint
from dvae_cupy.cli import train_main
from dvae_cupy.config import TrainConfig
from dvae_cupy.train import Trainer, annealed


def quiet(*args):
    pass


@pytest.mark.parametrize("estimator, extra", [
    ("direct", {}),
    ("gumbel-softmax", {"straight_through": True}),
])
def test_a_few_hundred_steps_lower_the_test_loss(tmp_path, estimator, extra):
    config = TrainConfig(estimator=estimator, train_subset=6000, eval_subset=500, epochs=5,
                         backend="cpu", out=str(tmp_path), progress=False, **extra)
    trainer = Trainer(config, log=quiet)
    before = trainer.evaluate()["test_loss"]
    metrics = trainer.run()
    after = metrics[-1]["test_loss"]
    assert trainer.step == 300
    assert after < 0.75 * before, f"{estimator}: test loss {before:.1f} -> {after:.1f}"
    assert metrics[-1]["test_nll"] <= after + 1e-3  # exact NLL (N = 1) <= the sampled bound
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 5
    for key in ("epoch", "train_loss", "valid_loss", "test_loss", "seconds"):
        assert key in json.loads(lines[-1])
    for name in ("checkpoint.h5", "best.h5", "reconstructions.png", "codes.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_eps_schedule_is_the_papers():
    assert annealed(1.0, 1e-5, 0.1, 0, 500) == 1.0
    assert annealed(1.0, 1e-5, 0.1, 499, 500) == 1.0          # updated every 500 steps
    assert annealed(1.0, 1e-5, 0.1, 500, 500) == pytest.approx(np.exp(-5e-3))
    assert annealed(1.0, 1e-5, 0.1, 10 ** 7, 500) == 0.1      # floored at eps_min


# ---------------------------------------------------------------------------------------------
# Interruptions: a killed run and a Ctrl-C'd run resume to the same parameters as a run that was
# never interrupted (same seed): all randomness is a function of (seed, step).

SMALL_RUN = ["--train-subset", "1500", "--eval-subset", "200", "--hidden", "32", "--latent-vars", "3",
             "--batch-size", "50", "--backend", "cpu", "--no-progress", "--seed", "7"]


def small_run(epochs, categories=4):
    return [*SMALL_RUN, "--epochs", str(epochs), "--categories", str(categories)]


def run_cli(args, **kwargs):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "dvae_cupy.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def wait_for_epochs(path, epochs, process, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= epochs:
            return
        if process.poll() is not None:
            raise AssertionError("run ended early:\n" + process.stdout.read())
        time.sleep(0.05)
    raise AssertionError("timed out waiting for an epoch")


def final_params(folder):
    return load_checkpoint(folder / "checkpoint.h5").params


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    process = run_cli([*small_run(4), "--out", str(folder)])
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    return folder


def assert_same_params(a, b):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_killed_run_resumes_to_the_uninterrupted_parameters(tmp_path, uninterrupted):
    process = run_cli([*small_run(4), "--out", str(tmp_path)])
    wait_for_epochs(tmp_path / "metrics.jsonl", 1, process)
    process.kill()  # SIGKILL: no chance to save anything more
    process.wait()
    resumed = run_cli([*small_run(4), "--out", str(tmp_path), "--resume"])
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    assert "resumed from" in output
    assert_same_params(final_params(tmp_path), final_params(uninterrupted))
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4


def test_ctrl_c_saves_and_resumes_exactly(tmp_path):
    # A long run is interrupted wherever it is; resumed up to the end of the epoch it was in, it
    # must equal a run that was asked for that many epochs and never interrupted.
    process = run_cli([*small_run(1000), "--out", str(tmp_path / "a")])
    wait_for_epochs(tmp_path / "a" / "metrics.jsonl", 1, process)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 130, output
    assert "checkpoint saved" in output
    checkpoint = load_checkpoint(tmp_path / "a" / "checkpoint.h5")
    assert checkpoint.step > 0
    epochs = small_run(checkpoint.epoch + 1)
    resumed = run_cli([*epochs, "--out", str(tmp_path / "a"), "--resume"])
    uninterrupted = run_cli([*epochs, "--out", str(tmp_path / "b")])
    for run in (resumed, uninterrupted):
        output, _ = run.communicate(timeout=600)
        assert run.returncode == 0, output
    assert_same_params(final_params(tmp_path / "a"), final_params(tmp_path / "b"))


def test_resume_takes_the_runs_own_options_where_the_command_leaves_them_out(tmp_path, capsys):
    assert train_main([*small_run(4), "--out", str(tmp_path / "whole")]) == 0
    tmp_path = tmp_path / "resumed"
    assert train_main([*small_run(2), "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    # only the folder and the new target: the model, data and estimator options are the run's
    assert train_main(["--resume", "--out", str(tmp_path), "--epochs", "4", "--backend", "cpu",
                       "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("--resume: the run's own --train-subset 1500, --eval-subset 200, "
                          "--latent-vars 3, --categories 4, --hidden 32, --batch-size 50, --seed 7\n")
    assert_same_params(final_params(tmp_path), final_params(tmp_path.parent / "whole"))
    # given options still win, and one that differs from the run's is refused as before
    assert train_main(["--resume", "--out", str(tmp_path), "--epochs", "5", "--hidden", "16",
                       "--backend", "cpu", "--no-progress"]) == 2
    assert "different hidden=32 (now 16)" in capsys.readouterr().err


def test_resume_refuses_a_different_run(tmp_path, uninterrupted, capsys):
    import shutil

    shutil.copy(uninterrupted / "checkpoint.h5", tmp_path / "checkpoint.h5")
    assert train_main([*small_run(4, categories=5), "--out", str(tmp_path), "--resume"]) == 2
    assert "different --categories=4 (now 5)" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--categories", "1"], "--categories must be an integer >= 2"),
    (["--latent-vars", "0"], "--latent-vars must be an integer >= 1"),
    (["--eps0", "0"], "--eps0 must be a finite number > 0"),
    (["--lr", "nan"], "--lr must be a finite number > 0"),
    (["--estimator", "exact", "--latent-vars", "2"], "needs --latent-vars = 1"),
    (["--dataset", "/no/such/file.h5"], "/no/such/file.h5"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1"),
])
def test_bad_options_exit_2_with_a_clear_message(tmp_path, capsys, args, message):
    assert train_main([*args, "--out", str(tmp_path), "--backend", "cpu", "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_resume_without_a_run_says_so(tmp_path, capsys):
    assert train_main(["--out", str(tmp_path), "--resume", "--backend", "cpu"]) == 2
    assert f"nothing to resume in {tmp_path}" in capsys.readouterr().err


class RecordedThread:
    """Stands in for the start-up thread (kernels/_numba_init.py): records its join."""
    joined = 0

    def join(self):
        RecordedThread.joined += 1


@pytest.mark.parametrize("dataset, error", [("fashion-mnist", None), ("no-such-set", ValueError)])
def test_the_numba_start_up_thread_is_joined_before_training_and_on_errors(monkeypatch, dataset,
                                                                            error):
    """Trainer starts Numba's start-up beside the data's loading and joins it when the build
    ends, also when it fails: no thread is left inside Numba for the interpreter's exit."""
    import dvae_cupy.train as train_module

    started = []
    monkeypatch.setattr(train_module, "start_numba_init",
                        lambda: started.append(RecordedThread()) or started[-1])
    RecordedThread.joined = 0
    config = TrainConfig(dataset=dataset, train_subset=200, eval_subset=100, epochs=1,
                         backend="cpu", out=None, progress=False)
    if error is None:
        Trainer(config, log=quiet)
    else:
        with pytest.raises(error):
            Trainer(config, log=quiet)
    assert len(started) == 1 and RecordedThread.joined == 1


def test_a_subset_larger_than_the_data_is_noted_not_silent():
    lines = []
    config = TrainConfig(train_subset=10 ** 6, eval_subset=10 ** 6, out=None, backend="cpu",
                         progress=False)
    trainer = Trainer(config, log=lines.append)
    assert len(trainer.train_images) == 50000
    assert lines[:3] == ["note: train_subset=1000000 is more than the 50000 train images: using all 50000",
                         "note: eval_subset=1000000 is more than the 10000 valid images: using all 10000",
                         "note: eval_subset=1000000 is more than the 10000 test images: using all 10000"]
