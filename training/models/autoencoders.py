"""Keras 3 encoders with an n-unit bottleneck, the models that train them, and their export.

The encoder (frames -> codes, one frame at a time) is what the Pi runs. It is trained inside
a model that sees *sequences* of consecutive frames ``[shape=(n, length, 513)]`` and has two
training-only heads (issue 8):

- ``timbre``: each frame's own code predicts :func:`timbre_targets`, 20 MFCC-like
  coefficients standardised over the song. Why: reconstructing 513 dB bins spends the
  bottleneck on loudness and spectral tilt; predicting timbre makes the codes follow what
  sounds, so the lights repeat when the music repeats (duty ssm ceiling on held-out songs
  0.46 -> about 0.8).
- ``reconstruction``: frame ``t`` is decoded from the codes of frames ``t - context`` ..
  ``t + context`` (a Conv1D over time) *and the spectrum of frame t - 1*
  (:class:`PreviousFrame`, causal side information). The decoder is not shipped, so neither
  costs anything on the Pi, and the encoder still sees frame t alone. Why the spectrum:
  neighbouring codes buy almost nothing (a shared per-frame encoder gives half-overlapping
  neighbours nearly the same 8 codes: the best linear decoder from the PCA-8 codes of
  t-4..t+4 reaches 0.997x PCA-8), but neighbouring spectra predict frame t well. With frame
  t - 1 beside them the codes need only carry what is new in frame t: held-out MSE over
  PCA-8's 1.09x -> 0.72x dense, 1.08x -> 0.72x conv (Dec 2026). Measure it against baselines given the same frame
  t - 1 (:func:`training.models.pca.side_information_baselines`): x[t-1] alone 0.98x,
  x[t-1] + PCA-8 of the difference 0.84x, least squares from PCA-8's code and x[t-1] 0.63x.
  The codes trade reconstruction for timbre (the show's structure), so a linear decoder
  with PCA's codes still beats the trained one.

The bottleneck layer is always named ``bottleneck`` inside the encoder sub-model named
``encoder`` (:func:`encoder_of`).
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from functools import lru_cache  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

from pi.show.features import DEFAULT_PARAMS, FeatureParams, mel_basis  # noqa: E402

N_TIMBRE = 20


@lru_cache(maxsize=4)
def _timbre_basis(n_bins: int, sr: int, n_fft: int, n_coefficients: int):
    mel = mel_basis(sr=sr, n_fft=n_fft).astype(np.float32)
    n_mels = len(mel)
    k = np.arange(n_coefficients)[:, None]
    dct = np.cos(np.pi * k * (2 * np.arange(n_mels)[None, :] + 1) / (2 * n_mels))
    dct *= np.sqrt(2.0 / n_mels)
    dct[0] /= np.sqrt(2.0)  # orthonormal DCT-II, as librosa's MFCCs use
    return mel.T.copy(), dct.T


def timbre_targets(frames_db: np.ndarray, *, n_coefficients: int = N_TIMBRE,
                   params: FeatureParams = DEFAULT_PARAMS) -> np.ndarray:
    """One song's dB frames ``[shape=(n_frames, 513)]`` -> its timbre
    ``[shape=(n_frames, n_coefficients)]``: MFCC-like coefficients (the DCT-II of the mel bands
    in dB), each standardised over the song. The training objective of every candidate.

    Standardising per song (as the ssmCorr metric does) leaves what changes *within* a song:
    sections, instruments; not the song's overall colour, which a light show cannot show.
    """
    frames_db = np.asarray(frames_db, np.float32)
    if frames_db.ndim != 2 or frames_db.shape[1] != params.n_bins:
        raise ValueError(f"timbre_targets: expected frames [shape=(n_frames, {params.n_bins})],"
                         f" found shape {frames_db.shape}")
    mel_t, dct_t = _timbre_basis(params.n_bins, params.sample_rate, params.n_fft,
                                 n_coefficients)
    # exp rather than 10 ** x: the same powers, at a third of the cost over a whole library.
    mel_power = np.exp(frames_db * np.float32(np.log(10.0) / 10.0)) @ mel_t
    # float64 from here: a coefficient is a sum of 128 terms near -60 dB, and within a steady
    # song its spread can be small enough for float32 rounding to show after standardising.
    mel_db = 10.0 * np.log10(np.maximum(mel_power.astype(np.float64), 1e-10))
    coef = mel_db @ dct_t
    coef -= coef.mean(axis=0)
    coef /= coef.std(axis=0) + 1e-6
    return coef.astype(np.float32)


def song_sequences(songs: list[tuple[np.ndarray, np.ndarray]], *, length: int,
                   max_frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per song ``(normalised frames, timbre targets)`` -> non-overlapping runs of ``length``
    consecutive frames ``[shape=(n, length, 513)]`` and their targets, at most ``max_frames``
    frames in all (an even pick over the runs of every song, so every song counts)."""
    rng = np.random.default_rng(seed)
    runs = []  # (song, first frame, number of runs)
    for frames, _ in songs:
        n = len(frames) // length
        if n:
            runs.append((frames, _, int(rng.integers(0, len(frames) - n * length + 1)), n))
    if not runs:
        raise ValueError(f"song_sequences: expected a song of at least {length} frames, "
                         f"found none")
    total = sum(n for *_, n in runs)
    step = max(1, int(np.ceil(total * length / max_frames)))
    # Every step-th run of the whole library, taken song by song: only the kept frames are
    # copied, never the whole library.
    xs, ys, offset = [], [], 0
    for frames, targets, start, n in runs:
        keep = np.arange((-offset) % step, n, step)
        offset += n
        if len(keep):
            idx = (start + keep[:, None] * length + np.arange(length)).ravel()
            xs.append(np.asarray(frames[idx]).reshape(len(keep), length, -1))
            ys.append(np.asarray(targets[idx]).reshape(len(keep), length, -1))
    return np.concatenate(xs), np.concatenate(ys)


@keras.saving.register_keras_serializable(package="lightshow")
class Decorrelation(layers.Layer):
    """Identity layer adding ``weight * mean(offdiag(corr(codes))**2)`` as a loss, over all
    frames of the batch (any leading axes).

    Why: channels that move together make a dull show (the seed's 1.00 corr_max); pushing the
    bottleneck units apart spreads the music over all 8 lights.
    """

    def __init__(self, weight: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.weight = float(weight)

    def call(self, x):
        if self.weight > 0:
            n = ops.shape(x)[-1]
            flat = ops.reshape(x, (-1, n))
            xc = flat - ops.mean(flat, axis=0, keepdims=True)
            cov = ops.matmul(ops.transpose(xc), xc) / ops.cast(ops.shape(flat)[0], x.dtype)
            d = ops.sqrt(ops.diagonal(cov) + 1e-6)
            corr = cov / (d[:, None] * d[None, :])
            off = corr * (1.0 - ops.eye(n, dtype=x.dtype))
            self.add_loss(self.weight * ops.sum(off * off) / ops.cast(n * (n - 1), x.dtype))
        return x

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


def build_seed_encoder(n_inputs: int = 513, *, bottleneck: int = 8) -> keras.Model:
    """The seed blog's encoder (a 16-unit tanh funnel), kept for the ablation."""
    inputs = keras.Input((n_inputs,), name="frames")
    x = layers.Dropout(0.2)(inputs)
    for units in (128, 64, 32, 16):
        x = layers.Dense(units, activation="tanh")(x)
    code = layers.Dense(bottleneck, activation="tanh", name="bottleneck")(x)
    return keras.Model(inputs, code, name="encoder")


def build_dense_encoder(n_inputs: int = 513, *, bottleneck: int = 8, hidden=(256, 64),
                        dropout: float = 0.05) -> keras.Model:
    """Standardised (not min-max) inputs, so every bin counts; wide silu layers, since a
    16-unit tanh funnel loses information; a linear bottleneck, since tanh units saturate;
    light dropout on the input only."""
    inputs = keras.Input((n_inputs,), name="frames")
    x = layers.Dropout(dropout)(inputs) if dropout else inputs
    for units in hidden:
        x = layers.Dense(units, activation="silu")(x)
    code = layers.Dense(bottleneck, activation="linear", name="bottleneck")(x)
    return keras.Model(inputs, code, name="encoder")


def build_conv_encoder(n_inputs: int = 513, *, bottleneck: int = 8,
                       filters=(16, 32)) -> keras.Model:
    """Conv1D over the frequency axis of one frame: no look-ahead, so no added latency."""
    inputs = keras.Input((n_inputs,), name="frames")
    x = layers.Reshape((n_inputs, 1))(inputs)
    for f in filters:
        x = layers.Conv1D(f, 9, strides=4, activation="silu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="silu")(x)
    code = layers.Dense(bottleneck, activation="linear", name="bottleneck")(x)
    return keras.Model(inputs, code, name="encoder")


ENCODERS = {"seed": build_seed_encoder, "dense": build_dense_encoder,
            "conv": build_conv_encoder}


@keras.saving.register_keras_serializable(package="lightshow")
class PreviousFrame(layers.Layer):
    """Sequences ``[shape=(n, length, bins)]`` -> each frame's predecessor in its sequence and
    a flag saying there is one ``[shape=(n, length, bins + 1)]``.

    The first frame of a sequence has no predecessor: it gets zeros (the training mean, since
    frames are standardised) and the flag 0, so the decoder rebuilds it from the codes alone.
    Not a copy of itself, which would hand the decoder the answer; and kept in the loss and
    in the reported MSE, so the MSE is over the same frames as PCA-8's.
    """

    def call(self, x):
        previous = ops.pad(x[:, :-1], ((0, 0), (1, 0), (0, 0)))
        flag = ops.pad(ops.ones_like(x[:, 1:, :1]), ((0, 0), (1, 0), (0, 0)))
        return ops.concatenate([previous, flag], axis=-1)


def build_trainer(encoder: keras.Model, *, length: int, context: int = 2,
                  n_timbre: int = N_TIMBRE, decorrelation: float = 0.0,
                  decoder_units: int = 256, previous_frame: bool = True) -> keras.Model:
    """The training model around ``encoder``: sequences ``[shape=(n, length, 513)]`` ->
    ``{"timbre": (n, length, n_timbre), "reconstruction": (n, length, 513)}``.

    ``previous_frame``: the reconstruction decoder also sees frame t - 1's spectrum (causal
    side information, :class:`PreviousFrame`), so the codes of frame t need only carry what
    is new in it. The encoder still sees frame t alone: the Pi's encoder is unchanged."""
    n_inputs = encoder.input.shape[-1]
    frames = keras.Input((length, n_inputs), name="frames")
    codes = layers.TimeDistributed(encoder, name="frames_to_codes")(frames)
    codes = Decorrelation(decorrelation, name="decorrelation")(codes)
    t = layers.Dense(64, activation="silu")(codes)
    timbre = layers.Dense(n_timbre, name="timbre")(t)
    # Frame t from the codes of frames t - context .. t + context ("same": zeros past the ends).
    r = layers.Conv1D(decoder_units, 2 * context + 1, padding="same", activation="silu")(codes)
    if previous_frame:
        previous = PreviousFrame(name="previous_frame")(frames)
        r = layers.Concatenate()([r, previous])
    r = layers.Dense(decoder_units, activation="silu")(r)
    reconstruction = layers.Dense(n_inputs, name="decoded" if previous_frame
                                  else "reconstruction")(r)
    if previous_frame:
        # A linear path from frame t - 1 beside the nonlinear one: most of frame t is frame
        # t - 1 scaled back towards the mean, which a linear map carries without squeezing
        # 513 bins through the decoder's hidden units. It starts at zero, so an untrained
        # decoder is the codes-only one and frame t - 1 is used only as far as it helps.
        carried = layers.Dense(n_inputs, kernel_initializer="zeros", name="carried")(previous)
        reconstruction = layers.Add(name="reconstruction")([reconstruction, carried])
    return keras.Model(frames, {"timbre": timbre, "reconstruction": reconstruction},
                       name=f"{encoder.name}_trainer")


def encoder_of(model: keras.Model) -> keras.Model:
    """The per-frame encoder inside a trainer (also after ``keras.saving.load_model``)."""
    return model.get_layer("frames_to_codes").layer


@dataclass
class TrainResult:
    model: keras.Model
    encoder: keras.Model
    history: dict = field(default_factory=dict)
    seconds: float = 0.0

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Sequences ``[shape=(n, length, 513)]`` -> their reconstruction, same shape."""
        return np.asarray(self.model.predict(x, verbose=0, batch_size=64)["reconstruction"])


def train_autoencoder(kind: str, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                      y_val: np.ndarray, *, bottleneck: int = 8, epochs: int = 40,
                      batch_frames: int = 512, context: int = 2,
                      reconstruction_weight: float = 1.0, timbre_weight: float = 1.0,
                      decorrelation: float = 0.0, decoder_units: int = 256, patience: int = 4,
                      learning_rate: float = 1e-3, cosine: bool = False, seed: int = 0,
                      previous_frame: bool = True, verbose: int = 0) -> TrainResult:
    """Train on sequences of normalised frames ``[shape=(n, length, 513)]`` with their timbre
    targets ``[shape=(n, length, 20)]`` (:func:`song_sequences`), stopping early on the
    validation loss."""
    if x_train.ndim != 3 or y_train.shape[:2] != x_train.shape[:2]:
        raise ValueError(f"train_autoencoder: expected sequences [shape=(n, length, bins)] and "
                         f"targets [shape=(n, length, k)], found {x_train.shape} and "
                         f"{y_train.shape}")
    keras.utils.set_random_seed(seed)
    length = x_train.shape[1]
    encoder = ENCODERS[kind](x_train.shape[2], bottleneck=bottleneck)
    model = build_trainer(encoder, length=length, context=context, n_timbre=y_train.shape[2],
                          decorrelation=decorrelation, decoder_units=decoder_units,
                          previous_frame=previous_frame)
    batch_size = max(1, batch_frames // length)
    callbacks = [keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)]
    if cosine:
        # The learning rate falls from its start to 5% of it over exactly ``epochs``: a fixed
        # budget that ends converged, instead of waiting for plateaus.
        steps = epochs * int(np.ceil(len(x_train) / batch_size))
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.05)
    else:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(factor=0.3, patience=2))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss={"timbre": "mse", "reconstruction": "mse"},
                  loss_weights={"timbre": timbre_weight,
                                "reconstruction": reconstruction_weight})
    t0 = time.perf_counter()
    hist = model.fit(x_train, {"timbre": y_train, "reconstruction": x_train},
                     validation_data=(x_val, {"timbre": y_val, "reconstruction": x_val}),
                     epochs=epochs, batch_size=batch_size, shuffle=True,
                     callbacks=callbacks, verbose=verbose)
    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    return TrainResult(model, encoder, history, time.perf_counter() - t0)


def export_encoder(encoder: keras.Model) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Keras encoder -> (layer specs, weights) for :class:`pi.show.encoder.NumpyEncoder`."""
    specs, weights = [], {}
    for layer in encoder.layers:
        if isinstance(layer, (layers.InputLayer, layers.Dropout, Decorrelation)):
            continue
        if isinstance(layer, layers.Reshape):
            specs.append({"type": "reshape", "shape": list(layer.target_shape)})
        elif isinstance(layer, layers.Flatten):
            specs.append({"type": "flatten"})
        elif isinstance(layer, (layers.Dense, layers.Conv1D)):
            key = f"l{len(specs)}_{layer.name}"
            kernel, bias = (np.asarray(w, np.float32) for w in layer.get_weights())
            spec = {"type": "dense" if isinstance(layer, layers.Dense) else "conv1d",
                    "activation": keras.activations.serialize(layer.activation)
                    if not isinstance(layer.activation, str) else layer.activation,
                    "key": key}
            if isinstance(spec["activation"], dict):
                spec["activation"] = spec["activation"].get("config", spec["activation"])
            if isinstance(layer, layers.Conv1D):
                if layer.padding != "valid" or layer.dilation_rate != (1,):
                    raise ValueError(f"{layer.name}: expected padding 'valid' and no dilation")
                spec["stride"] = int(layer.strides[0])
            specs.append(spec)
            weights[f"{key}.kernel"], weights[f"{key}.bias"] = kernel, bias
        else:
            raise ValueError(f"{layer.name}: expected Dense/Conv1D/Reshape/Flatten, "
                             f"found {type(layer).__name__}")
    return specs, weights
