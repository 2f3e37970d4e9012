"""`fmjax --help` lists the commands, `fmjax COMMAND --help` a command's flags (exit status 0,
nothing on stderr), `python -m fmjax` is the `fmjax` script, and a flag no command has is
"unknown flag", not a config key. Every run here is `python -m fmjax`."""

import re
import tomllib

import pytest

from conftest import REPO, assert_one_line_error, run_cli
from fmjax.cli import main
from fmjax.runtime import launch

COMMANDS = ("train", "eval", "inspect", "sample", "translate", "compress", "sweep", "plot",
            "launch_local")


def _help(*args) -> str:
    proc = run_cli(*args)
    assert proc.stderr == "", proc.stderr
    return proc.stdout


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_fmjax_help_lists_every_command(flag):
    stdout = _help(flag)
    lines = stdout.splitlines()
    assert lines[0].startswith("usage: fmjax COMMAND [flags]"), stdout
    listed = [line.split()[0] for line in lines if line.startswith("  ")]
    assert listed == list(COMMANDS), stdout
    assert lines[-1] == "`fmjax COMMAND --help` lists the flags of COMMAND."


@pytest.mark.parametrize("args", [["train", "--help"], ["train", "-h"],
                                  ["train", "--config", "experiments/mnist1d/cnn.py", "--help"]])
def test_train_help_shows_its_flags(args):
    stdout = _help(*args)
    lines = stdout.splitlines()
    assert lines[0] == ("usage: fmjax train --config FILE[:variant] --workdir DIR "
                        "[--config.KEY=VALUE ...] [flags]")
    assert lines[2] == "Train an experiment, or resume the run in its workdir."
    flags = [line.split()[0] for line in lines[lines.index("flags:") + 1:]
             if re.match(r"  --", line)]
    assert flags == ["--config", "--config.KEY=VALUE", "--workdir", "--[no]progress"], stdout
    assert "(default: on)" in " ".join(stdout.split())


@pytest.mark.parametrize("command", ["eval", "inspect", "sample", "translate", "compress",
                                     "sweep", "plot"])
def test_each_command_help_shows_the_flags_it_reads(command):
    stdout = _help(command, "--help")
    flags = [line.split()[0].replace("[no]", "") for line in stdout.splitlines()
             if line.startswith("  --") and "KEY=VALUE" not in line]
    assert flags == [f"--{name}" for name in main.COMMANDS[command].flags], stdout
    assert stdout.startswith(f"usage: fmjax {command} ")
    if command == "sample":
        assert "--temperature TEMPERATURE" in stdout
        assert "  --num NUM" in stdout and "images: how many images" in " ".join(stdout.split())
        assert "(default: 0.8)" in " ".join(stdout.split())


def test_launch_local_help():
    assert _help("launch_local", "--help") == launch.HELP + "\n"
    # after `--` the flags belong to the command the processes run
    assert launch.parse_args(["--num_processes=2", "--", "train", "--help"], main.COMMANDS)[2] == \
        ["train", "--help"]


@pytest.mark.parametrize("args, line", [
    (["train", "--nosuchflag"],
     "unknown flag --nosuchflag for fmjax train; `fmjax train --help` lists them"),
    (["train", "--workdri=x"],
     "unknown flag --workdri for fmjax train; did you mean --workdir? `fmjax train --help` lists "
     "them"),
    (["eval", "--noprogres"], "unknown flag --noprogres for fmjax eval;"),
    ([], "usage: fmjax {train|eval|inspect|sample|translate|compress|sweep|plot|launch_local} "
         "[flags]; "
         "`fmjax --help` lists the commands"),
    (["trian"], "unknown command 'trian'; usage: fmjax {train|"),
])
def test_unknown_flag_or_command_is_one_line(args, line):
    proc = run_cli(*args, check=False)
    assert_one_line_error(proc, line)
    assert proc.stdout == ""


def test_the_fmjax_script_is_python_m_fmjax():
    """The console script and `python -m fmjax` (which every test above runs) call one function."""
    import fmjax.__main__
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"fmjax": "fmjax.cli.main:run"} and fmjax.__main__.run is main.run
