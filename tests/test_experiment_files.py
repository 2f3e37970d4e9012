"""`--config NAME` finds a shipped experiment by its path under experiments/ from any directory,
with a variant too; a local file of that name wins; a name found nowhere is one line that says
where fmjax looked. (The wheel that ships them: tests/test_notebook.py.)"""

import pytest

from conftest import REPO
from fmjax import configs, experiment_files
from fmjax.errors import UserError


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working directory without experiments/."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name", ["mnist1d/cnn.py", "experiments/mnist1d/cnn.py"])
def test_a_shipped_experiment_is_found_by_its_relative_name(elsewhere, name):
    assert experiment_files.find(name) == str(REPO / "experiments" / "mnist1d" / "cnn.py")
    config = configs.load_experiment(f"{name}:runlocal")
    assert config.to_dict() == configs.load_experiment(
        f"{REPO / 'experiments/mnist1d/cnn.py'}:runlocal").to_dict()
    assert config.train.num_steps == 100      # the variant applied


def test_a_local_file_wins_over_the_shipped_experiment(elsewhere):
    (elsewhere / "mnist1d").mkdir()
    shipped = (REPO / "experiments" / "mnist1d" / "cnn.py").read_text()
    (elsewhere / "mnist1d" / "cnn.py").write_text(shipped.replace("seed=0", "seed=7"))
    assert experiment_files.find("mnist1d/cnn.py") == "mnist1d/cnn.py"
    assert configs.load_experiment("mnist1d/cnn.py").train.seed == 7


@pytest.mark.parametrize("name, hint", [
    ("mnist1d/cnnn.py", "; did you mean mnist1d/cnn.py?"),
    ("experiments/nope.py", ""),
])
def test_an_unknown_name_is_one_line_saying_where_fmjax_looked(elsewhere, name, hint):
    with pytest.raises(UserError) as error:
        configs.load_experiment(f"{name}:runlocal")
    assert str(error.value) == (f"config file not found: '{name}' (looked in {elsewhere}, "
                                f"{REPO / 'experiments'}){hint}")


def test_an_absolute_path_is_only_looked_for_where_it_points(elsewhere):
    with pytest.raises(UserError, match=r"^config file not found: '/mnist1d/cnn.py'$"):
        experiment_files.find("/mnist1d/cnn.py")
