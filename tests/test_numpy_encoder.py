"""The numpy encoder's shortcuts (pi/show/encoder.py) against the plain computation: silu
from halved weights bit for bit, the input normalisation folded into a dense first layer
within float32 rounding. No Keras needed."""
import numpy as np
import pytest

from pi.show import encoder
from pi.show.encoder import NumpyEncoder
from pi.show.features import normalise


def _dense(rng):
    layers = [{"type": "dense", "activation": "silu", "key": "a"},
              {"type": "dense", "activation": "silu", "key": "b"},
              {"type": "dense", "activation": "linear", "key": "c"}]
    shapes = {"a": (513, 32), "b": (32, 16), "c": (16, 8)}
    return layers, _weights(rng, shapes)


def _conv(rng):
    layers = [{"type": "reshape", "shape": [513, 1]},
              {"type": "conv1d", "activation": "silu", "key": "a", "stride": 4},
              {"type": "conv1d", "activation": "silu", "key": "b", "stride": 4},
              {"type": "flatten"},
              {"type": "dense", "activation": "linear", "key": "c"}]
    shapes = {"a": (9, 1, 4), "b": (9, 4, 6), "c": (30 * 6, 8)}
    return layers, _weights(rng, shapes)


def _weights(rng, shapes):
    out = {}
    for key, shape in shapes.items():
        out[key + ".kernel"] = (rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
                                ).astype(np.float32)
        out[key + ".bias"] = rng.normal(size=shape[-1]).astype(np.float32)
    return out


@pytest.mark.parametrize("make", [_dense, _conv])
@pytest.mark.parametrize("rows", [1, 2, 7])
def test_silu_from_halved_weights_is_bit_for_bit_the_plain_silu(make, rows, monkeypatch):
    layers, weights = make(np.random.default_rng(rows))
    x = np.random.default_rng(9).normal(size=(rows, 513)).astype(np.float32) * 3
    got = NumpyEncoder(layers, weights, n_inputs=513)(x)
    monkeypatch.setattr(encoder, "_OF_HALF", {})  # Keras's weights, silu as written
    plain = NumpyEncoder(layers, weights, n_inputs=513)
    assert np.array_equal(got, plain(x))


@pytest.mark.parametrize("make", [_dense, _conv])
def test_input_normalisation_matches_normalising_first(make):
    rng = np.random.default_rng(4)
    layers, weights = make(rng)
    mean = rng.uniform(-80, -30, 513).astype(np.float32)
    std = rng.uniform(3, 20, 513).astype(np.float32)
    frames = (mean + std * rng.normal(size=(40, 513))).astype(np.float32)
    plain = NumpyEncoder(layers, weights, n_inputs=513)
    folded = NumpyEncoder(layers, weights, n_inputs=513, input_norm=(mean, std))
    expected = plain(normalise(frames, mean=mean, std=std))
    for rows in (slice(0, 1), slice(1, 3), slice(0, 40)):
        np.testing.assert_allclose(folded(frames[rows]), expected[rows], rtol=0, atol=1e-5)
