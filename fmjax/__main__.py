"""`python -m fmjax ...` is the `fmjax` command."""

from fmjax.cli.main import run

if __name__ == "__main__":
    run()
