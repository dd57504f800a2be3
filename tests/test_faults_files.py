"""File and disk faults: a full disk (a fake writer raising ENOSPC, and a real tiny tmpfs), a
read-only folder (a read-only tmpfs remount; chmod where permission bits apply), a folder where a
file should be, a process killed mid-write. Each must end in an OSError whose message names the
file and says what went wrong in words, with no temporary file left and the previous file
intact and loadable; orphan temporaries of dead processes are removed, a live one's kept."""
import errno
import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from checkpoint_samples import assert_checkpoint_equals, trainer_state
from tmpfs_disks import ROOT, fill, mount, tmpfs

from dvae_cupy import images
from dvae_cupy.atomic import (append_text, atomic_path, pid_is_alive,
                              remove_orphan_temporaries)
from dvae_cupy.checkpoint import checkpoint_problem, load_checkpoint, save_checkpoint
from dvae_cupy.errors import RunFolderError
from dvae_cupy.run_folder import check_run_folder, prepare_run_folder


def new_state(step):
    return dict(trainer_state(1), step=step)


def assert_previous_intact(path, state):
    """`path` is the old checkpoint, whole and sound, and no temporary is left beside it."""
    assert_checkpoint_equals(load_checkpoint(path), state)
    assert checkpoint_problem(path) is None
    assert not [p for p in os.listdir(path.parent) if ".tmp-" in p]


@pytest.fixture
def old_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.h5"
    state = trainer_state()
    save_checkpoint(path, **state)
    return path, state


# ------------------------------------------------------------------------------------------------
# Fake writers: each error a disk can give, raised part way through a checkpoint

@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, "disk full (no space left on device)"),
    (errno.EDQUOT, "disk quota exceeded"),
    (errno.EROFS, "read-only file system"),
    (errno.EACCES, "permission denied"),
    (errno.EIO, "input/output error (a failing disk or a lost network mount?)"),
])
def test_failing_write_mid_checkpoint(old_checkpoint, monkeypatch, code, words):
    path, state = old_checkpoint
    real_create = h5py.Group.create_dataset
    calls = []

    def fail_on_fifth(self, *args, **kwargs):
        calls.append(args[0])
        if len(calls) == 5:
            raise OSError(code, os.strerror(code))
        return real_create(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", fail_on_fifth)
    with pytest.raises(OSError) as caught:
        save_checkpoint(path, **new_state(99))
    monkeypatch.undo()
    assert str(caught.value) == f"cannot write {path}: {words}; checkpoint.h5 was not changed"
    assert caught.value.errno == code
    assert_previous_intact(path, state)


def test_disk_full_at_fsync(old_checkpoint, monkeypatch):
    path, state = old_checkpoint

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="disk full .*; checkpoint.h5 was not changed"):
        save_checkpoint(path, **new_state(99))
    monkeypatch.undo()
    assert_previous_intact(path, state)


def test_fake_writer_raising_enospc_mid_file(tmp_path):
    target = tmp_path / "codes.png"
    target.write_bytes(b"old picture")
    with pytest.raises(OSError, match=f"cannot write {target}: disk full"):
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:
            fh.write(b"x" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"old picture"
    assert os.listdir(tmp_path) == ["codes.png"]


def test_a_failed_first_write_says_the_file_was_not_created(tmp_path):
    target = tmp_path / "best.h5"                  # not there before: nothing "was not changed"
    with pytest.raises(OSError) as caught:
        with atomic_path(target) as tmp, open(tmp, "wb"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(caught.value) == (f"cannot write {target}: disk full (no space left on device); "
                                 f"best.h5 was not created")
    assert os.listdir(tmp_path) == []


def test_a_folder_where_the_checkpoint_should_be(tmp_path):
    (tmp_path / "checkpoint.h5").mkdir()
    (tmp_path / "checkpoint.h5" / "keep").write_text("x")
    with pytest.raises(OSError) as caught:
        save_checkpoint(tmp_path / "checkpoint.h5", **new_state(1))
    assert str(caught.value) == (f"cannot write {tmp_path / 'checkpoint.h5'}: it is a folder, "
                                 f"expected a file; checkpoint.h5 was not changed")
    assert (tmp_path / "checkpoint.h5" / "keep").read_text() == "x"
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.h5"]


def test_metrics_replaced_by_a_folder(tmp_path):
    (tmp_path / "metrics.jsonl").mkdir()
    with pytest.raises(OSError) as caught:
        append_text(tmp_path / "metrics.jsonl", '{"epoch": 1}\n')
    assert str(caught.value) == (f"cannot write {tmp_path / 'metrics.jsonl'}: it is a folder, "
                                 f"expected a file")


def test_checkpoint_into_a_missing_folder(tmp_path):
    path = tmp_path / "gone" / "checkpoint.h5"
    with pytest.raises(OSError, match=f"cannot write {path}: its folder does not exist"):
        save_checkpoint(path, **new_state(1))


def test_append_text_appends(tmp_path):
    append_text(tmp_path / "m.jsonl", "a\n")
    append_text(tmp_path / "m.jsonl", "b\n")
    assert (tmp_path / "m.jsonl").read_text() == "a\nb\n"


# ------------------------------------------------------------------------------------------------
# A real tiny disk (tmpfs): full, and remounted read-only

@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs mounted on tmp_path/disk (root only; skipped, saying why, elsewhere)."""
    with tmpfs(tmp_path / "disk", "256k") as point:
        yield point


def test_real_full_disk_keeps_the_previous_checkpoint(tiny_disk):
    path = tiny_disk / "checkpoint.h5"
    state = trainer_state()
    save_checkpoint(path, **state)
    fill(tiny_disk)
    with pytest.raises(OSError) as caught:
        save_checkpoint(path, **new_state(99))
    assert str(caught.value) == (f"cannot write {path}: disk full (no space left on device); "
                                 f"checkpoint.h5 was not changed")
    assert caught.value.errno == errno.ENOSPC
    assert_previous_intact(path, state)
    os.remove(tiny_disk / "filler")                  # space again: the next save works
    save_checkpoint(path, **new_state(99))
    assert load_checkpoint(path).step == 99


def test_real_full_disk_pictures_metrics_and_probe(tiny_disk):
    picture = tiny_disk / "codes.png"
    images.write_png(picture, np.zeros((28, 28)))
    old = picture.read_bytes()
    append_text(tiny_disk / "metrics.jsonl", "{}\n")
    fill(tiny_disk)
    noisy = np.random.default_rng(0).random((280, 280))  # too big to fit anywhere
    with pytest.raises(OSError, match=f"cannot write {picture}: disk full"):
        images.write_png(picture, noisy)
    assert picture.read_bytes() == old
    with pytest.raises(OSError, match="metrics.jsonl: disk full"):
        append_text(tiny_disk / "metrics.jsonl", "x" * 100_000 + "\n")
    with pytest.raises(RunFolderError, match=f"run folder {tiny_disk} is not writable: disk full"):
        check_run_folder(tiny_disk)
    assert sorted(os.listdir(tiny_disk)) == ["codes.png", "filler", "metrics.jsonl"]


def test_real_read_only_folder(tiny_disk):
    path = tiny_disk / "checkpoint.h5"
    state = trainer_state()
    save_checkpoint(path, **state)
    done = mount("-o", "remount,ro", str(tiny_disk))
    if done.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only ({done.stderr.strip()})")
    with pytest.raises(OSError) as caught:
        save_checkpoint(path, **new_state(99))
    assert str(caught.value) == (f"cannot write {path}: read-only file system; checkpoint.h5 "
                                 f"was not changed")
    assert_previous_intact(path, state)
    with pytest.raises(RunFolderError, match=f"run folder {tiny_disk} is not writable: "
                                             f"read-only file system"):
        prepare_run_folder(tiny_disk, resume=True)
    with pytest.raises(RunFolderError, match=f"run folder {tiny_disk / 'sub'} cannot be "
                                             f"created: read-only file system"):
        check_run_folder(tiny_disk / "sub")


def test_permission_bits_read_only_folder(tmp_path):
    if ROOT:
        pytest.skip("root ignores permission bits (and this machine's Python lives under /root, "
                    "which another user cannot read); test_real_read_only_folder covers a "
                    "read-only folder")
    path = tmp_path / "checkpoint.h5"
    state = trainer_state()
    save_checkpoint(path, **state)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(OSError, match=f"cannot write {path}: permission denied"):
            save_checkpoint(path, **new_state(99))
        with pytest.raises(RunFolderError, match="is not writable: permission denied"):
            check_run_folder(tmp_path)
    finally:
        tmp_path.chmod(0o755)
    assert_previous_intact(path, state)


# ------------------------------------------------------------------------------------------------
# Orphan temporaries

def dead_pid():
    """The PID of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(done.stdout)
    assert not pid_is_alive(pid)
    return pid


def test_orphans_of_dead_processes_go_and_live_ones_stay(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = dead_pid()
        names = {
            f"checkpoint.h5.tmp-{dead}": "removed",
            f"best.h5.tmp-{dead}": "removed",
            f"checkpoint.h5.tmp-{live.pid}": "kept",          # another live process
            f"metrics.jsonl.tmp-{os.getpid()}": "kept",       # this process
            f"notes.tmp-{dead}.txt": "kept",                  # not our pattern
            "checkpoint.h5.tmp-": "kept",
            "checkpoint.h5.tmp-abc": "kept",
            "checkpoint.h5": "kept",
        }
        for name in names:
            (tmp_path / name).write_text("x")
        (tmp_path / f"plots.tmp-{dead}").mkdir()                # a folder: never ours
        os.symlink(tmp_path / "checkpoint.h5", tmp_path / f"link.tmp-{dead}")  # a link: same
        removed = remove_orphan_temporaries(tmp_path)
        assert removed == sorted(str(tmp_path / n) for n, fate in names.items()
                                 if fate == "removed")
        left = set(os.listdir(tmp_path))
        assert left == {n for n, fate in names.items() if fate == "kept"} | {
            f"plots.tmp-{dead}", f"link.tmp-{dead}"}
    finally:
        live.kill()
        live.wait()


def test_pid_is_alive():
    assert pid_is_alive(os.getpid())
    assert not pid_is_alive(0) and not pid_is_alive(-1)
    assert not pid_is_alive(2**40)
    assert not pid_is_alive(dead_pid())


KILLED_MID_WRITE = textwrap.dedent("""
    import builtins, os, signal, sys
    import h5py
    sys.path.insert(0, sys.argv[3])
    from checkpoint_samples import trainer_state
    from dvae_cupy import atomic_hdf5
    from dvae_cupy.checkpoint import save_checkpoint

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if sys.argv[2] == "building":      # while HDF5 builds the file in memory
        real_create, calls = h5py.Group.create_dataset, []
        def create_dataset(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 10:
                die()
            return real_create(self, *args, **kwargs)
        h5py.Group.create_dataset = create_dataset
    else:                              # half way through writing its bytes to the temporary
        class HalfThenDie:
            def __init__(self, fh):
                self.fh = fh
            def __enter__(self):
                return self
            def __exit__(self, *exc):
                self.fh.close()
            def write(self, data):
                self.fh.write(data[:len(data) // 2])
                self.fh.flush()
                die()
        atomic_hdf5.open = lambda *args: HalfThenDie(builtins.open(*args))
    save_checkpoint(sys.argv[1], **dict(trainer_state(1), step=99))
""")


def kill_mid_write(path, where):
    child = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(path), where,
                            os.path.dirname(__file__)], capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr


def test_process_killed_while_building_the_file_leaves_nothing(old_checkpoint):
    path, state = old_checkpoint
    kill_mid_write(path, "building")  # nothing is on the disk until HDF5 has closed the file
    assert_previous_intact(path, state)


def test_process_killed_mid_write_leaves_an_orphan_the_next_start_removes(old_checkpoint):
    path, state = old_checkpoint
    kill_mid_write(path, "writing")
    orphans = [p for p in os.listdir(path.parent) if ".tmp-" in p]
    assert len(orphans) == 1 and orphans[0].startswith("checkpoint.h5.tmp-")
    assert 0 < (path.parent / orphans[0]).stat().st_size < path.stat().st_size  # half written
    assert_checkpoint_equals(load_checkpoint(path), state)     # the old one, untouched
    lines = []
    prepare_run_folder(path.parent, resume=True, log=lines.append).release()
    assert lines == [f"removed {path.parent / orphans[0]}, a temporary file left by a process "
                     f"that died mid-write"]
    assert_previous_intact(path, state)
