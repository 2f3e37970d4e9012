"""scikit-learn's bundled 8x8 handwritten digits (1797 real images, no download)."""

import dataclasses
from typing import Annotated

import numpy as np

from fmjax.data.augment import Degrees, image_augmentation
from fmjax.data.arrays import Arrays, ArrayPipeline
from fmjax.errors import UserError, first_line
from fmjax.ranges import Fraction, NonNegativeInt, OpenFraction, Range, Seed


@dataclasses.dataclass
class Digits:
    """config.data for `name='digits'`: a stratified train/test split with a fixed seed."""
    test_fraction: OpenFraction = 0.2
    split_seed: Seed = 0
    crop_padding: NonNegativeInt = 0   # random-crop padding (0 = off); digits are never flipped
    rotate_degrees: Degrees = 0.0      # random rotation in [-d, d] degrees (0 = off)
    binarize: bool = False     # pixels > 0.5 -> 1, else 0 (Bernoulli likelihood models)
    # Only the digits 0 .. num_classes - 1: a smaller task, e.g. a new head to transfer to.
    num_classes: Annotated[int, Range(2, 10, integer=True)] = 10
    # Of the training examples, held out as the validation split (val/*), stratified and fixed
    # by split_seed (fmjax/data/validation.py); 0 trains on the whole training split.
    validation_fraction: Fraction = 0.0

    def pipeline(self, seed: int, workdir=None) -> ArrayPipeline:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x = (digits.images / 16.0).astype(np.float32)[..., None]   # [N, 8, 8, 1] in [0, 1]
        if self.binarize:
            x = (x > 0.5).astype(np.float32)
        y = digits.target.astype(np.int32)
        try:
            x_tr, x_te, y_tr, y_te = train_test_split(
                x, y, test_size=self.test_fraction, random_state=self.split_seed, stratify=y)
        except ValueError as e:   # a split too small to hold every class
            raise UserError(f"config.data.test_fraction={self.test_fraction}: {first_line(e)}")
        # Restricted after the split: a run on fewer digits tests only on the 10-digit run's test
        # images, so transfer between the two never trains on the other's test set.
        keep_tr, keep_te = y_tr < self.num_classes, y_te < self.num_classes
        arrays = Arrays(x_tr[keep_tr], y_tr[keep_tr], x_te[keep_te], y_te[keep_te],
                        self.num_classes).hold_out(self.validation_fraction, self.split_seed)
        return ArrayPipeline(arrays, seed, image_augmentation(self.crop_padding, flip=False,
                                                              rotate_degrees=self.rotate_degrees))
