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
