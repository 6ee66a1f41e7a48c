"""``lightshow`` / ``python -m pi``: run, render, devices, relays, check-config.

Without ``--config``, ``run`` and ``relays`` use the built-in defaults (systemd/config.toml)
with two changes meant for trying things out at a terminal: lamps are drawn in the terminal
instead of driving GPIO, and the playlist plays once instead of forever. The systemd unit
always passes ``--config /etc/lightshow/config.toml``, where relays are the default output.
Command-line options override the config file and are checked like it (errors name the key).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

# One BLAS thread, set before numpy loads (a user's own setting wins). The show's products
# are one or two frames at a time, too small to share: a second OpenBLAS thread only adds
# hand-offs, and on a Pi the other cores decode the music and serve the panel. Measured on
# the 2-core dev machine under load: a 4-minute render 7.3 s -> 3.9 s.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from pi.config import MAPPERS, OUTPUT_NAMES, SOURCES  # noqa: E402
from pi.daemon import stopping  # noqa: E402 - after the BLAS setting above
from pi.errors import ConfigError, LightshowError  # noqa: E402

if TYPE_CHECKING:
    from pi.config.load import Config

log = logging.getLogger("lightshow")

EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h: a restart cannot fix it


def _one_malloc_arena() -> None:
    """glibc gives each thread that allocates its own malloc arena, and memory freed in an
    arena is kept for that arena's threads: the planner's and the decoder's threads each
    held megabytes that the show loop could not reuse (run's peak RSS on a 4-minute song
    62.4 -> 57.9 MB). With one arena they share it; numpy allocates a few arrays per block,
    so its lock is seldom contended (render's CPU time unchanged). Called before any thread
    starts; nothing happens without glibc's mallopt."""
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(-8, 1)  # M_ARENA_MAX from malloc.h
    except (OSError, AttributeError, TypeError):
        pass


def _setup_logging(verbose: int) -> None:
    # Under systemd, journald stamps every line already.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(stream=sys.stderr, format=fmt,
                        level=logging.DEBUG if verbose else logging.INFO)


def _plain(value):
    """Config.to_dict() holds tuples; Config.from_dict() wants what TOML gives: lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def run_config(args: argparse.Namespace) -> Config:
    """The config file (or the defaults for a terminal run) with the options applied."""
    # Here, not at the top: render and preview read no config (start-up time).
    from pi.config.load import Config, load_config

    d = _plain(load_config(args.config).to_dict())
    if args.config is None:
        d["outputs"]["enabled"] = ["terminal"]
        d["audio"]["repeat"] = False
    a = d["audio"]
    if getattr(args, "source", None):
        a["source"] = args.source
    if getattr(args, "device", None) is not None:
        a["device"] = int(args.device) if args.device.isdigit() else args.device
    if getattr(args, "playlist", None):
        a["playlist"] = [str(p) for p in args.playlist]
    if getattr(args, "model", None):
        d["model"]["path"] = args.model
    if getattr(args, "mapper", None):
        d["model"]["mapper"] = args.mapper
    if getattr(args, "universe", None) is not None:
        d["sacn_source"]["universe"] = args.universe
    if args.output:
        d["outputs"]["enabled"] = list(dict.fromkeys(args.output))
    if getattr(args, "record", None):
        d["outputs"]["mock"]["record"] = args.record
        if "mock" not in d["outputs"]["enabled"]:  # --record means: record this run
            d["outputs"]["enabled"].append("mock")
    return Config.from_dict(d)


def cmd_run(args: argparse.Namespace) -> int:
    from pi.daemon.loop import run

    return run(run_config(args), realtime=args.realtime, plan_wait_s=args.plan_wait)


def cmd_devices(args: argparse.Namespace) -> int:
    from pi.audio.sources import DeviceError, import_sounddevice

    try:
        sd = import_sounddevice()
        devices = sd.query_devices()
        default_in, default_out = sd.default.device
    except (DeviceError, OSError) as exc:
        log.error("%s", exc)
        return 1
    if not len(devices):
        print("no audio devices found")
        return 0
    apis = [api["name"] for api in sd.query_hostapis()]
    print(f"{'':2}{'#':>3}  {'in':>3} {'out':>3}  {'rate':>6}  name")
    for d in devices:
        mark = ("<" if d["index"] == default_in else " ") + \
               (">" if d["index"] == default_out else " ")
        print(f"{mark}{d['index']:>3}  {d['max_input_channels']:>3} "
              f"{d['max_output_channels']:>3}  {d['default_samplerate']:>6.0f}  {d['name']} "
              f"({apis[d['hostapi']]})")
    print("< default input, > default output; audio.device takes the number or part of "
          "the name")
    return 0


def cmd_relays(args: argparse.Namespace) -> int:
    from pi.app import make_outputs

    cfg = run_config(args)
    outputs = make_outputs(cfg.outputs.enabled, cfg)
    pins = cfg.outputs.rpigpio.pins if "rpigpio" in cfg.outputs.enabled else None
    n, pause = cfg.show.channels, threading.Event()  # never set: Event.wait paces the test
    try:
        outputs.open()
        for ch in range(n):
            states = [c == ch for c in range(n)]
            where = f" (GPIO {pins[ch]})" if pins else ""
            print(f"channel {ch + 1}{where} on", flush=True)
            outputs.set(states, t=2 * ch * args.step_s)
            pause.wait(args.step_s)
            print(f"channel {ch + 1}{where} off", flush=True)
            outputs.set([False] * n, t=(2 * ch + 1) * args.step_s)
            pause.wait(args.step_s)
    finally:
        outputs.close()
    print("all channels off")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from pi.config.load import check_config

    print(check_config(args.config))
    return 0


def _step(value: str) -> float:
    step = float(value)
    if not 0.1 <= step <= 60:
        raise argparse.ArgumentTypeError(f"expected 0.1 to 60 seconds (relays wear out when "
                                         f"switched faster), found {value}")
    return step


def _plan_wait(value: str) -> float:
    try:
        wait = float(value)
    except ValueError:
        wait = math.nan
    if not 0 <= wait <= 3600:
        raise argparse.ArgumentTypeError(f"expected 0 to 3600 seconds, found {value}")
    return wait


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightshow",
                                description="A music-driven relay light show.",
                                epilog="`lightshow preview SONG` writes an HTML preview of a "
                                       "song's show (its own --help).")
    p.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
    # -v also after the command; SUPPRESS, or the subcommand's default would reset it to 0.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    def config_opt(sp):
        sp.add_argument("--config", type=Path, help="TOML config (default: built-in "
                        "defaults, lamps in the terminal)")

    def output_opt(sp):
        sp.add_argument("--output", action="append", choices=OUTPUT_NAMES,
                        help="an output; repeat for several (overrides outputs.enabled)")

    r = sub.add_parser("run", parents=[common], help="the light show")
    config_opt(r)
    r.add_argument("--source", choices=SOURCES, help="overrides audio.source")
    r.add_argument("--universe", type=int, help="sACN universe to follow with --source sacn "
                   "(overrides sacn_source.universe)")
    r.add_argument("--device", help="sound device: number or part of its name")
    output_opt(r)
    r.add_argument("--model", help="model bundle folder (overrides model.path)")
    r.add_argument("--mapper", choices=MAPPERS, help="overrides model.mapper")
    r.add_argument("--realtime", action="store_true",
                   help="file source: pace the songs in real time (default: fast)")
    r.add_argument("--plan-wait", type=_plan_wait, default=0.0, metavar="SECONDS",
                   help="songs from files: hold each song's start up to SECONDS for its "
                   "look-ahead plan, so that the lamps are render's from the first frame (for "
                   "checks; by default the lights start at once with the causal show, and the "
                   "plan takes over when it is ready)")
    r.add_argument("--record", help="record every state to this JSONL file (mock output)")
    r.add_argument("playlist", nargs="*", help="songs, folders, .m3u (overrides "
                   "audio.playlist)")
    r.set_defaults(func=cmd_run)

    from pi.cli.render import add_render_command  # render: pi/cli/render.py

    add_render_command(sub, common)

    d = sub.add_parser("devices", parents=[common], help="list the audio devices")
    d.set_defaults(func=cmd_devices)

    rl = sub.add_parser("relays", parents=[common],
                        help="wiring test: each channel on, then off, in order")
    config_opt(rl)
    output_opt(rl)
    rl.add_argument("--step-s", type=_step, default=1.0, help="seconds per step (1.0)")
    rl.add_argument("--record", help="record every state to this JSONL file (mock output)")
    rl.set_defaults(func=cmd_relays)

    c = sub.add_parser("check-config", parents=[common], help="check a config file")
    c.add_argument("--config", type=Path, help="TOML config to check (default: the built-in "
                   "defaults, as in systemd/config.toml: what the service runs with an empty "
                   "config)")
    c.set_defaults(func=cmd_check_config)

    from pi.cli.panel import add_commands  # ctl and web: pi/cli/panel.py

    add_commands(sub, common, config_opt)
    return p


def main(argv: list[str] | None = None) -> int:
    _one_malloc_arena()
    argv = sys.argv[1:] if argv is None else list(argv)
    lead = 0  # `lightshow -v preview ...`: the -v flags may come before the command
    while lead < len(argv) and re.fullmatch(r"-v+|--verbose", argv[lead]):
        lead += 1
    if argv[lead:lead + 1] == ["preview"]:  # pi/offline/preview.py has its own options and help
        from pi.offline.preview import main as preview

        _setup_logging(lead)
        return preview(argv[:lead] + argv[lead + 1:])
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    previous = stopping.install()  # every command unwinds on SIGTERM/INT/HUP/QUIT: lamps off
    try:
        return args.func(args)
    except stopping.Stopped as exc:
        log.info("stopped by %s", signal.Signals(exc.signum).name)
        return exc.code
    except ConfigError as exc:
        log.error("config: %s", exc)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except (LightshowError, OSError) as exc:
        # Expected failures (no GPIO, a bad song or bundle, an unreadable file) get one clear
        # line; with -v a traceback too. Anything else is a bug and is raised.
        if args.verbose:
            raise
        log.error("%s", exc)
        return 1
    finally:
        stopping.restore(previous)
