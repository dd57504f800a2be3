"""dvae_cupy.run_folder: a run folder is one run's. The lock (a second process fails at once
naming the holder; the kernel frees it when the holder dies; a stale lock file does not block),
the description of a run robust to damaged files, the fresh/resume/overwrite rules, and the
checks of the folder itself (a file, under a file, not writable)."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from checkpoint_samples import trainer_state

from dvae_cupy.checkpoint import save_checkpoint
from dvae_cupy.errors import RunFolderError
from dvae_cupy.run_folder import (LOCK_FILE, RUN_FILES, SET_ASIDE_PREFIX, RunLock, check_run_folder,
                                  describe_run, discard_set_aside, lock_run_folder,
                                  prepare_run_folder, restore_set_aside, set_aside_run)

HOLD_LOCK = """
import sys, time
from dvae_cupy.run_folder import lock_run_folder
lock = lock_run_folder(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def files_of(folder):
    """{name: bytes} of the files in `folder`, its lock file left out."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != LOCK_FILE}


def escaped(path):
    return re.escape(str(path))


@pytest.fixture
def holder(tmp_path):
    """A child process holding the lock of tmp_path/run; yields (folder, process)."""
    folder = tmp_path / "run"
    folder.mkdir()
    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "locked\n"
        yield folder, child
    finally:
        child.kill()
        child.wait()


def write_run(folder, epoch=2, valid=(150.5, 140.25)):
    """A finished run's files as the trainer writes them."""
    state = trainer_state()
    state["epoch"], state["step"] = epoch, 600 * epoch
    state["extra"]["best_valid"] = min(valid)
    save_checkpoint(folder / "checkpoint.h5", **state)
    save_checkpoint(folder / "best.h5", **state)
    lines = [{"epoch": i + 1, "step": 600 * (i + 1), "valid_loss": v} for i, v in enumerate(valid)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    for picture in ("reconstructions.png", "codes.png", "curves.png", "pairwise.png"):
        (folder / picture).write_bytes(b"\x89PNG fake")


# ------------------------------------------------------------------------------------------------
# The lock

def test_second_process_fails_at_once_naming_the_holder(holder):
    folder, child = holder
    assert (folder / LOCK_FILE).read_text() == f"{child.pid}\n"
    started = time.monotonic()
    with pytest.raises(RunFolderError, match=escaped(folder) + f" is in use by process "
                                             f"{child.pid} "):
        lock_run_folder(folder)
    assert time.monotonic() - started < 1.0          # non-blocking: no waiting for the holder


def test_lock_is_free_once_the_holder_is_killed(holder):
    folder, child = holder
    child.send_signal(signal.SIGKILL)                # no clean-up code runs: the kernel frees it
    child.wait()
    lock = lock_run_folder(folder)
    assert lock.held and (folder / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    lock.release()
    assert (folder / LOCK_FILE).read_text() == ""


def test_stale_lock_file_of_a_dead_process_does_not_block(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    (tmp_path / LOCK_FILE).write_text(dead.stdout)   # as a killed run leaves it
    with lock_run_folder(tmp_path) as lock:
        assert lock.held and (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    assert not lock.held


def test_a_second_lock_in_the_same_process_is_refused(tmp_path):
    with lock_run_folder(tmp_path):
        with pytest.raises(RunFolderError, match=f"in use by this process \\(PID {os.getpid()}"):
            RunLock(tmp_path).acquire()
    lock_run_folder(tmp_path).release()              # free again after the with block


def test_prepare_refuses_a_folder_in_use(holder):
    folder, child = holder
    with pytest.raises(RunFolderError, match=f"in use by process {child.pid}"):
        prepare_run_folder(folder, log=lambda line: None)


# ------------------------------------------------------------------------------------------------
# Describing a run

def test_describe_a_run(tmp_path):
    assert describe_run(tmp_path) is None
    write_run(tmp_path)
    run = describe_run(tmp_path)
    assert (run.epoch, run.step, run.best_valid_loss) == (2, 1200, 140.25)
    assert run.files == list(RUN_FILES) and run.damaged == {}
    assert run.describe() == ("epoch 2, step 1200, best valid loss 140.25; files: "
                              "checkpoint.h5, best.h5, metrics.jsonl, reconstructions.png, "
                              "codes.png, curves.png, pairwise.png")


def test_describe_survives_a_damaged_checkpoint_and_metrics(tmp_path):
    write_run(tmp_path, epoch=3, valid=(150.5, 140.25, 139.0))
    data = bytearray((tmp_path / "checkpoint.h5").read_bytes())
    data[: len(data) // 2] = bytes(len(data) // 2)
    (tmp_path / "checkpoint.h5").write_bytes(data)
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 4, "st')                  # a crash mid-append
    (tmp_path / "best.h5").write_bytes((tmp_path / "best.h5").read_bytes()[:1000])
    run = describe_run(tmp_path)
    assert (run.epoch, run.step, run.best_valid_loss) == (3, 1800, 139.0)   # from metrics
    assert set(run.damaged) == {"checkpoint.h5", "best.h5", "metrics.jsonl"}
    assert "truncated or corrupt" in run.damaged["best.h5"]
    assert run.damaged["metrics.jsonl"] == "1 unreadable line"
    assert "not an HDF5 file" in run.damaged["checkpoint.h5"]
    assert "checkpoint.h5 is damaged (not an HDF5 file" in run.describe()


def test_describe_when_metrics_is_a_folder_and_no_checkpoint(tmp_path):
    (tmp_path / "metrics.jsonl").mkdir()
    run = describe_run(tmp_path)
    assert run.epoch is None and run.best_valid_loss is None
    assert run.damaged == {"metrics.jsonl": "it is a folder, expected a file"}
    assert run.describe().startswith("epoch unknown; files: metrics.jsonl")


# ------------------------------------------------------------------------------------------------
# Fresh, resume, overwrite

def test_fresh_run_into_a_folder_holding_a_run_is_refused(tmp_path):
    write_run(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RunFolderError) as caught:
        prepare_run_folder(tmp_path, log=lambda line: None)
    assert str(caught.value) == (
        f"{tmp_path} already holds a run (epoch 2, step 1200, best valid loss 140.25; files: "
        f"checkpoint.h5, best.h5, metrics.jsonl, reconstructions.png, codes.png, curves.png, "
        f"pairwise.png); continue it "
        f"with --resume, or replace it with --overwrite")
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != LOCK_FILE}
    assert after == before                           # nothing touched
    lock_run_folder(tmp_path).release()              # and the lock was let go


def test_overwrite_touches_nothing_and_a_set_aside_run_goes_or_comes_back_whole(tmp_path):
    write_run(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "plots").mkdir()
    (tmp_path / "best.h5.bak").write_text("mine too")
    before = files_of(tmp_path)
    summary = ("epoch 2, step 1200, best valid loss 140.25; files: checkpoint.h5, best.h5, "
               "metrics.jsonl, reconstructions.png, codes.png, curves.png, pairwise.png")
    lines = []
    lock = prepare_run_folder(tmp_path, overwrite=True, log=lines.append)
    assert files_of(tmp_path) == before          # the new run has saved nothing yet
    assert lines == [f"--overwrite: the previous run in {tmp_path} ({summary}) is deleted once "
                     f"this run has saved its first epoch; until then it stays as it is"]
    # a first save that fails part way: the new files go, the previous run comes back
    aside = set_aside_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE, aside.name, "best.h5.bak",
                                                          "notes.txt", "plots"]
    (tmp_path / "best.h5").write_bytes(b"the new run's, half written")
    restore_set_aside(tmp_path, aside)
    assert files_of(tmp_path) == before and not aside.exists()
    # a first save that is complete: the previous run is deleted, nothing else
    aside = set_aside_run(tmp_path)
    assert discard_set_aside(aside) == sorted(RUN_FILES)
    lock.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE, "best.h5.bak", "notes.txt",
                                                          "plots"]


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("new_run_saved", [False, True])
def test_a_run_set_aside_by_a_killed_overwrite_is_recovered(tmp_path, new_run_saved):
    """Killed between set_aside_run and the end of its first save: with no checkpoint.h5 of its
    own the new run is undone and the previous one put back; with one, the previous is deleted."""
    write_run(tmp_path)
    before = files_of(tmp_path)
    aside = set_aside_run(tmp_path)
    aside = aside.rename(tmp_path / f"{SET_ASIDE_PREFIX}{dead_pid()}")
    (tmp_path / "best.h5").write_bytes(b"new")
    if new_run_saved:
        (tmp_path / "checkpoint.h5").write_bytes(b"new")
    lines = []
    prepare_run_folder(tmp_path, resume=True, log=lines.append).release()
    assert not aside.exists() and len(lines) == 1
    if new_run_saved:
        assert lines[0].startswith(f"removed {aside} (best.h5, checkpoint.h5, codes.png")
        assert files_of(tmp_path) == {"best.h5": b"new", "checkpoint.h5": b"new"}
    else:
        assert lines[0].startswith(f"restored the previous run in {tmp_path} from {aside}")
        assert files_of(tmp_path) == before


def test_a_live_processs_set_aside_run_is_left_alone(tmp_path):
    write_run(tmp_path)
    aside = set_aside_run(tmp_path)               # this process's: alive
    with pytest.raises(RunFolderError, match="nothing to resume"):
        prepare_run_folder(tmp_path, resume=True, log=lambda line: None)
    assert sorted(p.name for p in aside.iterdir()) == sorted(RUN_FILES)


def test_overwrite_refuses_to_delete_a_folder_named_like_a_run_file(tmp_path):
    write_run(tmp_path)
    (tmp_path / "metrics.jsonl").unlink()
    (tmp_path / "metrics.jsonl").mkdir()
    (tmp_path / "metrics.jsonl" / "keep.txt").write_text("x")
    with pytest.raises(RunFolderError, match=r"metrics.jsonl is a folder, not a file a run "
                                             r"writes; move it away first"):
        set_aside_run(tmp_path)
    assert (tmp_path / "metrics.jsonl" / "keep.txt").exists()
    with pytest.raises(RunFolderError, match=r"metrics.jsonl is a folder, not a file a run "
                                             r"writes; move it away first"):
        prepare_run_folder(tmp_path, overwrite=True, log=lambda line: None)  # refused up front
    assert (tmp_path / "checkpoint.h5").exists()


def test_overwrite_or_fresh_of_an_empty_folder_just_locks(tmp_path):
    for overwrite in (False, True):
        lines = []
        prepare_run_folder(tmp_path / "new", overwrite=overwrite, log=lines.append).release()
        assert lines == []


def test_resume_of_a_folder_with_no_run_says_so(tmp_path):
    with pytest.raises(RunFolderError, match=f"nothing to resume in {escaped(tmp_path)}: it "
                                             f"holds no run; start one without --resume"):
        prepare_run_folder(tmp_path, resume=True)
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(RunFolderError, match=r"there is no checkpoint.h5 \(files: metrics.jsonl"):
        prepare_run_folder(tmp_path, resume=True)


def test_resume_without_checkpoint_h5_points_at_a_sound_best_h5(tmp_path):
    write_run(tmp_path)
    (tmp_path / "checkpoint.h5").unlink()
    with pytest.raises(RunFolderError) as caught:
        prepare_run_folder(tmp_path, resume=True)
    assert str(caught.value).endswith(
        f"; {tmp_path / 'best.h5'} is sound (the best epoch so far): copy it to "
        f"{tmp_path / 'checkpoint.h5'} to resume from there, or start again with --overwrite, "
        f"which deletes it")
    (tmp_path / "best.h5").write_bytes(b"not hdf5")        # a damaged best.h5 is not offered
    with pytest.raises(RunFolderError, match=r"\); start again with --overwrite$"):
        prepare_run_folder(tmp_path, resume=True)


def test_resume_of_a_run_keeps_every_file(tmp_path):
    write_run(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with prepare_run_folder(tmp_path, resume=True, log=lambda line: None) as lock:
        assert lock.held
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != LOCK_FILE} == before


def test_resume_and_overwrite_together_are_a_bad_argument(tmp_path):
    with pytest.raises(ValueError, match="resume and overwrite exclude each other"):
        prepare_run_folder(tmp_path, resume=True, overwrite=True)


def test_prepare_removes_orphan_temporaries_of_dead_processes(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    orphan = tmp_path / f"checkpoint.h5.tmp-{dead}"
    orphan.write_bytes(b"half a checkpoint")
    lines = []
    prepare_run_folder(tmp_path, log=lines.append).release()
    assert not orphan.exists()
    assert lines == [f"removed {orphan}, a temporary file left by a process that died mid-write"]


# ------------------------------------------------------------------------------------------------
# The folder itself

def test_folder_is_created_with_its_parents(tmp_path):
    folder = check_run_folder(tmp_path / "a" / "b")
    assert folder.is_dir() and list(folder.iterdir()) == []   # the probe file is gone


def test_folder_that_is_a_file(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(RunFolderError, match=f"run folder {escaped(tmp_path / 'out')} is a file, "
                                             f"not a folder"):
        check_run_folder(tmp_path / "out")


def test_folder_under_a_file(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(RunFolderError,
                       match=f"run folder {escaped(tmp_path / 'out' / 'a' / 'b')} cannot be "
                             f"created: {escaped(tmp_path / 'out')} is a file, not a folder"):
        check_run_folder(tmp_path / "out" / "a" / "b")
