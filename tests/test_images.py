"""dvae_cupy.images: PNGs decoded here from the format description (chunks, CRCs, filter 0) to
the pixels written, grid placement, and errors that name the bad argument."""
import os
import struct
import zlib

import numpy as np
import pytest

from dvae_cupy.images import image_grid, reconstruction_grid, write_png


def read_png_grey(path):
    """Decode an 8-bit greyscale, non-interlaced PNG whose scanlines all use filter type 0."""
    raw = open(path, "rb").read()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(raw):
        (length,) = struct.unpack(">I", raw[pos:pos + 4])
        kind, data = raw[pos + 4:pos + 8], raw[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", raw[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF, f"bad CRC in {kind}"
        chunks.append((kind, data))
        pos += 12 + length
    assert pos == len(raw)
    kinds = [kind for kind, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    width, height, depth, colour, compression, filtering, interlace = \
        struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, compression, filtering, interlace) == (8, 0, 0, 0, 0)
    stream = zlib.decompress(b"".join(data for kind, data in chunks if kind == b"IDAT"))
    assert len(stream) == height * (width + 1)
    lines = np.frombuffer(stream, np.uint8).reshape(height, width + 1)
    assert (lines[:, 0] == 0).all(), "only filter type 0 is undone here"
    return lines[:, 1:].copy()


# ------------------------------------------------------------------------------------------------
# PNG

@pytest.mark.parametrize("shape", [(28, 28), (1, 1), (3, 17), (61, 2)])
def test_uint8_png_round_trip(tmp_path, shape):
    pixels = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    write_png(tmp_path / "a.png", pixels)
    np.testing.assert_array_equal(read_png_grey(tmp_path / "a.png"), pixels)
    assert os.listdir(tmp_path) == ["a.png"]


def test_float_png_maps_unit_interval_to_0_255(tmp_path):
    image = np.array([[0.0, 1.0, 0.5], [0.2, 1 / 255, 0.999]], np.float32)
    write_png(tmp_path / "f.png", image)
    np.testing.assert_array_equal(read_png_grey(tmp_path / "f.png"),
                                  [[0, 255, 128], [51, 1, 255]])


def test_png_overwrite_replaces_the_file(tmp_path):
    path = tmp_path / "a.png"
    write_png(path, np.zeros((4, 4), np.uint8))
    write_png(path, np.full((2, 3), 7, np.uint8))
    np.testing.assert_array_equal(read_png_grey(path), np.full((2, 3), 7))


@pytest.mark.parametrize("image, match", [
    (np.zeros((2, 2, 3), np.uint8), "image must be 2-D"),
    (np.zeros((0, 5), np.uint8), "image must be 2-D"),
    (np.array([[0.5, 1.5]]), r"image has values outside \[0, 1\]"),
    (np.array([[-0.1, 0.5]]), r"image has values outside \[0, 1\]"),
    (np.array([[np.nan, 0.5]]), "image has non-finite"),
    (np.array([[np.inf, 0.5]]), "image has non-finite"),
    (np.array([[1, 2]], np.int64), "image must be float"),
])
def test_png_bad_image(tmp_path, image, match):
    with pytest.raises(ValueError, match=match):
        write_png(tmp_path / "x.png", image)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------------
# Grids

def distinct_images(n, h, w):
    """n images, each a constant (i + 1) / (n + 1): every tile distinct from the others and
    from the padding (1.0)."""
    return np.repeat((np.arange(n) + 1.0) / (n + 1), h * w).reshape(n, h, w)


def test_grid_shape_and_placement():
    images = distinct_images(7, 3, 4)
    grid = image_grid(images, columns=3, pad=2, pad_value=1.0)
    assert grid.shape == (2 + 3 * (3 + 2), 2 + 3 * (4 + 2))
    for i in range(7):
        top, left = 2 + (i // 3) * 5, 2 + (i % 3) * 6
        np.testing.assert_array_equal(grid[top:top + 3, left:left + 4], images[i])
    mask = np.ones(grid.shape, bool)             # everything else is padding
    for i in range(7):
        top, left = 2 + (i // 3) * 5, 2 + (i % 3) * 6
        mask[top:top + 3, left:left + 4] = False
    assert (grid[mask] == 1.0).all()
    assert mask.sum() == grid.size - 7 * 3 * 4


def test_grid_without_padding_and_with_more_columns_than_images():
    images = distinct_images(2, 2, 2)
    grid = image_grid(images, columns=5, pad=0, pad_value=0.0)
    np.testing.assert_array_equal(grid, np.hstack(list(images)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(images=np.zeros((4, 4))), r"images must be \(n, h, w\)"),
    (dict(images=np.zeros((0, 4, 4))), r"images must be \(n, h, w\)"),
    (dict(images=np.full((1, 2, 2), 2.0)), r"images has values outside \[0, 1\]"),
    (dict(images=np.full((1, 2, 2), np.nan)), "images has non-finite"),
    (dict(columns=0), "columns must be an integer >= 1"),
    (dict(pad=-1), "pad must be an integer >= 0"),
    (dict(pad_value=1.5), r"pad_value must be in \[0, 1\]"),
])
def test_grid_bad_input(kwargs, match):
    args = dict(images=np.zeros((3, 2, 2)), columns=2) | kwargs
    with pytest.raises(ValueError, match=match):
        image_grid(**args)


def test_reconstruction_grid_interleaves_rows():
    n, columns = 7, 3
    originals = distinct_images(n, 28, 28).reshape(n, 784) * 0.5           # all < 0.5
    reconstructions = originals + 0.5                                       # all >= 0.5
    grid = reconstruction_grid(originals, reconstructions, columns=columns)
    pairs = -(-n // columns)
    assert grid.shape == (1 + 2 * pairs * 29, 1 + columns * 29)
    for i in range(n):
        top, left = 1 + 2 * (i // columns) * 29, 1 + (i % columns) * 29
        np.testing.assert_array_equal(grid[top:top + 28, left:left + 28],
                                      originals[i].reshape(28, 28))
        np.testing.assert_array_equal(grid[top + 29:top + 57, left:left + 28],
                                      reconstructions[i].reshape(28, 28))
    # the short last pair: slots 7 and 8 are blank in both its rows
    for slot in (1, 2):
        left = 1 + slot * 29
        assert (grid[1 + 4 * 29:, left:left + 28] == 1.0).all()


def test_reconstruction_grid_default_columns():
    x = np.zeros((25, 784))
    assert reconstruction_grid(x, x).shape == (1 + 6 * 29, 1 + 10 * 29)


@pytest.mark.parametrize("originals, reconstructions, match", [
    (np.zeros((2, 783)), np.zeros((2, 784)), r"originals must be \(n, 784\)"),
    (np.zeros((2, 784)), np.zeros((2, 28, 28)), r"reconstructions must be \(n, 784\)"),
    (np.zeros((2, 784)), np.zeros((3, 784)), "must have the same shape"),
    (np.full((1, 784), -0.5), np.zeros((1, 784)), r"originals has values outside \[0, 1\]"),
    (np.zeros((1, 784)), np.full((1, 784), np.inf), "reconstructions has non-finite"),
    (np.zeros((1, 784), np.uint8), np.zeros((1, 784)), "originals must be float"),
])
def test_reconstruction_grid_bad_input(originals, reconstructions, match):
    with pytest.raises(ValueError, match=match):
        reconstruction_grid(originals, reconstructions)
