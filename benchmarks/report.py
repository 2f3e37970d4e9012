"""What every benchmark script needs to report: versions, the machine, and the markdown file.

Imported by the scripts in this folder (run as `python benchmarks/<name>.py`).
"""

import datetime
import importlib.metadata
import os
import pathlib
import re
import shlex
import subprocess

from fmjax.runtime.machine import cpu_flags, cpu_name


ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_checked(cmd, env=None, **kwargs) -> str:
    """Runs `cmd` from the repo root and returns its stdout; raises with its stderr's tail."""
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(map(str, cmd))} exited with {proc.returncode}:\n"
                           f"{proc.stderr[-3000:]}")
    return proc.stdout


def fmjax_env() -> dict:
    """This environment without XLA_FLAGS: fmjax runs on the real devices, not forced ones."""
    return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


def version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def provenance(script: str, argv: list[str], packages: tuple[str, ...]) -> str:
    """The header of a results section: the exact command, the date, the machine, versions."""
    command = shlex.join(["python", f"benchmarks/{script}", *argv])
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = ", ".join(f"{p} {version(p)}" for p in packages)
    return (f"Command: `{command}`  \nDate: {now}  \nMachine: {cpu_name()}, "
            f"{os.cpu_count()} CPUs, flags {cpu_flags()}  \nVersions: {versions}\n\n")


def fmt(x, spec):
    return "failed" if x is None else format(x, spec)


def write_section(path, heading, body):
    """Replaces the `## ` section titled `heading` in the markdown file `path`, or appends it."""
    path = pathlib.Path(path)
    text = path.read_text() if path.exists() else ""
    section = f"{heading}\n\n{body}\n"
    pattern = re.compile(rf"^{re.escape(heading)}[ \t]*\n.*?(?=^#{{1,2}} |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + section
    path.write_text(text)
