"""Tools that never run in the daemon's loop: render, preview, metrics, sequence export."""

STEP_MS = (25, 50)  # FPP's and xLights' usual frame times (here: the CLI needs no numpy)
