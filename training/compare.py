"""``python -m training compare``: the comparison table issue 8's note gives.

One markdown table for a list of songs, every show metric and the structure metrics, for:
the shipped (dense) model and the conv model through the show logic, ``--mapper bands``
through the same logic, LightShowPi's band split as shipped and its relay-safe variant
(training/lightshowpi.py), and the shuffled null of the shipped model's show
(pi/offline/structure.py ``shuffled_null``, scored with every metric, averaged over seeds 0,
1 and 2). Each song is decoded once and its reference signals computed once for all rows.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from pi.audio.decode import AudioFileError, read_song
from pi.offline.metrics import HEADLINE, SHOW_HEADLINE
from pi.offline.render import Timeline, render_blocks
from pi.offline.structure import NULL_SEEDS, shuffled_null
from pi.show.bundle import DEFAULT_BUNDLE, BundleError, load_bundle, shipped_bundle
from pi.show.pipeline import make_show
from training.corpus.stems import StemsError, load_stems
from training.evaluate import mean_metrics, score, song_reference, stems_for
from training.lightshowpi import CHUNK_AS_SHIPPED, lightshowpi_timeline

DENSE, CONV, BANDS = "shipped model (dense)", "conv model", "`--mapper bands`"
LSP_SHIPPED = "LightShowPi, 2048 chunk, as shipped"
LSP_SAFE = "LightShowPi, 1024 chunk, 100 ms hold"
NULL = "shuffled null of the shipped model"
ROWS = (DENSE, CONV, BANDS, LSP_SHIPPED, LSP_SAFE, NULL)
# The columns issue 8 asks for: every show metric, then ssmCorr, stemF, stemLift, ssmLift.
_BY_KEY = {h.key: h for h in HEADLINE}
COLUMNS = SHOW_HEADLINE + tuple(_BY_KEY[k] for k in ("ssmCorr", "stemF", "stemLift", "ssmLift"))
RATIO_KEYS = ("ssmCorr", "stemLift")
EXAMPLE = """example (held-out real songs, then MIDI renders with their stems):
  M=/usr/share/games/wesnoth/1.16/data/core/music
  python -m training compare $M/breaking_the_chains.ogg $M/wanderer.ogg
  python -m training compare --stems-dir /usr/share/games/openttd/baseset/openmsx \\
      /work/data/midi/coconut_run2.wav /work/data/midi/flying_scotsman.wav
  add --causal for the line-in show; `make compare` runs both held-out sets."""


def null_metrics(audio: np.ndarray, timeline: Timeline, *, reference: dict,
                 stems: dict | None = None) -> dict:
    """Every metric of the shuffled null of a show (its timing kept, its channels shuffled),
    averaged over the null seeds (the worst min run, as :func:`mean_metrics` takes it)."""
    return mean_metrics(
        score(audio, Timeline(timeline.times_s, shuffled_null(timeline.states, seed=seed),
                              timeline.activations), reference=reference, stems=stems)
        for seed in NULL_SEEDS)


def song_rows(audio: np.ndarray, shows: dict[str, Callable], *, stems: dict | None = None,
              lookahead: bool = True) -> dict[str, dict]:
    """Every row's metrics for one song, mono at 44.1 kHz. ``shows`` builds a fresh show for
    :data:`DENSE`, :data:`CONV` and :data:`BANDS` (a missing one is left out)."""
    reference = song_reference(audio)  # once, for every row of this song
    out, dense = {}, None
    for name in (DENSE, CONV, BANDS):
        if name not in shows:
            continue
        timeline = render_blocks([audio], shows[name](), lookahead=lookahead)
        out[name] = score(audio, timeline, reference=reference, stems=stems)
        if name == DENSE:
            dense = timeline
    for name, chunk, hold_s in ((LSP_SHIPPED, CHUNK_AS_SHIPPED, 0.0), (LSP_SAFE, 1024, 0.1)):
        out[name] = score(audio, lightshowpi_timeline(audio, chunk=chunk, hold_s=hold_s),
                          reference=reference, stems=stems)
    if dense is not None:
        out[NULL] = null_metrics(audio, dense, reference=reference, stems=stems)
    return out


def compare_songs(paths: list[Path], shows: dict[str, Callable], *,
                  stems: dict[str, dict] | None = None, lookahead: bool = True,
                  log=None) -> dict:
    """``{"mean": {row: metrics}, "songs": {path: {row: metrics}}, "skipped": {path:
    reason}}``; a song that cannot be decoded is skipped with the reason."""
    per_song, skipped = {}, {}
    for path in paths:
        try:
            audio = read_song(path)
        except AudioFileError as exc:
            skipped[str(path)] = str(exc)
            continue
        per_song[str(path)] = song_rows(audio, shows, stems=(stems or {}).get(str(path)),
                                        lookahead=lookahead)
        if log:
            print(f"compare: {path}", file=log, flush=True)
    rows = [r for r in ROWS if any(r in s for s in per_song.values())]
    mean = {r: mean_metrics(s[r] for s in per_song.values()) for r in rows}
    return {"mean": mean, "songs": per_song, "skipped": skipped}


def _cell(headline, value) -> str:
    return "–" if value is None else headline.fmt.format(value)


def markdown_table(mean: dict[str, dict]) -> str:
    """One row per show, one column per metric (– where undefined, e.g. stemF without
    stems)."""
    lines = ["| show | " + " | ".join(h.label for h in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for row, metrics in mean.items():
        lines.append(f"| {row} | " + " | ".join(_cell(h, metrics.get(h.key)) for h in COLUMNS)
                     + " |")
    return "\n".join(lines)


def ratios(mean: dict[str, dict]) -> dict[str, dict[str, float | None]]:
    """learned / bands for ssmCorr and stemLift (issue 8's goal: ≥ 1.2 on both); None where
    either side is undefined or bands' is not positive (a ratio to ≤ 0 says nothing)."""
    out = {}
    bands = mean.get(BANDS, {})
    for row in (DENSE, CONV):
        if row not in mean:
            continue
        out[row] = {}
        for key in RATIO_KEYS:
            a, b = mean[row].get(key), bands.get(key)
            out[row][key] = a / b if a is not None and b is not None and b > 0 else None
    return out


def _read_song_list(path: str) -> list[str]:
    """One song per line; blank lines and ``#`` comments ignored."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]


def _stems_from_dir(songs: list[Path], folder: str) -> dict[str, dict]:
    """Each song's ``<folder>/<song name>.mid``, where it exists (a song without one is said
    on stderr: its stemF stays empty)."""
    import sys

    if not Path(folder).is_dir():
        raise StemsError(f"--stems-dir {folder}: expected a folder of .mid files, found "
                         f"{'a file' if Path(folder).exists() else 'no such folder'}")
    out = {}
    for song in songs:
        midi = Path(folder) / f"{song.stem}.mid"
        if midi.is_file():
            out[str(song)] = load_stems(midi)
        else:
            print(f"compare: {song.name}: no stems ({midi} not found)", file=sys.stderr)
    return out


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m training compare", epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print one markdown table comparing, on the given songs, the shipped "
                    "and conv models and --mapper bands through the show logic, "
                    "LightShowPi's band split (as shipped; 1024 chunk with a 100 ms hold) "
                    "and the shuffled null of the shipped model's show. Project shows are "
                    "the look-ahead show that playlist mode and render play, unless "
                    "--causal.")
    ap.add_argument("--model", default=str(DEFAULT_BUNDLE),
                    help="the dense bundle (default: the shipped one, %(default)s)")
    ap.add_argument("--conv-model", default=str(shipped_bundle("default-conv")),
                    help="the conv bundle (default: %(default)s)")
    ap.add_argument("--causal", action="store_true",
                    help="score the line-in show, decided from the past alone")
    stems = ap.add_mutually_exclusive_group()
    stems.add_argument("--stems", action="append", metavar="FILE",
                       help="a song's stems for stemF (MIDI or {stem: [seconds]} JSON), one "
                            "per song in order (default: <song>.stems.json where it exists)")
    stems.add_argument("--stems-dir", metavar="DIR",
                       help="take each song's stems from DIR/<song name>.mid")
    ap.add_argument("--songs-from", metavar="FILE",
                    help="a file listing songs, one per line (# comments)")
    ap.add_argument("--json", metavar="FILE", help="also write every song's metrics here")
    ap.add_argument("songs", nargs="*")
    args = ap.parse_intermixed_args(argv)  # songs may come before and after options
    try:
        names = (_read_song_list(args.songs_from) if args.songs_from else []) + args.songs
    except OSError as exc:
        print(f"compare: --songs-from: {exc}", file=sys.stderr)
        return 2
    if not names:
        ap.error("expected songs (positional or --songs-from), found none")
    songs = [Path(s) for s in names]
    try:
        stems_by_song = (_stems_from_dir(songs, args.stems_dir) if args.stems_dir
                         else stems_for(songs, args.stems))
        # Loaded once: a bad bundle is an error here, never the daemon's quiet fallback.
        dense, conv = load_bundle(args.model), load_bundle(args.conv_model)
    except (StemsError, BundleError) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    shows = {DENSE: lambda: make_show(model=dense), CONV: lambda: make_show(model=conv),
             BANDS: lambda: make_show(mapper="bands")}
    result = compare_songs(songs, shows, stems=stems_by_song, lookahead=not args.causal,
                           log=sys.stderr)
    for path, reason in result["skipped"].items():
        print(f"compare: skipped {reason}", file=sys.stderr)
    if not result["songs"]:
        return 1
    kind = "causal (line-in)" if args.causal else "look-ahead (playlist, render)"
    with_stems = sum(1 for s in result["songs"] if s in stems_by_song)
    print(f"{len(result['songs'])} songs ({with_stems} with stems); project shows: {kind}\n")
    print(markdown_table(result["mean"]))
    print()
    for row, by_key in ratios(result["mean"]).items():
        print(f"{row} / bands: " + ", ".join(
            f"{k} {'–' if v is None else f'{v:.2f}'}" for k, v in by_key.items()))
    if args.json:
        result["show"] = "causal" if args.causal else "look-ahead"
        Path(args.json).write_text(json.dumps(result, indent=1, default=float) + "\n")
    return 0
