"""A plain (non-editable) install carries the shipped models, and finds them from any folder."""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from pi.show.bundle import MANIFEST_NAME, NPZ_NAME, SHIPPED_DATA_DIR, load_bundle, shipped_bundle

ROOT = Path(__file__).resolve().parent.parent


def test_a_built_wheel_holds_the_shipped_models_as_data_files(tmp_path):
    # Built from a copy: setuptools leaves a build/ folder in the tree it builds.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "pi", "training", "models"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, src / name, **({"ignore": shutil.ignore_patterns(
            "__pycache__", "report", "*.keras", "demo*")} if copy is shutil.copytree else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w",
                    str(tmp_path), str(src)], check=True, capture_output=True)
    wheel, = tmp_path.glob("lightshow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = next(n.split("/data/")[0] for n in names if ".data/data/" in n)
    for model in ("default", "default-conv"):
        for f in (NPZ_NAME, MANIFEST_NAME):
            assert f"{data}/data/{SHIPPED_DATA_DIR.as_posix()}/{model}/{f}" in names
    assert "pi/offline/yard.css" in names and "pi/web/static/index.html" in names


def test_without_a_source_tree_the_model_comes_from_the_installed_data_folder(
        tmp_path, monkeypatch):
    installed = tmp_path / SHIPPED_DATA_DIR / "only-installed"
    installed.mkdir(parents=True)
    for f in (NPZ_NAME, MANIFEST_NAME):
        (installed / f).write_bytes((ROOT / "models" / "default" / f).read_bytes())
    real = sysconfig.get_path
    monkeypatch.setattr(sysconfig, "get_path",
                        lambda name, *a: str(tmp_path) if name == "data" else real(name, *a))
    assert shipped_bundle("only-installed") == installed
    assert load_bundle(installed).n_channels == 8
    # In a checkout (or an editable install) the tree's own models/ comes first.
    assert shipped_bundle("default") == ROOT / "models" / "default"
