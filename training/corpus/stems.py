"""Songs with known stems: each instrument's onsets, to judge whether a channel follows one.

Two sources, as ``shared/structure-metrics.md`` defines stems:

* a MIDI file (read with ``mido``): every non-drum MIDI channel is a stem, and channel 10's
  drums are split by note number into ``kick``, ``snare``, ``hats`` and ``perc``;
* a JSON file ``{stem: [onset seconds]}``, as the demo corpus and :func:`render_midi_corpus`
  write next to each song (``<song>.stems.json``).

Either way, onsets closer than 50 ms to the previous kept onset of the same stem are merged
(chords), and stems with fewer than 20 onsets are dropped.

:func:`render_midi_corpus` is the MIDI corpus source beside the music library: it renders
each ``.mid`` with fluidsynth and a General MIDI soundfont (TimGM6mb), and writes the stems
read from the same file, so the onsets are exact.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from pi.files import atomic_write

MERGE_S = 0.050
MIN_ONSETS = 20
DRUM_CHANNEL = 9  # MIDI channel 10, counted from 0 as mido counts
KICK, SNARE = {35, 36}, {37, 38, 39, 40}
HATS = {42, 44, 46, 49, 51, 52, 53, 55, 57, 59}
SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
STEMS_SUFFIX = ".stems.json"


class StemsError(ValueError):
    """A stems file that cannot be read, naming the file and what was expected."""


def drum_stem(note: int) -> str:
    return "kick" if note in KICK else "snare" if note in SNARE else \
        "hats" if note in HATS else "perc"


def clean_stems(onsets: dict[str, list[float]]) -> dict[str, np.ndarray]:
    """Merge onsets within 50 ms of the previous kept one; drop stems with < 20 onsets."""
    out = {}
    for name, times in onsets.items():
        kept: list[float] = []
        for t in sorted(float(x) for x in times):
            if not kept or t - kept[-1] >= MERGE_S:
                kept.append(t)
        if len(kept) >= MIN_ONSETS:
            out[name] = np.array(kept)
    return out


def midi_onsets(path: str | Path) -> dict[str, list[float]]:
    """Raw note-on times per stem of a MIDI file, in seconds (tempo changes applied)."""
    import mido

    try:
        midi = mido.MidiFile(str(path))
    except (OSError, EOFError, ValueError, KeyError, IndexError) as exc:
        raise StemsError(f"{path}: expected a standard MIDI file, found {exc}") from exc
    onsets: dict[str, list[float]] = {}
    now = 0.0
    for msg in midi:  # merged tracks, ``time`` is the delta in seconds
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            name = drum_stem(msg.note) if msg.channel == DRUM_CHANNEL \
                else f"channel_{msg.channel + 1:02d}"
            onsets.setdefault(name, []).append(now)
    return onsets


def load_stems(path: str | Path) -> dict[str, np.ndarray]:
    """A song's stems from a ``.mid``/``.midi`` file or a ``{stem: [seconds]}`` JSON file."""
    path = Path(path)
    if path.suffix.lower() in (".mid", ".midi"):
        return clean_stems(midi_onsets(path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StemsError(f"{path}: expected a JSON file of {{stem: [onset seconds]}}, "
                         f"found {exc}") from exc
    if not isinstance(data, dict) or not all(
            isinstance(v, list) and all(isinstance(t, (int, float)) for t in v)
            for v in data.values()):
        raise StemsError(f"{path}: expected {{stem: [onset seconds]}}, found "
                         f"{type(data).__name__} with other values")
    return clean_stems(data)


def sidecar(song: str | Path) -> Path:
    """Where a song's stems are looked for by default: ``<song>.stems.json`` beside it."""
    song = Path(song)
    return song.with_name(song.stem + STEMS_SUFFIX)


def write_stems(path: Path, onsets: dict[str, list[float]]) -> None:
    """Write raw onsets as JSON, atomically (temporary name, then rename)."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(json.dumps({k: [round(t, 6) for t in v] for k, v in sorted(onsets.items())},
                           indent=0) + "\n")


def render_midi(midi: Path, wav: Path, *, soundfont: Path = SOUNDFONT) -> None:
    """Render a MIDI file to a 44.1 kHz WAV with fluidsynth (gain 0.3, no MIDI input)."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise StemsError("fluidsynth: expected the fluidsynth program (apt install fluidsynth "
                         "timgm6mb-soundfont), found none on PATH")
    if not soundfont.is_file():
        raise StemsError(f"{soundfont}: expected a General MIDI soundfont, found no file")
    tmp = wav.with_name(wav.stem + ".tmp.wav")
    subprocess.run([exe, "-ni", "-g", "0.3", "-r", "44100", "-F", str(tmp), str(soundfont),
                    str(midi)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.replace(tmp, wav)


def render_midi_corpus(midi_dir: str | Path, out_dir: str | Path, *,
                       soundfont: Path = SOUNDFONT) -> list[Path]:
    """Render every ``*.mid`` under ``midi_dir`` to ``out_dir/<name>.wav`` with its
    ``<name>.stems.json``; files already rendered are kept. Returns the WAV paths, and skips
    (with a line on stderr) a MIDI file that cannot be read or rendered."""
    import sys

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wavs = []
    for midi in sorted(Path(midi_dir).rglob("*.mid")):
        wav = out / f"{midi.stem}.wav"
        try:
            onsets = midi_onsets(midi)
            if not wav.is_file():
                render_midi(midi, wav, soundfont=soundfont)
        except (StemsError, subprocess.CalledProcessError) as exc:
            print(f"corpus: skipped {midi}: {exc}", file=sys.stderr)
            continue
        write_stems(sidecar(wav), onsets)
        wavs.append(wav)
    return wavs
