"""Greyscale PNG writing and image grids, with nothing but NumPy, zlib and struct.

Enough PNG for looking at samples and reconstructions: 8-bit greyscale, no interlace, every
scanline filter type 0 (None); zlib does the compressing. Grid values are floats in [0, 1]
(0 black, 1 white), the range of pixel probabilities.
"""
import struct
import zlib

import numpy as np

from .atomic import atomic_path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_SHAPE = (28, 28)


# ------------------------------------------------------------------------------------------------
# PNG

def write_png(path, image):
    """Write `image` as an 8-bit greyscale PNG, atomically (a temporary file, then os.replace).

    image: uint8 (H, W), or float (H, W) in [0, 1], mapped to 0..255 by rounding x * 255.
    """
    pixels = _png_pixels(image)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(png_bytes(pixels))


def png_bytes(pixels):
    """The PNG file of uint8 (H, W) `pixels`: signature, IHDR, IDAT, IEND."""
    height, width = pixels.shape
    # width, height, bit depth 8, colour type 0 (grey), compression 0, filter 0, no interlace
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    # each scanline is preceded by its filter type byte, 0 = None
    scanlines = np.hstack([np.zeros((height, 1), np.uint8), pixels]).tobytes()
    return (PNG_SIGNATURE + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(scanlines, 9)) + _chunk(b"IEND", b""))


def _chunk(kind, data):
    """length, type, data, then the CRC-32 of type and data."""
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png_pixels(image):
    """uint8 (H, W) from a uint8 or [0, 1] float image."""
    image = np.asarray(image)
    if image.ndim != 2 or 0 in image.shape:
        raise ValueError(f"image must be 2-D (H, W) and non-empty; got shape {image.shape}")
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    _check_unit_floats(image, "image")
    return np.rint(image * 255.0).astype(np.uint8)


def _check_unit_floats(array, name):
    """Fail, naming the argument, unless `array` is float with finite values in [0, 1]."""
    if array.dtype.kind != "f":
        raise ValueError(f"{name} must be float in [0, 1]; got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has non-finite values (NaN or inf)")
    if array.size and (array.min() < 0 or array.max() > 1):
        raise ValueError(f"{name} has values outside [0, 1] "
                         f"(min {array.min()}, max {array.max()})")


# ------------------------------------------------------------------------------------------------
# Grids

def image_grid(images, columns, pad=1, pad_value=1.0):
    """Tile images (n, h, w), floats in [0, 1], row by row into one (H, W) float64 image.

    min(columns, n) tiles per row, as many rows as needed; `pad` pixels of `pad_value` between
    tiles and around the border; empty slots of the last row are `pad_value` too.
    Tile i sits at row pad + (i // columns) * (h + pad), column pad + (i % columns) * (w + pad).
    """
    images = np.asarray(images)
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"images must be (n, h, w) with n >= 1; got shape {images.shape}")
    _check_unit_floats(images, "images")
    _check_grid_options(columns, pad, pad_value)
    n, h, w = images.shape
    columns = min(columns, n)
    rows = -(-n // columns)
    grid = np.full((pad + rows * (h + pad), pad + columns * (w + pad)), float(pad_value))
    for i, tile in enumerate(images):
        top = pad + (i // columns) * (h + pad)
        left = pad + (i % columns) * (w + pad)
        grid[top:top + h, left:left + w] = tile
    return grid


def _check_grid_options(columns, pad, pad_value):
    """columns >= 1 and pad >= 0 integers, pad_value a number in [0, 1]."""
    if isinstance(columns, bool) or not isinstance(columns, (int, np.integer)) or columns < 1:
        raise ValueError(f"columns must be an integer >= 1; got {columns!r}")
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"pad must be an integer >= 0; got {pad!r}")
    if not 0.0 <= pad_value <= 1.0:      # also refuses NaN
        raise ValueError(f"pad_value must be in [0, 1]; got {pad_value!r}")


def reconstruction_grid(originals, reconstructions, columns=10, pad=1, pad_value=1.0):
    """A grid of 28x28 images: a row of originals, then the row of their reconstructions below
    it, and so on. originals, reconstructions: (n, 784) floats in [0, 1], row i of one matching
    row i of the other. The last pair of rows may be short; its empty slots are `pad_value`.
    """
    originals = _check_flat_images(originals, "originals")
    reconstructions = _check_flat_images(reconstructions, "reconstructions")
    if originals.shape != reconstructions.shape:
        raise ValueError(f"originals {originals.shape} and reconstructions "
                         f"{reconstructions.shape} must have the same shape")
    _check_grid_options(columns, pad, pad_value)
    n = len(originals)
    columns = min(columns, n)
    blank = np.full(IMAGE_SHAPE, float(pad_value))
    tiles = []
    for start in range(0, n, columns):
        for source in (originals, reconstructions):
            row = list(source[start:start + columns].reshape(-1, *IMAGE_SHAPE))
            tiles += row + [blank] * (columns - len(row))
    return image_grid(np.stack(tiles), columns, pad, pad_value)


def _check_flat_images(images, name):
    """(n, 784) floats in [0, 1] with n >= 1, or ValueError naming the argument."""
    images = np.asarray(images)
    size = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
    if images.ndim != 2 or images.shape[1] != size or len(images) == 0:
        raise ValueError(f"{name} must be (n, {size}) with n >= 1; got shape {images.shape}")
    _check_unit_floats(images, name)
    return images
