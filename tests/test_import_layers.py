"""Dependencies point down: a low layer (models, optimizers, data, sharding, checkpoints, and the
runtime/, metrics/ and decoding/ folders) never imports a higher one (tasks, configs, the train
loop, the command line), directly or through another module, at import time or late inside a
function; the train loop never reaches matplotlib. Read from the source (no imports), so a new
upward import fails here with the chain that makes it.

And the default run imports only what it uses: a short MNIST-1D CNN run, watched from inside its
process, never loads the libraries other families, commands or sinks need (start-up time:
`benchmarks/mnist1d.py` times the whole process)."""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

from conftest import REPO, cli_env

PACKAGE = REPO / "fmjax"
HIGH = ("fmjax.tasks", "fmjax.configs", "fmjax.train", "fmjax.runs", "fmjax.cli")
ORBAX = ("orbax",)
MATPLOTLIB = ("matplotlib",)   # fmjax/plots draws; the loop never pays its import
# module (and its submodules) -> what it must never reach
RULES = {
    "fmjax.models": ("fmjax.data", "fmjax.optim", "fmjax.checkpoint", *HIGH, *ORBAX),
    "fmjax.optim": ("fmjax.data", "fmjax.models", "fmjax.checkpoint", *HIGH, *ORBAX),
    "fmjax.data": ("fmjax.models", "fmjax.optim", "fmjax.checkpoint", *HIGH, *ORBAX),
    "fmjax.sharding": ("fmjax.data", "fmjax.models", "fmjax.optim", "fmjax.checkpoint", *HIGH,
                       *ORBAX),
    "fmjax.checkpoint": ("fmjax.data", "fmjax.models", "fmjax.optim", *HIGH),
    "fmjax.tasks": ("fmjax.checkpoint", *HIGH[1:], *ORBAX),
    "fmjax.configs": ("fmjax.checkpoint", *HIGH[2:], *ORBAX),
    "fmjax.train": ("fmjax.runs", "fmjax.cli", "fmjax.plots", *MATPLOTLIB),
    "fmjax.plots": ("fmjax.cli",),
    # the folders beside the core: services beneath the loop, and one-family helpers
    "fmjax.runtime": ("fmjax.models", "fmjax.data", "fmjax.optim", "fmjax.sharding",
                      "fmjax.checkpoint", "fmjax.metrics", "fmjax.decoding", *HIGH, *ORBAX),
    "fmjax.metrics": ("fmjax.data", "fmjax.optim", "fmjax.checkpoint", "fmjax.decoding", *HIGH,
                      *ORBAX),
    "fmjax.decoding": ("fmjax.data", "fmjax.optim", "fmjax.checkpoint", "fmjax.metrics", *HIGH,
                       *ORBAX),
    # the sweep's workers run trials as `fmjax train` processes, never the loop in their own
    # (fmjax/sweep/vectorized.py, which trains in-process by design, is another path)
    "fmjax.sweep.runner": ("fmjax.train", "fmjax.runs", "fmjax.checkpoint", "fmjax.cli",
                           *ORBAX),
}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__, a/b/__init__ and a/b/c."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts) + 1)]


def _imports(module: str) -> set[str]:
    """fmjax modules and top-level outside packages that `module` imports anywhere in its code."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES
                     else node.module for a in node.names]   # a submodule, or a name in one
        else:
            continue
        for name in names:
            found |= ({n for n in _with_parents(name) if n in MODULES}
                      if name.startswith("fmjax.") else {name.split(".")[0]})
    return found - {module}


def _chains(root: str) -> dict[str, list[str]]:
    """Every module `root` reaches -> one import chain from `root` to it."""
    chains, todo = {root: [root]}, [root]
    while todo:
        module = todo.pop()
        for name in sorted(_imports(module)):
            if name not in chains:
                chains[name] = chains[module] + [name]
                if name in MODULES:
                    todo.append(name)
    return chains


def _in(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("layer", RULES)
def test_a_layer_never_imports_a_higher_one(layer):
    upward = []
    for module in sorted(m for m in MODULES if _in(m, [layer])):
        for name, chain in _chains(module).items():
            if _in(name, RULES[layer]) and not _in(name, [layer]):
                upward.append(" -> ".join(chain))
    assert not upward, "upward imports:\n" + "\n".join(sorted(set(upward))[:10])


def test_the_rules_name_real_modules():
    named = {*RULES, *(n for names in RULES.values() for n in names)} - {*ORBAX, *MATPLOTLIB}
    assert named <= set(MODULES), named - set(MODULES)


# Libraries a default `fmjax train` (the MNIST-1D CNN) has no use for, each loaded only where it is
# needed: TFDS and its readers, text tokenizers and BLEU, sweeps, compression, plots, rotations,
# tensorboardX's optional torch and Cloud Storage client (fmjax/metrics/writers.py).
UNUSED_BY_THE_CNN = ("tensorflow", "tensorflow_datasets", "grain", "sentencepiece", "sacrebleu",
                     "optuna", "qwix", "matplotlib", "scipy", "sklearn", "torch",
                     "google.cloud.storage", "wandb")
# Runs `fmjax ARGS` in this process, then writes the names of all loaded modules to OUT.
_RUN_AND_LIST_MODULES = """
import json, runpy, sys
out = sys.argv.pop(1)
try:
    runpy.run_module("fmjax", run_name="__main__", alter_sys=True)
finally:
    open(out, "w").write(json.dumps(sorted(m for m in sys.modules if sys.modules[m])))
"""


def test_the_default_cnn_run_never_loads_what_it_does_not_use(tmp_path):
    from fmjax.data import mnist1d
    mnist1d.load_arrays()   # cached, as in every run but the first (generating it needs scipy)
    out = tmp_path / "modules.json"
    subprocess.run([sys.executable, "-c", _RUN_AND_LIST_MODULES, str(out), "train",
                    "--config", "experiments/mnist1d/cnn.py:runlocal", "--workdir",
                    str(tmp_path / "run"), "--config.train.num_steps=10", "--noprogress"],
                   env=cli_env(), cwd=REPO, check=True, capture_output=True, timeout=600)
    loaded = json.loads(out.read_text())
    assert "fmjax.train" in loaded and "tensorboardX" in loaded   # the run did run
    assert [m for m in loaded if _in(m, UNUSED_BY_THE_CNN)] == []
