"""`config.init_from` a run that `fmjax compress` quantized: its parameters are stored as int8 or
int4 values with scales, under other paths than the float model's ('head/kernel/array/qvalue').
They are read through the run's own (quantized) model and dequantized, then matched with the new
model by its float paths and shapes, as `checkpoint.plan_init_from` does for any other run.

`fmjax.runs` imports `fmjax.train`, which calls these: runs and train are imported late."""

import flax
import jax

from fmjax import checkpoint, sharding, tasks
from fmjax.errors import UserError
from fmjax.runtime import workdir_files
# STAND-IN (helper C): at merge, helper A's `quantization.dequantize`.
from fmjax.compression import _standins as quantization


def _config(workdir):
    from fmjax import runs
    path = workdir_files.as_path(workdir)
    return runs.read_config(path) if (path / "config.json").exists() else None


def _float_shapes(workdir, config) -> dict[str, tuple]:
    """{'params/...' and 'extra/<collection>/...': shape} of the run's model without
    quantization: the paths a fine-tuning model shares with it."""
    from fmjax import runs
    config.quantization.update(method="", converted=False)
    task = tasks.build_task(config, runs.read_data_info(workdir_files.as_path(workdir)))
    variables = sharding.unbox(jax.eval_shape(lambda: dict(task.init(jax.random.key(0)))))
    state = {"params": variables.pop("params"), "extra": variables}
    return {name: tuple(x.shape) for name, x in
            flax.traverse_util.flatten_dict(state, sep="/").items()}


def plan_init_from(workdir: str, step: int, abstract_state) -> checkpoint.InitSource:
    """`checkpoint.plan_init_from`, through the float model's shapes for a quantized run."""
    config = _config(workdir)
    if config is None or not config.quantization.converted:
        return checkpoint.plan_init_from(workdir, step, abstract_state)
    return checkpoint.plan_init_from(workdir, step, abstract_state,
                                     float_shapes=_float_shapes(workdir, config))


def restore_matching(source: checkpoint.InitSource, state):
    """`checkpoint.restore_matching`; a quantized source is restored whole (verified, through
    `runs.load`), dequantized, and its matched arrays placed on `state`'s shardings."""
    if not source.dequantize:
        return checkpoint.restore_matching(source, state)
    from fmjax import runs
    try:
        run = runs.load(source.workdir, source.step)
    except UserError as e:
        raise UserError(f"config.init_from: {e}") from e
    saved = flax.traverse_util.flatten_dict(
        {"params": quantization.dequantize(run.params), "extra": run.extra}, sep="/")
    flat = flax.traverse_util.flatten_dict({"params": state.params, "extra": state.extra},
                                           keep_empty_nodes=True, sep="/")
    for name in source.matched:
        flat[name] = jax.device_put(saved[name].astype(flat[name].dtype), flat[name].sharding)
    parts = flax.traverse_util.unflatten_dict(flat, sep="/")
    return state.replace(params=parts["params"], extra=parts.get("extra", {}))
