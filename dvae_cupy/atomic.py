"""Atomic file writes: every file the project writes (checkpoints, data sets, pictures, metrics)
is written beside its target under a temporary name and renamed over it only once complete, so
a crash mid-write leaves the previous file intact and no partial one."""
import contextlib
import os


@contextlib.contextmanager
def atomic_path(path, durable=False):
    """Yield a temporary path beside `path`; when the block ends normally it replaces `path`,
    when it raises the temporary file is removed. durable=True also fsyncs the file before the
    rename and the folder after it, so the new file survives a power cut (checkpoints)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        yield tmp
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if durable:
        _fsync_dir(os.path.dirname(os.path.abspath(path)))


def _fsync_file(path):
    """Push the file's data to the disk; an fsync on any descriptor of a file flushes all of its
    written data."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(directory):
    """Make the rename itself durable (POSIX only; Windows cannot open directories)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
