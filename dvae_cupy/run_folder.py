"""A run folder belongs to one run: checked before training starts, locked while a run uses it,
and never overwritten by accident.

    lock = prepare_run_folder("runs/a", resume=False, overwrite=False, log=print)
    try:
        ...train, writing checkpoint.h5, best.h5, metrics.jsonl and the pictures...
    finally:
        lock.release()

The pieces, one job each:
  check_run_folder(path)     the folder can be created and written (a probe write), or
                             RunFolderError saying why
  lock_run_folder(path)      an exclusive lock (fcntl.flock on `.lock` in the folder, holding
                             the holder's PID); a second process fails at once naming that PID;
                             the kernel releases it when the process dies, however it dies
  describe_run(path)         what run is there (epoch, step, best valid loss, damaged files)
  run_files(path)            which of the files a run writes (RUN_FILES) are there
  prepare_run_folder(...)    all of the above in order, as the trainer and fit(out=...) need
  set_aside_run(path)        an --overwrite run's first save: the previous run moved into
                             .replaced-<pid>, then discard_set_aside (saved) or
                             restore_set_aside (failed); recover_set_aside_runs after a kill

POSIX only (fcntl). flock works on local file systems and, on Linux, on NFS (as a whole-file
lock); a folder shared between machines is locked only where the file system propagates it.
"""
import contextlib
import errno
import fcntl
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import explain_os_error, pid_is_alive, remove_orphan_temporaries
from .checkpoint import checkpoint_problem, load_checkpoint
from .errors import RunFolderError

CHECKPOINT = "checkpoint.h5"
BEST = "best.h5"
METRICS = "metrics.jsonl"
PICTURES = ("reconstructions.png", "codes.png", "curves.png", "pairwise.png")
RUN_FILES = (CHECKPOINT, BEST, METRICS) + PICTURES   # every file a run writes in its folder
LOCK_FILE = ".lock"
SET_ASIDE_PREFIX = ".replaced-"   # + the PID of the --overwrite run that moved the previous run there


# ------------------------------------------------------------------------------------------------
# Checking that the folder can be used

def check_run_folder(path):
    """Create `path` (and its parents) if needed and prove it writable with a probe file;
    return it as a Path. RunFolderError when it is a file, lies under a file, cannot be
    created, or cannot be written (read-only, no permission, disk full)."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"run folder {folder} is a file, not a folder")
    blocker = _file_on_the_way(folder)
    if blocker is not None:
        raise RunFolderError(f"run folder {folder} cannot be created: {blocker} is a file, "
                             f"not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunFolderError(f"run folder {folder} cannot be created: "
                             f"{explain_os_error(err)}") from err
    _probe_write(folder)
    return folder


def _file_on_the_way(folder):
    """The first ancestor of `folder` that exists and is not a folder, or None."""
    for parent in reversed(folder.absolute().parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def _probe_write(folder):
    """Write, flush and remove a small file in `folder`, or RunFolderError saying why not."""
    probe = folder / f".probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"dvae_cupy write probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.remove(probe)
    except OSError as err:
        if probe.exists():
            try:
                probe.unlink()
            except OSError:
                pass
        raise RunFolderError(f"run folder {folder} is not writable: "
                             f"{explain_os_error(err)}") from err


# ------------------------------------------------------------------------------------------------
# The lock

class RunLock:
    """An exclusive flock on `<folder>/.lock`, which holds the holder's PID while held.

    The lock file itself stays when released (emptied): removing it would let a process that
    opened it just before the removal lock a file nobody else can see any more."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd = None

    @property
    def held(self):
        return self._fd is not None

    def acquire(self):
        """Take the lock at once or raise RunFolderError naming the process that holds it."""
        if self.held:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunFolderError(f"cannot lock run folder {self.folder}: cannot open "
                                 f"{self.path}: {explain_os_error(err)}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_pid(fd)
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise RunFolderError(f"cannot lock run folder {self.folder}: "
                                     f"{explain_os_error(err)}") from err
            raise RunFolderError(f"run folder {self.folder} is in use by {_who(holder)} "
                                 f"(it holds {self.path}); wait for that run to end or choose "
                                 f"another output folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self):
        """Empty the lock file and unlock it (closing the descriptor releases the flock)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass   # a read-only remount: the PID stays, and the next holder overwrites it
        finally:
            os.close(fd)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def lock_run_folder(path):
    """Lock the existing folder `path` for this process; return the held RunLock."""
    return RunLock(path).acquire()


def _read_pid(fd):
    """The PID written in an open lock file, or None when it holds none yet."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _who(pid):
    if pid is None:
        return "another process (its PID is not written yet)"
    if pid == os.getpid():
        return f"this process (PID {pid}; another run in the same program?)"
    return f"process {pid}"


# ------------------------------------------------------------------------------------------------
# What run is there

@dataclass
class RunSummary:
    """What a run folder holds: the run's files, how far the run got (from checkpoint.h5, else
    metrics.jsonl), its best valid loss (metrics.jsonl, else checkpoint.h5), and the files that
    are damaged ({name: what is wrong}; checkpoint.h5, best.h5 and metrics.jsonl are checked)."""
    folder: Path
    files: list
    epoch: int | None = None
    step: int | None = None
    best_valid_loss: float | None = None
    damaged: dict = field(default_factory=dict)

    def describe(self):
        """One line for messages: "epoch 2, step 1200, best valid loss 101.25; files: ..."."""
        progress = "epoch unknown" if self.epoch is None else f"epoch {self.epoch}"
        if self.step is not None:
            progress += f", step {self.step}"
        if self.best_valid_loss is not None:
            progress += f", best valid loss {self.best_valid_loss:.2f}"
        text = f"{progress}; files: {', '.join(self.files)}"
        for name, problem in self.damaged.items():
            text += f"; {name} is damaged ({problem})"
        return text


def run_files(path):
    """The names of RUN_FILES present in `path` (links included), in RUN_FILES' order."""
    return [name for name in RUN_FILES if os.path.lexists(Path(path) / name)]


def describe_run(path):
    """The RunSummary of the run in `path`, or None when it holds none of RUN_FILES. Never
    raises for damaged files: they are listed in `damaged` and the rest is read around them."""
    folder = Path(path)
    files = run_files(folder)
    if not files:
        return None
    summary = RunSummary(folder, files)
    checkpoint_best = None
    if CHECKPOINT in files:
        try:
            ckpt = load_checkpoint(folder / CHECKPOINT)
            summary.epoch, summary.step = ckpt.epoch, ckpt.step
            checkpoint_best = _finite((ckpt.extra or {}).get("best_valid"))
        except OSError as err:
            summary.damaged[CHECKPOINT] = _problem(str(err), folder / CHECKPOINT)
    if BEST in files:
        problem = checkpoint_problem(folder / BEST)
        if problem is not None:
            summary.damaged[BEST] = _problem(problem, folder / BEST)
    if METRICS in files:
        records, problem = _read_metrics(folder / METRICS)
        if problem:
            summary.damaged[METRICS] = problem
        if records and summary.epoch is None:
            summary.epoch, summary.step = records[-1].get("epoch"), records[-1].get("step")
        losses = [_finite(r.get("valid_loss")) for r in records]
        losses = [x for x in losses if x is not None]
        if losses:
            summary.best_valid_loss = min(losses)
    if summary.best_valid_loss is None:
        summary.best_valid_loss = checkpoint_best
    return summary


def _read_metrics(path):
    """(the JSON object lines of metrics.jsonl, what is wrong with the file or None)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        return [], explain_os_error(err)
    records, bad = [], 0
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif line.strip():
            bad += 1
    return records, (f"{bad} unreadable line{'s' * (bad != 1)}" if bad else None)


def _finite(value):
    """`value` as a float when it is a finite number, else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _problem(message, path):
    """An error message without its leading file name (the summary names the file)."""
    return message.removeprefix(f"{path}: ")


# ------------------------------------------------------------------------------------------------
# Replacing a run

def _check_removable(folder):
    """RunFolderError if a run file's name in `folder` is taken by a folder (not ours to delete)."""
    for name in RUN_FILES:
        target = folder / name
        if target.is_dir() and not target.is_symlink():
            raise RunFolderError(f"cannot replace the run in {folder}: {target} is a folder, "
                                 f"not a file a run writes; move it away first")


# ------------------------------------------------------------------------------------------------
# Everything a run does before its first step

def prepare_run_folder(path, *, resume=False, overwrite=False, log=print):
    """Make `path` ready for a run and return its held RunLock (release it when the run ends).

    In order: check the folder (check_run_folder), lock it, remove orphan temporaries of dead
    processes and recover runs they had set aside (recover_set_aside_runs), then apply the
    rules: a fresh run into a folder holding a run is refused (RunFolderError saying what is
    there and offering resume or overwrite); overwrite=True accepts that run and says so
    through `log`, but touches nothing: the caller sets it aside (set_aside_run) for its first
    save and deletes it once that save is complete, so a new run that does not get that far
    (bad input, a divergence, Ctrl-C, a failed write, a kill) leaves the previous one as it
    was; resume=True of a folder with no checkpoint.h5 is refused. Whether checkpoint.h5 is sound is
    for the caller to check when it loads it (checkpoint.checkpoint_problem). On any error the
    lock is released.
    """
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: resume continues the run in "
                         "the folder, overwrite replaces it")
    folder = check_run_folder(path)
    lock = lock_run_folder(folder)
    try:
        for orphan in remove_orphan_temporaries(folder):
            log(f"removed {orphan}, a temporary file left by a process that died mid-write")
        recover_set_aside_runs(folder, log)
        run = describe_run(folder)
        if resume:
            _check_resumable(folder, run)
        elif run is not None and not overwrite:
            raise RunFolderError(f"{folder} already holds a run ({run.describe()}); continue "
                                 f"it with --resume, or replace it with --overwrite")
        elif run is not None:
            _check_removable(folder)
            log(f"--overwrite: the previous run in {folder} ({run.describe()}) is deleted once "
                f"this run has saved its first epoch; until then it stays as it is")
    except BaseException:
        lock.release()
        raise
    return lock


def set_aside_run(path):
    """Move the run files (RUN_FILES) in `path` into `path/.replaced-<pid>` and return that
    folder: what an --overwrite run does just before its first save. Until discard_set_aside
    (the new run's first save is complete) or restore_set_aside (it failed), the previous run
    is whole there; a process killed in between leaves it for recover_set_aside_runs."""
    folder = Path(path)
    _check_removable(folder)
    aside = folder / f"{SET_ASIDE_PREFIX}{os.getpid()}"
    try:
        aside.mkdir()
        for name in RUN_FILES:
            if os.path.lexists(folder / name):
                os.rename(folder / name, aside / name)
    except OSError as err:
        if aside.is_dir():
            _move_back(folder, aside)    # only what was moved: nothing else is touched
        raise RunFolderError(f"cannot replace the run in {folder}: cannot move its files into "
                             f"{aside}: {explain_os_error(err)}") from err
    return aside


def restore_set_aside(path, aside):
    """Put the previous run back from `aside`: the run files now in `path` (the new run's, from
    a first save that failed part way) are removed, then the set-aside ones moved back."""
    folder = Path(path)
    if not aside.is_dir():
        return
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    _move_back(folder, aside)


def _move_back(folder, aside):
    for entry in sorted(os.listdir(aside)):
        os.replace(aside / entry, folder / entry)
    aside.rmdir()


def discard_set_aside(aside):
    """Delete the previous run set aside in `aside` (the new run has saved its first epoch);
    returns the names of its files."""
    names = sorted(os.listdir(aside))
    shutil.rmtree(aside)
    return names


def recover_set_aside_runs(path, log=print):
    """A previous run set aside by an --overwrite process that died before discarding or
    restoring it: if the folder holds no checkpoint.h5, the new run never finished its first
    save, so the previous run is put back; if it does, the new run's first save was complete
    and the set-aside run is deleted, as that process was about to. Live processes' are kept."""
    folder = Path(path)
    for entry in sorted(folder.glob(f"{SET_ASIDE_PREFIX}*")):
        pid = entry.name[len(SET_ASIDE_PREFIX):]
        if not (pid.isdigit() and entry.is_dir() and not entry.is_symlink()) or pid_is_alive(int(pid)):
            continue
        if os.path.lexists(folder / CHECKPOINT):
            names = discard_set_aside(entry)
            log(f"removed {entry} ({', '.join(names)}): the previous run, which an --overwrite "
                f"run (process {pid}, dead) had replaced before it was killed")
        else:
            restore_set_aside(folder, entry)
            log(f"restored the previous run in {folder} from {entry}: an --overwrite run "
                f"(process {pid}, dead) was killed before its first checkpoint")


def _check_resumable(folder, run):
    if run is None:
        raise RunFolderError(f"nothing to resume in {folder}: it holds no run; start one "
                             f"without --resume")
    if CHECKPOINT not in run.files:
        if BEST in run.files and BEST not in run.damaged:
            advice = (f"{folder / BEST} is sound (the best epoch so far): copy it to "
                      f"{folder / CHECKPOINT} to resume from there, or start again with "
                      f"--overwrite, which deletes it")
        else:
            advice = "start again with --overwrite"
        raise RunFolderError(f"nothing to resume in {folder}: there is no {CHECKPOINT} "
                             f"(files: {', '.join(run.files)}); {advice}")
