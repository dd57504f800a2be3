"""The user's own data sets: arrays of any image shape through make_splits, write_dataset (.h5),
.npy and .npz files and load_dataset; the pixel rules, the hold-out rule, and a named error for
every bad input."""
import re
import zipfile

import h5py
import numpy as np
import pytest

from dvae_cupy import data
from dvae_cupy.data import hold_out_rows, load_dataset, make_splits, write_dataset
from dvae_cupy.errors import CorruptFileError

SHAPES = [(16, 16), (20, 12)]


def escaped(path):
    return re.escape(str(path))


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def unique_binary_images(n, shape):
    """n binary images whose first 16 pixels spell the row number in binary, so every row is
    distinct and a test can tell where each one went."""
    rng = np.random.default_rng(n)
    images = rng.integers(0, 2, (n, *shape), dtype=np.uint8)
    flat = images.reshape(n, -1)
    flat[:, :16] = (np.arange(n)[:, None] >> np.arange(16)) & 1
    return images


def row_numbers(pixels):
    """Inverse of unique_binary_images: the row numbers spelled by the first 16 pixels."""
    return (pixels[:, :16].astype(np.int64) << np.arange(16)).sum(axis=1)


def assert_same(got, want):
    for split in data.SPLIT_NAMES:
        np.testing.assert_array_equal(got.split(split), want.split(split))
        if want.labels is not None:
            np.testing.assert_array_equal(got.labels[split], want.labels[split])
    assert (got.labels is None) == (want.labels is None)
    assert (got.image_shape, got.binarized) == (want.image_shape, want.binarized)
    assert got.content_digest() == want.content_digest()


# ------------------------------------------------------------------------------------------------
# Any image shape, all three file kinds

@pytest.mark.parametrize("shape", SHAPES, ids=["16x16", "20x12"])
def test_three_splits_round_trip_through_h5_and_npz(tmp_path, shape):
    parts = {"train": unique_binary_images(30, shape), "valid": unique_binary_images(5, shape),
             "test": unique_binary_images(6, shape)}
    labels = {split: np.arange(len(x), dtype=np.int64) % 7 for split, x in parts.items()}
    written = write_dataset(tmp_path / "set.h5", **parts, labels=labels)
    np.savez(tmp_path / "set.npz", **parts, **{f"labels_{s}": y for s, y in labels.items()})
    for path in (tmp_path / "set.h5", tmp_path / "set.npz"):
        got = load_dataset(path)
        assert got.image_shape == shape and got.pixels == shape[0] * shape[1] and got.binarized
        for split, images in parts.items():
            # the pixels are the arrays given, row-major: checked against the inputs themselves
            np.testing.assert_array_equal(got.split(split), images.reshape(len(images), -1))
            np.testing.assert_array_equal(got.labels[split], labels[split])
            assert got.labels[split].dtype == np.uint8
        assert_same(got, written)


@pytest.mark.parametrize("shape", SHAPES, ids=["16x16", "20x12"])
def test_one_array_round_trips_through_all_three_kinds(tmp_path, shape):
    """train only: .npy, .npz with `train` alone, and write_dataset all split it the same way,
    and together the three splits hold each original row exactly once."""
    images = unique_binary_images(50, shape)
    np.save(tmp_path / "set.npy", images)
    np.savez_compressed(tmp_path / "set.npz", train=images)
    write_dataset(tmp_path / "set.h5", images)
    loaded = [load_dataset(tmp_path / f"set.{kind}") for kind in ("npy", "npz", "h5")]
    for got in loaded:
        assert got.image_shape == shape and got.binarized
        assert [len(got.split(s)) for s in data.SPLIT_NAMES] == [40, 5, 5]
        assert_same(got, loaded[0])
    rows = {split: row_numbers(loaded[0].split(split)) for split in data.SPLIT_NAMES}
    assert sorted(np.concatenate(list(rows.values())).tolist()) == list(range(50))
    flat = images.reshape(50, -1)
    for split in data.SPLIT_NAMES:
        np.testing.assert_array_equal(loaded[0].split(split), flat[rows[split]])
        assert np.all(np.diff(rows[split]) > 0)          # every part keeps the file's order


def test_flat_arrays_have_no_image_shape_unless_given(tmp_path, rng):
    flat = rng.integers(0, 2, (40, 240), dtype=np.uint8)
    np.save(tmp_path / "flat.npy", flat)
    assert load_dataset(tmp_path / "flat.npy").image_shape is None
    assert make_splits(flat).image_shape is None
    assert make_splits(flat, image_shape=(20, 12)).image_shape == (20, 12)
    written = write_dataset(tmp_path / "flat.h5", flat, image_shape=(12, 20))
    assert load_dataset(tmp_path / "flat.h5").image_shape == (12, 20) == written.image_shape
    write_dataset(tmp_path / "none.h5", flat)
    got = load_dataset(tmp_path / "none.h5")
    assert got.image_shape is None and got.pixels == 240
    with h5py.File(tmp_path / "none.h5", "r") as f:
        assert "image_shape" not in f.attrs and f.attrs["pixels"] == 240


def test_odd_pixel_counts_pack_and_unpack(tmp_path, rng):
    """D not a multiple of 8 (packbits pads the last byte), and D = 1."""
    for shape in [(3, 5), (1, 1), (7, 1)]:
        images = rng.integers(0, 2, (12, *shape), dtype=np.uint8)
        written = write_dataset(tmp_path / "odd.h5", images)
        assert_same(load_dataset(tmp_path / "odd.h5"), written)


def test_grey_data_sets_keep_their_levels_and_binarise_both_ways(tmp_path, rng):
    grey = rng.integers(0, 256, (30, 20, 12), dtype=np.uint8)
    np.save(tmp_path / "grey.npy", grey)
    write_dataset(tmp_path / "grey.h5", grey)
    for path in (tmp_path / "grey.npy", tmp_path / "grey.h5"):
        dynamic = load_dataset(path, "dynamic")
        fixed = load_dataset(path, "fixed")
        assert not dynamic.binarized and fixed.binarized
        assert fixed.image_shape == dynamic.image_shape == (20, 12)
        for split in data.SPLIT_NAMES:
            np.testing.assert_array_equal(fixed.split(split), dynamic.split(split) >= 128)
        assert set(np.unique(dynamic.train)) - {0, 1}
    with h5py.File(tmp_path / "grey.h5", "r") as f:
        assert f["train"].attrs["encoding"] == b"grey"


def test_binary_files_refuse_dynamic_binarisation(tmp_path):
    np.save(tmp_path / "bin.npy", unique_binary_images(20, (4, 4)))
    with pytest.raises(ValueError, match=f"{escaped(tmp_path / 'bin.npy')}.*binarised"):
        load_dataset(tmp_path / "bin.npy", "dynamic")


def test_nested_lists_are_arrays_too():
    rows = [[[0, 1], [1, 0]]] * 10
    splits = make_splits(rows)
    assert splits.binarized and splits.image_shape == (2, 2) and splits.pixels == 4


def test_h5py_dataset_and_memory_map_inputs(tmp_path, rng):
    """Array-likes are read block by block, not copied whole: an h5py dataset and a memory map
    give the same Splits as the array itself."""
    images = rng.random((40, 8, 8))
    with h5py.File(tmp_path / "raw.h5", "w") as f:
        f["x"] = images
    np.save(tmp_path / "raw.npy", images)
    want = make_splits(images)
    with h5py.File(tmp_path / "raw.h5", "r") as f:
        assert_same(make_splits(f["x"]), want)
    assert_same(make_splits(np.load(tmp_path / "raw.npy", mmap_mode="r")), want)


# ------------------------------------------------------------------------------------------------
# The pixel rules

def test_float_pixels_become_rint_p_times_255():
    p = np.array([[0.0, 0.25, 0.498, 0.5, 0.502, 1.0]])
    grey = make_splits(np.repeat(p, 5, axis=0)).train
    np.testing.assert_array_equal(grey[0], [0, 64, 127, 128, 128, 255])
    np.testing.assert_array_equal(grey[0] >= 128, p[0] >= 0.5)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, bool, np.uint8, np.int64],
                         ids=lambda t: np.dtype(t).name)
def test_zero_one_arrays_of_any_type_are_binary(dtype, rng):
    bits = rng.integers(0, 2, (20, 6))
    splits = make_splits(bits.astype(dtype))
    assert splits.binarized
    np.testing.assert_array_equal(np.concatenate([splits.split(s) for s in ("train",)]),
                                  bits[hold_out_rows(20, ["valid", "test"])["train"]])


def test_integer_grey_levels_are_kept(rng):
    grey = rng.integers(0, 256, (20, 6)).astype(np.int32)
    splits = make_splits(grey, valid=grey[:3], test=grey[:4])
    assert not splits.binarized
    np.testing.assert_array_equal(splits.train, grey)


def test_block_wise_conversion_equals_one_block(monkeypatch, rng):
    """A block that is all 0/1 followed by grey ones is grey; floats all 0/1 in every block are
    binary: the same result whatever the block size."""
    mixed = rng.integers(0, 2, (40, 10)).astype(np.float64)
    mixed[30:] = rng.random((10, 10))
    ones = rng.integers(0, 2, (40, 10)).astype(np.float32)
    whole = [make_splits(x, valid=x[-2:], test=x[-2:]) for x in (mixed, ones)]
    monkeypatch.setattr(data, "CONVERT_BLOCK", 30)        # 3 rows a block
    blocks = [make_splits(x, valid=x[-2:], test=x[-2:]) for x in (mixed, ones)]
    for got, want in zip(blocks, whole):
        assert_same(got, want)
    assert (whole[0].binarized, whole[1].binarized) == (False, True)


# ------------------------------------------------------------------------------------------------
# The hold-out rule: documented in the module docstring, pinned here by an independent copy

def splitmix64_python(seed, count):
    """Vigna's splitmix64 in Python integers, from its published C code."""
    mask, state, out = 2**64 - 1, seed, []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append(z ^ (z >> 31))
    return out


DOCUMENTED_SEED = 20190613      # the module docstring's SPLIT_SEED: never to change


def test_hold_out_rule_is_pinned():
    """Users' splits must not move between versions: 20 rows, as computed once by hand-checked
    code, kept literally here."""
    got = {split: rows.tolist() for split, rows in hold_out_rows(20, ["valid", "test"]).items()}
    assert got == {"train": [0, 1, 2, 3, 4, 5, 7, 8, 10, 11, 14, 15, 16, 17, 18, 19],
                   "valid": [6, 13], "test": [9, 12]}


def test_splitmix64_known_answer_and_python_copy():
    assert int(data.splitmix64(0, 1)[0]) == 0xE220A8397B1DCDAF     # the reference's first output
    assert data.splitmix64(data.SPLIT_SEED, 500).tolist() == \
        splitmix64_python(data.SPLIT_SEED, 500)


@pytest.mark.parametrize("n, missing", [(50, ["valid", "test"]), (23, ["valid"]), (3, ["test"]),
                                        (3, ["valid", "test"]), (1001, ["valid", "test"])])
def test_hold_out_rows_follow_the_documented_rule(n, missing):
    keys = splitmix64_python(DOCUMENTED_SEED, n)
    by_key = sorted(range(n), key=keys.__getitem__)
    size = max(1, n // 10)
    want = {split: sorted(by_key[i * size:(i + 1) * size]) for i, split in enumerate(missing)}
    want["train"] = sorted(by_key[size * len(missing):])
    got = hold_out_rows(n, missing)
    assert {split: rows.tolist() for split, rows in got.items()} == want


def test_labels_follow_their_images_when_split_off():
    images = unique_binary_images(60, (5, 5))
    labels = np.arange(60) * 3 % 256
    splits = make_splits(images, labels={"train": labels})
    for split in data.SPLIT_NAMES:
        rows = row_numbers(splits.split(split))
        np.testing.assert_array_equal(splits.labels[split], labels[rows])


def test_given_test_split_only_valid_is_held_out():
    images, test = unique_binary_images(40, (4, 4)), unique_binary_images(7, (4, 4))
    splits = make_splits(images, test=test)
    np.testing.assert_array_equal(splits.test, test.reshape(7, -1))
    assert [len(splits.split(s)) for s in data.SPLIT_NAMES] == [36, 4, 7]
    np.testing.assert_array_equal(row_numbers(splits.valid),
                                  hold_out_rows(40, ["valid"])["valid"])


def test_large_labels_take_a_wider_type():
    images = unique_binary_images(20, (4, 4))
    splits = make_splits(images, labels={"train": np.arange(20) * 1000})
    assert splits.labels["train"].dtype == np.uint16
    splits = make_splits(images, labels={"train": np.arange(20) * 2**20})
    assert splits.labels["train"].dtype == np.uint32


# ------------------------------------------------------------------------------------------------
# Bad arrays: a ValueError naming the file and the array (or the argument)

BAD_PIXELS = [
    (np.full((5, 4, 4), -1, np.int16), r"Negative values in data \(-1\); integer pixels must be in 0..255"),
    (np.full((5, 4, 4), 256, np.int32), "integer pixels must be in 0..255; found 256"),
    (np.full((5, 4, 4), np.nan), "holds NaN"),
    (np.full((5, 4, 4), 1.5, np.float32), r"float pixels must be in \[0, 1\]; found 1.5"),
    (np.full((5, 4, 4), -np.inf), r"Negative values in data \(-inf\); float pixels must be in \[0, 1\]"),
    (np.zeros((5, 4, 4), np.complex64), r"Complex data not supported \(dtype complex64\)"),
    (np.zeros((5, 4, 4), "U3"), "dtype <U3"),
    (np.zeros(16, np.uint8), r"shape \(16,\); expected \(n, H, W\) or \(n, D\)"),
    (np.zeros((2, 3, 4, 4), np.uint8), r"shape \(2, 3, 4, 4\)"),
    (np.zeros((0, 4, 4), np.uint8), r"shape \(0, 4, 4\)"),
    (np.zeros((5, 0), np.uint8), r"0 feature\(s\) \(shape=\(5, 0\)\)"),
]
BAD_IDS = ["negative", "256", "nan", "float>1", "-inf", "complex", "text", "1-D", "4-D",
           "no rows", "no pixels"]


@pytest.mark.parametrize("array, message", BAD_PIXELS, ids=BAD_IDS)
def test_bad_pixels_in_npy_npz_and_arguments(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    np.savez(tmp_path / "bad.npz", train=np.zeros((9, 4, 4), np.uint8), valid=array)
    with pytest.raises(ValueError, match=f"{escaped(tmp_path / 'bad.npy')}: {message}"):
        load_dataset(tmp_path / "bad.npy")
    with pytest.raises(ValueError, match=f"{escaped(tmp_path / 'bad.npz')}: array 'valid': "
                                         f"{message}"):
        load_dataset(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match=f"^valid: {message}"):
        write_dataset(tmp_path / "bad.h5", np.zeros((9, 4, 4), np.uint8), valid=array)
    assert not (tmp_path / "bad.h5").exists()


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    objects = np.empty((3, 4), dtype=object)
    np.save(tmp_path / "obj.npy", objects, allow_pickle=True)
    np.savez(tmp_path / "obj.npz", train=objects)
    with pytest.raises(ValueError, match=f"{escaped(tmp_path / 'obj.npy')}: dtype object"):
        load_dataset(tmp_path / "obj.npy")
    with pytest.raises(ValueError, match=f"{escaped(tmp_path / 'obj.npz')}: array 'train': "
                                         "dtype object"):
        load_dataset(tmp_path / "obj.npz")


def test_mixed_binary_and_grey_splits_are_refused():
    with pytest.raises(ValueError, match="valid hold only 0/1 but train, test hold grey"):
        make_splits(np.full((9, 4), 200, np.uint8), valid=np.ones((2, 4), np.uint8),
                    test=np.full((2, 4), 7, np.uint8))


def test_shapes_must_agree():
    with pytest.raises(ValueError, match=r"image shapes disagree: train \(4, 4\), valid \(2, 8\)"):
        make_splits(np.zeros((9, 4, 4)), valid=np.zeros((2, 2, 8)))
    with pytest.raises(ValueError, match="pixel counts disagree: train has 16, test has 15"):
        make_splits(np.zeros((9, 16)), test=np.zeros((2, 15)))
    with pytest.raises(ValueError, match=r"image_shape \(5, 3\) has 15 pixels, but the images "
                                         "have 16"):
        make_splits(np.zeros((9, 16)), image_shape=(5, 3))
    with pytest.raises(ValueError, match=r"image shapes disagree: train \(4, 4\), "
                                         r"image_shape \(2, 8\)"):
        make_splits(np.zeros((9, 4, 4)), image_shape=(2, 8))
    with pytest.raises(ValueError, match="image_shape must be \\(H, W\\)"):
        make_splits(np.zeros((9, 16)), image_shape=(16,))


BAD_LABELS = [
    ({"train": np.zeros(8)}, r"labels\['train'\]: labels must be integers shaped \(9,\)"),
    ({"train": np.zeros(9, np.float32)}, r"labels\['train'\]: labels must be integers"),
    ({"train": np.full(9, -2)}, r"labels\['train'\]: labels must be in 0 .. 2\*\*32 - 1; found -2"),
    ({"train": np.zeros(9, int), "valid": np.zeros(2, int)},
     r"labels\['valid'\]: labels given for \['train', 'valid'\] but images for \['train'\]"),
    (np.zeros(9, int), "labels must be a dict"),
]


@pytest.mark.parametrize("labels, message", BAD_LABELS,
                         ids=["length", "float", "negative", "extra split", "not a dict"])
def test_bad_labels(labels, message):
    with pytest.raises(ValueError, match=message):
        make_splits(np.zeros((9, 4), np.uint8), labels=labels)


def test_npz_with_labels_for_some_splits_only(tmp_path):
    path = tmp_path / "part.npz"
    np.savez(path, train=np.zeros((9, 4), np.uint8), test=np.zeros((2, 4), np.uint8),
             labels_train=np.zeros(9, np.uint8))
    with pytest.raises(ValueError, match=f"{escaped(path)}: array 'labels_test': labels given "
                                         r"for \['train'\] but images for \['test', 'train'\]"):
        load_dataset(path)


def test_npz_keys(tmp_path):
    path = tmp_path / "keys.npz"
    np.savez(path, train=np.zeros((9, 4), np.uint8), lables_train=np.zeros(9, np.uint8))
    with pytest.raises(ValueError, match=f"{escaped(path)}: unknown arrays \\['lables_train'\\]"):
        load_dataset(path)
    np.savez(path, x_train=np.zeros((9, 4), np.uint8))
    with pytest.raises(ValueError, match=f"{escaped(path)}: unknown arrays"):
        load_dataset(path)
    np.savez(path, valid=np.zeros((9, 4), np.uint8))
    with pytest.raises(ValueError, match=f"{escaped(path)}: no 'train' array"):
        load_dataset(path)


def test_too_few_rows_to_split_off(tmp_path):
    np.save(tmp_path / "two.npy", np.zeros((2, 4), np.uint8))
    with pytest.raises(ValueError, match=f"{escaped(tmp_path / 'two.npy')}: 2 training rows "
                                         "cannot give 1 row to each of valid, test"):
        load_dataset(tmp_path / "two.npy")


def test_write_dataset_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match=escaped(tmp_path / "no" / "x.h5")):
        write_dataset(tmp_path / "no" / "x.h5", np.zeros((9, 4), np.uint8))
    with pytest.raises(ValueError, match="train: the training images are required"):
        make_splits(None, valid=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="name='a\\\\x00b'"):
        write_dataset(tmp_path / "x.h5", np.zeros((9, 4), np.uint8), name="a\0b")
    assert list(tmp_path.iterdir()) == []
    written = write_dataset(tmp_path / "x.h5", np.zeros((9, 4), np.uint8), name="ünïcode set")
    assert load_dataset(tmp_path / "x.h5").name == "ünïcode set" == written.name


# ------------------------------------------------------------------------------------------------
# Damaged .npy and .npz files: CorruptFileError naming the file; missing ones FileNotFoundError

def test_missing_files(tmp_path):
    for name in ("absent.npy", "absent.npz"):
        with pytest.raises(FileNotFoundError, match=escaped(tmp_path / name)):
            load_dataset(tmp_path / name)


@pytest.mark.parametrize("cut", [1, 100, 200, 1000])
def test_truncated_npy(tmp_path, rng, cut):
    path = tmp_path / "cut.npy"
    np.save(path, rng.integers(0, 2, (20, 8, 8), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(CorruptFileError, match=f"{escaped(path)}: (truncated|not a readable)"):
        load_dataset(path)


def test_npy_trailing_junk_and_bad_header(tmp_path, rng):
    path = tmp_path / "junk.npy"
    np.save(path, rng.integers(0, 2, (20, 8, 8), dtype=np.uint8))
    raw = path.read_bytes()
    path.write_bytes(raw + b"xyz")
    with pytest.raises(CorruptFileError, match=f"{escaped(path)}: 3 bytes of trailing junk"):
        load_dataset(path)
    path.write_bytes(raw[:10] + b"\xff" * 20 + raw[30:])
    with pytest.raises(CorruptFileError, match=f"{escaped(path)}: not a readable .npy array"):
        load_dataset(path)
    path.write_bytes(b"definitely not numpy")
    with pytest.raises(CorruptFileError, match=f"{escaped(path)}: not a readable .npy array"):
        load_dataset(path)


def test_damaged_npz_fails_its_crc(tmp_path, rng):
    path = tmp_path / "set.npz"
    np.savez(path, train=rng.integers(0, 2, (40, 8, 8), dtype=np.uint8))
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("train.npy")
    data_start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[data_start + 200] ^= 0x01                     # one bit inside the stored pixels
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match=f"{escaped(path)}: not a readable .npz.*CRC"):
        load_dataset(path)
    path.write_bytes(bytes(raw[:len(raw) // 2]))
    with pytest.raises(CorruptFileError, match=f"{escaped(path)}: not a readable .npz"):
        load_dataset(path)
