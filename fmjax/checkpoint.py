"""Orbax checkpoints of the train state, with the config beside it.

Async and atomic (Orbax writes to a temporary directory and renames), keeping the last
`checkpoint.keep` steps plus the best by `checkpoint.best_metric`. The data position is the step:
every pipeline produces the batch of step s as a function of (seed, s). Restore takes target
shardings, so a checkpoint written on one mesh restores onto another.
"""

import pathlib

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from fmjax.errors import UserError


def checkpoint_dir(workdir) -> pathlib.Path:
    return pathlib.Path(workdir).absolute() / "checkpoints"


def _preservation(ckpt_config):
    keep = [policies.LatestN(ckpt_config.keep)]
    if ckpt_config.best_metric:
        metric = ckpt_config.best_metric
        keep.append(policies.BestN(get_metric_fn=lambda m: m[metric],
                                   reverse=ckpt_config.best_mode == "min", n=1,
                                   keep_checkpoints_without_metrics=False))
    return policies.AnyPreservationPolicy(keep)


def _handlers() -> dict:
    return {"state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler()}


def open_manager(workdir, ckpt_config) -> ocp.CheckpointManager:
    """A manager that writes (creating the directory on first save)."""
    options = ocp.CheckpointManagerOptions(
        preservation_policy=_preservation(ckpt_config),
        enable_async_checkpointing=ckpt_config.async_save, create=True)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                 item_handlers=_handlers())


def read_only_manager(workdir) -> ocp.CheckpointManager | None:
    """A manager for inspecting existing checkpoints; None when there are none (creates nothing)."""
    directory = checkpoint_dir(workdir)
    if not directory.is_dir():
        return None
    return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
        read_only=True, create=False), item_handlers=_handlers())


def _path_name(path) -> str:
    """'params/conv_0/kernel' for dict keys, dataclass fields and sequence indices alike."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def check_compatible(manager, step: int, abstract_state) -> None:
    """UserError naming the first array whose saved shape differs from the config's model."""
    saved = manager.item_metadata(step)["state"]
    want = [(_path_name(p), x) for p, x in jax.tree_util.tree_flatten_with_path(abstract_state)[0]]
    have = {_path_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(saved)[0]}
    where = manager.directory
    if len(have) != len(want):
        raise UserError(f"checkpoint {where}/{step} holds {len(have)} arrays but the config's "
                        f"model has {len(want)}; use a new --workdir or the config it was "
                        f"trained with")
    for name, leaf in want:
        saved_leaf = have.get(name)
        if saved_leaf is None:
            raise UserError(f"checkpoint {where}/{step} has no array {name}; use a new "
                            f"--workdir or the config it was trained with")
        if tuple(saved_leaf.shape) != tuple(leaf.shape):
            raise UserError(f"checkpoint {where}/{step} does not fit the config: {name} has shape "
                            f"{tuple(saved_leaf.shape)} there but {tuple(leaf.shape)} in the "
                            f"config; use a new --workdir or the config it was trained with")


def save(manager, step: int, state, config_dict: dict, metrics: dict | None) -> None:
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              config=ocp.args.JsonSave(config_dict))
    manager.save(step, args=args, metrics=metrics)


def restore(manager, step: int, abstract_state):
    """The state at `step`, placed on the shardings carried by `abstract_state`."""
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))
    return restored["state"]
