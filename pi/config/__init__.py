"""The configuration file: loading, checking and writing config.toml."""
