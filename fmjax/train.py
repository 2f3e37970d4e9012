"""`train_and_evaluate(config, workdir)`: the one train loop for every model family.

Everything that can be wrong with the input is checked in `prepare` before the workdir is touched;
`train_and_evaluate` then restores or initialises the sharded state and runs fused multi-step device
calls, logging, evaluating and checkpointing on the configured boundaries. A call is cut short
where it would pass an eval, a checkpoint or the last step, so none of those need be a multiple
of `train.steps_per_call`; logged steps are read out of a call's per-step metrics.
"""

import contextlib
import dataclasses
import json
import pathlib
import sys
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from fmjax import checkpoint, configs, data, sharding, state as state_lib, tasks
from fmjax.compression import quantization
from fmjax.early_stopping import EarlyStopping, counts as counts_for_early_stopping
from fmjax.errors import NonFiniteLoss, Preempted, UserError, WorkdirError
from fmjax.metrics import perf, wandb_sink
from fmjax.metrics.writers import MetricWriters
from fmjax.runtime import library_logs, profiler, workdir_files, workdir_lock
from fmjax.runtime.preemption import PreemptionWatch
from fmjax.step import make_eval_step, make_train_call


DATA_INFO_FILE = "data_info.json"


@dataclasses.dataclass
class Experiment:
    """Everything built from a config, before any array is allocated or file written."""
    config: ml_collections.ConfigDict
    mesh: jax.sharding.Mesh
    rules: tuple
    pipeline: Any               # None when built from a run's stored data shapes
    task: tasks.Task
    tx: Any
    lr_schedule: Callable
    abstract_state: Any
    state_shardings: Any
    latest_step: int | None     # newest checkpoint in the workdir, if any (intact or not)
    init_source: checkpoint.InitSource | None = None   # config.init_from, for a fresh start


def prepare(config: ml_collections.ConfigDict, workdir=None, data_info=None,
            devices=None, training: bool = True) -> Experiment:
    """Build and check the whole experiment on `devices` (default: all); raises UserError and
    writes nothing. With `data_info` (a trained run's stored data shapes) the dataset is not
    read and the experiment has no pipeline. `training=False`: a trained run opened to evaluate,
    sample or compress it, whose model-selection metrics (`configs.validate`) and training batch
    are not checked (a batch of 12 trained on 1 device still evaluates on 8)."""
    if workdir is not None:
        checkpoint.check_workdir(workdir)
    configs.validate(config, selection=training)
    mesh = sharding.make_mesh(config.mesh, devices)
    if training:
        sharding.check_batch_size(config.train.batch_size // config.train.grad_accum_steps, mesh,
                                  "config.train.batch_size / grad_accum_steps")
    sharding.check_batch_size(config.train.eval_batch_size, mesh, "config.train.eval_batch_size")
    rules = sharding.logical_rules(config.sharding.rules)
    pipeline = None
    if data_info is None:
        pipeline = data.build_pipeline(config.data, config.train.seed, workdir)
        data_info = pipeline.info
    task = tasks.build_task(config, data_info)
    if pipeline is not None:
        task.bind_data(pipeline)
    tx, lr_schedule = task.optimizer()
    abstract_state, state_shardings = state_lib.abstract_and_shardings(
        task, tx, config.train.seed, mesh, rules)
    manager = checkpoint.read_only_manager(workdir) if workdir is not None else None
    latest_step = manager.latest_step() if manager is not None else None
    if manager is not None:
        manager.close()
    init_source = None   # a resumed run restores its own checkpoint, never init_from again
    if config.init_from and latest_step is None:
        init_source = checkpoint.plan_init_from(config.init_from, config.init_from_step,
                                                abstract_state, config.init_from_reinit)
    return Experiment(config, mesh, rules, pipeline, task, tx, lr_schedule, abstract_state,
                      state_shardings, latest_step, init_source)


def evaluate(exp: Experiment, state, eval_step, details: dict | None = None) -> dict[str, float]:
    """The task's eval metrics over the whole eval split ('eval/...') and, when the data holds
    one out, the validation split ('val/...'). `details`, if given, receives each split's
    `Task.eval_details` where the task has them ({"eval": {...}, "val": {...}})."""
    metrics = evaluate_split(exp, state, eval_step, "eval", details)
    if exp.pipeline.info.num_val:
        metrics.update(evaluate_split(exp, state, eval_step, "val", details))
    return metrics


def metric_names(task, info: data.DataInfo) -> list[str]:
    """The names `evaluate` returns, known before it runs."""
    splits = ["eval", "val"] if info.num_val else ["eval"]
    return [f"{split}/{name}" for split in splits for name in task.EVAL_METRICS]


def evaluate_split(exp: Experiment, state, eval_step, split: str,
                   details: dict | None = None) -> dict[str, float]:
    """Run the task's eval over the whole `split` ("eval" or "val"); metrics keyed by it, and
    its `Task.eval_details` into `details[split]` if `details` is given and the task has them."""
    outputs, masks = [], []
    for batch in exp.pipeline.eval_batches(exp.config.train.eval_batch_size, split):
        mask = batch.pop("mask")
        out = eval_step(state.params, state.extra, sharding.global_batch(batch, exp.mesh))
        outputs.append(multihost_utils.process_allgather(out, tiled=True))
        masks.append(multihost_utils.process_allgather(mask, tiled=True))
    keep = np.concatenate(masks)
    merged = {k: np.concatenate([o[k] for o in outputs])[keep] for k in outputs[0]}
    split_details = exp.task.eval_details(merged) if details is not None else None
    if split_details is not None:
        details[split] = split_details
    return {f"{split}/{k}": v for k, v in exp.task.eval_metrics(merged).items()}


def restore_or_init(exp: Experiment, workdir: pathlib.Path) -> tuple[Any, int, str | None]:
    """(state, step, what to log): the newest intact checkpoint of `workdir` if it has one (newer
    damaged ones are moved to `workdir/damaged_checkpoints/`), else a fresh sharded init, with
    the arrays `config.init_from` provides read from that run's checkpoint."""
    if exp.latest_step is None:
        state = state_lib.init_state(exp.task, exp.tx, exp.config.train.seed, exp.mesh,
                                     exp.rules, exp.abstract_state)
        if exp.init_source is None:
            return state, 0, None
        return (checkpoint.restore_matching(exp.init_source, state), 0,
                exp.init_source.message())
    manager = checkpoint.read_only_manager(workdir)
    damaged = []
    try:
        step, state = checkpoint.restore_intact(manager, exp.abstract_state,
                                                on_damaged=damaged.append)
    finally:
        manager.close()
    for e in damaged:   # out of Orbax's sight: the run saves these steps anew
        if jax.process_index() == 0:
            print(f"fmjax: {e}; moved to {checkpoint.quarantine(workdir, e.step)}",
                  file=sys.stderr)
    return state, step, f"resuming from the checkpoint at step {step}"


def restored_progress(workdir: pathlib.Path, step: int) -> dict:
    """The loop's progress (early stopping's count) saved with the restored checkpoint `step`;
    {} for a fresh start."""
    manager = checkpoint.read_only_manager(workdir) if step else None
    if manager is None:
        return {}
    try:
        return checkpoint.read_progress(manager, step)
    except checkpoint.DamagedCheckpoint as e:
        raise UserError(f"{e} in {manager.directory}; move it aside to resume from the one "
                        "before") from e
    finally:
        manager.close()


def nonfinite_stop(metrics_K: dict, first_step: int, train_config) -> tuple[int, str] | None:
    """(step, message) if the nan_policy says stop after this call's metrics, else None."""
    if train_config.nan_policy == "skip":
        skipped = np.asarray(metrics_K["skipped_steps"])
        over = np.flatnonzero(skipped > train_config.max_nan_skips)
        if not over.size:
            return None
        return first_step + int(over[0]) + 1, (
            f"{skipped[over[0]]} steps skipped for a non-finite loss by step "
            f"{first_step + over[0] + 1}, more than config.train.max_nan_skips="
            f"{train_config.max_nan_skips}; stopped (the last good checkpoint is kept)")
    losses = np.asarray(metrics_K["loss"])
    bad = np.flatnonzero(~np.isfinite(losses))
    if not bad.size:
        return None
    return first_step + int(bad[0]) + 1, (f"non-finite loss {losses[bad[0]]} at step "
                                     f"{first_step + bad[0] + 1}; stopped (the last good "
                                     "checkpoint is kept)")


def _train_record(metrics_K: dict, index: int) -> dict:
    return {f"train/{name}": v[index] for name, v in metrics_K.items()}


def logged_records(metrics_K: dict, first_step: int, log_every: int) -> dict[int, dict]:
    """{step: its 'train/...' metrics} for the steps of a call that started after `first_step`
    that are logged: the multiples of `log_every`."""
    end_step = first_step + len(metrics_K["loss"])
    return {s: _train_record(metrics_K, s - first_step - 1)
            for s in range(first_step + 1, end_step + 1) if s % log_every == 0}


def call_length(step: int, config: ml_collections.ConfigDict) -> int:
    """Optimizer steps in the device call that starts after `step`: `train.steps_per_call`, or
    fewer, to end exactly on the next eval, checkpoint or the last step. The call's length is
    static (`lax.scan`): each shorter length compiles once, usually one, since the boundaries
    repeat (`tests/test_train.py` counts them)."""
    stops = [(step // every + 1) * every
             for every in (config.train.eval_every, config.checkpoint.every)]
    return min(config.train.steps_per_call, config.train.num_steps - step,
               *(stop - step for stop in stops))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir,
                       show_progress: bool = True) -> dict[str, float]:
    """Train (or resume) the experiment in `workdir`; returns the last eval metrics."""
    wandb_sink.check_installed(config.logging)   # before reading any data
    quantization.check_trainable(config)
    if not workdir_files.is_url(workdir) and (pathlib.Path(workdir) / "sweep.json").exists():
        raise UserError(f"--workdir {workdir} holds a sweep (sweep.json), not a run: its trials "
                        "are in trials/NNNN; give the run a directory of its own")
    exp = prepare(config, workdir)
    with workdir_lock.hold(workdir):
        return _train(exp, workdir_files.as_path(workdir), show_progress)


def data_info_asset(info: data.DataInfo) -> dict[str, bytes]:
    """What `fmjax train` stores so the task can be rebuilt without the data (`runs.load`)."""
    return {DATA_INFO_FILE: json.dumps(dataclasses.asdict(info)).encode()}


def _train(exp: Experiment, workdir: pathlib.Path, show_progress: bool) -> dict[str, float]:
    """The body of `train_and_evaluate`, run while this process holds the workdir's lock."""
    config = exp.config
    tc = config.train
    library_logs.to_workdir(workdir)
    state, step, note = restore_or_init(exp, workdir)
    stopping = EarlyStopping.from_dict(restored_progress(workdir, step).get("early_stopping"))
    stopping.check_resume(tc.early_stopping, step)
    if jax.process_count() > 1:   # all have read the workdir before process 0 writes to it
        multihost_utils.sync_global_devices("fmjax: workdir read")

    # ---- From here on the workdir is written. -------------------------------------------------
    if jax.process_index() == 0:
        assets = {"config.json": configs.to_json(config).encode(), **exp.pipeline.assets(),
                  **data_info_asset(exp.pipeline.info)}
        try:   # whole or not at all: `fmjax eval` and `sample` need config.json intact
            for name, content in assets.items():
                workdir_files.write_atomic(workdir / name, content)
        except OSError as e:
            raise WorkdirError(f"cannot write to the workdir {workdir}: {e.strerror or e}") from e
    config_dict = json.loads(configs.to_json(config))
    manager = checkpoint.open_manager(workdir, config.checkpoint)
    wandb_run = wandb_sink.WandbSink.open(config.logging, config_dict, workdir)
    writers = MetricWriters(workdir, step, tc.num_steps, show_progress,
                            sinks=[wandb_run] if wandb_run else [])
    writers.write_config(step, config_dict,
                         ["train/loss"] + metric_names(exp.task, exp.pipeline.info))
    if note:
        writers.message(note)
    train_call = make_train_call(exp.task, exp.tx, exp.lr_schedule, config, exp.mesh,
                                 exp.state_shardings)
    eval_step = make_eval_step(exp.task, exp.mesh, exp.state_shardings)
    batches = exp.pipeline.train_iterator(step, tc.batch_size)
    throughput = perf.throughput_fn(exp.task, exp.abstract_state.params, config)
    if stopping.stopped_at:
        writers.message(f"{stopping.message(tc.early_stopping)}; nothing more to run")
    if step >= tc.num_steps or stopping.stopped_at:   # done: report the final metrics again
        writers.close()
        manager.close()
        with jax.set_mesh(exp.mesh):
            return evaluate(exp, state, eval_step)

    def fetch(end_step: int, metrics_K) -> dict[int, dict]:
        """A finished call's metrics -> {step: train record} for its steps that are logged (the
        multiples of `log_every`). Stops with NonFiniteLoss (after logging the bad step) if the
        nan_policy says so."""
        metrics_K = jax.device_get(metrics_K)
        first_step = end_step - len(metrics_K["loss"])
        stop = nonfinite_stop(metrics_K, first_step, tc)
        if stop is not None:
            bad_step, message = stop
            writers.write(bad_step, _train_record(metrics_K, bad_step - first_step - 1))
            raise NonFiniteLoss(message)
        writers.advance(end_step)
        records = logged_records(metrics_K, first_step, tc.log_every)
        if records:
            perf_metrics = throughput(writers.steps_per_sec(end_step))
            for record in records.values():
                record.update(perf_metrics)
        return records

    def write(records: dict[int, dict]) -> None:
        for record_step, record in records.items():
            writers.write(record_step, record)

    # ---- The loop: one device call = up to steps_per_call optimizer steps. ---------------------
    eval_metrics: dict[str, float] = {}
    pending = None   # the previous call, fetched one call late so logging never stalls the device
    # The watch is entered first so that it still catches a second SIGTERM while the last
    # checkpoint is being written on the way out.
    with (PreemptionWatch() as preemption, jax.set_mesh(exp.mesh), _finally_close(manager, writers),
          profiler.window(tc.profile_steps, workdir) as profile):
        while step < tc.num_steps:
            num = call_length(step, config)
            local = [next(batches) for _ in range(num)]
            stacked = jax.tree.map(lambda *xs: np.stack(xs), *local)
            with profile.call(step, num):
                state, metrics_K = train_call(state, sharding.global_batch(stacked, exp.mesh, 1))
            step += num
            profile.called(step, metrics_K)
            if pending is not None:
                write(fetch(*pending))
                pending = None
            is_last = step == tc.num_steps
            preempted = preemption.requested() and not is_last
            do_eval = step % tc.eval_every == 0 or is_last
            do_save = step % config.checkpoint.every == 0 or is_last or preempted
            if not (do_eval or do_save):
                pending = (step, metrics_K)
                continue
            records = fetch(step, metrics_K)   # before saving: never checkpoint a NaN state
            # Preempted, the state is saved first (the grace period may end during an eval),
            # unless this eval's early-stopping count belongs in the checkpoint.
            save_first = preempted and not (do_eval and counts_for_early_stopping(tc, step))
            if save_first:
                checkpoint.save(manager, step, state, config_dict, None,
                                {"early_stopping": stopping.to_dict()})
            details: dict[str, dict] = {}
            if do_eval:
                eval_metrics = evaluate(exp, state, eval_step, details)
                records[step] = {**records.get(step, {}), **eval_metrics}
                if counts_for_early_stopping(tc, step):
                    stopping = stopping.update(tc.early_stopping, step,
                                               eval_metrics[tc.early_stopping.metric])
            stopped = do_eval and stopping.stopped_at == step
            write(records)   # before the images: W&B drops a record logged below its last step
            if do_eval:
                writers.write_images(step, exp.task.eval_images(state.params, state.extra))
                writers.write_eval_details(step, details)
            if (do_save or stopped) and not save_first:
                checkpoint.save(manager, step, state, config_dict,
                                eval_metrics if do_eval else None,
                                {"early_stopping": stopping.to_dict()})
            if stopped:
                writers.message(stopping.message(tc.early_stopping))
                break
            if preempted:   # leaving the `with` waits for the checkpoint to be written
                raise Preempted(f"{preemption.stopped_by} at step {step}: checkpoint saved in "
                                f"{workdir}; run the same command again to resume",
                                preemption.exit_status)
    return eval_metrics


@contextlib.contextmanager
def _finally_close(manager, writers):
    """Even when training stops early (NaN), let async checkpoint writes finish and flush logs."""
    try:
        yield
    finally:
        try:
            checkpoint.close(manager)   # WorkdirError if the last checkpoint could not be written
        finally:
            writers.close()
