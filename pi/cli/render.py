"""`lightshow render`: a song's show to CSV, an FPP sequence (.fseq) and xLights timing tracks
(.xtiming); or every song of a folder or playlist to FPP sequences, with a progress bar."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from pi.config import MAPPERS

log = logging.getLogger("lightshow")


def add_render_command(sub, common) -> None:
    rd = sub.add_parser(
        "render", parents=[common], help="a song's show to CSV, FPP .fseq or xLights "
        ".xtiming; a folder's songs to .fseq files",
        description="Render a song's show offline: exactly the show that playlist mode "
                    "plays (the whole song planned ahead, so the lights follow its sections); "
                    "--causal renders the line-in show instead. SONG is a song file; with "
                    "--fseq-dir it may also be a folder (searched recursively) or an .m3u "
                    "playlist.")
    rd.add_argument("song", metavar="SONG")
    rd.add_argument("--csv", help="write time_s,ch1..,act1.. here")
    rd.add_argument("--fseq", help="write an FPP sequence (FSEQ v2) here")
    rd.add_argument("--xtiming", help="write xLights timing tracks here: one per channel, "
                    "and the onsets")
    rd.add_argument("--fseq-dir", type=Path, help="write one SONG_NAME.fseq per song here "
                    "(SONG may be a folder or a playlist)")
    from pi.offline import STEP_MS  # not pi.offline.render: `run` starts without it

    rd.add_argument("--step-ms", type=int, choices=STEP_MS, default=STEP_MS[0],
                    help="FPP frame time in ms (default %(default)s)")
    rd.add_argument("--levels", action="store_true",
                    help="dimmer levels 0..255 in the .fseq, as the sACN dimmer output sends "
                         "them (default: 255 for on)")
    rd.add_argument("--compression", choices=("none", "zstd"), default="none",
                    help="of the .fseq frames; zstd needs the [fseq] extra (default none)")
    rd.add_argument("--model", help="model bundle folder (default: the shipped model)")
    rd.add_argument("--mapper", choices=MAPPERS, default="model")
    rd.add_argument("--causal", action="store_true",
                    help="the line-in show, decided frame by frame from the past alone "
                         "(default: the look-ahead show that playlist mode plays)")
    rd.set_defaults(func=cmd_render)


def cmd_render(args: argparse.Namespace) -> int:
    from pi.show.pipeline import make_show

    single = [o for o in ("csv", "fseq", "xtiming") if getattr(args, o)]
    if args.fseq_dir is not None and single:
        log.error("render: expected either --fseq-dir or --%s, found both",
                  " / --".join(single))
        return 2
    if args.fseq_dir is None and not single:
        log.error("render: expected at least one of --csv, --fseq, --xtiming, --fseq-dir, "
                  "found none")
        return 2
    if args.fseq_dir is None and Path(args.song).is_dir():
        log.error("render %s: expected a song file with --csv, --fseq or --xtiming, found a "
                  "folder (--fseq-dir OUT/ renders a folder)", args.song)
        return 2
    show = make_show(model=args.model, mapper=args.mapper)
    if args.fseq_dir is not None:
        return _render_playlist(args, show)
    return _render_one(args, show)


def _render_one(args, show) -> int:
    from pi.audio.decode import AudioFileError
    from pi.offline.render import n_steps, render_song, write_csv, write_fseq, write_xtiming

    song = Path(args.song)
    expected: tuple[type[Exception], ...] = (AudioFileError,)
    if args.fseq:  # the FPP writer's module only when a sequence is written (start-up)
        from pi.offline.fseq import FseqError

        expected += (FseqError,)
    try:
        timeline = render_song(song, show, levels=args.levels and bool(args.fseq),
                               onsets=bool(args.xtiming), lookahead=not args.causal)
        if args.csv:
            write_csv(timeline, args.csv)
        if args.fseq:
            size = write_fseq(timeline, args.fseq, media_file=song.name, step_ms=args.step_ms,
                              levels=args.levels, compression=args.compression)
        if args.xtiming:
            write_xtiming(timeline, args.xtiming, song_name=song.stem, step_ms=args.step_ms)
    except expected as exc:
        log.error("%s", exc)
        return 1
    seconds = timeline.times_s[-1] if len(timeline.times_s) else 0.0
    kind = "causal" if args.causal else "look-ahead"
    print(f"wrote {len(timeline.times_s)} frames ({seconds:.1f} s, show {show.name}, {kind}) "
          "to "
          + ", ".join(str(getattr(args, o)) for o in ("csv", "fseq", "xtiming")
                      if getattr(args, o))
          + (f" (fseq: {n_steps(timeline.duration_s, step_ms=args.step_ms)} frames of "
             f"{args.step_ms} ms, {size} bytes, {args.compression})" if args.fseq else ""))
    return 0


def _bar(done: int, total: int, width: int = 24) -> str:
    filled = width * done // max(total, 1)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done:>{len(str(total))}}/{total}"


def _render_playlist(args, show) -> int:
    """Every song to OUT/<song name>.fseq (FPP pairs a sequence with the song of the same
    name); a song that cannot be rendered is skipped and listed at the end."""
    from pi.audio.decode import AudioFileError
    from pi.offline.fseq import FseqError
    from pi.audio.playlist import expand
    from pi.offline.render import render_song, write_fseq

    songs = expand([args.song])
    if not songs:
        log.error("render %s: expected songs (wav, flac, ogg, mp3) there, found none",
                  args.song)
        return 1
    args.fseq_dir.mkdir(parents=True, exist_ok=True)
    skipped, taken, start = [], {}, time.monotonic()
    for i, song in enumerate(songs):
        print(f"{_bar(i, len(songs))} {song.name}", file=sys.stderr, flush=True)
        out = args.fseq_dir / f"{song.stem}.fseq"
        if out.name in taken:
            # FPP finds a song's sequence by name: two of a name cannot both be there.
            skipped.append((song, f"expected one song per name, found {taken[out.name]} "
                                  f"too"))
            continue
        taken[out.name] = song
        try:
            timeline = render_song(song, show, levels=args.levels, lookahead=not args.causal)
            write_fseq(timeline, out, media_file=song.name, step_ms=args.step_ms,
                       levels=args.levels, compression=args.compression)
        except (AudioFileError, FseqError, OSError) as exc:
            skipped.append((song, str(exc)))
            log.error("skipped %s: %s", song, exc)
    print(f"{_bar(len(songs), len(songs))} done in {time.monotonic() - start:.1f} s",
          file=sys.stderr, flush=True)
    print(f"wrote {len(songs) - len(skipped)} of {len(songs)} sequences to {args.fseq_dir}")
    for song, why in skipped:
        print(f"skipped {song}: {why}")
    return 1 if skipped else 0
