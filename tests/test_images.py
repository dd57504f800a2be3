"""dvae_cupy.images: PNGs read back with Pillow and compared pixel for pixel, grid placement
for several image shapes and for shapeless data (strips), the loss curves' points and gaps
where the documented layout puts them, the heat map's cells in the documented colours, and
errors that name the bad argument."""
import os

import numpy as np
import pytest
from PIL import Image

from dvae_cupy import images
from dvae_cupy.images import (CURVE_SERIES, CURVES_MARGINS, HEATMAP_LEFT, HEATMAP_TOP,
                              NEGATIVE_COLOUR, POSITIVE_COLOUR, ZERO_COLOUR, image_grid,
                              reconstruction_grid, write_heatmap, write_loss_curves, write_png)

SHAPES = [(16, 16), (20, 12), (28, 28)]
TRAIN, VALID, TEST = (colour for _, _, colour in CURVE_SERIES)


def read_png(path, mode):
    """The pixels of a PNG, after checking it is one and of the expected mode."""
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.mode == mode
        return np.asarray(picture).copy()


# ------------------------------------------------------------------------------------------------
# PNG

@pytest.mark.parametrize("shape", [(28, 28), (1, 1), (3, 17), (61, 2)])
def test_uint8_png_round_trip(tmp_path, shape):
    pixels = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    write_png(tmp_path / "a.png", pixels)
    np.testing.assert_array_equal(read_png(tmp_path / "a.png", "L"), pixels)
    assert os.listdir(tmp_path) == ["a.png"]


def test_float_png_maps_unit_interval_to_0_255(tmp_path):
    image = np.array([[0.0, 1.0, 0.5], [0.2, 1 / 255, 0.999]], np.float32)
    write_png(tmp_path / "f.png", image)
    np.testing.assert_array_equal(read_png(tmp_path / "f.png", "L"),
                                  [[0, 255, 128], [51, 1, 255]])


def test_png_overwrite_replaces_the_file(tmp_path):
    path = tmp_path / "a.png"
    write_png(path, np.zeros((4, 4), np.uint8))
    write_png(path, np.full((2, 3), 7, np.uint8))
    np.testing.assert_array_equal(read_png(path, "L"), np.full((2, 3), 7))


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    write_png(path, np.full((2, 2), 9, np.uint8))

    def save_half_then_fail(picture, fp, *args, **kwargs):
        open(fp, "wb").write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_png(path, np.zeros((5, 5), np.uint8))
    monkeypatch.undo()
    np.testing.assert_array_equal(read_png(path, "L"), np.full((2, 2), 9))
    assert os.listdir(tmp_path) == ["a.png"]


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

def distinct_images(n, h, w, seed=0):
    """n flattened images with values in [0, 0.9): never the padding value 1.0, and with no
    symmetry, so a wrong reshape (transposed, wrong width) changes where pixels land."""
    return np.random.default_rng(seed).uniform(0.0, 0.9, size=(n, h * w))


@pytest.mark.parametrize("shape", SHAPES)
def test_grid_places_each_image_in_its_tile(shape):
    h, w = shape
    flat = distinct_images(7, h, w)
    grid = image_grid(flat, image_shape=shape, columns=3, pad=2, pad_value=1.0)
    assert grid.shape == (2 + 3 * (h + 2), 2 + 3 * (w + 2))
    mask = np.ones(grid.shape, bool)             # everything but the tiles is padding
    for i in range(7):
        top, left = 2 + (i // 3) * (h + 2), 2 + (i % 3) * (w + 2)
        np.testing.assert_array_equal(grid[top:top + h, left:left + w], flat[i].reshape(h, w))
        mask[top:top + h, left:left + w] = False
    assert (grid[mask] == 1.0).all()
    assert mask.sum() == grid.size - 7 * h * w


@pytest.mark.parametrize("shape", SHAPES)
def test_grid_png_reads_back_pixel_for_pixel(tmp_path, shape):
    grid = image_grid(distinct_images(12, *shape), image_shape=shape)
    write_png(tmp_path / "g.png", grid)
    pixels = read_png(tmp_path / "g.png", "L")
    h, w = shape
    assert pixels.shape == (1 + 2 * (h + 1), 1 + 10 * (w + 1))   # default: 10 columns
    np.testing.assert_array_equal(pixels, np.rint(grid * 255).astype(np.uint8))


def test_grid_without_padding_and_with_more_columns_than_images():
    flat = distinct_images(2, 2, 3)
    grid = image_grid(flat, image_shape=(2, 3), columns=5, pad=0, pad_value=0.0)
    np.testing.assert_array_equal(grid, np.hstack([f.reshape(2, 3) for f in flat]))


def test_shapeless_images_are_strips_in_one_column():
    flat = distinct_images(4, 1, 10)
    grid = image_grid(flat, image_shape=None)
    assert grid.shape == (1 + 4 * 2, 1 + 10 + 1)
    np.testing.assert_array_equal(grid[1::2][:4, 1:11], flat)     # strip i on row 1 + 2 i
    assert (grid[0::2] == 1.0).all() and (grid[:, [0, 11]] == 1.0).all()
    wide = image_grid(flat, image_shape=None, columns=2, pad=0)
    np.testing.assert_array_equal(wide, np.vstack([np.hstack(flat[:2]), np.hstack(flat[2:])]))


@pytest.mark.parametrize("shape", SHAPES)
def test_reconstruction_grid_interleaves_rows(shape):
    h, w = shape
    n, columns = 7, 3
    originals = distinct_images(n, h, w) * 0.5                    # all < 0.45
    reconstructions = distinct_images(n, h, w, seed=1) * 0.5 + 0.5    # all in [0.5, 0.95)
    grid = reconstruction_grid(originals, reconstructions, image_shape=shape, columns=columns)
    pairs = -(-n // columns)
    assert grid.shape == (1 + 2 * pairs * (h + 1), 1 + columns * (w + 1))
    for i in range(n):
        top, left = 1 + 2 * (i // columns) * (h + 1), 1 + (i % columns) * (w + 1)
        np.testing.assert_array_equal(grid[top:top + h, left:left + w],
                                      originals[i].reshape(h, w))
        np.testing.assert_array_equal(grid[top + h + 1:top + 2 * h + 1, left:left + w],
                                      reconstructions[i].reshape(h, w))
    # the short last pair: slots 7 and 8 are blank in both its rows
    for slot in (1, 2):
        left = 1 + slot * (w + 1)
        assert (grid[1 + 4 * (h + 1):, left:left + w] == 1.0).all()


def test_reconstruction_grid_defaults():
    x = np.zeros((25, 784))
    assert reconstruction_grid(x, x, image_shape=(28, 28)).shape == (1 + 6 * 29, 1 + 10 * 29)
    strips = reconstruction_grid(x[:3], x[:3] + 0.5, image_shape=None)
    assert strips.shape == (1 + 6 * 2, 1 + 784 + 1)
    np.testing.assert_array_equal(strips[1:12:2, 1], [0, 0.5, 0, 0.5, 0, 0.5])


@pytest.mark.parametrize("kwargs, match", [
    (dict(images=np.zeros((4, 2, 2))), r"images must be \(n, D\)"),
    (dict(images=np.zeros((0, 4))), r"images must be \(n, D\)"),
    (dict(images=np.full((1, 4), 2.0)), r"images has values outside \[0, 1\]"),
    (dict(images=np.full((1, 4), np.nan)), "images has non-finite"),
    (dict(images=np.zeros((1, 4), np.uint8)), "images must be float"),
    (dict(image_shape=(3, 2)), r"image_shape \(3, 2\) has 6 pixels but the images have 4"),
    (dict(image_shape=(4,)), "image_shape must be None or two integers"),
    (dict(image_shape=(2.0, 2.0)), "image_shape must be None or two integers"),
    (dict(image_shape=(0, 4)), "image_shape must be None or two integers"),
    (dict(image_shape=(True, 4)), "image_shape must be None or two integers"),
    (dict(image_shape=4), "image_shape must be None or two integers"),
    (dict(columns=0), "columns must be an integer >= 1"),
    (dict(pad=-1), "pad must be an integer >= 0"),
    (dict(pad_value=1.5), r"pad_value must be in \[0, 1\]"),
])
def test_grid_bad_input(kwargs, match):
    args = dict(images=np.zeros((3, 4)), image_shape=(2, 2), columns=2) | kwargs
    with pytest.raises(ValueError, match=match):
        image_grid(**args)


def test_image_shape_is_required():
    with pytest.raises(TypeError, match="image_shape"):
        image_grid(np.zeros((3, 4)))


@pytest.mark.parametrize("originals, reconstructions, match", [
    (np.zeros((2, 783)), np.zeros((2, 783)), r"image_shape \(28, 28\) has 784 pixels but "
                                             r"the images have 783 each"),
    (np.zeros((2, 784)), np.zeros((2, 28, 28)), r"reconstructions must be \(n, D\)"),
    (np.zeros((2, 784)), np.zeros((3, 784)), "must have the same shape"),
    (np.full((1, 784), -0.5), np.zeros((1, 784)), r"originals has values outside \[0, 1\]"),
    (np.zeros((1, 784)), np.full((1, 784), np.inf), "reconstructions has non-finite"),
    (np.zeros((1, 784), np.uint8), np.zeros((1, 784)), "originals must be float"),
])
def test_reconstruction_grid_bad_input(originals, reconstructions, match):
    with pytest.raises(ValueError, match=match):
        reconstruction_grid(originals, reconstructions, image_shape=(28, 28))


# ------------------------------------------------------------------------------------------------
# Loss curves

LEFT, TOP = CURVES_MARGINS[0], CURVES_MARGINS[1]
RIGHT, BOTTOM = 640 - 1 - CURVES_MARGINS[2], 400 - 1 - CURVES_MARGINS[3]


def colour_mask(pixels, colour):
    return (pixels == np.array(colour, np.uint8)).all(axis=-1)


def epoch_column(epoch, first=1, last=5):
    return round(LEFT + (epoch - first) / (last - first) * (RIGHT - LEFT))


def test_curves_put_points_and_lines_where_the_layout_says(tmp_path):
    # 300 .. 200: spread 100, tick step 20, so the y axis is exactly 200 (bottom) .. 300 (top)
    metrics = [{"epoch": e, "train_loss": 300.0 - 25 * (e - 1)} for e in range(1, 6)]
    write_loss_curves(tmp_path / "c.png", metrics)
    pixels = read_png(tmp_path / "c.png", "RGB")
    assert pixels.shape == (400, 640, 3)
    train = colour_mask(pixels, TRAIN)
    for e in range(1, 6):
        column = epoch_column(e)
        row = round(TOP + (e - 1) / 4 * (BOTTOM - TOP))
        assert train[row - 2:row + 3, column - 2:column + 3].all(), f"marker of epoch {e}"
    # the line between epochs 2 and 3 passes through their midpoint
    mid_column = (epoch_column(2) + epoch_column(3)) // 2
    mid_row = round(TOP + 1.5 / 4 * (BOTTOM - TOP))
    assert train[mid_row - 1:mid_row + 2, mid_column - 1:mid_column + 2].any()
    # inside the plot area the train colour is only on the line: at most a few pixels a column
    area = train[TOP:BOTTOM + 1, LEFT + 3:RIGHT - 2]
    assert area.any(axis=0).all() and area.sum(axis=0).max() <= 6
    assert not colour_mask(pixels, VALID).any() and not colour_mask(pixels, TEST).any()
    # axes, tick labels, legend: dark pixels left of and below the plot area and above it
    dark = pixels.max(axis=-1) < 100
    assert dark[TOP:BOTTOM, LEFT].mean() > 0.9                     # the y axis line
    assert dark[BOTTOM, LEFT:RIGHT].mean() > 0.9                   # the x axis line
    assert dark[TOP:BOTTOM, :LEFT - 6].sum() > 50                  # loss tick labels
    assert dark[BOTTOM + 6:, LEFT:RIGHT].sum() > 50                # epoch labels, "epoch"
    assert train[:TOP].sum() > 10                                  # the legend's sample


def test_curves_with_missing_losses_leave_gaps(tmp_path):
    metrics = [{"epoch": e, "train_loss": 300.0 - 25 * (e - 1), "valid_loss": 330.0 - 25 * e}
               for e in range(1, 6)]
    del metrics[2]["valid_loss"]                                   # no valid loss at epoch 3
    metrics[4]["test_loss"] = 190.0                                # test loss at the end only
    write_loss_curves(tmp_path / "c.png", metrics)
    pixels = read_png(tmp_path / "c.png", "RGB")
    plot = (slice(TOP, BOTTOM + 1), slice(LEFT, RIGHT + 1))
    valid, test = colour_mask(pixels, VALID)[plot], colour_mask(pixels, TEST)[plot]
    columns_with = lambda mask: np.flatnonzero(mask.any(axis=0)) + LEFT
    # the valid curve: present from epoch 1 to 2 and 4 to 5, absent between 2 and 4
    valid_columns = columns_with(valid)
    assert valid_columns.min() <= epoch_column(1) + 2 and valid_columns.max() >= epoch_column(5) - 2
    gap = (valid_columns > epoch_column(2) + 2) & (valid_columns < epoch_column(4) - 2)
    assert not gap.any()
    # the test loss: one marker at epoch 5's column, and its legend entry above the plot
    test_columns = columns_with(test)
    assert len(test_columns) > 0 and (abs(test_columns - epoch_column(5)) <= 2).all()
    assert colour_mask(pixels, TEST)[:TOP].sum() > 10
    # the lowest point (test, 190) sits below every train pixel
    assert np.flatnonzero(test.any(axis=1)).min() > np.flatnonzero(
        colour_mask(pixels, TRAIN)[plot].any(axis=1)).max() - 3


def test_curves_of_one_epoch_and_a_custom_size(tmp_path):
    write_loss_curves(tmp_path / "c.png", [{"epoch": 1, "valid_loss": 223.47}], size=(300, 200))
    pixels = read_png(tmp_path / "c.png", "RGB")
    assert pixels.shape == (200, 300, 3)
    rows, columns = np.nonzero(colour_mask(pixels, VALID)[TOP:, :])
    centre = LEFT + (300 - 1 - CURVES_MARGINS[2] - LEFT) / 2     # one epoch: in the middle
    assert len(rows) > 0 and (abs(columns[rows > 5] - centre) <= 3).all()


@pytest.mark.parametrize("metrics, match", [
    ([], "metrics must be a non-empty list"),
    ({"epoch": 1}, "metrics must be a non-empty list"),
    ([{"train_loss": 1.0}], r"metrics\[0\] must be a dict with an 'epoch'"),
    ([{"epoch": 1.5, "train_loss": 1.0}], r"metrics\[0\]\['epoch'\] must be an integer"),
    ([{"epoch": 2, "train_loss": 1.0}, {"epoch": 2, "train_loss": 1.0}],
     r"metrics\[1\]\['epoch'\] = 2 does not follow 2"),
    ([{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "valid_loss": float("nan")}],
     r"metrics\[1\]\['valid_loss'\] is nan"),
    ([{"epoch": 1, "test_loss": "1.0"}], r"metrics\[0\]\['test_loss'\] must be a number"),
    ([{"epoch": 1, "seconds": 3.0}], "metrics hold no loss to plot"),
])
def test_curves_bad_metrics(tmp_path, metrics, match):
    with pytest.raises(ValueError, match=match):
        write_loss_curves(tmp_path / "c.png", metrics)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("size", [(100, 400), (640,), "big", (640.0, 400)])
def test_curves_bad_size(tmp_path, size):
    with pytest.raises(ValueError, match="size must be"):
        write_loss_curves(tmp_path / "c.png", [{"epoch": 1, "train_loss": 1.0}], size=size)


# ------------------------------------------------------------------------------------------------
# Heat map

def expected_colour(value, limit):
    """The documented map, computed here from its three anchors."""
    t = value / limit
    anchor = np.array(POSITIVE_COLOUR if t >= 0 else NEGATIVE_COLOUR, float)
    return np.rint(np.array(ZERO_COLOUR) + abs(t) * (anchor - ZERO_COLOUR)).astype(np.uint8)


def signed_matrix(n, seed=0):
    """Upper triangle: values of both signs, the largest magnitude -3 at (0, n - 1), a 0 at
    (0, 1); the diagonal and below: NaN, which upper_only must never read."""
    m = np.random.default_rng(seed).uniform(-2.0, 2.0, size=(n, n))
    m[0, n - 1], m[0, 1] = -3.0, 0.0
    m[np.tril_indices(n)] = np.nan
    return m


def test_heatmap_cells_have_the_documented_colours(tmp_path):
    n, cell = 6, 10
    m = signed_matrix(n)
    write_heatmap(tmp_path / "h.png", m, title="pairwise potentials", cell=cell)
    pixels = read_png(tmp_path / "h.png", "RGB")
    assert pixels.shape == (n * cell + 76, n * cell + 170, 3)
    for i in range(n):
        for j in range(n):
            block = pixels[HEATMAP_TOP + i * cell:HEATMAP_TOP + (i + 1) * cell,
                           HEATMAP_LEFT + j * cell:HEATMAP_LEFT + (j + 1) * cell]
            want = expected_colour(m[i, j], 3.0) if j > i else np.array([255, 255, 255])
            assert (block == want).all(), f"cell ({i}, {j})"
    assert (pixels[HEATMAP_TOP, HEATMAP_LEFT + (n - 1) * cell] == NEGATIVE_COLOUR).all()
    assert (pixels[HEATMAP_TOP, HEATMAP_LEFT + cell] == ZERO_COLOUR).all()
    # the colour bar: +limit at its top, -limit at its bottom
    bar = HEATMAP_LEFT + n * cell + images.BAR_GAP + images.BAR_WIDTH // 2
    assert (pixels[HEATMAP_TOP, bar] == POSITIVE_COLOUR).all()
    assert (pixels[HEATMAP_TOP + n * cell - 1, bar] == NEGATIVE_COLOUR).all()
    # text: the title above, the min/max caption below, the bar's labels beside it
    dark = pixels.max(axis=-1) < 100
    assert dark[:HEATMAP_TOP - 16, HEATMAP_LEFT:].sum() > 20
    assert dark[HEATMAP_TOP + n * cell + 4:, HEATMAP_LEFT:].sum() > 20
    assert dark[HEATMAP_TOP:HEATMAP_TOP + n * cell, bar + 10:].sum() > 20


def test_heatmap_full_matrix_and_default_cell(tmp_path):
    n = 15
    m = np.abs(np.random.default_rng(1).normal(size=(n, n)))       # attractive: all >= 0
    write_heatmap(tmp_path / "h.png", m, upper_only=False)
    pixels = read_png(tmp_path / "h.png", "RGB")
    cell = 384 // n
    assert pixels.shape == (n * cell + 76, n * cell + 170, 3)
    centres = HEATMAP_TOP + np.arange(n) * cell + cell // 2
    got = pixels[centres][:, HEATMAP_LEFT + np.arange(n) * cell + cell // 2]
    want = np.array([[expected_colour(v, m.max()) for v in row] for row in m])
    np.testing.assert_array_equal(got, want)


def test_heatmap_of_zeros_uses_limit_one(tmp_path):
    write_heatmap(tmp_path / "h.png", np.zeros((3, 3)), cell=4)
    pixels = read_png(tmp_path / "h.png", "RGB")
    assert (pixels[HEATMAP_TOP, HEATMAP_LEFT + 4] == ZERO_COLOUR).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(matrix=np.zeros((3, 4))), r"matrix must be square \(n, n\)"),
    (dict(matrix=np.zeros(9)), r"matrix must be square \(n, n\)"),
    (dict(matrix=np.zeros((1, 1))), "matrix must be at least 2 x 2 with upper_only"),
    (dict(matrix=np.zeros((0, 0)), upper_only=False), "matrix must be at least 1 x 1"),
    (dict(matrix=np.zeros((3, 3), complex)), "matrix must hold real numbers"),
    (dict(matrix=np.array([[0, np.inf], [0, 0]])), "matrix has non-finite values"),
    (dict(matrix=np.array([[np.nan, 1.0], [0, 0]]), upper_only=False),
     "matrix has non-finite values"),
    (dict(cell=0), "cell must be an integer >= 1"),
    (dict(cell=2.5), "cell must be an integer >= 1"),
])
def test_heatmap_bad_input(tmp_path, kwargs, match):
    args = dict(matrix=np.zeros((3, 3))) | kwargs
    with pytest.raises(ValueError, match=match):
        write_heatmap(tmp_path / "h.png", **args)
    assert os.listdir(tmp_path) == []


def test_flattened_square_images_are_drawn_square_and_others_as_strips():
    from dvae_cupy.images import picture_shape

    assert picture_shape(784, None) == (28, 28)
    assert picture_shape(784, (14, 56)) == (14, 56)     # a known shape wins
    assert picture_shape(560, None) is None               # 20 x 28 flattened: no way to know
