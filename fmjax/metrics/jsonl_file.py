"""`metrics.jsonl`: one JSON record per logged step, appended as it is logged.

A resumed run first drops the lines for steps after its checkpoint, so the file of a resumed run
equals that of a run that never stopped. Cloud Storage objects cannot be appended to: in a gs://
workdir the whole file is uploaded again, at most once every `UPLOAD_INTERVAL_S` seconds (the rate
at which one object may change) and when the run ends, so a killed run can lose the lines of its
last second (a resumed run writes again those after its checkpoint).
"""

import json
import time

from fmjax.runtime import workdir_files

UPLOAD_INTERVAL_S = 1.0


def _truncate_after(path, step: int) -> None:
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except json.JSONDecodeError:   # blank, or torn by a crash in mid-write
            pass
    path.write_text("".join(line + "\n" for line in kept))


class JsonlFile:
    """Appends lines to `path` (a local path or a gs:// URL), after dropping those past
    `start_step`. Raises OSError when the filesystem refuses a write."""

    def __init__(self, path, start_step: int):
        self.path = workdir_files.as_path(path)
        _truncate_after(self.path, start_step)
        self.is_url = workdir_files.is_url(self.path)
        self._text = self.path.read_text() if self.is_url and self.path.exists() else ""
        self._unsent, self._sent_at = False, 0.0

    def append(self, line: str) -> None:
        if not self.is_url:
            with self.path.open("a") as f:
                f.write(line)
            return
        self._text += line
        self._unsent = True
        if time.monotonic() - self._sent_at >= UPLOAD_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        """Uploads the lines not yet in a gs:// file (nothing to do for a local one)."""
        if self._unsent:
            self.path.write_text(self._text)
            self._unsent, self._sent_at = False, time.monotonic()
