"""Network protocols: the E1.31 (sACN) packet codec shared by the sACN output and receiver."""
