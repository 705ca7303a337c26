"""Packaging: setup.cfg declares compatible ranges (no exact pins) that the lock file
(requirements.txt, which `make` and CI install) satisfies, and `pip install .` into a fresh
virtual environment gives an importable package and the `kerasbert` command."""

import configparser
import os
import site
import subprocess
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT


def declared_requirements():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    options = config["options"]["install_requires"], *config["options.extras_require"].values()
    return [Requirement(line) for block in options for line in block.strip().splitlines() if line.strip()]


def locked_versions():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    pins = [line.split("==") for line in lines if "==" in line and not line.startswith("#")]
    return {canonicalize_name(name): version.strip() for name, version in pins}


def test_setup_cfg_declares_ranges_and_the_lock_satisfies_them():
    assert "==" not in (ROOT / "setup.cfg").read_text()
    requirements, locked = declared_requirements(), locked_versions()
    assert {"tensorflow", "keras-hub", "ai-edge-litert"} <= {canonicalize_name(r.name) for r in requirements}
    outside = [f"{r} (locked {locked[canonicalize_name(r.name)]})" for r in requirements
               if canonicalize_name(r.name) in locked and locked[canonicalize_name(r.name)] not in r.specifier]
    assert not outside, outside


def test_pip_install_into_a_fresh_venv_gives_the_package_and_its_command(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The locked dependencies come from this environment (no download); kerasbert itself is built
    # from the checkout and installed into the new venv, where pip checks the ranges against them.
    packages = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(packages, "locked-environment.pth"), "w") as file:
        file.write(site.getsitepackages()[0] + "\n")
    installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-build-isolation", str(ROOT)],
                               capture_output=True, text=True, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-3000:]
    imported = subprocess.run([str(python), "-c", "import kerasbert, kerasbert.deploy, kerasbert.job.cli; "
                               "print(kerasbert.__file__, kerasbert.TextClassifier.__name__)"],
                              capture_output=True, text=True, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert imported.stdout.split()[0].startswith(packages) and imported.stdout.split()[1] == "TextClassifier"
    command = subprocess.run([str(venv / "bin" / "kerasbert"), "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert command.returncode == 0 and "train" in command.stdout and "export" in command.stdout
