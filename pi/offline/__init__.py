"""Tools that never run in the daemon's loop: render, preview, metrics, sequence export."""
