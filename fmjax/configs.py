"""The base experiment config and its validation.

Every file under `experiments/` starts from `base_config()` and fills in `model` and `data`.
The base config is locked: a typo such as `config.train.num_step = 10` fails at load time, and
ml-collections rejects unknown `--config.x=y` overrides and values of the wrong type. `validate`
checks what locking cannot: names that must exist in a registry, keys a model or dataset does
not accept, every number against its declared range (fmjax/ranges.py), numbers that must divide
each other, and metric names the task must report.

Model selection (the best checkpoint, early stopping, a sweep's objective) reads only metrics of a
validation split (`selection_metrics`): `val/*` when `data.validation_fraction` > 0, and `eval/*`
only when the data source declares its eval split a validation split. Selecting on a test split
is an error, not a silent leak.
"""

import dataclasses
import difflib
import functools
import importlib.machinery
import importlib.util
import json
import pathlib
import traceback
from typing import Sequence

import ml_collections

from fmjax import experiment_files, ranges, variants
from fmjax.errors import UserError, first_line
from fmjax.ranges import MeshSize, NonNegativeFloat, NonNegativeInt, PositiveInt, Seed


def base_config() -> ml_collections.ConfigDict:
    """Every key an experiment may set, with its default. `model` and `data` are per-experiment."""
    from fmjax import optim  # late: imports jax
    from fmjax.compression import pruning, quantization
    c = ml_collections.ConfigDict()
    c.task = "classification"
    # Fine-tuning: a workdir whose checkpoint initialises every parameter this model shares with
    # it (same path, same shape), when this run's workdir has no checkpoint of its own.
    c.init_from = ""
    c.init_from_step = 0         # its checkpoint to use (0 = the latest)
    # Regexes (re.search) over parameter paths, like optimizer.freeze, that keep their fresh init
    # even where init_from has them, in another shape too: ("^head/",) for a new classifier head.
    c.init_from_reinit = ()
    c.task_options = ml_collections.ConfigDict()   # the task's own keys (filled by `experiment`)
    c.model = ml_collections.ConfigDict({"name": "", "dtype": "float32"})
    c.data = ml_collections.ConfigDict({"name": ""})

    c.train = ml_collections.ConfigDict(dict(
        num_steps=1000,
        batch_size=128,          # global, over all hosts and devices
        seed=0,
        log_every=100,
        eval_every=500,
        eval_batch_size=1000,    # global; the eval set is padded to a multiple of it
        steps_per_call=1,        # optimizer steps fused into one device call (lax.scan)
        grad_accum_steps=1,      # micro-batches per step (lax.scan); batch_size must divide
        clip_grad_norm=0.0,      # 0 disables global-norm clipping
        z_loss=0.0,              # language models: weight of mean(logsumexp(logits)^2)
        peak_tflops_per_device=0.0,   # MFU denominator; 0 = look up the device kind
        nan_policy="stop",       # "stop": abort on a non-finite loss; "skip": drop that update
        max_nan_skips=10,        # "skip": stop anyway once more steps than this were skipped
        # (START, STOP): a jax.profiler trace of the device calls from step START to STOP in
        # WORKDIR/profile/ (fmjax/runtime/profiler.py); () = off.
        profile_steps=(),
        # Stop once `metric` (a selection metric, e.g. "val/loss"; "" = off) has not improved
        # by more than min_delta for `patience` evals in a row (fmjax/early_stopping.py).
        early_stopping=ml_collections.ConfigDict(dict(
            metric="", mode="auto", patience=5, min_delta=0.0)),
    ))
    c.optimizer = ml_collections.ConfigDict(optim.defaults())   # keys: optim.OptimizerOptions
    # Magnitude pruning, gradual (Zhu & Gupta 2017) or one-shot: fmjax/compression/pruning.py
    c.pruning = ml_collections.ConfigDict(pruning.defaults())   # keys: pruning.PruningOptions
    # Qwix quantization (fmjax/compression/quantization.py): QAT with a method, stored
    # low-precision weights with converted=True (written by `fmjax compress`).
    c.quantization = ml_collections.ConfigDict(quantization.defaults())
    c.checkpoint = ml_collections.ConfigDict(dict(
        every=1000,
        keep=3,                  # the last N checkpoints ...
        best_metric="",          # ... plus the best by this selection metric ("" = none)
        best_mode="auto",        # "max", "min", or "auto": the metric's direction (Task.MAXIMISED)
        async_save=True,
    ))
    # Experiment tracking beside metrics.jsonl and TensorBoard: a Weights & Biases project turns
    # on W&B logging (`pip install 'fmjax[wandb]'`; fmjax/metrics/wandb_sink.py).
    c.logging = ml_collections.ConfigDict(dict(
        wandb_project="", wandb_entity="", wandb_run_name="", wandb_tags=()))
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    # (logical name, mesh axes) pairs ahead of fmjax.sharding.RULES, e.g.
    # (("activation_embed", "tensor"),) also splits the residual stream over the tensor axis.
    c.sharding = ml_collections.ConfigDict(dict(rules=()))
    c.lock()
    return c


# The valid range of every numeric key above but the optimizer's; the optimizer, models,
# datasets and task options declare theirs as field types (fmjax/ranges.py).
BASE_RANGES = {
    "init_from_step": NonNegativeInt,
    "train.num_steps": PositiveInt,
    "train.batch_size": PositiveInt,
    "train.seed": Seed,
    "train.log_every": PositiveInt,
    "train.eval_every": PositiveInt,
    "train.eval_batch_size": PositiveInt,
    "train.steps_per_call": PositiveInt,
    "train.grad_accum_steps": PositiveInt,
    "train.clip_grad_norm": NonNegativeFloat,
    "train.z_loss": NonNegativeFloat,
    "train.peak_tflops_per_device": NonNegativeFloat,
    "train.max_nan_skips": NonNegativeInt,
    "train.profile_steps": Sequence[NonNegativeInt],
    "train.early_stopping.patience": PositiveInt,
    "train.early_stopping.min_delta": NonNegativeFloat,
    "checkpoint.every": PositiveInt,
    "checkpoint.keep": PositiveInt,
    "mesh.data": MeshSize,
    "mesh.fsdp": MeshSize,
    "mesh.tensor": MeshSize,
    "quantization.group_size": PositiveInt,
}

# Keys that name the metric model selection reads: each must be a selection metric.
METRIC_KEYS = ("checkpoint.best_metric", "train.early_stopping.metric")
# ... and the direction each is read in, paired with it.
MODE_KEYS = ("checkpoint.best_mode", "train.early_stopping.mode")


def experiment(**sections) -> ml_collections.ConfigDict:
    """`base_config()` with `sections` applied, e.g. `experiment(model=dict(name='mlp'), ...)`.

    `model` and `data` get every field of the named model/dataset class with its default, so
    each can be overridden from the command line (`validate` rejects names the class lacks);
    every other section updates the locked base, so a misspelt key fails here.
    """
    from fmjax import data, models, tasks  # late: registries import jax/flax

    c = base_config()
    registries = {"model": models.MODELS, "data": data.SOURCES}
    task_class = tasks.TASKS.get(sections.get("task", c.task))
    c.task_options = with_fields(c.task_options, **_field_defaults(
        task_class and task_class.Options))
    for section, values in sections.items():
        if section == "task_options":
            c.task_options.update(values)
            continue
        if section in registries:   # defaults first: a value keeps its field's type (0 -> 0.0)
            cls = registries[section].get(values.get("name"))
            c[section] = with_fields(c[section], **_field_defaults(cls))
            c[section].update(values)
        elif isinstance(values, dict):
            _update_locked(c[section], values, section)
        else:
            c[section] = values
    return c


def _update_locked(section: ml_collections.ConfigDict, values: dict, prefix: str) -> None:
    """Set `values` in locked `section`, nested dicts into nested sections; UserError for a
    key the base config lacks."""
    for key, value in values.items():
        if key not in section:
            raise UserError(f"unknown config key {prefix}.{key}")
        if isinstance(section[key], ml_collections.ConfigDict) and isinstance(value, dict):
            _update_locked(section[key], value, f"{prefix}.{key}")
        else:
            section[key] = value


def load_experiment(spec: str) -> ml_collections.ConfigDict:
    """The locked config of experiment `FILE[:variant]`: `get_config` with the flags of `variant`
    turned on (fmjax/variants.py), shrunk for `runlocal`. FILE is a path or the name of a shipped
    experiment (`mnist1d/cnn.py`: fmjax/experiment_files.py). Each way the file can be wrong
    (missing, failing to load, no get_config, an unknown variant, get_config raising or returning
    something that is not a config built with `experiment`) is a UserError naming the file."""
    name, _, variant = spec.partition(":")
    path = experiment_files.find(name)
    module = _load_module(path)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise UserError(f"{path} has no get_config function")
    flags = variants.parse(variant, variants.declared(get_config), path)
    kwargs = variants.arguments(flags, get_config)
    call = f"get_config({', '.join(f'{flag}=True' for flag in kwargs)})"
    try:
        config = get_config(**kwargs)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path}{_line_in(path, e)}: {call} raised {type(e).__name__}: "
                        f"{first_line(e)}") from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(f"{path}: {call} returned {type(config).__name__}, not an ml_collections "
                        "ConfigDict (build it with fmjax.configs.experiment)")
    missing = sorted(dotted_keys(base_config()) - dotted_keys(config))
    if missing:
        raise UserError(f"{path}: {call} returned a config without config.{missing[0]} (build it "
                        "with fmjax.configs.experiment)")
    if variants.RUNLOCAL in flags:
        variants.shrink_for_local_run(config, getattr(module, "RUNLOCAL", None))
    config.lock()
    return config


def _load_module(path: str):
    """Python file `path` (any name: the loader does not ask for `.py`) as a module; UserError
    naming the file and line if its code fails."""
    name = pathlib.Path(path).stem
    loader = importlib.machinery.SourceFileLoader(name, path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    try:
        loader.exec_module(module)
    except SyntaxError as e:
        where = f", line {e.lineno}" if e.lineno else ""
        raise UserError(f"{path}{where}: syntax error: {e.msg}") from e
    except UserError:
        raise
    except Exception as e:  # anything the file's own code raises while it is loaded
        raise UserError(f"{path}{_line_in(path, e)}: {type(e).__name__}: {first_line(e)}") from e
    return module


def _line_in(path: str, error: BaseException) -> str:
    """', line N': where in file `path` `error` was raised (its innermost frame there), or ''."""
    target = pathlib.Path(path).resolve()
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
             if pathlib.Path(frame.filename).resolve() == target]
    return f", line {lines[-1]}" if lines else ""


def dotted_keys(config: ml_collections.ConfigDict, prefix: str = "") -> set[str]:
    """Every dotted key of `config`, sections included ("train", "train.seed", ...)."""
    keys = set()
    for name, value in config.items():
        keys.add(prefix + name)
        if isinstance(value, ml_collections.ConfigDict):
            keys |= dotted_keys(value, f"{prefix}{name}.")
    return keys


def from_json_dict(d: dict) -> ml_collections.ConfigDict:
    """Rebuild a locked config from `config.json` (JSON turned tuples into lists)."""
    def tuples(x):
        if isinstance(x, list):
            return tuple(tuples(v) for v in x)
        return {k: tuples(v) for k, v in x.items()} if isinstance(x, dict) else x
    return experiment(**tuples(d))


def _field_defaults(cls) -> dict:
    """Fields of a model/dataset dataclass that have defaults (not `dtype`: configs use names)."""
    if cls is None:
        return {}
    def default(f):
        return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return {f.name: default(f) for f in dataclasses.fields(cls)
            if default(f) is not dataclasses.MISSING and f.name not in ("parent", "name", "dtype")}


def with_fields(section: ml_collections.ConfigDict, **fields) -> ml_collections.ConfigDict:
    """Return an unlocked copy of `section` with `fields` added; for `model` and `data`."""
    out = ml_collections.ConfigDict(section.to_dict())
    out.update(fields)
    return out


def _check_divisibility(config):
    if config.train.batch_size % config.train.grad_accum_steps:
        raise UserError(f"config.train.batch_size={config.train.batch_size} is not divisible by "
                        f"config.train.grad_accum_steps={config.train.grad_accum_steps}")


def check_fields(section_name: str, section, cls, owner: str | None = None) -> None:
    """Every key of `config.<section_name>` except `name` must be a field of dataclass `cls`."""
    allowed = {f.name for f in dataclasses.fields(cls)} - {"parent"} | {"name"}
    unknown = sorted(set(section.keys()) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed - {"name"})) or "none"
        owner = owner or f"{section_name} '{section.name}'"
        raise UserError(f"unknown key config.{section_name}.{unknown[0]} for {owner} "
                        f"(known: {known})")


def lookup(kind: str, name: str, registry: dict):
    """registry[name], or a UserError listing the known names."""
    if not name:
        raise UserError(f"the config names no {kind} (known: {', '.join(sorted(registry))})")
    if name not in registry:
        raise UserError(f"unknown {kind} '{name}' (known: {', '.join(sorted(registry))})")
    return registry[name]


def value_at(config: ml_collections.ConfigDict, key: str):
    """The value of dotted `key` ("train.seed") in `config`."""
    return functools.reduce(lambda section, name: section[name], key.split("."), config)


def selection_metrics(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The metric names model selection may read: `val/<m>` when `data.validation_fraction` > 0,
    and `eval/<m>` when the data source declares its eval split a validation split."""
    from fmjax import tasks
    from fmjax.data import validation   # late: imports the data registry
    names = lookup("task", config.task, tasks.TASKS).EVAL_METRICS
    splits = (["val"] if config.data.get("validation_fraction", 0) > 0 else []) + (
        ["eval"] if validation.eval_is_validation(config.data) else [])
    return tuple(f"{split}/{name}" for split in splits for name in names)


def check_selection_metric(config: ml_collections.ConfigDict, what: str, name: str) -> None:
    """UserError (one line: why, and what to use instead) unless model selection may read
    metric `name`; `what` says who asked, e.g. "config.checkpoint.best_metric"."""
    allowed = selection_metrics(config)
    if name in allowed:
        return
    from fmjax import tasks
    names = lookup("task", config.task, tasks.TASKS).EVAL_METRICS
    split, _, metric = name.partition("/")
    source = f"data '{config.data.name}'"
    has_val = "validation_fraction" in config.data
    closest = (difflib.get_close_matches(metric, names, 1) or names)[0]
    instead = (f"use one of: {', '.join(allowed)}" if allowed else
               f"set config.data.validation_fraction (e.g. 0.1) and use 'val/{closest}'"
               if has_val else f"{source} has no validation split to select on")
    if split == "eval" and metric in names:
        why = f"reads the eval split of {source}, a test split: model selection must not"
    elif split == "val" and metric in names:
        why = (f"needs config.data.validation_fraction > 0 ({source} holds out no validation "
               "split by default)" if has_val else
               f"is not reported: {source} has no validation_fraction; its eval split is its "
               "validation split (its size: config.data.val_fraction), logged as eval/*"
               if "val_fraction" in config.data else f"is not reported by {source}")
    else:
        why = f"is not a metric of task '{config.task}' (it reports: {', '.join(names)})"
    raise UserError(f"{what}={name!r} {why}; {instead}")


def check_metric_names(config: ml_collections.ConfigDict) -> None:
    """Each key of METRIC_KEYS names a selection metric (or is "": unused), so a typo or a test
    split stops the run here, not at its first checkpoint."""
    for key in METRIC_KEYS:
        name = value_at(config, key)
        if name:
            check_selection_metric(config, f"config.{key}", name)


def metric_direction(task_class, name: str) -> str:
    """"max" if higher `name` ("val/r2") is better for the task, else "min" (losses, errors)."""
    return "max" if name.partition("/")[2] in task_class.MAXIMISED else "min"


def check_modes(config: ml_collections.ConfigDict, task_class) -> None:
    """Each mode of MODE_KEYS is its metric's direction: "auto" becomes it (so config.json,
    the checkpoint policy and early stopping read "max" or "min"), and the opposite stops here,
    since it would keep the worst checkpoint (best_mode="max" on val/loss was the default once)."""
    for metric_key, mode_key in zip(METRIC_KEYS, MODE_KEYS):
        name, mode = value_at(config, metric_key), value_at(config, mode_key)
        if not name:
            continue
        direction = metric_direction(task_class, name)
        if mode == "auto":
            section, _, key = mode_key.rpartition(".")
            value_at(config, section)[key] = direction
        elif mode != direction:
            better = "higher" if direction == "max" else "lower"
            raise UserError(f"config.{mode_key}={mode!r} would select the worst {name}: "
                            f"{better} is better; set '{direction}' or leave it 'auto'")


def validate(config: ml_collections.ConfigDict, selection: bool = True) -> None:
    """Raise UserError for any problem that can be seen without devices or data. `selection`
    False skips the model-selection metrics (`fmjax eval` of a run trained before that rule)."""
    from fmjax import data, models, optim, tasks  # late: registries import jax/flax
    from fmjax.compression import pruning, quantization
    from fmjax.tree_paths import check_patterns

    for key, hint in BASE_RANGES.items():   # first: the checks below divide by these
        ranges.check(key, value_at(config, key), hint)
    check_patterns("init_from_reinit", config.init_from_reinit)
    optim.validate(config.optimizer)
    pruning.validate(config.pruning, config.train.num_steps)
    _check_divisibility(config)
    task_class = lookup("task", config.task, tasks.TASKS)
    for section, cls, owner in (
            ("task_options", task_class.Options, f"task '{config.task}'"),
            ("model", lookup("model", config.model.name, models.MODELS), None),
            ("data", lookup("dataset", config.data.name, data.SOURCES), None)):
        if section == "data" and "validation_fraction" in config.data and not any(
                f.name == "validation_fraction" for f in dataclasses.fields(cls)):
            from fmjax.data.validation import NO_VALIDATION_FRACTION
            raise UserError(f"{NO_VALIDATION_FRACTION} (data '{config.data.name}')")
        check_fields(section, config[section], cls, owner)
        ranges.check_dataclass(config[section], cls, section)
    quantization.validate(config)
    if selection:
        check_metric_names(config)
    if (config.optimizer.schedule in ("warmup_cosine", "warmup_linear")
            and config.optimizer.warmup_steps >= config.train.num_steps):
        raise UserError(f"config.optimizer.warmup_steps={config.optimizer.warmup_steps} leaves no "
                        f"steps to decay over in config.train.num_steps={config.train.num_steps}")
    if config.train.nan_policy not in ("stop", "skip"):
        raise UserError(f"unknown config.train.nan_policy '{config.train.nan_policy}' "
                        "(known: stop, skip)")
    for key in MODE_KEYS:
        if value_at(config, key) not in ("auto", "max", "min"):
            raise UserError(f"config.{key} must be 'auto', 'max' or 'min' "
                            f"(got {value_at(config, key)!r})")
    if selection:
        check_modes(config, task_class)
    _check_profile_steps(config.train.profile_steps)


def _check_profile_steps(steps) -> None:
    """`()` (off) or a window (START, STOP) with START < STOP (each element's range is checked
    with BASE_RANGES)."""
    if steps and (len(steps) != 2 or steps[0] >= steps[1]):
        raise UserError(f"config.train.profile_steps={tuple(steps)!r} is not a window: give "
                        "(START, STOP) with START < STOP, e.g. (100, 110), or () for no profile")


def to_json(config: ml_collections.ConfigDict) -> str:
    """The resolved config as stable JSON (written to `workdir/config.json`)."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)
