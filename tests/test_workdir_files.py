"""`workdir_files.write_atomic`, the one way fmjax writes its own files (config.json, image grids,
cached datasets and feature nets): a reader sees the old file or the new one, never a mix, and a
failed write leaves no temporary file behind."""

import errno
import os
import threading

import pytest

from fmjax.runtime import workdir_files


def test_a_failure_mid_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    path.write_bytes(b"old")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", disk_full)   # the new bytes are written, not yet on disk
    with pytest.raises(OSError, match="No space left"):
        workdir_files.write_atomic(path, b"new" * 1000)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_the_file_is_replaced_whole_with_the_permissions_of_a_plain_write(tmp_path):
    path, plain = tmp_path / "data_info.json", tmp_path / "plain"
    path.write_bytes(b"old")
    workdir_files.write_atomic(path, b"new")
    plain.write_bytes(b"")
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode == plain.stat().st_mode   # a private temp file would be 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data_info.json", "plain"]


def test_concurrent_writers_in_one_process_never_mix_their_files(tmp_path):
    """Threads share a process id: a temp name made from it alone would be shared by both."""
    path = tmp_path / "grid.png"
    contents = [bytes([i]) * 200_000 for i in range(4)]
    errors = []

    def write_many(data):
        try:
            for _ in range(20):
                workdir_files.write_atomic(path, data)
        except OSError as e:
            errors.append(e)
    threads = [threading.Thread(target=write_many, args=(c,)) for c in contents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert path.read_bytes() in contents
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]
