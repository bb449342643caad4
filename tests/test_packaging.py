"""Packaging: the project builds without deprecation warnings of its own making."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_string_and_setuptools_is_new_enough_for_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"   # PEP 639; a table is deprecated
    # setuptools reads an SPDX license string from 77.0 on
    (bound,) = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    assert bound == "setuptools>=77"


@pytest.mark.parametrize("editable", [False, True], ids=["wheel", "editable"])
def test_build_prints_no_warnings(tmp_path, editable):
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} predates the SPDX license string")
    src = tmp_path / "src"
    shutil.copytree(ROOT / "vgbench", src / "vgbench",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    command = [sys.executable, "-m", "pip", "-v", "--disable-pip-version-check"]
    if editable:
        command += ["install", "--no-deps", "--no-build-isolation", "--target",
                    str(tmp_path / "target"), "-e", str(src)]
    else:
        command += ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
                    str(src)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout + done.stderr
    assert "Warning" not in text and "deprecated" not in text.lower(), text[-3000:]
