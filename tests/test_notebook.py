"""The Colab path, offline: fmjax is built into a wheel; colab/quickstart.ipynb, run top to bottom
on CPU (nbclient) in a fresh venv without fmjax, installs that wheel with its own install cell,
loads the shipped experiment by name and reaches a learned model; the installed `fmjax` command
trains a shipped experiment from a directory that has none. The fresh venv sees this
interpreter's other packages (through a folder of links, fmjax left out), so pip finds every
dependency installed and downloads nothing."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import EXPERIMENTS, REPO, cell_text, notebook_kernelspec

NOTEBOOK = REPO / "colab" / "quickstart.ipynb"
# What building the wheel reads; pip builds in the source tree, so it builds a copy.
SOURCES = ("pyproject.toml", "setup.py", "setup.cfg", "README.md", "fmjax", "experiments")
OFFLINE_PIP = {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    (root / "src").mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, root / "src" / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, root / "src" / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", root / "dist", root / "src"],
                   env=dict(os.environ, **OFFLINE_PIP), check=True, timeout=300)
    [built] = (root / "dist").glob("fmjax-*.whl")
    return built


@pytest.fixture(scope="module")
def dependencies(tmp_path_factory):
    """A folder of links to everything in this interpreter's site-packages except fmjax."""
    folder = tmp_path_factory.mktemp("dependencies")
    for entry in pathlib.Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not re.match(r"(__editable__[._]+)?fmjax([-_.]|$)", entry.name):
            (folder / entry.name).symlink_to(entry)
    return folder


@pytest.fixture
def fresh_venv(tmp_path, dependencies):
    """A new venv without fmjax; a .pth file adds `dependencies` as a site directory."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "dependencies.pth").write_text(f"import site; site.addsitedir({str(dependencies)!r})\n")
    return venv


def test_the_wheel_ships_every_experiment(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert EXPERIMENTS and {f"fmjax/{path}" for path in EXPERIMENTS} <= names


def test_the_notebook_installs_from_the_repository_pyproject_names():
    repository = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]
    install = nbformat.read(NOTEBOOK, as_version=4).cells[2].source
    assert f"REPOSITORY = 'git+{repository['Repository']}'" in install


@pytest.mark.parametrize("before, after, stale", [
    ({"pytest": "8.0"}, {"pytest": "9.0"}, "pytest 8.0 -> 9.0"),    # imported here: restart
    ({}, {"pytest": "9.0", "not-imported": "2.0"}, None),           # new, or not imported: go on
])
def test_the_install_cell_asks_for_a_restart_when_pip_changed_an_imported_package(
        monkeypatch, before, after, stale):
    """The install cell's pip_install, with pip stood in for and the versions it reads faked."""
    cell = nbformat.read(NOTEBOOK, as_version=4).cells[2].source
    cell_functions = {}
    exec(cell[:cell.index("REPO = find_checkout()")], cell_functions)
    versions = iter([before, after])
    cell_functions["installed_versions"] = lambda: next(versions)
    monkeypatch.setattr(subprocess, "check_call", lambda command: None)
    if stale is None:
        cell_functions["pip_install"]("fmjax")
        return
    with pytest.raises(RuntimeError, match=f"pip changed {stale}, already imported by this "
                                           "Python: restart the runtime"):
        cell_functions["pip_install"]("fmjax")


def test_quickstart_installs_the_wheel_in_a_fresh_venv_and_learns(monkeypatch, tmp_path,
                                                                  fresh_venv, wheel):
    notebook_kernelspec(tmp_path / "jupyter", fresh_venv / "bin" / "python")
    # The kernel inherits os.environ when it starts; monkeypatch restores everything afterwards.
    # FMJAX_CACHE_DIR (set by conftest) shares the generated MNIST-1D dataset with other tests.
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("FMJAX_NOTEBOOK_STEPS", "1000")
    monkeypatch.setenv("FMJAX_SOURCE", str(wheel))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("XLA_FLAGS", raising=False)     # one CPU device, as on Colab
    for name, value in OFFLINE_PIP.items():
        monkeypatch.setenv(name, value)

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO / "colab")}})
    client.execute()   # raises CellExecutionError (with the traceback) if any cell fails

    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    install, config = cell_text(code_cells[0]), cell_text(code_cells[1])
    installed = next(fresh_venv.glob("lib/python*/site-packages/fmjax"))
    assert f"installing fmjax from {wheel}\n" in install, install
    assert f"from {installed}\n" in install, install
    assert f"config from {installed / 'experiments' / 'mnist1d' / 'cnn.py'}" in config, config
    final = [c for c in code_cells if "final eval/accuracy:" in cell_text(c)]
    assert len(final) == 1, [cell_text(c)[-500:] for c in code_cells]
    accuracy = float(re.search(r"final eval/accuracy: ([\d.]+)", cell_text(final[0])).group(1))
    assert accuracy > 0.6, cell_text(final[0])
    checked = cell_text(code_cells[-2])
    assert "OK: the restored checkpoint reproduces the logged final eval accuracy" in checked
    assert "%tensorboard --logdir" in cell_text(code_cells[-1])


def test_the_installed_command_trains_a_shipped_experiment_from_any_directory(tmp_path,
                                                                              fresh_venv, wheel):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **OFFLINE_PIP)
    env.pop("XLA_FLAGS", None)
    subprocess.run([fresh_venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps",
                    wheel], env=env, check=True, timeout=300)
    proc = subprocess.run([fresh_venv / "bin" / "fmjax", "train", "--config",
                           "mnist1d/cnn.py:runlocal", "--workdir", "run", "--noprogress"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["name"] == "cnn1d" and config["train"]["num_steps"] == 100
