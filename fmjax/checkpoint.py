"""Orbax checkpoints of the train state, with the config beside it.

Async and atomic (Orbax writes to a temporary directory and renames), keeping the last
`checkpoint.keep` steps plus the best by `checkpoint.best_metric`. The data position is the step:
every pipeline produces the batch of step s as a function of (seed, s). Restore takes target
shardings, so a checkpoint written on one mesh restores onto another. The loop's own state
beyond the arrays (early stopping's count) is a JSON item `progress` of each checkpoint.

Every checkpoint also holds a checksum of each array (`fmjax.integrity`), and every read of a
checkpoint goes through `restore_intact`, which verifies them: a damaged checkpoint (unreadable,
or whose arrays differ from their checksums) is reported in one line and skipped for the newest
intact one, unless a step was asked for by name.

Fine-tuning (`config.init_from`): `plan_init_from` matches a new model's arrays against another
run's checkpoint by path and shape (from metadata, nothing read), and `restore_matching` reads
only the matched arrays (Orbax partial restore) onto the new model's shardings, verified too.
Arrays `config.init_from_reinit` names keep their fresh init whatever the source holds: a new
head for another number of classes.
"""

import contextlib
import dataclasses
import os
import pathlib
import re
import weakref

from typing import Callable, Sequence

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as policies

from fmjax import integrity
from fmjax.compression import quantization
from fmjax.errors import UserError, WorkdirError, first_line
from fmjax.runtime import workdir_files
from fmjax.tree_paths import check_each_matches, path_name


def check_workdir(workdir) -> None:
    """UserError for an empty workdir, a URL other than gs:// (`workdir_files.as_path`), or a
    gs:// one without the packages it needs."""
    if not str(workdir).strip():
        raise UserError("--workdir is empty; give the run's directory (fmjax would otherwise "
                        "write into the current one)")
    if "://" in str(workdir) and not workdir_files.is_url(workdir):
        raise UserError(f"workdir {workdir}: fmjax workdirs are filesystem paths or "
                        f"{' '.join(workdir_files.URL_PREFIXES)} URLs; for other storage, mount "
                        "it on every host and pass the mount path")
    workdir_files.check_url_support(workdir)


def _absolute(workdir):
    path = workdir_files.as_path(workdir)
    return path if workdir_files.is_url(path) else path.absolute()


def checkpoint_dir(workdir):
    """WORKDIR/checkpoints, absolute: a `pathlib.Path`, or an `epath.Path` for gs://."""
    check_workdir(workdir)
    return _absolute(workdir) / "checkpoints"


def _preservation(ckpt_config):
    keep = [policies.LatestN(ckpt_config.keep)]
    if ckpt_config.best_metric:
        metric = ckpt_config.best_metric
        keep.append(policies.BestN(get_metric_fn=lambda m: m[metric],
                                   reverse=ckpt_config.best_mode == "min", n=1,
                                   keep_checkpoints_without_metrics=False))
    return policies.AnyPreservationPolicy(keep)


def _handlers() -> dict:
    return {"state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler(),
            "checksums": ocp.JsonCheckpointHandler(), "progress": ocp.JsonCheckpointHandler()}


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


@dataclasses.dataclass(frozen=True)
class InitSource:
    """Which arrays of a fresh state another run's checkpoint provides (`config.init_from`): its
    parameters, and non-parameter collections such as batch statistics."""
    workdir: str
    step: int
    matched: tuple[str, ...]    # 'params/block_0/...' paths taken from the checkpoint
    new: tuple[str, ...]        # paths only the new model has: they keep their fresh init
    quantized: bool = False     # the source stores quantized weights (`fmjax compress`)
    reinit: tuple[str, ...] = ()   # paths both have that `init_from_reinit` keeps fresh

    def message(self) -> str:
        """One line for the log: what came from where, what is new, what was re-initialised."""
        total = len(self.matched) + len(self.new) + len(self.reinit)
        new = ", ".join(_in_part(n) for n in self.new) or "none"
        line = (f"initialised {len(self.matched)} of {total} model arrays from "
                f"{self.workdir} (step {self.step}); new: {new}")
        if self.reinit:
            line += f"; re-initialised: {', '.join(_in_part(n) for n in self.reinit)}"
        return line


def _in_part(name: str) -> str:
    """'head/kernel' of 'params/head/kernel': the path patterns and messages use."""
    return name.split("/", 1)[1]


# The parts of the train state a fine-tuning run takes from its source: the model's variables,
# never the optimizer state or the step.
_MODEL_PARTS = ("params", "extra")


def plan_init_from(workdir: str, step: int, abstract_state,
                   reinit: Sequence[str] = ()) -> InitSource:
    """Match `abstract_state`'s model arrays with the checkpoint of run `workdir` (step 0: its
    latest) by path, leaving those a regex of `reinit` finds fresh; UserError naming the first
    other array whose shapes differ, if none match, or for a `reinit` pattern that finds none."""
    manager = read_only_manager(workdir)
    steps = sorted(manager.all_steps()) if manager is not None else []
    if not steps:
        raise UserError(f"config.init_from: {workdir} holds no checkpoint")
    step = step or steps[-1]
    if step not in steps:
        raise UserError(f"config.init_from_step: no checkpoint at step {step} in {workdir} "
                        f"(have: {steps})")
    try:
        saved = _saved_shapes(manager, step, _written_checksums(manager, step))
    except DamagedCheckpoint as e:
        raise UserError(f"config.init_from: {e} in {workdir}") from e
    finally:
        manager.close()
    saved, quantized = quantization.float_shapes(saved)
    model = {path_name(path): tuple(leaf.shape) for path, leaf
             in jax.tree_util.tree_flatten_with_path(abstract_state)[0]
             if path_name(path).split("/", 1)[0] in _MODEL_PARTS}
    check_each_matches("init_from_reinit", reinit, [_in_part(n) for n in model])
    matched, new, fresh = [], [], []
    for name, shape in model.items():
        if name not in saved:
            new.append(name)
        elif any(re.search(pattern, _in_part(name)) for pattern in reinit):
            fresh.append(name)
        elif saved[name] != shape:
            module, _, leaf = _in_part(name).rpartition("/")   # a module's arrays, or one array
            pattern = f"^{module}/" if module else f"^{leaf}$"
            raise UserError(f"config.init_from: {_in_part(name)} has shape {saved[name]} in "
                            f"{workdir} (step {step}) but {shape} in this config's model; use "
                            "the model config it was trained with, or start it afresh with "
                            f"--config.init_from_reinit='(\"{pattern}\",)'")
        else:
            matched.append(name)
    if not matched:
        theirs = next((n.split("/", 1)[1] for n in saved if n.startswith("params/")), "none")
        raise UserError(f"config.init_from: {workdir} (step {step}) has no parameter in common "
                        f"with this config's model (its first: {theirs}); is it the right run?")
    return InitSource(str(workdir), step, tuple(matched), tuple(new), quantized, tuple(fresh))


def restore_matching(source: InitSource, state):
    """`state` with the arrays `source` matched replaced by the saved ones (Orbax partial
    restore, read directly onto `state`'s shardings, verified against their checksums);
    everything else as it was. Weights the source stores quantized (`fmjax compress`) are read
    as stored and dequantized."""
    flat = flax.traverse_util.flatten_dict(
        {part: getattr(state, part) for part in _MODEL_PARTS}, keep_empty_nodes=True, sep="/")
    manager = ocp.CheckpointManager(
        checkpoint_dir(source.workdir),
        options=ocp.CheckpointManagerOptions(read_only=True, create=False),
        item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                       "checksums": ocp.JsonCheckpointHandler()})
    try:
        written = _written_checksums(manager, source.step)
        stored = _quantized_arrays(manager, source, flat) if source.quantized else {}
        wanted = {name: jax.ShapeDtypeStruct(flat[name].shape, flat[name].dtype,
                                             sharding=flat[name].sharding)
                  for name in source.matched if name not in stored}
        for arrays in stored.values():
            wanted.update(arrays)
        wanted = flax.traverse_util.unflatten_dict(wanted, sep="/")
        args = ocp.args.PyTreeRestore(
            wanted, restore_args=ocp.checkpoint_utils.construct_restore_args(wanted),
            partial_restore=True)
        restored = flax.traverse_util.flatten_dict(
            _read_verified(manager, source.step, args, written), sep="/")
    except DamagedCheckpoint as e:
        raise UserError(f"config.init_from: {e} in {source.workdir}") from e
    finally:
        manager.close()
    for name, arrays in stored.items():
        value = quantization.dequantize_stored(
            **{key.rsplit("/", 1)[1]: restored.pop(key) for key in arrays})
        restored[name] = jax.device_put(value.astype(flat[name].dtype), flat[name].sharding)
    flat.update(restored)
    parts = flax.traverse_util.unflatten_dict(flat, sep="/")
    return state.replace(**{part: parts.get(part, {}) for part in _MODEL_PARTS})


def _quantized_arrays(manager, source: InitSource, flat: dict) -> dict[str, dict]:
    """{weight path: {stored array path: abstract array}} for the matched weights the source
    stores quantized ('params/head/kernel/array/qvalue', ...), replicated on the weight's mesh
    (they are small, and dequantized before they take the weight's sharding)."""
    metadata = _read(source.step, "metadata",
                     lambda: manager.item_metadata(source.step)["state"])
    saved = {path_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(metadata)[0]}
    out = {}
    for name in source.matched:
        keys = [f"{name}/array/{part}" for part in quantization.STORED_PARTS
                if f"{name}/array/{part}" in saved]
        if keys:
            replicated = jax.sharding.NamedSharding(flat[name].sharding.mesh,
                                                    jax.sharding.PartitionSpec())
            out[name] = {k: jax.ShapeDtypeStruct(tuple(saved[k].shape), saved[k].dtype,
                                                 sharding=replicated) for k in keys}
    return out


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


def save(manager, step: int, state, config_dict: dict, metrics: dict | None,
         progress: dict | None = None) -> None:
    """Start writing checkpoint `step` with its checksums and the loop's `progress` (in the
    background when async); WorkdirError when the filesystem refuses it or the previous one."""
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config_dict),
        checksums=ocp.args.JsonSave(integrity.checksums(state)),
        progress=ocp.args.JsonSave(progress or {}))
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


# ---- Reading: every restore is verified. ---------------------------------------------------------

class DamagedCheckpoint(Exception):
    """A checkpoint that does not read back as it was written: a file is missing or garbled, or
    an array differs from the checksum stored with it."""

    def __init__(self, step: int, reason: str):
        super().__init__(f"checkpoint {step} is damaged ({reason})")
        self.step, self.reason = step, reason


def _reason(error: BaseException) -> str:
    """A short reason for a failed read: the innermost error's first line (Orbax wraps
    TensorStore's message, e.g. "Truncated Zstd-compressed stream", in pages of spec)."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = first_line(error)
    return text if len(text) <= 200 else text[:197] + "..."


def _read(step: int, what: str, read: Callable):
    """`read()`, or DamagedCheckpoint on every process when it fails on any (a damaged file may
    be one host's shard only, and every host must skip the same checkpoint)."""
    error = None
    try:
        value = read()
    except Exception as e:   # TensorStore, Orbax and json raise many types for a damaged file
        error = e
    ok = error is None
    if jax.process_count() > 1:
        ok = bool(np.all(multihost_utils.process_allgather(np.array(ok))))
    if not ok:
        reason = _reason(error) if error is not None else "unreadable on another host"
        raise DamagedCheckpoint(step, f"cannot read its {what}: {reason}") from error
    return value


def _written_checksums(manager, step: int) -> dict[str, str]:
    """{array path: checksum} as saved with checkpoint `step`: also the list of its arrays."""
    checksums = _read(step, "checksums", lambda: manager.restore(
        step, args=ocp.args.Composite(checksums=ocp.args.JsonRestore())).checksums)
    if not isinstance(checksums, dict) or not checksums:
        raise DamagedCheckpoint(step, "it holds no checksums")
    return checksums


def read_progress(manager, step: int) -> dict:
    """The loop's progress saved with checkpoint `step` ({} for a checkpoint written before
    fmjax saved it); DamagedCheckpoint when it cannot be read."""
    if not (manager.directory / str(step) / "progress").exists():
        return {}
    progress = _read(step, "progress", lambda: manager.restore(
        step, args=ocp.args.Composite(progress=ocp.args.JsonRestore())).progress)
    if not isinstance(progress, dict):
        raise DamagedCheckpoint(step, "its progress is not a JSON object")
    return progress


def _saved_shapes(manager, step: int, written: dict[str, str]) -> dict[str, tuple]:
    """{array path: shape} from the checkpoint's metadata, which must list the arrays written."""
    metadata = _read(step, "metadata", lambda: manager.item_metadata(step)["state"])
    shapes = {path_name(p): tuple(x.shape)
              for p, x in jax.tree_util.tree_flatten_with_path(metadata)[0]}
    if shapes.keys() != written.keys():
        raise DamagedCheckpoint(step, f"its metadata lists {len(shapes)} arrays, but "
                                f"{len(written)} were written")
    return shapes


def check_compatible(where, shapes: dict[str, tuple], abstract_state) -> None:
    """UserError naming the first array whose saved shape (`shapes`) differs from the config's
    model (`abstract_state`)."""
    want = [(path_name(p), x) for p, x in jax.tree_util.tree_flatten_with_path(abstract_state)[0]]
    advice = "use a new --workdir or the config it was trained with"
    if len(shapes) != len(want):
        raise UserError(f"checkpoint {where} holds {len(shapes)} arrays but the config's model "
                        f"has {len(want)}; {advice}")
    for name, leaf in want:
        if name not in shapes:
            raise UserError(f"checkpoint {where} has no array {name}; {advice}")
        if shapes[name] != tuple(leaf.shape):
            raise UserError(f"checkpoint {where} does not fit the config: {name} has shape "
                            f"{shapes[name]} there but {tuple(leaf.shape)} in the config; "
                            f"{advice}")


def _read_verified(manager, step: int, state_args, written: dict[str, str]):
    """The `state` item of checkpoint `step`, restored with `state_args` (all arrays, or some)
    and checked against the checksums it was `written` with; DamagedCheckpoint otherwise."""
    state = _read(step, "arrays", lambda: manager.restore(
        step, args=ocp.args.Composite(state=state_args)).state)
    mismatch = integrity.first_mismatch(state, written)
    if mismatch is not None:
        raise DamagedCheckpoint(step, f"{mismatch} differs from its checksum")
    return state


def restore(manager, step: int, abstract_state):
    """The state at `step` on the shardings carried by `abstract_state`, verified: UserError when
    it does not fit the config, DamagedCheckpoint when it is damaged."""
    written = _written_checksums(manager, step)
    check_compatible(f"{manager.directory}/{step}", _saved_shapes(manager, step, written),
                     abstract_state)
    return _read_verified(manager, step, ocp.args.StandardRestore(abstract_state), written)


def quarantine(workdir, step: int) -> pathlib.Path:
    """Move damaged checkpoint `step` out of the checkpoints directory (to
    `workdir/damaged_checkpoints/`, kept for a post-mortem), so that neither a restore nor the
    keep-N rotation counts it; the new path."""
    target_dir = _absolute(workdir) / "damaged_checkpoints"
    target_dir.mkdir(exist_ok=True)
    target = target_dir / str(step)
    n = 1
    while target.exists():   # damaged twice at the same step
        target, n = target_dir / f"{step}.{n}", n + 1
    (checkpoint_dir(workdir) / str(step)).replace(target)   # Cloud Storage: object by object
    return target


def restore_intact(manager, abstract_state, step: int | None = None,
                   on_damaged: Callable[[DamagedCheckpoint], None] = lambda e: None):
    """(step, state) of checkpoint `step`, or by default of the newest intact checkpoint: each
    newer damaged one is passed to `on_damaged` and skipped. UserError when the asked-for step
    is missing or damaged, when no checkpoint is intact, or when one does not fit the config."""
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        raise UserError(f"{manager.directory} holds no checkpoint")
    if step is not None and step not in steps:
        raise UserError(f"no checkpoint at step {step} in {manager.directory} "
                        f"(have: {sorted(steps)})")
    damaged = []
    for candidate in [step] if step is not None else steps:
        try:
            return candidate, restore(manager, candidate, abstract_state)
        except DamagedCheckpoint as e:
            if step is not None:
                raise UserError(f"{e} in {manager.directory}; choose another --step") from e
            damaged.append(e)
            on_damaged(e)
    raise UserError(f"no intact checkpoint in {manager.directory}: "
                    + "; ".join(str(e) for e in damaged)
                    + "; move the directory aside to start afresh")
