"""Where `--config NAME[:variant]` finds its file: NAME as a path, else among the experiments
shipped with fmjax, so `--config mnist1d/cnn.py` works wherever fmjax is installed (Colab, a TPU
VM, a wheel) and not only in a checkout. A local file of that name always wins."""

import difflib
import pathlib

from fmjax.errors import UserError

# README commands name experiments as in a checkout (experiments/mnist1d/cnn.py); a shipped
# experiment answers to that name too.
CHECKOUT_FOLDER = "experiments"


def shipped_dirs() -> list[pathlib.Path]:
    """The experiments inside the installed package (the wheel maps experiments/ to
    fmjax/experiments: setup.py), then those of the checkout fmjax runs from (an editable
    install, a source tree)."""
    package = pathlib.Path(__file__).resolve().parent
    dirs = [package / CHECKOUT_FOLDER]
    if (package.parent / "pyproject.toml").is_file():
        dirs.append(package.parent / CHECKOUT_FOLDER)
    return [d for d in dirs if d.is_dir()]


def find(name: str) -> str:
    """The path of experiment file `name`: `name` itself if that file exists, else the shipped
    experiment of that relative name; a UserError listing where it looked otherwise."""
    if pathlib.Path(name).is_file():
        return name
    if pathlib.Path(name).is_absolute():
        raise UserError(f"config file not found: '{name}'")
    relative = name.removeprefix(f"{CHECKOUT_FOLDER}/")
    dirs = shipped_dirs()
    for directory in dirs:
        if (directory / relative).is_file():
            return str(directory / relative)
    raise UserError(f"config file not found: '{name}' (looked in "
                    f"{', '.join(str(d) for d in [pathlib.Path.cwd(), *dirs])})"
                    f"{_did_you_mean(relative, dirs)}")


def _did_you_mean(relative: str, dirs: list[pathlib.Path]) -> str:
    shipped = sorted({p.relative_to(d).as_posix() for d in dirs for p in d.rglob("*.py")})
    close = difflib.get_close_matches(relative, shipped, n=1)
    return f"; did you mean {close[0]}?" if close else ""
