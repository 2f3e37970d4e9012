"""Vectorised trials: sweep members that differ only in `train.seed` and numeric optimizer options
(learning rate, betas, weight decay, ...) trained together in one process by one jitted train
call over all members, so that a dozen small models pay start-up, compilation and dispatch once.

Each member is the run its own config would give: its seed's init, dropout keys and data order
(one data pipeline per distinct seed), its optimizer options read from its optimizer state
(`optim.build(..., injected=...)`, `optax.inject_hyperparams`). The step and eval are the solo
run's (`step.train_call_fn`, `Task.eval_outputs`) mapped over the members: `jax.vmap` on
accelerators, `lax.map` on CPU (`_over_members` says why). The loop keeps the solo loop's call
boundaries (`train.call_length`) and record format, so each member dir reads like an ordinary
trial: `config.json` and `metrics.jsonl` (train/* every `log_every` steps, eval/* and, with a
validation split, val/* every `eval_every`). No checkpoints: a killed group is rerun whole.

Wiring (`fmjax sweep --vectorize`): when every sweep parameter `is_vectorizable` and the method
is grid or random (all members known up front), create the trials, then call
`train_members(config, [trial.params ...], [DIR/trials/<number:04d> ...])` in one worker and
report each returned dict as that trial's metrics.
"""

import copy
import json
import pathlib

import jax
import ml_collections
import numpy as np

from fmjax import configs, data, optim, sharding, state as state_lib, tasks, train
from fmjax.errors import UserError, WorkdirError
from fmjax.metrics.jsonl_file import JsonlFile
from fmjax.runtime import workdir_files
from fmjax.step import train_call_fn
from fmjax.sweep.member_configs import (  # noqa: F401 (this module's API too)
    VECTORIZABLE_KEYS, is_vectorizable, member_config)


def _check_members(config, members: list[dict], member_dirs: list) -> list:
    """The members' configs, checked; UserError for anything that cannot be vectorised."""
    if not members or len(members) != len(member_dirs):
        raise UserError(f"vectorised trials need one workdir per member ({len(members)} members, "
                        f"{len(member_dirs)} workdirs)")
    for key in sorted({k for m in members for k in m}):
        if not is_vectorizable(key):
            raise UserError(f"'{key}' cannot be vectorised: members may differ only in "
                            f"{', '.join(VECTORIZABLE_KEYS)}")
    early_stopping = config.train.get("early_stopping")   # (issue 13's validation work)
    if early_stopping and early_stopping.get("metric"):
        raise UserError("vectorised trials train every member to config.train.num_steps; set "
                        "config.train.early_stopping.metric='' or run the trials one by one")
    member_configs = [member_config(config, m) for m in members]
    for c in member_configs:
        configs.validate(c)
    return member_configs


def _varied_options(member_configs) -> list[str]:
    """The optimizer options whose values differ between members (read from the opt state)."""
    return [name for name in optim.INJECTABLE
            if len({c.optimizer[name] for c in member_configs}) > 1]


def _structure_config(member_configs) -> ml_collections.ConfigDict:
    """The config whose optimizer structure holds every member: each varied option at its
    largest value (a weight decay or momentum of 0 in some members is then a multiply by 0)."""
    out = copy.deepcopy(member_configs[0])
    for name in _varied_options(member_configs):
        out.optimizer[name] = max(c.optimizer[name] for c in member_configs)
    return out


def _stack(trees: list):
    return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def _over_members(fn, vmap: bool):
    """`fn` over the leading member axis of all its arguments: `jax.vmap` (one batched
    computation, what accelerators run fastest), or `lax.map` (the members in turn inside the
    same device call: on a CPU as fast, since the solo step already keeps a core busy, and
    bit-identical to the solo runs, where vmap's batched dots differ in the last bits)."""
    if vmap:
        return jax.vmap(fn)
    return lambda *args: jax.lax.map(lambda member_args: fn(*member_args), args)


class _Members:
    """The jitted init (vmapped), train call and eval of members with the given configs."""

    def __init__(self, member_configs, vmap: bool):
        structure = _structure_config(member_configs)
        # One device: a sweep worker gets its own (CUDA_VISIBLE_DEVICES), members share it.
        self.exp = train.prepare(structure, devices=jax.local_devices()[:1])
        if type(self.exp.task).optimizer is not tasks.Task.optimizer:
            raise UserError(f"task '{structure.task}' has its own optimizers; vectorised trials "
                            "need one optimizer over all parameters")
        if structure.pruning.sparsity > 0:   # its optimizer is built below, without the masks
            raise UserError("vectorised trials do not prune: config.pruning.sparsity > 0 needs "
                            "a sweep without --vectorize")
        c, n = structure, structure.train.num_steps
        self.varied = _varied_options(member_configs)
        self.tx = optim.build(c.optimizer, n, c.train.clip_grad_norm, injected=self.varied)
        self.hyperparams_M = {name: np.array([m.optimizer[name] for m in member_configs],
                                             np.float32) for name in self.varied}
        self.seeds_M = np.array([m.train.seed for m in member_configs], np.uint32)   # Seed range
        rules = self.exp.rules

        def learning_rate(state):
            if "learning_rate" not in self.varied:
                return self.exp.lr_schedule(state.step)
            hyperparams = state.opt_state.hyperparams
            return optim.injected_schedule(c.optimizer, hyperparams, n)(state.step)

        body = train_call_fn(self.exp.task, self.tx, learning_rate, c, self.exp.mesh)

        def train_call(state_M, batches_S, seed_index_M, seeds_M):
            batches_M = jax.tree.map(lambda x: x[seed_index_M], batches_S)
            keys_M = jax.vmap(jax.random.key)(seeds_M)
            return _over_members(body, vmap)(state_M, batches_M, keys_M)

        def eval_call(params_M, extra_M, batch_S, seed_index_M):
            batch_M = jax.tree.map(lambda x: x[seed_index_M], batch_S)
            return _over_members(self.exp.task.eval_outputs, vmap)(params_M, extra_M, batch_M)

        self.train_call = jax.jit(sharding.with_rules(train_call, rules), donate_argnums=0)
        self.eval_call = jax.jit(sharding.with_rules(eval_call, rules))

    def init(self):
        """The members' stacked states: each its seed's init, its own injected options."""
        task, tx = self.exp.task, self.tx

        def init_one(seed, hyperparams):
            state = sharding.unbox(state_lib.init_boxed(task, tx, seed))
            if not hyperparams:
                return state
            return state.replace(opt_state=state.opt_state._replace(hyperparams=hyperparams))

        init = jax.jit(sharding.with_rules(jax.vmap(init_one), self.exp.rules))
        with jax.set_mesh(self.exp.mesh):
            options = state_lib.init_compiler_options(self.exp.abstract_state)
            args = (self.seeds_M, self.hyperparams_M)
            return init.lower(*args).compile(options)(*args)


def _eval_splits(pipeline) -> list[str]:
    """'eval', and 'val' when the source holds out a validation split."""
    return ["eval"] + (["val"] if pipeline.info.num_val else [])


def _evaluate(members: _Members, pipelines: dict, seed_index_M, state_M, batch_size: int
              ) -> list[dict[str, float]]:
    """Each member's eval/* (and val/*) metrics, on its own seed's pipeline."""
    task = members.exp.task
    metrics_M = [{} for _ in seed_index_M]
    for split in _eval_splits(next(iter(pipelines.values()))):
        outputs, masks = [], []
        for batches in zip(*(p.eval_batches(batch_size, split) for p in pipelines.values())):
            batch_S = _stack(batches)
            masks.append(batch_S.pop("mask")[seed_index_M])
            outputs.append(jax.device_get(members.eval_call(state_M.params, state_M.extra,
                                                            batch_S, seed_index_M)))
        for m, metrics in enumerate(metrics_M):
            keep = np.concatenate([mask[m] for mask in masks])
            merged = {k: np.concatenate([o[k][m] for o in outputs])[keep] for k in outputs[0]}
            metrics.update({f"{split}/{k}": v for k, v in task.eval_metrics(merged).items()})
    return metrics_M


class _MemberLog:
    """One member's workdir: config.json, then metrics.jsonl records as the solo loop writes
    them (no perf/*: members share the device's time)."""

    def __init__(self, workdir: pathlib.Path, config):
        self.workdir = workdir
        self.stopped = False   # after a non-finite loss (nan_policy 'stop'): no more records
        self.last_eval: dict[str, float] = {}
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            workdir_files.write_atomic(workdir / "config.json", configs.to_json(config).encode())
            self.jsonl = JsonlFile(workdir / "metrics.jsonl", 0)
        except OSError as e:
            raise WorkdirError(f"cannot write to the workdir {workdir}: {e.strerror or e}") from e

    def write(self, records: dict[int, dict]) -> None:
        for step, record in sorted(records.items()):
            record = {k: float(v) for k, v in record.items()}
            self.jsonl.append(json.dumps({"step": step, **record}) + "\n")


def train_members(config: ml_collections.ConfigDict, members: list[dict],
                  member_dirs: list[pathlib.Path], vmap: bool | None = None
                  ) -> list[dict[str, float]]:
    """Train every member of `config` (each a {dotted key: value} of VECTORIZABLE_KEYS) in one
    train call per `steps_per_call` steps, writing member i's results to `member_dirs[i]`
    (`vmap`: see `_over_members`; default: on accelerators only); returns each member's last
    eval metrics (eval/*, val/*), like `train.train_and_evaluate` (a member stopped by a
    non-finite loss: its last eval before that, {} if none)."""
    member_configs = _check_members(config, members, member_dirs)
    vm = _Members(member_configs, jax.default_backend() != "cpu" if vmap is None else vmap)
    tc = vm.exp.config.train
    seeds = sorted(set(vm.seeds_M.tolist()))
    seed_index_M = np.array([seeds.index(s) for s in vm.seeds_M.tolist()], np.int32)
    pipelines = {s: data.build_pipeline(config.data, s) for s in seeds if s != tc.seed}
    pipelines[tc.seed] = vm.exp.pipeline   # `prepare` built the first member's
    pipelines = {s: pipelines[s] for s in seeds}
    logs = [_MemberLog(pathlib.Path(d), c) for d, c in zip(member_dirs, member_configs)]
    iterators = [pipelines[s].train_iterator(0, tc.batch_size) for s in seeds]

    def next_batches(step: int):
        """Each distinct seed's batches [S, K, ...] for the call after `step`."""
        num = train.call_length(step, vm.exp.config)
        return _stack([_stack([next(it) for _ in range(num)]) for it in iterators])

    state_M = vm.init()
    step, batches_S = 0, next_batches(0)
    with jax.set_mesh(vm.exp.mesh):
        while step < tc.num_steps:
            state_M, train_MK = vm.train_call(state_M, batches_S, seed_index_M, vm.seeds_M)
            first_step, step = step, step + jax.tree.leaves(batches_S)[0].shape[1]
            if step < tc.num_steps:   # read while the device trains
                batches_S = next_batches(step)
            records_M = _train_records(logs, jax.device_get(train_MK), first_step, tc)
            if step % tc.eval_every == 0 or step == tc.num_steps:
                metrics_M = _evaluate(vm, pipelines, seed_index_M, state_M, tc.eval_batch_size)
                for log, records, metrics in zip(logs, records_M, metrics_M):
                    if not log.stopped:
                        records[step] = {**records.get(step, {}), **metrics}
                        log.last_eval = metrics
            for log, records in zip(logs, records_M):
                log.write(records)
    return [log.last_eval for log in logs]


def _train_records(logs: list[_MemberLog], train_MK: dict, first_step: int, tc
                   ) -> list[dict[int, dict]]:
    """Each member's {step: train record} for the logged steps of the call after `first_step`;
    a member whose loss went non-finite (nan_policy) gets its bad step's record, then none."""
    records_M = []
    for m, log in enumerate(logs):
        metrics_K = {k: v[m] for k, v in train_MK.items()}
        stop = None if log.stopped else train.nonfinite_stop(metrics_K, first_step, tc)
        if stop is not None:
            bad_step = stop[0]
            records_M.append({bad_step: {f"train/{k}": v[bad_step - first_step - 1]
                                         for k, v in metrics_K.items()}})
            log.stopped = True
        else:
            records_M.append({} if log.stopped else
                             train.logged_records(metrics_K, first_step, tc.log_every))
    return records_M
