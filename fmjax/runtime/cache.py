"""Where fmjax keeps what it makes once and reuses in later runs, offline ones too: generated
datasets (MNIST-1D) and the feature nets behind `eval/feature_distance`."""

import os
import pathlib


def cache_dir() -> pathlib.Path:
    """$FMJAX_CACHE_DIR, or ~/.cache/fmjax."""
    return pathlib.Path(os.environ.get("FMJAX_CACHE_DIR", pathlib.Path.home() / ".cache/fmjax"))
