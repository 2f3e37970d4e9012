"""The sweep file: `get_sweep()` in the shape of a Weights & Biases sweep, checked in full against
the experiment's config before anything is written.

    def get_sweep():
        return ml_collections.ConfigDict(dict(
            method="bayes",                       # grid | random | bayes (Optuna's TPE)
            metric=dict(name="val/accuracy", goal="maximize"),
            num_trials=24,                        # random, bayes; a grid runs its product once
            parameters={
                "optimizer.learning_rate": dict(distribution="log_uniform", min=1e-4, max=1e-1),
                "model.hidden_size": dict(values=[64, 100, 256]),
                "data.validation_fraction": dict(value=0.1),   # a constant for every trial
            },
            early_terminate=dict(type="hyperband", min_iter=1, eta=3),   # optional
            seed=0,                               # the sampler's seed (optional)
        ), allow_dotted_keys=True)                # parameters are dotted config keys

Parameters are dotted config keys. `log_uniform` takes the values themselves as min and max (W&B's
`log_uniform_values`, not the exponents of `log_uniform`); `int_uniform` draws integers in
[min, max]; `uniform` floats in [min, max]. `early_terminate.min_iter` counts evals.
"""

import dataclasses
import math
import numbers

import ml_collections

from fmjax import configs, experiment_files
from fmjax.errors import UserError, first_line

METHODS = ("grid", "random", "bayes")
GOALS = {"maximize": "max", "minimize": "min"}      # -> checkpoint.best_mode
DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform")
PRUNERS = ("median", "hyperband")
MAX_GRID = 100_000   # combinations
TOP_KEYS = ("method", "metric", "num_trials", "parameters", "early_terminate", "seed")


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched config key: a choice among `values`, or a `distribution` over [low, high]."""
    key: str
    values: tuple = ()
    distribution: str = ""
    low: float = 0.0
    high: float = 0.0


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A checked sweep: what to search, how, and for how many trials."""
    method: str
    metric: str
    goal: str                            # maximize | minimize
    num_trials: int                      # the budget (a grid: its number of combinations)
    params: tuple[Param, ...]
    constants: dict                      # config key -> value, set in every trial
    early_terminate: dict                # {} or {type, min_iter, eta}
    seed: int

    @property
    def mode(self) -> str:
        return GOALS[self.goal]

    def to_json(self) -> dict:
        """The resolved spec as JSON data (`DIR/sweep.json`: a re-run must match it)."""
        return json_ready(dataclasses.asdict(self))


def shown(params: dict) -> str:
    """`key=value, ...` for a console line, floats to 4 significant digits."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def json_ready(x):
    """Tuples as lists, as they come back from JSON, so a stored spec compares equal."""
    if isinstance(x, (tuple, list)):
        return [json_ready(v) for v in x]
    return {k: json_ready(v) for k, v in x.items()} if isinstance(x, dict) else x


def load(path: str, config: ml_collections.ConfigDict) -> SweepSpec:
    """The sweep of file `path`, checked against `config` (the experiment with the command's
    overrides); UserError naming the file for anything wrong."""
    path = experiment_files.find(path)   # a shipped sweep by name, like an experiment
    module = configs._load_module(path)
    get_sweep = getattr(module, "get_sweep", None)
    if not callable(get_sweep):
        raise UserError(f"{path} has no get_sweep function")
    try:
        raw = get_sweep()
    except UserError:
        raise
    except Exception as e:
        hint = (" (parameters are dotted config keys: build the ConfigDict with "
                "allow_dotted_keys=True)" if "dots in field names" in str(e) else "")
        raise UserError(f"{path}{configs._line_in(path, e)}: get_sweep() raised "
                        f"{type(e).__name__}: {first_line(e)}{hint}") from e
    if isinstance(raw, ml_collections.ConfigDict):
        raw = raw.to_dict()
    if not isinstance(raw, dict):
        raise UserError(f"{path}: get_sweep() returned {type(raw).__name__}, not an "
                        "ml_collections ConfigDict")
    try:
        return _parse(raw, config)
    except UserError as e:
        raise UserError(f"{path}: {e}") from e


def _parse(raw: dict, config) -> SweepSpec:
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise UserError(f"unknown key '{unknown[0]}' (known: {', '.join(TOP_KEYS)})")
    method = raw.get("method")
    if method not in METHODS:
        raise UserError(f"method={method!r}: must be one of {', '.join(METHODS)}")
    metric = raw.get("metric") or {}
    if not isinstance(metric, dict):
        raise UserError(f"metric={metric!r}: must be dict(name=..., goal=maximize|minimize)")
    name, goal = metric.get("name", ""), metric.get("goal", "")
    if goal not in GOALS:
        raise UserError(f"metric.goal={goal!r}: must be maximize or minimize")
    if not isinstance(raw.get("parameters"), dict) or not raw["parameters"]:
        raise UserError("parameters is empty: give at least one config key to search")
    constants, params = {}, []
    for key, entry in raw["parameters"].items():
        if isinstance(entry, dict) and set(entry) == {"value"}:
            constants[key] = entry["value"]
        else:
            params.append(_param(key, entry))
    config = _with_values(config, constants, "parameters")   # the trials' common config
    trial_configs = [(f"parameters['{param.key}']={value!r}",
                      _with_values(config, {param.key: value}, f"parameters['{param.key}']"))
                     for param in params for value in param.values or (param.low, param.high)]
    _check_metric(config, name)
    _check_goal(config, name, goal)
    for where, trial_config in trial_configs:   # a value may take the objective away
        try:                                     # (data.validation_fraction=0)
            _check_metric(trial_config, name)
        except UserError as e:
            raise UserError(f"{where}: {e}") from e
    num_trials = _budget(method, raw.get("num_trials"), params)
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed={seed!r}: must be a non-negative integer")
    early_terminate = _early_terminate(raw.get("early_terminate"))
    _check_can_prune(early_terminate, config, {p.key for p in params})
    return SweepSpec(method, name, goal, num_trials, tuple(params), constants, early_terminate,
                     seed)


def _check_can_prune(early_terminate: dict, config, searched: set[str]) -> None:
    """A pruner that waits `min_iter` evals past the last step could never stop a trial."""
    if not early_terminate or searched & {"train.eval_every", "train.num_steps"}:
        return
    first = early_terminate["min_iter"] * config.train.eval_every
    if first >= config.train.num_steps:
        raise UserError(f"early_terminate.min_iter={early_terminate['min_iter']} evals of "
                        f"train.eval_every={config.train.eval_every} steps reach "
                        f"train.num_steps={config.train.num_steps}: no trial could be pruned; "
                        "lower min_iter or eval_every, or leave early_terminate out")


def _param(key: str, entry) -> Param:
    where = f"parameters['{key}']"
    if not isinstance(entry, dict):
        raise UserError(f"{where} must be dict(values=[...]), dict(value=x) or "
                        "dict(distribution=..., min=..., max=...)")
    if "values" in entry:
        if set(entry) != {"values"}:
            raise UserError(f"{where}: values= takes no other keys")
        values = entry["values"]
        if not isinstance(values, (list, tuple)) or not values:
            raise UserError(f"{where}: values is empty: list at least one value")
        if len(set(map(repr, values))) != len(values):
            raise UserError(f"{where}: values lists a value twice")
        return Param(key, values=tuple(values))
    if set(entry) != {"distribution", "min", "max"}:
        raise UserError(f"{where} must be dict(values=[...]), dict(value=x) or "
                        "dict(distribution=..., min=..., max=...)")
    kind, low, high = entry["distribution"], entry["min"], entry["max"]
    if kind not in DISTRIBUTIONS:
        raise UserError(f"{where}: distribution={kind!r}: must be one of "
                        f"{', '.join(DISTRIBUTIONS)}")
    integer = kind == "int_uniform"
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, numbers.Integral if integer
                                                     else numbers.Real):
            raise UserError(f"{where}: min and max must be {'integers' if integer else 'numbers'}"
                            f" (got {bound!r})")
    if not low < high:
        raise UserError(f"{where}: min={low!r} must be below max={high!r}")
    if kind == "log_uniform" and low <= 0:
        raise UserError(f"{where}: log_uniform needs min > 0 (min and max are the values, not "
                        f"their logs; got min={low!r})")
    return Param(key, distribution=kind, low=low, high=high)


def _with_values(config, values: dict, where: str):
    """A copy of `config` with `values` set; UserError if a key is unknown or a value does not
    fit its key's type or declared range (`configs.validate`)."""
    config = config.copy_and_resolve_references()
    for key, value in values.items():
        if key not in configs.dotted_keys(config) or isinstance(configs.value_at(config, key),
                                                                ml_collections.ConfigDict):
            raise UserError(f"{where}: unknown config key '{key}': the experiment's config has "
                            "no such key")
        *sections, name = key.split(".")
        section = configs.value_at(config, ".".join(sections)) if sections else config
        try:
            section[name] = value
        except (TypeError, ValueError) as e:
            raise UserError(f"{where}: {key}={value!r} does not fit the key: "
                            f"{first_line(e)}") from e
    try:
        configs.validate(config)
    except UserError as e:
        raise UserError(f"{where}: {e}") from e
    return config


def _check_metric(config, name: str) -> None:
    """The objective must be a metric that model selection may read (no test split)."""
    configs.check_selection_metric(config, "the sweep's metric.name", name)


def _check_goal(config, name: str, goal: str) -> None:
    """A goal against the metric's direction would search for the worst trial."""
    from fmjax import tasks
    direction = configs.metric_direction(tasks.TASKS[config.task], name)
    if GOALS[goal] != direction:
        better = "higher" if direction == "max" else "lower"
        wanted = {v: k for k, v in GOALS.items()}[direction]
        raise UserError(f"metric.goal={goal!r} would search for the worst {name}: {better} is "
                        f"better; set goal='{wanted}'")


def _budget(method: str, num_trials, params: list[Param]) -> int:
    if method == "grid":
        missing = [p.key for p in params if not p.values]
        if missing:
            raise UserError(f"parameters['{missing[0]}']: a grid takes values=[...], not a "
                            "distribution")
        count = math.prod(len(p.values) for p in params)
        if count > MAX_GRID:   # Optuna's grid sampler lists every combination in memory
            raise UserError(f"the grid has {count} combinations, more than {MAX_GRID}: search "
                            "it with method='random' or 'bayes' and a num_trials")
        if num_trials not in (None, count):
            raise UserError(f"num_trials={num_trials!r}: a grid runs each of its {count} "
                            "combinations once (leave num_trials out)")
        return count
    if isinstance(num_trials, bool) or not isinstance(num_trials, int) or num_trials < 1:
        raise UserError(f"num_trials={num_trials!r}: {method} needs a positive integer")
    return num_trials


def _early_terminate(entry) -> dict:
    if not entry:
        return {}
    if not isinstance(entry, dict):
        raise UserError(f"early_terminate={entry!r}: must be dict(type=median|hyperband, "
                        "min_iter=..., eta=...)")
    unknown = sorted(set(entry) - {"type", "min_iter", "eta"})
    if unknown:
        raise UserError(f"early_terminate: unknown key '{unknown[0]}' (known: type, min_iter, "
                        "eta)")
    kind = entry.get("type")
    if kind not in PRUNERS:
        raise UserError(f"early_terminate.type={kind!r}: must be median or hyperband")
    min_iter, eta = entry.get("min_iter", 1), entry.get("eta", 3)
    for name, value, least in (("min_iter", min_iter, 1), ("eta", eta, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise UserError(f"early_terminate.{name}={value!r}: must be an integer >= {least}")
    return dict(type=kind, min_iter=min_iter, eta=eta)
