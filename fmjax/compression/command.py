"""`fmjax compress --workdir RUN --out OUT --method M`: a compressed copy of a trained run.

RUN is read through the one restore path (`runs.load`) and measured (eval metrics, weight bytes
in their stored dtypes and on disk), compressed, and written as an ordinary run workdir OUT
(config, data shapes, tokenizer, a step-0 checkpoint, and for pruning the fine-tune's checkpoints) that `fmjax eval`,
`sample`, `translate` and `init_from` accept. OUT is then loaded back and measured the same way,
the CPU latency of both runs' eval steps on the first eval batch timed in turn;
`OUT/compression.json` holds both sides.

OUT is built in a sibling directory `.OUT.partial-PID` and renamed into place at the end, so an
interrupted or failed compression leaves no OUT, and two processes writing the same OUT cannot
mix their files: the second rename fails with one line.
"""

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import pathlib
import shutil
import sys
from typing import Any

import jax

from fmjax import checkpoint, configs, runs, sharding, state as state_lib, train
from fmjax.compression import latency, pruning, quantization, weight_bytes
from fmjax.errors import Interrupted, Preempted, UserError
from fmjax.runtime import machine, workdir_files
from fmjax.step import make_eval_step

COMPRESSION_FILE = "compression.json"
METHODS = (*quantization.METHODS, "prune")
# A fine-tune's warm-up: at most this fraction of its steps (the run's own warm-up may be longer
# than the whole fine-tune).
FINETUNE_MAX_WARMUP_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class Options:
    """The command's flags: what to do to RUN (None: not given; `resolve` fills in defaults)."""
    method: str
    sparsity: float | None = None       # prune: the fraction of prunable weights set to zero
    granularity: str | None = None      # prune: one magnitude threshold for all, or per layer
    finetune_steps: int | None = None   # prune: steps of the ordinary loop with the masks fixed
    group_size: int | None = None       # int4: scale groups along the contraction axis
    calibration: str | None = None      # int*: qwix weight_calibration_method


# The flags each method takes (the others are refused, not silently ignored).
METHOD_FLAGS = {"prune": ("sparsity", "granularity", "finetune_steps"),
                "int4": ("group_size", "calibration"), "int8": ("calibration",),
                "int8_dynamic": ("calibration",)}
MAX_FINETUNE_STEPS = 2**31 - 1


def check_options(options: Options) -> None:
    """UserError for flags that make no sense, before anything is read."""
    o = options
    if o.method not in METHODS:
        raise UserError(f"unknown --method '{o.method}' (known: {', '.join(METHODS)})")
    for field in dataclasses.fields(o)[1:]:
        if getattr(o, field.name) is not None and field.name not in METHOD_FLAGS[o.method]:
            takes = " ".join(f"--{name}" for name in METHOD_FLAGS[o.method])
            raise UserError(f"--{field.name} does not apply to --method {o.method} (it takes "
                            f"{takes})")
    if o.method == "prune" and o.sparsity is None:
        raise UserError("--method prune needs --sparsity S, the fraction of weights to zero "
                        "(0 <= S < 1)")
    if o.sparsity is not None and not 0 <= o.sparsity < 1:
        raise UserError(f"--sparsity must be in [0, 1) (got {o.sparsity})")
    if o.granularity is not None and o.granularity not in pruning.GRANULARITIES:
        raise UserError(f"unknown --granularity '{o.granularity}' (known: "
                        f"{', '.join(pruning.GRANULARITIES)})")
    if o.finetune_steps is not None and not 0 <= o.finetune_steps <= MAX_FINETUNE_STEPS:
        raise UserError(f"--finetune_steps must be in [0, 2**31 - 1] (got {o.finetune_steps})")
    if o.group_size is not None and o.group_size < 1:
        raise UserError(f"--group_size must be at least 1 (got {o.group_size})")
    if o.calibration is not None:
        quantization.check_calibration(o.calibration, "--calibration")


def resolve(options: Options, config) -> tuple[Options, str | None]:
    """`options` with defaults for the flags not given: a run trained with quantization-aware
    training (QAT) is converted with its own group size and calibration, so exactly; and a note
    when the conversion asked for is not the one the run trained with."""
    q = config.quantization
    own = q if q.method == options.method else quantization.defaults()   # a QAT run's own
    filled = dataclasses.replace(
        options, granularity=options.granularity or "global",
        group_size=options.group_size or own["group_size"],
        calibration=options.calibration or own["calibration"])

    def settings(method, calibration, group_size):   # what decides the stored values
        return method, calibration, group_size if method == "int4" else None
    if (not q.method or options.method == "prune" or settings(
            filled.method, filled.calibration, filled.group_size)
            == settings(q.method, q.calibration, q.group_size)):
        return filled, None
    return filled, (f"the run was trained with quantization-aware {q.method} (calibration "
                    f"{q.calibration}, group size {q.group_size}); converting it to "
                    f"{filled.method} with calibration {filled.calibration}"
                    + (f", group size {filled.group_size}" if filled.method == "int4" else "")
                    + " is not exact")


def check_out(out, workdir=None) -> pathlib.Path:
    """OUT as a local path that does not exist yet, outside RUN (`workdir`): a directory in RUN
    would change the run (under RUN/checkpoints it would be taken for a damaged checkpoint)."""
    if workdir_files.is_url(out) or "://" in str(out):
        raise UserError(f"--out {out}: compress writes to a local directory")
    path = pathlib.Path(out).absolute()
    if workdir is not None and not workdir_files.is_url(workdir) and str(workdir).strip():
        run_dir = pathlib.Path(workdir).resolve()
        if path.resolve() == run_dir or run_dir in path.resolve().parents:
            raise UserError(f"--out {out} is inside --workdir {workdir}; compress leaves the run "
                            "it reads as it is (give a path outside it)")
    if path.exists() or path.is_symlink():   # a dangling link too: the rename would fail last
        raise UserError(f"--out {out} already exists; compress writes a new run directory "
                        "(give another path, or remove it)")
    if not path.parent.is_dir():
        raise UserError(f"--out {out}: its parent directory {path.parent} does not exist")
    return path


def out_config(config, options: Options):
    """RUN's config with the compression laid over it: the config OUT is evaluated (and, for
    pruning, fine-tuned) with."""
    c = configs.from_json_dict(json.loads(configs.to_json(config)))
    c.init_from = ""   # OUT has a checkpoint of its own
    if options.method == "prune":
        steps = options.finetune_steps or 0
        c.pruning.update(sparsity=options.sparsity, initial_sparsity=options.sparsity,
                         begin_step=0, end_step=0, granularity=options.granularity)
        c.train.num_steps = max(steps, 1)   # 0: a step-0 checkpoint only, never trained
        c.optimizer.warmup_steps = min(c.optimizer.warmup_steps,
                                       int(steps * FINETUNE_MAX_WARMUP_FRACTION))
        c.train.early_stopping.metric = ""   # the fine-tune runs its steps
        c.checkpoint.best_metric = ""
    else:
        c.quantization.update(method=options.method, group_size=options.group_size,
                              calibration=options.calibration, converted=True)
        c.pruning.update(pruning.defaults())   # a pruned RUN's zeros stay zeros when quantized
    return c


def check_source(workdir, config, options: Options) -> None:
    """UserError for a RUN this method cannot compress."""
    if config.quantization.converted:
        raise UserError(f"{workdir} holds a run that fmjax compress already quantized; "
                        "compress its float source instead")
    if config.task in ("gan", "vae"):
        raise UserError(f"{workdir} holds a '{config.task}' run: compress handles classifiers, "
                        "language and translation models (a generator's eval measures samples, "
                        "not the quality a compressed model must keep)")
    if options.method != "prune":
        quantization.check_supported(out_config(config, options))


@dataclasses.dataclass
class Measured:
    metrics: dict
    bytes: int              # the parameters' arrays in their stored dtypes
    checkpoint_bytes: int   # as Orbax writes them (zstd-compressed: pruned zeros shrink)
    timed: tuple   # (eval_step, state, first eval batch): timed with the other run's
    mesh: Any


def measure(run: runs.Run) -> Measured:
    """The run's full eval metrics and its parameters' bytes; what its latency is timed on."""
    exp = run.exp
    eval_step = make_eval_step(run.task, exp.mesh, exp.state_shardings)
    batch = next(iter(exp.pipeline.eval_batches(exp.config.train.eval_batch_size, "eval")))
    batch.pop("mask")
    with jax.set_mesh(exp.mesh):
        metrics = train.evaluate(exp, run.state, eval_step)
        timed = (eval_step, run.state, sharding.global_batch(batch, exp.mesh))
    return Measured(metrics, weight_bytes.array_bytes(run.params),
                    weight_bytes.checkpoint_bytes(run.params), timed, exp.mesh)


def latencies(before: Measured, after: Measured) -> tuple[dict, dict]:
    """Both runs' eval-step latencies, timed in turn (`latency.median_latencies`)."""
    with jax.set_mesh(after.mesh):
        return tuple(latency.median_latencies([before.timed, after.timed]))


def write_run(directory: pathlib.Path, exp: train.Experiment, run: runs.Run, params) -> None:
    """An ordinary run workdir of experiment `exp` (OUT's) holding `params` as its step-0
    checkpoint (with the optimizer state its optimizer starts from, and RUN's other
    collections)."""
    config = exp.config
    assets = {"config.json": configs.to_json(config).encode(), **run.exp.pipeline.assets(),
              **train.data_info_asset(run.exp.pipeline.info)}
    for name, content in assets.items():
        workdir_files.write_atomic(directory / name, content)
    step0 = state_lib.TrainState(step=jax.numpy.zeros((), "int32"), params=params,
                                 opt_state=exp.tx.init(params), extra=run.extra,
                                 skipped_steps=jax.numpy.zeros((), "int32"))
    with jax.set_mesh(exp.mesh):
        step0 = jax.device_put(step0, exp.state_shardings)
        manager = checkpoint.open_manager(directory, config.checkpoint)
        checkpoint.save(manager, 0, step0, json.loads(configs.to_json(config)), None)
        checkpoint.close(manager)


def compressed_params(run: runs.Run, exp: train.Experiment):
    """RUN's parameters compressed as OUT's experiment `exp` says."""
    if exp.config.quantization.converted:
        return quantization.convert(exp.task, run.params)
    p = exp.config.pruning
    return pruning.prune(run.params, p.sparsity, p.granularity, tuple(p.exclude))


def finetune(config, directory: pathlib.Path) -> None:
    """The ordinary loop from OUT's step-0 checkpoint; a stop signal ends it without the loop's
    'run the same command again' (a partial OUT is removed, not resumed). Its progress lines go
    to stderr: stdout is the command's one JSON line."""
    try:
        with contextlib.redirect_stdout(sys.stderr):
            train.train_and_evaluate(config, directory, show_progress=False)
    except Preempted as e:
        raise Interrupted(e.exit_status - 128) from e


def _method_options(options: Options) -> dict:
    """The flags that apply to the method (with their defaults filled in)."""
    return {name: getattr(options, name) or 0 if name == "finetune_steps"
            else getattr(options, name) for name in METHOD_FLAGS[options.method]}


def _record(options: Options, run: runs.Run, before: Measured, after: Measured,
            after_run: runs.Run, note: str | None) -> dict[str, Any]:
    record = {
        "method": options.method,
        "options": _method_options(options),
        "source": {"workdir": str(run.workdir), "step": run.step},
        "bytes_before": before.bytes, "bytes_after": after.bytes,
        "checkpoint_bytes_before": before.checkpoint_bytes,
        "checkpoint_bytes_after": after.checkpoint_bytes,
        "metrics_before": before.metrics, "metrics_after": after.metrics,
        "versions": {p: importlib.metadata.version(p)
                     for p in ("jax", "flax", "qwix", "orbax-checkpoint")},
        "cpu": {"name": machine.cpu_name(), "flags": machine.cpu_flags(),
                "count": os.cpu_count()},
    }
    if options.method == "prune":
        record["out_step"] = after_run.step
        record["sparsity"] = pruning.sparsity_report(after_run.params, tuple(
            after_run.config.pruning.exclude))
    if note:
        record["note"] = note
    return record


def compress(workdir, out, options: Options, step: int | None = None) -> dict[str, Any]:
    """Compress run `workdir` (checkpoint `step`, default the newest intact) into the new run
    directory `out`; returns what `out/compression.json` holds."""
    check_options(options)
    if jax.process_count() > 1:   # OUT is renamed into place by one process
        raise UserError("fmjax compress runs in one process (a host with many devices is fine); "
                        "start it without launch_local or FMJAX_* process variables")
    out = check_out(out, workdir)
    checkpoint.check_workdir(workdir)
    source_config = runs.read_config(workdir_files.as_path(workdir))
    options, note = resolve(options, source_config)
    check_source(workdir, source_config, options)
    if note:
        print(f"fmjax: note: {note}", file=sys.stderr)
    run = runs.load(workdir, step, with_data=True)
    config = out_config(run.config, options)
    finetunes = options.method == "prune" and bool(options.finetune_steps)
    out_exp = train.prepare(config, data_info=run.exp.pipeline.info, training=finetunes)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:   # before the measuring: an OUT that cannot be written stops the command at once
        partial.mkdir()
    except OSError as e:
        raise UserError(f"--out {out}: cannot create a directory in {out.parent} "
                        f"({e.strerror})") from e
    try:
        before = measure(run)
        write_run(partial, out_exp, run, compressed_params(run, out_exp))
        if finetunes:
            finetune(config, partial)
        after_run = runs.load(partial, with_data=True)   # OUT as everyone will read it
        after = measure(after_run)
        record = _record(options, run, before, after, after_run, note)
        record["latency_before"], record["latency_after"] = latencies(before, after)
        workdir_files.write_atomic(partial / COMPRESSION_FILE,
                                   json.dumps(record, indent=2, sort_keys=True).encode())
        try:
            os.rename(partial, out)   # fails if another process made `out` meanwhile
        except OSError as e:
            raise UserError(f"--out {out} was created by another process while compressing; "
                            "nothing written") from e
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return record


def summary(record: dict) -> dict:
    """The one JSON line `fmjax compress` prints: sizes, the first metric, latencies."""
    line = {"method": record["method"],
            "bytes_before": record["bytes_before"], "bytes_after": record["bytes_after"],
            "bytes_ratio": round(record["bytes_before"] / max(1, record["bytes_after"]), 3),
            "checkpoint_bytes_ratio": round(record["checkpoint_bytes_before"]
                                            / max(1, record["checkpoint_bytes_after"]), 3),
            "latency_ms_before": record["latency_before"]["median_ms"],
            "latency_ms_after": record["latency_after"]["median_ms"]}
    for name in sorted(record["metrics_after"]):
        line[f"{name} before"] = record["metrics_before"].get(name)
        line[f"{name} after"] = record["metrics_after"][name]
    if "sparsity" in record:
        line["sparsity"] = round(record["sparsity"]["total"], 4)
    return line
