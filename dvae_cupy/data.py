"""Data sets: readers for the standard files and for the user's own arrays, binarisation, and
our own HDF5 format.

Sources (see `load_dataset`):
  "fashion-mnist"      the embedded default, dvae_cupy/embedded/fashion_mnist.h5 (binarised),
                       or the IDX files in `root=` when it is given;
  "fashion-mnist-idx"  Fashion-MNIST IDX files, root defaults to /usr/share/datasets/fashion-mnist
                       (Debian: apt-get install dataset-fashion-mnist);
  "mnist"              the MNIST IDX files in `root=` (not shipped, not downloadable here);
  "omniglot"           Omniglot's chardata.mat (Burda et al.), `root=` the file or its folder;
  a path               a .npy or .npz file of the user's arrays, a .h5 file in the layout below,
                       or a folder of the four IDX files.
MNIST-like split (idx_validation_rows): the last 10,000 training images validate and the rest
train (MNIST's and Fashion-MNIST's 50,000 / 10,000 of 60,000); an IDX folder of fewer than
60,000 training images holds out its last sixth instead; the test images test. Omniglot: the last 1,345 images of `data` validate (the validation size of
Bornschein & Bengio's reweighted wake-sleep code, which shuffles first; we do not, so the split
is fixed), the rest train, `testdata` tests. IDX and Omniglot images are 28x28.

A `Splits` holds uint8 rows of D pixels (row-major images of `image_shape` (H, W), or None when
only D is known), either binarised (0/1) or grey (0..255), which the trainer binarises per batch
(dynamic binarisation) or load_dataset thresholds once (fixed: pixel >= 128).

The user's arrays (.npy, .npz, `make_splits`, `write_dataset`):
  .npy   one array, the training images, shaped (n, H, W) or (n, D); valid and test split off.
  .npz   arrays `train` (required), `valid`, `test`, `labels_train`, `labels_valid`,
         `labels_test` (labels for every split given, or for none), nothing else.
  Pixels: uint8 (or any integer type) 0..255 or 0/1, bool, or floats in [0, 1]. An array whose
  values are all 0 or 1 is binary; any other is grey: integers as they are, a float p becomes
  the grey level rint(p * 255) (in float64), so fixed binarisation gives 1 where p >= 0.5 and
  dynamic binarisation draws Bernoulli(rint(p * 255) / 255). All splits must be of one kind.
  Anything else (negative, > 255, NaN, outside [0, 1] for floats, complex, not 2-D or 3-D,
  empty) is a ValueError naming the file and the array. Labels: integers 0 .. 2**32 - 1, held
  as the smallest of uint8, uint16, uint32 that fits.
  Missing splits (stable rule, never to change): of the n training rows, each missing split
  (valid, then test) takes max(1, n // 10) rows: those with the smallest keys, where row i's key
  is output i + 1 of splitmix64 (Vigna) seeded with SPLIT_SEED = 20190613; every part keeps the
  rows in file order, and labels follow their images.
  A .npy file has no checksum: damage to its pixel bytes cannot be detected (a .npz's zip
  members carry CRC-32s, which are checked).

HDF5 layout (version 2; written by `write_hdf5` and `write_dataset`, validated by `read_hdf5`,
which also reads version 1: 28x28 only, no checksums):
  file         HDF5 1.10 format (libver v110): the superblock, object headers and chunk indexes
               carry checksums; every dataset has the Fletcher-32 filter; every text attribute
               is a fixed-length string (a variable-length one would live in the global heap,
               which has none). Any damaged byte in use makes the read fail.
  root attrs   format = "dvae_cupy.dataset", version = 2, pixels = D, image_shape = (H, W)
               (absent when unknown), name = str, content_digest = `Splits.content_digest()`
  /train, /valid, /test   groups, each with
      attr     encoding = "packbits"  binarised pixels, np.packbits along the pixel axis:
                                      uint8 (n, ceil(D / 8)), gzip compressed
                        | "grey"      grey pixels, uint8 (n, D), gzip compressed
      images   the pixel dataset, as the encoding says
      labels   optional uint8/uint16/uint32 (n,) class labels (in all three groups or in none)
A file that exists but is truncated, damaged or not in this layout raises CorruptFileError
naming the file and the damaged item.
"""
import contextlib
import gzip
import hashlib
import io
import math
import os
import zipfile
import zlib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import h5py
import numpy as np

from .atomic_hdf5 import atomic_hdf5
from .errors import CorruptFileError

MNIST_SHAPE = (28, 28)       # IDX and Omniglot images
MNIST_PIXELS = MNIST_SHAPE[0] * MNIST_SHAPE[1]
SPLIT_NAMES = ("train", "valid", "test")
BINARIZATIONS = ("fixed", "dynamic")
ENCODINGS = ("packbits", "grey")
FORMAT = "dvae_cupy.dataset"
VERSION = 2
READABLE_VERSIONS = (1, 2)
HDF5_LIBVER = ("v110", "v110")   # checksummed metadata; readable by HDF5 >= 1.10
NAMES = ("fashion-mnist", "fashion-mnist-idx", "mnist", "omniglot")
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
MNIST_N_VALID = 10_000
OMNIGLOT_N_VALID = 1_345
SPLIT_SEED = 20190613
NPZ_KEYS = SPLIT_NAMES + tuple(f"labels_{split}" for split in SPLIT_NAMES)
LABEL_DTYPES = (np.uint8, np.uint16, np.uint32)
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Pixel arrays are checked and converted in blocks of about this many values, so a float64
# memory map of any size never needs a float64 copy in memory.
CONVERT_BLOCK = 1 << 22


# ------------------------------------------------------------------------------------------------
# The in-memory data set

@dataclass
class Splits:
    """Train/valid/test pixels, uint8 (n, D) each with the same D >= 1 and n >= 1.

    binarized: True when the values are 0/1; False when they are grey 0..255, which the trainer
    binarises per batch (dynamically). labels: None or {"train"|"valid"|"test": (n,) uint8,
    uint16 or uint32}. image_shape: (H, W) with H * W = D, or None when only D is known.
    """
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    binarized: bool
    name: str
    labels: dict | None = None
    image_shape: tuple | None = None

    def __post_init__(self):
        for split in SPLIT_NAMES:
            _check_pixels(self.split(split), self.binarized, f"{self.name}/{split}")
        widths = {self.split(split).shape[1] for split in SPLIT_NAMES}
        if len(widths) != 1:
            raise ValueError(f"{self.name}: splits have different pixel counts {sorted(widths)}")
        if self.image_shape is not None:
            self.image_shape = _check_image_shape(self.image_shape, self.pixels, self.name)
        if self.labels is not None:
            _check_labels(self.labels, {s: len(self.split(s)) for s in SPLIT_NAMES}, self.name)

    @property
    def pixels(self):
        """D, the number of pixels of an image."""
        return self.train.shape[1]

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

    def content_digest(self):
        """sha256 (hex) of everything a run learns from: the image shape, D, whether the pixels
        are binarised, and each split's size, pixels and labels (as little-endian uint32). Not
        the name or the file it came from, so a data set is recognised whatever its path, and a
        file replaced under the same name is not."""
        shape = "none" if self.image_shape is None else "x".join(map(str, self.image_shape))
        digest = hashlib.sha256(f"{FORMAT} content digest 1\nimage_shape {shape}\n"
                                f"pixels {self.pixels}\nbinarized {int(self.binarized)}\n".encode())
        for split in SPLIT_NAMES:
            pixels = self.split(split)
            has_labels = self.labels is not None
            digest.update(f"{split} {len(pixels)} labels {int(has_labels)}\n".encode())
            digest.update(np.ascontiguousarray(pixels))
            if has_labels:
                digest.update(self.labels[split].astype("<u4"))
        return digest.hexdigest()


def _check_pixels(pixels, binarized, where):
    """Fail unless `pixels` is uint8 (n, D) with n, D >= 1, and 0/1 when binarised."""
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 \
            or pixels.size == 0:
        shape = getattr(pixels, "shape", None)
        dtype = getattr(pixels, "dtype", type(pixels).__name__)
        raise ValueError(f"{where}: pixels must be uint8 (n, D) with n, D >= 1; "
                         f"got {dtype} {shape}")
    if binarized and pixels.max() > 1:
        raise ValueError(f"{where}: marked binarised but holds values up to {pixels.max()}")


def _check_image_shape(image_shape, pixels, where):
    """(H, W) as a tuple of two positive ints whose product is `pixels`."""
    try:
        shape = tuple(int(v) for v in image_shape)
        exact = all(v == w for v, w in zip(shape, image_shape))
    except (TypeError, ValueError):
        shape, exact = (), False
    if not exact or len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"{where}: image_shape must be (H, W) with H, W >= 1; "
                         f"got {image_shape!r}")
    if shape[0] * shape[1] != pixels:
        raise ValueError(f"{where}: image_shape {shape} has {shape[0] * shape[1]} pixels, "
                         f"but the images have {pixels}")
    return shape


def _check_labels(labels, counts, where):
    """Fail unless `labels` maps every split to (n,) unsigned labels matching its image count."""
    if set(labels) != set(SPLIT_NAMES):
        raise ValueError(f"{where}: labels must have keys {SPLIT_NAMES}; got {sorted(labels)}")
    for split, n in counts.items():
        lab = labels[split]
        if not isinstance(lab, np.ndarray) or lab.dtype not in LABEL_DTYPES \
                or lab.shape != (n,):
            raise ValueError(f"{where}/{split}: labels must be uint8, uint16 or uint32 ({n},); "
                             f"got {getattr(lab, 'dtype', type(lab).__name__)} "
                             f"{getattr(lab, 'shape', None)}")


# ------------------------------------------------------------------------------------------------
# Binarisation

def binarize_fixed(grey):
    """0/1 uint8 = pixel >= 128, i.e. round(pixel / 255): the paper's fixed binarisation."""
    if grey.dtype != np.uint8:
        raise ValueError(f"binarisation expects uint8 grey pixels (0..255); got {grey.dtype}")
    return (grey >= 128).astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# The user's arrays: pixel rules, labels, the hold-out rule (module docstring)

def make_splits(train, valid=None, test=None, labels=None, image_shape=None, name="arrays",
                argument_names=None):
    """A validated Splits from the user's arrays, by the rules of the module docstring.

    train, valid, test: array-likes (NumPy arrays, memory maps, h5py datasets, ...) shaped
    (n, H, W) or (n, D); valid and test, when None, are split off train by the hold-out rule.
    labels: None or {split: (n,) integer labels} for every split given (train, and valid/test
    where given); held-out rows take their labels along. image_shape: (H, W), for (n, D) arrays
    (must agree with (n, H, W) ones). Errors are ValueErrors naming the argument: train, valid
    and test, or what argument_names ({split: name}) calls them (DiscreteVAE.fit: X, x_valid,
    x_test).
    """
    arrays = {"train": train, "valid": valid, "test": test}
    names = argument_names or {}
    return _splits_from_arrays(arrays, labels, image_shape, name,
                               where=lambda key: _argument_name(key, names))


def _argument_name(key, names):
    """How make_splits' errors name an array: its argument, renamed by `names` (labels_X is
    labels['X'])."""
    if key.startswith("labels_"):
        return f"labels[{key[len('labels_'):]!r}]"
    return names.get(key, key)


def _splits_from_arrays(arrays, labels, image_shape, name, where):
    """Splits from {split: array or None} and {split: labels} or None; where(key) names an
    array (or labels['key']) in error messages."""
    given = [split for split in SPLIT_NAMES if arrays.get(split) is not None]
    if "train" not in given:
        raise ValueError(f"{where('train')}: the training images are required")
    converted = {split: _as_pixels(arrays[split], where(split)) for split in given}
    pixels = {split: grey for split, (grey, _, _) in converted.items()}
    shape = _common_image_shape(converted, image_shape, where)
    binarized = _common_kind(converted, where)
    lab = _as_split_labels(labels, pixels, where)
    missing = [split for split in SPLIT_NAMES if split not in given]
    if missing:
        pixels, lab = _hold_out(pixels, lab, missing, where("train"))
    return Splits(**pixels, binarized=binarized, name=name, labels=lab, image_shape=shape)


def _check_array_kind(dtype, shape, where):
    """Refuse, before any pixel is read, arrays that cannot hold images: not 2-D or 3-D, empty,
    or of a type that is not bool, integer or float."""
    if np.dtype(dtype).kind == "c":
        raise ValueError(f"{where}: Complex data not supported (dtype {np.dtype(dtype)}); pixels "
                         "must be uint8 0..255 or 0/1, bool, or floats in [0, 1]")
    if np.dtype(dtype).kind not in "biuf":
        raise ValueError(f"{where}: dtype {np.dtype(dtype)}; pixels must be uint8 0..255 or 0/1, "
                         "bool, or floats in [0, 1]")
    if len(shape) == 2 and shape[1] == 0:
        raise ValueError(f"{where}: 0 feature(s) (shape={tuple(shape)}) while a minimum of 1 is "
                         "required: images need at least one pixel")
    if len(shape) not in (2, 3) or math.prod(shape) == 0:
        raise ValueError(f"{where}: shape {tuple(shape)}; expected (n, H, W) or (n, D) "
                         "with n, H, W, D >= 1")


def _as_pixels(array, where):
    """(uint8 (n, D) pixels, (H, W) or None, all values 0/1?) of one array, converted by the
    module docstring's rules block by block (a memory map or h5py dataset is read once)."""
    try:                                    # shape and a NumPy dtype: read it block by block
        dtype, shape = np.dtype(array.dtype), tuple(array.shape)
    except (AttributeError, TypeError):     # lists, or a foreign dtype (e.g. torch's)
        array = np.asarray(array)
        dtype, shape = array.dtype, array.shape
    _check_array_kind(dtype, shape, where)
    n, width = shape[0], math.prod(shape[1:])
    out = np.empty((n, width), np.uint8)
    binary = True
    rows = max(1, CONVERT_BLOCK // width)
    for start in range(0, n, rows):
        block = np.asarray(array[start:start + rows]).reshape(-1, width)
        binary &= _convert_block(block, out[start:start + len(block)], where)
    if binary and dtype.kind == "f":
        np.minimum(out, 1, out=out)          # rint(1.0 * 255) = 255 back to 1
    return out, (shape[1:] if len(shape) == 3 else None), binary


def _convert_block(block, out, where):
    """Check one block's values, write its uint8 pixels to `out`; True when all are 0 or 1."""
    kind = block.dtype.kind
    if kind == "b":
        out[...] = block
        return True
    if kind == "f":
        if np.isnan(block).any():
            raise ValueError(f"{where}: holds NaN; float pixels must be in [0, 1]")
        low, high = block.min(), block.max()
        if low < 0:
            raise ValueError(f"{where}: Negative values in data ({low}); float pixels must be in [0, 1]")
        if high > 1:
            raise ValueError(f"{where}: float pixels must be in [0, 1]; found {high}")
        out[...] = np.rint(block.astype(np.float64) * 255)
        return bool(np.all((block == 0) | (block == 1)))
    low, high = block.min(), block.max()
    if low < 0:
        raise ValueError(f"{where}: Negative values in data ({low}); integer pixels must be in 0..255")
    if high > 255:
        raise ValueError(f"{where}: integer pixels must be in 0..255; found {high}")
    out[...] = block
    return bool(high <= 1)


def _common_image_shape(converted, image_shape, where):
    """The one (H, W) of the 3-D arrays and of `image_shape`, or None when neither gives one."""
    shapes = {split: hw for split, (_, hw, _) in converted.items() if hw is not None}
    if image_shape is not None:
        width = converted["train"][0].shape[1]
        shapes["image_shape"] = _check_image_shape(image_shape, width, "image_shape")
    if len(set(shapes.values())) > 1:
        raise ValueError("image shapes disagree: " + ", ".join(
            f"{where(key) if key in SPLIT_NAMES else key} {hw}" for key, hw in shapes.items()))
    widths = {split: grey.shape[1] for split, (grey, _, _) in converted.items()}
    if len(set(widths.values())) > 1:
        raise ValueError("pixel counts disagree: " + ", ".join(
            f"{where(split)} has {width}" for split, width in widths.items()))
    return next(iter(shapes.values()), None)


def _common_kind(converted, where):
    """True when every array is binary (0/1), False when every one is grey; refuse a mixture,
    which would read a 0/1 array as nearly black grey levels (or grey ones as binary)."""
    kinds = {split: binary for split, (_, _, binary) in converted.items()}
    if len(set(kinds.values())) > 1:
        binary = ", ".join(where(s) for s, b in kinds.items() if b)
        grey = ", ".join(where(s) for s, b in kinds.items() if not b)
        raise ValueError(f"{binary} hold only 0/1 but {grey} hold grey levels: give every split "
                         "the same kind (0/1 everywhere, or grey 0..255 / [0, 1] everywhere)")
    return kinds["train"]


def _as_split_labels(labels, pixels, where):
    """{split: canonical labels} for exactly the splits given, or None."""
    if labels is None:
        return None
    if not isinstance(labels, dict):
        raise ValueError(f"labels must be a dict {{split: array}}; got {type(labels).__name__}")
    odd = sorted(set(labels) ^ set(pixels))
    if odd:
        raise ValueError(f"{where('labels_' + str(odd[0]))}: labels given for {sorted(labels)} "
                         f"but images for {sorted(pixels)}: give labels for every split "
                         "given, or for none")
    return {split: _as_labels(labels[split], len(pixels[split]), where(f"labels_{split}"))
            for split in pixels}


def _as_labels(labels, n, where):
    """(n,) integer labels 0 .. 2**32 - 1 as the smallest unsigned type that holds them."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biu" or labels.shape != (n,):
        raise ValueError(f"{where}: labels must be integers shaped ({n},) to match the images; "
                         f"got {labels.dtype} {labels.shape}")
    if labels.min() < 0 or labels.max() > np.iinfo(np.uint32).max:
        raise ValueError(f"{where}: labels must be in 0 .. 2**32 - 1; found "
                         f"{labels.min() if labels.min() < 0 else labels.max()}")
    dtype = next(t for t in LABEL_DTYPES if labels.max() <= np.iinfo(t).max)
    return labels.astype(dtype)


def splitmix64(seed, count):
    """Outputs 1..count of Vigna's splitmix64 seeded with `seed` (uint64, wrapping)."""
    z = np.uint64(seed) + np.arange(1, count + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hold_out_rows(n, missing):
    """{"train": rows, split: rows for split in `missing`}: the hold-out rule of the module
    docstring, as sorted row indices into the n training rows."""
    size = max(1, n // 10)
    if n - size * len(missing) < 1:
        raise ValueError(f"{n} training row{'s' * (n != 1)} cannot give {size} "
                         f"row{'s' * (size != 1)} to each of {', '.join(missing)} and keep one "
                         f"to train on")
    order = np.argsort(splitmix64(SPLIT_SEED, n))    # distinct keys: splitmix64 is a bijection
    rows = {split: np.sort(order[i * size:(i + 1) * size]) for i, split in enumerate(missing)}
    kept = np.ones(n, bool)
    kept[order[:size * len(missing)]] = False
    return {"train": np.flatnonzero(kept), **rows}


def _hold_out(pixels, labels, missing, where):
    """Pixels and labels with the `missing` splits taken from train by `hold_out_rows`."""
    try:
        rows = hold_out_rows(len(pixels["train"]), missing)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err
    train, train_labels = pixels["train"], None if labels is None else labels["train"]
    pixels = {**pixels, **{split: train[index] for split, index in rows.items()}}
    if labels is not None:
        labels = {**labels, **{split: train_labels[index] for split, index in rows.items()}}
    return pixels, labels


# ------------------------------------------------------------------------------------------------
# .npy and .npz files

def read_npy(path):
    """Grey or binary Splits from a .npy file of training images, (n, H, W) or (n, D); valid and
    test are split off by the hold-out rule (module docstring). The file is memory-mapped, so
    only the uint8 result is held in memory."""
    path = Path(path)
    _require_file(path, "a .npy array of images (n, H, W) or (n, D)")
    return _splits_from_arrays({"train": _map_npy(path)}, None, None, path.stem,
                               where=lambda key: str(path))


def _map_npy(path):
    """The array of a .npy file as a read-only memory map, after checking its header and that
    the file holds exactly the bytes the header calls for."""
    with open(path, "rb") as fh:
        dtype, shape, fortran, offset = _npy_header(fh, path)
        size = os.fstat(fh.fileno()).st_size
    _check_array_kind(dtype, shape, path)
    _check_data_length(size, offset + math.prod(shape) * dtype.itemsize, path)
    return np.memmap(path, dtype, "r", offset, shape, "F" if fortran else "C")


def _npy_header(fh, where):
    """(dtype, shape, fortran_order, data offset) from the .npy header at fh's position."""
    try:
        version = np.lib.format.read_magic(fh)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"format version {version} (this reader knows 1.0 and 2.0, "
                             "which NumPy writes for arrays of numbers)")
        shape, fortran, dtype = read_header(fh)
    # A damaged header fails in NumPy's parser with many types (ValueError, SyntaxError,
    # tokenize.TokenError, TypeError, ...); nothing else runs in this block.
    except Exception as err:  # noqa: BLE001
        raise CorruptFileError(f"{where}: not a readable .npy array ({err})") from err
    return dtype, tuple(shape), fortran, fh.tell()


def _check_data_length(size, expected, where, source="the header"):
    """A file's data must end where its header says it ends (`source`: what says so)."""
    if size < expected:
        raise CorruptFileError(f"{where}: truncated: {size} bytes, {source} calls for "
                               f"{expected}")
    if size > expected:
        raise CorruptFileError(f"{where}: {size - expected} bytes of trailing junk after the "
                               f"{expected} bytes {source} calls for")


def read_npz(path):
    """Splits from a .npz file (keys: module docstring); missing valid/test are split off."""
    path = Path(path)
    _require_file(path, "a .npz file with a 'train' array (and optionally valid, test, "
                        "labels_train, labels_valid, labels_test)")
    members = _read_zip_members(path)
    unknown = sorted(set(members) - set(NPZ_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown arrays {unknown}; a data set .npz holds "
                         f"{', '.join(NPZ_KEYS)} (train required)")
    if "train" not in members:
        raise ValueError(f"{path}: no 'train' array; found {sorted(members) or 'none'}")

    def where(key):
        return f"{path}: array {key!r}"

    arrays = {key: _parse_npy_bytes(raw, where(key)) for key, raw in members.items()}
    labels = {split: arrays[f"labels_{split}"] for split in SPLIT_NAMES
              if f"labels_{split}" in arrays}
    return _splits_from_arrays({split: arrays.get(split) for split in SPLIT_NAMES},
                               labels or None, None, path.stem, where)


def _read_zip_members(path):
    """{key: bytes} of every KEY.npy member; the zip module checks each member's CRC-32."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            odd = [name for name in names if not name.endswith(".npy")]
            if odd:
                raise CorruptFileError(f"{path}: members {odd} are not .npy arrays; "
                                       "expected a .npz file written by numpy.savez")
            return {name[:-4]: archive.read(name) for name in names}
    except CorruptFileError:
        raise
    # zipfile raises many types for a damaged archive (BadZipFile, zlib.error, EOFError,
    # NotImplementedError for a flipped method, RuntimeError for a flipped encryption bit, ...)
    except Exception as err:  # noqa: BLE001
        raise CorruptFileError(f"{path}: not a readable .npz (zip) file ({err})") from err


def _parse_npy_bytes(raw, where):
    """The array in the bytes of one .npy member, checked like a .npy file."""
    fh = io.BytesIO(raw)
    dtype, shape, fortran, offset = _npy_header(fh, where)
    if dtype.kind not in "biufc":      # objects, strings, records: no buffer to read numbers from
        raise ValueError(f"{where}: dtype {dtype}; expected an array of numbers")
    _check_data_length(len(raw), offset + math.prod(shape) * dtype.itemsize, where)
    return np.frombuffer(raw, dtype, math.prod(shape), offset).reshape(
        shape, order="F" if fortran else "C")


# ------------------------------------------------------------------------------------------------
# IDX files (MNIST layout): magic 0x00000803 images / 0x00000801 labels, big-endian uint32 dims,
# then the unsigned bytes.

def read_idx(path):
    """Read an MNIST-layout IDX file (raw or .gz) into a uint8 array of the stored dims."""
    path = Path(path)
    raw = _read_file_bytes(path, "an MNIST-layout IDX file (raw or .gz)")
    return _parse_idx(raw, path)


def _require_file(path, expected):
    """FileNotFoundError naming `path` and what was expected there, unless it is a file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected {expected}")


def _read_file_bytes(path, expected):
    """All bytes of `path`, gunzipped when it ends in .gz; errors name the file."""
    _require_file(path, expected)
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise CorruptFileError(f"{path}: not a complete gzip file ({err})") from err


def _parse_idx(raw, path):
    """Validate the IDX header and the exact payload length, then return the array."""
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or raw[3] not in (1, 3):
        magic = raw[:4].hex() or "(empty file)"
        raise CorruptFileError(f"{path}: magic number {magic}, expected 00000803 (images) or "
                               "00000801 (labels): an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptFileError(f"{path}: truncated in the header ({len(raw)} bytes, "
                               f"need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    size = math.prod(dims)
    _check_data_length(len(raw) - header, size, path, source=f"the header's dims {dims}")
    return np.frombuffer(raw, np.uint8, count=size, offset=header).reshape(dims).copy()


def _read_idx_folder(folder, name):
    """The four standard IDX files of `folder` as grey Splits (50k/10k/10k for MNIST sizes;
    idx_validation_rows)."""
    arrays = {key: read_idx(_find_idx(folder, base)) for key, base in IDX_FILES.items()}
    for part in ("train", "test"):
        _check_idx_pair(arrays[f"{part}_images"], arrays[f"{part}_labels"], folder, part)
    images = arrays["train_images"].reshape(-1, MNIST_PIXELS)
    n_valid = idx_validation_rows(len(images))
    train, valid = _hold_out_last(images, n_valid, folder)
    train_labels, valid_labels = _hold_out_last(arrays["train_labels"], n_valid, folder)
    labels = {"train": train_labels, "valid": valid_labels, "test": arrays["test_labels"]}
    return Splits(train, valid, arrays["test_images"].reshape(-1, MNIST_PIXELS),
                  binarized=False, name=name, labels=labels, image_shape=MNIST_SHAPE)


def idx_validation_rows(n_train):
    """How many of an IDX folder's n_train training images (its last ones) validate: 10,000, as
    for MNIST's 60,000, or a sixth of a smaller folder's (at least 1)."""
    return min(MNIST_N_VALID, max(1, n_train // 6))


def _find_idx(folder, base):
    """`folder/base`, or `folder/base.gz` when only that exists."""
    for candidate in (folder / base, folder / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{folder}: no {base} or {base}.gz; expected the four MNIST-layout "
                            f"IDX files {', '.join(IDX_FILES.values())} (raw or .gz)")


def _check_idx_pair(images, labels, folder, part):
    """Images must be (n, 28, 28) and labels (n,) with the same n."""
    if images.ndim != 3 or images.shape[1:] != MNIST_SHAPE:
        raise CorruptFileError(f"{folder}: {part} images have dims {images.shape}, "
                               f"expected (n, {MNIST_SHAPE[0]}, {MNIST_SHAPE[1]})")
    if labels.ndim != 1 or len(labels) != len(images):
        raise CorruptFileError(f"{folder}: {part} labels have dims {labels.shape}, "
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
    _require_file(path, "Omniglot's chardata.mat")
    try:
        mat = loadmat(path)
    except (ValueError, OSError, read_error) as err:
        raise CorruptFileError(f"{path}: not a readable MATLAB file ({err})") from err
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
        raise CorruptFileError(f"{path}: no variable {key!r}; expected Omniglot's chardata.mat "
                               "with 'data' and 'testdata' (784 x n)")
    arr = np.asarray(mat[key])
    if arr.ndim != 2 or arr.shape[0] != MNIST_PIXELS:
        raise CorruptFileError(f"{path}: {key!r} has shape {arr.shape}, "
                               f"expected ({MNIST_PIXELS}, n)")
    if not np.all((arr >= 0) & (arr <= 1)):
        raise ValueError(f"{path}: {key!r} has values outside [0, 1]")
    # A column is a column-major image: view it as (col, row), then swap to (row, col).
    images = arr.T.reshape(-1, *MNIST_SHAPE).transpose(0, 2, 1).reshape(-1, MNIST_PIXELS)
    return np.rint(images * 255).astype(np.uint8)


def _read_omniglot(root):
    """Grey Omniglot Splits from chardata.mat (`root` is the file or its folder)."""
    path = Path(root)
    if path.is_dir():
        path = path / "chardata.mat"
    train_all, test = read_omniglot_mat(path)
    train, valid = _hold_out_last(train_all, OMNIGLOT_N_VALID, path)
    return Splits(train, valid, test, binarized=False, name="omniglot", image_shape=MNIST_SHAPE)


# ------------------------------------------------------------------------------------------------
# Our HDF5 format (layout in the module docstring)

def write_dataset(path, train, valid=None, test=None, labels=None, image_shape=None, name=None):
    """Write the user's arrays to `path` as a data set in our HDF5 layout, which dvae-train
    reads (--dataset PATH) and load_dataset(path) returns; atomic (the old file, if any, stays
    until the new one is complete). Returns the Splits written.

    The arguments and their rules are make_splits' (pixels uint8 0..255 or 0/1, bool, or floats
    in [0, 1]; missing valid/test split off by the hold-out rule); name defaults to the file's
    stem. Binary data are stored bit-packed, grey data as bytes, both gzip compressed.
    """
    path = Path(path)
    if path.suffix.lower() in (".npy", ".npz"):  # read back by that suffix's reader, it would fail
        raise ValueError(f"{path}: write_dataset writes our HDF5 layout; name the file .h5 "
                         f"(a {path.suffix} file is read as NumPy's format)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: folder {path.parent} does not exist")
    splits = make_splits(train, valid, test, labels, image_shape, name or path.stem)
    write_hdf5(path, splits)
    return splits


def write_hdf5(path, splits, encoding=None, gzip_level=9):
    """Write `splits` to `path` atomically: the file is built in memory, written to a temporary
    file beside `path`, then os.replace'd over it (atomic_hdf5.py).

    encoding: "packbits" (binarised splits only), "grey" (grey splits only), or None to pick
    the one that fits.
    """
    encoding = _encoding_for(splits, encoding)
    if not isinstance(splits.name, str) or not splits.name or "\0" in splits.name:
        raise ValueError(f"name={splits.name!r}: the data set's name must be a non-empty "
                         "string without NUL characters")
    with atomic_hdf5(path, libver=HDF5_LIBVER) as f:  # built in memory: see atomic_hdf5.py
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
    _set_text(f.attrs, "format", FORMAT)
    f.attrs["version"] = VERSION
    f.attrs["pixels"] = splits.pixels
    if splits.image_shape is not None:
        f.attrs["image_shape"] = splits.image_shape
    _set_text(f.attrs, "name", splits.name)
    _set_text(f.attrs, "content_digest", splits.content_digest())
    filters = {"compression": "gzip", "compression_opts": gzip_level, "fletcher32": True}
    for split in SPLIT_NAMES:
        group = f.create_group(split)
        _set_text(group.attrs, "encoding", encoding)
        pixels = splits.split(split)
        stored = np.packbits(pixels, axis=1) if encoding == "packbits" else pixels
        group.create_dataset("images", data=stored, chunks=_row_chunks(stored), **filters)
        if splits.labels is not None:
            group.create_dataset("labels", data=splits.labels[split], **filters)


def _set_text(attrs, key, text):
    """A fixed-length UTF-8 string attribute: stored in the checksummed object header, unlike
    h5py's default variable-length strings (global heap, no checksum)."""
    raw = text.encode("utf-8")
    attrs.create(key, np.bytes_(raw), dtype=h5py.string_dtype("utf-8", len(raw)))


def _row_chunks(stored):
    """Chunks of whole rows, about 1 MiB each: gzip compresses packed rows some 20% better
    than h5py's default chunks, which cut the rows into column strips."""
    rows = min(len(stored), max(1, 2**20 // stored.shape[1]))
    return rows, stored.shape[1]


def read_hdf5(path):
    """Read and validate a data set in our HDF5 layout (versions 1 and 2), every dataset
    through to its last byte, and check it against its stored content digest (version 2).

    FileNotFoundError when `path` is missing; CorruptFileError naming the file and the damaged
    item when it is truncated, damaged or not in the layout.
    """
    path = Path(path)
    _require_file(path, f"a {FORMAT} HDF5 file")
    with _reading(path, "the superblock"):
        is_hdf5 = h5py.is_hdf5(path)
    if not is_hdf5:
        raise CorruptFileError(f"{path}: not an HDF5 file; a data set file is .h5 in the "
                               f"{FORMAT} layout, .npy or .npz")
    with _reading(path, "the file"), h5py.File(path, "r") as f:
        root = _read_root(f, path)
        parts = {split: _read_split(f, split, path, root["pixels"]) for split in SPLIT_NAMES}
    encodings = {encoding for _, _, encoding in parts.values()}
    if len(encodings) != 1:
        raise CorruptFileError(f"{path}: splits mix encodings {sorted(encodings)}")
    labels = _collect_labels({split: lab for split, (_, lab, _) in parts.items()}, path)
    try:
        splits = Splits(*(parts[split][0] for split in SPLIT_NAMES),
                        binarized=encodings == {"packbits"}, name=root["name"], labels=labels,
                        image_shape=root["image_shape"])
    except ValueError as err:
        raise CorruptFileError(f"{path}: {err}") from err
    if root["digest"] is not None and splits.content_digest() != root["digest"]:
        raise CorruptFileError(f"{path}: the pixels, labels and shape read do not match the "
                               "content_digest stored in the file: it was altered or damaged")
    return splits


@contextlib.contextmanager
def _reading(path, item):
    """Turn what h5py raises for a truncated or damaged file into CorruptFileError naming the
    file and `item`. HDF5 reports failed checksums and unreadable structures as OSError, and as
    KeyError when an object cannot be opened (the only two the byte-flip sweeps meet); h5py
    raises RuntimeError, ValueError or TypeError for datatypes and values it cannot convert,
    caught too so that none escapes as a traceback."""
    try:
        yield
    except CorruptFileError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as err:
        raise CorruptFileError(f"{path}: cannot read {item}: truncated or damaged "
                               f"({type(err).__name__}: {err})") from err


def _read_root(f, path):
    """{"pixels", "image_shape", "name", "digest"} from the root attributes, which must say this
    is our format at a version we read (version 1: 28x28, no digest)."""
    with _reading(path, "the root attributes"):
        attrs = dict(f.attrs)
    fmt = _text_attr(attrs, "format", path, "/")
    if fmt != FORMAT:
        raise CorruptFileError(f"{path}: format attribute is {fmt!r}, expected {FORMAT!r}")
    version = _int_attr(attrs, "version", path)
    if version not in READABLE_VERSIONS:
        raise CorruptFileError(f"{path}: unsupported version {version}; this reader knows "
                               f"versions {READABLE_VERSIONS}")
    shape = attrs.get("image_shape")
    shape = None if shape is None else tuple(np.atleast_1d(shape).tolist())
    name = _text_attr(attrs, "name", path, "/") if "name" in attrs else path.stem
    if version == 1:
        if shape != MNIST_SHAPE:
            raise CorruptFileError(f"{path}: image_shape is {shape}, version 1 files are "
                                   f"{MNIST_SHAPE}")
        return {"pixels": MNIST_PIXELS, "image_shape": shape, "name": name, "digest": None}
    pixels = _int_attr(attrs, "pixels", path)
    if pixels < 1:
        raise CorruptFileError(f"{path}: pixels attribute is {pixels}, expected >= 1")
    digest = _text_attr(attrs, "content_digest", path, "/")
    return {"pixels": pixels, "image_shape": shape, "name": name, "digest": digest}


def _text_attr(attrs, key, path, where):
    """A text attribute: fixed-length (bytes, version 2) or variable-length (str, version 1)."""
    value = attrs.get(key)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as err:
            raise CorruptFileError(f"{path}: attribute {key!r} of {where} is not UTF-8 text "
                                   f"({err})") from err
    if isinstance(value, str):
        return value
    raise CorruptFileError(f"{path}: attribute {key!r} of {where} is "
                           f"{'missing' if value is None else repr(value)}, expected text")


def _int_attr(attrs, key, path):
    """An integer scalar root attribute."""
    value = attrs.get(key)
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise CorruptFileError(f"{path}: root attribute {key!r} is "
                               f"{'missing' if value is None else repr(value)}, expected an "
                               "integer")
    return int(value)


def _read_split(f, split, path, pixels):
    """(pixels uint8 (n, D), labels or None, encoding) of group `split`, validated."""
    with _reading(path, f"group /{split}"):
        group = f[split] if split in f else None
        is_group = isinstance(group, h5py.Group)
        attrs = dict(group.attrs) if is_group else {}
    if not is_group:
        raise CorruptFileError(f"{path}: missing group {split!r} "
                               f"(need {', '.join(SPLIT_NAMES)})")
    encoding = _text_attr(attrs, "encoding", path, f"/{split}")
    if encoding not in ENCODINGS:
        raise CorruptFileError(f"{path}: /{split} has encoding {encoding!r}, expected one of "
                               f"{ENCODINGS}")
    width = math.ceil(pixels / 8) if encoding == "packbits" else pixels
    stored = _read_dataset(group, split, "images", (np.uint8,), (None, width), path)
    images = np.unpackbits(stored, axis=1, count=pixels) if encoding == "packbits" else stored
    labels = None
    with _reading(path, f"group /{split}"):
        has_labels = "labels" in group
    if has_labels:
        labels = _read_dataset(group, split, "labels", LABEL_DTYPES, (len(images),), path)
    return images, labels, encoding


def _read_dataset(group, split, key, dtypes, shape, path):
    """All of dataset `key` of `group`, which must have one of `dtypes` and `shape` (None: any
    length)."""
    item = f"/{split}/{key}"
    with _reading(path, item):
        ds = group[key] if key in group else None
        if not isinstance(ds, h5py.Dataset):
            raise CorruptFileError(f"{path}: missing dataset {item}")
        fits = ds.dtype in dtypes and len(ds.shape) == len(shape) and all(
            want is None or got == want for got, want in zip(ds.shape, shape))
        if not fits:
            want = ", ".join("n" if w is None else str(w) for w in shape)
            names = " or ".join(np.dtype(t).name for t in dtypes)
            raise CorruptFileError(f"{path}: {item} is {ds.dtype} {ds.shape}, "
                                   f"expected {names} ({want})")
        return ds[()]


def _collect_labels(labels, path):
    """All three splits' labels, or None when no split has any."""
    present = [split for split, lab in labels.items() if lab is not None]
    if not present:
        return None
    if len(present) != len(SPLIT_NAMES):
        raise CorruptFileError(f"{path}: labels in {present} only; need all of {SPLIT_NAMES} "
                               "or none")
    return labels


# ------------------------------------------------------------------------------------------------
# The one entry point

def load_dataset(name_or_path="fashion-mnist", binarization="fixed", root=None):
    """Load a data set as Splits (sources, file kinds and splits: see the module docstring).

    binarization: "fixed" returns binarised pixels (pixel >= 128); "dynamic" returns grey pixels
    (binarized=False) for the trainer to binarise per batch, and needs a grey source.
    Errors: FileNotFoundError for a missing file, CorruptFileError for a damaged one,
    ValueError for bad arguments or arrays; all name the file or argument.
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
                "binarization='dynamic' needs the grey IDX files: the data set "
                "'fashion-mnist-idx' (--dataset fashion-mnist-idx) reads them from "
                f"{FASHION_MNIST_DEBIAN} (apt-get install dataset-fashion-mnist), or root= "
                "(--data-root) names a folder holding them")
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
                     "a path to a .h5, .npy or .npz file, or a folder of IDX files")


def _require_root(root, name, what):
    """Sources that are not shipped need `root=`."""
    if root is None:
        raise ValueError(f"data set {name!r} is not shipped: pass root= (--data-root) {what}")
    return Path(root)


def _looks_like_path(name_or_path):
    """A Path, something with a separator or a data file suffix, or an existing file or folder."""
    name = str(name_or_path)
    return (isinstance(name_or_path, Path) or os.sep in name
            or name.endswith((".h5", ".hdf5", ".npy", ".npz")) or Path(name).exists())


def _read_path(path, root):
    """A folder of IDX files, a .npy or .npz file, or one of our .h5 files."""
    if root is not None:
        raise ValueError(f"root={root!r} (--data-root) applies to named data sets only, not to "
                         f"path {path}")
    if path.is_dir():
        return _read_idx_folder(path, path.name)
    readers = {".npy": read_npy, ".npz": read_npz}
    return readers.get(path.suffix.lower(), read_hdf5)(path)


def _read_embedded():
    """The shipped binarised Fashion-MNIST (built by data/build_fashion_mnist.py)."""
    ref = resources.files("dvae_cupy.embedded") / "fashion_mnist.h5"
    with resources.as_file(ref) as path:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the embedded data set is missing; build it with "
                                    "python data/build_fashion_mnist.py")
        return read_hdf5(path)
