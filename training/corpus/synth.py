"""Seeded synthetic songs with known endings and stems: the sound of the demo corpus
(training/corpus/demo.py writes them to disk), of the tests, and of the ``make demo`` song.
Audio is never committed; this module makes it.

Every song is mono float32 with its own tempo (80-160 bpm), key (major or minor) and sections
(intro / verse / chorus / bridge) that change instrumentation, density and loudness: drums
(kick = pitch-swept sine, snare = noise burst + tone, closed/open hi-hat = differenced noise,
crash at section starts, snare fills), a bass line, chord pads (sine, saw-ish, square-ish and
triangle wavetables) and a lead motif (plucked or FM bell). Every song peaks at -3 dBFS.

Each song ends in one of three known ways. ``music_end_s`` is in seconds from the start of
the file and falls on a sample: it is ``end / sample_rate``, where sample ``end`` (that is,
``round(music_end_s * sample_rate)``) is the first sample after the music:

* ``fade``: the gain falls linearly in dB from 0 dB at ``music_end_s - fade`` (fade drawn from
  3-8 s) to exactly -40 dB at ``music_end_s``. The file ends 0.5-3 s after ``music_end_s``;
  over that stretch the gain keeps falling at the same dB rate and is also ramped linearly to
  zero at the file's last sample. So ``music_end_s`` is where the fade reaches -40 dB
  relative to the song's unfaded level, and nothing after it is louder than that.
* ``quiet_tail``: the music is cut by a 30 ms linear ramp that reaches zero at ``music_end_s``
  and is zero after it; 3-10 s of room noise (pinkish noise + mains hum, -70 dBFS RMS) follow
  to the end of the file. The same noise floor lies under the music too.
* ``hard_stop``: the music is cut by a 1 ms ramp reaching zero at ``music_end_s``, then 2-6 s
  of digital silence (exact zeros) to the end of the file.

The ending lengths are capped (fade and quiet tail at 30 %, silence at 25 % and the fade's
stretch after the fade at 10 % of ``seconds``) so that short test songs remain mostly music.
"""
from __future__ import annotations

import numpy as np

ENDINGS = ("fade", "quiet_tail", "hard_stop")
PEAK_DBFS = -3.0
FADE_END_DB = -40.0
ROOM_NOISE_DBFS = -70.0
MIN_SECONDS = 4.0
_ENDING_LENGTHS = {"fade": (3.0, 8.0, 0.30), "quiet_tail": (3.0, 10.0, 0.30),
                   "hard_stop": (2.0, 6.0, 0.25)}  # (low s, high s, cap as fraction of song)


# ---------------------------------------------------------------------------- sound sources
_TABLE_N = 4096


def _table(harmonics) -> np.ndarray:
    ph = 2.0 * np.pi * np.arange(_TABLE_N) / _TABLE_N
    w = sum(a * np.sin(k * ph) for k, a in harmonics)
    return (w / np.abs(w).max()).astype(np.float32)


_WAVES = {"sine": _table([(1, 1.0)]),
          "saw": _table([(k, 1.0 / k) for k in range(1, 9)]),
          "square": _table([(k, 1.0 / k) for k in range(1, 10, 2)]),
          "triangle": _table([(k, (-1) ** (k // 2) / k ** 2) for k in range(1, 10, 2)])}


def _osc(wave: str, freq: float, n: int, sr: int) -> np.ndarray:
    inc = int(round(freq * _TABLE_N / sr * 65536))  # fixed-point phase increment
    return _WAVES[wave][(np.arange(n, dtype=np.int64) * inc >> 16) & (_TABLE_N - 1)]


def _env(n: int, sr: int, attack: float, decay: float, sustain: float,
         release: float) -> np.ndarray:
    t = np.arange(n, dtype=np.float32) / sr
    e = np.minimum(t / attack, 1.0) * (sustain + (1.0 - sustain) * np.exp(-t / decay))
    return e * np.clip((n / sr - t) / release, 0.0, 1.0)


def _hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12.0)


def _kick(sr: int, rng) -> np.ndarray:
    t = np.arange(int(0.4 * sr)) / sr
    f0, f1, tau = rng.uniform(110, 180), rng.uniform(40, 60), rng.uniform(0.025, 0.06)
    phase = 2 * np.pi * (f1 * t + (f0 - f1) * tau * (1 - np.exp(-t / tau)))
    return (np.sin(phase) * np.exp(-t / rng.uniform(0.1, 0.22))).astype(np.float32)


def _snare(sr: int, rng) -> np.ndarray:
    t = np.arange(int(0.3 * sr)) / sr
    noise = np.diff(rng.standard_normal(len(t) + 1)) * 0.35
    tone = np.sin(2 * np.pi * rng.uniform(160, 240) * t) * np.exp(-t / 0.04)
    return (noise * np.exp(-t / rng.uniform(0.05, 0.11)) + 0.5 * tone).astype(np.float32)


def _hat(sr: int, rng, decay: float) -> np.ndarray:
    t = np.arange(int(min(6 * decay, 2.5) * sr)) / sr
    hp = np.diff(rng.standard_normal(len(t) + 2), 2) / 2.0  # 2nd difference = high-pass
    return (hp * np.exp(-t / decay)).astype(np.float32)


def _pluck(freq: float, n: int, sr: int, bright: float) -> np.ndarray:
    t = np.arange(n, dtype=np.float32) / sr
    out = np.zeros(n, np.float32)
    for k in range(1, 7):  # higher harmonics die faster, like a plucked string
        rate = 2.0 + bright * k * k
        m = min(n, int(7.0 / rate * sr))  # computed until -60 dB
        if k * freq < 0.45 * sr:
            out[:m] += 0.7 ** (k - 1) * np.sin(2 * np.pi * k * freq * t[:m]) * np.exp(-rate * t[:m])
    return out * np.minimum(t / 0.002, 1.0)


def _bell(freq: float, n: int, sr: int, bright: float) -> np.ndarray:
    t = np.arange(n, dtype=np.float32) / sr
    index = (1.5 + bright) * np.exp(-t / 0.25)  # FM with an inharmonic 3.5 ratio
    tone = np.sin(2 * np.pi * freq * t + index * np.sin(2 * np.pi * 3.5 * freq * t))
    return tone * np.exp(-t / 0.7) * np.minimum(t / 0.002, 1.0)


def _room_noise(n: int, sr: int, rng) -> np.ndarray:
    white = rng.standard_normal(n + 64, dtype=np.float32)
    c = np.concatenate([np.zeros(1, np.float64), np.cumsum(white, dtype=np.float64)])
    dull = lambda w: ((c[w: w + n] - c[:n]) / np.sqrt(w)).astype(np.float32)  # box low-pass
    noise = (dull(64) + 0.6 * dull(8) + 0.2 * white[:n]
             + 0.5 * _osc("sine", 50.0, n, sr) + 0.2 * _osc("sine", 100.0, n, sr))
    return noise * np.float32(10 ** (ROOM_NOISE_DBFS / 20) / np.sqrt(np.mean(noise ** 2)))


# ---------------------------------------------------------------------------- arrangement
_KICK = ("x...x...x...x...", "x.....x...x.....", "x..x..x...x..x..", "x.......x.x.....")
_SNARE = ("....x.......x...", "....x.......x..x", "....x..x....x...", "........x.......")
_HAT = ("x.x.x.x.x.x.x.x.", "xxxxxxxxxxxxxxxx", "..x...x...x...x.", "x.xxx.xxx.xxx.xx")
_BASS = ("x...x...x...x...", "x.x.x.x.x.x.x.x.", "x.....x.x.....x.", "x.......x.......",
         "x..x..x.x..x..x.")
_PROGS = ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 4, 3), (0, 2, 5, 4), (3, 4, 0, 0))
_MAJOR, _MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)
# Section kind -> (gain, p kick, p snare, p hat, p bass, p pad, p lead, lead density)
_KINDS = {"intro": (0.45, 0.3, 0.0, 0.5, 0.5, 1.0, 0.3, 0.25),
          "verse": (0.65, 1.0, 1.0, 0.9, 1.0, 0.7, 0.5, 0.35),
          "chorus": (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.6),
          "bridge": (0.5, 0.4, 0.5, 0.5, 0.7, 1.0, 0.8, 0.4)}


def _style(rng, kind: str) -> dict:
    gain, pk, ps, ph, pb, pp, pl, dens = _KINDS[kind]
    pick = lambda options, p: options[rng.integers(len(options))] if rng.random() < p else None
    motif, deg = [], int(rng.choice([0, 2, 4]))
    for s in range(16):  # a one-bar lead motif in scale degrees relative to the chord root
        if s == 0 or rng.random() < (dens if s % 2 == 0 else dens / 3):
            deg = int(np.clip(deg + rng.integers(-2, 3), -2, 9))
            motif.append((s, deg))
    return {"gain": gain * rng.uniform(0.9, 1.0), "kick": pick(_KICK, pk),
            "snare": pick(_SNARE[:3] if kind != "bridge" else _SNARE[3:], ps),
            "hat": pick(_HAT, ph), "open_hat": rng.random() < 0.4, "bass": pick(_BASS, pb),
            "bass_wave": ("saw", "square", "triangle")[rng.integers(3)],
            "pad": pick(("sine", "saw", "square", "triangle"), pp),
            "lead": pick(("pluck", "bell"), pl), "bright": rng.uniform(0.5, 3.0),
            "motif": motif, "prog": _PROGS[rng.integers(len(_PROGS))],
            "seventh": rng.random() < 0.3, "crash": kind == "chorus" or rng.random() < 0.3}


def _arrange(rng, n_bars: int) -> list[tuple[str, int, bool]]:
    """Bars as (section kind, bar index within the section, is the section's last bar)."""
    short = n_bars < 16
    order = ("verse", "chorus", "verse", "chorus", "bridge", "chorus")
    bars, kind, i = [], "intro", 0
    while len(bars) < n_bars:
        choices = {"intro": (1, 2) if short else (2, 4), "bridge": (2,) if short else (4,)}
        length = int(rng.choice(choices.get(kind, (2, 4) if short else (4, 8))))
        bars += [(kind, j, j == length - 1) for j in range(length)]
        kind, i = order[i % len(order)], i + 1
    return bars[:n_bars]


def song_timing(rng, seconds: float, ending: str, sr: int) -> tuple[int, float, int, int]:
    """(n samples, tempo, music end sample, fade start sample); the song rng's first draws."""
    n = int(round(seconds * sr))
    tempo = float(rng.uniform(80.0, 160.0))
    lo, hi, cap = _ENDING_LENGTHS[ending]
    length, fade_after = float(rng.uniform(lo, hi)), float(rng.uniform(0.5, 3.0))
    length = min(length, cap * seconds)
    after = min(fade_after, 0.1 * seconds) if ending == "fade" else length
    end = n - int(round(after * sr))
    return n, tempo, end, (end - int(round(length * sr)) if ending == "fade" else end)


def check_song_args(seconds: float, ending: str, sample_rate: int, seed: int) -> None:
    if ending not in ENDINGS:
        raise ValueError(f"ending: expected one of {ENDINGS}, found {ending!r}")
    if not seconds >= MIN_SECONDS:
        raise ValueError(f"seconds: expected >= {MIN_SECONDS}, found {seconds}")
    if sample_rate < 8000:
        raise ValueError(f"sample_rate: expected >= 8000, found {sample_rate}")
    if seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, found {seed}")


# ---------------------------------------------------------------------------- synthesis
def synth_song(*, seconds: float, seed: int, ending: str,
               sample_rate: int = 44100) -> tuple[np.ndarray, float]:
    """Mono float32 [shape=(n,)], and music_end_s (the time the music really ends).

    The music times the ending gain is scaled to peak at -3 dBFS, then (``quiet_tail``) the
    room noise is added. See the module docstring for how ``music_end_s`` is defined.
    """
    y, end_s, _ = synth_song_with_stems(seconds=seconds, seed=seed, ending=ending,
                                        sample_rate=sample_rate)
    return y, end_s


def synth_song_with_stems(*, seconds: float, seed: int, ending: str, sample_rate: int = 44100
                          ) -> tuple[np.ndarray, float, dict[str, list[float]]]:
    """:func:`synth_song`, and each instrument's note starts in seconds (``kick``, ``snare``,
    ``hats``, ``bass``, ``pad``, ``lead``): the stems that stemF is judged against."""
    music, gain, noise, end, onsets = _song_parts(seconds=seconds, seed=seed, ending=ending,
                                                  sample_rate=sample_rate)
    y = music * gain
    y *= np.float32(10 ** (PEAK_DBFS / 20) / max(float(np.abs(y).max()), 1e-9))
    if noise is not None:
        y += noise
    return y, end / sample_rate, onsets


def _song_parts(*, seconds: float, seed: int, ending: str, sample_rate: int):
    """(unscaled music, ending gain, room noise or None, music end sample, onsets): the
    onsets are each instrument's note starts in seconds before the music end."""
    check_song_args(seconds, ending, sample_rate, seed)
    sr, rng = sample_rate, np.random.default_rng(seed)
    n, tempo, end, fade_start = song_timing(rng, seconds, ending, sr)
    render_end = n if ending == "fade" else end  # no note starts after this sample
    buf = np.zeros(n, np.float32)
    onsets: dict[str, list[float]] = {}  # stem -> note start times, as MIDI would give them

    def add(start: int, x: np.ndarray, level: float, stem: str) -> None:
        if 0 <= start < render_end:
            x = x[: n - start]
            buf[start: start + len(x)] += level * x
            if start < end:
                onsets.setdefault(stem, []).append(start / sr)

    key, scale = int(rng.integers(45, 57)), (_MAJOR, _MINOR)[rng.integers(2)]
    midi = lambda base, d: base + 12 * (d // 7) + scale[d % 7]
    step = 15.0 * sr / tempo  # samples per sixteenth note
    swing = rng.uniform(0.0, 0.12) * step
    kick, snare = _kick(sr, rng), _snare(sr, rng)
    hat, open_hat = _hat(sr, rng, rng.uniform(0.02, 0.05)), _hat(sr, rng, 0.18)
    crash = _hat(sr, rng, 0.8)
    styles = {k: _style(rng, k) for k in _KINDS}
    bars = _arrange(rng, int(np.ceil(render_end / (16 * step))))
    at = lambda b, s: int(round((16 * b + s) * step + (swing if s % 2 else 0.0)))
    for b, (kind, j, last) in enumerate(bars):
        st = styles[kind]
        g, root = st["gain"], st["prog"][j % 4]
        vel = lambda: g * rng.uniform(0.8, 1.0)
        if j == 0 and st["crash"] and b > 0:
            add(at(b, 0), crash, 0.35 * g, "hats")
        for s in range(16):
            if st["kick"] and st["kick"][s] == "x":
                add(at(b, s), kick, 0.9 * vel(), "kick")
            if st["snare"] and st["snare"][s] == "x":
                add(at(b, s), snare, 0.7 * vel(), "snare")
            if st["hat"] and st["hat"][s] == "x":
                add(at(b, s), hat, (0.3 if s % 4 == 0 else 0.2) * vel(), "hats")
        if st["hat"] and st["open_hat"]:
            add(at(b, 14), open_hat, 0.2 * vel(), "hats")
        nxt = bars[b + 1][0] if b + 1 < len(bars) else kind
        if last and st["snare"] and nxt != kind:  # a fill into the next section
            for s in (12, 13, 14, 15):
                add(at(b, s), snare, (0.35 + 0.1 * (s - 12)) * vel(), "snare")
        if st["bass"]:
            hits = [s for s in range(16) if st["bass"][s] == "x"] + [16]
            for s, s_next in zip(hits, hits[1:]):
                d = root + (0, 0, 0, 4, 7)[rng.integers(5)]
                m = int((s_next - s) * step * 0.9)
                f = _hz(midi(key - 12, d))
                x = (0.7 * _osc("sine", f, m, sr) + 0.4 * _osc(st["bass_wave"], f, m, sr))
                add(at(b, s), x * _env(m, sr, 0.005, 0.15, 0.6, 0.03), 0.5 * vel(), "bass")
        if st["pad"]:
            m = int(16 * step + 0.25 * sr)
            degrees = (0, 2, 4, 6) if st["seventh"] else (0, 2, 4)
            env = _env(m, sr, 0.08 if kind == "chorus" else 0.3, 0.6, 0.8, 0.25)
            x = sum(_osc(st["pad"], _hz(midi(key + 12, root + d)), m, sr) for d in degrees)
            add(at(b, 0), x * env, 0.6 * g / len(degrees), "pad")
        if st["lead"]:
            voice = _pluck if st["lead"] == "pluck" else _bell
            notes = st["motif"] + [(16, 0)]
            for (s, d), (s_next, _) in zip(notes, notes[1:]):
                m = int(min((s_next - s) * step + 0.3 * sr, 1.2 * sr))
                add(at(b, s), voice(_hz(midi(key + 24, root + d)), m, sr, st["bright"]),
                    0.28 * vel(), "lead")

    gain = np.ones(n, np.float32)
    if ending == "fade":
        db = FADE_END_DB * (np.arange(fade_start, n) - fade_start) / (end - fade_start)
        gain[fade_start:] = 10 ** (db / 20)
        gain[end:] *= np.linspace(1.0, 0.0, n - end)
    else:
        ramp = max(1, int(round((0.03 if ending == "quiet_tail" else 0.001) * sr)))
        gain[end - ramp: end] = np.linspace(1.0, 0.0, ramp + 1)[1:]
        gain[end:] = 0.0
    noise = _room_noise(n, sr, rng) if ending == "quiet_tail" else None
    return buf, gain, noise, end, onsets
