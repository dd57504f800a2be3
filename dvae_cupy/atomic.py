"""Writing files so that a crash, a full disk or a read-only folder never leaves a half-written
file in the place of a good one, and every failure says in words what went wrong.

What is atomic and what is not:
  - checkpoints, data sets and pictures are written through `atomic_path`: beside the target
    under a temporary name `<file>.tmp-<pid>`, then renamed over it only once complete. A crash
    mid-write leaves the previous file intact (and, at worst, an orphan temporary, which
    `remove_orphan_temporaries` clears at the next start). HDF5 files are built in memory first
    and only their finished bytes are written here (atomic_hdf5.py says why).
  - metrics.jsonl is appended one line per epoch (`append_text`); an append is not atomic: a
    crash mid-append can leave a partial last line. The trainer rewrites the whole file
    (atomically) from the checkpoint on resume, which drops such a line.

Every OSError raised while writing is re-raised as an OSError (same errno) whose message names
the target file (not the temporary), says what went wrong in words (`explain_os_error`) and
whether the previous file is unchanged.
"""
import contextlib
import errno
import os
import re

TEMPORARY_SUFFIX = re.compile(r"\.tmp-([0-9]+)$")

# What went wrong, in words, for the errors a user can meet while writing.
_ERRNO_WORDS = {
    errno.ENOSPC: "disk full (no space left on device)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "it is a folder, expected a file",
    errno.ENOTDIR: "a folder on its path is a file",
    errno.ENOENT: "its folder does not exist",
    errno.EFBIG: "file too large for this file system",
    errno.EIO: "input/output error (a failing disk or a lost network mount?)",
}
# h5py reports the C library's failures as OSError without an errno, but with "errno = N" inside
# the message (e.g. "Unable to create file (... errno = 28, error message = '...')").
_H5PY_ERRNO = re.compile(r"errno = ([0-9]+)")


def temporary_path(path):
    """The temporary name `atomic_path` writes `path` under, in the same folder (so the final
    rename stays within one file system)."""
    return f"{os.fspath(path)}.tmp-{os.getpid()}"


@contextlib.contextmanager
def atomic_path(path, durable=False):
    """Yield a temporary path beside `path`; when the block ends normally it replaces `path`.

    However the block ends, no temporary file is left behind (unless the process is killed
    outright: see remove_orphan_temporaries). An OSError from the block, the fsync or the
    rename is re-raised as an OSError naming `path` and what went wrong (see the module
    docstring); until the rename, `path` itself is never touched. durable=True also fsyncs the
    file before the rename and the folder after it, so the new file survives a power cut
    (checkpoints).
    """
    path = os.fspath(path)
    if os.path.isdir(path):  # found now, not after the whole file has been written
        raise _write_error(path, IsADirectoryError(errno.EISDIR, "is a folder", path), False)
    tmp = temporary_path(path)
    replaced = False
    existed = os.path.lexists(path)  # for the message: "not changed", or "not created"
    try:
        yield tmp
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, path)
        replaced = True
        if durable:
            _fsync_dir(os.path.dirname(os.path.abspath(path)))
    except OSError as err:
        raise _write_error(path, err, replaced if replaced or existed else "new") from err
    finally:
        _remove_if_there(tmp)


def append_text(path, text):
    """Append `text` to the file `path` (created if missing) and flush it to the OS; an OSError
    is re-raised naming `path` and what went wrong. Not atomic: see the module docstring."""
    path = os.fspath(path)
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as err:
        raise _write_error(path, err, None) from err


def remove_orphan_temporaries(folder):
    """Remove the `<file>.tmp-<pid>` files in `folder` whose writer process is no longer alive;
    return the paths removed, sorted.

    Only regular files of exactly that pattern are considered, and only when no process with
    that PID exists: a live process's temporary (this one's included) is always kept. PIDs are
    those of this machine's PID namespace: a folder shared with another machine or container
    may hold temporaries of processes this one cannot see, so hold the run folder's lock (see
    run_folder.py) before calling this.
    """
    removed = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        match = TEMPORARY_SUFFIX.search(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        if pid_is_alive(int(match.group(1))):
            continue
        try:
            os.remove(entry.path)
        except FileNotFoundError:  # removed meanwhile by someone else
            continue
        except OSError as err:
            raise OSError(f"cannot remove the orphan temporary file {entry.path}: "
                          f"{explain_os_error(err)}") from err
        removed.append(entry.path)
    return removed


def pid_is_alive(pid):
    """Whether a process with this PID exists on this machine (a zombie counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists but belongs to another user
        return True
    except OverflowError:  # larger than any PID
        return False
    return True


def explain_os_error(err):
    """What went wrong in an OSError, in words (its errno's, or h5py's text when it has none)."""
    code = os_error_code(err)
    if code in _ERRNO_WORDS:
        return _ERRNO_WORDS[code]
    if code is not None:
        return os.strerror(code).lower()
    return str(err)


def os_error_code(err):
    """The errno of an OSError, looked for in h5py's message when the attribute is unset."""
    if err.errno is not None:
        return err.errno
    match = _H5PY_ERRNO.search(str(err))
    return int(match.group(1)) if match else None


# ------------------------------------------------------------------------------------------------
# Helpers

def _write_error(path, err, replaced):
    """An OSError (errno kept) naming `path`; `replaced` says whether the new file is in place
    (True), the old one is untouched (False), there was none and none was made ("new"), or this
    is not a replacing write (None)."""
    outcome = {True: "; the new file is in place but may not survive a power cut",
               False: f"; {os.path.basename(path)} was not changed",
               "new": f"; {os.path.basename(path)} was not created",
               None: ""}[replaced]
    error = OSError(f"cannot write {path}: {explain_os_error(err)}{outcome}")
    error.errno = os_error_code(err)  # set after construction so str() stays the message alone
    return error


def _remove_if_there(path):
    """Remove `path` if it exists; a failure to remove it must not hide the error being raised."""
    with contextlib.suppress(OSError):
        os.remove(path)


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
