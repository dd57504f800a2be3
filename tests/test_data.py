"""dvae_cupy.data: readers against small files written here in each standard format, our HDF5
round trip, the embedded Fashion-MNIST, and that every error names the file or the argument."""
import gzip
import re
import struct
import sys

import h5py
import numpy as np
import pytest

from dvae_cupy import data
from dvae_cupy.data import (Splits, binarize_fixed, load_dataset, read_hdf5, read_idx,
                            read_omniglot_mat, write_dataset, write_hdf5)
from dvae_cupy.errors import CorruptFileError

N_TRAIN_MNIST = 63     # a small folder: its last sixth (10) validates, 53 train
N_TRAIN_OMNIGLOT = data.OMNIGLOT_N_VALID + 4


def escaped(path):
    """A file name as a literal for pytest.raises(match=...)."""
    return re.escape(str(path))


# ------------------------------------------------------------------------------------------------
# Writers in the standard formats, written from the format descriptions (not from data.py)

def idx_bytes(array):
    """MNIST IDX: 0x00 0x00, dtype 0x08 (unsigned byte), ndim, big-endian uint32 dims, bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path, array):
    """Write `array` as an IDX file, gzipped when the name ends in .gz."""
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def write_mnist_folder(folder, rng, gz):
    """The four standard IDX files with random grey images and labels; returns the arrays."""
    arrays = {
        "train_images": rng.integers(0, 256, (N_TRAIN_MNIST, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, N_TRAIN_MNIST, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, 5, dtype=np.uint8),
    }
    for key, base in data.IDX_FILES.items():
        write_idx(folder / (base + (".gz" if gz else "")), arrays[key])
    return arrays


def write_chardata(path, train_grey, test_grey, keys=("data", "testdata")):
    """Omniglot's chardata.mat: 784 x n floats in [0, 1], each column a column-major image."""
    scipy_io = pytest.importorskip("scipy.io")
    columns = {"data": train_grey, "testdata": test_grey}
    scipy_io.savemat(path, {key: np.stack([img.ravel(order="F") for img in columns[key]],
                                          axis=1) / 255.0 for key in keys})
    return path


def small_splits(rng, binarized, labels=True):
    """A few random images per split, binarised or grey, with or without labels."""
    high = 2 if binarized else 256
    sizes = {"train": 7, "valid": 3, "test": 4}
    pixels = {s: rng.integers(0, high, (n, 784), dtype=np.uint8) for s, n in sizes.items()}
    lab = {s: rng.integers(0, 10, n, dtype=np.uint8) for s, n in sizes.items()}
    return Splits(**pixels, binarized=binarized, name="small", labels=lab if labels else None,
                  image_shape=(28, 28))


def assert_same_splits(got, want):
    """Pixels, flag, name, image shape and labels all equal."""
    for split in data.SPLIT_NAMES:
        np.testing.assert_array_equal(got.split(split), want.split(split))
    assert (got.binarized, got.name, got.image_shape) == \
        (want.binarized, want.name, want.image_shape)
    assert (got.labels is None) == (want.labels is None)
    for split in data.SPLIT_NAMES if want.labels else ():
        np.testing.assert_array_equal(got.labels[split], want.labels[split])


@pytest.fixture
def rng():
    return np.random.default_rng(20190613)


# ------------------------------------------------------------------------------------------------
# IDX

@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", [(6, 28, 28), (6,)], ids=["images", "labels"])
def test_read_idx_round_trip(tmp_path, rng, suffix, shape):
    array = rng.integers(0, 256, shape, dtype=np.uint8)
    got = read_idx(write_idx(tmp_path / f"file-idx{suffix}", array))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_load_mnist_folder_splits_50k_10k_style(tmp_path, rng, gz):
    arrays = write_mnist_folder(tmp_path, rng, gz)
    grey = load_dataset("mnist", binarization="dynamic", root=tmp_path)
    train_all = arrays["train_images"].reshape(-1, 784)
    n_valid = data.idx_validation_rows(len(train_all))
    want = Splits(train_all[:-n_valid], train_all[-n_valid:],
                  arrays["test_images"].reshape(-1, 784), binarized=False, name="mnist",
                  labels={"train": arrays["train_labels"][:-n_valid],
                          "valid": arrays["train_labels"][-n_valid:],
                          "test": arrays["test_labels"]}, image_shape=(28, 28))
    assert_same_splits(grey, want)
    fixed = load_dataset("mnist", binarization="fixed", root=tmp_path)
    assert fixed.binarized
    for split in data.SPLIT_NAMES:
        np.testing.assert_array_equal(fixed.split(split), want.split(split) >= 128)


def test_folder_path_reads_idx_files(tmp_path, rng):
    write_mnist_folder(tmp_path, rng, gz=True)
    splits = load_dataset(tmp_path)
    assert splits.name == tmp_path.name and splits.binarized
    assert splits.train.shape == (N_TRAIN_MNIST - data.idx_validation_rows(N_TRAIN_MNIST), 784) == (53, 784)


# ------------------------------------------------------------------------------------------------
# Binarisation

def test_binarize_fixed_is_rounding_of_pixel_over_255():
    grey = np.array([[0, 1, 127, 128, 200, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(binarize_fixed(grey), [[0, 0, 0, 1, 1, 1]])
    np.testing.assert_array_equal(binarize_fixed(grey), np.rint(grey / 255.0))


def test_binarize_refuses_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        binarize_fixed(np.zeros((1, 784), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        binarize_fixed(np.zeros((1, 784), np.int64))


# ------------------------------------------------------------------------------------------------
# Omniglot

def test_read_omniglot_mat_orientation(tmp_path):
    """A single lit pixel at row 2, column 5 of a 28x28 image is MATLAB's linear index
    5*28 + 2 (column-major); the reader must put it at row 2, column 5."""
    train = np.zeros((1, 28, 28), np.uint8)
    train[0, 2, 5] = 255
    write_chardata(tmp_path / "chardata.mat", train, train)
    got_train, _ = read_omniglot_mat(tmp_path / "chardata.mat")
    assert got_train[0].reshape(28, 28)[2, 5] == 255 and got_train.sum() == 255


def test_load_omniglot_round_trip_and_split(tmp_path, rng):
    train = rng.integers(0, 256, (N_TRAIN_OMNIGLOT, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    path = write_chardata(tmp_path / "chardata.mat", train, test)
    for root in (path, tmp_path):
        grey = load_dataset("omniglot", binarization="dynamic", root=root)
        n_valid = data.OMNIGLOT_N_VALID
        flat = train.reshape(-1, 784)
        want = Splits(flat[:-n_valid], flat[-n_valid:], test.reshape(-1, 784),
                      binarized=False, name="omniglot", image_shape=(28, 28))
        assert_same_splits(grey, want)
    assert load_dataset("omniglot", root=path).binarized


def test_read_omniglot_missing_key_names_file_and_key(tmp_path, rng):
    train = rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)
    path = write_chardata(tmp_path / "chardata.mat", train, train, keys=("data",))
    with pytest.raises(CorruptFileError, match=f"{escaped(path)}.*'testdata'"):
        read_omniglot_mat(path)


def test_read_omniglot_without_scipy_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(ImportError, match=re.escape("pip install dvae-cupy[omniglot]")):
        read_omniglot_mat(tmp_path / "chardata.mat")


# ------------------------------------------------------------------------------------------------
# Our HDF5 layout

@pytest.mark.parametrize("binarized", [True, False], ids=["packbits", "grey"])
@pytest.mark.parametrize("labels", [True, False], ids=["labels", "no-labels"])
def test_hdf5_round_trip(tmp_path, rng, binarized, labels):
    splits = small_splits(rng, binarized, labels)
    path = tmp_path / "set.h5"
    write_hdf5(path, splits)
    assert_same_splits(read_hdf5(path), splits)
    with h5py.File(path, "r") as f:
        assert f["train"].attrs["encoding"] == (b"packbits" if binarized else b"grey")
        assert f["train/images"].shape == (7, 98 if binarized else 784)
        datasets = []
        f.visititems(lambda name, item: datasets.append(item)
                     if isinstance(item, h5py.Dataset) else None)
        assert len(datasets) == (6 if labels else 3)
        assert all(ds.fletcher32 for ds in datasets)
    assert [p.name for p in tmp_path.iterdir()] == ["set.h5"]   # no temporary file left


def write_version_1(path, splits):
    """The version 1 layout (before checksums and any image shape), written from its description:
    variable-length text attributes, image_shape (28, 28), no pixels or content_digest."""
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "dvae_cupy.dataset", "version": 1, "image_shape": (28, 28),
                        "name": splits.name})
        for split in data.SPLIT_NAMES:
            group = f.create_group(split)
            group.attrs["encoding"] = "packbits" if splits.binarized else "grey"
            pixels = splits.split(split)
            group["images"] = np.packbits(pixels, axis=1) if splits.binarized else pixels
            if splits.labels is not None:
                group["labels"] = splits.labels[split]


@pytest.mark.parametrize("binarized", [True, False], ids=["packbits", "grey"])
def test_hdf5_reads_version_1_files(tmp_path, rng, binarized):
    splits = small_splits(rng, binarized)
    write_version_1(tmp_path / "v1.h5", splits)
    assert_same_splits(read_hdf5(tmp_path / "v1.h5"), splits)


def test_hdf5_version_1_must_be_28x28(tmp_path, rng):
    path = tmp_path / "v1.h5"
    write_version_1(path, small_splits(rng, True))
    with h5py.File(path, "a") as f:
        f.attrs["image_shape"] = (16, 49)
    with pytest.raises(CorruptFileError, match=f"{escaped(path)}: image_shape is \\(16, 49\\)"):
        read_hdf5(path)


def test_hdf5_write_failure_keeps_the_old_file(tmp_path, rng, monkeypatch):
    path = tmp_path / "set.h5"
    old = small_splits(rng, True)
    write_hdf5(path, old)

    def fail_halfway(f, *args):
        f.create_group("train")
        raise RuntimeError("disk full")

    monkeypatch.setattr(data, "_write_layout", fail_halfway)
    with pytest.raises(RuntimeError, match="disk full"):
        write_hdf5(path, small_splits(rng, True))
    assert_same_splits(read_hdf5(path), old)
    assert [p.name for p in tmp_path.iterdir()] == ["set.h5"]


def test_hdf5_refuses_an_encoding_that_would_lose_pixels(tmp_path, rng):
    with pytest.raises(ValueError, match="encoding='packbits'.*'small'"):
        write_hdf5(tmp_path / "set.h5", small_splits(rng, binarized=False), "packbits")
    assert not any(tmp_path.iterdir())


def test_load_dataset_on_h5_paths(tmp_path, rng):
    grey, binary = small_splits(rng, False), small_splits(rng, True)
    write_hdf5(tmp_path / "grey.h5", grey)
    write_hdf5(tmp_path / "binary.h5", binary)
    assert_same_splits(load_dataset(tmp_path / "grey.h5", "dynamic"), grey)
    fixed = load_dataset(str(tmp_path / "grey.h5"), "fixed")
    np.testing.assert_array_equal(fixed.train, grey.train >= 128)
    assert_same_splits(load_dataset(tmp_path / "binary.h5"), binary)
    with pytest.raises(ValueError, match=f"{escaped(tmp_path / 'binary.h5')}.*binarised"):
        load_dataset(tmp_path / "binary.h5", "dynamic")


# ------------------------------------------------------------------------------------------------
# The embedded Fashion-MNIST

def test_embedded_fashion_mnist_shapes_values_labels():
    splits = load_dataset()
    assert splits.binarized and splits.name == "fashion-mnist"
    shapes = [splits.split(s).shape for s in data.SPLIT_NAMES]
    assert shapes == [(50000, 784), (10000, 784), (10000, 784)]
    assert all((splits.split(s).min(), splits.split(s).max()) == (0, 1)
               for s in data.SPLIT_NAMES)
    assert [len(splits.labels[s]) for s in data.SPLIT_NAMES] == [50000, 10000, 10000]
    assert splits.image_shape == (28, 28)


def test_embedded_fashion_mnist_checksums():
    """The pixels are those data/build_fashion_mnist.py documents, and the content digest (which
    adds labels, shape and binarisation) is pinned so that a rebuild changing them shows here."""
    splits = load_dataset()
    assert splits.pixels_sha256() == \
        "dd935582f3737c9114704607c8218baa087eebbd3c818151ac56ec2ea62a93bb"
    assert splits.content_digest() == \
        "dbbb9ec02be757685fede63ecbe1504d5e350875811187c4ee678113fdfd5fa5"


@pytest.mark.skipif(not data.FASHION_MNIST_DEBIAN.is_dir(),
                    reason=f"{data.FASHION_MNIST_DEBIAN} absent "
                           "(apt-get install dataset-fashion-mnist)")
def test_embedded_matches_fresh_binarisation_of_debian_idx():
    assert_same_splits(load_dataset("fashion-mnist"), load_dataset("fashion-mnist-idx"))


def test_embedded_refuses_dynamic_and_points_at_root():
    with pytest.raises(ValueError, match="embedded Fashion-MNIST.*binarised.*root="):
        load_dataset("fashion-mnist", binarization="dynamic")


# ------------------------------------------------------------------------------------------------
# Errors name the file or the argument

def test_missing_idx_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with pytest.raises(FileNotFoundError, match=f"{escaped(path)}.*IDX"):
        read_idx(path)


def test_idx_folder_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{escaped(tmp_path)}.*train-images-idx3-ubyte"):
        load_dataset("mnist", root=tmp_path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_truncated_idx(tmp_path, rng, suffix):
    raw = idx_bytes(rng.integers(0, 256, (3, 28, 28), dtype=np.uint8))[:-1]
    path = tmp_path / f"cut-idx{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix else raw)
    with pytest.raises(CorruptFileError, match=f"{escaped(path)}: truncated"):
        read_idx(path)


def test_truncated_gzip_stream(tmp_path, rng):
    packed = gzip.compress(idx_bytes(rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)))
    path = tmp_path / "cut-idx.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(CorruptFileError, match=f"{escaped(path)}.*gzip"):
        read_idx(path)


def test_idx_wrong_magic(tmp_path):
    path = tmp_path / "wrong-idx"
    path.write_bytes(bytes([0, 0, 0x0D, 3]) + struct.pack(">3I", 1, 28, 28) + bytes(4 * 784))
    with pytest.raises(CorruptFileError, match=f"{escaped(path)}: magic number 00000d03"):
        read_idx(path)


def test_idx_trailing_junk(tmp_path):
    path = tmp_path / "long-idx"
    path.write_bytes(idx_bytes(np.zeros(4, np.uint8)) + b"junk!")
    with pytest.raises(CorruptFileError, match=f"{escaped(path)}: 5 bytes of trailing junk"):
        read_idx(path)


def test_not_hdf5(tmp_path):
    path = tmp_path / "fake.h5"
    path.write_bytes(b"this is not HDF5")
    with pytest.raises(CorruptFileError, match=f"{escaped(path)}: not an HDF5 file"):
        read_hdf5(path)


def test_missing_hdf5_file(tmp_path):
    path = tmp_path / "absent.h5"
    with pytest.raises(FileNotFoundError, match=escaped(path)):
        load_dataset(path)


def test_hdf5_missing_group(tmp_path, rng):
    path = tmp_path / "set.h5"
    write_hdf5(path, small_splits(rng, True))
    with h5py.File(path, "a") as f:
        del f["valid"]
    with pytest.raises(CorruptFileError, match=f"{escaped(path)}: missing group 'valid'"):
        read_hdf5(path)


def test_hdf5_wrong_format_and_shape(tmp_path, rng):
    path = tmp_path / "set.h5"
    write_hdf5(path, small_splits(rng, True))
    with h5py.File(path, "a") as f:
        del f["test/images"]
        f["test/images"] = np.zeros((4, 97), np.uint8)
    wrong_shape = f"{escaped(path)}: /test/images .*expected uint8 \\(n, 98\\)"
    with pytest.raises(CorruptFileError, match=wrong_shape):
        read_hdf5(path)
    with h5py.File(path, "a") as f:
        f.attrs["format"] = "something.else"
    wrong_format = f"{escaped(path)}: format attribute is 'something.else'"
    with pytest.raises(CorruptFileError, match=wrong_format):
        read_hdf5(path)


@pytest.mark.parametrize("key, value, message", [
    ("version", 3, "unsupported version 3"),
    ("version", None, "root attribute 'version' is missing"),
    ("pixels", None, "root attribute 'pixels' is missing"),
    ("pixels", 783, r"image_shape \(28, 28\) has 784 pixels, but the images have 783"),
    ("pixels", 700, r"/train/images is uint8 \(7, 98\), expected uint8 \(n, 88\)"),
    ("pixels", 0, "pixels attribute is 0"),
    ("image_shape", 5, r"image_shape must be \(H, W\)"),
    ("image_shape", (28, 27), r"image_shape \(28, 27\) has 756 pixels"),
    ("content_digest", None, "attribute 'content_digest' of / is missing"),
    ("content_digest", "0" * 64, "do not match the content_digest"),
    ("name", b"\xff\xfe", "attribute 'name' of / is not UTF-8"),
])
def test_hdf5_root_attributes_are_checked(tmp_path, rng, key, value, message):
    path = tmp_path / "set.h5"
    write_hdf5(path, small_splits(rng, True))
    with h5py.File(path, "a") as f:
        if value is None:
            del f.attrs[key]
        else:
            f.attrs[key] = np.bytes_(value) if isinstance(value, bytes) else value
    with pytest.raises(CorruptFileError, match=f"{escaped(path)}: .*{message}"):
        read_hdf5(path)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown data set 'fashon-mnist'.*mnist.*omniglot"):
        load_dataset("fashon-mnist")


def test_bad_binarization_option():
    with pytest.raises(ValueError, match="binarization='otsu'.*fixed.*dynamic"):
        load_dataset("fashion-mnist", binarization="otsu")


def test_unshipped_sets_need_root():
    with pytest.raises(ValueError, match="'mnist'.*root="):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="'omniglot'.*root="):
        load_dataset("omniglot")


def test_missing_omniglot_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{escaped(tmp_path / 'chardata.mat')}"):
        load_dataset("omniglot", root=tmp_path)


def test_data_set_errors_name_the_option_in_both_spellings():
    """load_dataset's messages serve the library (root=) and dvae-train (--data-root) alike."""
    with pytest.raises(ValueError, match=r"'omniglot' is not shipped: pass root= \(--data-root\)"):
        load_dataset("omniglot")
    with pytest.raises(ValueError, match=r"'fashion-mnist-idx' \(--dataset fashion-mnist-idx\)"):
        load_dataset("fashion-mnist", binarization="dynamic")


def test_an_idx_folder_smaller_than_mnist_holds_out_its_last_sixth():
    assert data.idx_validation_rows(60000) == data.idx_validation_rows(70000) == 10000
    assert data.idx_validation_rows(12000) == 2000 and data.idx_validation_rows(3000) == 500
    assert data.idx_validation_rows(2) == 1


def test_write_dataset_refuses_a_numpy_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"writes our HDF5 layout; name the file .h5"):
        write_dataset(tmp_path / "mine.npy", np.zeros((20, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []
