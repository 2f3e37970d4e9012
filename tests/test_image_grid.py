"""Image grids, PNG writing, latent interpolation, and `MetricWriters.write_images`."""

import numpy as np
import pytest
from PIL import Image

from conftest import tensorboard_events
from fmjax.metrics import image_grid
from fmjax.metrics.writers import MetricWriters


def batch(n=5, h=3, w=4, c=1, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, h, w, c)).astype(np.float32)


@pytest.mark.parametrize("n, columns, padding, shape", [
    (5, None, 1, (2 * 4 + 1, 3 * 5 + 1)),    # ceil(sqrt(5)) = 3 columns, 2 rows
    (5, 2, 2, (3 * 5 + 2, 2 * 6 + 2)),       # 3 rows of 2
    (64, None, 1, (8 * 4 + 1, 8 * 5 + 1)),
    (1, None, 0, (3, 4)),
    (3, 7, 1, (4 + 1, 7 * 5 + 1)),           # more columns than images: one row, empty cells
])
def test_grid_shape_and_layout(n, columns, padding, shape):
    images = batch(n)
    grid = image_grid.make_grid(images, columns, padding=padding, pad_value=1.0)
    assert grid.dtype == np.uint8 and grid.shape == (*shape, 1)
    cols = columns or int(np.ceil(np.sqrt(n)))
    expected = np.full(grid.shape, 255, np.uint8)   # padding and empty cells are white
    for i in range(n):
        top, left = padding + (i // cols) * (3 + padding), padding + (i % cols) * (4 + padding)
        expected[top:top + 3, left:left + 4] = np.rint(images[i] * 255)
    np.testing.assert_array_equal(grid, expected)


def test_grid_values_and_channels():
    white = np.ones((4, 2, 2, 3), np.float32)
    grid = image_grid.make_grid(white, pad_value=0.0)
    assert grid.shape == (7, 7, 3)                  # RGB stays RGB
    assert grid[1:3, 4:6].min() == 255 and grid[0].max() == grid[:, 3].max() == 0
    assert (grid == 255).sum() == 4 * 2 * 2 * 3 and (grid == 0).sum() == grid.size - 48
    odd = np.array([-0.5, 0.0, 0.5, 1.0, 2.0, np.nan], np.float32).reshape(1, 1, 6, 1)
    np.testing.assert_array_equal(image_grid.make_grid(odd, padding=0)[0, :, 0],
                                  [0, 0, 128, 255, 255, 0])   # clipped; NaN -> 0
    with pytest.raises(ValueError):
        image_grid.make_grid(np.zeros((2, 4, 4, 2)))   # two channels
    with pytest.raises(ValueError):
        image_grid.make_grid(np.zeros((4, 4, 1)))      # no batch axis


def test_upscale():
    grid = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    big = image_grid.upscale(grid, 3)
    assert big.shape == (6, 9, 1)
    np.testing.assert_array_equal(big[::3, ::3], grid)
    np.testing.assert_array_equal(big[2, 8], grid[0, 2])
    assert image_grid.auto_scale(73) == 4 and image_grid.auto_scale(300) == 1


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
def test_save_png_round_trip(tmp_path, channels, mode):
    images = batch(10, 8, 8, channels)
    path = tmp_path / "a" / "b" / "grid.png"   # parent directories are created
    written = image_grid.save_png(path, images, columns=5, scale=1)
    grid = image_grid.make_grid(images, columns=5)
    np.testing.assert_array_equal(written, grid)
    with Image.open(path) as im:
        assert im.mode == mode
        read = np.asarray(im)
    np.testing.assert_array_equal(read.reshape(grid.shape), grid)
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]   # no temporary file left

    # By default the grid is scaled up to be MIN_WIDTH pixels wide at least; a grid goes as is.
    auto = image_grid.save_png(path, grid)
    factor = image_grid.auto_scale(grid.shape[1])
    assert factor > 1 and auto.shape[1] >= image_grid.MIN_WIDTH
    with Image.open(path) as im:
        np.testing.assert_array_equal(np.asarray(im).reshape(auto.shape),
                                      image_grid.upscale(grid, factor))


def test_lerp_and_slerp():
    rng = np.random.default_rng(0)
    z_a, z_b = rng.normal(size=(2, 32)).astype(np.float32)
    z_b *= np.linalg.norm(z_a) / np.linalg.norm(z_b)   # equal norms
    for interpolate in (image_grid.lerp_latents, image_grid.slerp_latents):
        z = interpolate(z_a, z_b, 7)
        assert z.shape == (7, 32) and z.dtype == np.float32
        np.testing.assert_array_equal(z[0], z_a)
        np.testing.assert_array_equal(z[-1], z_b)
    np.testing.assert_allclose(image_grid.lerp_latents(z_a, z_b, 3)[1], (z_a + z_b) / 2, rtol=1e-6)
    norms = np.linalg.norm(image_grid.slerp_latents(z_a, z_b, 9), axis=-1)
    np.testing.assert_allclose(norms, np.linalg.norm(z_a), rtol=1e-5)
    assert np.linalg.norm(image_grid.lerp_latents(z_a, z_b, 9)[4]) < 0.9 * np.linalg.norm(z_a)
    # Parallel endpoints fall back to the straight line instead of dividing by sin(0).
    np.testing.assert_allclose(image_grid.slerp_latents(z_a, 2 * z_a, 3)[1], 1.5 * z_a, rtol=1e-6)
    with pytest.raises(ValueError):
        image_grid.slerp_latents(z_a, z_b, 1)


def test_write_images(tmp_path):
    writers = MetricWriters(tmp_path, 0, 10, show_progress=False)
    samples = batch(16, 8, 8, 1)
    writers.write_images(20, {"eval/samples": samples,
                              "eval/recon": image_grid.make_grid(batch(4, 8, 8, 3))})
    writers.close()
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        "eval_recon_00000020.png", "eval_samples_00000020.png"]
    with Image.open(tmp_path / "images" / "eval_samples_00000020.png") as im:
        assert im.width >= image_grid.MIN_WIDTH
    images = {}
    for event in tensorboard_events(tmp_path / "tensorboard"):
        for value in event.summary.value:
            if value.HasField("image"):
                images[value.tag] = (event.step, value.image)
    assert images.keys() == {"eval/samples", "eval/recon"}
    step, image = images["eval/samples"]
    assert step == 20 and image.width >= image_grid.MIN_WIDTH
