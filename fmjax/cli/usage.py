"""The text of `fmjax --help` and `fmjax COMMAND --help`, and the line for an unknown flag.

Which flags a command reads is written down here (`Command.flags`); what each flag means and its
default come from its absl definition in `main.py`, so the help cannot drift from the flags.
"""

import dataclasses
import difflib
import re
import textwrap

HELP_ARGS = ("-h", "--help", "-help", "--helpshort", "--helpfull")
WIDTH = 100
FLAG_COLUMN = 28   # where a flag's description starts
# How a flag's value is shown where its name alone says too little.
METAVARS = {"config": "FILE[:variant]", "workdir": "DIR", "out": "FILE.png", "input": "TEXT",
            "prompt": "TEXT", "step": "N", "sweep": "SWEEP.py", "workers": "N", "storage": "URL",
            "kind": "KIND", "metrics": "KEY,...", "split": "eval|val", "example": "N"}
# ... and where one flag names different things for different commands.
COMMAND_METAVARS = {("compress", "workdir"): "RUN", ("compress", "out"): "OUT"}
OVERRIDE = ("--config.KEY=VALUE", "Set any key of the experiment's config, e.g. "
            "--config.train.num_steps=200 or --config.optimizer.learning_rate=3e-3 (repeat for "
            "more keys; an unknown key or a value of the wrong type stops with one line).")


@dataclasses.dataclass(frozen=True)
class Command:
    """One `fmjax` command as its help shows it."""
    summary: str                 # one sentence: what it does
    usage: str                   # its arguments, after `fmjax NAME`
    flags: tuple[str, ...]       # the absl flags it reads


def requested(argv: list[str]) -> bool:
    """Whether `argv` asks for help: -h or --help among the arguments, before any `--` (after
    it, `launch_local` passes the arguments on)."""
    args = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    return any(arg in HELP_ARGS for arg in args)


def main_help(commands: dict[str, Command], launch_local: str) -> str:
    """`fmjax --help`: every command with what it does."""
    rows = {**{name: c.summary for name, c in commands.items()}, "launch_local": launch_local}
    width = max(map(len, rows)) + 2
    return "\n".join([
        "usage: fmjax COMMAND [flags]      (python -m fmjax COMMAND [flags] is the same)", "",
        "commands:", *(f"  {name:{width}}{summary}" for name, summary in rows.items()), "",
        "`fmjax COMMAND --help` lists the flags of COMMAND."])


def command_help(name: str, command: Command, flag_values) -> str:
    """`fmjax NAME --help`: its usage, what it does, and each of its flags with its default."""
    rows = []
    for flag_name in command.flags:
        flag = flag_values[flag_name]
        rows.append((_flag_syntax(flag, name), _own_text(name, _with_default(flag))))
        if flag_name == "config":
            rows.append(OVERRIDE)
    return "\n".join([f"usage: fmjax {name} {command.usage}", "", command.summary, "", "flags:",
                      *(_row(syntax, text) for syntax, text in rows)])


def unknown_flag(name: str, command: str, command_flags: tuple[str, ...]) -> str:
    """The line for an unknown flag --`name` of fmjax `command`, with the closest of its flags."""
    close = difflib.get_close_matches(name.removeprefix("no"), command_flags, n=1)
    hint = f"did you mean --{close[0]}? " if close else ""
    return f"unknown flag --{name} for fmjax {command}; {hint}`fmjax {command} --help` lists them"


# 'sample (images): ' or 'compress: ', where a flag's help names the command a part is for.
_PART = r"(?:^|; )([a-z_]+)(?: \((.*?)\))?: "


def _own_text(command: str, text: str) -> str:
    """A flag's help without the prefix that names its command among all commands' flags
    ('sample: the text' -> 'the text', 'sample (images): how many' -> 'images: how many'). A
    help with parts for several commands ('what it is; compress: what it is there') shows the
    command's own part, or else the part before the first named one."""
    parts = list(re.finditer(_PART, text))
    match = next((m for m in parts if m[1] == command), None)
    if match is None:
        return text[:parts[0].start()].rstrip(".") + "." if parts and parts[0].start() else text
    after = [m for m in parts if m.start() > match.start()]
    rest = text[match.end():after[0].start() if after else None]
    if after:
        rest = rest.rstrip(".") + "."
    return f"{match[2]}: {rest}" if match[2] else rest[:1].upper() + rest[1:]


def _flag_syntax(flag, command: str = "") -> str:
    if flag.boolean:
        return f"--[no]{flag.name}"
    metavar = COMMAND_METAVARS.get((command, flag.name)) or METAVARS.get(flag.name)
    return f"--{flag.name} {metavar or flag.name.upper()}"


def _with_default(flag) -> str:
    if flag.default is None or flag.name == "config":
        return flag.help
    default = ("on" if flag.default else "off") if flag.boolean else repr(flag.default)
    return f"{flag.help} (default: {default})"


def _row(syntax: str, text: str) -> str:
    """`  --flag VALUE   text`, the text wrapped in its column (below the flag if it is long)."""
    indent = " " * FLAG_COLUMN
    head = f"  {syntax}"
    if len(head) < FLAG_COLUMN - 1:
        return textwrap.fill(text, WIDTH, initial_indent=head.ljust(FLAG_COLUMN),
                             subsequent_indent=indent)
    return head + "\n" + textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=indent)
