"""Every experiment file accepts every variant it declares, alone, with `runlocal` and with each
other, and the result passes the config checks; `runlocal` is small and, where the experiment
has an offline dataset, builds without a download (`prepare`); an unknown variant is one line
that lists the file's own."""

import ast
import itertools
import re

import pytest

from conftest import EXPERIMENTS, REPO, run_cli
from fmjax import configs, train, variants
from fmjax.errors import UserError

NEEDS_A_DOWNLOAD = ("tfds", "tfds_text", "translation", "text_classification")


def declared(path: str) -> tuple[str, ...]:
    """The variants experiment `path` declares (its get_config's flags, then runlocal)."""
    return variants.declared(configs._load_module(str(REPO / path)).get_config)


def documented(path: str) -> set[str]:
    """The variants its docstring names (`:digits`, `cnn_tfds.py:cifar10`, `:digits,conv`)."""
    doc = ast.get_docstring(ast.parse((REPO / path).read_text()))
    found = re.findall(r"(?:\.py|(?<![\w/:])):([a-z][\w,]*)", doc)
    return {flag for variant in found for flag in variant.split(",")}


def load(path: str, variant: str):
    return configs.load_experiment(f"{REPO / path}:{variant}")


# the variants that choose the same thing twice (cnn_tfds.py's dataset, dcgan.py's loss)
EXCLUSIVE_PAIRS = {frozenset({"fashion_mnist", "cifar10"}), frozenset({"hinge", "wgan_gp"})}


def variant_cases():
    """(file, variant) for every declared variant, every pair of them, and none."""
    for path in EXPERIMENTS:
        known = declared(path)
        for variant in ["", *known, *map(",".join, itertools.combinations(known, 2))]:
            yield path, variant


@pytest.mark.parametrize("path, variant", list(variant_cases()))
def test_every_declared_variant_and_pair_builds_a_valid_config(path, variant):
    """A pair that combines two choices of the same thing (two datasets, two losses) is refused
    with one line; every other combination passes the config checks."""
    if frozenset(variant.split(",")) in EXCLUSIVE_PAIRS:
        with pytest.raises(UserError, match="exclude each other; choose one$"):
            load(path, variant)
        return
    configs.validate(load(path, variant))


@pytest.mark.parametrize("path", EXPERIMENTS)
def test_runlocal_is_small_and_builds_offline_where_it_can(path, text_file):
    """The shrink of fmjax/variants.py holds after each file's own `RUNLOCAL` overrides."""
    config = load(path, "runlocal")
    assert config.train.num_steps <= 100 and config.train.batch_size <= 32, path
    if config.data.name in NEEDS_A_DOWNLOAD:
        return
    if config.data.name == "text":
        config.data.path = str(text_file)
    train.prepare(config)


@pytest.mark.parametrize("path", EXPERIMENTS)
def test_docstring_names_exactly_the_declared_variants(path):
    own = set(declared(path)) - {variants.RUNLOCAL}
    assert own <= documented(path) <= set(declared(path)), path


def test_flags_are_comma_separated_and_typos_are_named():
    known = ("digits", "conv", "runlocal")
    assert variants.parse(" digits, runlocal,", known, "x.py") == {"digits", "runlocal"}
    assert variants.parse("", known, "x.py") == set()
    with pytest.raises(UserError, match=r"^x.py: unknown config variant 'cnov' \(known: digits, "
                                        r"conv, runlocal\)$"):
        variants.parse("digits,cnov", known, "x.py")


def test_unknown_variant_is_one_line_listing_the_files_variants(tmp_path):
    path = "experiments/mnist/dcgan.py"
    proc = run_cli("train", "--config", f"{path}:digits,runlcoal", "--workdir", tmp_path / "w",
                   check=False)
    assert proc.returncode == 2
    assert proc.stderr == (f"fmjax: error: {path}: unknown config variant 'runlcoal' "
                           "(known: digits, hinge, wgan_gp, runlocal)\n")
    assert not (tmp_path / "w").exists()
