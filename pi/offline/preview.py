"""``python -m pi preview SONG [--model DIR | --mapper bands] --out show.html``.

One self-contained HTML page that plays the song and draws the show on virtual lamps in a
small night-time yard, so a user can see the show before the lights are up. Everything is
inside the file: the audio (Ogg Vorbis, mono, base64 in a ``data:`` URI), the rendered
timeline and the show metrics. A Content-Security-Policy forbids every network request.

The timeline is packed small: the states as one bitmask per frame (``ceil(n_channels / 8)``
bytes), the activations as one byte per channel and frame, scaled between each channel's 1st
and 99th percentile (they only draw the strip), and the frame times as a regular grid of
sample ticks when they are exactly one (``render``'s always are), else as float64.

The page's rule is the metrics' rule: at audio time ``t`` the lamps show the row with the
largest ``time_s <= t``, all off before the first row.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
import logging
import re
import sys
from importlib import resources
from pathlib import Path

import numpy as np

from pi.offline.metrics import SHOW_HEADLINE, show_metrics
from pi.offline.render import Timeline, render_song
from pi.show.pipeline import make_show

TEMPLATE = "preview_template.html"
YARD_JS = "yard.js"  # the yard drawing, shared with the web panel
YARD_CSS = "yard.css"  # and its lamps' style
WRITE_BLOCK = 32768  # libsndfile 1.2's Vorbis encoder crashes on one whole-song write


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def encode_audio(y: np.ndarray, sample_rate: int) -> bytes:
    """Mono float audio -> Ogg Vorbis bytes (about 80 kbit/s at libsndfile's default quality).

    Vorbis rather than MP3: Ogg's granule positions make the decoded audio start at sample 0,
    where MP3's encoder delay would shift the sound against the lamps unless the browser
    honours the LAME header.
    """
    import soundfile as sf

    y = np.clip(np.asarray(y, np.float32), -1.0, 1.0)
    if y.size == 0:  # an empty Ogg stream does not decode; a frame of silence does
        y = np.zeros(1024, np.float32)
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=int(sample_rate), channels=1, format="OGG",
                      subtype="VORBIS") as f:
        for i in range(0, len(y), WRITE_BLOCK):
            f.write(y[i:i + WRITE_BLOCK])
    return buf.getvalue()


def encode_times(times_s: np.ndarray, sample_rate: int) -> dict:
    """``{"rate", "start", "step"}`` when ``(start + i * step) / rate`` reproduces every time
    bit for bit in float64 (as in JavaScript), else ``{"f64": base64}``."""
    t = np.asarray(times_s, np.float64)
    if t.size:
        ticks = np.round(t * sample_rate).astype(np.int64)
        step = int(ticks[1] - ticks[0]) if t.size > 1 else 1
        grid = int(ticks[0]) + step * np.arange(t.size, dtype=np.int64)
        if step > 0 and np.array_equal(grid / sample_rate, t):
            return {"rate": int(sample_rate), "start": int(ticks[0]), "step": step}
    return {"f64": _b64(t.astype("<f8"))}


def encode_timeline(tl: Timeline, sample_rate: int) -> dict:
    states = np.asarray(tl.states, bool)
    n, n_ch = states.shape
    bits = np.packbits(states, axis=1, bitorder="little")  # channel c: byte c // 8, bit c % 8
    acts = np.asarray(tl.activations, np.float64).reshape(n, n_ch)
    if n:
        lo, hi = np.nanpercentile(acts, 1, axis=0), np.nanpercentile(acts, 99, axis=0)
    else:
        lo, hi = np.zeros(n_ch), np.ones(n_ch)
    hi = np.where(hi > lo, hi, lo + 1.0)
    q = np.nan_to_num((acts - lo) / (hi - lo), nan=0.0)
    q = np.round(np.clip(q, 0.0, 1.0) * 255).astype(np.uint8)
    return {"n_frames": int(n), "n_channels": int(n_ch), "times": encode_times(tl.times_s,
                                                                               sample_rate),
            "bytes_per_frame": int(bits.shape[1]), "states": _b64(bits), "acts": _b64(q),
            "acts_lo": lo.round(6).tolist(), "acts_hi": hi.round(6).tolist()}


def _fill(template: str, values: dict[str, str]) -> str:
    """Replace ``{{NAME}}`` placeholders in one pass, so no inserted text is scanned again."""
    return re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: values[m.group(1)], template)


def _script_json(obj) -> str:
    """JSON that is safe inside ``<script>``: no ``</`` and no HTML comment openers."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _finite(value):
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def build_html(*, song: str, model: str, timeline: Timeline, audio: np.ndarray,
               sample_rate: int, metrics: dict) -> tuple[str, int]:
    """The page's text, and the size of its Ogg audio in bytes."""
    ogg = encode_audio(audio, sample_rate)
    data = {"song": song, "model": model, "duration_s": len(audio) / sample_rate,
            "metrics": {k: _finite(v) for k, v in metrics.items()},
            "headline": [h.key for h in SHOW_HEADLINE],
            "timeline": encode_timeline(timeline, sample_rate)}
    template = resources.files("pi.offline").joinpath(TEMPLATE).read_text(encoding="utf-8")
    yard, yard_css = (resources.files("pi.offline").joinpath(name).read_text(encoding="utf-8")
                      for name in (YARD_JS, YARD_CSS))
    page = _fill(template, {"TITLE": html.escape(f"{song} · lightshow preview"),
                            "YARD_JS": yard, "YARD_CSS": yard_css,
                            "DATA": _script_json(data),
                            "AUDIO": "data:audio/ogg;base64,"
                                     + base64.b64encode(ogg).decode("ascii")})
    return page, len(ogg)


def write_preview(song_path: str | Path, out_path: str | Path, *, model: str | Path | None = None,
                  mapper: str = "model", lookahead: bool = True) -> dict:
    """Render ``song_path`` with the configured show and write the preview page: the show
    playlist mode plays (planned ahead, pi/show/lookahead.py), or the line-in show when
    ``lookahead`` is False.

    Returns ``{"out", "bytes", "audio_bytes", "song", "model", "n_frames", "n_channels",
    "duration_s", "metrics"}``; ``model`` is the show that really ran (a bad bundle falls back
    to ``bands``, as on the Pi).
    """
    song_path, out_path = Path(song_path), Path(out_path)
    show = make_show(model=model, mapper=mapper)
    timeline, audio = render_song(song_path, show, keep_audio=True, lookahead=lookahead)
    sr = show.feature_params.sample_rate
    metrics = show_metrics(audio, times_s=timeline.times_s, states=timeline.states, sr=sr) \
        if audio.size else {}
    page, audio_bytes = build_html(song=song_path.name, model=show.name, timeline=timeline,
                                   audio=audio, sample_rate=sr, metrics=metrics)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".part")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out_path)
    return {"out": str(out_path), "bytes": out_path.stat().st_size, "audio_bytes": audio_bytes,
            "song": song_path.name, "model": show.name, "n_frames": int(len(timeline.times_s)),
            "n_channels": int(timeline.states.shape[1]), "duration_s": len(audio) / sr,
            "metrics": metrics}


def _fmt(v) -> str:
    return "n/a" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pi preview",
                                description="Write a self-contained HTML preview of a song's "
                                            "light show: open it in a browser.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
    p.add_argument("song", help="a wav/flac/ogg/mp3 file")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", metavar="DIR", help="model bundle (default: models/default)")
    which.add_argument("--mapper", choices=("model", "bands"), default="model",
                       help="'bands': the frequency-band show, no model")
    p.add_argument("--causal", action="store_true",
                   help="the line-in show (default: the look-ahead show playlist mode plays)")
    p.add_argument("--out", metavar="HTML", help="output page (default: SONG's name + .html "
                                                 "in the current folder)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose:
        logging.getLogger().setLevel(logging.DEBUG)
    from pi.audio.decode import AudioFileError

    out = Path(args.out) if args.out else Path(Path(args.song).stem + ".html")
    try:
        info = write_preview(args.song, out, model=args.model, mapper=args.mapper,
                             lookahead=not args.causal)
    except (AudioFileError, FileNotFoundError, IsADirectoryError) as exc:
        print(f"preview: {exc}", file=sys.stderr)
        return 2
    if args.mapper == "model" and not info["model"].startswith("model:"):
        print(f"note: the model could not be used (see above); this is the {info['model']} "
              "show", file=sys.stderr)
    m = info["metrics"]
    print(f"wrote {out} ({info['bytes'] / 1e6:.1f} MB, {info['duration_s']:.0f} s, show "
          f"{info['model']}): "
          + ", ".join(f"{h.key} {_fmt(m.get(h.key))}" for h in SHOW_HEADLINE))
    print(f"open it in a browser: {out.resolve().as_uri()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
