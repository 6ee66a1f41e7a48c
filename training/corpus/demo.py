"""The synthetic demo corpus on disk: ``make train`` data without a music folder, each song
with its known ending (annotations.csv) and its instruments' onsets (``<song>.stems.json``);
``python -m training corpus`` writes it, or renders MIDI files as a corpus. The songs
themselves come from training/corpus/synth.py.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pi.files import atomic_write
from training.corpus.stems import STEMS_SUFFIX, render_midi_corpus, write_stems
from training.corpus.synth import ENDINGS, check_song_args, song_timing, synth_song_with_stems

GENERATOR_VERSION = 1  # bump when the sound changes, so corpora on disk are regenerated


@dataclass(frozen=True)
class SongSpec:
    path: Path
    seconds: float
    music_end_s: float
    ending: str  # "fade" | "quiet_tail" | "hard_stop"
    tempo_bpm: float
    seed: int


# ---------------------------------------------------------------------------- corpus on disk
def _song_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        with atomic_write(path, "w", encoding="utf-8") as f:
            f.write(text)


def generate_corpus(out_dir, *, n_songs: int = 12, seconds: float = 40.0, seed: int = 0,
                    sample_rate: int = 44100) -> list[SongSpec]:
    """Write ``song_XX_<ending>.wav`` (16-bit PCM) with its ``song_XX_<ending>.stems.json``
    (each instrument's onsets, see :mod:`training.corpus.stems`), ``annotations.csv``
    (``file,end_seconds``) and ``corpus.json`` (the parameters of each file) into ``out_dir``;
    return the specs.

    Idempotent: a song whose file exists with the parameters recorded in ``corpus.json`` (and
    the recorded size) is not rewritten. Songs this module wrote earlier that are no longer
    part of the corpus are removed, so the folder holds exactly the corpus.
    """
    import soundfile as sf

    if n_songs < 1 or seed < 0:
        raise ValueError(f"n_songs, seed: expected >= 1, >= 0, found {n_songs}, {seed}")
    seconds, sample_rate = float(seconds), int(sample_rate)
    check_song_args(seconds, ENDINGS[0], sample_rate, seed)  # before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        old = dict(json.loads((out / "corpus.json").read_text())["songs"])
    except (OSError, ValueError, TypeError, KeyError):
        old = {}  # no usable record: every song is (re)written
    width = max(2, len(str(n_songs - 1)))
    specs, entries = [], {}
    for i in range(n_songs):
        ending, song_seed = ENDINGS[i % len(ENDINGS)], _song_seed(seed, i)
        check_song_args(seconds, ending, sample_rate, song_seed)
        name = f"song_{i:0{width}d}_{ending}.wav"
        path = out / name
        params = {"version": GENERATOR_VERSION, "seconds": seconds, "seed": song_seed,
                  "ending": ending, "sample_rate": sample_rate}
        n, tempo, end, _ = song_timing(np.random.default_rng(song_seed), seconds, ending, sample_rate)
        prev = old.get(name)
        stems = path.with_name(path.stem + STEMS_SUFFIX)
        if not (path.is_file() and stems.is_file()
                and prev == {"params": params, "bytes": path.stat().st_size}):
            samples, _, onsets = synth_song_with_stems(seconds=seconds, seed=song_seed,
                                                       ending=ending, sample_rate=sample_rate)
            tmp = path.with_name(name + ".tmp")
            sf.write(str(tmp), samples, sample_rate, subtype="PCM_16", format="WAV")
            os.replace(tmp, path)
            write_stems(stems, onsets)
        entries[name] = {"params": params, "bytes": path.stat().st_size}
        specs.append(SongSpec(path=path, seconds=n / sample_rate, music_end_s=end / sample_rate,
                              ending=ending, tempo_bpm=tempo, seed=song_seed))
    for name in old:  # songs written earlier that are no longer part of this corpus
        if name not in entries and "/" not in name and name.startswith("song_"):
            (out / name).unlink(missing_ok=True)
            (out / (Path(name).stem + STEMS_SUFFIX)).unlink(missing_ok=True)
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["file", "end_seconds"])
    writer.writerows([s.path.name, repr(s.music_end_s)] for s in specs)
    _write_if_changed(out / "annotations.csv", rows.getvalue())
    _write_if_changed(out / "corpus.json", json.dumps(
        {"generator_version": GENERATOR_VERSION, "songs": entries}, indent=1, sort_keys=True) + "\n")
    return specs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training corpus",
                                     description="Generate a seeded synthetic music corpus.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--midi-dir", default=None,
                        help="render these MIDI files (fluidsynth, TimGM6mb) with their stems "
                             "instead of generating songs, e.g. "
                             "/usr/share/games/openttd/baseset/openmsx")
    parser.add_argument("--songs", type=int, default=12, help="number of songs (default 12)")
    parser.add_argument("--seconds", type=float, default=40.0, help="song length (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    parser.add_argument("--sample-rate", type=int, default=44100)
    args = parser.parse_args(argv)
    if args.midi_dir:
        wavs = render_midi_corpus(args.midi_dir, args.out)
        for wav in wavs:
            print(wav)
        return 0 if wavs else 1
    try:
        specs = generate_corpus(args.out, n_songs=args.songs, seconds=args.seconds,
                                seed=args.seed, sample_rate=args.sample_rate)
    except ValueError as exc:
        parser.error(str(exc))
    for s in specs:
        print(f"{s.path}  {s.seconds:.1f} s  {s.tempo_bpm:.0f} bpm  ending={s.ending}  "
              f"music_end_s={s.music_end_s:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
