"""Stage 5, outputs: where channel states go (relays on GPIO, sACN, the terminal, a mock)."""
