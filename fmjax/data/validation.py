"""The validation split: examples held out of the training data for model selection.

`config.data.validation_fraction` (mnist1d, digits, diabetes, tfds, text_classification) moves
that fraction of the training split into a validation split, chosen by the *data* seed
(dataset_seed, split_seed, validation_seed: never train.seed, so a sweep over train.seed sees one
validation set) and stratified by label where class labels are in memory. Its metrics are logged
as `val/*`; `eval/*` stays the configured eval split, which for these sources is the test split.

Text sources differ: their eval split is already held out of the training text
(`config.data.val_fraction`, nanoGPT's 10%), so they declare it a validation split
(`eval_is_validation`) and have no `validation_fraction`.
"""

import numpy as np

from fmjax.errors import UserError, first_line

# Why a source may lack `validation_fraction`: said wherever that key is refused.
NO_VALIDATION_FRACTION = ("config.data.validation_fraction holds out a validation split for "
                          "mnist1d, digits, diabetes, tfds and text_classification only; a text "
                          "source's eval split already is one (its size: config.data.val_fraction)")

# Split names (before any `[...]` slice) that name a validation split, not a test split.
VALIDATION_SPLIT_NAMES = ("validation", "valid", "val", "dev")


def names_validation_split(split: str) -> bool:
    """Whether a TFDS split spec such as `validation` or `validation[:50%]` is a validation
    split (model selection may read it)."""
    return split.partition("[")[0].strip().lower() in VALIDATION_SPLIT_NAMES


def eval_is_validation(data_config) -> bool:
    """Whether the source of `config.data` declares its eval split a validation split."""
    from fmjax.data import SOURCES   # late: the registry imports every source
    kwargs = {k: v for k, v in data_config.items() if k != "name"}
    return bool(getattr(SOURCES[data_config.name](**kwargs), "eval_is_validation", False))


def holdout_index(labels_N: np.ndarray | None, num: int, fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train index, validation index) into `num` training examples: `fraction` of them held
    out by `seed`, stratified by `labels_N` when given; both sorted. UserError when a split would
    be empty (or, stratified, hold no example of some class)."""
    if fraction <= 0:
        return np.arange(num), np.arange(0)
    from sklearn.model_selection import train_test_split
    try:
        train_N, val_N = train_test_split(np.arange(num), test_size=fraction, random_state=seed,
                                          stratify=labels_N)
    except ValueError as e:   # too few examples for the fraction, or for every class
        raise UserError(f"config.data.validation_fraction={fraction} of {num} training "
                        f"examples: {first_line(e)}") from e
    return np.sort(train_N), np.sort(val_N)
