"""The composition root: the one place that reads the config to build the show, the audio
source and the outputs. Everything else takes the pieces it is given, so the parts import
each other in one direction only (the outputs never import their backends' factory).

The relay-safety rules themselves (overrides, the strict switch limit) live in
pi/show/relay_rules.py, shared by the show logic and the sACN receiver.
"""
from __future__ import annotations

import logging
import threading
from typing import Sequence

from pi.config.load import Config, relay_limits, sacn_addresses
from pi.outputs.base import ChannelSubset, MockOutput, MultiOutput, Output, OutputError
from pi.audio.playlist import Playlist
from pi.show.relay_rules import ChannelOverrides
from pi.show.pipeline import Show, make_show
from pi.audio.sources import FileSource, Source

log = logging.getLogger(__name__)


def _overrides(show) -> ChannelOverrides:
    return ChannelOverrides.from_config(invert=show.invert, always_on=show.always_on,
                                        always_off=show.always_off)


def show_from_config(config: Config, *, bundle=None) -> Show:
    """The configured show; ``bundle``: its model already loaded (pi.show.bundle.Bundle,
    read-only arrays, so shows in different threads may share it), else loaded here."""
    s = config.show
    return make_show(model=bundle or config.model.path or None, mapper=config.model.mapper,
                     n_channels=s.channels, overrides=_overrides(s), hold_s=s.hold_ms / 1000,
                     silence_db=s.silence_db, max_toggles_per_s=relay_limits(config)[0])


def make_source(config: Config, *, rate: int, realtime: bool = False,
                stop: threading.Event | None = None) -> Source:
    a = config.audio
    if a.source == "sacn":
        # Imported here: sockets and the E1.31 receiver are for this source alone, and
        # every other start-up (time to the first lamp) does without them.
        from pi.audio.sacn_receiver import SACNSource

        r, s = config.sacn_source, config.show
        return SACNSource(universe=r.universe, addresses=sacn_addresses(config), port=r.port,
                          interface=r.interface, multicast=r.multicast, timeout_s=r.timeout_s,
                          hold_s=s.hold_ms / 1000, overrides=_overrides(s),
                          max_toggles_per_s=relay_limits(config)[0],
                          allowed_senders=r.allowed_senders)
    offset_s = 0.0 if config.show.latency_ms == "auto" else config.show.latency_ms / 1000
    if a.source == "line-in":
        from pi.audio.linein import LineInSource

        if offset_s < 0:
            log.warning("show.latency_ms = %g: live lamps cannot run ahead of the sound; "
                        "using 0", config.show.latency_ms)
        return LineInSource(device=a.device, rate=rate, block_ms=a.block_ms,
                            offset_s=offset_s)
    repeat = a.repeat
    if a.source == "file" and not realtime and repeat:
        log.info("audio.repeat ignored: without --realtime the file source plays the "
                 "playlist once, as fast as it can")
        repeat = False
    playlist = Playlist(a.playlist, shuffle=a.shuffle, repeat=repeat)
    if a.source == "playlist":
        from pi.audio.playback import PlaybackSource

        return PlaybackSource(playlist, device=a.device, rate=rate, block_ms=a.block_ms,
                              offset_s=offset_s, stop=stop)
    return FileSource(playlist, rate=rate, realtime=realtime, offset_s=offset_s, stop=stop)


def make_outputs(spec_list: Sequence[str], config: Config | None = None) -> MultiOutput:
    """Outputs by name ("rpigpio", "sacn", "terminal", "mock"), configured from `config`."""
    config = config or Config()
    n = config.show.channels
    outputs: list[Output] = []

    def some(out: Output, channels: Sequence[int]) -> Output:
        return ChannelSubset(out, [c - 1 for c in channels], n) if channels else out

    for name in spec_list:
        if name == "rpigpio":
            from pi.outputs.gpio import RPiGPIOOutput  # lazily: it imports RPi.GPIO

            g = config.outputs.rpigpio
            outputs.append(some(RPiGPIOOutput(g.pins, active_low=g.active_low,
                                              pwm_hz=g.pwm_hz, counter=_counter(config)),
                                g.channels))
        elif name == "sacn":
            from pi.outputs.sacn import SACNOutput

            d = config.outputs.sacn
            outputs.append(some(SACNOutput(len(d.channels) or n, universe=d.universe,
                                           start_address=d.start_address,
                                           destination=d.destination, port=d.port,
                                           priority=d.priority, source_name=d.source_name,
                                           fps=d.fps, dimmer=d.dimmer), d.channels))
        elif name == "terminal":
            from pi.outputs.terminal import TerminalOutput

            outputs.append(TerminalOutput(n))
        elif name == "mock":
            outputs.append(MockOutput(n, config.outputs.mock.record or None))
        else:
            raise OutputError(f"outputs: unknown output {name!r}; expected one of "
                              f"rpigpio, sacn, terminal, mock")
    return MultiOutput(outputs)


def _counter(config: Config):
    """The relays' persistent switch counter (pi/outputs/wear.py), or None when not counting."""
    from pi.outputs.wear import SwitchCounter, counts_path

    g = config.outputs.rpigpio
    path = counts_path(g.switch_counts)
    if path is None:
        return None
    return SwitchCounter(path, [f"GPIO{p}" for p in g.pins], rated=relay_limits(config)[1])
