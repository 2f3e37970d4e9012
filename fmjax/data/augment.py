"""Image augmentation on host numpy batches x_BHWC, driven by an explicit numpy Generator."""

import numpy as np


def random_crop(x_BHWC: np.ndarray, rng: np.random.Generator, padding: int) -> np.ndarray:
    """Zero-pad by `padding` and crop back to the original size at a random offset per image."""
    b, h, w, _ = x_BHWC.shape
    padded = np.pad(x_BHWC, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    dy, dx = rng.integers(0, 2 * padding + 1, size=(2, b))
    return np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


def random_flip(x_BHWC: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirror each image left-right with probability 1/2."""
    flip = rng.random(x_BHWC.shape[0]) < 0.5
    return np.where(flip[:, None, None, None], x_BHWC[:, :, ::-1], x_BHWC)


def crop_and_flip(crop_padding: int, flip: bool):
    """An augment function for `ArrayPipeline` (or None when nothing is asked for)."""
    if crop_padding <= 0 and not flip:
        return None

    def augment(x, rng):
        if crop_padding > 0:
            x = random_crop(x, rng, crop_padding)
        return random_flip(x, rng) if flip else x
    return augment
