"""colab/quickstart.ipynb runs top to bottom on CPU (nbclient) and reaches a learned model."""

import os
import re

import nbformat
from nbclient import NotebookClient

from conftest import REPO


def test_quickstart_notebook_runs_and_learns(monkeypatch):
    monkeypatch.setenv("FMJAX_NOTEBOOK_STEPS", "1000")
    notebook = nbformat.read(REPO / "colab" / "quickstart.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "colab")}}).execute()
    text = "".join(out.get("text", "") for cell in notebook.cells
                   for out in cell.get("outputs", []))
    accuracy = float(re.search(r"final eval/accuracy: ([\d.]+)", text).group(1))
    assert accuracy > 0.6, text[-2000:]
    assert "accuracy from the restored checkpoint" in text
