"""Replacing a file atomically: the one way lightshow writes a file that something else reads.

A temporary file beside the target is written, flushed to disk, given its mode, renamed over
the target, and then the folder is synced, because the rename itself survives a power cut only
once the folder is on disk. A reader, or a Pi that loses power halfway, sees the old file or the
new one, never half of each. On any error, or Ctrl-C, the temporary file is removed and the old
file stays.
"""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", *, file_mode: int | None = None,
                 **open_kw):
    """Open a temporary file beside ``path`` for writing (``mode`` "w" or "wb", ``open_kw``
    as for :func:`open`); it replaces ``path`` when the block ends without an exception.

    ``file_mode``: the new file's permission bits, set before the rename. The temporary file
    is created 0600 then, so a secret is never readable by others, not even for a moment;
    without it the file gets the usual 0666 less the umask."""
    path = Path(path)
    # pid and thread: two writers of the same file never share a temporary name.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                 0o600 if file_mode is not None else 0o666)
    try:
        with os.fdopen(fd, mode, **open_kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if file_mode is not None:
            os.chmod(tmp, file_mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def sync_folder(folder: str | Path) -> None:
    """fsync a folder so that the renames in it are on disk; a file system that cannot
    (some FUSE and network mounts) is left as it is."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
