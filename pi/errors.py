"""The one base class of the errors lightshow expects (bad config, bundle, song, device,
playlist, output, control socket): each message names the thing and what was expected. The
command line catches it for one clear line; anything else is a bug and shows a traceback."""
from __future__ import annotations


class LightshowError(Exception):
    """An expected failure, with a message that says what was expected and what was found."""


class ConfigError(LightshowError):
    """A config that cannot be used; the message names the key and what was expected.
    (Here, not in pi.config: commands that read no config catch it without loading it.)"""
