"""colab/quickstart.ipynb runs top to bottom on CPU (nbclient) and reaches a learned model."""

import json
import re
import sys

import nbformat
from nbclient import NotebookClient

from conftest import REPO

NOTEBOOK = REPO / "colab" / "quickstart.ipynb"


def _cell_text(cell) -> str:
    """The stream and text/plain output of one executed code cell."""
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def _venv_kernelspec(root) -> None:
    """A `python3` kernelspec under `root`/kernels that runs this interpreter: put first on
    JUPYTER_PATH, it shadows any user-level python3 spec that points at another Python."""
    spec_dir = root / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (fmjax tests)", "language": "python"}))


def test_quickstart_notebook_runs_and_learns(monkeypatch, tmp_path):
    _venv_kernelspec(tmp_path / "jupyter")
    # The kernel inherits os.environ when it starts; monkeypatch restores everything afterwards.
    # FMJAX_CACHE_DIR (set by conftest) shares the generated MNIST-1D dataset with other tests.
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("FMJAX_NOTEBOOK_STEPS", "1000")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("XLA_FLAGS", raising=False)     # one CPU device, as on Colab
    monkeypatch.delenv("FMJAX_SOURCE", raising=False)

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO / "colab")}})
    client.execute()   # raises CellExecutionError (with the traceback) if any cell fails

    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    install = _cell_text(code_cells[0])
    assert f"from {REPO / 'fmjax'}" in install, install   # the kernel imported this checkout
    final = [c for c in code_cells if "final eval/accuracy:" in _cell_text(c)]
    assert len(final) == 1, [_cell_text(c)[-500:] for c in code_cells]
    accuracy = float(re.search(r"final eval/accuracy: ([\d.]+)", _cell_text(final[0])).group(1))
    assert accuracy > 0.6, _cell_text(final[0])
    last = _cell_text(code_cells[-1])
    assert "OK: the restored checkpoint reproduces the logged final eval accuracy" in last, last
