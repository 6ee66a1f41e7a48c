"""Playlists: files, folders and .m3u lists; in order or shuffled; once or forever.

A playlist is expanded again at the start of every pass, so songs copied into the music
folder while the show runs are picked up on the next round, and a folder that does not exist
yet (a USB stick not plugged in) is a warning, not a crash.
"""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Iterator, Sequence

from pi.audio.decode import find_songs
from pi.audio.music_order import apply_order

log = logging.getLogger(__name__)

PLAYLIST_SUFFIXES = (".m3u", ".m3u8")
_MAX_M3U_DEPTH = 8  # an .m3u may list other .m3u files, up to this deep


def _entry(raw: bytes, folder: Path) -> Path:
    """One line's path. UTF-8 when it is; otherwise Latin-1 (Windows players write .m3u in
    their code page), or the bytes as the file system has them, whichever exists."""
    try:
        return folder / raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    latin = folder / raw.decode("cp1252", errors="replace").replace("\ufffd", "?")
    if not latin.exists():
        as_is = folder / os.fsdecode(raw)  # a name written by an old Latin-1 system
        if as_is.exists():
            return as_is
    return latin


def read_m3u(path: str | Path) -> list[Path]:
    """Entries of an .m3u/.m3u8 file: one path per line, ``#`` lines are comments (and the
    ``#EXTINF`` metadata), relative paths are relative to the list's own folder. Lines that
    are not UTF-8 are read as Latin-1 (Windows-1252), as old players write them."""
    path = Path(path)
    entries = []
    for raw in path.read_bytes().splitlines():
        line = raw.strip().removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark
        if not line or line.startswith(b"#"):
            continue
        if b"://" in line:
            log.warning("%s: skipping %s: expected a local file, found a URL", path,
                        line.decode("utf-8", errors="replace"))
            continue
        entries.append(_entry(line, path.parent))  # an absolute entry replaces the folder
    return entries


def expand(entries: Sequence[str | Path], *, _within: tuple[Path, ...] = ()) -> list[Path]:
    """Songs for files, folders (recursively, sorted, or in the order the web panel keeps in
    the folder's playlist-order.m3u) and .m3u lists, in the given order.
    Entries that do not exist are logged and skipped; so is a list that lists itself, or a
    list that lists it (it would play its songs over and over)."""
    songs: list[Path] = []
    for entry in map(Path, entries):
        if entry.suffix.lower() in PLAYLIST_SUFFIXES and entry.is_file():
            here = entry.resolve()
            if here in _within:
                log.warning("%s: skipped: a playlist that includes itself (through %s); "
                            "expected songs, folders or other playlists", entry,
                            " -> ".join(p.name for p in _within + (here,)))
                continue
            if len(_within) >= _MAX_M3U_DEPTH:
                log.warning("%s: skipped: expected at most %d nested playlists, found more",
                            entry, _MAX_M3U_DEPTH)
                continue
            try:
                songs += expand(read_m3u(entry), _within=_within + (here,))
            except OSError as exc:
                log.warning("%s: skipped: cannot read the playlist: %s", entry, exc)
            continue
        try:
            # A file listed explicitly is taken whatever its suffix (soundfile reads more than
            # the usual ones); one it cannot decode is skipped with a log line when it comes up.
            found = find_songs(entry)
            songs += apply_order(entry, found) if entry.is_dir() else found
        except FileNotFoundError as exc:
            log.warning("playlist: %s", exc)
    return songs


class Playlist:
    """The songs to play, pass after pass.

    ``passes()`` yields one list of songs per round: the entries expanded afresh, shuffled
    with ``seed`` when asked (a new order every round), and only one round unless ``repeat``.
    """

    def __init__(self, entries: Sequence[str | Path], *, shuffle: bool = False,
                 repeat: bool = False, seed: int | None = None):
        if not entries:
            raise ValueError("playlist: expected at least one file, folder or .m3u, "
                             "found none")
        self.entries = [Path(e) for e in entries]
        self.shuffle = shuffle
        self.repeat = repeat
        self._rng = random.Random(seed)

    def passes(self) -> Iterator[list[Path]]:
        while True:
            songs = expand(self.entries)
            if self.shuffle:
                self._rng.shuffle(songs)
            yield songs
            if not self.repeat:
                return
