"""Keras 3 autoencoders with an n-unit bottleneck, and their export to the numpy encoder.

Models are built by functions with the functional API. The bottleneck layer is always named
``bottleneck``; the encoder is the sub-model ending at ``model.get_layer("bottleneck").output``
(Keras's own API: keract does not work with Keras 3).
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from dataclasses import dataclass, field  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402


@keras.saving.register_keras_serializable(package="lightshow")
class Decorrelation(layers.Layer):
    """Identity layer adding ``weight * mean(offdiag(corr(bottleneck))**2)`` as a loss.

    Why: channels that move together make a dull show (the seed's 1.00 corr_max); pushing the
    bottleneck units apart spreads the music over all 8 lights.
    """

    def __init__(self, weight: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.weight = float(weight)

    def call(self, x):
        if self.weight > 0:
            xc = x - ops.mean(x, axis=0, keepdims=True)
            cov = ops.matmul(ops.transpose(xc), xc) / ops.cast(ops.shape(x)[0], x.dtype)
            d = ops.sqrt(ops.diagonal(cov) + 1e-6)
            corr = cov / (d[:, None] * d[None, :])
            n = ops.shape(x)[1]
            off = corr * (1.0 - ops.eye(n, dtype=x.dtype))
            self.add_loss(self.weight * ops.sum(off * off) / ops.cast(n * (n - 1), x.dtype))
        return x

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


def build_seed_dense(n_inputs: int = 513, *, bottleneck: int = 8) -> keras.Model:
    """The seed blog's autoencoder, kept as the starting point and for comparison."""
    inputs = keras.Input((n_inputs,), name="frames")
    x = layers.Dropout(0.2)(inputs)
    for units in (128, 64, 32, 16):
        x = layers.Dense(units, activation="tanh")(x)
    code = layers.Dense(bottleneck, activation="tanh", name="bottleneck")(x)
    x = code
    for units in (16, 32, 64, 128):
        x = layers.Dense(units, activation="tanh")(x)
    outputs = layers.Dense(n_inputs, name="reconstruction")(x)
    return keras.Model(inputs, outputs, name="seed_dense")


def build_dense(n_inputs: int = 513, *, bottleneck: int = 8, hidden=(256, 64),
                dropout: float = 0.05, decorrelation: float = 0.0) -> keras.Model:
    """Our dense autoencoder.

    Changes from the seed, each for a reason: standardised (not min-max) inputs, so every bin
    counts; wider silu layers, since a 16-unit tanh funnel loses information; a linear
    bottleneck, since tanh units saturate (on Wesnoth, 10 epochs: 0.91 x PCA-8's MSE
    against 0.98 with tanh); light dropout on the input only; a linear decoder output.
    """
    inputs = keras.Input((n_inputs,), name="frames")
    x = layers.Dropout(dropout)(inputs) if dropout else inputs
    for units in hidden:
        x = layers.Dense(units, activation="silu")(x)
    code = layers.Dense(bottleneck, activation="linear", name="bottleneck")(x)
    x = Decorrelation(decorrelation, name="decorrelation")(code)
    for units in reversed(hidden):
        x = layers.Dense(units, activation="silu")(x)
    outputs = layers.Dense(n_inputs, name="reconstruction")(x)
    return keras.Model(inputs, outputs, name="dense")


def build_conv(n_inputs: int = 513, *, bottleneck: int = 8, filters=(16, 32),
               decorrelation: float = 0.0) -> keras.Model:
    """Conv1D over the frequency axis of one frame: no look-ahead, so no added latency."""
    inputs = keras.Input((n_inputs,), name="frames")
    x = layers.Reshape((n_inputs, 1))(inputs)
    for f in filters:
        x = layers.Conv1D(f, 9, strides=4, activation="silu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="silu")(x)
    code = layers.Dense(bottleneck, activation="linear", name="bottleneck")(x)
    x = Decorrelation(decorrelation, name="decorrelation")(code)
    x = layers.Dense(64, activation="silu")(x)
    x = layers.Dense(256, activation="silu")(x)
    outputs = layers.Dense(n_inputs, name="reconstruction")(x)
    return keras.Model(inputs, outputs, name="conv")


BUILDERS = {"seed": build_seed_dense, "dense": build_dense, "conv": build_conv}


def encoder_of(model: keras.Model) -> keras.Model:
    return keras.Model(model.input, model.get_layer("bottleneck").output,
                       name=f"{model.name}_encoder")


class MixUpBatches(keras.utils.PyDataset):
    """Batches of frames mixed with λ ~ Beta(α, α); the target is the same mix."""

    def __init__(self, x: np.ndarray, *, batch_size: int, alpha: float, seed: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        self.x, self.batch_size, self.alpha = x, batch_size, alpha
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    def __len__(self):
        return int(np.ceil(len(self.x) / self.batch_size))

    def __getitem__(self, i):
        idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        a = self.x[idx]
        b = self.x[self.rng.integers(0, len(self.x), len(idx))]
        lam = self.rng.beta(self.alpha, self.alpha, (len(idx), 1)).astype(np.float32)
        mixed = lam * a + (1 - lam) * b
        return mixed, mixed

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.x))


@dataclass
class TrainResult:
    model: keras.Model
    encoder: keras.Model
    history: dict = field(default_factory=dict)
    seconds: float = 0.0


def train_autoencoder(kind: str, x_train: np.ndarray, x_val: np.ndarray, *,
                      bottleneck: int = 8, epochs: int = 40, batch_size: int = 512,
                      mixup_alpha: float = 0.0, decorrelation: float = 0.0,
                      patience: int = 4, seed: int = 0, verbose: int = 0) -> TrainResult:
    """Train on normalised frames ``[shape=(n, 513)]`` with early stopping on validation."""
    import time

    keras.utils.set_random_seed(seed)
    kwargs = {"bottleneck": bottleneck}
    if kind != "seed":
        kwargs["decorrelation"] = decorrelation
    model = BUILDERS[kind](x_train.shape[1], **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    stop = keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)
    reduce = keras.callbacks.ReduceLROnPlateau(factor=0.3, patience=2)
    t0 = time.perf_counter()
    if mixup_alpha > 0:
        data = MixUpBatches(x_train, batch_size=batch_size, alpha=mixup_alpha, seed=seed)
        hist = model.fit(data, validation_data=(x_val, x_val), epochs=epochs,
                         callbacks=[stop, reduce], verbose=verbose)
    else:
        hist = model.fit(x_train, x_train, validation_data=(x_val, x_val), epochs=epochs,
                         batch_size=batch_size, shuffle=True, callbacks=[stop, reduce],
                         verbose=verbose)
    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    return TrainResult(model, encoder_of(model), history, time.perf_counter() - t0)


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
