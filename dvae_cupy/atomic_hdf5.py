"""Writing an HDF5 file atomically, with HDF5 itself never touching the disk.

Why: when HDF5 meets a full disk (ENOSPC) part way through a file, or while flushing it at
close, it fails with its own internal messages ("Disable slist on flush dest failure failed
..."), leaves its objects in a state in which h5py's destructors fail again (dozens of
"Exception ignored in ... ObjectID.__dealloc__" tracebacks), and the interpreter can then
crash at exit (a segmentation fault). So `atomic_hdf5` lets h5py build the whole file in memory
(an io.BytesIO, h5py's documented "Python file-like object" driver, which cannot run out of
disk), and only once HDF5 has closed it cleanly writes its bytes to atomic_path's temporary file
with plain Python file I/O. A full disk is then an ordinary OSError(ENOSPC) from write, close
or fsync, which atomic_path turns into one line naming the file ("cannot write <file>: disk
full (no space left on device); <file> was not changed").

Memory: the finished file's bytes (compressed, where its datasets are) are held once, in the
BytesIO (plus what CPython over-allocates as it grows, about an eighth), written from it without
a copy (a memoryview) and freed before the fsync and rename.

Layout: h5py's file-object driver does not gather metadata into 2 KiB blocks as HDF5's default
(sec2) driver does, so the files are a little smaller than before and not byte-identical to
what sec2 would write; the format versions (libver) and every checksum are the same.
"""
import contextlib
import io

import h5py

from .atomic import atomic_path


@contextlib.contextmanager
def atomic_hdf5(path, durable=False, **file_options):
    """Yield a new, empty h5py.File (mode "w", `file_options` passed to h5py.File) built in
    memory; when the block ends normally, its bytes replace `path` through atomic_path.

    Until then nothing is written: an exception in the block leaves `path` as it was and no
    temporary file behind. A folder at `path` is refused before the block runs. durable=True
    fsyncs the file and its folder (atomic_path). A failed write raises atomic_path's OSError
    naming `path`.
    """
    with atomic_path(path, durable=durable) as tmp:
        image = io.BytesIO()
        with h5py.File(image, "w", **file_options) as f:
            yield f
        _write_image(tmp, image)


def _write_image(tmp, image):
    """Write the BytesIO's bytes to the file `tmp` (created), without copying them."""
    with open(tmp, "wb") as fh, image.getbuffer() as view:
        fh.write(view)  # a buffered write writes it all or raises
    image.close()  # free them now, not when the generator's frame goes

