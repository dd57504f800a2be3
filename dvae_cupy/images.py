"""The pictures of a run, written as PNG with Pillow: image grids (samples, reconstructions),
the loss curves of the epochs so far, and a heat map of a matrix (pairwise potentials).

Pixel values are floats in [0, 1] (0 black, 1 white), the range of pixel probabilities, or
uint8. Images arrive as the data sets store them, one flattened row-major image per row, with
the data set's image shape (H, W) beside them; a data set with no image shape (only a pixel
count D) is drawn as 1 x D strips, one image per strip, stacked into one column by default, so
a grid of them reads as the data matrix itself. The trainer first tries a square
(picture_shape: flattened 784-pixel data are 28 x 28 images far more often than not). Every
file is written atomically.
"""
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .atomic import atomic_path

WHITE, BLACK, GRID_GREY = (255, 255, 255), (0, 0, 0), (225, 225, 225)


# ------------------------------------------------------------------------------------------------
# PNG

def write_png(path, image):
    """Write `image` as an 8-bit greyscale PNG, atomically (a temporary file, then os.replace).

    image: uint8 (H, W), or float (H, W) in [0, 1], mapped to 0..255 by rounding x * 255.
    """
    _save_png(path, Image.fromarray(_png_pixels(image)))


def _save_png(path, picture):
    """Save a Pillow image as PNG at `path` through a temporary file beside it."""
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")    # the temporary name has no .png to go by


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

def image_grid(images, *, image_shape, columns=None, pad=1, pad_value=1.0):
    """Tile flattened images, row by row, into one (H, W) float64 picture for write_png.

    images: (n, D) floats in [0, 1], n >= 1, one row-major image per row.
    image_shape: (h, w) with h * w == D, or None when the data have no image shape: each image
        is then a 1 x D strip.
    columns: tiles per row; None means 10 for images and 1 for strips. min(columns, n) are used.
    `pad` pixels of `pad_value` go between tiles and around the border; empty slots of the last
    row are `pad_value` too. Tile i sits at row pad + (i // columns) * (h + pad), column
    pad + (i % columns) * (w + pad).
    """
    images = _check_flat_images(images, "images")
    tile = tile_shape(images.shape[1], image_shape)
    columns = _default_columns(columns, image_shape)
    _check_grid_options(columns, pad, pad_value)
    return _tile(images.reshape(-1, *tile), columns, pad, pad_value)


def reconstruction_grid(originals, reconstructions, *, image_shape, columns=None, pad=1,
                        pad_value=1.0):
    """A grid of a row of originals, then the row of their reconstructions below it, and so on.

    originals, reconstructions: (n, D) floats in [0, 1], row i of one matching row i of the
    other; image_shape, columns, pad, pad_value as for image_grid (with strips and the default
    single column, the rows alternate original, reconstruction). The last pair of rows may be
    short; its empty slots are `pad_value`.
    """
    originals = _check_flat_images(originals, "originals")
    reconstructions = _check_flat_images(reconstructions, "reconstructions")
    if originals.shape != reconstructions.shape:
        raise ValueError(f"originals {originals.shape} and reconstructions "
                         f"{reconstructions.shape} must have the same shape")
    tile = tile_shape(originals.shape[1], image_shape)
    columns = _default_columns(columns, image_shape)
    _check_grid_options(columns, pad, pad_value)
    n = len(originals)
    columns = min(columns, n)
    blank = np.full(tile, float(pad_value))
    tiles = []
    for start in range(0, n, columns):
        for source in (originals, reconstructions):
            row = list(source[start:start + columns].reshape(-1, *tile))
            tiles += row + [blank] * (columns - len(row))
    return _tile(np.stack(tiles), columns, pad, pad_value)


def picture_shape(pixels, image_shape):
    """The (h, w) to draw images of `pixels` values as: their image_shape, else a square when
    `pixels` is one (784 -> 28 x 28: flattened (n, D) data most often are square images), else
    None (1 x D strips)."""
    if image_shape is not None:
        return image_shape
    side = math.isqrt(pixels)
    return (side, side) if side * side == pixels else None


def tile_shape(pixels, image_shape):
    """The (h, w) each image of `pixels` values is drawn as: `image_shape` checked against the
    pixel count, or (1, pixels) when image_shape is None."""
    if image_shape is None:
        return (1, pixels)
    try:
        h, w = image_shape
    except (TypeError, ValueError):
        h = w = None
    for v in (h, w):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"image_shape must be None or two integers (h, w) >= 1; "
                             f"got {image_shape!r}")
    h, w = int(h), int(w)
    if h * w != pixels:
        raise ValueError(f"image_shape {(h, w)} has {h * w} pixels but the images have "
                         f"{pixels} each")
    return (h, w)


def _default_columns(columns, image_shape):
    if columns is not None:
        return columns
    return 1 if image_shape is None else 10


def _tile(tiles, columns, pad, pad_value):
    """Tiles (n, h, w) placed row by row as image_grid describes."""
    n, h, w = tiles.shape
    columns = min(columns, n)
    rows = -(-n // columns)
    grid = np.full((pad + rows * (h + pad), pad + columns * (w + pad)), float(pad_value))
    for i, tile in enumerate(tiles):
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


def _check_flat_images(images, name):
    """(n, D) floats in [0, 1] with n, D >= 1, or ValueError naming the argument."""
    images = np.asarray(images)
    if images.ndim != 2 or 0 in images.shape:
        raise ValueError(f"{name} must be (n, D) flattened images with n, D >= 1; "
                         f"got shape {images.shape}")
    _check_unit_floats(images, name)
    return images


# ------------------------------------------------------------------------------------------------
# Loss curves

CURVES_SIZE = (640, 400)                   # width, height in pixels
CURVES_MARGINS = (72, 40, 24, 48)          # left, top, right, bottom: the plot area is inside
CURVE_SERIES = (                           # metrics key, legend label, colour (tab10)
    ("train_loss", "train", (31, 119, 180)),
    ("valid_loss", "valid", (255, 127, 14)),
    ("test_loss", "test", (44, 160, 44)),
)
CURVE_WIDTH, MARKER_HALF = 2, 2            # line width; markers are (2 * half + 1) px squares


def write_loss_curves(path, metrics, size=CURVES_SIZE):
    """Plot train/valid/test loss against epoch and write it as an RGB PNG of `size` pixels.

    metrics: the per-epoch records, dicts with "epoch" (an integer, increasing from record to
    record) and any of "train_loss", "valid_loss", "test_loss"; a missing or None loss leaves a
    gap (consecutive points are joined, each point has a square marker). At least one loss.
    Layout: the plot area is the image less CURVES_MARGINS; its x axis runs from the first
    epoch at its left edge to the last at its right (one epoch: that epoch in the middle); its
    y axis from lo at the bottom to hi at the top, the smallest and largest loss rounded out to
    a multiple of the tick step, a 1-2-5 number giving about 5 steps. Ticks and labels on both
    axes, light grid lines at the loss ticks, the legend above the plot area.
    """
    series = _curve_series(metrics)
    width, height = _check_size(size, "size", minimum=(200, 150))
    frame = _CurveFrame(series, width, height)
    picture = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    frame.draw_axes(draw, font)
    for label, colour, points in series:
        pixels = [None if y is None else frame.pixel(x, y) for x, y in points]
        for a, b in zip(pixels, pixels[1:]):
            if a is not None and b is not None:
                draw.line([a, b], fill=colour, width=CURVE_WIDTH)
        for p in pixels:
            if p is not None:
                draw.rectangle([p[0] - MARKER_HALF, p[1] - MARKER_HALF,
                                p[0] + MARKER_HALF, p[1] + MARKER_HALF], fill=colour)
    _draw_legend(draw, font, [(label, colour) for label, colour, _ in series], frame)
    _save_png(path, picture)


def _curve_series(metrics):
    """[(label, colour, [(epoch, loss or None), ...])] for each loss with at least one value."""
    if not isinstance(metrics, (list, tuple)) or len(metrics) == 0:
        raise ValueError(f"metrics must be a non-empty list of per-epoch dicts; got {metrics!r}")
    epochs = []
    for i, record in enumerate(metrics):
        if not isinstance(record, dict) or "epoch" not in record:
            raise ValueError(f"metrics[{i}] must be a dict with an 'epoch'; got {record!r}")
        epoch = record["epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)):
            raise ValueError(f"metrics[{i}]['epoch'] must be an integer; got {epoch!r}")
        if epochs and epoch <= epochs[-1]:
            raise ValueError(f"metrics[{i}]['epoch'] = {epoch} does not follow "
                             f"{epochs[-1]}: epochs must increase")
        epochs.append(int(epoch))
    series = []
    for key, label, colour in CURVE_SERIES:
        values = []
        for i, record in enumerate(metrics):
            value = record.get(key)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                    raise ValueError(f"metrics[{i}]['{key}'] must be a number; got {value!r}")
                if not math.isfinite(value):
                    raise ValueError(f"metrics[{i}]['{key}'] is {value}, not a finite number")
                value = float(value)
            values.append(value)
        if any(v is not None for v in values):
            series.append((label, colour, list(zip(epochs, values))))
    if not series:
        keys = ", ".join(key for key, _, _ in CURVE_SERIES)
        raise ValueError(f"metrics hold no loss to plot (none of {keys})")
    return series


class _CurveFrame:
    """Where the plot area lies and how (epoch, loss) maps to a pixel in it."""

    def __init__(self, series, width, height):
        left, top, right, bottom = CURVES_MARGINS
        self.left, self.top = left, top
        self.right, self.bottom = width - 1 - right, height - 1 - bottom
        epochs = [x for _, _, points in series for x, _ in points]
        losses = [y for _, _, points in series for _, y in points if y is not None]
        first, last = min(epochs), max(epochs)
        self.x_lo, self.x_hi = (first, last) if last > first else (first - 1, first + 1)
        self.x_ticks = _integer_ticks(self.x_lo, self.x_hi)
        spread = max(losses) - min(losses)
        # one value: steps sized by the value itself, so the axis still reads sensibly
        self.y_step = _nice_step(spread if spread > 0 else abs(losses[0]) or 1.0)
        self.y_lo = math.floor(min(losses) / self.y_step) * self.y_step
        self.y_hi = math.ceil(max(losses) / self.y_step) * self.y_step
        if self.y_hi == self.y_lo:
            self.y_lo, self.y_hi = self.y_lo - self.y_step, self.y_hi + self.y_step
        count = round((self.y_hi - self.y_lo) / self.y_step)
        self.y_ticks = [self.y_lo + k * self.y_step for k in range(count + 1)]

    def pixel(self, x, y):
        """The pixel (column, row) of epoch x, loss y."""
        column = self.left + (x - self.x_lo) / (self.x_hi - self.x_lo) * (self.right - self.left)
        row = self.bottom - (y - self.y_lo) / (self.y_hi - self.y_lo) * (self.bottom - self.top)
        return (round(column), round(row))

    def draw_axes(self, draw, font):
        decimals = max(0, -math.floor(math.log10(self.y_step)))
        for value in self.y_ticks:
            _, row = self.pixel(self.x_lo, value)
            draw.line([(self.left, row), (self.right, row)], fill=GRID_GREY)
            draw.line([(self.left - 5, row), (self.left, row)], fill=BLACK)
            draw.text((self.left - 8, row), f"{value:.{decimals}f}", fill=BLACK, font=font,
                      anchor="rm")
        for epoch in self.x_ticks:
            column, _ = self.pixel(epoch, self.y_lo)
            draw.line([(column, self.bottom), (column, self.bottom + 5)], fill=BLACK)
            draw.text((column, self.bottom + 8), str(epoch), fill=BLACK, font=font, anchor="mt")
        draw.rectangle([self.left, self.top, self.right, self.bottom], outline=BLACK)
        draw.text(((self.left + self.right) // 2, self.bottom + 26), "epoch", fill=BLACK,
                  font=font, anchor="mt")
        draw.text((self.left - 8, self.top - 12), "loss", fill=BLACK, font=font, anchor="rb")


def _draw_legend(draw, font, entries, frame):
    """A line sample and the label of each series, in a row above the plot area's right end."""
    x, row = frame.right, frame.top - 14
    for label, colour in reversed(entries):
        x -= draw.textlength(label, font=font)
        draw.text((x, row), label, fill=BLACK, font=font, anchor="lm")
        x -= 24
        draw.line([(x, row), (x + 18, row)], fill=colour, width=CURVE_WIDTH)
        x -= 16


def _nice_step(span, steps=5):
    """The 1-2-5 number (…, 0.5, 1, 2, 5, 10, …) nearest above span / steps."""
    raw = span / steps
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw * (1 - 1e-9):
            return factor * power
    return 10 * power


def _integer_ticks(lo, hi, steps=8):
    """Integer ticks from lo to hi at a 1-2-5 step of at least 1, about `steps` of them."""
    step = max(1, round(_nice_step(hi - lo, steps)))
    return list(range(-(-lo // step) * step, hi + 1, step))


# ------------------------------------------------------------------------------------------------
# Heat map

NEGATIVE_COLOUR = (33, 102, 172)           # the diverging map: -limit blue, 0 near-white,
ZERO_COLOUR = (247, 247, 247)              # +limit red, linear in between (ColorBrewer RdBu)
POSITIVE_COLOUR = (178, 24, 43)
HEATMAP_LEFT, HEATMAP_TOP = 40, 44         # the matrix's top-left cell starts here
HEATMAP_EXTRA = (170, 76)                  # the image is n * cell + these, wide and high
BAR_GAP, BAR_WIDTH = 16, 16                # the colour bar, right of the matrix


def write_heatmap(path, matrix, title=None, upper_only=True, cell=None):
    """Draw an n x n matrix as a heat map, with a colour bar and a min/max caption, and write
    it as an RGB PNG of (n * cell + 170) x (n * cell + 76) pixels.

    matrix: (n, n) real numbers; with upper_only (pairwise potentials, one per pair i < j) only
    the cells above the diagonal are drawn and read, the rest stays white (and may hold
    anything, e.g. NaN); otherwise every cell. The drawn cells must be finite.
    Colours: a diverging map symmetric about 0, v -> NEGATIVE_COLOUR at -limit, ZERO_COLOUR at
    0, POSITIVE_COLOUR at +limit, linear in between, limit = max |v| of the drawn cells (1 if
    all are 0); cell (i, j) is the cell x cell square at column HEATMAP_LEFT + j * cell, row
    HEATMAP_TOP + i * cell. The colour bar runs from +limit (top) to -limit (bottom), labelled
    at both ends and at 0; the caption under the matrix gives the drawn cells' min and max.
    cell: pixels per cell; None means max(4, min(32, 384 // n)). title: text above, optional.
    """
    matrix, drawn = _check_heatmap_matrix(matrix, upper_only)
    n = len(matrix)
    if cell is None:
        cell = max(4, min(32, 384 // n))
    if isinstance(cell, bool) or not isinstance(cell, (int, np.integer)) or cell < 1:
        raise ValueError(f"cell must be an integer >= 1 (pixels); got {cell!r}")
    values = matrix[drawn]
    limit = float(np.abs(values).max()) or 1.0
    side = n * cell
    picture = np.full((side + HEATMAP_EXTRA[1], side + HEATMAP_EXTRA[0], 3), 255, np.uint8)
    colours = diverging_colours(np.where(drawn, matrix, 0.0), limit)
    colours[~drawn] = WHITE
    block = np.repeat(np.repeat(colours, cell, axis=0), cell, axis=1)
    picture[HEATMAP_TOP:HEATMAP_TOP + side, HEATMAP_LEFT:HEATMAP_LEFT + side] = block
    bar_left = HEATMAP_LEFT + side + BAR_GAP
    ramp = np.linspace(limit, -limit, side)[:, None].repeat(BAR_WIDTH, axis=1)
    picture[HEATMAP_TOP:HEATMAP_TOP + side, bar_left:bar_left + BAR_WIDTH] = \
        diverging_colours(ramp, limit)
    image = Image.fromarray(picture)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    _draw_heatmap_labels(draw, font, n, cell, limit, bar_left)
    caption = f"min {values.min():.4g}   max {values.max():.4g}"
    draw.text((HEATMAP_LEFT, HEATMAP_TOP + side + 10), caption, fill=BLACK, font=font)
    if title:
        draw.text((HEATMAP_LEFT, 6), str(title), fill=BLACK, font=font)
    _save_png(path, image)


def diverging_colours(values, limit):
    """uint8 RGB (..., 3) of `values` on the heat map's colour map (see write_heatmap)."""
    t = np.clip(np.asarray(values, np.float64) / limit, -1.0, 1.0)[..., None]
    zero, neg, pos = (np.array(c, np.float64) for c in (ZERO_COLOUR, NEGATIVE_COLOUR,
                                                         POSITIVE_COLOUR))
    rgb = np.where(t >= 0, zero + t * (pos - zero), zero - t * (neg - zero))
    return np.rint(rgb).astype(np.uint8)


def _check_heatmap_matrix(matrix, upper_only):
    """(matrix as float64, mask of the drawn cells), or ValueError naming `matrix`."""
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be square (n, n); got shape {matrix.shape}")
    if matrix.dtype.kind not in "biuf":
        raise ValueError(f"matrix must hold real numbers; got dtype {matrix.dtype}")
    n = len(matrix)
    if n < (2 if upper_only else 1):
        raise ValueError(f"matrix must be at least {2 if upper_only else 1} x "
                         f"{2 if upper_only else 1}{' with upper_only' if upper_only else ''}; "
                         f"got shape {matrix.shape}")
    matrix = matrix.astype(np.float64)
    drawn = np.triu(np.ones((n, n), bool), 1) if upper_only else np.ones((n, n), bool)
    if not np.isfinite(matrix[drawn]).all():
        raise ValueError("matrix has non-finite values (NaN or inf) in the cells drawn")
    return matrix, drawn


def _draw_heatmap_labels(draw, font, n, cell, limit, bar_left):
    """Index labels along the top and left (every k-th, k from 1-2-5 so they do not crowd),
    and the colour bar's labels: +limit, 0, -limit."""
    every = next(k for k in (1, 2, 5, 10, 20, 50, 100, 200, 500, 10 ** 9) if k * cell >= 16)
    for index in range(0, n, every):
        centre = index * cell + cell // 2
        draw.text((HEATMAP_LEFT + centre, HEATMAP_TOP - 4), str(index), fill=BLACK,
                  font=font, anchor="mb")
        draw.text((HEATMAP_LEFT - 4, HEATMAP_TOP + centre), str(index), fill=BLACK,
                  font=font, anchor="rm")
    side = n * cell
    x = bar_left + BAR_WIDTH + 4
    draw.text((x, HEATMAP_TOP), f"{limit:+.3g}", fill=BLACK, font=font, anchor="lt")
    draw.text((x, HEATMAP_TOP + side // 2), "0", fill=BLACK, font=font, anchor="lm")
    draw.text((x, HEATMAP_TOP + side), f"{-limit:+.3g}", fill=BLACK, font=font, anchor="lb")


def _check_size(size, name, minimum):
    """(width, height) integers at least `minimum`, or ValueError naming the argument."""
    try:
        width, height = size
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (width, height); got {size!r}") from None
    for v, low in zip((width, height), minimum):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"{name} must be integers (width, height) >= {minimum}; "
                             f"got {size!r}")
    return int(width), int(height)
