import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings, strategies as st

from pi.audio.decode import read_song
from pi.show.features import (DEFAULT_PARAMS, N_BINS, StreamingFeatures, fit_normalisation,
                         frame_times, hann_window, n_frames_for, normalise, resample,
                         song_features, spectra_db, to_mono)

SR = DEFAULT_PARAMS.sample_rate


def _noisy_tone(seconds=1.0, freq=440.0, seed=0):
    t = np.arange(int(SR * seconds)) / SR
    rng = np.random.default_rng(seed)
    return (0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)


def test_shapes_and_frame_times():
    x = _noisy_tone(1.0)
    frames = song_features(x)
    assert frames.shape == (n_frames_for(len(x)), N_BINS) == (85, 513)
    assert frames.dtype == np.float32
    times = frame_times(len(frames))
    assert times[0] == pytest.approx(1024 / SR) and np.allclose(np.diff(times), 512 / SR)


def test_full_scale_sine_peaks_near_0_db_at_its_bin():
    x = _noisy_tone(0.5, freq=SR * 40 / 1024)  # exactly on bin 40
    frames = song_features(x)
    assert np.argmax(frames[5]) == 40
    assert -8.0 < frames[5, 40] < 0.5


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=20))
def test_streaming_equals_batch_for_any_block_sizes(sizes):
    x = _noisy_tone(0.4, seed=len(sizes))
    stream = StreamingFeatures()
    out, pos = [], 0
    for size in sizes + [len(x)]:
        out.append(stream.push(x[pos:pos + size]))
        pos += size
        if pos >= len(x):
            break
    streamed = np.concatenate(out)
    assert np.array_equal(streamed, song_features(x))
    assert stream.frames_emitted == len(streamed)


def test_silence_is_floored_not_nan():
    frames = song_features(np.zeros(SR // 2, np.float32))
    assert np.all(frames == DEFAULT_PARAMS.db_floor)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_gives_clear_error(bad):
    x = _noisy_tone(0.1)
    x[100] = bad
    with pytest.raises(ValueError, match=r"expected finite samples, found .* at sample 100"):
        song_features(x)


@pytest.mark.parametrize("shape", [(0, 1024), (1, 1024), (2, 1024), (7, 1024), (1024,)])
def test_spectra_are_numpys_rfft_bit_for_bit(shape):
    """spectra_db calls numpy 2's transform without np.fft.rfft's wrapper, scales the window
    instead of the magnitudes and takes a float32 log, not a float64 log10: the textbook dB
    within 2 float32 ulps."""
    x = np.random.default_rng(len(shape)).normal(size=shape).astype(np.float32)
    window = hann_window(1024)
    mag = np.abs(np.fft.rfft(x * window, axis=-1)) * (2.0 / window.sum())
    expected = (20.0 * np.log10(np.maximum(mag, 10.0 ** (DEFAULT_PARAMS.db_floor / 20.0)))
                ).astype(np.float32)
    np.testing.assert_array_max_ulp(spectra_db(x), expected, maxulp=2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_streamed_float32_block_with_a_non_finite_sample_is_refused(bad):
    block = _noisy_tone(0.05)
    block[7] = bad
    with pytest.raises(ValueError, match=r"expected finite samples, found .* at sample 7"):
        StreamingFeatures().push(block)
    big = np.full(10, 3e38, np.float32)  # finite samples whose float32 sum would overflow
    assert to_mono(big) is big


def test_too_short_gives_no_frames():
    assert song_features(np.zeros(1000, np.float32)).shape == (0, 513)


def test_stereo_is_mixed_to_mono(tmp_path):
    x = _noisy_tone(0.5)
    sf.write(tmp_path / "st.wav", np.stack([x, x], axis=1), SR, subtype="FLOAT")
    assert np.allclose(read_song(tmp_path / "st.wav"), x, atol=1e-6)


def test_mono_is_the_mean_of_the_channels_bit_for_bit():
    # Stereo has its own fast path: it must give np.mean's numbers exactly, tiny, huge and
    # signed zeros included.
    rng = np.random.default_rng(7)
    for dtype in (np.float32, np.float64):
        for channels in (1, 2, 3, 6):
            x = (rng.normal(size=(5000, channels))
                 * 10.0 ** rng.uniform(-42, 30, size=(5000, 1))).astype(dtype)
            x[:3] = [[0.0] * channels, [-0.0] * channels, [1.0] + [-1.0] * (channels - 1)]
            mono = to_mono(x)
            assert mono.dtype == np.float32
            np.testing.assert_array_equal(mono, x.mean(axis=1).astype(np.float32))


def test_resampling_keeps_the_tone_and_the_length(tmp_path):
    rate = 48000
    t = np.arange(rate) / rate
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    sf.write(tmp_path / "48k.wav", x, rate, subtype="FLOAT")
    y = read_song(tmp_path / "48k.wav")
    assert abs(len(y) - SR) <= 2
    whole = resample(x, rate_in=rate)
    assert np.allclose(y[1000:-1000], whole[1000:-1000], atol=1e-3)
    frames = song_features(y)
    assert np.argmax(frames[20]) == round(1000 * 1024 / SR)


def test_normalisation_round_trip():
    frames = song_features(_noisy_tone(1.0))
    mean, std = fit_normalisation(frames)
    z = normalise(frames, mean=mean, std=std)
    assert np.allclose(z.mean(axis=0), 0, atol=1e-3)
    assert mean.shape == std.shape == (513,)


def test_skip_counts_the_frames_push_would_make_and_keeps_the_stream_aligned():
    # A planned song only needs its frames' timing; after it the stream must carry on exactly.
    rng = np.random.default_rng(3)
    y = rng.uniform(-0.5, 0.5, 44100).astype(np.float32)
    blocks = np.array_split(y, 37)
    pushed, skipping = StreamingFeatures(), StreamingFeatures()
    counts = [len(pushed.push(b)) for b in blocks[:20]]
    assert [skipping.skip(b) for b in blocks[:20]] == counts
    assert skipping.frames_emitted == pushed.frames_emitted
    for b in blocks[20:]:
        np.testing.assert_array_equal(skipping.push(b), pushed.push(b))


def test_prefetched_blocks_come_in_order_errors_in_place_and_closing_stops_the_thread():
    import threading

    from pi.audio.decode import AudioFileError, prefetched

    def blocks(n, fail_at=None):
        for i in range(n):
            if i == fail_at:
                raise AudioFileError(f"song.ogg: decoding failed part-way at block {i}")
            yield np.full(3, i, np.float32)

    assert [int(b[0]) for b in prefetched(blocks(50), depth=2)] == list(range(50))
    got = []
    with pytest.raises(AudioFileError, match="at block 7"):
        for b in prefetched(blocks(50, fail_at=7)):
            got.append(int(b[0]))
    assert got == list(range(7))  # everything before the error, nothing lost
    early = prefetched(blocks(10**6), depth=2)
    assert int(next(early)[0]) == 0
    early.close()  # the caller stops: so does the thread making the blocks
    assert not any(t.name == "prefetch" for t in threading.enumerate())
