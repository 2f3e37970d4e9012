"""Which record each training position reads, for sources read by index (TFDS ArrayRecord files).

Position p is the p-th example a run consumes, counted from step 0. It reads record `order[p]`:
each epoch (n consecutive positions, n records) is a seeded permutation of the records, a new one
every epoch, and grain computes `order[p]` on its own (an index shuffle: no table of n entries, no
reading of earlier positions). So the batch of step s is found directly, and a run resumed at
step s reads only the records of the steps it runs. grain is imported only here, when such a
source is used, so fmjax imports and trains without it.
"""

import numpy as np

from fmjax.errors import UserError


def import_grain():
    """The grain module, or a UserError that says how to install it."""
    try:
        import grain
    except ImportError as e:
        raise UserError(f"TFDS datasets are read by index with grain ({e}); "
                        "pip install 'fmjax[tfds]'") from e
    return grain


class RecordOrder:
    """`order[positions]` -> record numbers: per-epoch seeded permutations of `num_records`."""

    def __init__(self, num_records: int, seed: int):
        if num_records <= 0:
            raise UserError("the TFDS training split has no examples")
        self.num_records = num_records
        grain = import_grain()
        self._shuffled = grain.MapDataset.range(num_records).shuffle(seed=seed).repeat()

    def __getitem__(self, positions: np.ndarray) -> np.ndarray:
        return np.array([self._shuffled[int(p)] % self.num_records for p in positions], np.int64)
