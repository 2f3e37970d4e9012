"""Image augmentation on host numpy batches x_BYXC, driven by an explicit numpy Generator.

The random draws are made for the whole global batch and each host keeps the rows it holds
(`rows`), so an augmented run sees the same images on 1 host or N. Rotation draws after crop and
flip, so turning it on leaves their draws as they were.
"""

from typing import Annotated

import numpy as np

from fmjax.ranges import Range

Degrees = Annotated[float, Range(0, 180)]   # rotation range d: angles uniform in [-d, d]


def random_crop(x_BYXC: np.ndarray, offsets_2B: np.ndarray, padding: int) -> np.ndarray:
    """Zero-pad by `padding` and crop back to the original size at offsets (dy, dx) per image."""
    _, h, w, _ = x_BYXC.shape
    padded = np.pad(x_BYXC, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    return np.stack([padded[i, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets_2B.T)])


def random_flip(x_BYXC: np.ndarray, flip_B: np.ndarray) -> np.ndarray:
    """Mirror left-right the images where `flip_B` is True."""
    return np.where(flip_B[:, None, None, None], x_BYXC[:, :, ::-1], x_BYXC)


def random_rotate(x_BYXC: np.ndarray, degrees_B: np.ndarray) -> np.ndarray:
    """Rotate each image counter-clockwise by its angle about its centre (bilinear, same size,
    corners filled with 0 like the crop's padding); 90 degrees is np.rot90."""
    import scipy.ndimage   # late: its import costs every run's start, most never rotate
    return np.stack([scipy.ndimage.rotate(image_YXC, angle, axes=(1, 0), reshape=False, order=1,
                                          mode="constant", cval=0.0)
                     for image_YXC, angle in zip(x_BYXC, degrees_B)]).astype(x_BYXC.dtype)


def image_augmentation(crop_padding: int, flip: bool, rotate_degrees: float = 0.0):
    """`augment(x, rng, rows, global_size)` for the pipelines (None when nothing is asked for):
    crops offsets uniform in [0, 2 * padding], flips with probability 1/2, rotates by angles
    uniform in [-rotate_degrees, rotate_degrees]."""
    if crop_padding <= 0 and not flip and not rotate_degrees:
        return None

    def augment(x, rng: np.random.Generator, rows: slice, global_size: int):
        if crop_padding > 0:
            offsets_2G = rng.integers(0, 2 * crop_padding + 1, size=(2, global_size))
            x = random_crop(x, offsets_2G[:, rows], crop_padding)
        if flip:
            x = random_flip(x, (rng.random(global_size) < 0.5)[rows])
        if rotate_degrees:
            x = random_rotate(x, rng.uniform(-rotate_degrees, rotate_degrees, global_size)[rows])
        return x
    return augment
