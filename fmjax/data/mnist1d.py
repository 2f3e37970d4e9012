"""MNIST-1D (Greydanus & Kobak), generated offline by the `mnist1d` package and cached."""

import dataclasses
import io
from typing import Annotated

import numpy as np

from fmjax.data.arrays import Arrays, ArrayPipeline
from fmjax.errors import UserError
from fmjax.ranges import INT32_MAX, Fraction, OpenFraction, Range, Seed
from fmjax.runtime.cache import cache_dir
from fmjax.runtime.workdir_files import write_atomic


def _generate(num_samples: int, train_split: float, seed: int) -> dict:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = num_samples, train_split, seed
    state = np.random.get_state()  # make_dataset reseeds numpy's global RNG; leave it as it was
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    return {k: d[k] for k in ("x", "y", "x_test", "y_test")}


def load_arrays(num_samples: int = 5000, train_split: float = 0.8, seed: int = 42) -> dict:
    """The paper's dataset (`make_dataset(get_dataset_args())`: 4000 train / 1000 test) by default.

    Generation takes seconds, so the result is cached under `cache_dir()` (written atomically).
    """
    name = "mnist1d.npz" if (num_samples, train_split, seed) == (5000, 0.8, 42) else \
        f"mnist1d_{num_samples}_{train_split}_{seed}.npz"
    path = cache_dir() / name
    if path.exists():
        with np.load(path) as f:
            return dict(f)
    d = _generate(num_samples, train_split, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    npz = io.BytesIO()
    np.savez(npz, **d)
    write_atomic(path, npz.getvalue())
    return d


@dataclasses.dataclass
class MNIST1D:
    """config.data for `name='mnist1d'`; the defaults reproduce the paper's split."""
    num_samples: Annotated[int, Range(10, INT32_MAX, integer=True)] = 5000   # >= 1 per class
    train_split: OpenFraction = 0.8
    dataset_seed: Seed = 42
    # Of the training examples, held out as the validation split (val/*), stratified and fixed
    # by dataset_seed (fmjax/data/validation.py); 0 keeps the paper's 4000 for training.
    validation_fraction: Fraction = 0.0

    def pipeline(self, seed: int, workdir=None) -> ArrayPipeline:
        generated = self.num_samples // 10 * 10   # the same number of each of the 10 classes
        num_train = int(generated * self.train_split)
        if not 0 < num_train < generated:
            raise UserError(f"config.data.num_samples={self.num_samples} with train_split="
                            f"{self.train_split} leaves {num_train} train and "
                            f"{generated - num_train} test examples; both need at least one")
        d = load_arrays(self.num_samples, self.train_split, self.dataset_seed)
        arrays = Arrays(d["x"].astype(np.float32), d["y"].astype(np.int32),
                        d["x_test"].astype(np.float32), d["y_test"].astype(np.int32), 10)
        return ArrayPipeline(arrays.hold_out(self.validation_fraction, self.dataset_seed), seed)
