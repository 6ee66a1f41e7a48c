"""Model bundles: data, not code.

A bundle is a folder with ``encoder.npz`` (weights, normalisation, mapping parameters, the
PCA-8 baseline; loaded with ``allow_pickle=False``) and ``manifest.json`` (format version,
architecture, feature parameters, provenance, metrics, and the npz's sha256). It is validated
on load and written atomically, so a failed export never replaces a good bundle.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pi.show.encoder import EncoderSpecError, NumpyEncoder
from pi.errors import LightshowError
from pi.show.features import FeatureParams
from pi.show.mapping import MappingParams

FORMAT_VERSION = 1
NPZ_NAME = "encoder.npz"
MANIFEST_NAME = "manifest.json"
SHIPPED_DATA_DIR = Path("share") / "lightshow" / "models"  # where a plain install puts them


def shipped_bundle(name: str = "default") -> Path:
    """A model shipped with the code: ``models/<name>`` beside the source tree (a checkout or
    an editable install), else in the installed data folder, where ``pip install`` puts
    pyproject's data-files (``<prefix>/share/lightshow/models/<name>``, user installs too)."""
    import sysconfig

    candidates = [Path(__file__).resolve().parents[2] / "models" / name]
    for scheme in (None, f"{os.name}_user"):
        try:
            data = sysconfig.get_path("data", scheme) if scheme else sysconfig.get_path("data")
        except KeyError:
            continue
        candidates.append(Path(data) / SHIPPED_DATA_DIR / name)
    return next((c for c in candidates if (c / MANIFEST_NAME).is_file()), candidates[0])


DEFAULT_BUNDLE = shipped_bundle()
ENCODER_PREFIX = "encoder/"
NORM_MEAN, NORM_STD = "norm.mean", "norm.std"
PCA_MEAN, PCA_COMPONENTS = "pca.mean", "pca.components"


def pack_arrays(*, encoder_weights: dict[str, np.ndarray], norm: tuple[np.ndarray, np.ndarray],
                mapping: MappingParams, pca: tuple[np.ndarray, np.ndarray]) -> dict:
    """The npz's arrays, named as :func:`load_bundle` reads them: the numpy encoder's
    weights (``<layer key>.kernel``/``.bias``), the input normalisation ``(mean, std)``
    ``[shape=(513,)]``, the show logic's parameters and the PCA baseline ``(mean
    [shape=(513,)], components [shape=(k, 513)])``. The workshop calls this, so the names
    live in this one module."""
    arrays = {f"{ENCODER_PREFIX}{k}": v for k, v in encoder_weights.items()}
    arrays.update({NORM_MEAN: norm[0], NORM_STD: norm[1], PCA_MEAN: pca[0],
                   PCA_COMPONENTS: pca[1]})
    arrays.update(mapping.to_arrays())
    return arrays


class BundleError(LightshowError):
    """A bundle that is missing, corrupt or incompatible; the message names file and key."""


@dataclass
class Bundle:
    path: Path
    manifest: dict
    feature_params: FeatureParams
    norm_mean: np.ndarray
    norm_std: np.ndarray
    encoder: NumpyEncoder
    mapping: MappingParams
    pca_mean: np.ndarray
    pca_components: np.ndarray

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))

    @property
    def n_channels(self) -> int:
        return self.encoder.n_outputs

    def activations(self, frames_db: np.ndarray) -> np.ndarray:
        """dB frames ``[shape=(n, 513)]`` -> activations ``[shape=(n, n_channels)]``."""
        return self.encoder(frames_db)  # normalised by the encoder (its input_norm)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_bundle(path: str | Path) -> Bundle:
    """Load and validate a bundle folder, or raise :class:`BundleError` (also for a folder
    or file the service user may not read, so the daemon falls back instead of failing)."""
    path = Path(path)
    try:
        return _load(path)
    except OSError as exc:
        where = exc.filename or path
        raise BundleError(f"{where}: expected a readable bundle, found "
                          f"{exc.strerror or exc} (the service runs as user lightshow: "
                          f"folders need mode 755, files 644)") from exc


def _load(path: Path) -> Bundle:
    manifest_path, npz_path = path / MANIFEST_NAME, path / NPZ_NAME
    for p in (manifest_path, npz_path):
        if not p.is_file():
            raise BundleError(f"{p}: expected a bundle file, found none")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{manifest_path}: expected JSON, found {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path}: expected a JSON object, found {type(manifest)}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{manifest_path}: format_version: expected {FORMAT_VERSION}, "
                          f"found {version!r}")
    digest = sha256_file(npz_path)
    if manifest.get("npz_sha256") != digest:
        raise BundleError(f"{npz_path}: expected sha256 {manifest.get('npz_sha256')!r} from "
                          f"the manifest, found {digest}")
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # zipfile and numpy raise many types for a bad archive
        raise BundleError(f"{npz_path}: expected a numpy .npz archive, found {exc}") from exc
    for key, value in arrays.items():
        if value.dtype.kind != "f":  # ints, bools, complex or text would be cast silently
            raise BundleError(f"{npz_path}: {key}: expected floating-point values, found "
                              f"dtype {value.dtype}")
        if not np.all(np.isfinite(value)):
            raise BundleError(f"{npz_path}: {key}: expected finite values, found NaN or inf")
    _check_layers(manifest, manifest_path)
    for key in MAPPING_SCALARS:
        if key in arrays and arrays[key].size != 1:
            raise BundleError(f"{npz_path}: {key}: expected one number, found shape "
                              f"{arrays[key].shape}")
    try:
        params = FeatureParams.from_dict(_require(manifest, "feature_params", manifest_path))
        arch = _require(manifest, "architecture", manifest_path)
        weights = {k[len(ENCODER_PREFIX):]: v for k, v in arrays.items()
                   if k.startswith(ENCODER_PREFIX)}
        encoder = NumpyEncoder(_require(arch, "layers", manifest_path), weights,
                               n_inputs=params.n_bins)
        mapping = MappingParams.from_arrays(arrays)
        norm_mean, norm_std, pca_mean, pca_components = (
            _array(arrays, k, npz_path) for k in (NORM_MEAN, NORM_STD, PCA_MEAN,
                                                  PCA_COMPONENTS))
    except EncoderSpecError as exc:
        raise BundleError(f"{path}: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:  # messages of ours say "expected"
        text = str(exc).strip("'\"")
        raise BundleError(f"{path}: {text}" if "expected" in text else
                          f"{path}: expected a bundle the encoder can run, found "
                          f"{type(exc).__name__}: {text}") from exc
    for key, arr, shape in ((NORM_MEAN, norm_mean, (params.n_bins,)),
                            (NORM_STD, norm_std, (params.n_bins,)),
                            ("mapping.center", mapping.center, (encoder.n_outputs,)),
                            ("mapping.scale", mapping.scale, (encoder.n_outputs,))):
        if arr.shape != shape:
            raise BundleError(f"{npz_path}: {key}: expected shape {shape}, found {arr.shape}")
    if np.any(norm_std <= 0):
        raise BundleError(f"{npz_path}: norm.std: expected positive values, found <= 0")
    # Checked above, so the normalisation can now go into the encoder's first layer.
    encoder = NumpyEncoder(arch["layers"], weights, n_inputs=params.n_bins,
                           input_norm=(norm_mean, norm_std))
    return Bundle(path, manifest, params, norm_mean, norm_std, encoder, mapping,
                  pca_mean, pca_components)


MAPPING_SCALARS = tuple(f"mapping.{f.name}" for f in fields(MappingParams)
                        if f.name not in ("center", "scale"))
_LAYER_KEYS = {"dense": ("key",), "conv1d": ("key",), "flatten": (), "reshape": ("shape",)}


def _check_layers(manifest: dict, where: Path) -> None:
    """The manifest's shape, before anything reads it: the encoder gets a list of layer
    objects with the keys their type needs, of the right kinds."""
    for key in ("feature_params", "architecture"):
        if not isinstance(manifest.get(key, {}), dict):
            raise BundleError(f"{where}: {key}: expected a JSON object, found "
                              f"{manifest[key]!r:.60}")
    layers = manifest.get("architecture", {}).get("layers", [])
    if not isinstance(layers, list) or not layers:
        raise BundleError(f"{where}: architecture.layers: expected a list of layers, found "
                          f"{layers!r:.60}")
    for i, spec in enumerate(layers):
        name = f"architecture.layers[{i}]"
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str) \
                or spec["type"] not in _LAYER_KEYS:
            raise BundleError(f"{where}: {name}: expected an object with type in "
                              f"{sorted(_LAYER_KEYS)}, found {spec!r:.60}")
        for k in _LAYER_KEYS[spec["type"]]:
            if k not in spec:
                raise BundleError(f"{where}: {name}: expected key {k!r}, found none")
        checks = {"key": lambda v: isinstance(v, str),
                  "activation": lambda v: isinstance(v, str),
                  "stride": lambda v: isinstance(v, int) and not isinstance(v, bool)
                  and 1 <= v <= 4096,
                  "shape": lambda v: isinstance(v, list) and 0 < len(v) <= 4 and all(
                      isinstance(x, int) and not isinstance(x, bool) and 0 < x <= 1 << 20
                      for x in v)}
        for k, ok in checks.items():
            if k in spec and not ok(spec[k]):
                what = "a string" if k in ("key", "activation") else "positive integers"
                raise BundleError(f"{where}: {name}.{k}: expected {what}, found "
                                  f"{spec[k]!r:.60}")


def _require(d: dict, key: str, where: Path):
    if key not in d:
        raise BundleError(f"{where}: expected key {key!r}, found none")
    return d[key]


def _array(arrays: dict, key: str, where: Path) -> np.ndarray:
    if key not in arrays:
        raise BundleError(f"{where}: expected array {key!r}, found none")
    return arrays[key].astype(np.float32)


def write_bundle(dest: str | Path, *, manifest: dict, arrays: dict[str, np.ndarray],
                 extra: Callable[[Path], None] | None = None) -> Path:
    """Write a bundle atomically: build it in a temp folder, validate it, then swap it in.

    ``extra(tmp_dir)`` may add files (the Keras model, a report) before the swap.
    """
    return write_bundles([(dest, manifest, arrays, extra)])[0]


def write_bundles(items: Sequence[tuple[str | Path, dict, dict[str, np.ndarray],
                                        Callable[[Path], None] | None]]) -> list[Path]:
    """Write several bundles as one: ``(dest, manifest, arrays, extra)`` each, as for
    :func:`write_bundle`. All are built and validated before any is swapped in, and the swap
    finishes or is undone, so a stop (Ctrl-C, SIGTERM) or an error at any point leaves all
    the old bundles or all the new ones; never a new dense model beside an old conv one.
    Temporary folders of a run that was killed outright (SIGKILL, power cut) are removed by
    the next run."""
    from pi.daemon.stopping import deferred  # stdlib only

    built: list[tuple[Path, Path]] = []
    try:
        for dest, manifest, arrays, extra in items:
            dest = Path(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            _remove_leftovers(dest)
            built.append((dest, _build(dest, manifest, arrays, extra)))
        with deferred():  # a stop signal waits until every bundle is swapped (or restored)
            _swap_all(built)
    finally:
        for _, tmp in built:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return [dest for dest, _ in built]


def _build(dest: Path, manifest: dict, arrays: dict[str, np.ndarray],
           extra: Callable[[Path], None] | None) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-{os.getpid()}-", dir=dest.parent))
    try:
        np.savez(tmp / NPZ_NAME, **arrays)
        manifest = dict(manifest, format_version=FORMAT_VERSION,
                        npz_sha256=sha256_file(tmp / NPZ_NAME))
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if extra is not None:
            extra(tmp)
        load_bundle(tmp)  # a bundle that cannot be loaded never replaces a good one
        _make_readable(tmp)
        for f in tmp.iterdir():
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _swap_all(built: list[tuple[Path, Path]]) -> None:
    done: list[tuple[Path, Path | None]] = []  # (dest, where its old version went)
    try:
        for dest, tmp in built:
            old = None
            if dest.exists():
                old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
                os.replace(dest, old)
            done.append((dest, old))
            os.replace(tmp, dest)
    except BaseException:
        for dest, old in reversed(done):  # put every old bundle back
            if old is not None:
                if dest.exists():
                    shutil.rmtree(dest, ignore_errors=True)
                os.replace(old, dest)
        raise
    for _, old in done:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _remove_leftovers(dest: Path) -> None:
    """``.NAME.tmp-PID-*`` and ``.NAME.old-PID`` folders of writers that are gone."""
    for p in dest.parent.glob(f".{dest.name}.*-*"):
        kind, _, rest = p.name[len(dest.name) + 2:].partition("-")
        pid = rest.split("-", 1)[0]
        if kind in ("tmp", "old") and pid.isdigit() and p.is_dir() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _make_readable(folder: Path) -> None:
    """mkdtemp makes the folder 0700: the service user (not the trainer) could not read the
    bundle. Folders 0755, files 0644, as `cp` under the usual umask would give."""
    folder.chmod(0o755)
    for p in folder.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
