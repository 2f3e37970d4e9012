"""TensorBoard event files in a gs:// workdir, written through `etils.epath` like every other
file of a workdir (tensorboardX's own gs:// writer needs google-cloud-storage and bypasses it).

Cloud Storage objects cannot be appended to, so each flush (every `flush_secs`, 120 s by
default, and at the end) uploads the whole event file again.
"""

import io

from fmjax.runtime import workdir_files


class _EventFile:
    def __init__(self, path: str):
        self.path = workdir_files.as_path(path)
        self.buffer = io.BytesIO()

    def write(self, data: bytes) -> None:
        self.buffer.write(data)

    def flush(self) -> None:
        self.path.write_bytes(self.buffer.getvalue())

    def close(self) -> None:
        self.flush()


class _EventFileFactory:
    def open(self, path: str) -> _EventFile:
        return _EventFile(path)

    def directory_check(self, path: str) -> None:
        """Cloud Storage has no directories to create."""


def register() -> None:
    """Send tensorboardX's gs:// event files through `_EventFile`."""
    from tensorboardX import record_writer
    record_writer.register_writer_factory("gs", _EventFileFactory())
