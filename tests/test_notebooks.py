"""The family notebooks in colab/ (language model, generative, pre-train -> fine-tune and
translation, sweeps and compression), each run top to bottom on CPU in this interpreter's kernel
in fast mode (FMJAX_NOTEBOOK_FAST=1: a few steps per run): every code cell runs, each picture
cell shows a PNG, and the numbers they print are in range. fmjax is importable there, so the
install cell (quickstart's, checked equal) installs nothing; tests/test_notebook.py runs that
install path on the quickstart."""

import base64
import io
import math
import re
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import JAX_CACHE, REPO, cell_text, notebook_kernelspec

QUICKSTART = REPO / "colab" / "quickstart.ipynb"
NOTEBOOKS = ("language_model", "generative", "pretrain_finetune_translate", "sweeps_compression")
MIN_PNG_BYTES = 1_000


def read(name: str):
    return nbformat.read(REPO / "colab" / f"{name}.ipynb", as_version=4)


def test_every_notebook_has_the_quickstarts_install_cell_and_no_outputs():
    install = nbformat.read(QUICKSTART, as_version=4).cells[2].source
    for name in NOTEBOOKS:
        cells = read(name).cells
        assert cells[2].source == install, name
        assert all(c.outputs == [] and c.execution_count is None
                   for c in cells if c.cell_type == "code"), name


@pytest.fixture
def run_notebook(monkeypatch, tmp_path, text_file):
    """Executes a notebook as the tests run the CLI (tests/conftest.py: run_cli) and returns its
    code cells with their outputs. The language model learns the tests' generated text."""
    notebook_kernelspec(tmp_path / "jupyter", sys.executable)
    # The kernel inherits os.environ when it starts (FMJAX_CACHE_DIR from conftest, the shared
    # compilation cache); monkeypatch restores everything afterwards.
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PYTHONPATH", str(REPO))   # this checkout's fmjax, and the sweep's trials'
    monkeypatch.setenv("FMJAX_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("FMJAX_NOTEBOOK_TEXT", str(text_file))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(JAX_CACHE))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")   # as conftest's
    monkeypatch.delenv("XLA_FLAGS", raising=False)   # one CPU device, as on Colab

    def run(name: str) -> list:
        notebook = read(name)
        client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}})
        client.execute()   # raises CellExecutionError (with the traceback) if a cell fails
        cells = [c for c in notebook.cells if c.cell_type == "code"]
        assert all(c.execution_count for c in cells), name
        install = cell_text(cells[0])
        assert "installing" not in install and f"from {REPO / 'fmjax'}\n" in install, install
        return cells
    return run


def pngs(cell) -> list[tuple[int, int]]:
    """(width, height) of each PNG the cell showed, each checked to be a whole, drawn picture."""
    from PIL import Image
    sizes = []
    for out in cell.get("outputs", []):
        if "image/png" in out.get("data", {}):
            data = base64.b64decode(out["data"]["image/png"])
            assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > MIN_PNG_BYTES, len(data)
            image = Image.open(io.BytesIO(data))
            low, high = image.convert("L").getextrema()
            assert high - low > 100, (low, high)   # something drawn, not an empty canvas
            sizes.append(image.size)
    return sizes


def number(cells, pattern: str) -> float:
    """The number matched by `pattern`'s group in the one cell whose output matches it."""
    found = [m for c in cells if (m := re.search(pattern, cell_text(c)))]
    assert len(found) == 1, (pattern, [cell_text(c)[-300:] for c in cells])
    return float(found[0].group(1))


def picture_cells(cells) -> list[list[tuple[int, int]]]:
    return [sizes for c in cells if (sizes := pngs(c))]


def test_language_model_notebook(run_notebook, text_file):
    """10 steps take the loss below a uniform guess's; a sample of 80 characters."""
    cells = run_notebook("language_model")
    text = text_file.read_text()
    assert number(cells, r"final eval/loss: ([\d.]+) nats") < 0.9 * math.log(len(set(text)))
    prompt = text.split()[0]
    sample = next(cell_text(c) for c in cells if "write_samples" in c.source)
    assert sample.startswith(prompt) and len(sample) == len(prompt) + 80 + 1, sample
    assert len(picture_cells(cells)) == 2   # curves, attention


def test_generative_notebook(run_notebook):
    """The VAE learns (negative ELBO under 0.6 x an untrained decoder's 64 ln 2 = 26.6 nats, the
    bound of test_generative; 22.7 measured in fast mode); the DCGAN's feature distance is a
    number (fast mode's 50 steps are too few to ask more: ~102); the pictures' shapes."""
    cells = run_notebook("generative")
    neg_elbo = number(cells, r"VAE after \d+ steps: eval/neg_elbo ([\d.]+)")
    assert neg_elbo < 0.6 * 64 * math.log(2)
    assert math.isfinite(number(cells, r"DCGAN after \d+ steps: eval/feature_distance ([\d.]+)"))
    [samples], [strip], [latent], [gan] = picture_cells(cells)
    assert samples[0] == samples[1] and gan[0] == gan[1]   # 8 x 8 grids
    assert strip[0] > 8 * strip[1]                        # one row of 10
    assert latent[0] > latent[1]                          # two panels side by side


def test_pretrain_finetune_translate_notebook(run_notebook):
    cells = run_notebook("pretrain_finetune_translate")
    assert number(cells, r"eval/accuracy pre-trained: ([\d.]+)") >= 0.7   # chance: 0.5
    assert number(cells, r"eval/accuracy from scratch: ([\d.]+)") < 0.7
    greedy = number(cells, r"mean score: greedy (-?[\d.]+)")
    beam = number(cells, r"beam 4 (-?[\d.]+)\n")
    assert beam >= greedy, (beam, greedy)
    assert len(picture_cells(cells)) == 3   # ROC, confusion matrix, attention


def test_sweeps_compression_notebook(run_notebook):
    cells = run_notebook("sweeps_compression")
    report = next(cell_text(c) for c in cells if "--report" in c.source)
    assert report.count("COMPLETE") == 2, report
    table = cell_text(cells[-1])
    rows = {m[0]: (int(m[1].replace(",", "")), int(m[2]), float(m[3])) for m in re.findall(
        r"^(float32|int8|prune 80%) +([\d,]+) +(\d+)% +([\d.]+)$", table, re.M)}
    assert set(rows) == {"float32", "int8", "prune 80%"}, table
    (dense, _, accuracy), (int8, _, int8_accuracy) = rows["float32"], rows["int8"]
    assert int8 < dense / 3 and abs(int8_accuracy - accuracy) < 0.02 and accuracy > 0.2, rows
    assert rows["prune 80%"][:2] == (dense, 80), rows
    assert len(picture_cells(cells)) == 2   # the sweep's slice plot, the trials' curves
