"""Fuzzing with hypothesis: the config loader, the bundle loader (random manifest and npz
mutations), the E1.31 parser (and the sacn source behind it) and the feature path (NaN, inf,
empty and huge blocks). Every input ends in a valid result or a clear, named error (the
module's own error class, with "expected ... found ..."), never another exception.

max_examples keeps the file well under 30 s on a busy 2-core machine; CI runs it every time,
so each run tries new inputs (hypothesis's database keeps any failure for the next run)."""
from __future__ import annotations

import io
import json
import math
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from pi.net import e131
from pi.show.bundle import MANIFEST_NAME, NPZ_NAME, Bundle, BundleError, load_bundle, sha256_file
from pi.config.load import Config, ConfigError, load_config
from pi.show.features import StreamingFeatures, song_features
from tests.test_bundle import _tiny

FAST = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def named(exc: BaseException, *words: str) -> None:
    """A clear error: it names what was expected (and what was found)."""
    text = str(exc)
    assert text and all(w in text for w in words), text


# --- the config loader ------------------------------------------------------------------------

SCHEMA = Config().to_dict()
KEYS = [(section, key) for section, table in SCHEMA.items() for key, value in table.items()
        if not isinstance(value, dict)]
SUBKEYS = [(section, sub, key) for section, table in SCHEMA.items()
           for sub, inner in table.items() if isinstance(inner, dict) for key in inner]

toml_scalars = (st.booleans() | st.integers(-10**15, 10**15)
                | st.floats(allow_nan=True, allow_infinity=True)
                | st.text(max_size=20) | st.sampled_from(["auto", "", "multicast", "mock",
                                                         "ssr", "sacn", "127.0.0.1"]))
toml_values = st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=8)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=8)


@st.composite
def config_dicts(draw):
    d: dict = {}
    for section, key in draw(st.lists(st.sampled_from(KEYS), max_size=6)):
        d.setdefault(section, {})[key] = draw(toml_values)
    for section, sub, key in draw(st.lists(st.sampled_from(SUBKEYS), max_size=6)):
        table = d.setdefault(section, {})
        if isinstance(table, dict):
            table.setdefault(sub, {})
            if isinstance(table[sub], dict):
                table[sub][key] = draw(toml_values)
    if draw(st.booleans()):  # whole sections or unknown keys of the wrong kind
        d[draw(st.sampled_from(list(SCHEMA) + ["extra"]))] = draw(toml_values)
    return d


@FAST
@given(config_dicts())
def test_any_config_is_a_config_or_a_config_error(d):
    try:
        cfg = Config.from_dict(d)
    except ConfigError as exc:
        named(exc, "expected")
    else:
        assert isinstance(cfg, Config)


@FAST
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_any_config_file_is_a_config_or_a_config_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_bytes(data)
        try:
            load_config(path)
        except ConfigError as exc:
            named(exc, str(path), "expected")


# --- the bundle loader ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory):
    from pi.show.bundle import write_bundle

    manifest, arrays = _tiny(np.random.default_rng(0))
    path = write_bundle(tmp_path_factory.mktemp("fuzz") / "m", manifest=manifest,
                        arrays=arrays)
    return json.loads((path / MANIFEST_NAME).read_text()), arrays


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40)
                           | st.floats(allow_nan=False) | st.text(max_size=12),
                           lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)


def _paths(obj, prefix=()):
    """Every key path in a manifest, for mutations at any depth."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@st.composite
def manifest_mutations(draw, manifest):
    m = json.loads(json.dumps(manifest))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(m) if p]
        path = draw(st.sampled_from(paths))
        parent = m
        for k in path[:-1]:
            parent = parent[k]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return m


@st.composite
def array_mutations(draw, arrays):
    out = dict(arrays)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(out) + ["encoder/extra"]))
        how = draw(st.sampled_from(["drop", "shape", "dtype", "nan", "inf", "zero", "huge"]))
        a = out.get(key, np.zeros(3, np.float32))
        if how == "drop":
            out.pop(key, None)
        elif how == "shape":
            out[key] = np.zeros(draw(st.lists(st.integers(0, 600), min_size=0, max_size=3)),
                                np.float32)
        elif how == "dtype":
            # From numbers only: a key already turned into strings has no numbers to cast.
            src = a if a.dtype.kind in "fciub" else np.zeros(a.shape, np.float32)
            out[key] = src.astype(draw(st.sampled_from([np.int8, np.float16, np.complex64,
                                                        np.bool_, "U3"])))
        elif how in ("nan", "inf") and a.size and a.dtype.kind == "f":
            b = a.copy()
            b.flat[draw(st.integers(0, a.size - 1))] = np.nan if how == "nan" else np.inf
            out[key] = b
        elif how == "zero":
            out[key] = np.zeros_like(a)
        elif how == "huge" and a.dtype.kind == "f":
            out[key] = np.full_like(a, 3e38)
    return out


def _write(folder: Path, manifest: dict, arrays: dict, *, reseal: bool,
           npz_bytes: bytes | None = None) -> None:
    folder.mkdir()
    if npz_bytes is None:
        np.savez(folder / NPZ_NAME, **arrays)
    else:
        (folder / NPZ_NAME).write_bytes(npz_bytes)
    if reseal:  # a matching sha256, so that the checks behind it are reached too
        manifest = dict(manifest, npz_sha256=sha256_file(folder / NPZ_NAME))
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))


def _load(folder: Path) -> None:
    try:
        bundle = load_bundle(folder)
    except BundleError as exc:
        named(exc, "expected")
        return
    assert isinstance(bundle, Bundle)
    frames = np.random.default_rng(0).normal(-50, 10, (3, bundle.feature_params.n_bins))
    acts = bundle.activations(frames.astype(np.float32))
    assert acts.shape == (3, bundle.n_channels)


@FAST
@given(data=st.data(), reseal=st.booleans())
def test_any_manifest_mutation_is_a_bundle_or_a_bundle_error(good_bundle, data, reseal):
    manifest, arrays = good_bundle
    mutated = data.draw(manifest_mutations(manifest))
    with tempfile.TemporaryDirectory() as tmp:
        _write(Path(tmp) / "b", mutated, arrays, reseal=reseal)
        _load(Path(tmp) / "b")


@FAST
@given(data=st.data())
def test_any_npz_mutation_is_a_bundle_or_a_bundle_error(good_bundle, data):
    manifest, arrays = good_bundle
    mutated = data.draw(array_mutations(arrays))
    with tempfile.TemporaryDirectory() as tmp:
        _write(Path(tmp) / "b", manifest, mutated, reseal=True)
        _load(Path(tmp) / "b")


@FAST
@given(data=st.data(), cut=st.integers(0, 5000), noise=st.binary(max_size=64))
def test_a_damaged_npz_file_is_a_bundle_error(good_bundle, data, cut, noise):
    manifest, arrays = good_bundle
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    raw = buf.getvalue()
    at = data.draw(st.integers(0, len(raw)))
    damaged = raw[:at] + noise + raw[at + cut:]
    assume(damaged != raw)
    with tempfile.TemporaryDirectory() as tmp:
        _write(Path(tmp) / "b", manifest, arrays, reseal=True, npz_bytes=damaged)
        _load(Path(tmp) / "b")


def test_a_pickled_array_in_the_npz_is_refused(good_bundle, tmp_path):
    manifest, arrays = good_bundle
    _write(tmp_path / "b", manifest, dict(arrays, **{"encoder/evil": np.array([{"x": 1}],
                                                                               dtype=object)}),
           reseal=True)
    with pytest.raises(BundleError, match="expected a numpy .npz archive"):
        load_bundle(tmp_path / "b")
    assert zipfile.is_zipfile(tmp_path / "b" / NPZ_NAME)


# --- the E1.31 parser and the sacn source ------------------------------------------------------

GOOD = e131.build(cid=bytes(range(16)), universe=7, slots=bytes([255, 0, 128, 7]))


@st.composite
def packets(draw):
    kind = draw(st.sampled_from(["random", "flip", "cut", "grow", "built"]))
    if kind == "random":
        return draw(st.binary(max_size=700))
    if kind == "built":
        return e131.build(cid=draw(st.binary(min_size=16, max_size=16)),
                          universe=draw(st.integers(1, 63999)),
                          slots=draw(st.binary(max_size=512)),
                          source_name=draw(st.text(max_size=70)),
                          priority=draw(st.integers(0, 255)),
                          sequence=draw(st.integers(0, 255)),
                          options=draw(st.integers(0, 255)),
                          start_code=draw(st.integers(0, 255)))
    raw = bytearray(GOOD)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 6))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    elif kind == "cut":
        raw = raw[:draw(st.integers(0, len(raw)))]
    else:
        raw += draw(st.binary(min_size=1, max_size=600))
    return bytes(raw)


@settings(max_examples=400, deadline=None)
@given(st.lists(packets(), min_size=1, max_size=8))
def test_any_datagram_parses_or_is_a_packet_error_and_never_stops_the_source(datagrams):
    from pi.audio.sacn_receiver import LOST, SACNSource

    src = SACNSource(universe=7, addresses=[1, 2, 3, 512], port=0, multicast=False,
                     max_toggles_per_s=3, clock=lambda: 0.0)
    for raw in datagrams:
        try:
            p = e131.parse(raw)
        except e131.PacketError as exc:
            assert exc.reason and str(exc).startswith(exc.reason)
        else:
            assert isinstance(p, e131.DataPacket) and len(p.slots) <= e131.MAX_SLOTS
            assert 1 <= p.universe <= 63999 and p.priority <= 200
        src.take(raw, 0.0, address="192.168.1.9")  # counted or taken, never raised
    out = src._update(0.0)
    assert out is None or out is LOST or (out.shape == (4,) and np.all((out >= 0) & (out <= 1)))


# --- the feature path -------------------------------------------------------------------------

sample_values = st.sampled_from([0.0, 0.5, -1.0, 1e-30, 3e38, -3e38, np.nan, np.inf, -np.inf])


@st.composite
def blocks(draw):
    n = draw(st.sampled_from([0, 1, 7, 511, 1024, 4096, 200_000]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = (rng.normal(size=n) * draw(st.sampled_from([0.0, 0.3, 1.0, 1e30]))).astype(np.float32)
    for _ in range(draw(st.integers(0, 2)) if n else 0):
        x[draw(st.integers(0, n - 1))] = draw(sample_values)
    return x


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(blocks(), min_size=1, max_size=4))
def test_any_audio_gives_frames_and_states_or_a_named_error(audio):
    from pi.show.pipeline import make_show

    stream, show, got = StreamingFeatures(), make_show(mapper="bands"), []
    for i, block in enumerate(audio):
        try:
            frames = stream.push(block)
        except ValueError as exc:
            assert not np.all(np.isfinite(block))  # the only reason to refuse a block
            named(exc, "expected finite samples, found")
            return
        assert frames.shape[1:] == (513,) and np.all(np.isfinite(frames))
        times = (stream.frames_emitted - len(frames) + np.arange(len(frames))) * 0.01 + i
        states, _, levels = show.process(frames, np.sort(times))
        assert states.shape == (len(frames), 8) and states.dtype == bool
        assert np.all(np.isfinite(levels))
        got.append(frames)
    whole = song_features(np.concatenate(audio))  # batch equals streaming, whatever came
    assert np.array_equal(np.concatenate(got) if got else whole[:0], whole)
    assert not math.isnan(float(whole.sum())) if len(whole) else True
