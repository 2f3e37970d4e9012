"""Pictures of runs (placeholder: helper A's `fmjax/plots/__init__.py` replaces this at merge;
only `PlotOptions` is needed by the attention and latent modules)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class PlotOptions:
    metrics: tuple[str, ...] | None = None   # curves: which metric keys
    step: int | None = None                  # attention/latent: checkpoint step (None: latest)
    split: str = "eval"                      # "eval" or "val"
    input: str | None = None                 # attention: text input; None = an eval example
    example: int = 0                         # attention/latent: index of the eval example used
