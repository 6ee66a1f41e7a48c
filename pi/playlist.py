"""Playlists: files, folders and .m3u lists; in order or shuffled; once or forever.

A playlist is expanded again at the start of every pass, so songs copied into the music
folder while the show runs are picked up on the next round, and a folder that does not exist
yet (a USB stick not plugged in) is a warning, not a crash.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Iterator, Sequence

from pi.decode import find_songs
from pi.music_order import apply_order

log = logging.getLogger(__name__)

PLAYLIST_SUFFIXES = (".m3u", ".m3u8")
_MAX_M3U_DEPTH = 8  # an .m3u may list other .m3u files; this stops a list that lists itself


def read_m3u(path: str | Path) -> list[Path]:
    """Entries of an .m3u/.m3u8 file: one path per line, ``#`` lines are comments (and the
    ``#EXTINF`` metadata), relative paths are relative to the list's own folder."""
    path = Path(path)
    # .m3u8 is UTF-8 by definition; plain .m3u files from old players are often Latin-1, so
    # undecodable bytes are replaced rather than failing the whole list.
    text = path.read_text(encoding="utf-8", errors="replace")
    entries = []
    for line in text.splitlines():
        line = line.strip().lstrip("\ufeff")
        if not line or line.startswith("#"):
            continue
        if "://" in line:
            log.warning("%s: skipping %s: expected a local file, found a URL", path, line)
            continue
        entry = Path(line)
        entries.append(entry if entry.is_absolute() else path.parent / entry)
    return entries


def expand(entries: Sequence[str | Path], *, _depth: int = 0) -> list[Path]:
    """Songs for files, folders (recursively, sorted, or in the order the web panel keeps in
    the folder's playlist-order.m3u) and .m3u lists, in the given order.
    Entries that do not exist are logged and skipped."""
    songs: list[Path] = []
    for entry in map(Path, entries):
        if entry.suffix.lower() in PLAYLIST_SUFFIXES and entry.is_file():
            if _depth >= _MAX_M3U_DEPTH:
                log.warning("%s: skipped: expected at most %d nested playlists, found more",
                            entry, _MAX_M3U_DEPTH)
                continue
            try:
                songs += expand(read_m3u(entry), _depth=_depth + 1)
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
