"""Data sets: readers for the standard files, binarisation, and our own HDF5 format.

Sources (see `load_dataset`):
  "fashion-mnist"      the embedded default, dvae_cupy/embedded/fashion_mnist.h5 (binarised),
                       or the IDX files in `root=` when it is given;
  "fashion-mnist-idx"  Fashion-MNIST IDX files, root defaults to /usr/share/datasets/fashion-mnist
                       (Debian: apt-get install dataset-fashion-mnist);
  "mnist"              the MNIST IDX files in `root=` (not shipped, not downloadable here);
  "omniglot"           Omniglot's chardata.mat (Burda et al.), `root=` the file or its folder;
  a path               a .h5 file in the layout below, or a folder of the four IDX files.
MNIST-like split: the first 50,000 training images train, the last 10,000 validate, the 10,000
test images test. Omniglot: the last 1,345 images of `data` validate (the validation size of
Bornschein & Bengio's reweighted wake-sleep code, which shuffles first; we do not, so the split
is fixed), the rest train, `testdata` tests.

Pixels are uint8 rows of 784 = 28*28, row-major. A `Splits` holds either binarised pixels (0/1)
or grey ones (0..255) that the trainer binarises per batch (dynamic binarisation).

HDF5 layout (version 1), written by `write_hdf5`, validated by `read_hdf5`:
  root attrs   format = "dvae_cupy.dataset", version = 1, image_shape = (28, 28), name = str
  /train, /valid, /test   groups, each with
      attr     encoding = "packbits"  binarised pixels, np.packbits along the pixel axis:
                                      uint8 (n, 98), gzip compressed
                        | "grey"      grey pixels, uint8 (n, 784), gzip compressed
      images   the pixel dataset, as the encoding says
      labels   optional uint8 (n,) class labels (present in all three groups or in none)
"""
import gzip
import hashlib
import math
import os
import zlib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import h5py
import numpy as np

from .atomic import atomic_path
from .hdf5_format import check_format

IMAGE_SHAPE = (28, 28)
D = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
SPLIT_NAMES = ("train", "valid", "test")
BINARIZATIONS = ("fixed", "dynamic")
ENCODINGS = ("packbits", "grey")
FORMAT = "dvae_cupy.dataset"
VERSION = 1
NAMES = ("fashion-mnist", "fashion-mnist-idx", "mnist", "omniglot")
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
MNIST_N_VALID = 10_000
OMNIGLOT_N_VALID = 1_345
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# ------------------------------------------------------------------------------------------------
# The in-memory data set

@dataclass
class Splits:
    """Train/valid/test pixels, uint8 (n, 784) each.

    binarized: True when the values are 0/1; False when they are grey 0..255, which the trainer
    binarises per batch (dynamically). labels: None or {"train"|"valid"|"test": uint8 (n,)}.
    """
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    binarized: bool
    name: str
    labels: dict | None = None

    def __post_init__(self):
        for split in SPLIT_NAMES:
            _check_pixels(self.split(split), self.binarized, f"{self.name}/{split}")
        if self.labels is not None:
            _check_labels(self.labels, {s: len(self.split(s)) for s in SPLIT_NAMES}, self.name)

    def split(self, name):
        """The pixel array of split `name` ("train", "valid" or "test")."""
        return getattr(self, name)

    def pixels_sha256(self):
        """sha256 of the train, valid and test pixels (uint8, C order) in that order: a checksum
        to compare data sets whatever file format they came from."""
        digest = hashlib.sha256()
        for split in SPLIT_NAMES:
            digest.update(np.ascontiguousarray(self.split(split)))
        return digest.hexdigest()


def _check_pixels(pixels, binarized, where):
    """Fail unless `pixels` is uint8 (n, 784) with n >= 1, and 0/1 when binarised."""
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 \
            or pixels.shape[1] != D or len(pixels) == 0:
        shape = getattr(pixels, "shape", None)
        dtype = getattr(pixels, "dtype", type(pixels).__name__)
        raise ValueError(f"{where}: pixels must be uint8 (n, {D}) with n >= 1; "
                         f"got {dtype} {shape}")
    if binarized and pixels.max() > 1:
        raise ValueError(f"{where}: marked binarised but holds values up to {pixels.max()}")


def _check_labels(labels, counts, where):
    """Fail unless `labels` maps every split to uint8 (n,) matching its image count."""
    if set(labels) != set(SPLIT_NAMES):
        raise ValueError(f"{where}: labels must have keys {SPLIT_NAMES}; got {sorted(labels)}")
    for split, n in counts.items():
        lab = labels[split]
        if lab.dtype != np.uint8 or lab.shape != (n,):
            raise ValueError(f"{where}/{split}: labels must be uint8 ({n},); "
                             f"got {lab.dtype} {lab.shape}")


# ------------------------------------------------------------------------------------------------
# Binarisation

def binarize_fixed(grey):
    """0/1 uint8 = pixel >= 128, i.e. round(pixel / 255): the paper's fixed binarisation."""
    _check_grey(grey)
    return (grey >= 128).astype(np.uint8)


def binarize_dynamic(grey, rng):
    """0/1 uint8 ~ Bernoulli(pixel / 255), drawn from the numpy Generator `rng`; a fresh draw per
    call, so each epoch sees a different binarisation of the same grey images."""
    _check_grey(grey)
    return (rng.random(grey.shape) < grey / 255.0).astype(np.uint8)


def _check_grey(grey):
    """Binarisation thresholds assume 0..255 pixels: refuse any other dtype."""
    if grey.dtype != np.uint8:
        raise ValueError(f"binarisation expects uint8 grey pixels (0..255); got {grey.dtype}")


# ------------------------------------------------------------------------------------------------
# IDX files (MNIST layout): magic 0x00000803 images / 0x00000801 labels, big-endian uint32 dims,
# then the unsigned bytes.

def read_idx(path):
    """Read an MNIST-layout IDX file (raw or .gz) into a uint8 array of the stored dims."""
    path = Path(path)
    raw = _read_file_bytes(path, "an MNIST-layout IDX file (raw or .gz)")
    return _parse_idx(raw, path)


def _read_file_bytes(path, expected):
    """All bytes of `path`, gunzipped when it ends in .gz; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected {expected}")
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: not a complete gzip file ({err})") from err


def _parse_idx(raw, path):
    """Validate the IDX header and the exact payload length, then return the array."""
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or raw[3] not in (1, 3):
        magic = raw[:4].hex() or "(empty file)"
        raise ValueError(f"{path}: magic number {magic}, expected 00000803 (images) or "
                         "00000801 (labels): an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated in the header ({len(raw)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    size = math.prod(dims)
    payload = len(raw) - header
    if payload < size:
        raise ValueError(f"{path}: truncated: {payload} bytes of data, expected {size} "
                         f"for dims {dims}")
    if payload > size:
        raise ValueError(f"{path}: {payload - size} bytes of trailing junk after the {size} "
                         f"bytes that dims {dims} call for")
    return np.frombuffer(raw, np.uint8, count=size, offset=header).reshape(dims).copy()


def _read_idx_folder(folder, name):
    """The four standard IDX files of `folder` as grey Splits (50k/10k/10k for MNIST sizes)."""
    arrays = {key: read_idx(_find_idx(folder, base)) for key, base in IDX_FILES.items()}
    for part in ("train", "test"):
        _check_idx_pair(arrays[f"{part}_images"], arrays[f"{part}_labels"], folder, part)
    images = arrays["train_images"].reshape(-1, D)
    train, valid = _hold_out_last(images, MNIST_N_VALID, folder)
    train_labels, valid_labels = _hold_out_last(arrays["train_labels"], MNIST_N_VALID, folder)
    labels = {"train": train_labels, "valid": valid_labels, "test": arrays["test_labels"]}
    return Splits(train, valid, arrays["test_images"].reshape(-1, D), binarized=False,
                  name=name, labels=labels)


def _find_idx(folder, base):
    """`folder/base`, or `folder/base.gz` when only that exists."""
    for candidate in (folder / base, folder / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{folder}: no {base} or {base}.gz; expected the four MNIST-layout "
                            f"IDX files {', '.join(IDX_FILES.values())} (raw or .gz)")


def _check_idx_pair(images, labels, folder, part):
    """Images must be (n, 28, 28) and labels (n,) with the same n."""
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"{folder}: {part} images have dims {images.shape}, "
                         f"expected (n, {IMAGE_SHAPE[0]}, {IMAGE_SHAPE[1]})")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{folder}: {part} labels have dims {labels.shape}, "
                         f"expected ({len(images)},) to match the images")


def _hold_out_last(array, n_valid, source):
    """(array[:-n_valid], array[-n_valid:]): the last n_valid rows become the validation set."""
    if len(array) <= n_valid:
        raise ValueError(f"{source}: {len(array)} training rows; need more than {n_valid} "
                         f"to hold out the last {n_valid} for validation")
    return array[:-n_valid], array[-n_valid:]


# ------------------------------------------------------------------------------------------------
# Omniglot (chardata.mat of Burda et al.: data 784 x 24345, testdata 784 x 8070, floats in [0,1])

def read_omniglot_mat(path):
    """(train_grey, test_grey): uint8 (n, 784) row-major images from Omniglot's chardata.mat.

    The file stores one image per column, each column-major 28x28 (MATLAB order); grey values
    are round(p * 255).
    """
    loadmat, read_error = _import_loadmat()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected Omniglot's chardata.mat")
    try:
        mat = loadmat(path)
    except (ValueError, read_error) as err:
        raise ValueError(f"{path}: not a readable MATLAB file ({err})") from err
    return _omniglot_grey(mat, "data", path), _omniglot_grey(mat, "testdata", path)


def _import_loadmat():
    """scipy is an optional dependency needed only here."""
    try:
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError
    except ImportError as err:
        raise ImportError("reading Omniglot's chardata.mat needs scipy: "
                          "pip install dvae-cupy[omniglot]") from err
    return loadmat, MatReadError


def _omniglot_grey(mat, key, path):
    """Variable `key` (784 x n floats in [0, 1]) as uint8 (n, 784) row-major grey images."""
    if key not in mat:
        raise ValueError(f"{path}: no variable {key!r}; expected Omniglot's chardata.mat "
                         "with 'data' and 'testdata' (784 x n)")
    arr = np.asarray(mat[key])
    if arr.ndim != 2 or arr.shape[0] != D:
        raise ValueError(f"{path}: {key!r} has shape {arr.shape}, expected ({D}, n)")
    if not np.all((arr >= 0) & (arr <= 1)):
        raise ValueError(f"{path}: {key!r} has values outside [0, 1]")
    # A column is a column-major image: view it as (col, row), then swap to (row, col).
    images = arr.T.reshape(-1, *IMAGE_SHAPE).transpose(0, 2, 1).reshape(-1, D)
    return np.rint(images * 255).astype(np.uint8)


def _read_omniglot(root):
    """Grey Omniglot Splits from chardata.mat (`root` is the file or its folder)."""
    path = Path(root)
    if path.is_dir():
        path = path / "chardata.mat"
    train_all, test = read_omniglot_mat(path)
    train, valid = _hold_out_last(train_all, OMNIGLOT_N_VALID, path)
    return Splits(train, valid, test, binarized=False, name="omniglot")


# ------------------------------------------------------------------------------------------------
# Our HDF5 format (layout in the module docstring)

def write_hdf5(path, splits, encoding=None, gzip_level=9):
    """Write `splits` to `path` atomically (a temporary file beside it, then os.replace).

    encoding: "packbits" (binarised splits only), "grey" (grey splits only), or None to pick
    the one that fits.
    """
    encoding = _encoding_for(splits, encoding)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        _write_layout(f, splits, encoding, gzip_level)


def _encoding_for(splits, encoding):
    """Check that `encoding` can store `splits` faithfully (or choose it when None)."""
    fits = "packbits" if splits.binarized else "grey"
    if encoding is None:
        return fits
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding={encoding!r}: expected one of {ENCODINGS} or None")
    if encoding != fits:
        kind = "binarised" if splits.binarized else "grey"
        raise ValueError(f"encoding={encoding!r} cannot store the {kind} pixels of "
                         f"{splits.name!r}; use {fits!r}")
    return encoding


def _write_layout(f, splits, encoding, gzip_level):
    """Root attributes, then one group per split."""
    f.attrs["format"] = FORMAT
    f.attrs["version"] = VERSION
    f.attrs["image_shape"] = IMAGE_SHAPE
    f.attrs["name"] = splits.name
    for split in SPLIT_NAMES:
        group = f.create_group(split)
        group.attrs["encoding"] = encoding
        pixels = splits.split(split)
        stored = np.packbits(pixels, axis=1) if encoding == "packbits" else pixels
        group.create_dataset("images", data=stored, chunks=_row_chunks(stored),
                             compression="gzip", compression_opts=gzip_level)
        if splits.labels is not None:
            group.create_dataset("labels", data=splits.labels[split], compression="gzip",
                                 compression_opts=gzip_level)


def _row_chunks(stored):
    """Chunks of whole rows, about 1 MiB each: gzip compresses packed rows some 20% better
    than h5py's default chunks, which cut the rows into column strips."""
    rows = min(len(stored), 2**20 // stored.shape[1])
    return rows, stored.shape[1]


def read_hdf5(path):
    """Read and validate a data set in our HDF5 layout; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected a {FORMAT} HDF5 file")
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path}: not an HDF5 file")
    with h5py.File(path, "r") as f:
        _check_root(f, path)
        parts = {split: _read_split(f, split, path) for split in SPLIT_NAMES}
        name = str(f.attrs.get("name", path.stem))
    encodings = {encoding for _, _, encoding in parts.values()}
    if len(encodings) != 1:
        raise ValueError(f"{path}: splits mix encodings {sorted(encodings)}")
    labels = _collect_labels({split: lab for split, (_, lab, _) in parts.items()}, path)
    return Splits(*(parts[split][0] for split in SPLIT_NAMES),
                  binarized=encodings == {"packbits"}, name=name, labels=labels)


def _check_root(f, path):
    """The root attributes must say this is our format, version and image shape."""
    check_format(f, path, FORMAT, VERSION)
    shape = tuple(np.asarray(f.attrs.get("image_shape", ())).tolist())
    if shape != IMAGE_SHAPE:
        raise ValueError(f"{path}: image_shape is {shape}, expected {IMAGE_SHAPE}")


def _read_split(f, split, path):
    """(pixels uint8 (n, 784), labels or None, encoding) of group `split`, validated."""
    group = f.get(split)
    if not isinstance(group, h5py.Group):
        raise ValueError(f"{path}: missing group {split!r} (need {', '.join(SPLIT_NAMES)})")
    encoding = group.attrs.get("encoding")
    if encoding not in ENCODINGS:
        raise ValueError(f"{path}: {split}/ has encoding {encoding!r}, expected one of "
                         f"{ENCODINGS}")
    width = math.ceil(D / 8) if encoding == "packbits" else D
    stored = _read_uint8(group, "images", (None, width), path)
    pixels = np.unpackbits(stored, axis=1, count=D) if encoding == "packbits" else stored
    labels = _read_uint8(group, "labels", (len(pixels),), path) if "labels" in group else None
    return pixels, labels, encoding


def _read_uint8(group, key, shape, path):
    """Dataset `key` of `group`, which must be uint8 of `shape` (None: any length)."""
    ds = group.get(key)
    if not isinstance(ds, h5py.Dataset):
        raise ValueError(f"{path}: missing dataset {group.name}/{key}")
    fits = ds.dtype == np.uint8 and len(ds.shape) == len(shape) and all(
        want is None or got == want for got, want in zip(ds.shape, shape))
    if not fits:
        want = ", ".join("n" if w is None else str(w) for w in shape)
        raise ValueError(f"{path}: {group.name}/{key} is {ds.dtype} {ds.shape}, "
                         f"expected uint8 ({want})")
    return ds[()]


def _collect_labels(labels, path):
    """All three splits' labels, or None when no split has any."""
    present = [split for split, lab in labels.items() if lab is not None]
    if not present:
        return None
    if len(present) != len(SPLIT_NAMES):
        raise ValueError(f"{path}: labels in {present} only; need all of {SPLIT_NAMES} or none")
    return labels


# ------------------------------------------------------------------------------------------------
# The one entry point

def load_dataset(name_or_path="fashion-mnist", binarization="fixed", root=None):
    """Load a data set as Splits (sources and splits: see the module docstring).

    binarization: "fixed" returns binarised pixels (pixel >= 128); "dynamic" returns grey pixels
    (binarized=False) for the trainer to binarise per batch, and needs a grey source.
    """
    if binarization not in BINARIZATIONS:
        raise ValueError(f"binarization={binarization!r}: expected one of {BINARIZATIONS}")
    splits = _load_stored(name_or_path, binarization, root)
    if splits.binarized and binarization == "dynamic":
        raise ValueError(f"{name_or_path}: holds binarised pixels only, so "
                         "binarization='dynamic' is impossible; load grey pixels instead")
    if splits.binarized or binarization == "dynamic":
        return splits
    return replace(splits, binarized=True,
                   **{split: binarize_fixed(splits.split(split)) for split in SPLIT_NAMES})


def _load_stored(name_or_path, binarization, root):
    """The data set as stored in its source, grey or binarised."""
    name = str(name_or_path)
    if name == "fashion-mnist" and root is None:
        if binarization == "dynamic":
            raise ValueError(
                "the embedded Fashion-MNIST holds binarised pixels only, so "
                "binarization='dynamic' needs the grey IDX files: load_dataset("
                "'fashion-mnist', binarization='dynamic', root=FOLDER) with FOLDER holding "
                f"them ({FASHION_MNIST_DEBIAN} after apt-get install dataset-fashion-mnist)")
        return _read_embedded()
    if name in ("fashion-mnist", "fashion-mnist-idx"):
        return _read_idx_folder(Path(root or FASHION_MNIST_DEBIAN), "fashion-mnist")
    if name == "mnist":
        return _read_idx_folder(_require_root(root, name, "a folder of the MNIST IDX files"),
                                "mnist")
    if name == "omniglot":
        return _read_omniglot(_require_root(root, name, "chardata.mat or its folder"))
    if _looks_like_path(name_or_path):
        return _read_path(Path(name_or_path), root)
    raise ValueError(f"unknown data set {name!r}: expected one of {', '.join(NAMES)}, "
                     "a path to a .h5 file or a folder of IDX files")


def _require_root(root, name, what):
    """Sources that are not shipped need `root=`."""
    if root is None:
        raise ValueError(f"data set {name!r} is not shipped: pass root= {what}")
    return Path(root)


def _looks_like_path(name_or_path):
    """A Path, something with a separator or an HDF5 suffix, or an existing file or folder."""
    name = str(name_or_path)
    return (isinstance(name_or_path, Path) or os.sep in name
            or name.endswith((".h5", ".hdf5")) or Path(name).exists())


def _read_path(path, root):
    """A folder of IDX files or one of our .h5 files."""
    if root is not None:
        raise ValueError(f"root={root!r} applies to named data sets only, not to path {path}")
    return _read_idx_folder(path, path.name) if path.is_dir() else read_hdf5(path)


def _read_embedded():
    """The shipped binarised Fashion-MNIST (built by data/build_fashion_mnist.py)."""
    ref = resources.files("dvae_cupy.embedded") / "fashion_mnist.h5"
    with resources.as_file(ref) as path:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the embedded data set is missing; build it with "
                                    "python data/build_fashion_mnist.py")
        return read_hdf5(path)
