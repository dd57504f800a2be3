"""Fault injection on whole dvae-train runs (in child processes): SIGKILL at random moments,
SIGTERM and SIGINT mid-epoch, a full disk during a run, two runs on one folder, reruns into a
folder that holds a run. Every fault must end in a resumable folder and a clear message, and a
resumed run must equal an uninterrupted one (parameters, and every metric except seconds).
File-level faults (byte flips, truncation, ENOSPC, read-only) are in test_checkpoint_damage.py,
test_faults_files.py and test_data_integrity.py."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dvae_cupy.checkpoint import load_checkpoint

RUN = ["--train-subset", "1500", "--eval-subset", "200", "--hidden", "32", "--latent-vars", "3",
       "--categories", "4", "--batch-size", "50", "--backend", "cpu", "--no-progress", "--seed", "7"]


def start(args, **kwargs):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "dvae_cupy.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def finish(args, timeout=600):
    process = start(args)
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def metrics(folder):
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def params(folder):
    return load_checkpoint(folder / "checkpoint.h5").params


def assert_same_run(a, b):
    pa, pb = params(a), params(b)
    for name in pa:
        np.testing.assert_array_equal(pa[name], pb[name], err_msg=name)
    assert metrics(a) == metrics(b)


def wait_for(condition, process, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if process.poll() is not None:
            raise AssertionError("run ended early:\n" + process.stdout.read())
        time.sleep(0.02)
    raise AssertionError("timed out")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    code, output = finish([*RUN, "--epochs", "4", "--out", str(folder)])
    assert code == 0, output
    return folder


@pytest.mark.slow
def test_sigkill_at_random_moments_always_resumes_to_the_uninterrupted_run(tmp_path):
    # The run is far longer than the kills can reach, so all 10 kills land on a live process
    # however fast the machine (a 30-epoch run finished after 6 kills on CI); the final resume
    # then ends the epoch the last kill interrupted, and must equal a run of that length.
    rng = np.random.default_rng(12)
    folder, kills = tmp_path / "killed", 0
    while kills < 10:
        resume = ["--resume"] if (folder / "checkpoint.h5").exists() else []
        process = start([*RUN, "--epochs", "100000", "--out", str(folder), *resume])
        time.sleep(float(rng.uniform(1.0, 4.0)))  # start-up is ~1-2 s; an epoch well under 1 s
        assert process.poll() is None, process.stdout.read()
        process.kill()
        process.wait()
        kills += 1
        leftovers = [p.name for p in folder.glob("*.tmp-*")] if folder.exists() else []
        if (folder / "checkpoint.h5").exists():  # whatever the moment, the checkpoint is sound
            load_checkpoint(folder / "checkpoint.h5")
        print(f"kill {kills}: files {sorted(p.name for p in folder.iterdir()) if folder.exists() else []}"
              f"{' temporaries ' + str(leftovers) if leftovers else ''}")
    resume = ["--resume"] if (folder / "checkpoint.h5").exists() else []
    epochs = str(load_checkpoint(folder / "checkpoint.h5").epoch + 1 if resume else 2)
    code, output = finish([*RUN, "--epochs", epochs, "--out", str(folder), *resume])
    assert code == 0, output
    assert not list(folder.glob("*.tmp-*"))  # temporaries of the killed processes removed
    code, output = finish([*RUN, "--epochs", epochs, "--out", str(tmp_path / "whole")])
    assert code == 0, output
    assert_same_run(folder, tmp_path / "whole")
    print(f"{kills} kills, resumed to epoch {epochs}")


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_mid_epoch_checkpoint_and_resume_exactly(tmp_path, signum, status):
    folder = tmp_path / "stopped"
    process = start([*RUN, "--epochs", "1000", "--out", str(folder)])
    wait_for(lambda: (folder / "metrics.jsonl").exists()
             and len((folder / "metrics.jsonl").read_text().splitlines()) >= 2, process)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == status, output
    assert f"{signal.Signals(signum).name} at step" in output and "checkpoint saved" in output
    stopped = load_checkpoint(folder / "checkpoint.h5")
    epochs = str(stopped.epoch + 1)               # resume to the end of the interrupted epoch
    code, output = finish([*RUN, "--epochs", epochs, "--out", str(folder), "--resume"])
    assert code == 0, output
    code, output = finish([*RUN, "--epochs", epochs, "--out", str(tmp_path / "whole")])
    assert code == 0, output
    assert_same_run(folder, tmp_path / "whole")  # train_loss too: the epoch's sum is carried
    print(f"{signal.Signals(signum).name} stopped at epoch {stopped.epoch}, step "
          f"{stopped.extra['step_in_epoch']} of the next")


def test_two_runs_on_one_folder(tmp_path):
    folder = tmp_path / "shared"
    first = start([*RUN, "--epochs", "1000", "--out", str(folder)])
    wait_for(lambda: (folder / ".lock").exists() and (folder / ".lock").read_text().strip(), first)
    code, output = finish([*RUN, "--epochs", "2", "--out", str(folder)])
    assert code == 2 and f"in use by process {first.pid}" in output
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=300)
    code, output = finish([*RUN, "--epochs", "2", "--out", str(folder)])  # no --resume: refused
    assert code == 2 and "already holds a run" in output and "--overwrite" in output
    code, output = finish([*RUN, "--epochs", "1", "--out", str(folder), "--overwrite"])
    assert code == 0 and "--overwrite: removed the previous run" in output
    assert [m["epoch"] for m in metrics(folder)] == [1]


def test_a_full_disk_during_the_run_is_a_clear_error_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    """ENOSPC at the second epoch's checkpoint (a writer that fails as a full disk does): exit 1
    with one line naming the file, and the first epoch's checkpoint intact and resumable."""
    import errno

    from dvae_cupy import train
    from dvae_cupy.cli import train_main

    real_save, saves = train.save_checkpoint, []

    def save(path, **fields):
        saves.append(path)
        if fields["epoch"] == 2:
            raise OSError(errno.ENOSPC, f"cannot write {path}: disk full (no space left on device); "
                                        f"{os.path.basename(path)} was not changed")
        return real_save(path, **fields)
    monkeypatch.setattr(train, "save_checkpoint", save)
    folder = tmp_path / "full"
    assert train_main([*RUN, "--epochs", "3", "--out", str(folder)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dvae-train: error: cannot write") and "disk full" in err
    assert "Traceback" not in err
    assert load_checkpoint(folder / "checkpoint.h5").epoch == 1
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    assert train_main([*RUN, "--epochs", "3", "--out", str(folder), "--resume"]) == 0


@pytest.mark.parametrize("setup, args, message", [
    (lambda d: d.write_text("x"), [], "is a file, not a folder"),
    (lambda d: None, ["--eps0", "0.1", "--eps-min", "5"], "--eps-min (5.0) must be <= --eps0"),
    (lambda d: None, ["--lr", "1e6", "--epochs", "1"], "training loss"),
    (lambda d: None, ["--epochs", "0"], None),
])
def test_bad_runs_end_in_one_line(tmp_path, setup, args, message):
    folder = tmp_path / "out"
    setup(folder)
    code, output = finish([*RUN, "--out", str(folder), *args])
    assert "Traceback" not in output
    if message is None:  # --epochs 0
        assert code == 0 and "nothing to do" in output
    else:
        assert code in (1, 2) and "dvae-train: error:" in output and message in output, output


def test_a_damaged_checkpoint_is_not_resumed_and_best_is_pointed_at(tmp_path):
    folder = tmp_path / "damaged"
    code, output = finish([*RUN, "--epochs", "2", "--out", str(folder)])
    assert code == 0, output
    raw = bytearray((folder / "checkpoint.h5").read_bytes())
    raw[len(raw) // 2] ^= 0xFF                    # inside the parameters
    (folder / "checkpoint.h5").write_bytes(bytes(raw))
    code, output = finish([*RUN, "--epochs", "3", "--out", str(folder), "--resume"])
    assert code == 2 and "cannot resume" in output and "best.h5 is sound" in output, output


def test_a_replaced_data_set_is_not_resumed(tmp_path):
    data = np.random.default_rng(0).uniform(size=(600, 6, 5)) > 0.5
    np.save(tmp_path / "x.npy", data)
    args = ["--dataset", "x.npy", "--epochs", "1", "--batch-size", "50", "--hidden", "8",
            "--backend", "cpu", "--no-progress", "--out", "run"]
    assert subprocess.run([sys.executable, "-m", "dvae_cupy.cli", *args], cwd=tmp_path).returncode == 0
    moved = ["--dataset", "./x.npy", *args[2:]]  # the same data by another path: resumes
    moved[moved.index("1")] = "2"
    assert subprocess.run([sys.executable, "-m", "dvae_cupy.cli", *moved, "--resume"], cwd=tmp_path).returncode == 0
    np.save(tmp_path / "x.npy", ~data)           # replaced under the same name: refused
    moved[moved.index("2")] = "3"
    result = subprocess.run([sys.executable, "-m", "dvae_cupy.cli", *moved, "--resume"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "not the one the run was trained on" in result.stderr
