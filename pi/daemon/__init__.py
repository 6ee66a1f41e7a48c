"""The service: the main loop, its control socket, show hours, signals and systemd."""
