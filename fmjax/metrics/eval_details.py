"""A task's eval details (`Task.eval_details`: a classifier's confusion matrix, ROC and
precision-recall points) as one JSON file per eval and split, which `fmjax plot` reads:
`WORKDIR/eval_details/{split}_{step:08d}.json` = {"step", "split", **details}.

Written whole or not at all; a resumed run that evaluates a step again writes its file anew.
"""

import json
import re

from fmjax.errors import UserError, WorkdirError
from fmjax.runtime import workdir_files

DIRECTORY = "eval_details"


def path(workdir, split: str, step: int):
    return workdir_files.as_path(workdir) / DIRECTORY / f"{split}_{step:08d}.json"


def write(workdir, step: int, details_by_split: dict[str, dict]) -> None:
    """One file per split of this eval; WorkdirError if the workdir cannot take it."""
    target = workdir_files.as_path(workdir) / DIRECTORY
    try:
        target.mkdir(parents=True, exist_ok=True)
        for split, details in details_by_split.items():
            record = {"step": step, "split": split, **details}
            workdir_files.write_atomic(path(workdir, split, step), json.dumps(record).encode())
    except OSError as e:
        raise WorkdirError(f"cannot write the eval details of step {step} to {target}: "
                           f"{e.strerror or e}; training stopped") from e


def steps(workdir, split: str) -> list[int]:
    """The evaluated steps of `split` that have a details file, in order."""
    directory = workdir_files.as_path(workdir) / DIRECTORY
    if not directory.is_dir():
        return []
    pattern = re.compile(rf"{re.escape(split)}_(\d{{8}})\.json")
    return sorted(int(m[1]) for p in directory.iterdir() if (m := pattern.fullmatch(p.name)))


def read(workdir, split: str = "eval", step: int | None = None, keys: tuple[str, ...] = ()
         ) -> dict:
    """The details of `split` at `step` (None: the latest eval); UserError naming the run when
    it has none (a run that predates them, or not a classifier) or not that step, and naming the
    file when it is not a JSON object holding `keys` (overwritten, or copied from elsewhere)."""
    evaluated = steps(workdir, split)
    if not evaluated and split == "val" and steps(workdir, "eval"):
        raise UserError(f"{workdir} has no val details: the run holds out no validation split "
                        "(data.validation_fraction)")
    if not evaluated:
        raise UserError(f"{workdir} has no {split} details ({DIRECTORY}/{split}_*.json): the run "
                        "is not a classifier, predates them, or has not evaluated yet")
    if step is None:
        step = evaluated[-1]
    elif step not in evaluated:
        raise UserError(f"{workdir} has no {split} details of step {step}; evaluated steps: "
                        f"{', '.join(map(str, evaluated))}")
    file, what = path(workdir, split, step), f"the {split} details of step {step}"
    details = workdir_files.read_json(file, what)
    if not isinstance(details, dict) or not set(keys) <= details.keys():
        wanted = f" with {', '.join(keys)}" if keys else ""
        raise workdir_files.damaged(file, what, f"not a JSON object{wanted}")
    return details
