"""The music folder as the panel sees it: list, upload, delete, reorder, and preview pages.

Decoding (the upload check, the previews) runs in a child process (``python -m
pi.web.probe`` and ``python -m pi preview``): numpy, libsndfile and the model never load into
the panel, which keeps its memory small and a crashing decoder out of it.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sys
import unicodedata
from pathlib import Path

from pi.audio.music_order import apply_order, write_order

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3")  # as pi/audio/decode.py reads them
MAX_NAME = 120
PROBE_TIMEOUT_S = 120.0
PREVIEW_TIMEOUT_S = 600.0
KEEP_PREVIEWS = 20  # pages of a few MB each: the newest are kept, the rest go
_rendering: dict[str, asyncio.Lock] = {}


class LibraryError(Exception):
    """A request on the library that cannot be done; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def music_folder(config) -> Path | None:
    """The first folder in audio.playlist: where uploads go (/var/lib/lightshow/music)."""
    for entry in config.audio.playlist:
        p = Path(entry)
        if p.is_dir() or p.suffix == "":
            return p
    return None


def sanitise_name(name: str) -> str:
    """A safe file name for an upload: its last path part, NFC, letters, digits, spaces and
    ``-_.,()'&+!``; no leading dot; a known audio suffix; at most MAX_NAME characters."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = unicodedata.normalize("NFC", base)
    stem, dot, suffix = base.rpartition(".")
    suffix = "." + suffix.lower() if dot else ""
    if suffix not in AUDIO_SUFFIXES:
        raise LibraryError(f"{base or 'the file'}: expected a name ending in "
                           f"{', '.join(AUDIO_SUFFIXES)}, found {suffix or 'no suffix'}")
    keep = "".join(c if (c.isalnum() or c in " -_.,()'&+!") else "_" for c in stem)
    keep = re.sub(r"\s+", " ", keep).strip(" ._")
    keep = keep[:MAX_NAME - len(suffix)].rstrip(" ._")
    if not keep:
        raise LibraryError(f"{base}: expected a name with letters or digits before the suffix")
    return keep + suffix


def list_songs(folder: Path | None) -> list[dict]:
    """The folder's songs in play order: ``{"name", "bytes"}`` (names relative, posix)."""
    if folder is None or not folder.is_dir():
        return []
    found = sorted(p for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    return [{"name": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size}
            for p in apply_order(folder, found)]


def song_path(folder: Path | None, name: str) -> Path:
    """The listed song called `name`; never a path built from the request alone."""
    for song in list_songs(folder):
        if song["name"] == name:
            return folder / song["name"]
    raise LibraryError(f"{name}: no such song in the music folder", 404)


def delete_song(folder: Path | None, name: str) -> None:
    path = song_path(folder, name)
    path.unlink()
    write_order(folder, [s["name"] for s in list_songs(folder)])


def reorder(folder: Path | None, names: list) -> list[dict]:
    """Put the listed songs first, in that order; every name must be a song."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise LibraryError("expected a JSON list of song names")
    have = [s["name"] for s in list_songs(folder)]
    unknown = [n for n in names if n not in have]
    if unknown:
        raise LibraryError(f"{unknown[0]}: no such song in the music folder", 404)
    if len(set(names)) != len(names):
        raise LibraryError("expected each song once")
    write_order(folder, list(names) + [n for n in have if n not in names])
    return list_songs(folder)


async def run_child(*args: str, timeout_s: float) -> tuple[int, str] | None:
    """Run ``python -m ARGS`` (decoding stays out of the panel's memory): its exit code and
    the end of its output, or None when it took longer than ``timeout_s`` (it is killed)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    return proc.returncode, out.decode("utf-8", "replace").strip()[-500:]


async def probe(path: Path) -> str:
    """'' if the file decodes (in a child process), else the decoder's message."""
    done = await run_child("pi.web.probe", str(path), timeout_s=PROBE_TIMEOUT_S)
    if done is None:
        return f"decoding took longer than {PROBE_TIMEOUT_S:g} s"
    return "" if done[0] == 0 else done[1]


async def add_song(folder: Path | None, name: str, upload, max_bytes: int) -> dict:
    """Copy an uploaded file (a file-like, read in chunks) into the folder: size-limited,
    written to a hidden temporary file, checked to decode, then renamed into place."""
    if folder is None:
        raise LibraryError("audio.playlist names no music folder to upload into", 409)
    name = sanitise_name(name)
    target = folder / name
    if target.exists():
        raise LibraryError(f"{name}: already in the music folder; delete it first", 409)
    folder.mkdir(parents=True, exist_ok=True)
    # The hidden name and the .part suffix keep the daemon's folder scan away from it.
    tmp = folder / f".upload-{os.getpid()}-{id(upload):x}.part"
    size = 0
    try:
        with open(tmp, "wb") as out:
            while chunk := await upload.read(1 << 16):
                size += len(chunk)
                if size > max_bytes:
                    raise LibraryError(f"{name}: expected at most {max_bytes >> 20} MB "
                                       f"(web.max_upload_mb), found more", 413)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size == 0:
            raise LibraryError(f"{name}: expected an audio file, found an empty upload")
        why = await probe(tmp)
        if why:
            raise LibraryError(f"{name}: not added: {why}", 422)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return {"name": name, "bytes": size}


async def preview_page(config, folder: Path | None, name: str, cache: Path) -> Path:
    """The song's preview page (pi/offline/preview.py, in a child process), cached per song version
    and model."""
    song = song_path(folder, name)
    st = song.stat()
    key = hashlib.sha256(f"{song}\0{st.st_size}\0{st.st_mtime_ns}\0{config.model.path}\0"
                         f"{config.model.mapper}".encode()).hexdigest()[:24]
    page = cache / f"preview-{key}.html"
    # One render per page at a time: a second tap on the link waits for the first.
    async with _rendering.setdefault(key, asyncio.Lock()):
        if not page.is_file():
            await _render_preview(config, song, name, page)
            _prune(cache)
    _rendering.pop(key, None)
    return page


def _prune(cache: Path) -> None:
    pages = sorted(cache.glob("preview-*.html"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in pages[KEEP_PREVIEWS:]:
        old.unlink(missing_ok=True)


async def _render_preview(config, song: Path, name: str, page: Path) -> None:
    cache = page.parent
    cache.mkdir(parents=True, exist_ok=True)
    args = ["--model", config.model.path] if config.model.path and \
        config.model.mapper == "model" else ["--mapper", config.model.mapper]
    done = await run_child("pi", "preview", str(song), "--out", str(page), *args,
                           timeout_s=PREVIEW_TIMEOUT_S)
    if done is None:
        raise LibraryError(f"{name}: the preview took longer than {PREVIEW_TIMEOUT_S:g} s",
                           504)
    if done[0] != 0 or not page.is_file():
        raise LibraryError(f"{name}: no preview: {done[1]}", 422)
