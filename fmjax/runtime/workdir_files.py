"""The small files fmjax writes and reads itself, outside Orbax: a run's config.json,
data_info.json and tokenizer, image grids, and what it caches (fmjax/runtime/cache.py).

A workdir is a local path or a Cloud Storage URL (`gs://bucket/run`). `as_path` gives a
`pathlib.Path` for the first and an `etils.epath.Path` (the path type Orbax uses) for the
second, and every file fmjax reads or writes in a workdir goes through it, so one test can send
gs:// to a local directory (tests/test_gcs_workdir.py).

A file cut short by a full disk or a killed process must never be half-used. So every such file
is written whole or not at all (`write_atomic`), and one that is damaged anyway (overwritten by
something else, a truncated copy) stops the command with one line naming the file (UserError:
exit 2), never a JSON or protobuf traceback.
"""

import importlib.util
import json
import os
import pathlib
import uuid
from typing import Any

from fmjax.errors import UserError

URL_PREFIXES = ("gs://",)   # what `as_path` sends to etils.epath; Orbax writes these natively


def is_url(path) -> bool:
    """Whether `path` (a string or a path) is a Cloud Storage URL rather than a local path."""
    return str(path).startswith(URL_PREFIXES)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:   # its parent package is missing
        return False


def check_url_support(workdir) -> None:
    """UserError unless a gs:// `workdir` can be used here: epath needs gcsfs (or TensorFlow's
    tf.io.gfile) and Orbax google-cloud-storage (it asks the bucket how to list and delete)."""
    if not is_url(workdir):
        return
    if not (_importable("google.cloud.storage")
            and (_importable("gcsfs") or _importable("tensorflow"))):
        raise UserError(f"workdir {workdir}: a gs:// workdir needs gcsfs and "
                        "google-cloud-storage: pip install 'fmjax[gcs]'")


def as_path(path) -> Any:
    """`path` as a `pathlib.Path`, or as an `etils.epath.Path` for a gs:// URL (never
    `pathlib.Path("gs://b/x")`, which is the local directory gs:/b/x)."""
    if is_url(path):
        from etils import epath   # late: only URL workdirs need it
        return epath.Path(str(path))
    return pathlib.Path(path)


def read_bytes(path, what: str) -> bytes:
    """The bytes of `path`, which holds `what` (e.g. "the run's tokenizer")."""
    path = as_path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path} is missing ({what})")
    except OSError as e:   # a directory, no permission, an I/O error
        raise UserError(f"cannot read {path} ({what}): {e.strerror or e}")


def read_json(path, what: str):
    """The JSON value in `path`; UserError naming the file when it is missing, not UTF-8 or not
    one whole JSON value (e.g. truncated)."""
    data = read_bytes(path, what)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise damaged(path, what, f"not UTF-8 text: byte {data[e.start]:#04x} at offset {e.start}")
    except json.JSONDecodeError as e:
        raise damaged(path, what, f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})")


def damaged(path, what: str, reason: str) -> UserError:
    """The error for a workdir file that exists but cannot be used."""
    return UserError(f"{path} is damaged ({what}): {reason}; restore it from a copy or use a new "
                     "workdir")


def write_atomic(path, data: bytes) -> None:
    """Write `path` whole or not at all: into a new, uniquely named file beside it (same file
    system, so the rename is atomic; concurrent writers never share one), flushed to disk, then
    renamed over `path`. Readers see the old file or the new one; a failure leaves no temp file.
    On Cloud Storage one upload is already whole or nothing: an object appears once complete."""
    path = as_path(path)
    if is_url(path):
        path.write_bytes(data)
        return
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:   # "x": never another writer's file; mode from the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
