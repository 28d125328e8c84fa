"""The wheel works on its own: built from the source tree, installed into a fresh virtualenv
outside the repository, `photogenic --version` and `photogenic filter` run from a folder outside
the repository and import the installed package, not the checkout.

Installing the wheel's dependencies from PyPI would download torch and the rest, so the wheel is
installed with --no-deps and the dependencies are made visible through a `.pth` file naming this
venv's site-packages. A path line in a .pth only adds the folder to sys.path: the editable
install's finder there (a .pth of its own, in a folder that is not a site dir) never runs.
"""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import CHEAP_CONFIG, REPO

PACKAGES = {"filters": "photogenic/filters", "pipeline": "photogenic/pipeline",
            "annotation": "photogenic/annotation", "training": "photogenic/training"}
# Package data the run needs (pyproject's [tool.setuptools.package-data]): folder -> in the wheel.
DATA_DIRS = {"filters/data": "photogenic/filters/data", "pipeline/data": "photogenic/pipeline/data",
             "annotation/configs": "photogenic/annotation/configs",
             "pipeline/report/templates": "photogenic/pipeline/report/templates",
             "training/data": "photogenic/training/data"}


def _run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (an in-tree build would leave build/ and
    *.egg-info in the checkout that other processes share)."""
    src = tmp_path_factory.mktemp("src") / "photogenic"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for folder in PACKAGES:
        shutil.copytree(REPO / folder, src / folder, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "--disable-pip-version-check", "-w", out, src])
    wheels = list(out.glob("photogenic-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv outside the repository with the wheel installed (--no-deps) and this venv's
    site-packages on its path through a .pth file."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", root])
    py = root / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps",
          "--disable-pip-version-check", wheel])
    purelib = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (purelib / "zz-photogenic-test-deps.pth").write_text("".join(f"{p}\n" for p in deps))
    return root


def _env(venv: Path, cwd: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    py = str(venv / "bin" / "python")
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", PYSPARK_PYTHON=py, PYSPARK_DRIVER_PYTHON=py,
               PHOTOGENIC_CACHE=str(cwd / "cache"), PHOTOGENIC_DATA=str(cwd / "data"))
    return env


def test_wheel_holds_the_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, inside in DATA_DIRS.items():
        files = [p for p in (REPO / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        assert files, folder
        for path in files:
            assert f"{inside}/{path.relative_to(REPO / folder).as_posix()}" in names, f"{path} not in the wheel"
    for folder, inside in PACKAGES.items():
        assert f"{inside}/__init__.py" in names
    assert any(n.endswith(".dist-info/entry_points.txt") for n in names)
    assert not any(n.startswith(("filters/", "pipeline/", "tests/", "bench/")) for n in names)  # only photogenic.*


def test_installed_wheel_runs_outside_the_repo(venv, sample_pool, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _env(venv, work)
    py = venv / "bin" / "python"

    where = _run([py, "-c", "import photogenic.pipeline.cli as m, photogenic.filters as f; print(m.__file__); print(f.__file__)"],
                 cwd=work, env=env).stdout.split()
    for path in where:
        assert Path(path).resolve().is_relative_to(venv.resolve()), path
        assert not Path(path).resolve().is_relative_to(REPO.resolve()), path

    from importlib.metadata import version

    out = _run([venv / "bin" / "photogenic", "--version"], cwd=work, env=env).stdout
    assert out.strip() == f"photogenic {version('photogenic')}"

    # Label Studio's venv and data, and the cache, are in the user's dirs, not next to the package.
    home = work / "home"
    bare = {k: v for k, v in env.items() if not k.startswith(("PHOTOGENIC_", "XDG_"))} | {"HOME": str(home)}
    places = _run([py, "-c", "from photogenic.annotation import server as s; "
                   "from photogenic.pipeline.core.config.review import ReviewConfig as C; "
                   "from photogenic.pipeline.core.storage import cache_root; "
                   "print(s.venv_dir(C()), s.data_dir(C()), cache_root())"], cwd=work, env=bare).stdout.split()
    assert places == [str(home / ".cache/photogenic/label-studio-venv"),
                      str(home / ".local/share/photogenic/label-studio"), str(home / ".cache/photogenic")]

    config = work / "cheap.toml"
    config.write_text(CHEAP_CONFIG)
    run = work / "run"
    _run([venv / "bin" / "photogenic", "filter", "--pool", sample_pool, "--out", run, "--config", config,
          "--master", "local[1]"], cwd=work, env=env, timeout=900)
    assert (run / "scores" / "_SUCCESS").exists()
    funnel = json.loads((run / "scores" / "_funnel.json").read_text())
    rows = json.loads((sample_pool / "ground_truth.json").read_text())["rows"]
    assert funnel["rows_in"] == rows and 0 < funnel["passed"] < rows
    assert funnel["config"]["filters"]["offensive"]["enabled"] is False  # the cheap config that ran
