"""The order of the songs in a music folder: its ``playlist-order.m3u``, written by the web
panel when songs are reordered, lists the folder's songs first to last; songs it does not
list follow in name order. Stdlib only (the web panel imports it without numpy).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

ORDER_FILE = "playlist-order.m3u"


def read_order(folder: str | Path) -> list[str]:
    """Relative paths listed in the folder's order file, in order; [] without one."""
    try:
        text = (Path(folder) / ORDER_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def apply_order(folder: str | Path, songs: Iterable[Path]) -> list[Path]:
    """`songs` (files under `folder`) in the order file's order, the rest after them in the
    order given."""
    folder = Path(folder)
    songs = list(songs)
    rank = {name: i for i, name in enumerate(read_order(folder))}
    if not rank:
        return songs

    def key(item):
        i, p = item
        try:
            rel = p.relative_to(folder).as_posix()
        except ValueError:
            rel = None
        return (0, rank[rel], 0) if rel in rank else (1, 0, i)
    return [p for _, p in sorted(enumerate(songs), key=key)]


def write_order(folder: str | Path, names: Iterable[str]) -> None:
    """Write the order file atomically (names relative to the folder, first to last)."""
    folder = Path(folder)
    tmp = folder / f".{ORDER_FILE}.tmp"
    tmp.write_text("#EXTM3U\n# song order, written by the lightshow web panel\n"
                   + "".join(f"{n}\n" for n in names), encoding="utf-8")
    tmp.replace(folder / ORDER_FILE)
