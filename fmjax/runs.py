"""A workdir as a thing to use after training: its config, its data's shapes and a checkpoint's
parameters, restored on one device without reading the dataset (for `fmjax sample`)."""

import dataclasses
import json
import pathlib

import jax

from fmjax import checkpoint, configs, sharding, state as state_lib
from fmjax.data import DataInfo
from fmjax.errors import UserError
from fmjax.tasks import build_task

DATA_INFO_FILE = "data_info.json"


def data_info_asset(info: DataInfo) -> dict[str, bytes]:
    """What `fmjax train` stores so the task can be rebuilt without the data."""
    return {DATA_INFO_FILE: json.dumps(dataclasses.asdict(info)).encode()}


def _data_info(workdir: pathlib.Path) -> DataInfo:
    path = workdir / DATA_INFO_FILE
    if not path.exists():
        raise UserError(f"{workdir} has no {DATA_INFO_FILE}; it was not written by `fmjax train`")
    d = json.loads(path.read_text())
    return DataInfo(**{**d, "input_shape": tuple(d["input_shape"])})


@dataclasses.dataclass
class Run:
    config: object
    task: object
    params: object
    extra: object     # non-parameter collections, e.g. batch statistics
    step: int
    workdir: pathlib.Path


def tokenizer(run: Run):
    """The tokenizer a text run stored in its workdir."""
    from fmjax.data import tokenizers
    stored = tokenizers.load_from_workdir(run.workdir)
    if stored is None:
        raise UserError(f"{run.workdir} holds no tokenizer file; it was not written by "
                        "`fmjax train`")
    return stored


def restore(workdir, step: int | None = None) -> Run:
    """The run in `workdir` at checkpoint `step` (default: the latest)."""
    checkpoint.check_workdir(workdir)
    workdir = pathlib.Path(workdir)
    if not (workdir / "config.json").exists():
        raise UserError(f"{workdir} holds no fmjax run (no config.json)")
    config = configs.from_json_dict(json.loads((workdir / "config.json").read_text()))
    task = build_task(config, _data_info(workdir))
    config.mesh.update(data=1, fsdp=1, tensor=1)   # after training: one device is enough
    mesh = sharding.make_mesh(config.mesh)
    tx, _ = task.optimizer()
    rules = tuple(tuple(r) for r in config.sharding.rules)
    abstract, _ = state_lib.abstract_and_shardings(task, tx, config.train.seed, mesh, rules)
    manager = checkpoint.read_only_manager(workdir)
    steps = sorted(manager.all_steps()) if manager else []
    step = steps[-1] if step is None and steps else step
    if step not in steps:
        raise UserError(f"no checkpoint at step {step} in {workdir} (have: {steps})")
    checkpoint.check_compatible(manager, step, abstract)   # e.g. a tokenizer of another size
    with jax.set_mesh(mesh):
        state = checkpoint.restore(manager, step, abstract)
    return Run(config, task, state.params, state.extra, step, workdir)
