"""`fmjax plot`: pictures of what runs did, as matplotlib Figures (a notebook shows one as its
last value) or PNG files.

Figures are made with `matplotlib.figure.Figure()`, which needs neither pyplot nor a backend, so
a notebook's backend is left alone and a script never opens a window. matplotlib is imported only
inside the kind's module, when a figure is made: never at train time.
"""

import dataclasses
import importlib
import io
import os
import pathlib
from typing import TYPE_CHECKING, Sequence

from fmjax.errors import UserError
from fmjax.runtime import workdir_files

if TYPE_CHECKING:
    import matplotlib.figure

KINDS = ("curves", "roc", "pr", "confusion", "attention", "latent")
# The module of fmjax.plots that draws each kind.
_MODULES = {"curves": "curves", "roc": "classification", "pr": "classification",
            "confusion": "classification", "attention": "attention", "latent": "latent"}
# The PlotOptions each kind reads: another one set is refused, not silently ignored.
_READS = {"curves": ("metrics",), "roc": ("step", "split"), "pr": ("step", "split"),
          "confusion": ("step", "split"), "attention": ("step", "split", "input", "example"),
          "latent": ("step", "split")}


@dataclasses.dataclass(frozen=True)
class PlotOptions:
    """What to draw, beyond the kind and the runs."""
    # curves: the metric keys (None: train/loss and every eval/ and val/ key)
    metrics: tuple[str, ...] | None = None
    # roc/pr/confusion: the evaluated step (None: the latest); attention/latent: the checkpoint
    step: int | None = None
    split: str = "eval"            # "eval" or "val"
    # attention: the text input (GPT, BERT, seq2seq source); None: an eval example
    input: str | None = None
    example: int = 0               # attention: the index of the example of `split` used


def figure(kind: str, workdirs: Sequence[str | os.PathLike],
           options: PlotOptions = PlotOptions()) -> "matplotlib.figure.Figure":
    """The figure of `kind` for `workdirs` (run directories; for curves also sweep
    directories); UserError for an unknown kind or input the kind cannot draw."""
    if kind not in KINDS:
        raise UserError(f"unknown plot kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not workdirs:
        raise UserError("give at least one run directory to plot")
    if options.split not in ("eval", "val"):
        raise UserError(f"unknown split {options.split!r}; choose eval or val")
    _check_applies(kind, options)
    paths = [workdir_files.as_path(w) for w in workdirs]
    module = importlib.import_module(f"fmjax.plots.{_MODULES[kind]}")
    if module.__name__ == "fmjax.plots.classification":
        return module.figure(kind, paths, options)
    return module.figure(paths, options)


def _check_applies(kind: str, options: PlotOptions) -> None:
    defaults = PlotOptions()
    for field in dataclasses.fields(PlotOptions):
        if (getattr(options, field.name) != getattr(defaults, field.name)
                and field.name not in _READS[kind]):
            reads = ", ".join(f"--{name}" for name in _READS[kind])
            raise UserError(f"--{field.name} does not apply to --kind {kind} (it reads {reads})")


def check_out(out: str | os.PathLike) -> pathlib.Path:
    """`out` as a path a PNG can be written to (an existing file there is replaced); UserError
    if it does not end in .png, is a directory or its directory does not exist."""
    out = pathlib.Path(out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out} must name a .png file")
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; name the .png file to write in it")
    parent = out.absolute().parent
    if not parent.is_dir():
        why = "is not a directory" if parent.exists() else "does not exist"
        raise UserError(f"--out {out}: its directory {parent} {why}")
    return out


def save(fig, out: str | os.PathLike) -> pathlib.Path:
    """`fig` as a PNG at `out` (dpi 100), written whole or not at all; returns the path."""
    out = check_out(out)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    try:
        workdir_files.write_atomic(out, png.getvalue())
    except OSError as e:   # no permission, a full disk: write_atomic left nothing behind
        raise UserError(f"cannot write --out {out}: {e.strerror or e}") from e
    return out
