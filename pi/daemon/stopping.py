"""Every way a person or systemd can stop lightshow unwinds the stack, so the lamps go off.

Python's defaults kill the process without running ``finally`` for SIGTERM (``systemctl
stop``, ``timeout``), SIGHUP (a dropped ssh session, a closed terminal) and SIGQUIT (Ctrl-\\);
only SIGINT (Ctrl-C) unwinds, as KeyboardInterrupt. :func:`install` maps all four in one
place: SIGINT stays KeyboardInterrupt, the others raise :class:`Stopped` (a SystemExit).

The first stop signal wins. Later ones, and any that arrive while an output is switching
everything off (:func:`deferred`), do not interrupt that: a second Ctrl-C in the middle of the
all-off would otherwise leave a relay on. A deferred signal is raised when the block ends.
"""
from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger(__name__)

# Exit codes: 0 for SIGTERM (systemd's ordinary stop, not a failure), 128 + n otherwise, as
# shells report a death by signal n.
STOP_SIGNALS: dict[int, int] = {signal.SIGTERM: 0, signal.SIGINT: 128 + signal.SIGINT,
                                signal.SIGHUP: 128 + signal.SIGHUP,
                                signal.SIGQUIT: 128 + signal.SIGQUIT}


class Stopped(SystemExit):
    """Raised in the main thread by a stop signal other than SIGINT; ``code`` is the exit
    code, ``signum`` the signal."""

    def __init__(self, signum: int):
        super().__init__(STOP_SIGNALS.get(signum, 128 + signum))
        self.signum = signum


_state = threading.local()
_first: int | None = None  # the signal that started the stop, once one did


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def _handler(signum: int, frame: object) -> None:
    global _first
    if getattr(_state, "depth", 0):
        _state.pending = _state.pending or signum  # raised when the all-off is done
        return
    if _first is not None:
        log.info("%s while stopping (after %s): ignored", _name(signum), _name(_first))
        return
    _first = signum
    _raise(signum)


def _raise(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Stopped(signum)


def install() -> dict[int, object]:
    """Install the stop handler for SIGTERM, SIGINT, SIGHUP and SIGQUIT (main thread only);
    returns the previous handlers for :func:`restore`. A no-op ({}) in other threads."""
    global _first
    if threading.current_thread() is not threading.main_thread():
        return {}
    _first = None
    previous = {}
    for signum in STOP_SIGNALS:
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, _handler)
    return previous


def restore(previous: dict[int, object]) -> None:
    """Put back what :func:`install` replaced (for callers that live on: tests, embedding)."""
    for signum, handler in previous.items():
        if handler is not None:
            signal.signal(signum, handler)


@contextmanager
def deferred() -> Iterator[None]:
    """Stop signals that arrive inside wait until the block is done (nests; per thread).
    When the block raises, that error goes on and a deferred stop is dropped: the stack is
    unwinding already."""
    global _first
    depth = getattr(_state, "depth", 0)
    if depth == 0:
        _state.pending = None
    _state.depth = depth + 1
    try:
        yield
    finally:
        _state.depth = depth
    if depth == 0:
        pending, _state.pending = _state.pending, None
        if pending is not None and _first is None:
            _first = pending
            _raise(pending)
