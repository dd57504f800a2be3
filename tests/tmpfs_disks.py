"""Real tiny disks for the fault tests (test_faults_files.py, test_faults_disk_full.py): a tmpfs
of a given size mounted on a folder (root only; the test is skipped, saying why, elsewhere),
resized by remounting, and filled to the last block."""
import contextlib
import errno
import os
import subprocess

import pytest

ROOT = os.geteuid() == 0
PAGE = os.sysconf("SC_PAGE_SIZE")  # tmpfs sizes and usage count whole pages


def mount(*args):
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@contextlib.contextmanager
def tmpfs(point, size):
    """Mount a tmpfs of `size` (bytes, or a mount size such as "256k") on the folder `point`
    (made if missing) for the block; skip the test where that cannot be done."""
    if not ROOT:
        pytest.skip("mounting a tmpfs needs root; the fake-writer tests cover ENOSPC")
    point.mkdir(exist_ok=True)
    done = mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the fake-writer tests "
                    f"cover ENOSPC")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], capture_output=True)


def resize(point, size):
    """Give the tmpfs on `point` a new size in bytes (rounded up to whole pages)."""
    done = mount("-o", f"remount,size={pages(size) * PAGE}", str(point))
    assert done.returncode == 0, done.stderr


def pages(size):
    return -(-size // PAGE)


def used_bytes(point):
    """Bytes in use on the file system of `point`, in whole blocks."""
    stat = os.statvfs(point)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


def fill(disk):
    """Write a filler file until the disk is full."""
    with open(disk / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC
    assert os.statvfs(disk).f_bavail == 0
