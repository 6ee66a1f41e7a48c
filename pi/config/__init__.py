"""The configuration file: loading, checking and writing config.toml.

The names a command line offers are here, so that commands reading no config (render) need
not load pi.config.load (its dataclasses and TOML parser are a tenth of their start-up).
"""
SOURCES = ("line-in", "playlist", "file", "sacn")
MAPPERS = ("model", "bands")
OUTPUT_NAMES = ("rpigpio", "sacn", "terminal", "mock")
