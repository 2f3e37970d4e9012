"""A workdir as a thing to use after training: `load` is the one way to open a run (for `fmjax
eval`, `sample`, `translate`, tools and tests).

It reads the run's config, rebuilds its task (from the stored data shapes, or from the dataset
when eval needs the data), gives the task its workdir assets (the tokenizer), and restores a
verified checkpoint (`checkpoint.restore_intact`: the newest intact one unless a step is named)
onto the devices at hand, whatever mesh the run was trained on.
"""

import dataclasses
import pathlib
import sys
from typing import Any

import jax

from fmjax import checkpoint, configs, sharding

from fmjax.data import DataInfo, tokenizers
from fmjax.errors import UserError
from fmjax.runtime import workdir_files
from fmjax.train import DATA_INFO_FILE, prepare


def _read_object(path: pathlib.Path, what: str) -> dict:
    value = workdir_files.read_json(path, what)
    if not isinstance(value, dict):
        raise workdir_files.damaged(path, what, "not a JSON object")
    return value


def read_config(workdir: pathlib.Path):
    """The run's resolved config (`config.json`), locked like an experiment file's."""
    if not (workdir / "config.json").exists():
        raise UserError(f"{workdir} holds no fmjax run (no config.json)")
    return configs.from_json_dict(_read_object(workdir / "config.json", "the run's config"))


def read_data_info(workdir: pathlib.Path) -> DataInfo:
    path = workdir / DATA_INFO_FILE
    d = _read_object(path, "the run's data shapes")
    try:
        return DataInfo(**{**d, **{k: tuple(v) for k, v in d.items() if isinstance(v, list)}})
    except (KeyError, TypeError) as e:
        raise workdir_files.damaged(path, "the run's data shapes", f"{type(e).__name__}: {e}") \
            from e


@dataclasses.dataclass
class Run:
    config: Any
    exp: Any          # `train.Experiment`: task, mesh, abstract state (and data, if asked for)
    state: Any        # the restored `TrainState`
    step: int
    workdir: pathlib.Path
    tokenizer: Any    # the run's tokenizer (text runs), or None

    @property
    def task(self):
        return self.exp.task

    @property
    def params(self):
        return self.state.params

    @property
    def extra(self):
        """Non-parameter collections, e.g. batch statistics."""
        return self.state.extra


def _fit_mesh(config, num_devices: int) -> None:
    """A run trained on a mesh these devices cannot form (e.g. 8 devices, evaluated on 1) is
    placed with FSDP over every device here: the batch still splits over all of them, and the
    parameters are sharded as finely as they can be, so a model that needed model parallelism to
    fit still has the best chance to. The checkpoint is restored onto that mesh (resharded)."""
    try:
        sharding.mesh_shape(config.mesh, num_devices)
    except UserError:
        trained = {a: config.mesh[a] for a in sharding.MESH_AXES}
        config.mesh.update(data=1, fsdp=-1, tensor=1)
        print(f"fmjax: the run's mesh {trained} does not fit the devices here ({num_devices}); "
              f"using fsdp={num_devices}", file=sys.stderr)


def load(workdir, step: int | None = None, with_data: bool = False,
         one_device: bool = False) -> Run:
    """The run in `workdir` at checkpoint `step` (default: the newest intact one, saying which
    damaged ones it skipped). `with_data` builds the data pipeline too (for eval); otherwise
    nothing of the dataset is read. `one_device`: on this host's first device (sampling, whose
    text must not depend on the device count); else on every device."""
    checkpoint.check_workdir(workdir)
    workdir = workdir_files.as_path(workdir)
    config = read_config(workdir)
    devices = jax.local_devices()[:1] if one_device else jax.devices()
    if one_device:
        config.mesh.update(data=1, fsdp=1, tensor=1)
    _fit_mesh(config, len(devices))
    exp = prepare(config, workdir, data_info=None if with_data else read_data_info(workdir),
                  devices=devices, training=False)
    tokenizer = (exp.pipeline.tokenizer if exp.pipeline is not None
                 and hasattr(exp.pipeline, "tokenizer") else tokenizers.load_from_workdir(workdir))
    if tokenizer is not None:
        exp.task.bind_tokenizer(tokenizer)
    manager = checkpoint.read_only_manager(workdir)
    if manager is None:
        raise UserError(f"{workdir} holds no checkpoint")
    try:
        with jax.set_mesh(exp.mesh):
            step, state = checkpoint.restore_intact(
                manager, exp.abstract_state, step,
                on_damaged=lambda e: print(f"fmjax: {e}; skipped", file=sys.stderr))
    finally:
        manager.close()
    return Run(config, exp, state, step, workdir, tokenizer)
