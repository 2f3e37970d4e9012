"""Reading the small files a run keeps in its workdir (config.json, data_info.json, tokenizers).

A file cut short by a full disk or a killed copy, or overwritten by something else, must stop
the command with one line naming the file (UserError: exit 2), never a JSON or protobuf
traceback, and never be half-used.
"""

import json
import pathlib

from fmjax.errors import UserError


def read_bytes(path, what: str) -> bytes:
    """The bytes of `path`, which holds `what` (e.g. "the run's tokenizer")."""
    path = pathlib.Path(path)
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
