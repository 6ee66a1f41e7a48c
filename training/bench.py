"""``make bench``: per-frame costs, real-time factor, Keras ratio, daemon memory and start-up,
the web panel's memory and lamp lag (training/bench_web.py).

How the headline figures are measured (issue 12; names first, figure last, for comparing
releases):

* ``LightShowPi FFT only (reference)``: window, rfft, magnitude and log of one 1024 frame,
  median of 5 rounds of 2000 calls.
* ``dense pipeline per hop ...`` and ``conv pipeline per hop``: the causal show (line-in's)
  through the daemon's own loop over a 20 s song fed in the config's ``audio.block_ms``
  blocks (20 ms: one or two hops each, the line-in block), i.e. features.push, the show
  (encoder, show logic, toggle guard) per block and the mock output set per frame; wall
  time divided by the hops, median of 3 runs (training/bench_hops.py). The per-block work is
  shared by the block's hops, as it is on the Pi. The ratio to the reference follows each.
  ``dense look-ahead (playlist) per hop``: what playlist mode does instead, the song's plan
  made (spread over its hops) and played.
* ``render (x real time)``: the song's length over ``python -m pi render``'s wall time,
  interpreter start-up included: the look-ahead show playlist mode plays (pi/show/lookahead.py);
  ``render --causal``: the line-in show. ``render: CPU s``: its processor time, all threads
  (on a loaded machine the wall time is the share of the cores it got).
* ``run: ...``: ``python -m pi run --source file`` on the song, as fast as it decodes, to a
  recorded mock output: its first frame is the causal show's while the song's plan is made,
  then the plan plays.
* ``feature extraction, fresh / cached (x real time)``: ``training.ingest.load_library`` on
  four 60 s songs into an empty cache, then again from it.

Printed figures only: speed is measured here, never asserted in tests.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The appliance runs OpenBLAS with one thread (pi/cli/main.py); the in-process pipelines are
# measured the same way. Only effective before numpy loads, as under `python -m training`.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from pi.outputs.base import MockOutput  # noqa: E402
from pi.outputs.terminal import TerminalOutput  # noqa: E402
from pi.show.bundle import BundleError, load_bundle  # noqa: E402
from pi.show.features import DEFAULT_PARAMS, StreamingFeatures, spectra_db  # noqa: E402
from pi.show.mapping import ShowMapper  # noqa: E402
from training.bench_hops import causal_pipeline_us, lookahead_pipeline_us  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HOP = DEFAULT_PARAMS.hop


def per_call_us(fn, *, repeat: int = 2000) -> float:
    """Median of 5 rounds of ``repeat`` calls, in microseconds per call."""
    fn()
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        rounds.append((time.perf_counter() - t0) / repeat * 1e6)
    return float(np.median(rounds))


def lightshowpi_fft_us(rng) -> float:
    # LightShowPi's per-chunk work at the same 1024 frame: window, rfft, magnitude, log.
    chunk = rng.normal(size=DEFAULT_PARAMS.n_fft).astype(np.float32)
    window = np.hanning(DEFAULT_PARAMS.n_fft)
    return per_call_us(lambda: np.log10(np.abs(np.fft.rfft(chunk * window)) + 1e-9))


def frame_costs(model_dirs: list[Path]) -> dict[str, float]:
    rng = np.random.default_rng(0)
    block = (0.3 * rng.normal(size=HOP)).astype(np.float32)
    stream = StreamingFeatures()
    stream.push(rng.normal(size=DEFAULT_PARAMS.n_fft).astype(np.float32))
    frame = spectra_db(rng.normal(size=(1, DEFAULT_PARAMS.n_fft)))
    costs = {"LightShowPi FFT only (reference)": lightshowpi_fft_us(rng),
             "features (streaming, per hop)": per_call_us(lambda: stream.push(block))}
    for d in model_dirs:
        bundle = load_bundle(d)
        kind = bundle.manifest["architecture"]["kind"]
        costs[f"{kind} encoder (numpy)"] = per_call_us(lambda b=bundle: b.activations(frame))
        if kind == "dense":
            mapper = ShowMapper(bundle.mapping)
            acts = bundle.activations(frame)[0]
            t = [0.0]

            def step():
                t[0] += HOP / DEFAULT_PARAMS.sample_rate
                mapper.step(acts, frame[0], t=t[0])

            costs["mapping"] = per_call_us(step)
    states = np.zeros(8, bool)
    mock = MockOutput(8)
    mock.open()
    costs["output (mock)"] = per_call_us(lambda: mock.set(states, t=0.0), repeat=500)
    with open(os.devnull, "w") as null:
        term = TerminalOutput(8, stream=null)
        term.open()
        costs["output (terminal)"] = per_call_us(lambda: term.set(states, t=0.0), repeat=500)
    return costs


def offline_figures(model: Path, tmp: Path, *, n_songs: int = 4, seconds: float = 60.0
                    ) -> dict[str, float]:
    """Feature extraction as training runs it (training.corpus.ingest.load_library, all cores),
    fresh into an empty cache and again from that cache, as multiples of real time."""
    import soundfile as sf

    from training.corpus.synth import synth_song
    from training.corpus.ingest import load_library

    paths = []
    for i in range(n_songs):
        y, _ = synth_song(seconds=seconds, seed=10 + i, ending="fade")
        paths.append(tmp / f"ingest-{i}.wav")
        sf.write(paths[-1], y, DEFAULT_PARAMS.sample_rate)
    cache = tmp / "cache"
    figures = {}
    for label in ("fresh", "cached"):
        t0 = time.perf_counter()
        songs, _ = load_library(paths, cache_dir=cache, progress=False)
        wall = time.perf_counter() - t0
        figures[f"feature extraction, {label} (x real time)"] = \
            sum(s.duration_s for s in songs) / wall
    return figures


def keras_costs(model_dirs: list[Path]) -> dict[str, float]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from training.models.autoencoders import encoder_of

    frame = np.random.default_rng(0).normal(size=(1, 513)).astype(np.float32)
    out = {}
    for d in model_dirs:
        kind = load_bundle(d).manifest["architecture"]["kind"]
        enc = encoder_of(keras.saving.load_model(d / "autoencoder.keras"))
        out[f"{kind} encoder (Keras model(x))"] = per_call_us(lambda e=enc: e(frame), repeat=200)
    return out


def daemon_figures(model: Path, song: Path) -> dict[str, float]:
    """Peak RSS of ``run`` and ``render`` on a song, and the time to the first relay command."""
    # As installed on the Pi (pip compiles the package): with PYTHONDONTWRITEBYTECODE set,
    # as in some development shells, every run would compile pi/ from source again, which
    # costs about 70 ms of start-up and 1 MB that no appliance pays.
    import compileall

    compileall.compile_dir(str(ROOT / "pi"), quiet=1)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "record.jsonl"
        started = time.monotonic()
        run = [sys.executable, "-m", "pi", "run", "--source", "file", "--output", "mock",
               "--record", str(record), "--model", str(model), str(song)]
        t0 = time.perf_counter()
        rss_run = _peak_rss_kb(run)
        figures["run: wall s (as fast as possible)"] = time.perf_counter() - t0
        figures["run: peak RSS MB"] = rss_run / 1024
        events = [json.loads(line) for line in record.read_text().splitlines()]
        first = next((e for e in events if e.get("event") == "set"), None)
        if first is not None:
            figures["run: first frame s after start"] = first["mono"] - started
        render = [sys.executable, "-m", "pi", "render", str(song), "--csv",
                  str(Path(tmp) / "show.csv"), "--model", str(model)]
        t0, cpu0 = time.perf_counter(), _children_cpu_s()
        figures["render: peak RSS MB"] = _peak_rss_kb(render) / 1024
        figures["render: wall s"] = time.perf_counter() - t0
        figures["render: CPU s"] = _children_cpu_s() - cpu0
        t0 = time.perf_counter()  # the line-in show; render's default plans the song ahead
        figures["render --causal: peak RSS MB"] = _peak_rss_kb(render + ["--causal"]) / 1024
        figures["render --causal: wall s"] = time.perf_counter() - t0
    return figures


# Runs the CLI in a fresh interpreter and reports VmHWM, the peak RSS of that process image
# alone: rusage's ru_maxrss would also count the forked copy of this (TensorFlow-sized) bench.
_HWM_WRAPPER = """
import runpy, sys
out = sys.argv.pop(1)
try:
    runpy.run_module("pi", run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
finally:
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
    open(out, "w").write(hwm)
sys.exit(code)
"""


def sacn_figures(seconds: float = 6.0, fps: int = 40) -> dict[str, float]:
    """sACN over loopback: an SACNOutput sends a changing show to an SACNSource (relay hold
    off, so only the network path is timed): lag from set() to the receiver's new levels,
    packets per second, and the output's CPU cost per frame."""
    import itertools
    import logging
    import threading

    from pi.outputs.sacn import SACNOutput
    from pi.audio.sacn_receiver import LOST, SACNSource

    # Its "lamps off" at the end.
    logging.getLogger("pi.audio.sacn_receiver").setLevel(logging.ERROR)
    rx = SACNSource(universe=1, addresses=range(1, 9), port=0, interface="127.0.0.1",
                    multicast=False, hold_s=0.0)
    rx.open()
    out = SACNOutput(8, universe=1, destination="127.0.0.1", port=rx._sock.getsockname()[1],
                     fps=fps)
    arrivals: list[tuple[float, tuple[bool, ...]]] = []
    done = threading.Event()

    def listen():
        while not done.is_set():
            got = rx.read(0.05)
            if got is not None and got is not LOST:
                arrivals.append((time.monotonic(), tuple(bool(x) for x in got >= 0.5)))

    listener = threading.Thread(target=listen)
    listener.start()
    rng = np.random.default_rng(0)
    frame_s = HOP / DEFAULT_PARAMS.sample_rate
    changes, state = [], np.zeros(8, bool)
    try:
        out.open()
        t0 = time.monotonic()
        for i in range(int(seconds / frame_s)):
            if rng.random() < 0.15:  # a show changes about every 80 ms, sometimes sooner
                state = state.copy()
                state[rng.integers(8)] ^= True
                changes.append((time.monotonic(), tuple(state.tolist())))
            out.set(state, t=i * frame_s)
            done.wait(max(0.0, t0 + (i + 1) * frame_s - time.monotonic()))  # real time
        elapsed = time.monotonic() - t0
        sent, received = out.socket.sent, rx.packets
        alternating = itertools.cycle([np.ones(8, bool), np.zeros(8, bool)])
        set_us = per_call_us(lambda: out.set(next(alternating), t=0.0), repeat=300)
        packet = out.socket.target._packet  # the package's packet, as its thread sends it
        build_us = per_call_us(lambda: out.socket.sendto(bytes(packet.getBytes()),
                                                         "127.0.0.1"), repeat=300)
    finally:
        out.close()
        done.set()
        listener.join()
        rx.close()
    lags = []
    for t_set, states in changes:
        later = [t for t, s in arrivals if s == states and t >= t_set]
        if later:
            lags.append(later[0] - t_set)
    return {"sacn: lag set() -> receiver, median ms": float(np.median(lags)) * 1e3,
            "sacn: lag set() -> receiver, p95 ms": float(np.percentile(lags, 95)) * 1e3,
            "sacn: changes that arrived (%)": 100.0 * len(lags) / max(1, len(changes)),
            "sacn: packets per second (sent)": sent / elapsed,
            "sacn: packets per second (received)": received / elapsed,
            "sacn: output set() per frame, µs": set_us,
            "sacn: build + send one packet, µs": build_us,
            "sacn: CPU per frame, this show, µs": set_us + build_us * sent / elapsed * frame_s,
            "sacn: CPU per frame, worst (a packet each), µs": set_us + build_us}


def _children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_kb(cmd: list[str]) -> float:
    with tempfile.NamedTemporaryFile(suffix=".hwm") as hwm:
        wrapped = [sys.executable, "-c", _HWM_WRAPPER, hwm.name] + cmd[3:]
        out = subprocess.run(wrapped, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr[-2000:]}")
        return float(Path(hwm.name).read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training bench")
    ap.add_argument("--model", default=str(ROOT / "models" / "default"))
    ap.add_argument("--seconds", type=float, default=240.0, help="length of the test song")
    args = ap.parse_args(argv)
    model = Path(args.model)
    models = [m for m in (model, model.with_name(model.name + "-conv")) if m.is_dir()]
    try:  # a clear line for a missing or bad bundle, not a traceback from deep inside
        if not models:
            raise BundleError(f"{model}: expected a model bundle folder, found nothing there "
                              f"(make train writes one)")
        for m in models:
            load_bundle(m)
    except BundleError as exc:
        print(f"bench: --model: {exc}", file=sys.stderr)
        return 2
    costs = frame_costs(models)
    keras_cost = keras_costs(models)
    hop_us = HOP / DEFAULT_PARAMS.sample_rate * 1e6
    pipeline = sum(v for k, v in costs.items() if "reference" not in k and "conv" not in k
                   and "terminal" not in k)
    print(f"{'per-frame cost':44s} {'µs':>9s}")
    for k, v in {**costs, **keras_cost}.items():
        print(f"{k:44s} {v:9.1f}")
    for kind in ("dense", "conv"):
        np_key, k_key = f"{kind} encoder (numpy)", f"{kind} encoder (Keras model(x))"
        if np_key in costs and k_key in keras_cost:
            print(f"{'Keras / numpy, ' + kind:44s} {keras_cost[k_key] / costs[np_key]:9.1f}x")
    ref = costs["LightShowPi FFT only (reference)"]
    print(f"{'sum of the parts above, one hop per call':44s} {pipeline:9.1f}")

    from pi.config.load import AudioConfig
    from training.corpus.synth import synth_song

    block_ms = AudioConfig().block_ms
    clip, _ = synth_song(seconds=20.0, seed=5, ending="fade")
    clip = np.asarray(clip, np.float32)
    print(f"pipelines: the daemon's loop over a 20 s song in its {block_ms} ms blocks (the "
          f"line-in block), wall time / hops, µs. The causal show (line-in's): features, "
          f"encoder, show logic, toggle guard, mock output")
    for m in models:
        kind = load_bundle(m).manifest["architecture"]["kind"]
        us = causal_pipeline_us(m, clip, block_ms=block_ms)
        name = ("dense pipeline per hop (features+enc+map+mock)" if kind == "dense"
                else f"{kind} pipeline per hop")
        print(f"{name:44s} {us:9.1f}")
        print(f"{kind + ' pipeline / reference (x)':44s} {us / ref:9.2f}")
        print(f"{kind + ' real-time factor (hop / cost)':44s} {hop_us / us:9.0f}")
    print("the look-ahead show (playlist mode's): the song's plan made (decode, features, "
          "encoder, plan), spread over its hops, and played (plan rows, guard, mock output)")
    with tempfile.TemporaryDirectory() as tmp:
        import soundfile as sf

        clip_path = Path(tmp) / "clip.wav"
        sf.write(clip_path, clip, DEFAULT_PARAMS.sample_rate)
        us = lookahead_pipeline_us(model, clip_path, block_ms=block_ms)
    print(f"{'dense look-ahead (playlist) per hop':44s} {us:9.1f}")
    print(f"{'dense look-ahead / reference (x)':44s} {us / ref:9.2f}")

    try:
        import sacn  # noqa: F401 - the optional extra
    except ImportError:
        print("sacn: not installed (pip install 'lightshow[sacn]'): no sACN figures")
    else:
        for k, v in sacn_figures().items():
            print(f"{k:44s} {v:9.1f}")

    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        song = Path(tmp) / "bench-song.wav"
        y, _ = synth_song(seconds=args.seconds, seed=3, ending="fade")
        sf.write(song, y, DEFAULT_PARAMS.sample_rate)
        daemon = daemon_figures(model, song)
        daemon["render (x real time)"] = args.seconds / daemon["render: wall s"]
        daemon["render --causal (x real time)"] = (args.seconds
                                                   / daemon["render --causal: wall s"])
        for k, v in daemon.items():
            print(f"{k:44s} {v:9.2f}")
        for k, v in offline_figures(model, Path(tmp)).items():
            print(f"{k:44s} {v:9.0f}")
        from training.bench_web import web_figures  # the panel (pi/web), beside the show

        for k, v in web_figures(song).items():
            print(f"{k:44s} {v:9.2f}")
    return 0
