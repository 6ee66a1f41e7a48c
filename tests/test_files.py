"""Atomic file replacement (pi/files.py): old file or new, never half; no temporary left."""
import os
import stat

import pytest

from pi.files import atomic_write


def test_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "counts.json"
    target.write_text("old\n")
    with atomic_write(target, "w", encoding="utf-8") as f:
        f.write("new\n")
        assert target.read_text() == "old\n"  # a reader meanwhile sees the old file
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counts.json"]


def test_an_error_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "show.fseq"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["show.fseq"]


def test_file_mode_is_set_and_a_secret_is_never_world_readable(tmp_path):
    target = tmp_path / "web-password"
    with atomic_write(target, "w", file_mode=0o640) as f:
        f.write("hash\n")
        # While it is written, the temporary file is the owner's alone.
        assert stat.S_IMODE(os.fstat(f.fileno()).st_mode) == 0o600
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_without_file_mode_the_umask_applies(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "s.csv", "w", newline="") as f:
            f.write("time_s\r\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "s.csv").stat().st_mode) == 0o644
    assert (tmp_path / "s.csv").read_bytes() == b"time_s\r\n"
