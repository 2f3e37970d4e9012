"""The `fmjax` command: one function per subcommand (`main.py`) and `fmjax inspect`'s report."""
