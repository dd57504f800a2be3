"""Data set files that are damaged or truncated never load with changed contents: byte-flip sweeps
and truncations over files written by write_dataset (each case a clear CorruptFileError naming
the file, or a load provably equal to the original), and the content digest that lets a resumed
run recognise its data whatever the path."""
import collections
from dataclasses import replace
from importlib import resources
import os
import shutil

import h5py
import numpy as np
import pytest

from dvae_cupy import data
from dvae_cupy.data import load_dataset, make_splits, write_dataset
from dvae_cupy.errors import CorruptFileError

# Signatures of the HDF5 structures a v110 file holds (superblock, object headers, heaps, chunk
# indexes, free space): a flip just past each one lands in a checksummed header.
HDF5_SIGNATURES = [b"\x89HDF", b"OHDR", b"OCHK", b"FRHP", b"FHDB", b"FHIB", b"BTHD", b"BTIN",
                   b"BTLF", b"FAHD", b"FADB", b"EAHD", b"EAIB", b"EADB", b"FSHD", b"FSSE",
                   b"TREE", b"HEAP", b"GCOL", b"SNOD"]


def small_set(binary):
    """A 16x16 data set with labels: binary (bit-packed) or grey."""
    rng = np.random.default_rng(12)
    images = rng.integers(0, 2, (40, 16, 16)) if binary else rng.integers(0, 256, (40, 16, 16))
    return images.astype(np.uint8), rng.integers(0, 10, 40)


def same_contents(got, want):
    """Everything a run could see: pixels, labels, image shape, binarisation, name, digest."""
    return (all(np.array_equal(got.split(s), want.split(s)) for s in data.SPLIT_NAMES)
            and all(np.array_equal(got.labels[s], want.labels[s]) for s in data.SPLIT_NAMES)
            and (got.image_shape, got.binarized, got.name) ==
                (want.image_shape, want.binarized, want.name)
            and got.content_digest() == want.content_digest())


def chunk_spans(path):
    """(dataset, first byte, size) of every stored chunk (or of a contiguous dataset's data)."""
    spans = []
    with h5py.File(path, "r") as f:
        def visit(name, item):
            if isinstance(item, h5py.Dataset) and item.chunks is None:
                spans.append((name, item.id.get_offset(), item.id.get_storage_size()))
            elif isinstance(item, h5py.Dataset):
                for i in range(item.id.get_num_chunks()):
                    info = item.id.get_chunk_info(i)
                    spans.append((name, info.byte_offset, info.size))
        f.visititems(visit)
    return spans


def sweep_offsets(path, n_spread=120):
    """{offset: what it hits}: the first, middle and last byte of every chunk; every structure
    signature and the byte after it; every text attribute's value; and n_spread offsets spread
    evenly over the rest of the file (metadata and free space)."""
    raw = path.read_bytes()
    offsets = {}
    spans = chunk_spans(path)
    for name, start, size in spans:
        for offset in (start, start + size // 2, start + size - 1):
            offsets[offset] = f"data {name}"
    for signature in HDF5_SIGNATURES:
        at = raw.find(signature)
        while at >= 0:
            offsets[at] = offsets[at + len(signature)] = f"metadata {signature!r}"
            at = raw.find(signature, at + 1)
    with h5py.File(path, "r") as f:
        texts = [f.attrs[key] for key in ("format", "name", "content_digest")]
        texts.append(f["train"].attrs["encoding"])
    for text in (t.encode() if isinstance(t, str) else bytes(t) for t in texts):
        at = raw.find(text)
        offsets[at] = offsets[at + len(text) - 1] = f"attribute {text[:12]!r}"
        if text == b"sweep set name":
            offsets.update({at + i: "attribute name" for i in range(len(text))})
    in_chunk = np.zeros(len(raw), bool)
    for _, start, size in spans:
        in_chunk[start:start + size] = True
    rest = np.flatnonzero(~in_chunk)
    for offset in rest[np.linspace(0, len(rest) - 1, n_spread).astype(int)]:
        offsets.setdefault(int(offset), "metadata spread")
    return offsets


def load_damaged(raw, path, want):
    """'error' (CorruptFileError naming the file) or 'unaffected' (equal contents), else a
    description of what went wrong."""
    path.write_bytes(raw)
    try:
        got = load_dataset(path, "fixed" if want.binarized else "dynamic")   # as stored
    except CorruptFileError as err:
        return "error" if str(path) in str(err) else f"error not naming the file: {err}"
    except Exception as err:  # noqa: BLE001 - anything else is what the sweep hunts for
        return f"{type(err).__name__}: {err}"
    return "unaffected" if same_contents(got, want) else "ACCEPTED WITH CHANGED CONTENTS"


def flip_sweep(original, want, offsets, flips=(0x01, 0xFF)):
    """Outcome counts and the failures of flipping (XOR) each byte of `offsets` in turn."""
    raw = original.read_bytes()
    damaged = original.with_name("damaged.h5")
    counts, failures = collections.Counter(), []
    for offset, hit in sorted(offsets.items()):
        for flip in flips:
            bad = bytearray(raw)
            bad[offset] ^= flip
            outcome = load_damaged(bytes(bad), damaged, want)
            sound = outcome in ("error", "unaffected")
            counts[f"{outcome if sound else 'FAILED'} ({hit.split()[0]})"] += 1
            if not sound:
                failures.append((offset, hex(flip), hit, outcome))
    return counts, failures


@pytest.mark.parametrize("binary", [True, False], ids=["packbits", "grey"])
def test_byte_flip_sweep(tmp_path, binary):
    images, labels = small_set(binary)
    path = tmp_path / "set.h5"
    # a distinctive name, so that the sweep can find and damage every byte of it: the name is
    # the one attribute no other check covers (the digest leaves it out)
    want = write_dataset(path, images, labels={"train": labels}, name="sweep set name")
    offsets = sweep_offsets(path)
    counts, failures = flip_sweep(path, want, offsets)
    print(f"\n{path.stat().st_size} bytes, {len(offsets)} offsets x 2 flips: {dict(counts)}")
    assert not failures, failures
    assert len(offsets) >= 30 and sum(counts.values()) == 2 * len(offsets)
    # every flip inside stored chunk data is caught (Fletcher-32, deflate's Adler-32)
    assert not any("unaffected (data" in key for key in counts)
    assert counts["error (metadata)"] > 50


@pytest.mark.parametrize("binary", [True, False], ids=["packbits", "grey"])
def test_truncations(tmp_path, binary):
    images, labels = small_set(binary)
    path = tmp_path / "set.h5"
    want = write_dataset(path, images, labels={"train": labels})
    raw = path.read_bytes()
    damaged = tmp_path / "cut.h5"
    lengths = [0, 1, 8, 47, 48, 200, len(raw) // 4, len(raw) // 2, 3 * len(raw) // 4,
               len(raw) - 100, len(raw) - 2, len(raw) - 1]
    outcomes = {n: load_damaged(raw[:n], damaged, want) for n in lengths}
    assert all(outcome == "error" for outcome in outcomes.values()), outcomes


def test_errors_name_the_damaged_item(tmp_path):
    images, labels = small_set(True)
    path = tmp_path / "set.h5"
    write_dataset(path, images, labels={"train": labels})
    raw = bytearray(path.read_bytes())
    name, start, size = next(span for span in chunk_spans(path) if span[0] == "valid/labels")
    raw[start + size // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match=f"{path}: cannot read /valid/labels: truncated "
                                               "or damaged"):
        load_dataset(path)


def test_appended_bytes_are_unused(tmp_path):
    """Bytes after the end HDF5 recorded are never read: the load is unchanged."""
    images, labels = small_set(True)
    path = tmp_path / "set.h5"
    want = write_dataset(path, images, labels={"train": labels})
    assert load_damaged(path.read_bytes() + b"\0junk" * 100, tmp_path / "long.h5", want) == \
        "unaffected"


def test_a_file_edited_behind_the_digest_is_refused(tmp_path):
    """A valid HDF5 file whose pixels were changed with h5py (checksums recomputed) no longer
    matches the content digest stored in it."""
    images, _ = small_set(False)
    path = tmp_path / "set.h5"
    write_dataset(path, images)
    with h5py.File(path, "a") as f:
        f["train/images"][0, 0] ^= 1
    with pytest.raises(CorruptFileError, match=f"{path}: the pixels, labels and shape read do "
                                               "not match the content_digest"):
        load_dataset(path)


@pytest.mark.slow
def test_byte_flip_sweep_of_the_embedded_file(tmp_path):
    """The shipped 2.5 MB file: the middle of every chunk and some metadata (about 35 loads of
    0.2 s each)."""
    embedded = tmp_path / "fashion_mnist.h5"
    with resources.as_file(resources.files("dvae_cupy.embedded")
                                / "fashion_mnist.h5") as source:
        shutil.copyfile(source, embedded)
    want = load_dataset(embedded)
    offsets = sweep_offsets(embedded, n_spread=20)
    middles = {start + size // 2: f"data {name}" for name, start, size in chunk_spans(embedded)}
    other = {k: v for k, v in offsets.items() if not v.startswith("data")}
    other = dict(sorted(other.items())[::4])
    counts, failures = flip_sweep(embedded, want, {**middles, **other}, flips=(0x01,))
    print(f"\nembedded: {dict(counts)}")
    assert not failures, failures
    assert sum(counts.values()) >= 30


# ------------------------------------------------------------------------------------------------
# The content digest

def test_content_digest_changes_with_any_pixel_or_label():
    images, labels = small_set(True)
    base = make_splits(images, labels={"train": labels})
    digest = base.content_digest()
    for split in data.SPLIT_NAMES:
        pixels = base.split(split).copy()
        pixels[-1, -1] ^= 1
        changed = replace(base, **{split: pixels})
        assert changed.content_digest() != digest
        relabelled = {**base.labels, split: base.labels[split].copy()}
        relabelled[split][0] += 1
        assert replace(base, labels=relabelled).content_digest() != digest
    assert replace(base, labels=None).content_digest() != digest
    assert replace(base, image_shape=(8, 32)).content_digest() != digest
    assert replace(base, image_shape=None).content_digest() != digest
    assert replace(base, name="other").content_digest() == digest


def test_content_digest_tells_binarisations_apart(tmp_path):
    images, _ = small_set(False)
    np.save(tmp_path / "grey.npy", images)
    fixed = load_dataset(tmp_path / "grey.npy", "fixed")
    dynamic = load_dataset(tmp_path / "grey.npy", "dynamic")
    assert fixed.content_digest() != dynamic.content_digest()
    # binarised grey levels that happen to be 0/1 still differ from binary data
    ones = replace(dynamic, binarized=False,
                        **{s: fixed.split(s) for s in data.SPLIT_NAMES})
    assert ones.content_digest() != fixed.content_digest()


def test_content_digest_ignores_the_path_and_file_kind(tmp_path, monkeypatch):
    images, labels = small_set(True)
    monkeypatch.chdir(tmp_path)
    written = write_dataset("x.h5", images, labels={"train": labels})
    np.savez("x.npz", train=images, labels_train=labels)
    os.mkdir("sub")
    shutil.copyfile("x.h5", "sub/renamed.h5")
    digests = {str(path): load_dataset(path).content_digest()
               for path in ("x.h5", "./x.h5", tmp_path / "x.h5", "sub/../x.h5",
                            "sub/renamed.h5", "x.npz")}
    assert set(digests.values()) == {written.content_digest()}, digests
    np.save("x.npy", images)
    assert load_dataset("x.npy").content_digest() == make_splits(images).content_digest()


def test_a_file_replaced_under_the_same_name_has_another_digest(tmp_path):
    images, labels = small_set(True)
    path = tmp_path / "x.h5"
    before = write_dataset(path, images, labels={"train": labels}).content_digest()
    images[3, 4, 5] ^= 1
    write_dataset(path, images, labels={"train": labels})
    assert load_dataset(path).content_digest() != before
