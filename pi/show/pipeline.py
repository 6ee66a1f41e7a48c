"""A show: dB frames in, relay states and raw activations out.

Two kinds share one interface and the same :class:`pi.show.mapping.ShowMapper`: the learned model
from a bundle, and the LightShowPi-style ``bands`` fallback used when no usable bundle exists.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pi.show.bundle import DEFAULT_BUNDLE, Bundle, BundleError, load_bundle
from pi.show.features import DEFAULT_PARAMS, FeatureParams
from pi.config.values import MECHANICAL_MAX_TOGGLES_PER_S
from pi.show.lookahead import DEFAULT_LOOKAHEAD, LookaheadParams, plan_states
from pi.show.mapping import MappingParams, ShowMapper
from pi.show.relay_rules import ToggleGuard

log = logging.getLogger(__name__)

GUARD_BLOCK = 1024  # rows the planned show's switch limit takes at a time (memory)


class ShowFrames(NamedTuple):
    """What a show made of a block of frames, each ``[shape=(k, n_channels)]``: on/off
    ``states``, the encoder's ``activations`` and the dimmer ``levels`` in [0, 1]
    (pi.show.mapping explains the levels)."""

    states: np.ndarray
    activations: np.ndarray
    levels: np.ndarray


class Show:
    """``process(frames_db, times_s) -> ShowFrames``, frame after frame."""

    name = "show"
    guard: ToggleGuard | None = None  # the per-channel switch limit, after the mapper
    planned_onsets: np.ndarray | None = None  # set by plan()

    def __init__(self, mapper: ShowMapper, feature_params: FeatureParams):
        self.mapper = mapper
        self.feature_params = feature_params

    @property
    def n_channels(self) -> int:
        return self.mapper.params.n_channels

    def activations(self, frames_db: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def process(self, frames_db: np.ndarray, times_s: np.ndarray | list[float]) -> ShowFrames:
        """``[shape=(k, 513)]`` frames at ``times_s`` (an array, or a list of floats) ->
        :class:`ShowFrames`: the states, the activations and the dimmer levels, each
        ``[shape=(k, n_channels)]``."""
        acts = self.activations(frames_db)
        # Rows of Python lists from the mapper through the guard, made arrays once: a block
        # is one or two frames, where each conversion costs more than the work.
        times = times_s if type(times_s) is list else np.asarray(times_s, float).tolist()
        states, levels = self.mapper.run_rows(acts, frames_db, times)
        if self.guard:
            states, levels = self.guard.apply_rows(states, times, levels)
        if not states:  # np.array([]) would have the wrong shape
            return ShowFrames(np.zeros(acts.shape, bool), acts, np.zeros(acts.shape))
        return ShowFrames(np.array(states, bool), acts, np.array(levels, np.float64))

    def plan(self, frames_db: np.ndarray, times_s: np.ndarray, *,
             params: LookaheadParams = DEFAULT_LOOKAHEAD) -> ShowFrames:
        """A whole song's ``[shape=(n, 513)]`` frames at ``times_s`` -> :class:`ShowFrames`,
        planned with look-ahead (pi/show/lookahead.py): what playlist mode plays. Then, as in
        :meth:`process`, the user's overrides and a fresh strict switch limit.
        ``planned_onsets`` keeps the frames at which onsets could switch lamps."""
        return self.plan_signals(*self.plan_inputs(frames_db), times_s, params=params)

    def plan_inputs(self, frames_db: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What the planner needs of each frame, row by row, so a song can be taken in
        blocks without holding its 513-bin frames (40 MB for 4 minutes, and several times
        that in temporaries): activations ``[shape=(n, k)]``, level ``[shape=(n,)]`` and mel
        bands in dB ``[shape=(n, 128)]``."""
        return (self.activations(frames_db),) + tuple(self.mapper.frame_signals(frames_db))

    def plan_signals(self, acts: np.ndarray, level: np.ndarray, bands: np.ndarray | None,
                     times_s: np.ndarray, *, params: LookaheadParams = DEFAULT_LOOKAHEAD,
                     onset_envelope: np.ndarray | None = None,
                     accent_envelope: np.ndarray | None = None,
                     band_signals: tuple | None = None) -> ShowFrames:
        """:meth:`plan` from a whole song's :meth:`plan_inputs`; ``bands`` may be None when
        their ``onset_envelope`` and ``accent_envelope`` (pi.show.lookahead.onset_strength,
        over 1 and ``params.onset_span_frames`` frames) and ``band_signals``
        (pi.show.stem_accents.song_band_signals) are given instead."""
        mapper = self.mapper
        states, levels, self.planned_onsets = plan_states(
            activations=acts, level_db=level, bands_db=bands, dt=mapper.dt,
            silence_db=mapper.params.silence_db,
            min_hold_s=mapper.hold_s, params=params, onset_envelope=onset_envelope,
            accent_envelope=accent_envelope, band_signals=band_signals,
            max_per_s=self.guard.max_per_s if self.guard else MECHANICAL_MAX_TOGGLES_PER_S)
        # The overrides index a frame's channels along axis 0: channels-first, all at once.
        states = mapper.overrides.states(states.T).T
        levels = mapper.overrides.levels(levels.T).T
        if self.guard:
            guard = ToggleGuard(self.n_channels, max_per_s=self.guard.max_per_s,
                                hold_s=self.guard.hold_s)
            # In blocks of rows: the guard works on Python lists, which for a whole song
            # would cost 10 MB; it carries on from block to block, so the result is the same.
            for i in range(0, len(states), GUARD_BLOCK):
                rows = slice(i, i + GUARD_BLOCK)
                states[rows], levels[rows] = guard.apply(states[rows], times_s[rows],
                                                         levels[rows])
        return ShowFrames(states, acts, levels)


class ModelShow(Show):
    def __init__(self, bundle: Bundle, **mapper_options):
        super().__init__(ShowMapper(bundle.mapping, feature_params=bundle.feature_params,
                                    **mapper_options), bundle.feature_params)
        self.bundle = bundle
        self.name = f"model:{bundle.name}"

    def activations(self, frames_db):
        return self.bundle.activations(frames_db)


def band_edges(n_channels: int, *, fmin: float = 40.0, fmax: float = 15000.0) -> np.ndarray:
    return np.geomspace(fmin, fmax, n_channels + 1)


class BandsShow(Show):
    """LightShowPi's idea: log-spaced frequency bands, one per channel, with running
    normalisation (here the mapper's adaptive thresholds)."""

    def __init__(self, *, n_channels: int = 8, feature_params: FeatureParams = DEFAULT_PARAMS,
                 **mapper_options):
        freqs = np.arange(feature_params.n_bins) * feature_params.sample_rate / feature_params.n_fft
        edges = band_edges(n_channels)
        self._matrix = np.zeros((feature_params.n_bins, n_channels), np.float32)
        for c in range(n_channels):
            idx = (freqs >= edges[c]) & (freqs < edges[c + 1])
            if not idx.any():
                idx[np.argmin(np.abs(freqs - edges[c]))] = True
            self._matrix[idx, c] = 1.0 / idx.sum()
        params = MappingParams(center=np.full(n_channels, -50.0, np.float32),
                               scale=np.full(n_channels, 6.0, np.float32), adapt_s=2.0)
        super().__init__(ShowMapper(params, feature_params=feature_params, **mapper_options),
                         feature_params)
        self.name = "bands"

    def activations(self, frames_db):
        return frames_db @ self._matrix


def make_show(*, model: str | Path | Bundle | None = None, mapper: str = "model",
              n_channels: int | None = None,
              max_toggles_per_s: int | None = MECHANICAL_MAX_TOGGLES_PER_S,
              **mapper_options) -> Show:
    """The configured show; a bad, missing or mismatched bundle logs why and falls back to
    bands. ``model``: a bundle folder, or a bundle already loaded (to build many shows from
    one load). ``mapper_options``: ``overrides``, ``hold_s``, ``silence_db`` for the mapper.
    ``n_channels=None`` (render, preview, evaluate): as many as the bundle has, else 8.
    ``max_toggles_per_s``: the strict per-channel limit (pi/show/relay_rules.py); None: none."""
    show = _make_show(model=model, mapper=mapper, n_channels=n_channels, **mapper_options)
    if max_toggles_per_s is not None:
        show.guard = ToggleGuard(show.n_channels, max_per_s=max_toggles_per_s,
                                 hold_s=getattr(show.mapper, "hold_s",
                                                mapper_options.get("hold_s") or 0.0))
    return show


def _make_show(*, model, mapper, n_channels, **mapper_options) -> Show:
    if mapper == "bands":
        return BandsShow(n_channels=n_channels or 8, **mapper_options)
    if mapper != "model":
        raise ValueError(f"mapper: expected 'model' or 'bands', found {mapper!r}")
    path = model.path if isinstance(model, Bundle) else Path(model) if model else DEFAULT_BUNDLE
    try:
        bundle = model if isinstance(model, Bundle) else load_bundle(path)
        if n_channels is not None and bundle.n_channels != n_channels:
            raise BundleError(f"{path}: expected a model with {n_channels} channels, found "
                              f"{bundle.n_channels}")
    except BundleError as exc:
        log.error("model bundle unusable, falling back to the bands mapper: %s", exc)
        return BandsShow(n_channels=n_channels or 8, **mapper_options)
    return ModelShow(bundle, **mapper_options)
