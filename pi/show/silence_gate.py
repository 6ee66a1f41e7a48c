"""The causal show's silence gate: lamps go dark when the music stops or fades out.

The causal show (pi/show/mapping.py) decides from the past alone, so it cannot tell a soft
verse from a song's end: the gate closes ``gate_db`` below a running loud level, and always
below ``silence_db``. The look-ahead show knows where the song ends instead
(pi/show/lookahead.py ``music_gate``).

Stdlib only.
"""
from __future__ import annotations

GATE_DECAY_DB_S = 40.0  # how fast the gate's peak hold falls
GATE_HYST_DB = 3.0      # a closed gate needs this much more level to reopen


class SilenceGate:
    """Open while music plays: ``step(level_db) -> bool``, one frame at a time."""

    def __init__(self, *, gate_db: float, silence_db: float, dt: float):
        self.gate_db, self.silence_db, self.dt = gate_db, silence_db, dt
        self.level_ref = silence_db + 20.0
        self.level_hold = silence_db
        self.open = False

    def step(self, level: float) -> bool:
        # A peak hold that decays at GATE_DECAY_DB_S bridges the gaps between staccato notes
        # (a raw level would flicker the gate), yet falls fast enough after the music ends.
        self.level_hold = max(level, self.level_hold - GATE_DECAY_DB_S * self.dt)
        # The reference rises quickly and falls slowly: a fade-out or a quiet tail stays far
        # below it, while a quiet song lifts it within seconds.
        tau = 1.0 if self.level_hold > self.level_ref else 30.0
        self.level_ref += (self.level_hold - self.level_ref) * min(1.0, self.dt / tau)
        threshold = self.level_ref + self.gate_db + (0.0 if self.open else GATE_HYST_DB)
        self.open = bool(self.level_hold > max(threshold, self.silence_db))
        return self.open
