"""What every benchmark script needs to report: versions, the machine, and the markdown file.

Imported by the scripts in this folder (run as `python benchmarks/<name>.py`).
"""

import importlib.metadata
import pathlib
import platform
import re


def version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_name():
    """platform.processor() is often empty on Linux; /proc/cpuinfo names the CPU model."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
