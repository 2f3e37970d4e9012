"""scikit-learn's bundled diabetes regression data (442 patients, 10 features, no download).

The target is a measure of disease progression one year after baseline (25 to 346). Features are
standardised with the training split's statistics; targets stay in their units (the regression
task standardises them with `DataInfo.target_mean` / `target_std` and reports metrics in them).
"""

import dataclasses

import numpy as np

from fmjax.data.arrays import Arrays, ArrayPipeline
from fmjax.errors import UserError, first_line
from fmjax.ranges import Fraction, OpenFraction, Seed


@dataclasses.dataclass
class Diabetes:
    """config.data for `name='diabetes'`: a train/test split with a fixed seed (42: the split of
    the usual tutorials, on which a linear model reaches test R² 0.45)."""
    test_fraction: OpenFraction = 0.2
    split_seed: Seed = 42
    # Of the training examples, held out as the validation split (val/*), fixed by split_seed
    # (fmjax/data/validation.py); 0 trains on the whole training split.
    validation_fraction: Fraction = 0.0

    def pipeline(self, seed: int, workdir=None) -> ArrayPipeline:
        from sklearn.datasets import load_diabetes
        from sklearn.model_selection import train_test_split

        x_NF, y_N = load_diabetes(return_X_y=True, scaled=False)
        try:
            x_tr, x_te, y_tr, y_te = train_test_split(
                x_NF, y_N.astype(np.float32), test_size=self.test_fraction,
                random_state=self.split_seed)
        except ValueError as e:   # a split left empty
            raise UserError(f"config.data.test_fraction={self.test_fraction}: "
                            f"{first_line(e)}") from e
        arrays = Arrays(x_tr, y_tr, x_te, y_te, num_classes=0).hold_out(
            self.validation_fraction, self.split_seed)
        # Statistics of the training split after the hold-out: none from val or test examples.
        mean_F, std_F = arrays.x_train.mean(0), arrays.x_train.std(0)
        # A feature constant over a few training examples (sex, with validation_fraction=0.99)
        # has nothing to scale; dividing by its 0 would make every input NaN.
        std_F = np.where(std_F > 0, std_F, 1.0)
        scaled = {name: ((getattr(arrays, name) - mean_F) / std_F).astype(np.float32)
                  for name in ("x_train", "x_eval", "x_val")}
        return ArrayPipeline(dataclasses.replace(arrays, **scaled), seed)
