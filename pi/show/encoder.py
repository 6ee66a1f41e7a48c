"""The numpy encoder: runs a trained Keras encoder's layers without TensorFlow.

A bundle describes the encoder as a list of layer specs (JSON) plus their weights (npz).
Only the few layer types the workshop builds are supported, so the Pi side stays small.
"""
from __future__ import annotations

import numpy as np

from pi.show.features import normalise

ACTIVATIONS = {
    "linear": lambda x: x,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    # tanh forms of the logistic function: no overflow warnings for large |x|.
    "sigmoid": lambda x: 0.5 + 0.5 * np.tanh(0.5 * x),
    "silu": lambda x: _silu(x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
}
LAYER_TYPES = ("dense", "conv1d", "flatten", "reshape")
# Up to this many frames, a dense layer multiplies row by row (BLAS's vector-matrix product):
# OpenBLAS's matrix-matrix path costs about twice as much per row for a handful of rows,
# which is what the daemon's 20 ms blocks bring (1 or 2 frames).
ROW_BY_ROW_MAX = 4


def _silu(x: np.ndarray) -> np.ndarray:
    # x * (0.5 + 0.5 * tanh(0.5 * x)): tanh's form of the logistic function, which never
    # overflows; in place.
    t = np.multiply(x, 0.5)
    np.tanh(t, out=t)
    t *= 0.5
    t += 0.5
    t *= x
    return t


def _silu_of_half(h: np.ndarray) -> np.ndarray:
    """silu(x) from ``h = x / 2``, which a layer gives directly when its kernel and bias are
    halved (see :class:`NumpyEncoder`): ``h * (1 + tanh(h))`` in three calls, not five.
    Bit for bit :func:`_silu`: halving is exact in binary floating point, so ``h`` is
    _silu's ``0.5 * x``, and ``0.5 + 0.5 * t`` is ``(1 + t) / 2`` rounded the same way."""
    t = np.tanh(h)
    t += 1.0
    t *= h
    return t


# Activations applied to half the layer's output (the layer's weights halved at load).
_OF_HALF = {"silu": _silu_of_half}


def _dense(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    if len(x) == 1 and x.dtype == kernel.dtype:  # the same vector-matrix product, fewer calls
        y = np.matmul(x[0], kernel)
        y += bias
        return y[None]
    if len(x) <= ROW_BY_ROW_MAX:
        dtype = kernel.dtype if x.dtype == kernel.dtype else np.result_type(x, kernel)
        y = np.empty((len(x), kernel.shape[1]), dtype)
        for i in range(len(x)):
            np.matmul(x[i], kernel, out=y[i])
    else:
        y = x @ kernel
    y += bias
    return y


def _biased(y: np.ndarray, bias: np.ndarray) -> np.ndarray:
    y += bias  # in place: y + bias without a second array
    return y


def _windows(x: np.ndarray, width: int, stride: int) -> np.ndarray:
    """Keras 'valid' Conv1D windows, channels last: ``[shape=(n, length, channels)]`` ->
    ``[shape=(n, n_windows, width * channels)]``, each window flattened as (width, channels)
    to match the kernel's (width, in, out) layout."""
    n, length, channels = x.shape
    count = (length - width) // stride + 1
    s0, s1, s2 = x.strides
    shape, strides = (n, count, width, channels), (s0, stride * s1, s1, s2)
    # A strided view made directly (sliding_window_view's checks cost a third of a conv
    # encoder's frame), then one copy into the flattened layout.
    if x.flags.c_contiguous:
        view = np.ndarray(shape, x.dtype, x, 0, strides)
    else:
        view = np.lib.stride_tricks.as_strided(x, shape, strides, writeable=False)
    return view.reshape(n, count, width * channels)


class EncoderSpecError(ValueError):
    """An encoder description that the numpy encoder cannot run."""


class NumpyEncoder:
    """Normalised frames ``[shape=(n, 513)]`` -> activations ``[shape=(n, n_channels)]``.

    ``layers`` is a list of dicts: ``{"type": "dense", "activation": ..., "key": ...}``,
    ``{"type": "conv1d", "stride": s, "activation": ..., "key": ...}``, ``{"type": "flatten"}``
    or ``{"type": "reshape", "shape": [...]}``; ``weights`` maps ``"<key>.kernel"`` and
    ``"<key>.bias"`` to arrays in Keras's layout.

    ``input_norm``: the per-input ``(mean, std)`` (pi.show.features.normalise), to take raw
    dB frames instead: ``encoder(frames_db)`` is then ``encoder(normalise(frames_db, ...))``
    within float32 rounding. When the first layer is dense, the division is folded into its
    kernel (``((x - m) / s) @ K == (x - m) @ (K / s)``, in float64, rounded once): a call
    over the 513 inputs fewer per frame, the daemon's frames being one or two at a time.
    The mean stays a subtraction: folded into the bias as well (``b - (m / s) @ K``), the
    float32 product would sum dB values of about -60 and cancel them against the bias,
    which moved activations by 2e-5 where this form stays within 3e-6 of the unfolded one.

    A silu layer keeps its kernel and bias halved, which is exact, and gives silu from half
    its input in fewer steps (:func:`_silu_of_half`): the same numbers, bit for bit.
    """

    def __init__(self, layers: list[dict], weights: dict[str, np.ndarray], *, n_inputs: int,
                 input_norm: tuple[np.ndarray, np.ndarray] | None = None):
        self.layers = [dict(spec) for spec in layers]
        self._plan = []
        self._norm = None
        if input_norm is not None:
            mean, std = (np.asarray(a, np.float32) for a in input_norm)
            if mean.shape != (n_inputs,) or std.shape != (n_inputs,):
                raise EncoderSpecError(f"input normalisation: expected mean and std of shape "
                                       f"({n_inputs},), found {mean.shape} and {std.shape}")
            self._norm = (mean, std)
        shape: tuple[int, ...] = (n_inputs,)
        for i, spec in enumerate(self.layers):
            kind = spec.get("type")
            if kind not in LAYER_TYPES:
                raise EncoderSpecError(f"encoder layer {i}: expected type in {LAYER_TYPES}, "
                                       f"found {kind!r}")
            if kind == "flatten":
                shape = (int(np.prod(shape)),)
                self._plan.append(("reshape", shape, None, None, None))
                continue
            if kind == "reshape":
                new = tuple(int(s) for s in spec["shape"])
                if np.prod(new) != np.prod(shape):
                    raise EncoderSpecError(f"encoder layer {i}: cannot reshape {shape} to {new}")
                shape = new
                self._plan.append(("reshape", shape, None, None, None))
                continue
            act = spec.get("activation", "linear")
            if act not in ACTIVATIONS:
                raise EncoderSpecError(f"encoder layer {i}: expected activation in "
                                       f"{sorted(ACTIVATIONS)}, found {act!r}")
            kernel = _weight(weights, f"{spec['key']}.kernel")
            bias = _weight(weights, f"{spec['key']}.bias")
            if kind == "dense" and (kernel.ndim != 2 or kernel.shape[0] != shape[-1]):
                raise EncoderSpecError(f"{spec['key']}.kernel: expected shape "
                                       f"({shape[-1]}, units), found {kernel.shape}")
            if kind == "dense" and not self._plan and self._norm is not None:
                kernel = _fold_std(kernel, self._norm[1])
                self._norm = (self._norm[0], None)  # the mean is still subtracted
            activation = ACTIVATIONS[act]
            if act in _OF_HALF:  # the layer gives x / 2 (exact): see _silu_of_half
                kernel, bias, activation = kernel * 0.5, bias * 0.5, _OF_HALF[act]
            if kind == "dense":
                shape = shape[:-1] + (kernel.shape[1],)
                self._plan.append(("dense", shape, kernel, bias, activation))
            else:
                stride = int(spec.get("stride", 1))
                width, c_in, c_out = kernel.shape if kernel.ndim == 3 else (0, 0, 0)
                if kernel.ndim != 3 or len(shape) != 2 or c_in != shape[1] or width > shape[0]:
                    raise EncoderSpecError(f"{spec['key']}.kernel: expected shape "
                                           f"(width, {shape[-1]}, filters) for input {shape}, "
                                           f"found {kernel.shape}")
                length = (shape[0] - width) // stride + 1
                shape = (length, c_out)
                flat = kernel.reshape(width * c_in, c_out)
                self._plan.append(("conv1d", (stride, width), flat, bias, activation))
            if bias.shape != (shape[-1],):
                raise EncoderSpecError(f"{spec['key']}.bias: expected shape ({shape[-1]},), "
                                       f"found {bias.shape}")
        if len(shape) != 1:
            raise EncoderSpecError(f"encoder: expected a flat output, found shape {shape}")
        self.n_inputs = n_inputs
        self.n_outputs = shape[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(f"encoder input: expected shape (n, {self.n_inputs}), "
                             f"found {x.shape}")
        n = x.shape[0]
        if self._norm is not None:
            mean, std = self._norm
            x = np.subtract(x, mean) if std is None else normalise(x, mean=mean, std=std)
        for kind, shape, kernel, bias, act in self._plan:
            if kind == "reshape":
                x = x.reshape((n,) + shape)
            elif kind == "dense":
                x = act(_dense(x, kernel, bias) if x.ndim == 2 else _biased(x @ kernel, bias))
            else:
                stride, width = shape
                x = act(_biased(_windows(x, width, stride) @ kernel, bias))
        return x


def _fold_std(kernel: np.ndarray, std: np.ndarray) -> np.ndarray:
    """A dense layer's kernel for inputs not yet divided by ``std``: ``(x / std) @ K`` is
    ``x @ (K / std[:, None])``, computed in float64 and rounded once to float32."""
    return (kernel.astype(np.float64) / std.astype(np.float64)[:, None]).astype(np.float32)


def _weight(weights: dict[str, np.ndarray], key: str) -> np.ndarray:
    if key not in weights:
        raise EncoderSpecError(f"encoder weights: expected key {key!r}, found none")
    return np.asarray(weights[key], np.float32)
