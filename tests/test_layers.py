"""The package is one namespace whose layers point down only (the contract in pyproject.toml)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_contract_is_kept():
    # `lint-imports`, run by this interpreter (the console script's shebang may name another venv).
    lint = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    proc = subprocess.run([sys.executable, "-c", lint, "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_only_the_photogenic_namespace_is_installed(tmp_path):
    def imports(name: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path,
                              capture_output=True, text=True)

    for generic in ("filters", "pipeline", "annotation", "training"):
        proc = imports(generic)
        assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr, generic
    for ours in ("photogenic.filters.base", "photogenic.pipeline.cli", "photogenic.annotation.push",
                 "photogenic.training.trainer"):
        assert imports(ours).returncode == 0, ours


def test_no_module_edits_the_import_path():
    offenders = [str(p.relative_to(REPO)) for top in ("filters", "pipeline", "annotation", "training", "bench")
                 for p in (REPO / top).rglob("*.py") if "sys.path" in p.read_text()]
    assert offenders == []


def test_every_package_folder_is_listed_for_the_wheel():
    # package-dir mapping means setuptools does not discover packages: a folder left out of the
    # list would be missing from a built wheel while the editable install still finds it.
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"photogenic." + ".".join(p.parent.relative_to(REPO).parts)
             for top in ("filters", "pipeline", "annotation", "training")
             for p in (REPO / top).rglob("__init__.py")}
    assert found == listed
