"""Image grids for generative models: batches of images in [0, 1] -> one uint8 picture -> PNG.

`make_grid` tiles a batch [B, Y, X, C] (C = 1 or 3) row by row into [Y', X', C] uint8, with
`padding` pixels of `pad_value` around every cell. `save_png` writes a batch (or a grid) to a PNG,
scaled up by whole pixels so that tiny images (8x8 digits) stay visible. `lerp_latents` and
`slerp_latents` give the latent codes of an interpolation strip.
"""

import io
import math

import numpy as np

from fmjax.runtime import workdir_files

# `save_png` scales grids narrower than this up by a whole factor, unless told a scale.
MIN_WIDTH = 256


def make_grid(images_BYXC, columns: int | None = None, padding: int = 1,
              pad_value: float = 1.0) -> np.ndarray:
    """Tiles float images in [0, 1] into one uint8 grid [rows*(H+p)+p, columns*(W+p)+p, C].

    Values are clipped to [0, 1] (NaN becomes 0); `columns` defaults to ceil(sqrt(N)); the last
    row's empty cells are filled with `pad_value`. Grayscale (C = 1) stays single-channel.
    """
    images_BYXC = np.asarray(images_BYXC, dtype=np.float32)
    if images_BYXC.ndim != 4 or images_BYXC.shape[-1] not in (1, 3) or not len(images_BYXC):
        raise ValueError(f"make_grid wants a non-empty [B, Y, X, C] batch with C = 1 or 3, "
                         f"got shape {images_BYXC.shape}")
    n, h, w, c = images_BYXC.shape
    columns = columns or math.ceil(math.sqrt(n))
    if columns < 1 or padding < 0:
        raise ValueError(f"make_grid wants columns >= 1 and padding >= 0, got {columns}, {padding}")
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + padding) + padding, columns * (w + padding) + padding, c),
                   pad_value, np.float32)
    for i, image in enumerate(images_BYXC):
        top = padding + (i // columns) * (h + padding)
        left = padding + (i % columns) * (w + padding)
        grid[top:top + h, left:left + w] = image
    return _to_uint8(grid)


def _to_uint8(x) -> np.ndarray:
    return np.rint(np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0) * 255).astype(np.uint8)


def upscale(grid_YXC, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling by a whole `factor`: each pixel becomes a factor x factor block."""
    if factor < 1:
        raise ValueError(f"upscale wants factor >= 1, got {factor}")
    return np.repeat(np.repeat(np.asarray(grid_YXC), factor, axis=0), factor, axis=1)


def auto_scale(width: int, min_width: int = MIN_WIDTH) -> int:
    """The smallest whole factor that makes an image `width` pixels wide at least `min_width`."""
    return max(1, math.ceil(min_width / max(width, 1)))


def as_grid(images, columns: int | None = None) -> np.ndarray:
    """A float batch [B, Y, X, C] in [0, 1] made into a grid; a uint8 grid [Y, X, C] as it is."""
    images = np.asarray(images)
    if images.ndim == 4:
        return make_grid(images, columns)
    if images.ndim == 3 and images.dtype == np.uint8 and images.shape[-1] in (1, 3):
        return images
    raise ValueError(f"expected a float batch [B, Y, X, C] or a uint8 grid [Y, X, C] with C = 1 "
                     f"or 3, got {images.dtype} of shape {images.shape}")


def save_png(path, images, columns: int | None = None, scale: int | None = None) -> np.ndarray:
    """Writes `images` (a float batch [B, Y, X, C] in [0, 1], or a uint8 grid from `make_grid`) as
    one PNG grid, scaled up `scale` times (default: enough to be `MIN_WIDTH` pixels wide).

    The file appears whole or not at all (`workdir_files.write_atomic`); parent directories are
    created. Returns the uint8 [Y, X, C] array written.
    """
    from PIL import Image   # only the image writers need Pillow

    grid = as_grid(images, columns)
    grid = upscale(grid, auto_scale(grid.shape[1]) if scale is None else scale)
    path = workdir_files.as_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(png, format="PNG")
    workdir_files.write_atomic(path, png.getvalue())
    return grid


def lerp_latents(z_a_Z, z_b_Z, steps: int) -> np.ndarray:
    """`steps` codes [steps, D] evenly spaced on the straight line from z_a to z_b (both included).

    For Gaussian latents in many dimensions the middle codes are shorter than typical samples
    (norm ~ 1/sqrt(2) of the ends halfway between independent draws): prefer `slerp_latents`.
    """
    z_a_Z, z_b_Z, t_B1, dtype = _endpoints(z_a_Z, z_b_Z, steps)
    return ((1 - t_B1) * z_a_Z + t_B1 * z_b_Z).astype(dtype)


def slerp_latents(z_a_Z, z_b_Z, steps: int) -> np.ndarray:
    """`steps` codes [steps, D] along the great-circle arc from z_a to z_b (both included).

    The angle is spread evenly, so for endpoints of equal norm every code has that norm, as
    samples of a high-dimensional Gaussian prior nearly do. Falls back to `lerp_latents` when the
    endpoints are (nearly) parallel; opposite endpoints have no unique arc and also go straight.
    """
    z_a_Z, z_b_Z, t_B1, dtype = _endpoints(z_a_Z, z_b_Z, steps)
    norms = np.linalg.norm(z_a_Z) * np.linalg.norm(z_b_Z)
    omega = np.arccos(np.clip(z_a_Z @ z_b_Z / norms, -1.0, 1.0)) if norms > 0 else 0.0
    if np.sin(omega) < 1e-6:
        z_BZ = (1 - t_B1) * z_a_Z + t_B1 * z_b_Z
    else:
        z_BZ = (np.sin((1 - t_B1) * omega) * z_a_Z + np.sin(t_B1 * omega) * z_b_Z) / np.sin(omega)
        z_BZ[0], z_BZ[-1] = z_a_Z, z_b_Z   # exactly, not up to rounding
    return z_BZ.astype(dtype)


def _endpoints(z_a_Z, z_b_Z, steps: int):
    a, b = np.asarray(z_a_Z), np.asarray(z_b_Z)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"interpolation wants two latent vectors [D] of one shape, got {a.shape} "
                         f"and {b.shape}")
    if steps < 2:
        raise ValueError(f"interpolation wants steps >= 2 (both ends are included), got {steps}")
    dtype = np.result_type(a.dtype, b.dtype, np.float32)   # float32 unless given float64
    return (a.astype(np.float64), b.astype(np.float64), np.linspace(0.0, 1.0, steps)[:, None],
            dtype)
