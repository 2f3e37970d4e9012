"""Orbax checkpoints of the train state, with the config beside it.

Async and atomic (Orbax writes to a temporary directory and renames), keeping the last
`checkpoint.keep` steps plus the best by `checkpoint.best_metric`. The data position is the step:
every pipeline produces the batch of step s as a function of (seed, s). Restore takes target
shardings, so a checkpoint written on one mesh restores onto another.

Fine-tuning (`config.init_from`): `plan_init_from` matches a new model's arrays against another
run's checkpoint by path and shape (from metadata, nothing read), and `restore_matching` reads
only the matched arrays (Orbax partial restore) onto the new model's shardings.
"""

import contextlib
import dataclasses
import os
import pathlib
import re
import weakref

import flax
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from fmjax.errors import UserError, WorkdirError


def check_workdir(workdir) -> None:
    """UserError for a URL: fmjax writes its workdir with local file operations (pathlib, atomic
    renames, appends), which would turn gs://b/run into a local directory gs:/b/run."""
    if "://" in str(workdir):
        raise UserError(f"workdir {workdir}: fmjax workdirs are filesystem paths; for a bucket, "
                        "mount it on every host (gcsfuse) and pass the mount path")


def checkpoint_dir(workdir) -> pathlib.Path:
    check_workdir(workdir)
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


class _WritingManager(ocp.CheckpointManager):
    """Orbax's manager without its own preemption query. Orbax's `save` passes the step to JAX's
    `reached_preemption_sync_point`, which sets the per-process count that the hosts compare to
    agree on a stopping point; fmjax's `PreemptionWatch` counts device calls instead, so Orbax's
    step would move that count and the hosts would never stop."""

    def reached_preemption(self, step: int) -> bool:
        return False


def open_manager(workdir, ckpt_config) -> ocp.CheckpointManager:
    """A manager that writes (creating the directory on first save)."""
    options = ocp.CheckpointManagerOptions(
        preservation_policy=_preservation(ckpt_config),
        enable_async_checkpointing=ckpt_config.async_save, create=True)
    return _WritingManager(checkpoint_dir(workdir), options=options, item_handlers=_handlers())


def read_only_manager(workdir) -> ocp.CheckpointManager | None:
    """A manager for inspecting existing checkpoints; None when there are none (creates nothing)."""
    directory = checkpoint_dir(workdir)
    if not directory.is_dir():
        return None
    return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
        read_only=True, create=False), item_handlers=_handlers())


def path_name(path) -> str:
    """'params/conv_0/kernel' for dict keys, dataclass fields and sequence indices alike."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def check_compatible(manager, step: int, abstract_state) -> None:
    """UserError naming the first array whose saved shape differs from the config's model."""
    saved = manager.item_metadata(step)["state"]
    want = [(path_name(p), x) for p, x in jax.tree_util.tree_flatten_with_path(abstract_state)[0]]
    have = {path_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(saved)[0]}
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


@dataclasses.dataclass(frozen=True)
class InitSource:
    """Which arrays of a fresh state another run's checkpoint provides (`config.init_from`): its
    parameters, and non-parameter collections such as batch statistics."""
    workdir: str
    step: int
    matched: tuple[str, ...]    # 'params/block_0/...' paths taken from the checkpoint
    new: tuple[str, ...]        # paths only the new model has: they keep their fresh init

    def message(self) -> str:
        """One line for the log: what came from where, and what is new."""
        total = len(self.matched) + len(self.new)
        new = ", ".join(n.split("/", 1)[1] for n in self.new) or "none"
        return (f"initialised {len(self.matched)} of {total} model arrays from "
                f"{self.workdir} (step {self.step}); new: {new}")


# The parts of the train state a fine-tuning run takes from its source: the model's variables,
# never the optimizer state or the step.
_MODEL_PARTS = ("params", "extra")


def plan_init_from(workdir: str, step: int, abstract_state) -> InitSource:
    """Match `abstract_state`'s model arrays with the checkpoint of run `workdir` (step 0: its
    latest) by path; UserError naming the first array whose shapes differ, or if none match."""
    manager = read_only_manager(workdir)
    steps = sorted(manager.all_steps()) if manager is not None else []
    if not steps:
        raise UserError(f"config.init_from: {workdir} holds no checkpoint")
    step = step or steps[-1]
    if step not in steps:
        raise UserError(f"config.init_from_step: no checkpoint at step {step} in {workdir} "
                        f"(have: {steps})")
    saved = {path_name(p): x for p, x in
             jax.tree_util.tree_flatten_with_path(manager.item_metadata(step)["state"])[0]}
    manager.close()
    matched, new = [], []
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]:
        name = path_name(path)
        if name.split("/", 1)[0] not in _MODEL_PARTS:
            continue
        if name not in saved:
            new.append(name)
        elif tuple(saved[name].shape) != tuple(leaf.shape):
            raise UserError(f"config.init_from: {name.split('/', 1)[1]} has shape "
                            f"{tuple(saved[name].shape)} in {workdir} (step {step}) but "
                            f"{tuple(leaf.shape)} in this config's model; use the model config "
                            "the encoder was trained with")
        else:
            matched.append(name)
    if not matched:
        theirs = next((n.split("/", 1)[1] for n in saved if n.startswith("params/")), "none")
        raise UserError(f"config.init_from: {workdir} (step {step}) has no parameter in common "
                        f"with this config's model (its first: {theirs}); is it the right run?")
    return InitSource(str(workdir), step, tuple(matched), tuple(new))


def restore_matching(source: InitSource, state):
    """`state` with the arrays `source` matched replaced by the saved ones (Orbax partial
    restore, read directly onto `state`'s shardings); everything else as it was."""
    flat = flax.traverse_util.flatten_dict(
        {part: getattr(state, part) for part in _MODEL_PARTS}, keep_empty_nodes=True, sep="/")
    wanted = flax.traverse_util.unflatten_dict(
        {name: jax.ShapeDtypeStruct(flat[name].shape, flat[name].dtype,
                                    sharding=flat[name].sharding)
         for name in source.matched}, sep="/")
    manager = ocp.CheckpointManager(
        checkpoint_dir(source.workdir),
        options=ocp.CheckpointManagerOptions(read_only=True, create=False),
        item_handlers={"state": ocp.PyTreeCheckpointHandler()})
    restored = manager.restore(source.step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        wanted, restore_args=ocp.checkpoint_utils.construct_restore_args(wanted),
        partial_restore=True)))["state"]
    manager.close()
    flat.update(flax.traverse_util.flatten_dict(restored, sep="/"))
    parts = flax.traverse_util.unflatten_dict(flat, sep="/")
    return state.replace(**{part: parts.get(part, {}) for part in _MODEL_PARTS})


# The step each manager is writing: a background write that fails surfaces only at the next
# save or wait, which must still name it.
_writing: "weakref.WeakKeyDictionary[ocp.CheckpointManager, int]" = weakref.WeakKeyDictionary()


def _filesystem_reason(error: BaseException) -> str | None:
    """'No space left on device' for a filesystem's error: an OSError, or a TensorStore error
    that carries the OS error code (how Orbax's array writes fail); None for anything else."""
    if isinstance(error, OSError):
        return error.strerror or str(error)
    code = re.search(r"os_error_code='?(\d+)", str(error))
    return os.strerror(int(code.group(1))) if code else None


@contextlib.contextmanager
def _write_errors(manager, step: int | None):
    try:
        yield
    except Exception as e:
        reason = _filesystem_reason(e)
        if reason is None:
            raise
        intact = sorted(s for s in manager.all_steps(read=True) if s != step)
        raise WorkdirError(f"cannot write checkpoint {step} to {manager.directory}: {reason}; "
                           f"training stopped (intact checkpoints: {intact or 'none'})") from e


def save(manager, step: int, state, config_dict: dict, metrics: dict | None) -> None:
    """Start writing checkpoint `step` (in the background when async); WorkdirError when the
    filesystem refuses it or the previous one."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              config=ocp.args.JsonSave(config_dict))
    with _write_errors(manager, _writing.get(manager)):   # the previous one, written async
        manager.wait_until_finished()
    _writing[manager] = step
    with _write_errors(manager, step):
        manager.save(step, args=args, metrics=metrics)


def close(manager) -> None:
    """Finish writing the last checkpoint and close; WorkdirError if the filesystem refused it."""
    with _write_errors(manager, _writing.get(manager)):
        try:
            manager.wait_until_finished()
        finally:
            manager.close()


def restore(manager, step: int, abstract_state):
    """The state at `step`, placed on the shardings carried by `abstract_state`."""
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))
    return restored["state"]
