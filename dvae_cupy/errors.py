"""The exceptions dvae_cupy raises for faults a user can meet, so that callers (the CLI above
all) can tell them apart from bugs: ValueError for bad input (options, arrays, values), the
OSError subclasses below for file and disk faults, GPUUnavailableError for a GPU that cannot be
used. Every message names the file, option or piece at fault and what is wrong with it."""


class CorruptFileError(OSError):
    """A file exists but cannot be trusted: truncated, damaged (a checksum or digest does not
    match), unreadable as HDF5, or not in the layout it claims. The message names the file and,
    where known, the damaged item."""


class RunFolderError(OSError):
    """The run folder cannot be used as asked: it holds another run, another process holds its
    lock, or it cannot be created or written."""


class GPUUnavailableError(RuntimeError):
    """The GPU backend was asked for and cannot be used; the message names the failing piece
    (CuPy, driver, NVVM, nvJitLink, kernel launch) and, where one exists, the fix."""


class TrainingDiverged(FloatingPointError):
    """The training loss became non-finite, or grew by orders of magnitude over its running
    median; the run stopped before saving anything from the diverged state."""


class RunInterrupted(Exception):
    """A signal (SIGINT, SIGTERM) stopped a run between two steps, after its checkpoint was
    saved. `signum` is the signal; a command exits with 128 + signum."""

    def __init__(self, signum, message):
        super().__init__(message)
        self.signum = signum


class NotFittedError(ValueError, AttributeError):
    """A DiscreteVAE used before it was fitted or loaded (as scikit-learn's NotFittedError, a
    ValueError and an AttributeError, so code written for either catches it)."""
